"""What each server role does with a message (aiosmtpd handler hooks).

Handlers implement only the hooks they care about, as aiosmtpd intends. They
decide policy (who may send to whom) and where a message goes next; the
protocol itself stays in aiosmtpd and the recording in :mod:`smtplab.smtp.session`.

* :class:`MailboxHandler`, the MX role: accepts mail for its domains' users and
  stores it in their Maildirs (final delivery).
* :class:`SubmissionHandler`, the submission role (RFC 6409): accepts mail from
  authenticated users for anywhere and puts it in the outbound queue.

Both add a ``Received:`` trace header (RFC 5321 §4.4), refuse a message that
has travelled too many hops (a loop, §6.3), normalise line endings so that no
smuggled line end travels on (§2.3.8), and answer 250 only once the message is
fsynced: to a mailbox or to the queue's spool (§6.1).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from aiosmtpd.smtp import Envelope, LoginPassword, Session

from smtplab.mailstore.maildir import Maildir
from smtplab.protocol.clock import LabClock
from smtplab.protocol.replies import (
    AUTH_REQUIRED,
    BYE,
    NOT_QUEUED,
    NOT_STORED,
    NUL_IN_BODY,
    QUEUED,
    RECIPIENT_OK,
    RELAY_DENIED,
    SENDER_NOT_OWNED,
    SENDER_OK,
    STARTTLS_FIRST,
    TOO_MANY_HOPS,
    USER_UNKNOWN,
)
from smtplab.protocol.rules import count_received, domain_of, normalize_newlines
from smtplab.queue.delivery import DeliveryQueue
from smtplab.queue.spool import QueuedRecipient
from smtplab.smtp._aiosmtpd import ListsOnlyHooks
from smtplab.smtp.session import LabEnvelope, RecordingSMTP

if TYPE_CHECKING:
    from smtplab.senderauth.wiring import Decision

#: RFC 5321 §6.3 asks for a threshold of at least 100 Received: headers.
MAX_HOPS = 100


def reverse_path(envelope: Envelope) -> str:
    """The envelope sender, with the null reverse-path ``<>`` as "" (RFC 5321 §4.5.5)."""
    sender = envelope.mail_from or ""
    return "" if sender == "<>" else sender


def received_header(
    server_host: str,
    session: Session,
    queue_id: str,
    rcpt: str | None,
    date: str,
    *,
    smtputf8: bool = False,
) -> str:
    """A trace header as RFC 5321 §4.4 asks, with the RFC 3848 protocol keyword, or for
    an SMTPUTF8 transaction RFC 6531 §3.7.3's (``UTF8SMTP``, ``UTF8SMTPSA``, ...).

    The ``for`` clause names the recipient only when there is exactly one: with
    several, naming them all would leak Bcc recipients to the others.
    """
    protocol = "UTF8SMTP" if smtputf8 else "ESMTP" if session.extended_smtp else "SMTP"
    if session.ssl is not None:
        protocol += "S"
    if session.authenticated:
        protocol += "A"
    helo = session.host_name or "unknown"
    peer = session.peer[0] if session.peer else "unknown"
    return (
        f"Received: from {helo} ([{peer}])\r\n"
        f"\tby {server_host} (smtplab) with {protocol} id {queue_id}"
        + (f"\r\n\tfor <{rcpt}>" if rcpt else "")
        + f"; {date}\r\n"
    )


class RoleHandler(ListsOnlyHooks):
    """What every lab server does alike: EHLO extensions, MAIL, QUIT, hop counting."""

    max_hops = MAX_HOPS
    #: Whether this role authenticates users (submission does; an MX does not).
    offers_auth = False

    def __init__(self, host: str, clock: LabClock):
        self.host = host
        self.clock = clock
        self._ids = itertools.count(1)

    def next_id(self) -> str:
        return f"{next(self._ids):06X}"

    async def handle_EHLO(
        self,
        server: RecordingSMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        kept = [r for r in responses[:-1] if self.offers_auth or not r.startswith("250-AUTH")]
        extra = [f"250-{extension}" for extension in server.advertised()]
        return [*kept, *extra, responses[-1]]

    async def handle_MAIL(
        self,
        server: RecordingSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return SENDER_OK()

    def accept_recipient(self, envelope: Envelope, address: str, options: list[str]) -> str:
        """Add a recipient the role's policy allowed to the envelope (RFC 5321 §4.1.1.3)."""
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return RECIPIENT_OK()

    async def handle_QUIT(self, server: RecordingSMTP, session: Session, envelope: Envelope) -> str:
        return BYE()

    def screen(self, content: bytes) -> tuple[bytes, str | None]:
        """The content as it will be stored or relayed, or the reply refusing it.

        Bare CR and bare LF become CRLF, so nothing that another server might read
        as a line end travels on unchanged (SMTP smuggling, RFC 5321 §2.3.8); NUL
        is refused (RFC 5322 §2.3); too many Received: headers mean a loop (§6.3).
        """
        if b"\0" in content:
            return content, NUL_IN_BODY()
        hops = count_received(content)
        if hops >= self.max_hops:
            return content, TOO_MANY_HOPS(hops=hops)
        return normalize_newlines(content), None


class MailboxHandler(RoleHandler):
    """The MX role: accept mail for local users and store it in their Maildirs.

    A recipient in a domain the server does not serve is refused (the lab is
    never an open relay, RFC 5321 §3.6.2); an unknown local user gets 550 5.1.1
    (RFC 3463). The 250 after DATA is sent only once every copy is fsynced.
    """

    def __init__(
        self, host: str, domains: set[str], mailboxes: Mapping[str, Maildir], clock: LabClock
    ):
        super().__init__(host, clock)
        self.domains = domains
        self.mailboxes = mailboxes

    async def handle_RCPT(
        self,
        server: RecordingSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        if address.lower() == "postmaster":  # no domain: this server's postmaster (§4.5.1)
            address = next(
                (p for d in sorted(self.domains) if (p := f"postmaster@{d}") in self.mailboxes),
                address,
            )
        if domain_of(address) not in self.domains:
            return RELAY_DENIED(address=address)
        if address.lower() not in self.mailboxes:
            return USER_UNKNOWN(address=address)
        return self.accept_recipient(envelope, address, options)

    #: Checks run after DATA, before anything is stored (chapter 09: SPF, DKIM, DMARC and a
    #: spam score, see smtplab.senderauth.wiring): a refusal, or the content to store and its
    #: folder.
    inspector: Callable[[Session, Envelope, bytes], Decision] | None = None

    async def handle_DATA(self, server: RecordingSMTP, session: Session, envelope: Envelope) -> str:
        content, refusal = self.screen(envelope.original_content or b"")
        if refusal:
            return refusal
        folder = None
        if self.inspector is not None:
            decision = await asyncio.to_thread(self.inspector, session, envelope, content)
            if decision.refusal:
                return decision.refusal
            content, folder = decision.content, decision.folder
        queue_id = self.next_id()
        try:
            await asyncio.to_thread(self._store, session, envelope, content, queue_id, folder)
        except OSError as error:
            return NOT_STORED(reason=error.strerror)
        return QUEUED(queue_id=queue_id)

    def _store(
        self,
        session: Session,
        envelope: Envelope,
        content: bytes,
        queue_id: str,
        folder: str | None = None,
    ) -> None:
        sender, utf8 = reverse_path(envelope), envelope.smtp_utf8
        for rcpt in envelope.rcpt_tos:
            trace = received_header(
                self.host, session, queue_id, rcpt, self.clock.rfc5322(), smtputf8=utf8
            )
            head = f"Return-Path: <{sender}>\r\n{trace}".encode()
            mailbox = self.mailboxes[rcpt.lower()]
            (mailbox.folder(folder) if folder else mailbox).deliver(head + content)

    def __repr__(self) -> str:
        return f"MailboxHandler({self.host!r}, domains={sorted(self.domains)!r})"


class SubmissionHandler(RoleHandler):
    """The submission role: authenticated users may send to anyone, as themselves.

    MAIL before AUTH gets 530 (RFC 4954 §6; before STARTTLS on port 587, "Must
    issue a STARTTLS command first", RFC 3207 §4). A user may only use their own
    address, or the null reverse-path, as the envelope sender (RFC 6409 §6.1,
    §3.2), and each message is queued for relaying.
    """

    offers_auth = True

    def __init__(self, host: str, clock: LabClock, queue: DeliveryQueue):
        super().__init__(host, clock)
        self.queue = queue

    async def handle_MAIL(
        self,
        server: RecordingSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        # Enforced here rather than by aiosmtpd's auth_required, which warns when a
        # lesson turns plaintext AUTH on (auth_require_tls=False).
        if not session.authenticated:  # on 587 before STARTTLS, AUTH is not even offered
            return STARTTLS_FIRST() if server.requires_tls_for_auth() else AUTH_REQUIRED()
        data = session.auth_data
        login = data.login.decode("utf-8", "replace") if isinstance(data, LoginPassword) else ""
        # "A null return path, that is, MAIL FROM:<>, is permitted and MUST be accepted"
        # (RFC 6409 §3.2): MUAs send notifications with it.
        if address != "<>" and address.lower() != login.lower():
            return SENDER_NOT_OWNED(address=address, login=login)
        return await super().handle_MAIL(server, session, envelope, address, options)

    async def handle_RCPT(
        self,
        server: RecordingSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        return self.accept_recipient(envelope, address, options)

    async def handle_DATA(self, server: RecordingSMTP, session: Session, envelope: Envelope) -> str:
        content, refusal = self.screen(envelope.original_content or b"")
        if refusal:
            return refusal
        assert isinstance(envelope, LabEnvelope)
        qid = self.queue.new_qid()
        only = envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None
        trace = received_header(
            self.host, session, qid, only, self.clock.rfc5322(), smtputf8=envelope.smtp_utf8
        )
        recipients = [
            QueuedRecipient(rcpt, sorted(dsn.notify), dsn.orcpt)
            if (dsn := envelope.rcpt_dsn.get(rcpt))
            else QueuedRecipient(rcpt)
            for rcpt in envelope.rcpt_tos
        ]
        message = trace.encode() + content
        try:
            await self.queue.accept_from_loop(
                reverse_path(envelope), recipients, message, envelope.dsn, qid
            )
        except OSError as error:
            return NOT_QUEUED(reason=error.strerror)
        return QUEUED(queue_id=qid)
