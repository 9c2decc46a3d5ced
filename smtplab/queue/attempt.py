"""One delivery attempt of one queue entry, from the route to its settlement carried out.

:meth:`Attempts.deliver` asks the router for the route (RFC 5321 §5.1), runs one
transaction per MX host in order (:mod:`smtplab.queue.transfer`) "until a delivery
attempt succeeds", lets :func:`~smtplab.queue.settle.settle` decide each
recipient, and carries the decision out: journey steps, the notices it names
(:mod:`smtplab.queue.notices`), the postmaster's copy of an undeliverable notice,
then the spool and the schedule. :meth:`Attempts.contain` defers an entry whose
attempt raised, like a ``4.3.0`` local error, so one entry never stops the worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from smtplab.dns.route import Route, RouteError
from smtplab.mailstore.maildir import Maildir
from smtplab.protocol.clock import LabClock
from smtplab.queue.notices import Notices
from smtplab.queue.settle import Disposition, Handoff, RetryPolicy, settle
from smtplab.queue.spool import QueueEntry, Spool
from smtplab.queue.transfer import Sessions
from smtplab.record.journey import JourneyBook, Step, StepKind
from smtplab.record.wirelog import WireLog
from smtplab.smtp.client import Outcome
from smtplab.world import ROLES

#: Route ``domain`` for the relay named ``local`` (which must not send to itself, §5.1).
Resolve = Callable[[str, str], Route]
Locate = Callable[[str], int | None]
#: A lab host's role ("mx", "relay", "submission", ...), or None for a host outside the lab.
RoleOf = Callable[[str], str | None]


@dataclass(frozen=True)
class Hop:
    """Where the queue sends mail: resolve routes, find ports, and what each host does."""

    resolve: Resolve
    locate: Locate
    role_of: RoleOf


class Attempts:
    """The delivery attempts of the queue on ``host``; :class:`~smtplab.queue.delivery.
    DeliveryQueue` owns the schedule and hands each due entry to :meth:`deliver`."""

    def __init__(
        self,
        host: str,
        spool: Spool,
        hop: Hop,
        *,
        sessions: Sessions,
        notices: Notices,
        domain: str,
        postmaster: Callable[[str], Maildir],
        journeys: JourneyBook,
        clock: LabClock,
        policy: RetryPolicy,
        outgoing: Callable[[bytes], bytes] | None,
        held: Callable[[], bool],
        schedule: Callable[[list[QueueEntry]], None],
    ):
        self.host = host
        self.spool = spool
        self.hop = hop
        self.sessions = sessions
        self.notices = notices
        #: This mail domain, and the mailbox of an address: where undeliverable notices end.
        self.domain = domain
        self.postmaster = postmaster
        self.journeys = journeys
        self.clock = clock
        self.policy = policy
        #: Chapter 09: a last change to each message as it leaves (the lab's DKIM signer).
        self.outgoing = outgoing
        #: Is the queue held now? Then nothing expires and a retry waits for the release.
        self.held = held
        #: Put entries (back) on the queue's schedule.
        self.schedule = schedule

    def deliver(self, entry: QueueEntry) -> None:
        """Try ``entry`` once (the worker owns it: it is off the schedule) and settle it."""
        entry.attempts += 1
        if entry.held_since is not None:  # queued as a release began: count it released
            entry.held_seconds += max(time.time() - entry.held_since, 0.0)
            entry.held_since = None
        try:
            route = self.hop.resolve(entry.domain, self.host)
        except RouteError as error:
            for line in error.explanation:
                self.step(entry, "route", line)
            text = f"{error.status} {error.text}"
            outcomes = {
                r.address: Outcome(r.address, error.code, text, "DNS") for r in entry.recipients
            }
            self._settle(entry, {a: Handoff(o) for a, o in outcomes.items()})
            return
        for line in route.decisions:
            self.step(entry, "route", line)
        message = self.spool.message(entry.qid)
        if self.outgoing is not None:
            message = self.outgoing(message)
        # RFC 5321 §5.1: try each host in order "until a delivery attempt succeeds": a
        # recipient that got a temporary failure (4yz, or no answer) goes on to the next.
        results: dict[str, Handoff] = {}
        waiting = list(entry.recipients)
        for candidate in route.candidates:
            port = self.hop.locate(candidate.host)
            if port is None:
                self.step(entry, "attempt", f"{candidate.host}: nothing listening (host down)")
                continue
            transfer = self.sessions.transfer(entry, candidate.host, port, message, waiting)
            addresses = tuple(r.address for r in waiting)
            self.step(entry, "attempt", transfer.text, addresses, wire=transfer.wire)
            for address, handoff in transfer.handoffs.items():
                if handoff.host is not None or address not in results:  # a reply beats none
                    results[address] = handoff
            waiting = [r for r in waiting if not results[r.address].settled]
            if not waiting:
                break
        self._settle(entry, results)

    def contain(self, entry: QueueEntry, error: Exception) -> None:
        """An error in the delivery of one entry: defer it like a temporary failure (it
        bounces once it expires) and go on with the next entry; if even that fails, keep
        it queued as the spool has it and try again later."""
        self.sessions.close()  # the session it used may have stopped in mid-command
        why = f"4.3.0 local error in processing ({type(error).__name__})"
        results = {
            r.address: Handoff(Outcome(r.address, None, why, "queue")) for r in entry.recipients
        }
        try:
            self._settle(entry, results)
        except Exception as again:
            delay, now = self.policy.delay(entry.attempts), time.time()
            later = replace(entry, next_attempt=now + delay)
            text = (
                f"attempt {entry.attempts} failed ({why}; then {type(again).__name__} "
                f"while settling it); retry in {delay:g} s"
            )
            self.step(later, "retry", text, retry_at=later.next_attempt, at=now)
            self.schedule([later])

    def _settle(self, entry: QueueEntry, handoffs: dict[str, Handoff]) -> None:
        """Carry out what :func:`~smtplab.queue.settle.settle` decides for the recipients:
        journey steps and notices, then the spool and the schedule."""
        now, held = time.time(), self.held()
        decision = settle(entry, handoffs, self.policy, now, held=held)
        # Notices are queued before the final step and recorded right after it, at once
        # (Journey.add): a finished journey shows them, after the event they report.
        for host, accepted in decision.delivered_by().items():
            self._handed_to(entry, host, accepted)
        if decision.to_postmaster and not self._to_postmaster(entry, decision.bounced):
            # not stored: it stays queued and is tried again later
            decision = settle(entry, handoffs, self.policy, now, held=held, postmaster_refused=True)
        elif decision.bounced and not decision.to_postmaster:
            bounced = decision.bounced
            notices = self.notices.notify(entry, "failed", bounced)
            self.step(entry, "bounced", _reasons(bounced), _addresses(bounced), notices=notices)
        later = decision.requeued
        if later is None:
            self.spool.remove(entry.qid)
            return
        notices = self.notices.notify(later, "delayed", decision.retry)
        reason, addresses = _reasons(decision.retry), _addresses(decision.retry)
        if held:
            text = f"attempt {later.attempts} failed ({reason}); held until released"
            self.step(later, "held", text, addresses, notices=notices)
        else:
            text = f"attempt {later.attempts} failed ({reason}); retry in {decision.delay:g} s"
            due = later.next_attempt
            self.step(later, "retry", text, addresses, retry_at=due, at=now, notices=notices)
        self.spool.update(later)
        self.schedule([later])

    def _handed_to(self, entry: QueueEntry, host: str, accepted: tuple[Disposition, ...]) -> None:
        """``host`` took these recipients: it is responsible now (§6.1). A success notice
        is this queue's to send only if the DSN parameters could not go on (RFC 3461
        §5.2.2); otherwise the MX that delivers sends "delivered" itself (§5.2.3)."""
        notices = self.notices.notify(entry, "relayed", accepted)
        role = self.hop.role_of(host)
        facts = ROLES[role] if role is not None else None  # None: a host the lab did not start
        addresses = _addresses(accepted)
        if facts is not None and facts.final_delivery:
            self.step(entry, "delivered", f"{host} accepted it", addresses, notices=notices)
        elif facts is not None and facts.forwards:  # that host's queue reports from here on
            text = f"{host} accepted it; its queue takes it on"
            self.step(entry, "note", text, addresses, notices=notices)
        else:
            self.step(entry, "relayed", f"{host} accepted it", addresses, notices=notices)

    def _to_postmaster(self, entry: QueueEntry, bounced: tuple[Disposition, ...]) -> bool:
        """Keep an undeliverable notice in the postmaster's mailbox, as it is (the reverse-path
        stays null, §4.5.5); False if it could not be stored (it then stays queued)."""
        address = f"postmaster@{self.domain}"
        trace = (
            f"Return-Path: <>\r\nReceived: by {self.host} (smtplab) id {entry.qid}\r\n"
            f"\tfor <{address}>; {self.clock.rfc5322()}\r\n"
        )
        try:
            self.postmaster(address).deliver(trace.encode() + self.spool.message(entry.qid))
        except OSError:
            return False
        text = f"undeliverable notice ({_reasons(bounced)}) kept for <{address}>"
        self.step(entry, "postmaster", text, _addresses(bounced))
        return True

    def step(
        self,
        entry: QueueEntry,
        kind: StepKind,
        text: str,
        recipients: tuple[str, ...] | None = None,
        *,
        wire: WireLog | None = None,
        retry_at: float | None = None,
        at: float | None = None,
        notices: tuple[Step, ...] = (),
    ) -> None:
        """Report a step of ``entry`` (about all its recipients unless others are named),
        and after it, at once, the ``notices`` it caused (:meth:`Notices.notify`). A retry
        passes the clock reading its ``retry_at`` was computed from as ``at``, so that
        ``retry_at - at`` is the wait the policy chose, however long the notices took."""
        if recipients is None:
            recipients = tuple(r.address for r in entry.recipients)
        made = time.time() if at is None else at
        step = Step(kind, self.host, text, recipients, wire, entry.qid, retry_at, made)
        self.journeys.add(entry.message_id, step, *notices)


def _addresses(results: tuple[Disposition, ...]) -> tuple[str, ...]:
    return tuple(d.recipient.address for d in results)


def _reasons(results: tuple[Disposition, ...]) -> str:
    """The replies behind ``results``, each once, in a stable order."""
    outcomes = (d.handoff.outcome for d in results)
    return "; ".join(sorted({f"{o.code or '---'} {o.text}" for o in outcomes}))
