"""What each server role does with a message (aiosmtpd handler hooks).

Handlers implement only the hooks they care about, as aiosmtpd intends. They
decide policy (who may send to whom) and storage; the protocol itself stays in
aiosmtpd and the recording in :mod:`smtplab.server`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping

from aiosmtpd.smtp import SMTP, Envelope, Session

from smtplab.clock import LabClock
from smtplab.maildir import Maildir


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def received_header(server_host: str, session: Session, queue_id: str, rcpt: str, date: str) -> str:
    """A trace header as RFC 5321 §4.4 asks, with the RFC 3848 protocol keyword."""
    protocol = "ESMTP" if session.extended_smtp else "SMTP"
    if session.ssl is not None:
        protocol += "S"
    if session.authenticated:
        protocol += "A"
    helo = session.host_name or "unknown"
    peer = session.peer[0] if session.peer else "unknown"
    return (
        f"Received: from {helo} ([{peer}])\r\n"
        f"\tby {server_host} (smtplab) with {protocol} id {queue_id}\r\n"
        f"\tfor <{rcpt}>; {date}\r\n"
    )


class MailboxHandler:
    """The MX role: accept mail for local users and store it in their Maildirs.

    A recipient in a domain the server does not serve is refused (the lab is
    never an open relay, RFC 5321 §3.6.2); an unknown local user gets 550 5.1.1
    (RFC 3463). The 250 after DATA is sent only once every copy is fsynced.
    """

    def __init__(
        self,
        host: str,
        domains: set[str],
        mailboxes: Mapping[str, Maildir],
        clock: LabClock,
    ):
        self.host = host
        self.domains = domains
        self.mailboxes = mailboxes
        self.clock = clock
        self._ids = itertools.count(1)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Sender ok"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if domain_of(address) not in self.domains:
            return f"554 5.7.1 <{address}>: Relay access denied"
        if address.lower() not in self.mailboxes:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 Recipient ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        queue_id = f"{next(self._ids):06X}"
        content = envelope.original_content or b""
        try:
            await asyncio.to_thread(self._store, session, envelope, content, queue_id)
        except OSError as error:
            return f"451 4.3.0 Message not stored, try again later ({error.strerror})"
        return f"250 2.0.0 Ok: queued as {queue_id}"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "221 2.0.0 Bye"

    def _store(self, session: Session, envelope: Envelope, content: bytes, queue_id: str) -> None:
        sender = envelope.mail_from or ""
        for rcpt in envelope.rcpt_tos:
            trace = received_header(self.host, session, queue_id, rcpt, self.clock.rfc5322())
            head = f"Return-Path: <{sender}>\r\n{trace}".encode()
            self.mailboxes[rcpt.lower()].deliver(head + content)

    def __repr__(self) -> str:
        return f"MailboxHandler({self.host!r}, domains={sorted(self.domains)!r})"
