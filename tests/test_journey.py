"""The journey book (smtplab/record/journey.py) keeps its steps under a byte budget.
docs/hardening.md lists the case with its test id.
"""

from __future__ import annotations

import pytest
from peers.smtp import RECIPIENT, SENDER

pytestmark = pytest.mark.hardening


def test_the_journey_book_keeps_its_steps_under_a_byte_budget(lab):
    """The journey book drops its oldest journeys once their steps pass ``max_bytes``
    (as the journal does with recordings); the newest journey always stays."""
    book = lab.journeys
    book.max_bytes = 20_000
    try:
        results = [
            lab.send(SENDER, RECIPIENT, f"budget {n}", "x", via="mx1.example.org")
            for n in range(60)
        ]
        assert book.retained_bytes <= 20_000 and book.dropped > 0
        assert book.get(results[-1].message_id) is results[-1].journey
        assert book.get(results[0].message_id) is None
    finally:
        book.max_bytes = 32 << 20
