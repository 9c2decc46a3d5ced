"""The outbound queue: store, look up the route, relay, retry with backoff, bounce.

Theory of operation
-------------------
A submission server (or relay) that accepts a message awaits
:meth:`DeliveryQueue.accept_from_loop` *before* it answers 250: the message is
split by recipient domain (one delivery per domain, as every MTA does) and each
part is fsynced to the :class:`~smtplab.spool.Spool`, whose writer thread
commits everything that arrives together at once. Code outside an event loop
(the DSNs the queue sends itself) calls :meth:`DeliveryQueue.accept`.

One worker thread then takes due entries in order. For each it asks the lab DNS
for the route (RFC 5321 §5.1), connects to the candidates in turn until one
answers, and runs one transaction with the recording client, so every hop has
a transcript. Per recipient:

* 2xx: done; the next hop is responsible now (§6.1);
* 5xx: permanent; a DSN goes back to the sender (RFC 3464), never to ``<>``;
* 4xx, or no host reachable: retried after ``first_delay * factor**(n-1)``
  seconds, until ``max_attempts`` or ``max_age``, then bounced (§4.5.4.1).

Every step is reported to the message's :class:`~smtplab.journey.Journey`.
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

from smtplab.client import Outcome, RecordingClient, quit_quietly, transact
from smtplab.clock import LabClock
from smtplab.dsn import MailDSN, RecipientStatus, Report, build_dsn, must_not_notify, wants
from smtplab.journal import WireJournal
from smtplab.journey import JourneyBook, Step
from smtplab.mx import PermanentRouteError, Route, RouteError
from smtplab.protocol import message_id_of, split_enhanced
from smtplab.spool import QueuedRecipient, QueueEntry, Spool

NO_DSN = MailDSN()
Resolve = Callable[[str], Route]
Locate = Callable[[str], int | None]


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
    """Where the queue sends mail: resolve routes, find ports, and which hosts are final."""

    resolve: Resolve
    locate: Locate
    is_mailbox_host: Callable[[str], bool]


class DeliveryQueue:
    """The queue of one lab server (``host``)."""

    def __init__(
        self,
        host: str,
        spool: Spool,
        hop: Hop,
        *,
        journeys: JourneyBook,
        journal: WireJournal,
        clock: LabClock,
        policy: RetryPolicy = DEFAULT_POLICY,
        open_client: Callable[[RecordingClient], None] = lambda client: None,
        outgoing: Callable[[bytes], bytes] | None = None,
        source_address: str | None = None,
    ):
        self.host = host
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
            by_domain.setdefault(rcpt.address.rpartition("@")[2].lower(), []).append(rcpt)
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
            )
            for n, (domain, rcpts) in enumerate(by_domain.items(), start=1)
        ]

    def _queued(self, entries: list[QueueEntry]) -> None:
        """The entries are durable: tell their journeys, and wake the worker."""
        for entry in entries:
            addresses = tuple(r.address for r in entry.recipients)
            self.journeys.add(
                entry.message_id,
                Step("queued", self.host, f"queued as {entry.qid} for {entry.domain}", addresses),
            )
        self._schedule(entries)

    def new_qid(self) -> str:
        """A queue id to name in the Received: header before the message is accepted."""
        return self.spool.new_qid()

    # -- running -------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker; deliver whatever a previous run left in the spool."""
        self._stopping = False
        self._schedule(self.spool.entries())
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
        with self._wake:
            for entry in entries:
                if entry.qid in self._entries:  # a restart finds what is still queued
                    continue
                self._entries[entry.qid] = entry
                self._waiting[entry.domain] += 1
                heapq.heappush(self._due, (entry.next_attempt, entry.qid))
            self._wake.notify_all()

    def _run(self) -> None:
        while True:
            with self._wake:
                if not self._due or self._due[0][0] > time.time():
                    self._close_open()  # idle: no session kept waiting
                while not self._stopping and (not self._due or self._due[0][0] > time.time()):
                    timeout = self._due[0][0] - time.time() if self._due else None
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
            finally:
                with self._wake:
                    self._busy = False
                    self._wake.notify_all()

    def wait_empty(self, deadline: float) -> bool:
        """Block until nothing is queued or in progress, or ``deadline`` (monotonic) passes."""
        with self._wake:
            while self._entries or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wake.wait(remaining)
            return True

    # -- one delivery attempt --------------------------------------------------------
    def _attempt(self, entry: QueueEntry) -> None:
        entry.attempts += 1  # the worker owns an entry once it is off the heap
        addresses = tuple(r.address for r in entry.recipients)
        try:
            route = self.hop.resolve(entry.domain)
        except RouteError as error:
            for line in error.explanation:
                self._step(entry, "route", line, addresses)
            outcomes = [
                Outcome(a, error.code, f"{error.status} {error.text}", "DNS") for a in addresses
            ]
            self._settle(entry, outcomes, None, permanent=isinstance(error, PermanentRouteError))
            return
        self._step(entry, "route", str(route).splitlines()[-1], addresses)
        outcomes, server = [], None
        message = self.spool.message(entry.qid)
        if self.outgoing is not None:
            message = self.outgoing(message)
        for candidate in route.candidates:
            port = self.hop.locate(candidate.host)
            if port is None:
                self._step(
                    entry, "attempt", f"{candidate.host}: nothing listening (host down)", addresses
                )
                continue
            outcomes = self._transfer(entry, candidate.host, port, message)
            if any(o.code is not None and o.code != 421 for o in outcomes):
                server = candidate.host
                break
        if not outcomes:
            outcomes = [
                Outcome(a, None, "4.4.1 no MX host answered", "connection") for a in addresses
            ]
        self._settle(entry, outcomes, server, permanent=False)

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
        """The open session to ``host`` for this domain, or a new connection."""
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
        except (OSError, smtplib.SMTPException):
            client.close()
            raise
        return client

    def _transfer(self, entry: QueueEntry, host: str, port: int, message: bytes) -> list[Outcome]:
        addresses = [r.address for r in entry.recipients]
        try:
            client = self._session(entry, host, port)
        except (OSError, smtplib.SMTPException) as error:
            why = getattr(error, "strerror", None) or type(error).__name__  # the same on any OS
            self.journeys.add(
                entry.message_id,
                Step("attempt", self.host, f"→ {host}: --- connection", tuple(addresses)),
            )
            return [Outcome(a, None, f"connection failed: {why}", "connection") for a in addresses]
        busy = self._more_for(entry.domain)  # under load: pipeline, keep the session
        outcomes = transact(client, entry.sender, addresses, message, finish=False, pipelining=busy)
        if client.sock is not None and self._more_for(entry.domain):
            self._open = (entry.domain, host, client)
        else:
            quit_quietly(client)
        summary = "; ".join(sorted({f"{o.code or '---'} {o.stage}" for o in outcomes}))
        self.journeys.add(
            entry.message_id,
            Step("attempt", self.host, f"→ {host}: {summary}", tuple(addresses), client.wire),
        )
        return outcomes

    def _settle(
        self, entry: QueueEntry, outcomes: list[Outcome], server: str | None, *, permanent: bool
    ) -> None:
        """Sort recipients into done, failed and retry; update the spool and the journey."""
        by_address = {o.recipient: o for o in outcomes}
        delivered, failed, retry = [], [], []
        for rcpt in entry.recipients:
            outcome = by_address[rcpt.address]
            if outcome.accepted:
                delivered.append((rcpt, outcome))
            elif permanent or (outcome.code is not None and outcome.code >= 500):
                failed.append((rcpt, outcome))
            else:
                retry.append((rcpt, outcome))
        # Notices are queued before the final step, so a finished journey implies them.
        if delivered:
            final = server is not None and self.hop.is_mailbox_host(server)
            kind = "delivered" if final else "relayed"
            self._notify(entry, kind, delivered, server)
            self._step(entry, kind, f"{server} accepted it", tuple(r.address for r, _ in delivered))
        expired = (
            entry.attempts >= self.policy.max_attempts
            or time.time() - entry.created > self.policy.max_age
        )
        if retry and expired:
            failed += retry
            retry = []
        if failed:
            self._notify(entry, "failed", failed, server)
            reasons = "; ".join(sorted({f"{o.code or '---'} {o.text}" for _, o in failed}))
            self._step(entry, "bounced", reasons, tuple(r.address for r, _ in failed))
        if not retry:
            self.spool.remove(entry.qid)
            return
        delay = self.policy.delay(entry.attempts)
        entry = replace(entry, recipients=[r for r, _ in retry], next_attempt=time.time() + delay)
        reason = "; ".join(sorted({f"{o.code or '---'} {o.text}" for _, o in retry}))
        self._step(
            entry,
            "retry",
            f"attempt {entry.attempts} failed ({reason}); retry in {delay:g} s",
            tuple(r.address for r, _ in retry),
        )
        if not entry.delay_notified and any(
            wants(frozenset(r.notify), "delayed") for r, _ in retry
        ):
            self._notify(entry, "delayed", retry, server)
            entry = replace(entry, delay_notified=True)
        self.spool.update(entry)
        self._schedule([entry])

    def _step(self, entry: QueueEntry, kind: str, text: str, recipients: tuple[str, ...]) -> None:
        self.journeys.add(entry.message_id, Step(kind, self.host, text, recipients))  # type: ignore[arg-type]

    # -- delivery status notifications ------------------------------------------------
    def _notify(
        self,
        entry: QueueEntry,
        action: str,
        results: list[tuple[QueuedRecipient, Outcome]],
        server: str | None,
    ) -> None:
        """Queue a DSN to the sender for the recipients that asked for this ``action``."""
        wanted = [(r, o) for r, o in results if wants(frozenset(r.notify), action)]  # type: ignore[arg-type]
        if not wanted or must_not_notify(entry.sender):
            return
        dsn_id = f"<{entry.qid}.{action}@{self.host}>"
        statuses = tuple(
            RecipientStatus(
                address=r.address,
                action=action,  # type: ignore[arg-type]
                status=split_enhanced(o.text)[0] or _default_status(action, o),
                diagnostic=f"{o.code} {o.text}" if o.code is not None else None,
                remote_mta=server,
                orcpt=r.orcpt,
            )
            for r, o in wanted
        )
        report = Report(
            reporting_mta=self.host,
            mailer_daemon=f"MAILER-DAEMON@{self.host.partition('.')[2] or self.host}",
            original_sender=entry.sender,
            arrival_date=entry.arrival,
            recipients=statuses,
            original_message=self.spool.message(entry.qid),
            ret=entry.ret,
            envid=entry.envid,
            date=self.clock.rfc5322(),
            message_id=dsn_id,
        )
        self.accept("", [QueuedRecipient(entry.sender)], build_dsn(report))
        self._step(
            entry,
            "dsn",
            f"{action} notice {dsn_id} sent to <{entry.sender}>",
            tuple(s.address for s in statuses),
        )


def _default_status(action: str, outcome: Outcome) -> str:
    """An RFC 3463 status when the reply had none: success, or a routing/timeout failure."""
    if action in ("delivered", "relayed"):
        return "2.0.0"
    if outcome.code is None:
        return "4.4.1"  # no answer from host (RFC 3463 §3.5)
    return f"{outcome.code // 100}.0.0"
