"""The data model of one SMTP exchange: who said what, in which order, on which hop.

Theory of operation
-------------------
A :class:`Transcript` is an immutable list of events (connection opened, a
command, a reply, the message data, TLS starting, a note, connection closed)
between two named hosts. It does no I/O: the wire recorder
(:mod:`smtplab.record.wirelog`) builds it from the bytes that really crossed a socket,
and everything that shows SMTP to a reader (text, HTML, diagrams, widgets)
renders it.

The text form follows swaks: `` -> `` is the client, ``<-  `` the server and
``=== `` the lab's own remarks. Times are kept on every event but are shown
only when asked for, so that a notebook's output is the same on every run.

AUTH secrets are masked unless a transcript is explicitly revealed with
:meth:`Transcript.reveal` (chapter 08 does that to show that base64 is not
encryption).
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from smtplab.protocol.rules import command_verb, dot_unstuff, reply_meaning, split_enhanced

Side = Literal["client", "server", "info"]
MASK = "********"

CLIENT_PREFIX = " -> "
SERVER_PREFIX = "<-  "
INFO_PREFIX = "=== "
#: How a line of any transcript (SMTP, POP3, IMAP) starts, by who said it.
SIDE_PREFIX: dict[Side, str] = {
    "client": CLIENT_PREFIX,
    "server": SERVER_PREFIX,
    "info": INFO_PREFIX,
}
_COLOUR: dict[Side, str] = {"client": "#1f5fa8", "server": "#2e7d32", "info": "#757575"}


@dataclass(frozen=True)
class Opened:
    """The TCP connection was established."""

    t: float = field(repr=False)
    client: str
    server: str


@dataclass(frozen=True)
class Command:
    """One line the client sent outside DATA. ``secret`` marks an AUTH response line."""

    t: float = field(repr=False)
    line: str
    secret: bool = False

    @property
    def verb(self) -> str:
        return "" if self.secret else command_verb(self.line)

    def shown(self, reveal: bool) -> str:
        """The line as a reader should see it: AUTH credentials masked unless revealed."""
        if reveal:
            return self.line
        if self.secret:
            return MASK
        words = self.line.split(" ")
        if self.verb == "AUTH" and len(words) > 2:
            return " ".join([*words[:2], MASK])
        return self.line


@dataclass(frozen=True)
class Reply:
    """A complete server reply; a multi-line reply (``250-...``) is one Reply."""

    t: float = field(repr=False)
    code: int
    texts: tuple[str, ...]

    @property
    def enhanced(self) -> str | None:
        """The RFC 3463 enhanced status code, such as ``2.1.0``, if the server sent one."""
        return split_enhanced(self.texts[0])[0] if self.texts else None

    @property
    def text(self) -> str:
        """All lines' text joined by newlines (without codes)."""
        return "\n".join(self.texts)

    @property
    def meaning(self) -> str:
        return reply_meaning(self.code)

    @property
    def lines(self) -> list[str]:
        """The reply exactly as sent on the wire, one string per line."""
        last = len(self.texts) - 1
        return [
            f"{self.code}{' ' if i == last else '-'}{text}".rstrip()
            for i, text in enumerate(self.texts)
        ]

    def __str__(self) -> str:
        return "\n".join(self.lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython's plain-text hook
        printer.text(str(self))

    def _repr_html_(self) -> str:
        rows = "".join(_html_reply_line(self, line) for line in self.lines)
        return f'<div class="smtplab-reply" style="font-family:monospace">{rows}</div>'


@dataclass(frozen=True)
class Data:
    """The message data as it crossed the wire: dot-stuffed, terminator included."""

    t: float = field(repr=False)
    wire: bytes

    @property
    def lines(self) -> list[str]:
        """The data lines without the final lone dot."""
        body = self.wire[: -len(b".\r\n")] if self.wire.endswith(b".\r\n") else self.wire
        return body.decode("utf-8", "backslashreplace").split("\r\n")[:-1]


@dataclass(frozen=True)
class TLSStarted:
    """The TLS handshake completed; everything after it was encrypted on the wire."""

    t: float = field(repr=False)
    version: str
    cipher: str


@dataclass(frozen=True)
class Note:
    """A remark from the lab (not part of the protocol)."""

    t: float = field(repr=False)
    text: str


@dataclass(frozen=True)
class Closed:
    """The connection ended."""

    t: float = field(repr=False)


Event = Opened | Command | Reply | Data | TLSStarted | Note | Closed


@dataclass(frozen=True)
class Line:
    """One rendered line: who said it, the text, and the event it came from."""

    side: Side
    text: str
    event: Event


@dataclass(frozen=True)
class Transcript:
    """One connection's exchange between ``client`` and ``server`` (host names).

    ``view`` says which end recorded it ("client" or "server"). Both ends of
    the same connection give the same :meth:`lines`.
    """

    client: str
    server: str
    events: tuple[Event, ...]
    view: Literal["client", "server"] = "client"
    revealed: bool = False

    # -- queries ---------------------------------------------------------------
    @property
    def hop(self) -> str:
        return f"{self.client} → {self.server}"

    @property
    def commands(self) -> list[Command]:
        return [e for e in self.events if isinstance(e, Command)]

    @property
    def replies(self) -> list[Reply]:
        return [e for e in self.events if isinstance(e, Reply)]

    @property
    def data(self) -> Data | None:
        return next((e for e in self.events if isinstance(e, Data)), None)

    @property
    def tls(self) -> TLSStarted | None:
        return next((e for e in self.events if isinstance(e, TLSStarted)), None)

    def reply_to(self, verb: str) -> Reply | None:
        """The first reply that answered a command with this verb (``"DATA"`` gives 354)."""
        waiting = False
        for event in self.events:
            if isinstance(event, Command):
                waiting = event.verb == verb.upper()
            elif isinstance(event, Reply) and waiting:
                return event
        return None

    def reveal(self) -> Transcript:
        """The same transcript with AUTH secrets shown: for the lesson on plaintext AUTH."""
        return replace(self, revealed=True)

    # -- rendering -------------------------------------------------------------
    def lines(self, *, full_data: bool = False) -> list[Line]:
        """The transcript as swaks-like lines; DATA is collapsed unless ``full_data``."""
        out: list[Line] = []
        for event in self.events:
            match event:
                case Opened():
                    out.append(Line("info", f"{event.client} connected to {event.server}", event))
                case Command():
                    out.append(Line("client", event.shown(self.revealed), event))
                case Reply():
                    out.extend(Line("server", text, event) for text in event.lines)
                case Data():
                    if full_data:
                        out.extend(Line("client", text, event) for text in event.lines)
                    else:
                        out.append(Line("client", _data_summary(event), event))
                    out.append(Line("client", ".", event))
                case TLSStarted():
                    out.append(Line("info", f"TLS started: {event.version} {event.cipher}", event))
                case Note():
                    out.append(Line("info", event.text, event))
                case Closed():
                    out.append(Line("info", "connection closed", event))
        return out

    def to_text(self, *, full_data: bool = False, times: bool = False) -> str:
        """swaks-style text. ``times`` prefixes seconds since the connection opened."""
        rows = []
        for line in self.lines(full_data=full_data):
            stamp = f"[{line.event.t:7.3f}s] " if times else ""
            rows.append(f"{stamp}{SIDE_PREFIX[line.side]}{line.text}")
        return "\n".join(rows)

    def __str__(self) -> str:
        return self.to_text()

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython's plain-text hook
        printer.text(f"{self.hop}\n{self.to_text()}")

    def _repr_html_(self) -> str:
        return transcript_html(self)


def data_summary(lines: int, size: int) -> str:
    """``[message data: 3 lines, 120 bytes]``: how a transcript shows a message in brief."""
    return f"[message data: {lines} line{'s' if lines != 1 else ''}, {size} bytes]"


def _data_summary(data: Data) -> str:
    """Lines and octets of the message itself: RFC 1870 §5 counts neither the terminating
    dot nor the doubled dots of dot-stuffing, and the dot is shown on its own line."""
    return data_summary(len(data.lines), len(dot_unstuff(data.wire)))


def html_line(side: Side, body: str) -> str:
    """One transcript line as HTML: ``body`` (already escaped) after its side's prefix."""
    prefix = html.escape(SIDE_PREFIX[side])
    return f'<div style="color:{_COLOUR[side]};white-space:pre">{prefix}{body}</div>'


def _html_reply_line(event: Reply, text: str) -> str:
    code, rest = text[:3], html.escape(text[3:])
    tip = html.escape(f"{event.code}: {event.meaning}", quote=True)
    return html_line("server", f'<b title="{tip}" style="cursor:help">{code}</b>{rest}')


def transcript_html(transcript: Transcript) -> str:
    """HTML for notebooks: a colour per side, meanings on hover, DATA in a <details>."""
    rows: list[str] = []
    data_done: set[int] = set()
    for line in transcript.lines():
        event = line.event
        if isinstance(event, Reply):
            rows.append(_html_reply_line(event, line.text))
        elif isinstance(event, Data):
            if id(event) in data_done:
                continue
            data_done.add(id(event))
            body = "\n".join(html.escape(text) for text in event.lines)
            rows.append(
                f'<details style="color:{_COLOUR["client"]}"><summary style="white-space:pre">'
                f"{html.escape(CLIENT_PREFIX)}{html.escape(_data_summary(event))}</summary>"
                f'<pre style="margin:0 0 0 4ch;color:inherit">{body}</pre></details>'
                + html_line("client", ".")
            )
        else:
            rows.append(html_line(line.side, html.escape(line.text)))
    return transcript_frame(f"{transcript.hop} (recorded by the {transcript.view})", rows)


def transcript_frame(title: str, rows: list[str]) -> str:
    """The box every transcript is shown in: a bold title over its rows of HTML."""
    return (
        '<div class="smtplab-transcript" style="font-family:monospace;font-size:12px">'
        f'<div style="font-weight:bold">{html.escape(title)}</div>{"".join(rows)}</div>'
    )
