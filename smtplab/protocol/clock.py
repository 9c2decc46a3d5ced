"""A lab clock: dates in headers that are the same on every run.

Real Date: and Received: headers carry the wall clock, which would make every
notebook output differ from the committed one. The lab clock starts at a fixed
instant and moves one second forward each time it is read, so the same cells
print the same dates while time still visibly passes from hop to hop.

A lab in a terminal (``smtplab up``) serves real mail programs, whose own
``Date:`` is the wall clock: there the lab uses :class:`WallClock`, so that
``Received:`` dates agree with them and never go back across restarts.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

LAB_EPOCH = datetime(2026, 11, 2, 9, 0, 0, tzinfo=UTC)


class LabClock:
    """Deterministic time: ``now()`` returns the epoch, then +1 s per call."""

    def __init__(self, start: datetime = LAB_EPOCH, step: timedelta = timedelta(seconds=1)):
        self._next = start
        self._step = step
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            current = self._next
            self._next += self._step
            return current

    def rfc5322(self) -> str:
        """The current lab time formatted for a Date: or Received: header (RFC 5322 §3.3)."""
        return format_datetime(self.now())


class WallClock(LabClock):
    """The real time, in the machine's time zone, as a mail program's ``Date:`` has it."""

    def now(self) -> datetime:
        return datetime.now().astimezone()
