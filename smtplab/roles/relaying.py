"""The server roles' part in relaying: a relay that passes mail on, an MX that reports it.

Theory of operation
-------------------
:mod:`smtplab.roles.handlers` holds each role's policy; this module adds the two duties
that only make sense with an outbound queue beside the server:

* :class:`RelayHandler`, the ``relay`` role (a backup MX): it accepts mail from
  anyone for the recipients its domains' MX would accept, the same check, and
  queues it for the next hop instead of storing it. Its queue drops the relay's
  own MX record and every less preferred one (RFC 5321 §5.1), so it hands mail to
  the primary and never to itself.
* :class:`ReportingMailboxHandler`, the ``mx`` role with a queue of its own: once
  a message is stored, it sends the ``delivered`` DSN that a sender asked for with
  ``NOTIFY=SUCCESS``, because the MTA that makes final delivery is the one that
  reports it (RFC 3461 §5.2.3). The DSN is queued before the 250 goes out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiosmtpd.smtp import Envelope, Session

from smtplab.mailstore.maildir import Maildir
from smtplab.protocol.clock import LabClock
from smtplab.queue.delivery import DeliveryQueue
from smtplab.roles.handlers import MailboxHandler, RoleHandler, SubmissionHandler, reverse_path
from smtplab.smtp.session import LabEnvelope, RecordingSMTP


class RelayHandler(SubmissionHandler):
    """The relay role: mail for its domains' known recipients from anyone, then onward.

    MAIL needs no AUTH (a relay takes mail from other servers, port 25), and RCPT
    follows the MX's own rule (its domains only, known users only, postmaster), so
    the relay never becomes an open relay (RFC 5321 §3.6.2) and never accepts what
    the primary would refuse.
    """

    offers_auth = False

    def __init__(
        self,
        host: str,
        clock: LabClock,
        queue: DeliveryQueue,
        domains: set[str],
        mailboxes: Mapping[str, Maildir],
    ):
        super().__init__(host, clock, queue)
        self.domains = domains
        self._recipients = MailboxHandler(host, domains, mailboxes, clock)  # RCPT's rule only

    async def handle_MAIL(
        self,
        server: RecordingSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        return await RoleHandler.handle_MAIL(self, server, session, envelope, address, options)

    async def handle_RCPT(
        self,
        server: RecordingSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        return await self._recipients.handle_RCPT(server, session, envelope, address, options)

    def __repr__(self) -> str:
        return f"RelayHandler({self.host!r}, domains={sorted(self.domains)!r})"


class ReportingMailboxHandler(MailboxHandler):
    """The MX role, sending the success notices of what it stored (RFC 3461 §5.2.3)."""

    def __init__(
        self,
        host: str,
        domains: set[str],
        mailboxes: Mapping[str, Maildir],
        clock: LabClock,
        queue: DeliveryQueue,
    ):
        super().__init__(host, domains, mailboxes, clock)
        self.queue = queue

    async def handle_DATA(self, server: RecordingSMTP, session: Session, envelope: Envelope) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if reply.startswith("250") and isinstance(envelope, LabEnvelope):
            recipients = [(rcpt, envelope.rcpt_dsn.get(rcpt)) for rcpt in envelope.rcpt_tos]
            await asyncio.to_thread(
                self.queue.report_delivered,
                reverse_path(envelope),
                recipients,
                envelope.dsn,
                envelope.original_content or b"",
            )
        return reply
