"""Fault injection: make a lab server misbehave on purpose, for teaching.

A :class:`Faults` object belongs to one lab server and is shared by all its
sessions. Rules say "answer this reply to that command" (greylisting is
``451`` to the first RCPT; ``421`` closes the connection mid-session) or "drop
the connection" (``reply=None``), for a number of times or for ever.
``END-OF-DATA`` is the moment after the final dot, before the server answers:
dropping there is the classic "did my message get through?" case (RFC 5321
§6.1 and §4.5.4.1 tell the sender to assume it did not).

``latency`` puts the server a network round trip away (the Internet's 20-50 ms),
which is what makes PIPELINING (RFC 2920) and connection reuse matter.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from smtplab.protocol.replies import SMTPReply

#: What a fault rule names for the moment after the final dot, before the server answers
#: (``fail("END-OF-DATA", ...)``): not a command, the point at which DATA's reply is due.
AT_END_OF_DATA = "END-OF-DATA"


@dataclass
class FaultRule:
    command: str
    reply: str | None
    times: int | None

    def __str__(self) -> str:
        what = "drop the connection" if self.reply is None else f"answer {self.reply!r}"
        count = "every time" if self.times is None else f"{self.times} more time(s)"
        return f"{self.command}: {what}, {count}"


class Faults:
    """The fault rules and added latency of one server (thread-safe)."""

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()
        #: A simulated network round trip, in seconds: what a client sends reaches the
        #: session this much later (and the greeting comes this much after connecting),
        #: so each wait for a reply costs one round trip (see :mod:`smtplab.smtp.latency`).
        self.latency = 0.0

    def add(self, command: str, reply: str | SMTPReply | None, times: int | None = 1) -> None:
        """Answer ``reply`` (a line, or one of :mod:`smtplab.protocol.replies`'s) to
        ``command`` the next ``times`` times (None: always); no reply: hang up."""
        line = None if reply is None else str(reply)
        with self._lock:
            self._rules.append(FaultRule(command.upper(), line, times))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
        self.latency = 0.0

    def take(self, command: str) -> FaultRule | None:
        """The first rule for ``command`` that still applies, using up one of its times."""
        if not self._rules:  # the usual case, checked on every command: no lock needed
            return None
        with self._lock:
            for rule in self._rules:
                if rule.command == command and rule.times != 0:
                    if rule.times is not None:
                        rule.times -= 1
                    return rule
        return None

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return [r for r in self._rules if r.times != 0]
