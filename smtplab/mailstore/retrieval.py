"""Reading mail: fetching a mailbox over POP3 or IMAP, recorded on the wire.

SMTP ends when the recipient's server stores the message (RFC 5321 §2.1). The
recipient's mail program then fetches it with POP3 (RFC 1939) or IMAP
(RFC 9051). The lab's POP3/IMAP server is a private Dovecot
(:mod:`smtplab.mailstore.dovecot`); :func:`fetch_mailbox` is the client side: one
session with a recording client (:mod:`smtplab.mailstore.clients`), its messages
and its transcript (:mod:`smtplab.record.retrieval`) in a :class:`FetchResult`.
"""

from __future__ import annotations

import html
import imaplib
import poplib
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from smtplab.mailstore.clients import RecordingIMAP, RecordingPOP3
from smtplab.mailstore.maildir import StoredMessage
from smtplab.record.retrieval import RetrievalTranscript, parse_retrieval
from smtplab.record.wirelog import WireLog
from smtplab.world import CLIENT_HOST

Protocol = Literal["pop3", "imap"]
TLSMode = Literal["starttls", "implicit", "none"]


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
    client_name: str = CLIENT_HOST,
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
            client = RecordingPOP3(host, port, wire, implicit_tls=implicit)
            messages = _pop3_session(client, address, password, starttls, delete)
        else:
            client = RecordingIMAP(host, port, wire, implicit_tls=implicit)
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
