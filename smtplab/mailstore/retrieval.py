"""Reading mail: POP3 and IMAP with Python's poplib and imaplib, recorded on the wire.

Theory of operation
-------------------
SMTP ends when the recipient's server stores the message (RFC 5321 §2.1). The
recipient's mail program then fetches it with POP3 (RFC 1939) or IMAP
(RFC 9051; Dovecot 2.3 speaks IMAP4rev1, RFC 3501). The lab's POP3/IMAP server
is a private Dovecot (:mod:`smtplab.mailstore.dovecot`); this module is the client side.

* :class:`RecordingPOP3` and :class:`RecordingIMAP` are poplib.POP3 and
  imaplib.IMAP4 with a tap on each direction, like
  :class:`~smtplab.smtp.client.RecordingClient` for smtplib: what the library sends
  (``_putline`` / ``send``) and every line or literal it reads (its socket
  file, swapped for a recording one whenever the library sets ``file``) go
  into a :class:`~smtplab.record.wirelog.WireLog`. They connect to 127.0.0.1 but verify
  TLS certificates against the lab host name.
* POP3 and IMAP replies are not SMTP replies, so :func:`parse_retrieval` turns
  the recorded chunks into plain lines (`` -> `` client, ``<-  `` server,
  ``=== `` the lab), a pure function like :func:`smtplab.record.wirelog.parse_conversation`.
  Passwords are masked (``PASS ********``, ``A2 LOGIN user ********``), message
  bodies are shown as one summary line (a POP3 multi-line reply to RETR or TOP,
  an IMAP literal ``{N}``), and the time Dovecot appends to every tagged IMAP
  reply (``Fetch completed (0.001 + 0.000 secs).``) is shown as ``(… secs)``,
  because it changes on every run. ``to_text(reveal=True, full_data=True,
  timings=True)`` shows the wire exactly.
* imaplib starts its tags with a random prefix (``JFAP1``); the recording client
  uses ``A`` (``A0``, ``A1``, ...) so that transcripts are the same every run.
"""

from __future__ import annotations

import html
import imaplib
import poplib
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from smtplab.mailstore.maildir import StoredMessage
from smtplab.record.transcript import CLIENT_PREFIX, INFO_PREFIX, MASK, SERVER_PREFIX, data_summary
from smtplab.record.wirelog import ChunkKind, ReadTap, WireLog
from smtplab.tls import loopback

Protocol = Literal["pop3", "imap"]
TLSMode = Literal["starttls", "implicit", "none"]
Side = Literal["client", "server", "info"]
DEFAULT_TIMEOUT = 10.0

_PREFIX: dict[Side, str] = {"client": CLIENT_PREFIX, "server": SERVER_PREFIX, "info": INFO_PREFIX}
_COLOUR: dict[Side, str] = {"client": "#1f5fa8", "server": "#2e7d32", "info": "#757575"}
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r?\n$")
_TIMING = re.compile(r" \((?:\d+\.\d{3} \+ )+\d+\.\d{3} secs\)\.$")
_POP3_LISTINGS = {"CAPA", "LIST", "UIDL"}  # multi-line only without an argument
_POP3_BODIES = {"RETR", "TOP"}


# --- the transcript -------------------------------------------------------------------


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
            _PREFIX[line.side] + text
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
        rows = []
        for line in self.lines:
            for text in line.shown():
                body = html.escape(_PREFIX[line.side] + text)
                rows.append(f'<div style="color:{_COLOUR[line.side]};white-space:pre">{body}</div>')
        title = html.escape(f"{self.hop} ({self.protocol.upper()}, recorded by the client)")
        return (
            '<div class="smtplab-transcript" style="font-family:monospace;font-size:12px">'
            f'<div style="font-weight:bold">{title}</div>{"".join(rows)}</div>'
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
            parser.feed(kind, payload)  # type: ignore[arg-type]
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


# --- the recording clients ----------------------------------------------------------------


class _Recording:
    """What the POP3 and IMAP recording clients share: loopback, implicit TLS, the tap."""

    host: str
    port: int
    sock: Any

    def _setup(self, implicit_tls: ssl.SSLContext | None, wire: WireLog) -> None:
        self.implicit_tls = implicit_tls
        self.wire = wire
        self._file: ReadTap | None = None
        self._tls_noted = False

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = loopback.connect(self.port, timeout)
        self.wire.peer = sock.getsockname()[:2]
        if self.implicit_tls is not None:  # ports 993/995 style: TLS before the greeting
            try:
                return loopback.start_tls(sock, self.implicit_tls, self.host)
            except (ssl.SSLError, OSError) as error:
                self.wire.note(f"TLS handshake failed: {error}")
                raise
        return sock

    # poplib and imaplib set ``file`` after connecting and again after STARTTLS.
    @property
    def file(self) -> ReadTap | None:
        return self._file

    @file.setter
    def file(self, inner: Any) -> None:
        if inner is None:
            self._file = None
            return
        if isinstance(self.sock, ssl.SSLSocket) and not self._tls_noted:
            self._tls_noted = True  # noted before the library reads or sends anything more
            cipher = self.sock.cipher()
            self.wire.tls_started(str(self.sock.version()), cipher[0] if cipher else "?")
        self._file = ReadTap(inner, self.wire)

    def _record(self, data: bytes) -> None:
        self.wire.record("client", data)

    def _finish(self) -> None:
        self.wire.close()


class RecordingPOP3(_Recording, poplib.POP3):
    """poplib.POP3 that records the conversation; connect it to a lab host *name*."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_name: str = "client.example.com",
        implicit_tls: ssl.SSLContext | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        wire: WireLog | None = None,
    ):
        self._setup(implicit_tls, wire or WireLog(client=client_name, server=host, view="client"))
        try:
            super().__init__(host, port, timeout)
        except BaseException:
            if getattr(self, "sock", None) is not None:  # poplib leaves it open on a bad greeting
                self.close()
            raise

    def _putline(self, line: bytes) -> None:
        self._record(line + poplib.CRLF)
        super()._putline(line)

    def close(self) -> None:
        super().close()
        self._finish()


# RFC 9051 §9: ASTRING-CHAR, any CHAR but atom-specials ("(", ")", "{", SP, CTL, "%", "*",
# DQUOTE, "\\"); "]" is allowed.
_ASTRING = re.compile(r"[\x21\x23\x24\x26\x27\x2b-\x5b\x5d-\x7a\x7c-\x7e]+")


class RecordingIMAP(_Recording, imaplib.IMAP4):
    """imaplib.IMAP4 that records the conversation; connect it to a lab host *name*."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_name: str = "client.example.com",
        implicit_tls: ssl.SSLContext | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        wire: WireLog | None = None,
    ):
        self._setup(implicit_tls, wire or WireLog(client=client_name, server=host, view="client"))
        super().__init__(host, port, timeout)

    # imaplib draws a random tag prefix per connection; a fixed one keeps transcripts stable.
    @property
    def tagpre(self) -> bytes:
        return b"A"

    @tagpre.setter
    def tagpre(self, value: bytes) -> None:
        pass

    def send(self, data: bytes) -> None:
        self._record(data)
        super().send(data)

    def login(self, user: str, password: str) -> tuple[str, list[bytes]]:
        """LOGIN, with the userid quoted where an atom cannot carry it.

        imaplib quotes the password but sends the userid bare; an address such as
        ``a%u@example.org`` holds a list wildcard, which no atom may (RFC 9051 §9:
        LOGIN takes two astrings; ``%``, ``*``, ``(``, ``{``, ``"``, ``\\`` need a
        quoted string).
        """
        userid = user if _ASTRING.fullmatch(user) else self._quote(user)
        return super().login(userid, password)

    def shutdown(self) -> None:
        super().shutdown()
        self._finish()


# --- fetching a mailbox ----------------------------------------------------------------------


@dataclass(frozen=True)
class RetrievedMessage(StoredMessage):
    """A message as POP3 or IMAP delivered it (``raw`` with LF line endings).

    ``number`` is its POP3 message number or IMAP sequence number, ``key`` its
    IMAP UID (POP3: the message number again), ``flags`` its IMAP flags.
    """

    number: int = 0
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class FetchResult:
    """What one POP3 or IMAP session fetched, and its transcript."""

    protocol: str
    address: str
    server: str
    messages: tuple[RetrievedMessage, ...]
    transcript: RetrievalTranscript
    error: str | None = None
    wire: WireLog | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def __len__(self) -> int:
        return len(self.messages)

    def __getitem__(self, index: int) -> RetrievedMessage:
        return self.messages[index]

    def __iter__(self) -> Iterator[RetrievedMessage]:
        return iter(self.messages)

    def summary(self) -> str:
        how = f"{self.protocol.upper()} from {self.server}"
        if self.error is not None:
            return f"{self.address}: failed over {how}: {self.error}"
        count = len(self.messages)
        head = f"{self.address}: {count} message{'s' if count != 1 else ''} over {how}"
        rows = [
            f"  {m.number}. {m.summary()}"
            + (f"  Flags: {' '.join(m.flags) or '(none)'}" if self.protocol == "imap" else "")
            for m in self.messages
        ]
        return "\n".join([head, *rows])

    def __str__(self) -> str:
        return f"{self.summary()}\n\n{self.transcript}"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        summary = "<br>".join(html.escape(row) for row in self.summary().splitlines())
        return f'<div style="font-family:monospace">{summary}</div>{self.transcript._repr_html_()}'


def _lf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n")


def _pop3_session(
    client: RecordingPOP3,
    address: str,
    password: str,
    starttls: ssl.SSLContext | None,
    delete: bool,
) -> list[RetrievedMessage]:
    if starttls is not None:
        client.stls(starttls)  # RFC 2595 §4; poplib asks CAPA first
    client.user(address)
    client.pass_(password)
    count, _size = client.stat()
    client.list()
    messages = []
    for number in range(1, count + 1):
        _reply, lines, _octets = client.retr(number)
        raw = b"\n".join(lines) + b"\n"
        messages.append(RetrievedMessage(str(number), raw, number=number))
        if delete:
            client.dele(number)
    client.quit()  # UPDATE state: only now are deleted messages really removed (RFC 1939 §6)
    return messages


_FETCH_ITEMS = re.compile(rb"^(\d+) \((.*)\{\d+\}$")


def _imap_session(
    client: RecordingIMAP, address: str, password: str, starttls: ssl.SSLContext | None
) -> list[RetrievedMessage]:
    if starttls is not None:
        client.starttls(starttls)  # RFC 9051 §6.2.1
    client.login(address, password)
    _typ, data = client.select("INBOX")
    exists = int(data[0] or 0)
    messages = []
    if exists:
        _typ, items = client.fetch("1:*", "(UID FLAGS BODY.PEEK[])")
        for item in items:
            if not isinstance(item, tuple):
                continue
            head, raw = item
            found = _FETCH_ITEMS.match(head)
            number = int(found.group(1)) if found else 0
            uid = re.search(rb"UID (\d+)", head)
            flags = re.search(rb"FLAGS \(([^)]*)\)", head)
            messages.append(
                RetrievedMessage(
                    uid.group(1).decode() if uid else str(number),
                    _lf(raw),
                    number=number,
                    flags=tuple(flags.group(1).decode().split()) if flags else (),
                )
            )
    client.logout()
    return messages


def fetch_mailbox(
    host: str,
    port: int,
    address: str,
    password: str,
    *,
    protocol: Protocol = "imap",
    tls: TLSMode = "starttls",
    context: ssl.SSLContext | None = None,
    client_name: str = "client.example.com",
    delete: bool = False,
) -> FetchResult:
    """Log in as ``address`` and fetch its inbox over POP3 or IMAP, recording the wire.

    ``tls``: "starttls" upgrades the plain port (POP3 STLS, IMAP STARTTLS),
    "implicit" means ``port`` speaks TLS from the first byte (995/993 style),
    "none" stays in the clear. ``delete`` (POP3 only) deletes each message after
    downloading it, as POP3 clients classically do. Failures (a wrong password,
    a refused connection) are reported in ``error``, with the transcript so far.
    """
    if protocol not in ("pop3", "imap"):
        raise ValueError(f"protocol must be 'pop3' or 'imap', not {protocol!r}")
    if tls != "none" and context is None:
        raise ValueError("TLS needs a context that trusts the lab CA")
    implicit = context if tls == "implicit" else None
    starttls = context if tls == "starttls" else None
    wire = WireLog(client=client_name, server=host, view="client")
    client: RecordingPOP3 | RecordingIMAP | None = None
    messages: list[RetrievedMessage] = []
    error = None
    try:
        if protocol == "pop3":
            client = RecordingPOP3(host, port, implicit_tls=implicit, wire=wire)
            messages = _pop3_session(client, address, password, starttls, delete)
        else:
            client = RecordingIMAP(host, port, implicit_tls=implicit, wire=wire)
            messages = _imap_session(client, address, password, starttls)
    except (poplib.error_proto, imaplib.IMAP4.error, OSError) as failure:
        reason = failure.args[0] if failure.args else type(failure).__name__
        if isinstance(failure, OSError):
            reason = str(failure)
            if not isinstance(failure, ssl.SSLError):
                wire.note(f"{type(failure).__name__}: {failure}")
        error = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
    finally:
        if client is not None:
            _close(client)
        wire.close()
    transcript = parse_retrieval(protocol, wire.client, wire.server, list(wire.chunks))
    return FetchResult(protocol, address, host, tuple(messages), transcript, error, wire)


def _close(client: RecordingPOP3 | RecordingIMAP) -> None:
    """Close the socket, whatever state the session ended in (idempotent)."""
    if isinstance(client, RecordingPOP3):
        client.close()
    elif client.sock is not None and not client.wire.closed.is_set():
        try:
            client.shutdown()
        except OSError:
            client._finish()
