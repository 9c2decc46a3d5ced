"""Where every recorded connection goes, so that readers can find and wait for it.

Servers run in their own threads; a notebook must never be printed into from
there. So servers only hand their :class:`~smtplab.wire.WireLog` to the
journal, and the kernel thread asks for transcripts (waiting, with a deadline,
when a connection is still open). Listeners (the CLI, widgets) are called when
a connection closes and must only queue the log for their own thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from smtplab.wire import WireLog

DEFAULT_KEEP = 2000


class WireJournal:
    """A bounded, thread-safe record of the lab's connections (both ends)."""

    def __init__(self, keep: int = DEFAULT_KEEP):
        self._logs: deque[WireLog] = deque(maxlen=keep)
        self._changed = threading.Condition()
        self._listeners: list[Callable[[WireLog], None]] = []

    def opened(self, log: WireLog) -> None:
        with self._changed:
            self._logs.append(log)
            self._changed.notify_all()

    def closed(self, log: WireLog) -> None:
        log.close()
        with self._changed:
            self._changed.notify_all()
            listeners = list(self._listeners)
        for listener in listeners:
            listener(log)

    def listen(self, callback: Callable[[WireLog], None]) -> None:
        """Call ``callback(log)`` from the server thread whenever a connection closes."""
        with self._changed:
            self._listeners.append(callback)

    def logs(self) -> list[WireLog]:
        with self._changed:
            return list(self._logs)

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
                for log in self._logs:
                    if log.closed.is_set() and predicate(log):
                        return log
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no matching connection was recorded in time")
                self._changed.wait(remaining)
