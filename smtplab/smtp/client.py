"""A recording SMTP client: Python's smtplib, with a tap on each direction.

smtplib writes through :meth:`smtplib.SMTP.send` and reads replies through
the file object that :meth:`smtplib.SMTP.getreply` creates, so those are the two
places we record. It is a :class:`LabSMTP`: it connects to a lab host name on
127.0.0.1 (:mod:`smtplab.tls.loopback`), so certificates are checked against the
name and transcripts name hosts, not ports.

smtplib is kept for what does not show in a transcript: reading replies and the
EHLO keywords, STARTTLS, AUTH, dot-stuffing, timeouts. The command lines are the
lab's own: every verb in capitals, and ``MAIL FROM:`` / ``RCPT TO:`` spelled as
RFC 5321 §4.1.1 spells them, as the chapters teach, whatever smtplib writes that
year (Python 3.13's writes ``from:`` and ``to:``). Servers accept any case
(RFC 5321 §2.4), so this changes what a reader sees, not what a server does.
"""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smtplab.protocol.rules import dot_stuff, split_enhanced
from smtplab.record.recordings import Recordings
from smtplab.record.wirelog import ReadTap, WireLog
from smtplab.tls import loopback

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

DEFAULT_TIMEOUT = 10.0


class LabSMTP(smtplib.SMTP):
    """``smtplib.SMTP("mx1.example.org", port)`` reaching the lab on 127.0.0.1.

    smtplib checks a certificate (STARTTLS) against the host its constructor was
    given; a client made first and connected later has none, so the host given
    to ``connect()`` is kept for the check here.
    """

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        self._host = host  # smtplib's name for STARTTLS's server_hostname
        return loopback.connect(port, timeout, self.source_address)


class RecordingClient(LabSMTP):
    """smtplib.SMTP that records the conversation into a WireLog (client view).

    Connect it to a lab *host name*: it reaches 127.0.0.1 (or ``port``'s
    listener) but verifies TLS certificates against the name.
    """

    def __init__(
        self,
        server_name: str,
        *,
        client_name: str,
        journal: Recordings | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        implicit_tls: ssl.SSLContext | None = None,
    ):
        self.server_name = server_name
        self.journal = journal
        self.implicit_tls = implicit_tls
        #: Bytes to write right behind the next command, in the same packet: for the
        #: lesson on command injection (chapter 08); empty for normal use.
        self.piggyback = b""
        self.wire: WireLog | None = None
        super().__init__(local_hostname=client_name, timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = super()._get_socket(host, port, timeout)
        local = sock.getsockname()
        self.wire = WireLog(
            client=self.local_hostname, server=self.server_name, view="client", peer=local[:2]
        )
        if self.journal is not None:
            self.journal.opened(self.wire)
        if self.implicit_tls is not None:  # port 465 (RFC 8314): TLS before the greeting
            sock = loopback.start_tls(sock, self.implicit_tls, self.server_name)
            self._note_tls(sock)
        return sock

    def _note_tls(self, sock: Any) -> None:
        cipher = sock.cipher() if hasattr(sock, "cipher") else None
        if self.wire is not None and cipher:
            self.wire.tls_started(str(sock.version()), cipher[0])

    def starttls(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        """STARTTLS (RFC 3207), noting in the transcript where encryption begins."""
        reply = super().starttls(*args, **kwargs)
        self._note_tls(self.sock)
        return reply

    def putcmd(self, cmd: str, args: str = "") -> None:
        """Verbs in capitals, as most mail programs write them (servers accept any case)."""
        super().putcmd(cmd.upper(), args)

    def mail(self, sender: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        """``MAIL FROM:<sender>`` and its parameters, which go only after EHLO (a HELO
        session has no extensions), as smtplib's ``mail`` does; SMTPUTF8 switches the
        command encoding to UTF-8 (RFC 6531 §3.4)."""
        params = options if self.does_esmtp else ()
        if any(param.upper() == "SMTPUTF8" for param in params):
            self.command_encoding = "utf-8"
        self.putcmd("MAIL", path_argument("FROM", sender, params))
        return self.getreply()

    def rcpt(self, recip: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        """``RCPT TO:<recipient>`` and its parameters (after EHLO only, as for MAIL)."""
        self.putcmd("RCPT", path_argument("TO", recip, options if self.does_esmtp else ()))
        return self.getreply()

    def send(self, s: str | ReadableBuffer) -> None:
        data = s.encode(self.command_encoding) if isinstance(s, str) else bytes(s)
        data, self.piggyback = data + self.piggyback, b""
        if self.sock is not None and self.wire is not None:
            self.wire.record("client", data)
        super().send(data)

    def getreply(self) -> tuple[int, bytes]:
        if self.file is None and self.sock is not None and self.wire is not None:
            self.file = ReadTap(self.sock.makefile("rb"), self.wire)
        return super().getreply()

    def close(self) -> None:
        super().close()
        if self.wire is not None:
            if self.journal is not None:
                self.journal.closed(self.wire)
            else:
                self.wire.close()


#: The stages of a session in the order they cross the wire (a lost connection comes
#: last); an :class:`Outcome` names its stage.
WIRE_ORDER = ("EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "connection")


def wire_order(stage: str) -> int:
    """Where ``stage`` comes in :data:`WIRE_ORDER` (a stage not in it, after all)."""
    return WIRE_ORDER.index(stage) if stage in WIRE_ORDER else len(WIRE_ORDER)


@dataclass(frozen=True)
class Outcome:
    """What the server said about one recipient, and at which step."""

    recipient: str
    code: int | None
    text: str
    stage: str

    @property
    def accepted(self) -> bool:
        return self.code is not None and self.code // 100 == 2

    @property
    def permanent(self) -> bool:
        """A 5yz reply, or a failure found before any reply whose status is of class 5
        (RFC 3463 §3.1: permanent): trying again, here or at another host, cannot help."""
        if self.code is not None:
            return self.code >= 500
        return (self.enhanced or "").startswith("5.")

    @property
    def enhanced(self) -> str | None:
        return split_enhanced(self.text)[0]

    def __str__(self) -> str:
        code = "---" if self.code is None else str(self.code)
        return f"{self.recipient}: {code} {self.text} (at {self.stage})"


def path_argument(keyword: str, address: str, params: Sequence[str] = ()) -> str:
    """``FROM:<alice@example.com> SIZE=300``: what follows MAIL or RCPT (RFC 5321 §4.1.1.2,
    §4.1.1.3). The address is a bare mailbox (``""`` for the null reverse-path), as the
    lab and its queues keep them, so it goes between the brackets as it is: smtplib's
    ``quoteaddr`` would parse it as a header address first."""
    return f"{keyword}:<{address}>" + "".join(f" {param}" for param in params)


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def open_session(
    client: smtplib.SMTP,
    recipients: list[str],
    *,
    context: ssl.SSLContext | None,
    login: tuple[str, str] | None,
) -> list[Outcome] | None:
    """EHLO, then STARTTLS with ``context`` and AUTH with ``login`` when given.

    Returns None when the session is ready for a transaction, else every
    recipient's outcome (the reason the session failed) after closing it.
    """
    stage = "EHLO"
    try:
        client.ehlo_or_helo_if_needed()
        if context is not None:
            stage = "STARTTLS"
            client.starttls(context=context)
            client.ehlo()
        if login is not None:
            stage = "AUTH"
            client.login(*login)
    except smtplib.SMTPResponseException as error:
        outcome: tuple[int | None, str] = (error.smtp_code, _text(error.smtp_error))
    except (smtplib.SMTPException, OSError) as error:
        outcome = (None, f"{type(error).__name__}: {error}")
    else:
        return None
    quit_quietly(client)
    return [Outcome(r, outcome[0], outcome[1], stage) for r in recipients]


def opportunistic_tls(client: smtplib.SMTP, context: ssl.SSLContext) -> None:
    """Server to server: use STARTTLS when the next hop offers it (RFC 3207)."""
    client.ehlo_or_helo_if_needed()
    if client.has_extn("starttls"):
        client.starttls(context=context)
        client.ehlo()


_EIGHT_BIT = re.compile(rb"[\x80-\xff]")
#: Why a message needing SMTPUTF8 is not sent to a server without it (the Outcome's text).
NO_SMTPUTF8 = (
    "5.6.7 the message needs SMTPUTF8 (a non-ASCII address or header), "
    "which the server does not offer; not sent (RFC 6531 §3.2)"
)
RcptOptions = Sequence[str] | Mapping[str, Sequence[str]]


def needs_smtputf8(sender: str, recipients: Sequence[str], message: bytes) -> bool:
    """A non-ASCII address, or raw 8-bit text in the header section: UTF-8 header fields
    (RFC 6532 §3) travel only in an SMTPUTF8 transaction (RFC 6531 §1); 8BITMIME (RFC 6152)
    covers the body only."""
    end = message.find(b"\r\n\r\n")
    header = message if end < 0 else message[:end]
    return not all(a.isascii() for a in (sender, *recipients)) or bool(_EIGHT_BIT.search(header))


def declarations(
    client: smtplib.SMTP, sender: str, recipients: Sequence[str], message: bytes
) -> list[str] | None:
    """MAIL parameters this message needs: ``BODY=8BITMIME`` for 8-bit content (RFC 6152)
    and ``SMTPUTF8`` for non-ASCII addresses or headers (RFC 6531); None if it needs
    SMTPUTF8 and the server lacks it (then it must not be sent, RFC 6531 §3.2)."""
    needed = []
    if _EIGHT_BIT.search(message) and client.has_extn("8bitmime"):
        needed.append("BODY=8BITMIME")
    if needs_smtputf8(sender, recipients, message):
        if not client.has_extn("smtputf8"):
            return None
        needed.append("SMTPUTF8")
    return needed


def options_for(rcpt_options: RcptOptions, recipient: str) -> list[str]:
    """One recipient's RCPT parameters: the same list for all, or each its own (DSN's
    NOTIFY and ORCPT are per recipient, RFC 3461 §4)."""
    if isinstance(rcpt_options, Mapping):
        return list(rcpt_options.get(recipient, ()))
    return list(rcpt_options)


def quit_quietly(client: smtplib.SMTP) -> None:
    """QUIT if the server still listens; close the socket either way."""
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()


def transact(
    client: smtplib.SMTP,
    sender: str,
    recipients: list[str],
    message: bytes,
    mail_options: Sequence[str] = (),
    rcpt_options: RcptOptions = (),
    *,
    finish: bool = True,
    pipelining: bool = False,
) -> list[Outcome]:
    """One mail transaction (RFC 5321 §3.3): MAIL, RCPT per recipient, DATA, QUIT.

    Unlike smtplib.sendmail it keeps every recipient's own reply, which is what
    a reader needs to see which recipient failed and why. With ``finish=False``
    the session stays open for another transaction (no QUIT). With
    ``pipelining`` and a server that offers it, the envelope goes in one write
    (:func:`pipelined`). ``rcpt_options`` is one list for every recipient, or a
    mapping from recipient to its own list.
    """
    outcomes: dict[str, Outcome] = {}
    try:
        client.ehlo_or_helo_if_needed()
        needed = declarations(client, sender, recipients, message)
        if needed is None:
            quit_quietly(client)
            return [Outcome(r, None, NO_SMTPUTF8, "MAIL") for r in recipients]
        if pipelining and client.has_extn("pipelining"):
            outcomes = pipelined(
                client, sender, recipients, message, [*mail_options, *needed], rcpt_options
            )
            if finish:
                client.quit()
            return [outcomes[r] for r in recipients]
        code, reply = client.mail(sender, [*mail_options, *needed])
        if code != 250:
            quit_quietly(client)
            return [Outcome(r, code, _text(reply), "MAIL") for r in recipients]
        for rcpt in recipients:
            code, reply = client.rcpt(rcpt, options_for(rcpt_options, rcpt))
            if code not in (250, 251):
                outcomes[rcpt] = Outcome(rcpt, code, _text(reply), "RCPT")
        accepted = [r for r in recipients if r not in outcomes]
        if accepted:
            data_reply: bytes | str
            try:
                code, data_reply = client.data(message)
            except smtplib.SMTPDataError as error:
                code, data_reply = error.smtp_code, error.smtp_error
            for rcpt in accepted:
                outcomes[rcpt] = Outcome(rcpt, code, _text(data_reply), "DATA")
        else:
            client.rset()
        if finish:
            client.quit()
    except (smtplib.SMTPServerDisconnected, OSError) as error:
        for rcpt in recipients:
            outcomes.setdefault(
                rcpt, Outcome(rcpt, None, f"connection lost: {error}", "connection")
            )
        client.close()
    return [outcomes[r] for r in recipients]


def pipelined(
    client: smtplib.SMTP,
    sender: str,
    recipients: list[str],
    message: bytes,
    mail_options: list[str],
    rcpt_options: RcptOptions,
) -> dict[str, Outcome]:
    """RFC 2920 §3.1: MAIL, every RCPT and DATA in one write, then their replies in
    order; the message follows only a 354, and only if a recipient was accepted
    (else a lone dot ends the data at once). Two round trips instead of 3 + n.

    The addresses go as :func:`path_argument` writes them.
    """
    if "SMTPUTF8" in mail_options:
        client.command_encoding = "utf-8"  # as RecordingClient.mail does
    client.send(
        f"MAIL {path_argument('FROM', sender, mail_options)}\r\n"
        + "".join(
            f"RCPT {path_argument('TO', r, options_for(rcpt_options, r))}\r\n" for r in recipients
        )
        + "DATA\r\n"
    )
    mail_code, mail_reply = client.getreply()
    outcomes: dict[str, Outcome] = {}
    for rcpt in recipients:
        code, reply = client.getreply()
        if mail_code != 250:
            outcomes[rcpt] = Outcome(rcpt, mail_code, _text(mail_reply), "MAIL")
        elif code not in (250, 251):
            outcomes[rcpt] = Outcome(rcpt, code, _text(reply), "RCPT")
    code, reply = client.getreply()
    accepted = [r for r in recipients if r not in outcomes]
    if code == 354:
        client.send(dot_stuff(message) if accepted else b".\r\n")
        code, reply = client.getreply()
    for rcpt in accepted:
        outcomes[rcpt] = Outcome(rcpt, code, _text(reply), "DATA")
    return outcomes
