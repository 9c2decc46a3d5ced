"""What ``lab.send`` returns: every recipient's outcome, the client's transcript, and the
message's journey from there on."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from smtplab.record.journey import Journey
from smtplab.record.recordings import Recordings
from smtplab.record.transcript import Transcript
from smtplab.record.wirelog import WireLog
from smtplab.smtp.client import Outcome


@dataclass(frozen=True)
class SendResult:
    """What happened when the lab's client sent one message."""

    sender: str
    recipients: tuple[str, ...]
    server: str
    message_id: str
    outcomes: tuple[Outcome, ...]
    transcript: Transcript
    journey: Journey = field(repr=False)
    wire: WireLog = field(repr=False)
    journal: Recordings = field(repr=False)

    @property
    def ok(self) -> bool:
        """True when every recipient was accepted."""
        return all(o.accepted for o in self.outcomes)

    @property
    def accepted(self) -> list[str]:
        return [o.recipient for o in self.outcomes if o.accepted]

    @property
    def refused(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.accepted]

    def server_view(self, timeout: float = 10.0) -> Transcript:
        """The same connection as the server recorded it (waits for it to close)."""
        return self.journal.other_end(self.wire, timeout).transcript()

    def summary(self) -> str:
        return "\n".join(str(o) for o in self.outcomes)

    def __str__(self) -> str:
        return f"{self.summary()}\n\n{self.transcript}"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<li>{'✅' if o.accepted else '❌'} {html.escape(str(o))}</li>" for o in self.outcomes
        )
        return f"<ul>{rows}</ul>{self.transcript._repr_html_()}"
