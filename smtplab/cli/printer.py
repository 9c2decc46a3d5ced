"""Lines for a reader who may stop reading: ``smtplab up`` prints without ever waiting on it.

A pipe holds 64 KiB; a script that reads ``smtplab up --json``'s first line and
then stops reading fills it, and a blocking ``print`` would then stop the lab's
main thread, so that SIGTERM went unanswered while the events piled up in memory.
A :class:`LinePrinter` writes from a thread of its own, straight to the file
descriptor (no Python lock is held while a write waits), keeps at most ``limit``
bytes waiting and drops what does not fit: the reader is told how many lines it
missed, in a line of its own, when there is room again.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable

#: Bytes waiting for a slow reader before lines are dropped: a few hundred transcripts.
DEFAULT_LIMIT = 1 << 20


class LinePrinter:
    """Write lines to ``fd`` in order without blocking the caller; see the module docstring.

    ``dropped_note(n)`` is the line that tells the reader ``n`` lines were dropped.
    A reader that closed its end (EPIPE) gets nothing more, and the caller goes on.
    """

    def __init__(
        self, fd: int, dropped_note: Callable[[int], str], limit: int = DEFAULT_LIMIT
    ) -> None:
        self._fd = fd
        self._note = dropped_note
        self._limit = limit
        self._waiting: collections.deque[bytes] = collections.deque()
        self._waiting_bytes = 0  # in the deque; the line being written is not counted
        self._dropped = 0
        self._writing = False  # a line is taken off the deque and being written
        self._closed = False  # the reader went away, or close() gave up on it
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="smtplab-printer", daemon=True)
        self._thread.start()

    def put(self, line: str) -> None:
        """Queue ``line`` (a newline is added); drop it if ``limit`` bytes already wait."""
        data = (line + "\n").encode("utf-8", "backslashreplace")
        with self._changed:
            if self._closed:
                return
            if self._dropped and self._waiting_bytes + len(data) <= self._limit:
                self._append(self._note(self._dropped).encode("utf-8") + b"\n")
                self._dropped = 0
            if self._waiting_bytes + len(data) > self._limit:
                self._dropped += 1
                return
            self._append(data)

    def close(self, timeout: float) -> bool:
        """Give the reader ``timeout`` seconds to take what waits; True if it took it all.

        Never waits longer: a reader that does not read is left behind (the thread is a
        daemon, blocked in a system call that holds no lock the interpreter's exit needs).
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while (self._waiting or self._writing) and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            drained = not (self._waiting or self._writing)
            self._discard()
        return drained

    def _append(self, data: bytes) -> None:
        self._waiting.append(data)
        self._waiting_bytes += len(data)
        self._changed.notify_all()

    def _discard(self) -> None:
        """Print nothing more (called with the condition held)."""
        self._closed = True
        self._waiting.clear()
        self._waiting_bytes = 0
        self._changed.notify_all()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._waiting and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
                data = self._waiting.popleft()
                self._waiting_bytes -= len(data)
                self._writing = True
            failed = False
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError:  # EPIPE: the reader is gone; anything else: the same to us
                failed = True
            with self._changed:
                self._writing = False
                if failed:
                    self._discard()
                self._changed.notify_all()
