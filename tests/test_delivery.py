"""The delivery worker (smtplab.queue.delivery, .attempt) carrying out a settlement on a real lab.

Most of the queue's behaviour is tested where the chapters use it (test_mailworld.py,
test_relaying.py, test_queue.py); what each decision is, in test_settle.py. Here:
the paths no other test takes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from peers.smtp import wait_until

from smtplab import Lab
from smtplab.queue.delivery import RetryPolicy
from smtplab.queue.spool import QueuedRecipient, Spool

FAST = RetryPolicy(first_delay=0.05, factor=2.0, max_attempts=3, max_age=20.0)


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    with Lab(name=f"delivery-{request.node.name}", retry=FAST) as running:
        yield running


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
