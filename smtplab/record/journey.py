"""The journey of one message: every hop, every DNS answer, every queue event.

Theory of operation
-------------------
A message submitted to the lab may travel further on its own: the submission
server queues it, looks up the recipient's MX in the lab DNS, relays it, gets
4xx and retries later, or gives up and sends a bounce. Those steps happen in
the queue's worker threads, long after ``lab.send`` returned. The
:class:`Journey` is where they report, as data: worker threads only *append*
:class:`Step` records; readers (a notebook cell, a widget, the CLI) read them on
their own thread, or block in :meth:`Journey.wait` until every recipient has a
final outcome, with a deadline.
"""

from __future__ import annotations

import html
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from smtplab.record.transcript import Transcript
from smtplab.record.wirelog import WireLog

StepKind = Literal[
    "submitted",  # the client handed the message to the first server
    "queued",  # a server stored it (fsynced) and took responsibility
    "route",  # an MX lookup and the hosts it chose
    "attempt",  # one connection to a next hop, with its transcript
    "retry",  # a temporary failure; the next attempt is scheduled
    "delivered",  # stored in a mailbox (final)
    "relayed",  # handed to a server outside the lab's mailboxes (final for the lab)
    "refused",  # the first server refused the recipient (final)
    "bounced",  # given up; a DSN goes to the sender (final)
    "dsn",  # a delivery status notification was queued
    "held",  # the queue is held: the message waits, no attempt, no expiry (until released)
    "released",  # the hold ended: the message is due again
    "postmaster",  # an undeliverable notice was kept in the postmaster's mailbox (final)
    "note",
]
DEFAULT_KEEP = 2000
#: The journey book's own memory budget (its hops' recordings are the journal's, see
#: smtplab.record.recordings). An ordinary journey takes a few KiB; 32 MiB bounds a bulk run or
#: a hostile one (a hundred recipients, retries) next to the journal's 256 MiB.
DEFAULT_MAX_BYTES = 32 << 20
#: What one Step costs beyond its text and recipients (the object, its tuple, refs).
STEP_COST = 256
FINAL: frozenset[str] = frozenset({"delivered", "relayed", "refused", "bounced", "postmaster"})


@dataclass(frozen=True)
class Step:
    """One thing that happened to the message, in order.

    ``host`` is the server that did it; ``recipients`` are the envelope
    recipients it concerns; ``wire`` is the connection's recording for hops
    (submitted/attempt), read live, so a hop shows while it is still going on.
    Queue steps also name the queue entry (``qid``) and, for a retry, when it
    is due (``retry_at``, epoch seconds), for ``smtplab up`` to print. ``at`` is
    when the step was made, on the same clock, so a retry's wait is ``retry_at -
    at``; like ``retry_at`` it is left out of every text form, which stays the
    same on every run.
    """

    kind: StepKind
    host: str
    text: str
    recipients: tuple[str, ...] = ()
    wire: WireLog | None = field(default=None, repr=False, compare=False)
    qid: str | None = field(default=None, repr=False, compare=False)
    retry_at: float | None = field(default=None, repr=False, compare=False)
    at: float = field(default_factory=time.time, repr=False, compare=False)

    @property
    def transcript(self) -> Transcript | None:
        return self.wire.transcript() if self.wire is not None else None

    @property
    def cost(self) -> int:
        """About what the step takes in memory (its recording is counted by the journal)."""
        return STEP_COST + len(self.host) + len(self.text) + sum(len(r) for r in self.recipients)

    def __str__(self) -> str:
        who = f" [{', '.join(self.recipients)}]" if self.recipients else ""
        return f"{self.kind:<9} {self.host:<18} {self.text}{who}"


class Journey:
    """What happened to one message, growing while the queue works on it."""

    def __init__(self, message_id: str, recipients: tuple[str, ...]):
        self.message_id = message_id
        self.recipients = recipients
        self._steps: list[Step] = []
        self._final: dict[str, str] = {}
        self._changed = threading.Condition()
        self._listeners: list[Callable[[Step], None]] = []
        #: Told what each new step costs: the book's byte budget (see JourneyBook).
        self.grew: Callable[[int], None] | None = None

    # -- written by the lab's threads -------------------------------------------
    def add(self, *steps: Step) -> None:
        """Record ``steps`` in order and at once: a reader (:meth:`wait`) sees all or none,
        so a final step and the notice it caused are never shown apart."""
        with self._changed:
            for step in steps:
                self._steps.append(step)
                if step.kind in FINAL:
                    for rcpt in step.recipients:
                        self._final.setdefault(rcpt.lower(), step.kind)
            self._changed.notify_all()
            listeners = list(self._listeners)
        if self.grew is not None:
            self.grew(sum(step.cost for step in steps))
        for step in steps:
            for listener in listeners:
                listener(step)

    def on_step(self, callback: Callable[[Step], None]) -> None:
        """Call ``callback(step)`` for each new step (from the lab's threads)."""
        with self._changed:
            self._listeners.append(callback)

    # -- read by notebooks and widgets --------------------------------------------
    @property
    def steps(self) -> list[Step]:
        with self._changed:
            return list(self._steps)

    @property
    def done(self) -> bool:
        """True once every recipient has a final outcome (see FINAL)."""
        with self._changed:
            return all(r.lower() in self._final for r in self.recipients)

    def outcome(self, recipient: str) -> str | None:
        """The recipient's final step kind (see FINAL), or ``None`` while on its way."""
        with self._changed:
            return self._final.get(recipient.lower())

    def hops(self) -> list[Transcript]:
        """The transcript of every connection the message made, in order."""
        return [s.wire.transcript() for s in self.steps if s.wire is not None]

    def wait(self, timeout: float = 30.0) -> Journey:
        """Block until :attr:`done`; TimeoutError (listing what is pending) past ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not all(r.lower() in self._final for r in self.recipients):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pending = [r for r in self.recipients if r.lower() not in self._final]
                    raise TimeoutError(f"still on its way after {timeout} s: {pending}")
                self._changed.wait(remaining)
        return self

    def wait_for(self, kind: str, timeout: float = 30.0) -> Step:
        """Block until a step of ``kind`` happens (e.g. the first ``"retry"``); return it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for step in self._steps:
                    if step.kind == kind:
                        return step
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {kind!r} step after {timeout} s")
                self._changed.wait(remaining)

    def __str__(self) -> str:
        return "\n".join(str(step) for step in self.steps)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython's plain-text hook
        printer.text(f"Journey of {self.message_id}\n{self}")

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(s.kind)}</td><td>{html.escape(s.host)}</td>"
            f"<td>{html.escape(s.text)}</td><td>{html.escape(', '.join(s.recipients))}</td></tr>"
            for s in self.steps
        )
        return (
            f"<b>Journey of {html.escape(self.message_id)}</b><table><tr><th>step</th>"
            f"<th>host</th><th>what happened</th><th>recipients</th></tr>{rows}</table>"
        )


class JourneyBook:
    """Journeys by Message-ID, so every part of the lab can report on any message.

    Servers and queues see only the message, not who sent it; the Message-ID
    header is what ties their steps to the journey ``lab.send`` returned. A
    message from a real client (swaks, a mail program) gets a journey too.

    The book keeps the ``keep`` most recent journeys, and no more than
    ``max_bytes`` of steps (the hops' recordings are bounded by the journal), so
    a bulk run cannot grow the kernel's memory without bound: the oldest journeys
    go first (``dropped`` counts them); the newest always stays.
    """

    def __init__(self, keep: int = DEFAULT_KEEP, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._journeys: OrderedDict[str, Journey] = OrderedDict()
        self._costs: dict[str, int] = {}
        self._keep = keep
        #: May be changed while the lab runs; the next step applies it.
        self.max_bytes = max_bytes
        self._bytes = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str | None, Step], None]] = []

    def listen(self, callback: Callable[[str | None, Step], None]) -> None:
        """Call ``callback(message_id, step)`` for every step the servers and queues report
        (from their threads), also for a message without a Message-ID: ``smtplab up`` prints
        them as queue events."""
        with self._lock:
            self._listeners.append(callback)

    @property
    def retained_bytes(self) -> int:
        """About what the journeys in the book take in memory now."""
        with self._lock:
            return self._bytes

    def _remember(self, message_id: str, journey: Journey) -> Journey:
        self._bytes -= self._costs.pop(message_id, 0)  # a journey of the same id is replaced
        self._journeys[message_id] = journey
        self._journeys.move_to_end(message_id)
        self._costs[message_id] = 0
        journey.grew = lambda cost: self._grew(message_id, journey, cost)
        self._evict()
        return journey

    def _grew(self, message_id: str, journey: Journey, cost: int) -> None:
        with self._lock:
            if self._journeys.get(message_id) is not journey:
                return  # already dropped from the book
            self._costs[message_id] += cost
            self._bytes += cost
            self._evict()

    def _evict(self) -> None:
        """Drop the oldest journeys past ``keep`` or ``max_bytes`` (the lock is held)."""
        while len(self._journeys) > self._keep or (
            self._bytes > self.max_bytes and len(self._journeys) > 1
        ):
            message_id, _ = self._journeys.popitem(last=False)
            self._bytes -= self._costs.pop(message_id)
            self.dropped += 1

    def open(self, message_id: str, recipients: tuple[str, ...]) -> Journey:
        with self._lock:
            return self._remember(message_id, Journey(message_id, recipients))

    def get(self, message_id: str) -> Journey | None:
        with self._lock:
            return self._journeys.get(message_id)

    def add(self, message_id: str | None, step: Step, *more: Step) -> None:
        """Record ``step`` (and ``more`` with it, at once: :meth:`Journey.add`) on the
        message's journey, opening one if it has none yet."""
        with self._lock:
            listeners = list(self._listeners)
            journey = None if message_id is None else self._journeys.get(message_id)
            if journey is None and message_id is not None:
                journey = self._remember(message_id, Journey(message_id, step.recipients))
        if journey is not None:
            journey.add(step, *more)
        for each in (step, *more):
            for listener in listeners:
                listener(message_id, each)
