"""The outbound queue: store, look up the route, relay, retry with backoff, bounce.

Theory of operation
-------------------
A submission server (or relay) that accepts a message awaits
:meth:`DeliveryQueue.accept_from_loop` *before* it answers 250: the message is
split by recipient domain (one delivery per domain, as every MTA does) and each
part is fsynced to the :class:`~smtplab.queue.spool.Spool`, whose writer thread
commits everything that arrives together at once. Code outside an event loop
(the DSNs the queue sends itself) calls :meth:`DeliveryQueue.accept`.

One worker thread then takes due entries in order, soonest first, and hands each
to :class:`~smtplab.queue.attempt.Attempts`: it asks the lab DNS for the route
(RFC 5321 §5.1; a relay in the MX list keeps only the hosts it prefers to
itself) and runs one transaction per host with the recording client
(:mod:`smtplab.queue.transfer`), so every hop has a transcript. A recipient with a
4xx, or no answer, goes on to the next MX host, "until a delivery attempt
succeeds" (§5.1). Then :func:`~smtplab.queue.settle.settle`, a pure function,
decides each recipient:

* 2xx: done; the next hop is responsible now (§6.1);
* 5xx (or a message needing SMTPUTF8 for a host without it, RFC 6531 §3.2):
  permanent; a DSN goes back to the sender (RFC 3464), never to ``<>``;
* 4xx, or no answer at any host: retried after ``first_delay * factor**(n-1)``
  seconds, until ``max_attempts`` or ``max_age``, then bounced (§4.5.4.1).

To a next hop that offers DSN the sender's RET, ENVID, NOTIFY and ORCPT go on
with the message, and the MX that stores it sends the success notice (RFC 3461
§5.2.1, §5.2.3, :meth:`DeliveryQueue.report_delivered`); to one without DSN the
queue sends ``relayed`` itself (§5.2.2). The notices are made and queued by
:class:`~smtplab.queue.notices.Notices`.

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
need. While more mail for the same domain is queued, the worker keeps the
session to its host open for the next message (see :mod:`smtplab.queue.transfer`);
it closes it before it goes idle.
"""

from __future__ import annotations

import asyncio
import heapq
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

from smtplab.mailstore.maildir import Maildir
from smtplab.protocol.clock import LabClock
from smtplab.protocol.dsn_params import MailDSN
from smtplab.protocol.rules import domain_of, message_id_of
from smtplab.queue.attempt import Attempts, Hop
from smtplab.queue.notices import Notices
from smtplab.queue.settle import DEFAULT_POLICY, RetryPolicy
from smtplab.queue.spool import QueuedRecipient, QueueEntry, Spool
from smtplab.queue.transfer import Sessions
from smtplab.record.journey import JourneyBook, Step
from smtplab.record.recordings import Recordings
from smtplab.smtp.client import RecordingClient

#: What callers import from here: the queue, what it takes, and the policy it follows.
__all__ = ["DEFAULT_POLICY", "DeliveryQueue", "Hop", "RetryPolicy"]

NO_DSN = MailDSN()
HELD = "held: waits, with no attempt and no expiry, until released"


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
        self.spool = spool
        self.journeys = journeys
        self.clock = clock
        self._due: list[tuple[float, str]] = []
        self._entries: dict[str, QueueEntry] = {}
        self._waiting = Counter[str]()  # queued entries per domain: is there more for it?
        self._wake = threading.Condition()
        self._busy = False
        self._stopping = False
        self._held = False
        self._holding = threading.Lock()  # one hold() or release() at a time
        self._worker: threading.Thread | None = None
        self._sessions = Sessions(
            host,
            journal,
            more_for=self._more_for,
            open_client=open_client,
            source_address=source_address,
        )
        self._notices = Notices(
            host,
            self.domain,
            enqueue=self.accept,
            message_of=spool.message,
            new_qid=spool.new_qid,
            journeys=journeys,
            clock=clock,
        )
        self._attempts = Attempts(
            host,
            spool,
            hop,
            sessions=self._sessions,
            notices=self._notices,
            domain=self.domain,
            postmaster=postmaster,
            journeys=journeys,
            clock=clock,
            policy=policy,
            outgoing=outgoing,
            held=lambda: self._held,
            schedule=self._schedule,
        )
        #: The MX stored a message: queue the "delivered" notices (RFC 3461 §5.2.3).
        self.report_delivered = self._notices.report_delivered

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
            self._attempts.step(entry, "queued", f"queued as {entry.qid} for {entry.domain}")
            if entry.held_since is not None:
                self._attempts.step(entry, "held", HELD)
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
            self._attempts.step(entry, "held", HELD)

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
            self._attempts.step(entry, "released", "released from the hold: due now")

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
                    self._sessions.close()  # idle: no session kept waiting
                while not self._stopping and self._idle():
                    timeout = None if self._held or not self._due else self._due[0][0] - time.time()
                    self._wake.wait(timeout)
                if self._stopping:
                    self._sessions.close()
                    return
                _, qid = heapq.heappop(self._due)
                entry = self._entries.pop(qid)
                self._waiting[entry.domain] -= 1
                self._busy = True
            try:
                self._attempts.deliver(entry)
            except Exception as error:  # one entry's error never stops the worker (§6.1)
                self._attempts.contain(entry, error)
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

    def _more_for(self, domain: str) -> bool:
        """Is more mail for ``domain`` queued? Then keep the session open: if it is
        not due yet, the worker closes the session before it goes idle."""
        with self._wake:
            return self._waiting[domain] > 0
