"""The lab's delivery queues as one: waiting until all are empty, and stopping them all
within one grace period."""

from __future__ import annotations

import time
from collections.abc import Iterable

from smtplab.queue.delivery import DeliveryQueue


def settle(queues: Iterable[DeliveryQueue], timeout: float) -> None:
    """Wait until every queue is empty (or, held, holds nothing but held mail).

    Raises TimeoutError naming what is still queued after ``timeout`` seconds.
    """
    queues = list(queues)
    deadline = time.monotonic() + timeout
    # A queue's bounce may land in another queue: go round until all are empty.
    while not all(queue.wait_empty(deadline) for queue in queues):
        if time.monotonic() >= deadline:
            waiting = [e.qid for q in queues for e in q.pending()]
            raise TimeoutError(f"queues still hold {waiting} after {timeout} s")


def finish(queues: Iterable[DeliveryQueue], grace: float) -> None:
    """Give the queues ``grace`` seconds together to end the attempts they are making.

    Past it, the servers stop under them: the attempt's connection drops, its message
    stays queued (a next hop that had stored it before its 250 gets it once more after
    a restart, as RFC 5321 §6.1 allows), and the queue stops at once.
    """
    queues = list(queues)
    for queue in queues:
        queue.stop(timeout=0)
    deadline = time.monotonic() + grace
    for queue in queues:
        queue.stop(timeout=max(0.0, deadline - time.monotonic()))
