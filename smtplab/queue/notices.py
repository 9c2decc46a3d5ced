"""Delivery status notifications a queue sends about the mail it handles (RFC 3464).

The queue settles each attempt (:mod:`smtplab.queue.settle`), which names the notice
each recipient's sender gets ("relayed", "failed", "delayed"); :class:`Notices` builds
that report, from ``MAILER-DAEMON`` of this mail domain with this host as
Reporting-MTA, and queues it to the original sender from the null reverse-path
through the same queue, so it is delivered, retried and recorded like any message.
The MX that stores a message sends "delivered" (RFC 3461 §5.2.3,
:meth:`Notices.report_delivered`). There is never a report about a report (RFC 5321
§4.5.5): nothing goes to ``<>``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast

from smtplab.protocol.clock import LabClock
from smtplab.protocol.dsn import RecipientStatus, Report, build_dsn, must_not_notify
from smtplab.protocol.dsn_params import Action, MailDSN, RcptDSN, Ret, wants
from smtplab.protocol.rules import message_id_of
from smtplab.queue.settle import Disposition
from smtplab.queue.spool import QueuedRecipient, QueueEntry
from smtplab.record.journey import JourneyBook, Step

#: Queue a message (sender, recipients, bytes) and return its queue id.
Enqueue = Callable[[str, list[QueuedRecipient], bytes], str]


@dataclass(frozen=True)
class Original:
    """The message a report is about: its queue id here, Message-ID, sender, arrival and
    the sender's DSN options (RET, ENVID)."""

    qid: str
    message_id: str | None
    sender: str
    arrival: str
    dsn: MailDSN


class Notices:
    """The reports of the queue on ``host``, queued with ``enqueue``."""

    def __init__(
        self,
        host: str,
        domain: str,
        *,
        enqueue: Enqueue,
        message_of: Callable[[str], bytes],
        new_qid: Callable[[], str],
        journeys: JourneyBook,
        clock: LabClock,
    ):
        self.host = host
        self.domain = domain
        self.enqueue = enqueue
        self.message_of = message_of
        self.new_qid = new_qid
        self.journeys = journeys
        self.clock = clock

    def notify(
        self, entry: QueueEntry, action: Action, dispositions: Iterable[Disposition]
    ) -> tuple[Step, ...]:
        """Queue a DSN to the sender for the recipients whose notice is this ``action``;
        return its journey step (none if no notice is due), for the caller to record
        after the step it reports."""
        statuses = tuple(
            RecipientStatus(
                address=d.recipient.address,
                action=action,
                status=d.status,
                diagnostic=(
                    f"{d.handoff.outcome.code} {d.handoff.outcome.text}"
                    if d.handoff.outcome.code
                    else None
                ),
                remote_mta=d.handoff.host,
                orcpt=d.recipient.orcpt,
            )
            for d in dispositions
            if d.notice == action
        )
        dsn = MailDSN(cast(Ret | None, entry.ret), entry.envid)
        original = Original(entry.qid, entry.message_id, entry.sender, entry.arrival, dsn)
        return self._report(original, action, statuses, self.message_of(entry.qid))

    def report_delivered(
        self,
        sender: str,
        recipients: list[tuple[str, RcptDSN | None]],
        dsn: MailDSN,
        message: bytes,
    ) -> None:
        """The MX stored a message: a "delivered" DSN for each recipient that asked for one
        (NOTIFY=SUCCESS), from this host as Reporting-MTA (RFC 3461 §5.2.3)."""
        statuses = tuple(
            RecipientStatus(address=address, action="delivered", status="2.0.0", orcpt=d.orcpt)
            for address, d in recipients
            if d is not None and wants(d.notify, "delivered")
        )
        if not statuses or must_not_notify(sender):
            return
        qid, message_id = self.new_qid(), message_id_of(message)
        try:
            notices = self._report(
                Original(qid, message_id, sender, self.clock.rfc5322(), dsn),
                "delivered",
                statuses,
                message,
            )
            if notices:
                self.journeys.add(message_id, *notices)
        except Exception as error:  # the message is stored: that stands, notice or not
            text = f"delivered notice not queued ({type(error).__name__})"
            self.journeys.add(message_id, Step("note", self.host, text, qid=qid))

    def _report(
        self,
        about: Original,
        action: Action,
        statuses: tuple[RecipientStatus, ...],
        message: bytes,
    ) -> tuple[Step, ...]:
        """Queue the report on ``statuses`` to the original sender (never a report about a
        report, §4.5.5); return the step that notes it in the journey of the message it is
        about, or none if no report is due."""
        if not statuses or must_not_notify(about.sender):
            return ()
        dsn_id = f"<{about.qid}.{action}@{self.host}>"
        report = Report(
            reporting_mta=self.host,
            mailer_daemon=f"MAILER-DAEMON@{self.domain}",
            original_sender=about.sender,
            arrival_date=about.arrival,
            recipients=statuses,
            original_message=message,
            ret=about.dsn.ret,
            envid=about.dsn.envid,
            date=self.clock.rfc5322(),
            message_id=dsn_id,
        )
        self.enqueue("", [QueuedRecipient(about.sender)], build_dsn(report))
        text = f"{action} notice {dsn_id} sent to <{about.sender}>"
        return (Step("dsn", self.host, text, tuple(s.address for s in statuses), qid=about.qid),)
