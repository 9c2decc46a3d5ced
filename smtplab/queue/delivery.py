"""The outbound queue: store, look up the route, relay, retry with backoff, bounce.

Theory of operation
-------------------
A submission server (or relay) that accepts a message awaits
:meth:`DeliveryQueue.accept_from_loop` *before* it answers 250: the message is
split by recipient domain (one delivery per domain, as every MTA does) and each
part is fsynced to the :class:`~smtplab.queue.spool.Spool`, whose writer thread
commits everything that arrives together at once. Code outside an event loop
(the DSNs the queue sends itself) calls :meth:`DeliveryQueue.accept`.

One worker thread then takes due entries in order. For each it asks the lab DNS
for the route (RFC 5321 §5.1; a relay in the MX list keeps only the hosts it
prefers to itself), and runs one transaction with the recording client per
host, so every hop has a transcript. Per recipient:

* 2xx: done; the next hop is responsible now (§6.1);
* 5xx (or a message needing SMTPUTF8 for a host without it, RFC 6531 §3.2):
  permanent; a DSN goes back to the sender (RFC 3464), never to ``<>``;
* 4xx, or no answer: the next MX host is tried, "until a delivery attempt
  succeeds" (§5.1); after the last, retried after ``first_delay *
  factor**(n-1)`` seconds, until ``max_attempts`` or ``max_age``, then bounced
  (§4.5.4.1).

To a next hop that offers DSN the sender's RET, ENVID, NOTIFY and ORCPT go on
with the message, and the MX that stores it sends the success notice (RFC 3461
§5.2.1, §5.2.3, :meth:`DeliveryQueue.report_delivered`); to one without DSN the
queue sends ``relayed`` itself (§5.2.2).

An error in one entry's delivery (a bug, bytes no client can send) never stops
the worker: the entry is deferred like a ``4.3.0`` local error, noted in its
journey, and bounced once it expires, and the worker goes on (§6.1).

A notice from the null reverse-path (a DSN) is retried like any message; when
it fails for good it cannot be bounced (§6.1: never a notice about a notice),
so the queue keeps it in the mailbox of this mail system's postmaster, as
§4.5.5 describes and §6.1 allows ("transmit information about null address
events locally"): a message that got 250 is delivered, bounced or handed to
the postmaster, never dropped.

:meth:`DeliveryQueue.hold` stops the worker from taking entries: held mail
waits with no attempt, no expiry and no bounce however long the hold lasts
(time held does not count towards ``max_age``), and each held entry says so in
the spool, so ``smtplab queue`` and a restarted queue see it. A queue started
held keeps what the spool holds held; one started without a hold releases it.

Every step is reported to the message's :class:`~smtplab.record.journey.Journey`.
One worker keeps the order of steps the same on every run, which the notebooks
need. When more mail for the same domain is already due, the worker keeps the
connection open and sends the next message on it (RFC 5321 §4.1.4 allows many
transactions per session), pipelining each envelope (MAIL, RCPT, DATA in one
write, RFC 2920) when the next hop offers it, as Postfix does under load.
Otherwise it talks one command at a time and says QUIT before it reports the
outcome, so a single message's hop always reads as the chapters teach it.
"""

from __future__ import annotations

import asyncio
import heapq
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import cast

from smtplab.dns.route import PermanentRouteError, Route, RouteError
from smtplab.mailstore.maildir import Maildir
from smtplab.protocol.clock import LabClock
from smtplab.protocol.dsn import RecipientStatus, Report, build_dsn, must_not_notify
from smtplab.protocol.dsn_params import (
    Action,
    MailDSN,
    RcptDSN,
    Ret,
    mail_params,
    rcpt_params,
    wants,
)
from smtplab.protocol.rules import domain_of, message_id_of, split_enhanced
from smtplab.queue.spool import QueuedRecipient, QueueEntry, Spool
from smtplab.record.journey import JourneyBook, Step
from smtplab.record.recordings import Recordings
from smtplab.record.wirelog import WireLog
from smtplab.smtp.client import Outcome, RecordingClient, quit_quietly, transact, wire_order

NO_DSN = MailDSN()
HELD = "held: waits, with no attempt and no expiry, until released"
#: Route ``domain`` for the relay named ``local`` (which must not send to itself, §5.1).
Resolve = Callable[[str, str], Route]
Locate = Callable[[str], int | None]
#: A lab host's role ("mx", "relay", "submission", ...), or None for a host outside the lab.
RoleOf = Callable[[str], str | None]
#: The lab roles whose own queue takes a message on (their journey steps follow).
QUEUEING_ROLES = frozenset({"relay", "submission", "submissions"})


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again. Seconds, not hours: a lab must show a retry within a cell."""

    first_delay: float = 1.0
    factor: float = 2.0
    max_attempts: int = 5
    max_age: float = 60.0

    def delay(self, attempts: int) -> float:
        return self.first_delay * self.factor ** max(attempts - 1, 0)


DEFAULT_POLICY = RetryPolicy()


@dataclass(frozen=True)
class Hop:
    """Where the queue sends mail: resolve routes, find ports, and what each host does."""

    resolve: Resolve
    locate: Locate
    role_of: RoleOf


@dataclass(frozen=True)
class Handoff:
    """One recipient's outcome at a next hop: the reply, the host that gave it (None when
    none answered), and whether the DSN parameters went with it (RFC 3461 §5.2.1)."""

    outcome: Outcome
    host: str | None = None
    dsn_passed: bool = False

    @property
    def settled(self) -> bool:
        """Accepted or refused for good: no other MX host is tried for it."""
        return self.outcome.accepted or self.outcome.permanent


class DeliveryQueue:
    """The queue of one lab server (``host``)."""

    def __init__(
        self,
        host: str,
        spool: Spool,
        hop: Hop,
        *,
        journeys: JourneyBook,
        journal: Recordings,
        clock: LabClock,
        postmaster: Callable[[str], Maildir],
        policy: RetryPolicy = DEFAULT_POLICY,
        open_client: Callable[[RecordingClient], None] = lambda client: None,
        outgoing: Callable[[bytes], bytes] | None = None,
        source_address: str | None = None,
    ):
        self.host = host
        #: The mail domain this queue reports for (MAILER-DAEMON@, postmaster@).
        self.domain = host.partition(".")[2] or host
        #: The mailbox of an address: where undeliverable notices end (module docstring).
        self.postmaster = postmaster
        self.spool = spool
        self.hop = hop
        self.journeys = journeys
        self.journal = journal
        self.clock = clock
        self.policy = policy
        self.open_client = open_client
        #: Chapter 09: a last change to each message as it leaves (the lab's DKIM signer),
        #: and the loopback address this host's connections come from (for SPF).
        self.outgoing = outgoing
        self.source_address = source_address
        self._due: list[tuple[float, str]] = []
        self._entries: dict[str, QueueEntry] = {}
        self._waiting = Counter[str]()  # queued entries per domain: is there more for it?
        self._wake = threading.Condition()
        self._busy = False
        self._stopping = False
        self._held = False
        self._holding = threading.Lock()  # one hold() or release() at a time
        self._open: tuple[str, str, RecordingClient] | None = None  # (domain, host, session)
        self._worker: threading.Thread | None = None

    # -- accepting (called from the server's thread, before it answers 250) --------
    def accept(
        self,
        sender: str,
        recipients: list[QueuedRecipient],
        message: bytes,
        dsn: MailDSN = NO_DSN,
        qid: str | None = None,
    ) -> str:
        """Spool the message, one entry per recipient domain; return the queue id."""
        qid, entries = self._split(sender, recipients, message, dsn, qid)
        self.spool.put(entries, message)
        self._queued(entries)
        return qid

    async def accept_from_loop(
        self,
        sender: str,
        recipients: list[QueuedRecipient],
        message: bytes,
        dsn: MailDSN = NO_DSN,
        qid: str | None = None,
    ) -> str:
        """:meth:`accept` for a server's event loop: it awaits the spool's writer."""
        qid, entries = self._split(sender, recipients, message, dsn, qid)
        await asyncio.wrap_future(self.spool.put_later(entries, message))
        self._queued(entries)
        return qid

    def _split(
        self,
        sender: str,
        recipients: list[QueuedRecipient],
        message: bytes,
        dsn: MailDSN,
        qid: str | None,
    ) -> tuple[str, list[QueueEntry]]:
        """The queue id, and one entry per recipient domain (each has its own route)."""
        qid = qid or self.spool.new_qid()
        by_domain: dict[str, list[QueuedRecipient]] = {}
        for rcpt in recipients:
            by_domain.setdefault(domain_of(rcpt.address), []).append(rcpt)
        arrival, now = self.clock.rfc5322(), time.time()
        message_id = message_id_of(message)
        return qid, [
            QueueEntry(
                f"{qid}-{n}",
                sender,
                domain,
                rcpts,
                arrival,
                now,
                message_id=message_id,
                ret=dsn.ret,
                envid=dsn.envid,
                held_since=now if self._held else None,
            )
            for n, (domain, rcpts) in enumerate(by_domain.items(), start=1)
        ]

    def _queued(self, entries: list[QueueEntry]) -> None:
        """The entries are durable: tell their journeys, and wake the worker."""
        for entry in entries:
            self._step(entry, "queued", f"queued as {entry.qid} for {entry.domain}")
            if entry.held_since is not None:
                self._step(entry, "held", HELD)
        self._schedule(entries)

    def new_qid(self) -> str:
        """A queue id to name in the Received: header before the message is accepted."""
        return self.spool.new_qid()

    # -- running -------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker; deliver whatever a previous run left in the spool (or, if the
        queue is held, keep holding it)."""
        self._stopping = False
        known = len(self.spool.set_aside)
        self._schedule(self.spool.entries())
        for path in self.spool.set_aside[known:]:  # for `smtplab up`, which prints every step
            text = f"{path.name} is not a queue entry: moved unread to {path.parent}"
            self.journeys.add(None, Step("note", self.host, text))
        if self._held:
            self._hold_waiting()
        else:
            self._release_waiting()
        self._worker = threading.Thread(target=self._run, name=f"queue {self.host}", daemon=True)
        self._worker.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop after the current attempt; queued messages stay in the spool. Waits at most
        ``timeout`` seconds (None: as long as the attempt takes); True once stopped."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._worker is not None:
            self._worker.join(timeout)
            if self._worker.is_alive():
                return False
            self._worker = None
        return True

    # -- holding -----------------------------------------------------------------------
    @property
    def held(self) -> bool:
        return self._held

    def hold(self) -> None:
        """Keep all mail where it is until :meth:`release`: no attempts, no expiry, no bounce.

        An attempt already under way finishes; what it could not deliver is held too.
        Every waiting message gets a ``held`` step, also when the queue was held already.
        """
        with self._holding:
            with self._wake:
                self._held = True
            self._hold_waiting()

    def release(self) -> None:
        """End the hold: every held entry is due now, its held time not counted as age."""
        with self._holding:
            self._release_waiting()
            with self._wake:
                self._held = False
                self._wake.notify_all()

    def _hold_waiting(self) -> None:
        """Mark every waiting entry held, in the spool too (the worker takes none meanwhile)."""
        now = time.time()
        with self._wake:
            fresh = [e for e in self._entries.values() if e.held_since is None]
            for entry in fresh:
                entry.held_since = now
        for entry in fresh:
            self.spool.update(entry)
        with self._wake:
            waiting = list(self._entries.values())
        for entry in waiting:
            self._step(entry, "held", HELD)

    def _release_waiting(self) -> None:
        """Make held entries due now and count their held time (still held: nothing runs)."""
        now = time.time()
        with self._wake:
            held = [e for e in self._entries.values() if e.held_since is not None]
        released = [
            replace(
                e,
                held_since=None,
                held_seconds=e.held_seconds + max(now - (e.held_since or now), 0.0),
                next_attempt=now,
            )
            for e in held
        ]
        for entry in released:
            self.spool.update(entry)
        with self._wake:
            self._entries.update((e.qid, e) for e in released)
            self._due = [(e.next_attempt, qid) for qid, e in self._entries.items()]
            heapq.heapify(self._due)
        for entry in released:
            self._step(entry, "released", "released from the hold: due now")

    def pending(self) -> list[QueueEntry]:
        """What is waiting, soonest first: for ``smtplab queue`` and the chapters."""
        with self._wake:
            return [self._entries[qid] for _, qid in sorted(self._due)]

    def flush(self) -> None:
        """Make every waiting entry due now (like ``postqueue -f``)."""
        with self._wake:
            self._due = [(0.0, qid) for _, qid in self._due]
            heapq.heapify(self._due)
            self._wake.notify_all()

    def _schedule(self, entries: list[QueueEntry]) -> None:
        late = []  # accepted just as a hold began: held, and written so
        with self._wake:
            for entry in entries:
                if entry.qid in self._entries:  # a restart finds what is still queued
                    continue
                if self._held and entry.held_since is None:
                    entry.held_since = time.time()
                    late.append(entry)
                self._entries[entry.qid] = entry
                self._waiting[entry.domain] += 1
                heapq.heappush(self._due, (entry.next_attempt, entry.qid))
            self._wake.notify_all()
        for entry in late:
            self.spool.update(entry)

    def _idle(self) -> bool:
        """Nothing to do now: held, or nothing due (call with the lock held)."""
        return self._held or not self._due or self._due[0][0] > time.time()

    def _run(self) -> None:
        while True:
            with self._wake:
                if self._idle():
                    self._close_open()  # idle: no session kept waiting
                while not self._stopping and self._idle():
                    timeout = None if self._held or not self._due else self._due[0][0] - time.time()
                    self._wake.wait(timeout)
                if self._stopping:
                    self._close_open()
                    return
                _, qid = heapq.heappop(self._due)
                entry = self._entries.pop(qid)
                self._waiting[entry.domain] -= 1
                self._busy = True
            try:
                self._attempt(entry)
            except Exception as error:  # one entry's error never stops the worker (§6.1)
                self._contain(entry, error)
            finally:
                with self._wake:
                    self._busy = False
                    self._wake.notify_all()

    def wait_empty(self, deadline: float) -> bool:
        """Block until nothing is queued (while held: nothing but held mail) or in progress,
        or ``deadline`` (monotonic) passes."""
        with self._wake:
            while (self._entries and not self._held) or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wake.wait(remaining)
            return True

    # -- one delivery attempt --------------------------------------------------------
    def _attempt(self, entry: QueueEntry) -> None:
        entry.attempts += 1  # the worker owns an entry once it is off the heap
        if entry.held_since is not None:  # queued as a release began: count it released
            entry.held_seconds += max(time.time() - entry.held_since, 0.0)
            entry.held_since = None
        try:
            route = self.hop.resolve(entry.domain, self.host)
        except RouteError as error:
            for line in error.explanation:
                self._step(entry, "route", line)
            text = f"{error.status} {error.text}"
            results = {
                r.address: Handoff(Outcome(r.address, error.code, text, "DNS"))
                for r in entry.recipients
            }
            self._settle(entry, results, permanent=isinstance(error, PermanentRouteError))
            return
        for line in route.decisions:
            self._step(entry, "route", line)
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
                self._step(entry, "attempt", f"{candidate.host}: nothing listening (host down)")
                continue
            for address, handoff in self._transfer(
                entry, candidate.host, port, message, waiting
            ).items():
                if handoff.host is not None or address not in results:  # a reply beats none
                    results[address] = handoff
            waiting = [r for r in waiting if not results[r.address].settled]
            if not waiting:
                break
        self._settle(entry, results, permanent=False)

    def _contain(self, entry: QueueEntry, error: Exception) -> None:
        """An error in the delivery of one entry: defer it like a temporary failure (it
        bounces once it expires) and go on with the next entry; if even that fails, keep
        it queued as the spool has it and try again later."""
        self._close_open()  # the session it used may have stopped in mid-command
        why = f"4.3.0 local error in processing ({type(error).__name__})"
        results = {
            r.address: Handoff(Outcome(r.address, None, why, "queue")) for r in entry.recipients
        }
        try:
            self._settle(entry, results, permanent=False)
        except Exception as again:
            delay = self.policy.delay(entry.attempts)
            later = replace(entry, next_attempt=time.time() + delay)
            text = (
                f"attempt {entry.attempts} failed ({why}; then {type(again).__name__} "
                f"while settling it); retry in {delay:g} s"
            )
            self._step(later, "retry", text, retry_at=later.next_attempt)
            self._schedule([later])

    def _close_open(self) -> None:
        if self._open is not None:
            quit_quietly(self._open[2])
            self._open = None

    def _more_for(self, domain: str) -> bool:
        """Is more mail for ``domain`` queued? Then keep the session open: if it is
        not due yet, the worker closes the session before it goes idle."""
        with self._wake:
            return self._waiting[domain] > 0

    def _session(self, entry: QueueEntry, host: str, port: int) -> RecordingClient:
        """The open session to ``host`` for this domain, or a new connection (after EHLO)."""
        if self._open is not None and self._open[:2] == (entry.domain, host):
            client = self._open[2]
            self._open = None
            if client.sock is not None:
                return client
        self._close_open()
        client = RecordingClient(host, client_name=self.host, journal=self.journal)
        if self.source_address is not None:  # smtplib binds the socket to it
            client.source_address = (self.source_address, 0)
        try:
            client.connect(host, port)
            self.open_client(client)
            client.ehlo_or_helo_if_needed()  # its extensions decide the parameters
        except (OSError, smtplib.SMTPException):
            client.close()
            raise
        return client

    def _transfer(
        self,
        entry: QueueEntry,
        host: str,
        port: int,
        message: bytes,
        recipients: list[QueuedRecipient],
    ) -> dict[str, Handoff]:
        """One transaction with ``host`` for ``recipients``, each outcome with its host."""
        addresses = [r.address for r in recipients]
        try:
            client = self._session(entry, host, port)
        except (OSError, smtplib.SMTPException) as error:
            why = getattr(error, "strerror", None) or type(error).__name__  # the same on any OS
            self._step(entry, "attempt", f"→ {host}: --- connection", tuple(addresses))
            return {
                a: Handoff(Outcome(a, None, f"connection failed: {why}", "connection"))
                for a in addresses
            }
        # RFC 3461 §5.2.1: to a next hop that offers DSN, the sender's DSN parameters go on
        # as they came (§5.2.2 otherwise: this queue reports "relayed" itself).
        dsn = client.has_extn("dsn")
        mail_options = mail_params(MailDSN(cast(Ret | None, entry.ret), entry.envid)) if dsn else []
        rcpt_options = {
            r.address: rcpt_params(RcptDSN(frozenset(r.notify), r.orcpt)) for r in recipients
        }
        busy = self._more_for(entry.domain)  # under load: pipeline, keep the session
        try:
            outcomes = transact(
                client,
                entry.sender,
                addresses,
                message,
                mail_options,
                rcpt_options if dsn else (),
                finish=False,
                pipelining=busy,
            )
        except BaseException:
            client.close()  # never leave a session in mid-command
            raise
        if client.sock is not None and self._more_for(entry.domain):
            self._open = (entry.domain, host, client)
        else:
            quit_quietly(client)
        in_wire_order = sorted(outcomes, key=lambda o: wire_order(o.stage))
        summary = "; ".join(dict.fromkeys(f"{o.code or '---'} {o.stage}" for o in in_wire_order))
        self._step(entry, "attempt", f"→ {host}: {summary}", tuple(addresses), wire=client.wire)
        return {
            o.recipient: Handoff(o, host if o.code is not None else None, dsn) for o in outcomes
        }

    def _settle(self, entry: QueueEntry, results: dict[str, Handoff], *, permanent: bool) -> None:
        """Sort recipients into done, failed and retry; update the spool and the journey."""
        nobody = "4.4.1 no MX host answered"
        delivered, failed, retry = [], [], []
        for rcpt in entry.recipients:
            handoff = results.get(rcpt.address) or Handoff(
                Outcome(rcpt.address, None, nobody, "connection")
            )
            if handoff.outcome.accepted:
                delivered.append((rcpt, handoff))
            elif permanent or handoff.outcome.permanent:
                failed.append((rcpt, handoff))
            else:
                retry.append((rcpt, handoff))
        # Notices are queued before the final step and recorded right after it, at once
        # (Journey.add): a finished journey shows them, after the event they report.
        for host in sorted({h.host for _, h in delivered if h.host is not None}):
            self._handed_to(entry, host, [(r, h) for r, h in delivered if h.host == host])
        now = time.time()
        expired = not self._held and (  # held mail never expires (see hold)
            entry.attempts >= self.policy.max_attempts or entry.age(now) > self.policy.max_age
        )
        if retry and expired:
            failed += retry
            retry = []
        if failed and must_not_notify(entry.sender):
            if not self._to_postmaster(entry, failed):
                retry += failed  # not stored: it stays queued and is tried again later
        elif failed:
            notices = self._notify(entry, "failed", failed)
            self._step(entry, "bounced", _reasons(failed), _addresses(failed), notices=notices)
        if not retry:
            self.spool.remove(entry.qid)
            return
        delay = self.policy.delay(entry.attempts)
        entry = replace(
            entry,
            recipients=[r for r, _ in retry],
            next_attempt=now + delay,
            held_since=now if self._held else None,
        )
        notices: tuple[Step, ...] = ()
        if not entry.delay_notified and any(
            wants(frozenset(r.notify), "delayed") for r, _ in retry
        ):
            notices = self._notify(entry, "delayed", retry)
            entry = replace(entry, delay_notified=True)
        reason = _reasons(retry)
        if self._held:
            text = f"attempt {entry.attempts} failed ({reason}); held until released"
            self._step(entry, "held", text, _addresses(retry), notices=notices)
        else:
            text = f"attempt {entry.attempts} failed ({reason}); retry in {delay:g} s"
            self._step(
                entry,
                "retry",
                text,
                _addresses(retry),
                retry_at=entry.next_attempt,
                notices=notices,
            )
        self.spool.update(entry)
        self._schedule([entry])

    def _handed_to(
        self, entry: QueueEntry, host: str, accepted: list[tuple[QueuedRecipient, Handoff]]
    ) -> None:
        """``host`` took these recipients: it is responsible now (§6.1). A success notice
        is this queue's to send only if the DSN parameters could not go on (RFC 3461
        §5.2.2); otherwise the MX that delivers sends "delivered" itself (§5.2.3)."""
        notices = self._notify(entry, "relayed", [(r, h) for r, h in accepted if not h.dsn_passed])
        role = self.hop.role_of(host)
        addresses = _addresses(accepted)
        if role == "mx":
            self._step(entry, "delivered", f"{host} accepted it", addresses, notices=notices)
        elif role in QUEUEING_ROLES:  # not final: that host's queue reports from here on
            text = f"{host} accepted it; its queue takes it on"
            self._step(entry, "note", text, addresses, notices=notices)
        else:
            self._step(entry, "relayed", f"{host} accepted it", addresses, notices=notices)

    def _step(
        self,
        entry: QueueEntry,
        kind: str,
        text: str,
        recipients: tuple[str, ...] | None = None,
        *,
        wire: WireLog | None = None,
        retry_at: float | None = None,
        notices: tuple[Step, ...] = (),
    ) -> None:
        """Report a step of ``entry`` (about all its recipients unless others are named),
        and after it, at once, the ``notices`` it caused (see :meth:`_notify`)."""
        if recipients is None:
            recipients = tuple(r.address for r in entry.recipients)
        step = Step(kind, self.host, text, recipients, wire, entry.qid, retry_at)  # type: ignore[arg-type]
        self.journeys.add(entry.message_id, step, *notices)

    def _to_postmaster(
        self, entry: QueueEntry, failed: list[tuple[QueuedRecipient, Handoff]]
    ) -> bool:
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
        text = f"undeliverable notice ({_reasons(failed)}) kept for <{address}>"
        self._step(entry, "postmaster", text, _addresses(failed))
        return True

    # -- delivery status notifications ------------------------------------------------
    def _notify(
        self, entry: QueueEntry, action: Action, results: list[tuple[QueuedRecipient, Handoff]]
    ) -> tuple[Step, ...]:
        """Queue a DSN to the sender for the recipients that asked for this ``action``;
        return its journey step (none if no notice is due), for the caller to record
        after the step it reports."""
        wanted = [(r, h) for r, h in results if wants(frozenset(r.notify), action)]
        statuses = tuple(
            RecipientStatus(
                address=r.address,
                action=action,
                status=split_enhanced(h.outcome.text)[0] or _default_status(action, h.outcome),
                diagnostic=f"{h.outcome.code} {h.outcome.text}" if h.outcome.code else None,
                remote_mta=h.host,
                orcpt=r.orcpt,
            )
            for r, h in wanted
        )
        dsn = MailDSN(cast(Ret | None, entry.ret), entry.envid)
        original = Original(entry.qid, entry.message_id, entry.sender, entry.arrival, dsn)
        return self._report(original, action, statuses, self.spool.message(entry.qid))

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
        qid, message_id = self.spool.new_qid(), message_id_of(message)
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
        self.accept("", [QueuedRecipient(about.sender)], build_dsn(report))
        text = f"{action} notice {dsn_id} sent to <{about.sender}>"
        return (Step("dsn", self.host, text, tuple(s.address for s in statuses), qid=about.qid),)


@dataclass(frozen=True)
class Original:
    """The message a report is about: its queue id here, Message-ID, sender, arrival and
    the sender's DSN options (RET, ENVID)."""

    qid: str
    message_id: str | None
    sender: str
    arrival: str
    dsn: MailDSN


def _addresses(results: list[tuple[QueuedRecipient, Handoff]]) -> tuple[str, ...]:
    return tuple(r.address for r, _ in results)


def _reasons(results: list[tuple[QueuedRecipient, Handoff]]) -> str:
    """The replies behind ``results``, each once, in a stable order."""
    return "; ".join(sorted({f"{h.outcome.code or '---'} {h.outcome.text}" for _, h in results}))


def _default_status(action: str, outcome: Outcome) -> str:
    """An RFC 3463 status when the reply had none: success, or a routing/timeout failure."""
    if action in ("delivered", "relayed"):
        return "2.0.0"
    if outcome.code is None:
        return "4.4.1"  # no answer from host (RFC 3463 §3.5)
    return f"{outcome.code // 100}.0.0"
