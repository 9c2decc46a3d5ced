"""Settlement: after a delivery attempt, what becomes of each recipient. Pure, no I/O.

Theory of operation
-------------------
:func:`settle` takes the queue entry that was tried, the :class:`Handoff` of each
recipient (the reply and the host that gave it), the :class:`RetryPolicy` and the
time, and returns a :class:`Decision`. The delivery worker carries it out (spool,
schedule, DSNs, journey steps); nothing here touches a socket, a file or a lock.

Per recipient:

* 2yz: delivered; the next hop is responsible now (RFC 5321 §6.1). A "relayed"
  notice is due to a sender who asked for SUCCESS, unless the DSN parameters went on
  with the message, for then the MX that stores it reports (RFC 3461 §5.2.2, §5.2.3);
* 5yz, or a failure whose status is of class 5: bounced (RFC 3464);
* 4yz, or no answer: retried after ``first_delay * factor**(attempts-1)`` seconds,
  unless the entry has expired (``max_attempts`` tries, or older than ``max_age``
  seconds, §4.5.4.1): then it is bounced too, with the last reply it got. Held mail
  never expires (``DeliveryQueue.hold``).

A bounce goes to the sender as a "failed" notice for the recipients that asked for
one; from the null reverse-path it goes to no one (§6.1: never a notice about a
notice) but into the postmaster's mailbox (§4.5.5). When that mailbox refuses it,
:func:`settle` is asked again with ``postmaster_refused``: the bounce stays queued.
The first time recipients are retried, those that asked for DELAY get a "delayed"
notice, once per entry.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from smtplab.protocol.dsn import must_not_notify
from smtplab.protocol.dsn_params import Action, wants
from smtplab.protocol.rules import split_enhanced
from smtplab.queue.spool import QueuedRecipient, QueueEntry
from smtplab.smtp.client import Outcome

#: The reply of a recipient no host answered for (RFC 3463 §3.5: no answer from host).
NOBODY_ANSWERED = "4.4.1 no MX host answered"
Fate = Literal["delivered", "bounced", "retry"]


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


@dataclass(frozen=True)
class Disposition:
    """One recipient, the handoff that decided its fate, and the notice (DSN action) its
    sender gets for it now, if any."""

    recipient: QueuedRecipient
    handoff: Handoff
    notice: Action | None = None

    @property
    def status(self) -> str:
        """The RFC 3463 status a notice reports: the reply's own, else one for its class."""
        return split_enhanced(self.handoff.outcome.text)[0] or _default_status(
            self.notice, self.handoff.outcome
        )


@dataclass(frozen=True)
class Decision:
    """What to do after an attempt. ``bounced`` lists permanent failures first, then the
    temporary ones given up at expiry; ``to_postmaster`` says that they go to the
    postmaster's mailbox, not back to the sender. ``requeued`` is the entry to keep
    (only the ``retry`` recipients, due at ``next_attempt``), None when it is done."""

    delivered: tuple[Disposition, ...]
    bounced: tuple[Disposition, ...]
    retry: tuple[Disposition, ...]
    to_postmaster: bool
    delay: float
    requeued: QueueEntry | None

    def delivered_by(self) -> dict[str, tuple[Disposition, ...]]:
        """The delivered recipients per host that took them, hosts in name order."""
        hosts = sorted({d.handoff.host for d in self.delivered if d.handoff.host is not None})
        return {h: tuple(d for d in self.delivered if d.handoff.host == h) for h in hosts}


def settle(
    entry: QueueEntry,
    handoffs: dict[str, Handoff],
    policy: RetryPolicy,
    now: float,
    *,
    held: bool = False,
    postmaster_refused: bool = False,
) -> Decision:
    """Decide each recipient of ``entry`` (see the module docstring). ``held``: the queue
    is held, so nothing expires and a retry waits for the release."""
    by_fate: dict[Fate, list[tuple[QueuedRecipient, Handoff]]] = {
        "delivered": [],
        "bounced": [],
        "retry": [],
    }
    for rcpt in entry.recipients:
        handoff = handoffs.get(rcpt.address) or Handoff(
            Outcome(rcpt.address, None, NOBODY_ANSWERED, "connection")
        )
        by_fate[_fate(handoff.outcome)].append((rcpt, handoff))
    delivered, bounced, retry = by_fate["delivered"], by_fate["bounced"], by_fate["retry"]
    expired = not held and (
        entry.attempts >= policy.max_attempts or entry.age(now) > policy.max_age
    )
    if retry and expired:
        bounced, retry = bounced + retry, []
    silent = must_not_notify(entry.sender)
    if bounced and silent and postmaster_refused:
        bounced, retry = [], retry + bounced
    delay = policy.delay(entry.attempts)
    warn_delayed = not entry.delay_notified and any(
        wants(frozenset(r.notify), "delayed") for r, _ in retry
    )
    requeued = None
    if retry:
        requeued = replace(
            entry,
            recipients=[r for r, _ in retry],
            next_attempt=now + delay,
            held_since=now if held else None,
            delay_notified=entry.delay_notified or warn_delayed,
        )

    def disposed(
        results: list[tuple[QueuedRecipient, Handoff]], action: Action | None
    ) -> tuple[Disposition, ...]:
        return tuple(Disposition(r, h, _notice(action, r, h, silent)) for r, h in results)

    return Decision(
        delivered=disposed(delivered, "relayed"),
        bounced=disposed(bounced, "failed"),
        retry=disposed(retry, "delayed" if warn_delayed else None),
        to_postmaster=bool(bounced) and silent,
        delay=delay,
        requeued=requeued,
    )


def _fate(outcome: Outcome) -> Fate:
    if outcome.accepted:
        return "delivered"
    return "bounced" if outcome.permanent else "retry"


def _notice(
    action: Action | None, rcpt: QueuedRecipient, handoff: Handoff, silent: bool
) -> Action | None:
    """``action`` if this recipient's sender gets a notice of it now."""
    if action is None or silent or not wants(frozenset(rcpt.notify), action):
        return None
    if action == "relayed" and handoff.dsn_passed:  # the next hop reports (RFC 3461 §5.2.3)
        return None
    return action


def _default_status(action: Action | None, outcome: Outcome) -> str:
    """An RFC 3463 status when the reply had none: success, or a routing/timeout failure."""
    if action in ("delivered", "relayed"):
        return "2.0.0"
    if outcome.code is None:
        return "4.4.1"  # no answer from host (RFC 3463 §3.5)
    return f"{outcome.code // 100}.0.0"
