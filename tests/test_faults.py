"""Fault rules (smtplab/smtp/faults.py): which rule answers a command, and how often.

Pure bookkeeping, no server: the behaviour on the wire is in test_hardening*.py and
test_mailworld.py (``fail("END-OF-DATA", None)``).
"""

from __future__ import annotations

import pytest

from smtplab.protocol import replies
from smtplab.smtp.faults import AT_END_OF_DATA, Faults

GREYLISTED = "451 4.7.1 Greylisted, try again later"


@pytest.mark.parametrize(
    ("times", "answers"),
    [
        (1, [GREYLISTED, None, None]),
        (2, [GREYLISTED, GREYLISTED, None]),
        (None, [GREYLISTED, GREYLISTED, GREYLISTED]),
        (0, [None, None, None]),
    ],
)
def test_a_rule_answers_as_many_times_as_it_was_given(times, answers):
    faults = Faults()
    faults.add("rcpt", GREYLISTED, times)  # verbs are matched upper-cased
    taken = [faults.take("RCPT") for _ in answers]
    assert [None if rule is None else rule.reply for rule in taken] == answers


def test_the_first_rule_for_a_command_answers_first_and_other_commands_are_untouched():
    faults = Faults()
    faults.add(AT_END_OF_DATA, None)
    faults.add("RCPT", "450 4.2.0 first")
    faults.add("RCPT", "550 5.1.1 second")
    assert faults.take("MAIL") is None
    assert [faults.take("RCPT").reply for _ in range(2)] == ["450 4.2.0 first", "550 5.1.1 second"]
    dropped = faults.take(AT_END_OF_DATA)
    assert dropped is not None and dropped.reply is None  # hang up, no reply
    assert faults.rules == []


def test_a_reply_from_the_table_is_answered_as_its_line():
    faults = Faults()
    faults.add("MAIL", replies.AUTH_REQUIRED)
    rule = faults.take("MAIL")
    assert rule is not None and rule.reply == "530 5.7.0 Authentication required"
    assert str(rule) == "MAIL: answer '530 5.7.0 Authentication required', 0 more time(s)"


def test_clear_removes_every_rule_and_the_latency():
    faults = Faults()
    faults.add("DATA", None, times=None)
    faults.latency = 0.05
    faults.clear()
    assert (faults.rules, faults.take("DATA"), faults.latency) == ([], None, 0.0)
