"""The transcript of a POP3 or IMAP connection, parsed from what its client recorded.

Theory of operation
-------------------
POP3 (RFC 1939) and IMAP (RFC 9051; Dovecot 2.3 speaks IMAP4rev1, RFC 3501)
replies are not SMTP replies, so :func:`parse_retrieval` turns the chunks a
:class:`~smtplab.record.wirelog.WireLog` recorded into plain lines, a pure
function like :func:`smtplab.record.wirelog.parse_conversation`, shown the way
an SMTP :class:`~smtplab.record.transcript.Transcript` is (`` -> `` client,
``<-  `` server, ``=== `` the lab).

* Passwords are masked (``PASS ********``, ``A2 LOGIN user ********``).
* Message bodies are shown as one summary line (a POP3 multi-line reply to RETR
  or TOP, an IMAP literal ``{N}``).
* The time Dovecot appends to every tagged IMAP reply (``Fetch completed (0.001
  + 0.000 secs).``) is shown as ``(… secs)``, because it changes on every run.

``to_text(reveal=True, full_data=True, timings=True)`` shows the wire exactly.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from smtplab.record.transcript import (
    MASK,
    SIDE_PREFIX,
    Side,
    data_summary,
    html_line,
    transcript_frame,
)
from smtplab.record.wirelog import ChunkKind

_LITERAL = re.compile(rb"\{(\d+)\+?\}\r?\n$")
_TIMING = re.compile(r" \((?:\d+\.\d{3} \+ )+\d+\.\d{3} secs\)\.$")
_POP3_LISTINGS = {"CAPA", "LIST", "UIDL"}  # multi-line only without an argument
_POP3_BODIES = {"RETR", "TOP"}


@dataclass(frozen=True)
class RetrievalLine:
    """One line of a POP3/IMAP exchange.

    ``masked`` is set on lines that carry a secret; ``data`` on a message body
    or IMAP literal, kept whole (``text`` is then its one-line summary).
    """

    side: Side
    text: str
    masked: str | None = None
    data: bytes | None = None

    def shown(
        self, *, reveal: bool = False, full_data: bool = False, timings: bool = False
    ) -> list[str]:
        if self.data is not None and full_data:
            return self.data.decode("utf-8", "backslashreplace").split("\r\n")[:-1]
        if self.masked is not None and not reveal:
            return [self.masked]
        if self.side == "server" and not timings:
            return [_TIMING.sub(" (… secs).", self.text)]
        return [self.text]


@dataclass(frozen=True)
class RetrievalTranscript:
    """One POP3 or IMAP connection, line by line, as its client recorded it."""

    protocol: str
    client: str
    server: str
    lines: tuple[RetrievalLine, ...]

    @property
    def hop(self) -> str:
        return f"{self.client} → {self.server}"

    @property
    def commands(self) -> list[str]:
        """What the client sent (secrets masked, bodies summarised)."""
        return [ln for line in self.lines if line.side == "client" for ln in line.shown()]

    @property
    def replies(self) -> list[str]:
        """What the server sent (bodies summarised, timings elided)."""
        return [ln for line in self.lines if line.side == "server" for ln in line.shown()]

    def to_text(
        self, *, reveal: bool = False, full_data: bool = False, timings: bool = False
    ) -> str:
        return "\n".join(
            SIDE_PREFIX[line.side] + text
            for line in self.lines
            for text in line.shown(reveal=reveal, full_data=full_data, timings=timings)
        )

    def __str__(self) -> str:
        return self.to_text()

    def __iter__(self) -> Iterator[RetrievalLine]:
        return iter(self.lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(f"{self.hop}\n{self.to_text()}")

    def _repr_html_(self) -> str:
        rows = [
            html_line(line.side, html.escape(text)) for line in self.lines for text in line.shown()
        ]
        return transcript_frame(
            f"{self.hop} ({self.protocol.upper()}, recorded by the client)", rows
        )


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace").rstrip("\r\n")


def _mask(protocol: str, line: str) -> str | None:
    """The line with its secret hidden, or None if it carries none."""
    words = line.split(" ")
    if protocol == "pop3":
        verb = words[0].upper()
        if verb == "PASS" and len(words) > 1:
            return f"{words[0]} {MASK}"
        if verb in ("APOP", "AUTH") and len(words) > 2:
            return " ".join([*words[:2], MASK])
        return None
    verb = words[1].upper() if len(words) > 1 else ""
    if verb == "LOGIN" and len(words) > 3:
        return " ".join([*words[:3], MASK])
    if verb == "AUTHENTICATE" and len(words) > 3:
        return " ".join([*words[:3], MASK])
    return None


@dataclass
class _Parser:
    """State of :func:`parse_retrieval`."""

    protocol: str
    lines: list[RetrievalLine] = field(default_factory=list)
    buf: dict[str, bytearray] = field(
        default_factory=lambda: {"client": bytearray(), "server": bytearray()}
    )
    literal: dict[str, int] = field(default_factory=lambda: {"client": 0, "server": 0})
    command: str = ""  # the last client command's verb (and, for POP3, whether it had an argument)
    authenticating: bool = False
    secret_next: bool = False
    body: bytearray | None = None  # a POP3 RETR/TOP body being collected
    listing: bool = False  # inside a POP3 multi-line listing (CAPA, LIST, UIDL)

    def feed(self, side: Literal["client", "server"], data: bytes) -> None:
        buf = self.buf[side]
        buf += data
        while buf:
            if self.literal[side]:
                if len(buf) < self.literal[side]:
                    return
                size = self.literal[side]
                self._literal(side, bytes(buf[:size]))
                del buf[:size]
                self.literal[side] = 0
                continue
            end = buf.find(b"\n")
            if end < 0:
                return
            raw = bytes(buf[: end + 1])
            del buf[: end + 1]
            if self.protocol == "imap" and (found := _LITERAL.search(raw)):
                self.literal[side] = int(found.group(1))
            if side == "client":
                self._client(raw)
            else:
                self._server(raw)

    def _literal(self, side: Side, data: bytes) -> None:
        count = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
        summary = f"[literal: {count} line{'s' if count != 1 else ''}, {len(data)} bytes]"
        self.lines.append(
            RetrievalLine(side, summary, data=data if data.endswith(b"\r\n") else data + b"\r\n")
        )

    def _client(self, raw: bytes) -> None:
        text = _decode(raw)
        if self.secret_next:
            self.secret_next = False
            self.lines.append(RetrievalLine("client", text, masked=MASK))
            return
        if not text and self.lines and self.lines[-1].data is not None:
            return  # the CRLF that ends a command after its literal
        self.lines.append(RetrievalLine("client", text, masked=_mask(self.protocol, text)))
        words = text.split(" ")
        if self.protocol == "pop3":
            verb = words[0].upper()
            self.command = verb if verb in _POP3_BODIES or len(words) == 1 else f"{verb} …"
            self.authenticating = verb == "AUTH"
        else:
            self.authenticating = len(words) > 1 and words[1].upper() == "AUTHENTICATE"

    def _server(self, raw: bytes) -> None:
        text = _decode(raw)
        if self.body is not None:
            if text == ".":
                data = bytes(self.body)
                summary = data_summary(data.count(b"\n"), len(data))
                self.lines.append(RetrievalLine("server", summary, data=data))
                self.lines.append(RetrievalLine("server", "."))
                self.body = None
            else:
                self.body += raw
            return
        self.lines.append(RetrievalLine("server", text))
        if self.listing:
            self.listing = text != "."
            return
        if text.startswith("+") and not text.startswith("+OK") and self.authenticating:
            self.secret_next = True  # a SASL challenge: the next client line answers it
            return
        if self.protocol == "pop3":
            if text.startswith(("+OK", "-ERR")):
                self.authenticating = False
            if text.startswith("+OK") and self.command in _POP3_BODIES:
                self.body = bytearray()
            elif text.startswith("+OK") and self.command in _POP3_LISTINGS:
                self.listing = True
            self.command = ""
        elif not text.startswith(("*", "+")):
            self.authenticating = False  # a tagged reply ends the command

    def finish(self) -> None:
        for side, buf in self.buf.items():
            if buf:
                self.lines.append(
                    RetrievalLine(
                        "info", f"{side} sent {len(buf)} bytes without finishing the line"
                    )
                )
                buf.clear()


def parse_retrieval(
    protocol: str, client: str, server: str, chunks: list[tuple[float, ChunkKind, bytes]]
) -> RetrievalTranscript:
    """Turn a recorded POP3/IMAP connection into a transcript (pure)."""
    parser = _Parser(protocol)
    parser.lines.append(RetrievalLine("info", f"{client} connected to {server}"))
    for _t, kind, payload in chunks:
        if kind in ("client", "server"):
            parser.feed(kind, payload)
        elif kind == "tls":
            version, _, cipher = payload.decode("utf-8", "replace").partition("\0")
            parser.lines.append(RetrievalLine("info", f"TLS started: {version} {cipher}"))
        elif kind in ("note", "cut"):
            if kind == "cut":  # the recording stopped: a half-read line was cut, not left
                for buf in parser.buf.values():
                    buf.clear()
            parser.lines.append(RetrievalLine("info", payload.decode("utf-8", "replace")))
        elif kind == "close":
            parser.finish()
            parser.lines.append(RetrievalLine("info", "connection closed"))
    return RetrievalTranscript(protocol, client, server, tuple(parser.lines))
