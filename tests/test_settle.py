"""Queue settlement (smtplab.queue.settle) as a table: entry + replies + policy + now → decision.

No server runs: settle is a pure function, so every row states one decision of the queue
that the chapters and the RFCs describe (RFC 5321 §4.5.4.1, §6.1; RFC 3461 §5.2).
"""

from __future__ import annotations

import pytest

from smtplab.queue.settle import (
    NOBODY_ANSWERED,
    Decision,
    Handoff,
    RetryPolicy,
    settle,
)
from smtplab.queue.spool import QueuedRecipient, QueueEntry
from smtplab.smtp.client import Outcome

NOW = 1_000_000.0
POLICY = RetryPolicy(first_delay=1.0, factor=2.0, max_attempts=5, max_age=60.0)
BOB = "bob@b.example"
MX = "mx.b.example"


def make_entry(
    *recipients: QueuedRecipient,
    sender: str = "alice@a.example",
    attempts: int = 1,
    age: float = 10.0,
    delay_notified: bool = False,
) -> QueueEntry:
    return QueueEntry(
        "00002A-1",
        sender,
        "b.example",
        list(recipients),
        "Mon, 7 Dec 2026 23:00:00 +0000",
        NOW - age,
        attempts=attempts,
        delay_notified=delay_notified,
    )


def reply(address: str, code: int | None, text: str, *, dsn_passed: bool = False) -> Handoff:
    stage = "RCPT" if code is not None else "connection"
    return Handoff(Outcome(address, code, text, stage), MX if code else None, dsn_passed)


def fate_of(decision: Decision, address: str) -> str:
    for fate in ("delivered", "bounced", "retry"):
        if address in [d.recipient.address for d in getattr(decision, fate)]:
            return fate
    raise AssertionError(f"{address} not settled")


# One recipient: (reply code, reply text, NOTIFY, sender, attempts, age, held, dsn_passed)
# → (fate, notice, DSN status, next attempt or None, to the postmaster)
ONE_RECIPIENT = [
    # 2yz: delivered. NOTIFY=SUCCESS gets "relayed" only if the next hop could not report.
    ("2yz", (250, "2.0.0 OK", [], "alice@a.example", 1, 10, False, False),
     ("delivered", None, "2.0.0", None, False)),
    ("2yz NOTIFY=SUCCESS, no DSN at next hop", (250, "OK", ["SUCCESS"], "alice@a.example", 1, 10,
     False, False), ("delivered", "relayed", "2.0.0", None, False)),
    ("2yz NOTIFY=SUCCESS, DSN passed on", (250, "OK", ["SUCCESS"], "alice@a.example", 1, 10,
     False, True), ("delivered", None, "2.0.0", None, False)),
    # 4yz before expiry: retry at first_delay * factor**(attempts-1).
    ("4yz first attempt", (451, "4.3.0 try later", [], "alice@a.example", 1, 10, False, False),
     ("retry", None, "4.3.0", NOW + 1, False)),
    ("4yz third attempt", (451, "4.3.0 try later", [], "alice@a.example", 3, 10, False, False),
     ("retry", None, "4.3.0", NOW + 4, False)),
    ("4yz at max_age, not past it", (451, "4.3.0 later", [], "alice@a.example", 2, 60, False,
     False), ("retry", None, "4.3.0", NOW + 2, False)),
    # 4yz at/after expiry: bounced with the last reply's own status (not 4.4.7: today's code).
    ("4yz at max_attempts", (451, "4.3.0 try later", [], "alice@a.example", 5, 10, False, False),
     ("bounced", "failed", "4.3.0", None, False)),
    ("4yz past max_age", (451, "4.2.2 mailbox full", [], "alice@a.example", 2, 61, False, False),
     ("bounced", "failed", "4.2.2", None, False)),
    ("4yz without enhanced code, expired", (421, "try later", [], "alice@a.example", 5, 10, False,
     False), ("bounced", "failed", "4.0.0", None, False)),
    ("no answer, expired", (None, "connection failed: Connection refused", [], "alice@a.example",
     5, 10, False, False), ("bounced", "failed", "4.4.1", None, False)),
    # Held mail never expires; its retry waits for the release.
    ("4yz at max_attempts while held", (451, "4.3.0 later", [], "alice@a.example", 5, 99, True,
     False), ("retry", None, "4.3.0", NOW + 16, False)),
    # 5yz, or a class-5 status without a reply: bounced now.
    ("5yz", (550, "5.1.1 no such user", [], "alice@a.example", 1, 10, False, False),
     ("bounced", "failed", "5.1.1", None, False)),
    ("5yz without enhanced code", (554, "no", [], "alice@a.example", 1, 10, False, False),
     ("bounced", "failed", "5.0.0", None, False)),
    ("class-5 status, no reply", (None, "5.1.2 Domain b.example does not exist", [],
     "alice@a.example", 1, 10, False, False), ("bounced", "failed", "5.1.2", None, False)),
    ("5yz NOTIFY=NEVER", (550, "5.1.1 no such user", ["NEVER"], "alice@a.example", 1, 10, False,
     False), ("bounced", None, "5.1.1", None, False)),
    ("5yz NOTIFY=SUCCESS only", (550, "5.1.1 no", ["SUCCESS"], "alice@a.example", 1, 10, False,
     False), ("bounced", None, "5.1.1", None, False)),
    # The null reverse-path: never a DSN to <>; the postmaster's mailbox keeps it.
    ("5yz from <>", (550, "5.1.1 no such user", [], "", 1, 10, False, False),
     ("bounced", None, "5.1.1", None, True)),
    ("4yz from <>, expired", (451, "4.3.0 later", [], "", 5, 10, False, False),
     ("bounced", None, "4.3.0", None, True)),
    ("2yz NOTIFY=SUCCESS from <>", (250, "OK", ["SUCCESS"], "", 1, 10, False, False),
     ("delivered", None, "2.0.0", None, False)),
    # NOTIFY=DELAY: a "delayed" notice with the first retry.
    ("4yz NOTIFY=DELAY", (451, "4.3.0 later", ["DELAY"], "alice@a.example", 1, 10, False, False),
     ("retry", "delayed", "4.3.0", NOW + 1, False)),
    ("4yz NOTIFY=DELAY from <>", (451, "4.3.0 later", ["DELAY"], "", 1, 10, False, False),
     ("retry", None, "4.3.0", NOW + 1, False)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("given", "expected"), [row[1:] for row in ONE_RECIPIENT], ids=[row[0] for row in ONE_RECIPIENT]
)
def test_one_recipient(given: tuple[object, ...], expected: tuple[object, ...]) -> None:
    code, text, notify, sender, attempts, age, held, dsn_passed = given
    fate, notice, status, next_attempt, to_postmaster = expected
    entry = make_entry(QueuedRecipient(BOB, notify), sender=sender, attempts=attempts, age=age)
    handoffs = {BOB: reply(BOB, code, text, dsn_passed=dsn_passed)}
    decision = settle(entry, handoffs, POLICY, NOW, held=held)
    assert fate_of(decision, BOB) == fate
    (disposition,) = getattr(decision, fate)
    assert disposition.notice == notice
    assert disposition.status == status
    assert decision.to_postmaster is to_postmaster
    if next_attempt is None:
        assert decision.requeued is None
    else:
        assert decision.requeued is not None
        assert decision.requeued.next_attempt == next_attempt
        assert decision.requeued.held_since == (NOW if held else None)


def test_a_recipient_no_host_answered_for_is_retried() -> None:
    decision = settle(make_entry(QueuedRecipient(BOB)), {}, POLICY, NOW)
    (disposition,) = decision.retry
    assert disposition.handoff.outcome.text == NOBODY_ANSWERED
    assert disposition.handoff.host is None
    assert disposition.status == "4.4.1"


def test_the_delay_notice_is_sent_once_per_entry() -> None:
    rcpt = QueuedRecipient(BOB, ["DELAY"])
    handoffs = {BOB: reply(BOB, 451, "4.3.0 later")}
    first = settle(make_entry(rcpt), handoffs, POLICY, NOW)
    assert first.requeued is not None and first.requeued.delay_notified
    again = settle(first.requeued, handoffs, POLICY, NOW)
    assert [d.notice for d in again.retry] == [None]
    assert again.requeued is not None and again.requeued.delay_notified


def test_mixed_outcomes_are_settled_per_recipient() -> None:
    carol, dave = "carol@b.example", "dave@b.example"
    entry = make_entry(QueuedRecipient(BOB), QueuedRecipient(carol), QueuedRecipient(dave))
    handoffs = {
        BOB: reply(BOB, 250, "2.1.5 OK"),
        carol: reply(carol, 550, "5.1.1 no such user"),
        dave: reply(dave, 452, "4.2.2 mailbox full"),
    }
    decision = settle(entry, handoffs, POLICY, NOW)
    assert [fate_of(decision, a) for a in (BOB, carol, dave)] == ["delivered", "bounced", "retry"]
    assert decision.requeued is not None
    assert [r.address for r in decision.requeued.recipients] == [dave]
    assert (decision.requeued.qid, decision.requeued.attempts) == (entry.qid, entry.attempts)


def test_expired_recipients_bounce_after_the_permanent_failures() -> None:
    """The bounce lists permanent failures first, then what expired (the DSN's order)."""
    carol = "carol@b.example"
    entry = make_entry(QueuedRecipient(BOB), QueuedRecipient(carol), attempts=5)
    handoffs = {BOB: reply(BOB, 451, "4.3.0 later"), carol: reply(carol, 550, "5.1.1 no")}
    decision = settle(entry, handoffs, POLICY, NOW)
    assert [d.recipient.address for d in decision.bounced] == [carol, BOB]
    assert decision.retry == () and decision.requeued is None


def test_a_notice_the_postmaster_cannot_keep_stays_queued() -> None:
    carol = "carol@b.example"
    entry = make_entry(QueuedRecipient(BOB), QueuedRecipient(carol), sender="")
    handoffs = {BOB: reply(BOB, 451, "4.3.0 later"), carol: reply(carol, 550, "5.1.1 no")}
    decision = settle(entry, handoffs, POLICY, NOW, postmaster_refused=True)
    assert decision.bounced == () and not decision.to_postmaster
    assert [d.recipient.address for d in decision.retry] == [BOB, carol]
    assert decision.requeued is not None and decision.requeued.next_attempt == NOW + 1


def test_delivered_recipients_are_grouped_by_the_host_that_took_them() -> None:
    carol = "carol@b.example"
    entry = make_entry(QueuedRecipient(BOB), QueuedRecipient(carol))
    handoffs = {
        BOB: Handoff(Outcome(BOB, 250, "OK", "RCPT"), "mx2.b.example"),
        carol: Handoff(Outcome(carol, 250, "OK", "RCPT"), "mx1.b.example"),
    }
    grouped = settle(entry, handoffs, POLICY, NOW).delivered_by()
    assert list(grouped) == ["mx1.b.example", "mx2.b.example"]
    assert [d.recipient.address for d in grouped["mx2.b.example"]] == [BOB]


@pytest.mark.parametrize(
    ("attempts", "delay"),
    [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0)],
)
def test_backoff(attempts: int, delay: float) -> None:
    assert POLICY.delay(attempts) == delay
