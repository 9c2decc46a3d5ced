"""Where every recorded connection goes, so that readers can find and wait for it.

Servers run in their own threads; a notebook must never be printed into from
there. So servers only hand their :class:`~smtplab.record.wirelog.WireLog` to the
journal, and the kernel thread asks for transcripts (waiting, with a deadline,
when a connection is still open). Listeners (the CLI, widgets) are called when
a connection closes and must only queue the log for their own thread.

The journal is bounded twice: it lists the ``keep`` most recent connections,
and all the recordings it has seen (also those a journey still refers to) take
at most ``max_bytes`` of memory, chunk overhead included. Past either bound the
oldest finished recording loses its bytes and keeps a note saying so, so its
transcript tells the reader what happened instead of silently going missing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from smtplab.record.wirelog import WireLog

DEFAULT_KEEP = 2000
#: The recordings' memory budget. A Binder pod has 2 GB. JupyterLab, a kernel
#: running a lab and its Dovecot take well under 0.4 GB of it (measured: 83 MiB
#: for an idle JupyterLab, 97 MiB for a process running a lab with POP3/IMAP and
#: authenticity checks, 18 MiB for its Dovecot), the queue's spool cache 32 MiB.
#: 256 MiB of recordings holds tens of thousands of ordinary transcripts (a few
#: KiB each: the count bound binds first in every lesson), while a flood of 1 MiB
#: garbage connections stops at 256 MiB, leaving a gigabyte for the notebook's
#: own data and the connections still open.
DEFAULT_MAX_BYTES = 256 << 20


class Recordings:
    """The lab's recordings: a bounded, thread-safe registry of its connections (both
    ends). A lab keeps one as ``lab.journal``."""

    def __init__(self, keep: int = DEFAULT_KEEP, max_bytes: int = DEFAULT_MAX_BYTES):
        self.keep = keep
        #: May be changed while the lab runs; the next recorded chunk applies it.
        self.max_bytes = max_bytes
        self._logs: dict[int, WireLog] = {}  # listed, oldest first
        self._held: dict[int, WireLog] = {}  # finished and still holding bytes, oldest first
        self._bytes = 0
        self._bytes_lock = threading.Lock()
        self.dropped = 0  # recordings whose bytes were dropped
        self._changed = threading.Condition()
        self._listeners: list[Callable[[WireLog], None]] = []

    @property
    def retained_bytes(self) -> int:
        """What every recording this journal has seen takes in memory now."""
        with self._bytes_lock:
            return self._bytes

    def opened(self, log: WireLog) -> None:
        with self._bytes_lock:
            self._bytes += log.cost
        log.budget = self._charge
        with self._changed:
            self._logs[id(log)] = log
            while len(self._logs) > self.keep:  # no longer listed: its bytes go too
                oldest = self._logs.pop(next(iter(self._logs)))
                if oldest.closed.is_set():
                    self._forget(oldest)
            self._changed.notify_all()

    def closed(self, log: WireLog) -> None:
        log.close()
        with self._changed:
            listed = id(log) in self._logs
            self._changed.notify_all()
            listeners = list(self._listeners)
        if listed:
            with self._bytes_lock:
                self._held[id(log)] = log
            self._trim()
        else:  # pushed out of the list while it was still open
            self._forget(log)
        for listener in listeners:
            listener(log)

    def _charge(self, cost: int) -> None:
        """A recording grew by ``cost`` bytes (called from the recording's thread)."""
        with self._bytes_lock:
            self._bytes += cost
            over = self._bytes > self.max_bytes and bool(self._held)
        if over:
            self._trim()

    def _trim(self) -> None:
        """Drop the oldest finished recordings' bytes until all fit in ``max_bytes``."""
        why = f"the lab keeps {self.max_bytes >> 20} MiB of recordings, oldest first"
        with self._bytes_lock:
            while self._bytes > self.max_bytes and self._held:
                oldest = self._held.pop(next(iter(self._held)))
                self._bytes -= oldest.discard(why)
                self.dropped += 1

    def _forget(self, log: WireLog) -> None:
        """A finished recording no longer listed: drop its bytes and stop counting it."""
        with self._bytes_lock:
            self._held.pop(id(log), None)
            self._bytes -= log.cost  # the stub left behind is a journey's, if anyone's
            log.budget = None
            if not log.dropped:
                log.discard(f"the journal lists the last {self.keep} connections")
                self.dropped += 1

    def listen(self, callback: Callable[[WireLog], None]) -> None:
        """Call ``callback(log)`` from the server thread whenever a connection closes."""
        with self._changed:
            self._listeners.append(callback)

    def logs(self) -> list[WireLog]:
        with self._changed:
            return list(self._logs.values())

    def finished(self, server: str | None = None) -> list[WireLog]:
        """The connections the servers (``server``'s, or all) recorded and saw closed."""
        return [
            log
            for log in self.logs()
            if log.view == "server" and log.closed.is_set() and server in (None, log.server)
        ]

    def other_end(self, log: WireLog, timeout: float = 10.0) -> WireLog:
        """The same connection as recorded by its other end, once that end has closed it."""
        view = "server" if log.view == "client" else "client"
        return self.wait_for(
            lambda other: (
                other.view == view and other.peer == log.peer and other.server == log.server
            ),
            timeout,
        )

    def wait_for(self, predicate: Callable[[WireLog], bool], timeout: float = 10.0) -> WireLog:
        """The first closed log matching ``predicate``; TimeoutError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for log in self._logs.values():
                    if log.closed.is_set() and predicate(log):
                        return log
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no matching connection was recorded in time")
                self._changed.wait(remaining)
