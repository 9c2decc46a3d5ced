"""The delivery worker (smtplab.queue.delivery, .attempt) carrying out a settlement on a real lab.

Most of the queue's behaviour is tested where the chapters use it (test_mailworld.py,
test_relaying.py, test_queue.py); what each decision is, in test_settle.py. Here:
the paths no other test takes.
"""

from __future__ import annotations

import time

import pytest
from peers.smtp import FAST, wait_until

from smtplab import Lab
from smtplab.queue.notices import Notices
from smtplab.queue.spool import QueuedRecipient, Spool

pytestmark = pytest.mark.lab(retry=FAST)


def test_a_notice_the_postmaster_cannot_keep_stays_queued_until_it_can(lab: Lab) -> None:
    """RFC 5321 §6.1: a notice from <> that cannot be delivered is never dropped. While the
    postmaster's mailbox cannot store it, it stays in the spool and is tried again."""
    queue = lab.queues["smtp.example.com"]
    tmp = lab.maildirs["postmaster@example.com"].path / "tmp"
    tmp.rmdir()
    tmp.write_bytes(b"")  # a file where the Maildir writes: every delivery fails
    message = b"From: <>\r\nMessage-ID: <refused@x>\r\n\r\nx\r\n"
    queue.accept("", [QueuedRecipient("nobody@example.org")], message)
    journey = lab.journeys.get("<refused@x>")
    assert journey is not None
    wait_until(lambda: [s.kind for s in journey.steps].count("retry") >= 2, what="retried")
    kinds = [s.kind for s in journey.steps]
    assert "postmaster" not in kinds and "bounced" not in kinds and "dsn" not in kinds
    (stored,) = Spool.stored(queue.spool.folder)  # still durable
    assert Spool.read(stored)[0].sender == ""
    tmp.unlink()
    tmp.mkdir()
    queue.flush()
    lab.settle(10)
    assert journey.steps[-1].kind == "postmaster"
    (kept,) = lab.mailbox("postmaster@example.com")
    assert kept.raw.endswith(b"Message-ID: <refused@x>\n\nx\n")
    assert Spool.stored(queue.spool.folder) == []


def test_a_retry_step_says_the_wait_the_policy_chose_however_long_its_notice_took(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry timeline (chapter 07) draws ``retry_at - at`` of each retry step. Before,
    ``at`` was read after the "delayed" notice had been made and spooled, so on a busy
    machine a 0.05 s wait came out as 0.07 s: the step and its due time must share the
    one reading of the clock the decision was made with."""
    notify = Notices.notify

    def slow_notify(self: Notices, *args: object, **kwargs: object) -> object:
        time.sleep(0.05)  # a busy machine's fsync, made certain (not a wait for anything)
        return notify(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Notices, "notify", slow_notify)
    lab.server("mx1.example.org").fail("RCPT", "450 4.2.0 Busy", times=None)
    lab.server("mx2.example.org").fail("RCPT", "450 4.2.0 Busy", times=None)
    sent = lab.send("alice@example.com", "bob@example.org", subject="s", body="b")
    journey = sent.journey
    wait_until(lambda: [s.kind for s in journey.steps].count("retry") >= 2, what="two retries")
    waits = [s.retry_at - s.at for s in journey.steps if s.kind == "retry" and s.retry_at]
    assert waits[:2] == pytest.approx([FAST.delay(1), FAST.delay(2)], abs=1e-6)
