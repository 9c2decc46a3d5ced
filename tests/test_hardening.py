"""Hardening: hostile and unlucky peers, over real sockets, against each server role.

Each test names the reply it expects and the RFC section behind it. The roles
are the MX (port 25, plain SMTP, STARTTLS offered), submission (587, STARTTLS
then AUTH) and submissions (465, implicit TLS, then AUTH). ``docs/hardening.md``
lists every case with its test id; the last test here checks that the table
names only tests that exist, so it cannot drift.
"""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import shutil
import signal
import smtplib
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peers.smtp import (
    AUTH_PLAIN,
    FAST,
    RECIPIENT,
    ROLES,
    SENDER,
    WRONG_PLAIN,
    Closed,
    Raw,
    begin_data,
    connect,
    files_under,
    greeted,
    ready,
    wait_until,
)

from smtplab import Lab
from smtplab.protocol import replies
from smtplab.protocol.dsn import summarize
from smtplab.protocol.rules import (
    dot_stuff,
    dot_unstuff,
    normalize_newlines,
    parse_reply_line,
    split_enhanced,
    with_enhanced_code,
)
from smtplab.queue.delivery import RetryPolicy
from smtplab.record.transcript import Command, Data, Reply
from smtplab.record.wirelog import parse_conversation
from smtplab.smtp import server as lab_server
from smtplab.world import LOOPBACK

pytestmark = pytest.mark.lab(retry=FAST)
SUBMISSION_ROLES = ["submission", "submissions"]
TESTS = Path(__file__).parent
TABLE = TESTS.parent / "docs" / "hardening.md"


def stored(lab: Lab, address: str = RECIPIENT) -> int:
    """Messages in the mailbox once every queue has settled (so nothing is still on its way)."""
    lab.settle(10)
    return len(lab.mailbox(address))


def nothing_kept(lab: Lab) -> bool:
    """No message anywhere: no queue entry, no spool file (even partial), no mailbox file."""
    lab.settle(10)
    return not files_under(lab.root / "spool") and not files_under(lab.root / "mail")


# -- command lines --------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_a_512_octet_command_line_is_accepted_and_513_gets_500_5_5_2(lab, role):
    """RFC 5321 §4.5.3.1.4: 512 octets with the CRLF; longer: 500 (§4.2.2), 5.5.2 (RFC 3463)."""
    client = greeted(lab, role)
    for octets, expected in ((512, "250 "), (513, "500 5.5.2 "), (512, "250 ")):
        line = b"NOOP " + b"x" * (octets - 7) + b"\r\n"
        assert len(line) == octets
        client.send(line)
        assert client.last().startswith(expected), octets
    # MAIL may be longer by the SIZE, SMTPUTF8 and DSN allowances (RFC 1870, 6531, 3461)
    padded = b"MAIL FROM:<" + b"a" * 560 + b"@example.com>\r\n"
    client.send(padded + b"RSET\r\n")
    assert not client.last().startswith("500") and client.code() == 250
    client.close()


@pytest.mark.parametrize("role", ROLES)
def test_ten_megabytes_without_a_line_end_keep_memory_bounded_then_get_500(lab, role):
    """RFC 5321 §4.5.3.1.4 and §4.2.2: 500 once the line ends; the server never holds it."""
    client = greeted(lab, role)
    chunk = b"x" * 65536
    tracemalloc.start()
    try:
        for _ in range(160):  # 10 MiB
            client.send(chunk)
        client.send(b"\r\nNOOP\r\n")
        assert client.last().startswith("500 5.5.2 Command line too long")
        assert client.code() == 250  # the session goes on
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    client.close()


@pytest.mark.parametrize("role", ROLES)
def test_repeated_unknown_commands_get_500_5_5_1_then_421_and_close(lab, role):
    """RFC 5321 §4.2.4 (500 for an unknown command; RFC 3463 5.5.1), §3.8 (421, then close)."""
    client = greeted(lab, role)
    client.send(b"XYZZY\r\n" * 5)
    for _ in range(4):
        assert client.last() == '500 5.5.1 Error: command "XYZZY" not recognized'
    assert client.last().startswith("421 4.7.0 ")
    assert client.is_closed()


# -- order and syntax -----------------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_commands_out_of_order_get_503_5_5_1(lab, role):
    """RFC 5321 §4.1.4 (MAIL, RCPT, DATA in order; no nested MAIL) and §4.2.3: 503 5.5.1."""
    client = ready(lab, role)
    client.send(f"RCPT TO:<{RECIPIENT}>\r\nDATA\r\nMAIL FROM:<{SENDER}>\r\n".encode())
    assert [client.last()[:9] for _ in range(2)] == ["503 5.5.1"] * 2
    assert client.code() == 250
    client.send(f"DATA\r\nMAIL FROM:<{SENDER}>\r\nRCPT TO:<{RECIPIENT}>\r\n".encode())
    assert [client.last()[:9] for _ in range(2)] == ["503 5.5.1"] * 2
    assert client.code() == 250  # the transaction still holds
    client.close()


BAD_SENDER = f"{replies.BAD_SENDER_SYNTAX.code} {replies.BAD_SENDER_SYNTAX.enhanced}"
BAD_RECIPIENT = f"{replies.BAD_RECIPIENT_SYNTAX.code} {replies.BAD_RECIPIENT_SYNTAX.enhanced}"
MALFORMED = [
    # (command, expected reply start, why)
    ("MAIL FROM:<alice@@example.com>", BAD_SENDER, "RFC 5321 §4.1.2 Mailbox syntax"),
    ("MAIL FROM:<alice@example.com> FOO=BAR", "555 5.5.4", "RFC 5321 §4.1.1.11 unknown param"),
    ("MAIL FROM:<alice@example.com> SIZE=big", "501 5.5.4", "RFC 1870 §3 SIZE=digits"),
    ("MAIL FROM <alice@example.com>", "501 5.5.4", "RFC 5321 §4.1.1.2 FROM: syntax"),
    ("RCPT TO:<bob@@example.org>", BAD_RECIPIENT, "RFC 5321 §4.1.2 Mailbox syntax"),
    ("RCPT TO:<bob>", BAD_RECIPIENT, "RFC 5321 §4.1.1.3: a domain is required"),
    ("MAIL FROM:<.alice@example.com>", BAD_SENDER, "RFC 5321 §4.1.2 Dot-string"),
    ("RCPT TO:<bob@under_score.example>", BAD_RECIPIENT, "RFC 5321 §4.1.2 sub-domain"),
    ("RCPT TO:<bob@example.org", BAD_RECIPIENT, "RFC 5321 §4.1.2 Path: the closing >"),
    ("RCPT TO:<>", BAD_RECIPIENT, "RFC 5321 §4.1.1.3: no null forward-path"),
    ("RCPT TO:<bob@example.org> FOO=BAR", "555 5.5.4", "RFC 5321 §4.1.1.11 unknown param"),
    ("RCPT TO:<bob@example.org> NOTIFY=SOMETIMES", "501 5.5.4", "RFC 3461 §4.1 NOTIFY values"),
]


@pytest.mark.parametrize("role", ROLES)
def test_help_lists_the_commands_and_the_syntax_of_one(lab, role):
    """RFC 5321 §4.1.1.8: HELP answers with text about the server or one command."""
    client = ready(lab, role)
    client.send(b"HELP\r\nHELP MAIL\r\nHELP FROBNICATE\r\n")
    listed = client.last().split()
    assert listed[:4] == ["250", "2.0.0", "Supported", "commands:"]
    assert {"EHLO", "HELP", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT"} <= set(listed)
    assert client.last() == "250 2.0.0 Syntax: MAIL FROM: <address> [SP <mail-parameters>]"
    assert client.last().startswith("501 5.5.4 Supported commands: AUTH DATA")
    client.close()


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("command", "expected", "why"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_address_or_unknown_parameter_gets_501_553_or_555(
    lab, role, command, expected, why
):
    """RFC 5321 §4.2.2 (501, 553, 555) with RFC 3463 codes; the session goes on."""
    client = ready(lab, role)
    if command.startswith("RCPT"):
        client.send(f"MAIL FROM:<{SENDER}>\r\n".encode())
        assert client.code() == 250
    client.send(command.encode() + b"\r\nNOOP\r\n")
    assert client.last().startswith(expected), why
    assert client.code() == 250
    client.close()


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"MAIL FROM:<alice@example.com>\n", ["500 5.5.2"]),  # bare LF: not obeyed
        (b"MAIL FROM:<alice@example.com>\r\r\n", ["500 5.5.2"]),  # a bare CR before CRLF
        (b"\n", ["500 5.5.2"]),
        (b"MAIL FROM:<al\0ice@example.com>\r\n", ["501 5.5.2"]),
        (b"NO\0OP\r\n", ["500 5.5.1"]),
        (b"\0\r\n\0\n", ["500 5.5.1", "500 5.5.1"]),
    ],
    ids=["bare-lf", "cr-crlf", "lone-lf", "nul-in-address", "nul-in-verb", "lone-nul"],
)
def test_nul_or_bare_lf_in_a_command_gets_an_error_and_no_crash(lab, role, line, expected):
    """RFC 5321 §2.3.8 (only CRLF ends a line) and §4.1.2 (commands are text): an error."""
    client = ready(lab, role)
    client.send(line)
    assert [client.last()[:9] for _ in expected] == expected
    client.send(f"MAIL FROM:<{SENDER}>\r\n".encode())
    assert client.code() == 250  # nothing half-done was left behind
    client.close()


# -- pipelining -----------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_commands_sent_before_the_banner_are_answered_after_it_in_order(lab, role):
    """RFC 5321 §3.1 and §4.3.1: the greeting comes first; every reply in order (RFC 2920 §3)."""
    client = connect(lab, role)
    client.send(b"EHLO early.example.net\r\nNOOP\r\nQUIT\r\n")
    assert client.last().startswith("220 ")
    assert client.reply()[0].startswith("250-")  # the EHLO response
    assert client.codes(2) == [250, 221]
    assert client.is_closed()


@pytest.mark.parametrize("role", ROLES)
def test_pipelining_when_not_offered_is_answered_in_strict_order(lab, role):
    """RFC 2920 §3.1: whether offered or not, one reply per command, in order (RFC 5321 §4.1)."""
    lab.server(ROLES[role]).disable("PIPELINING")
    client = ready(lab, role)
    client.send(b"EHLO again.example.net\r\n")
    assert not any("PIPELINING" in line for line in client.reply())
    client.send(
        f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<bob@@example.org>\r\nRCPT TO:<{RECIPIENT}>\r\n"
        "NOOP\r\nDATA\r\n".encode()
    )
    assert client.codes(5) == [250, 553, 250, 250, 354]
    client.send(b"Subject: in order\r\n\r\nhi\r\n.\r\nQUIT\r\n")
    assert client.codes(2) == [250, 221]
    assert stored(lab) == 1


# -- non-ASCII ------------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_a_non_ascii_address_without_smtputf8_gets_5_6_7(lab, role):
    """RFC 6531 §3.5: 550 5.6.7 at MAIL, 553 5.6.7 at RCPT, unless MAIL FROM carried
    SMTPUTF8 (§3.4)."""
    client = ready(lab, role)
    client.send("MAIL FROM:<jösé@example.com>\r\n".encode())
    assert client.last() == str(replies.NON_ASCII_SENDER)
    client.send(f"MAIL FROM:<{SENDER}>\r\n".encode())
    assert client.code() == 250
    client.send("RCPT TO:<bøb@example.org>\r\nRSET\r\n".encode())
    assert client.last() == str(replies.NON_ASCII_RECIPIENT)
    assert client.code() == 250
    client.send(f"MAIL FROM:<{SENDER}> SMTPUTF8\r\nRCPT TO:<bøb@example.org>\r\n".encode())
    assert client.code() == 250
    # with SMTPUTF8 the address is judged on its merits: no such user on the MX
    assert client.last()[:3] == ("550" if role == "mx" else "250")
    client.close()


# -- limits ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("role", SUBMISSION_ROLES)
def test_size_over_the_limit_or_a_body_over_the_maximum_gets_552_5_3_4(lab, role):
    """RFC 1870 §6 (SIZE, then the body) and RFC 5321 §4.5.3.1.7: 552 5.3.4; nothing queued."""
    lab.server(ROLES[role]).reconfigure(data_size_limit=2000)
    client = ready(lab, role)
    client.send(f"MAIL FROM:<{SENDER}> SIZE=5000\r\n".encode())
    assert client.last().startswith("552 5.3.4 ")
    begin_data(client)
    client.send(b"Subject: big\r\n\r\n" + (b"x" * 98 + b"\r\n") * 30 + b".\r\n")
    assert client.last().startswith("552 5.3.4 ")
    client.send(b"QUIT\r\n")
    assert client.code() == 221
    assert nothing_kept(lab)


@pytest.mark.parametrize("role", ROLES)
def test_100_recipients_get_250_and_the_101st_gets_452_4_5_3(lab, role):
    """RFC 5321 §4.5.3.1.8 (at least 100 recipients) and §4.5.3.1.10: 452, RFC 3463 4.5.3."""
    client = ready(lab, role)
    # the MX knows only bob and carol: the same recipient may be named again (§4.5.3.1.8)
    names = [RECIPIENT] * 101 if role == "mx" else [f"user{n}@example.org" for n in range(101)]
    client.send(f"MAIL FROM:<{SENDER}>\r\n".encode())
    assert client.code() == 250
    client.send(b"".join(f"RCPT TO:<{name}>\r\n".encode() for name in names))
    replies = [client.last() for _ in names]
    assert all(r.startswith("250 ") for r in replies[:100])
    assert replies[100].startswith("452 4.5.3 ")
    client.send(b"RSET\r\nQUIT\r\n")  # the transaction was intact: the client may go on
    assert client.codes(2) == [250, 221]


@pytest.mark.parametrize("role", ROLES)
def test_a_data_line_over_the_limit_gets_500_after_the_dot_and_nothing_is_stored(lab, role):
    """RFC 5321 §4.5.3.1.6 (1000 octets per text line) and §4.2.5 (reply after the dot)."""
    client = ready(lab, role)
    begin_data(client)
    client.send(b"Subject: long\r\n\r\n" + b"y" * 5000 + b"\r\nend\r\n.\r\n")
    assert client.last().startswith("500 ")
    client.send(b"QUIT\r\n")
    assert client.code() == 221
    assert nothing_kept(lab)


# -- relay and AUTH -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("role", "command", "expected"),
    [
        ("mx", "RCPT TO:<someone@elsewhere.example>", "550 5.7.1 "),
        ("submissions", "MAIL FROM:<alice@example.com>", str(replies.AUTH_REQUIRED)),
    ],
)
def test_unauthenticated_relay_is_refused_and_nothing_is_queued(lab, role, command, expected):
    """RFC 5321 §3.6.2 (no open relay): MX 550 5.7.1; RFC 4954 §6 / RFC 6409 §4.3: 530 5.7.0."""
    client = greeted(lab, role)
    if role == "mx":
        client.send(f"MAIL FROM:<{SENDER}>\r\n".encode())
        assert client.code() == 250
    client.send(command.encode() + b"\r\nDATA\r\n")
    assert client.last().startswith(expected)
    assert client.last().startswith("503")  # no recipient, no data
    client.close()
    assert all(queue.pending() == [] for queue in lab.queues.values())
    assert nothing_kept(lab)


@pytest.mark.parametrize("role", SUBMISSION_ROLES)
def test_bad_credentials_get_535_then_421_after_repeated_failures(lab, role):
    """RFC 4954 §6: 535 5.7.8; §4 lets a server limit attempts: 421 4.7.0, then close."""
    client = greeted(lab, role)
    if role == "submission":
        client.starttls(lab.ca.client_context(), ROLES[role])
        client.send(b"EHLO client.example.net\r\n")
        assert client.code() == 250
    client.send(WRONG_PLAIN * 3)
    assert [client.last() for _ in range(3)] == ["535 5.7.8 Authentication credentials invalid"] * 3
    assert client.last().startswith("421 4.7.0 ")
    assert client.is_closed()


# -- STARTTLS -------------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ["mx", "submission"])
def test_mail_after_starttls_without_a_new_ehlo_gets_503(lab, role):
    """RFC 3207 §4.2: after TLS the session starts over; MAIL before EHLO gets 503 (§4.1.4)."""
    client = greeted(lab, role)
    client.starttls(lab.ca.client_context(), ROLES[role])
    client.send(f"MAIL FROM:<{SENDER}>\r\n".encode())
    assert client.code() == 503
    client.send(b"EHLO client.example.net\r\n")
    assert client.code() == 250
    client.close()


def test_a_command_injected_after_starttls_on_submission_is_ignored(lab):
    """RFC 3207 §4.2 (CVE-2011-0411 family): an AUTH sent in the clear behind STARTTLS is void."""
    client = greeted(lab, "submission")
    client.starttls(lab.ca.client_context(), ROLES["submission"], inject=AUTH_PLAIN)
    client.send(f"EHLO client.example.net\r\nMAIL FROM:<{SENDER}>\r\n".encode())
    assert client.code() == 250
    assert client.last().startswith("530 5.7.0 ")  # not authenticated: the AUTH was discarded
    client.close()
    (transcript,) = lab.transcripts("smtp.example.com", at_least=1)
    assert "bytes sent before TLS were discarded (RFC 3207 §4.2)" in transcript.to_text()


# -- smuggling and line endings -------------------------------------------------------------------
SMUGGLED_ENDS = [b"\n.\r\n", b"\n.\n", b"\r.\r\n", b"\r\n.\r\r\n"]


@pytest.mark.parametrize("role", SUBMISSION_ROLES)
@pytest.mark.parametrize(
    "smuggled_end", SMUGGLED_ENDS, ids=["lf.crlf", "lf.lf", "cr.crlf", "crlf.crcrlf"]
)
def test_smuggling_through_submission_stores_exactly_one_message(lab, role, smuggled_end):
    """RFC 5321 §2.3.8 and §4.1.1.4 (CVE-2023-51764): only CRLF . CRLF ends the data."""
    client = ready(lab, role)
    begin_data(client)
    client.send(
        b"Message-ID: <smuggle@x>\r\nSubject: innocent\r\n\r\nhello"
        + smuggled_end
        + b"MAIL FROM:<admin@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
        + b"Subject: smuggled\r\n\r\nevil\r\n.\r\nQUIT\r\n"
    )
    assert client.codes(2) == [250, 221]
    assert stored(lab) == 1
    (message,) = lab.mailbox(RECIPIENT)
    assert message.subject == "innocent" and b"Subject: smuggled" in message.raw
    relay = lab.journeys.get("<smuggle@x>").hops()[-1].data.wire
    assert relay.count(b"\n") == relay.count(b"\r\n") == relay.count(b"\r")  # CRLF only


@pytest.mark.parametrize("role", ROLES)
def test_a_nul_in_a_body_is_refused_and_nothing_is_stored(lab, role):
    """RFC 5322 §2.3 and RFC 2045 §2.7-2.8 (no NUL in mail): 554 5.6.0, never passed on."""
    client = ready(lab, role)
    begin_data(client)
    client.send(b"Subject: nul\r\n\r\nbefore\0after\r\n.\r\n")
    assert client.last().startswith("554 5.6.0 ")
    assert nothing_kept(lab)


def test_bare_cr_and_lf_in_a_body_are_normalised_at_the_mx(lab):
    """RFC 5321 §2.3.8: bare CR and LF are not line ends on the wire; the MX stores CRLF (LF)."""
    client = ready(lab, "mx")
    begin_data(client)
    client.send(b"Subject: bare\r\n\r\na\nb\rc\r\n.\r\n")
    assert client.code() == 250
    (message,) = lab.mailbox(RECIPIENT)
    assert message.raw.endswith(b"\n\na\nb\nc\n") and b"\r" not in message.raw


def test_leading_dots_are_unstuffed_restuffed_on_relay_and_round_trip(lab):
    """RFC 5321 §4.5.2: "..x" on the wire is ".x" in the message, and each hop stuffs again."""
    body = b".x\r\n..y\r\n...\r\n.\r\nend .\r\n"
    message = b"From: alice@example.com\r\nMessage-ID: <dots@x>\r\nSubject: dots\r\n\r\n" + body
    result = lab.send(SENDER, RECIPIENT, message=message)
    result.journey.wait(10)
    submitted, relayed = result.journey.hops()
    for hop in (submitted, relayed):
        assert b"\r\n..x\r\n...y\r\n....\r\n..\r\nend .\r\n.\r\n" in hop.data.wire
        assert dot_unstuff(hop.data.wire).endswith(body)
    (stored_message,) = lab.mailbox(RECIPIENT)
    assert stored_message.raw.endswith(body.replace(b"\r\n", b"\n"))
    # and a dot typed by hand at the MX is unstuffed once
    client = ready(lab, "mx")
    begin_data(client)
    client.send(b"Subject: typed\r\n\r\n..x\r\n.\r\n")
    assert client.code() == 250
    assert lab.mailbox(RECIPIENT)[-1].raw.endswith(b"\n\n.x\n")


# -- widget input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["to", "cc", "bcc", "subject"])
def test_a_line_break_typed_into_a_compose_field_is_refused_before_anything_is_sent(lab, field):
    """RFC 5322 §2.2 and §3.6 (header injection): CR or LF in a field never reaches the wire."""
    from smtplab.view.widgets import compose

    view = compose(lab)
    for breaker in ("\r\n", "\n", "\r"):
        values = {"to": "bob@example.org", "subject": "Hi", "via": "mx1.example.org"}
        injected = "Hi" if field == "subject" else "carol@example.org"
        values[field] = f"{injected}{breaker}Bcc: eve@example.net"
        for name, value in values.items():
            getattr(view, name).value = value
        before = len(lab.journal.logs())
        view.send_button.click()
        assert view.model.wait(15) is None
        assert "header injection" in view.model.errors.get(field, ""), (field, breaker)
        assert len(lab.journal.logs()) == before  # no connection was even opened
    assert nothing_kept(lab)


# -- loops ----------------------------------------------------------------------------------------
def received_headers(count: int) -> bytes:
    return b"".join(
        b"Received: from a by b; Mon, 2 Nov 2026 09:00:00 +0000\r\n" for _ in range(count)
    )


@pytest.mark.parametrize("role", SUBMISSION_ROLES)
def test_a_looping_message_gets_554_5_4_0_at_submission(lab, role):
    """RFC 5321 §6.3: 100 Received: headers mean a loop: 554 5.4.0 (RFC 3463 §3.5), none queued."""
    client = ready(lab, role)
    begin_data(client)
    client.send(received_headers(100) + b"Subject: loop\r\n\r\nx\r\n.\r\n")
    assert client.last().startswith("554 5.4.0 ")
    assert nothing_kept(lab)


def test_a_relay_loop_found_at_the_next_hop_bounces_with_5_4_0(lab):
    """RFC 5321 §6.3: the next hop's 554 5.4.0 comes back to the sender as a DSN (RFC 3464)."""
    message = received_headers(99) + b"From: alice@example.com\r\nSubject: loop\r\n\r\nx\r\n"
    result = lab.send(SENDER, RECIPIENT, message=message)
    assert result.ok  # 99 hops: the submission server still takes it and adds the 100th
    lab.settle(10)
    assert result.journey.outcome(RECIPIENT) == "bounced"
    (bounce,) = lab.mailbox(SENDER)
    assert summarize(bounce.raw)[0]["Status"] == "5.4.0"
    assert len(lab.mailbox(RECIPIENT)) == 0


# -- timeouts and disconnects ---------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_an_idle_session_gets_421_4_4_2_and_is_closed(lab, role):
    """RFC 5321 §4.5.3.2.7 (server timeout) and §3.8: 421 4.4.2 (RFC 3463), then close."""
    lab.server(ROLES[role]).reconfigure(timeout=1.0)
    client = ready(lab, role)
    client.send(f"MAIL FROM:<{SENDER}>\r\n".encode())
    assert client.code() == 250
    started = time.monotonic()
    assert client.last().startswith("421 4.4.2 ")
    assert 0.8 < time.monotonic() - started < 5
    assert client.is_closed()
    assert nothing_kept(lab)


@pytest.mark.parametrize("role", ROLES)
def test_a_slow_drip_data_gets_421_4_4_2_and_nothing_is_stored(lab, role):
    """RFC 5321 §4.5.3.2.7, §3.8: DATA gets ``timeout`` s in all (421 4.4.2); nothing stored."""
    lab.server(ROLES[role]).reconfigure(timeout=1.0)
    client = ready(lab, role)
    begin_data(client)
    started = time.monotonic()
    while not client.readable(0.2):  # a line every 0.2 s: each would restart an idle timer
        client.send(b"X-Drip: still here\r\n")
        assert time.monotonic() - started < 10, "the server never cut the drip off"
    assert client.last().startswith("421 4.4.2 ")
    assert time.monotonic() - started < 5
    assert client.is_closed()
    assert nothing_kept(lab)


@pytest.mark.parametrize("role", ROLES)
def test_a_client_that_disconnects_during_data_leaves_no_partial_file(lab, role):
    """RFC 5321 §4.1.1.4: no complete data, no message; §6.1: nothing half-written is kept."""
    client = ready(lab, role)
    begin_data(client)
    client.send(b"Subject: cut\r\n\r\n" + b"half a message\r\n" * 1000)
    client.close()
    lab.transcripts(ROLES[role], at_least=1)  # the server has seen the connection go
    assert nothing_kept(lab)


# -- connections ----------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_one_connection_over_the_cap_gets_421_4_7_0(lab, role):
    """RFC 5321 §3.8 and §4.2.2 (421 instead of the banner), RFC 3463 4.7.0; slots free up."""
    host = ROLES[role]
    lab.server(host).reconfigure(max_connections=2)
    first, second = greeted(lab, role), greeted(lab, role)
    extra = connect(lab, role)
    assert extra.last().startswith(f"421 4.7.0 {host} ")
    assert extra.is_closed()
    first.send(b"QUIT\r\n")
    assert first.code() == 221
    first.close()
    extra.close()
    lab.transcripts(host, at_least=2)  # the server has let both go
    again = greeted(lab, role)
    second.send(b"NOOP\r\n")
    again.send(b"NOOP\r\n")
    assert second.code() == again.code() == 250
    for client in (first, second, again, extra):
        client.close()


# -- stopping -------------------------------------------------------------------------------------
def after_quit(lab: Lab, role: str) -> Raw:
    """A TLS session that said QUIT and got 221, whose client never sends its close_notify."""
    client = ready(lab, role)
    client.send(b"QUIT\r\n")
    assert client.code() == 221
    return client


def half_a_client_hello(client: Raw, lab: Lab, host: str) -> Raw:
    """Send the first half of a real TLS ClientHello, so the server waits in the handshake."""
    outgoing = ssl.MemoryBIO()
    tls = lab.ca.client_context().wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=host)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    client.send(hello[: len(hello) // 2])
    return client


def mid_starttls(lab: Lab) -> Raw:
    client = greeted(lab, "submission")
    client.send(b"STARTTLS\r\n")
    assert client.code() == 220
    return half_a_client_hello(client, lab, ROLES["submission"])


def in_flight(lab: Lab) -> Raw:
    """Pipelined commands, and the greeting, still on their way (LabServer.slow_down)."""
    lab.server(ROLES["mx"]).slow_down(60)
    client = connect(lab, "mx")
    client.send(
        f"EHLO client.example.net\r\nMAIL FROM:<{SENDER}>\r\nRCPT TO:<{RECIPIENT}>\r\n"
        "DATA\r\n".encode()
    )
    return client


def queue_mid_attempt(lab: Lab) -> Raw:
    """The submission queue waiting for the greeting of an MX a minute away, which its
    client would give 10 s per MX host; and a client of ours waiting alongside it."""
    for host in ("mx1.example.org", "mx2.example.org"):
        lab.server(host).slow_down(60)
    assert lab.send(SENDER, RECIPIENT, "Slow", "x").ok  # queued; the queue starts on it
    wait_until(
        lambda: any(log.server == ROLES["mx"] for log in lab.journal.logs()),
        what="the queue connected to the MX",
    )
    return connect(lab, "mx")


def silent_in_data(lab: Lab) -> Raw:
    """A client that vanished in the middle of its message, without closing."""
    client = ready(lab, "submission")
    begin_data(client)
    client.send(b"Subject: gone\r\n\r\nhalf a mess")
    return client


#: Session states a stopping lab must hang up on; the first one hung Lab.stop() forever on
#: Python 3.11.2 and took 30 s on 3.12 (the client's close_notify, never sent, was awaited).
STOP_STATES = {
    "starttls-after-quit": lambda lab: after_quit(lab, "submission"),
    "implicit-tls-after-quit": lambda lab: after_quit(lab, "submissions"),
    "mid-starttls-handshake": mid_starttls,
    "mid-implicit-tls-handshake": lambda lab: half_a_client_hello(
        Raw(lab.server(ROLES["submissions"]).port), lab, ROLES["submissions"]
    ),
    "pipelined-in-flight": in_flight,
    "silent-in-data": silent_in_data,
    "queue-mid-attempt": queue_mid_attempt,
}


def returns_within(seconds: float, call: Any) -> bool:
    """Run ``call`` in a thread: False if it has not returned after ``seconds``; its
    exception (a warning, where warnings are errors) is raised here."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as error:
            outcome.append(error)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if not outcome:
        return False
    if outcome[0] is not None:
        raise outcome[0]
    return True


@pytest.mark.parametrize("how", ["stop", "rerun"])
@pytest.mark.parametrize("state", STOP_STATES)
def test_a_lab_stops_within_its_deadline_whatever_its_sessions_are_doing(state, how):
    """A stop (or a kernel re-running ``Lab(name=...)``, which stops the lab of that name)
    hangs up on every connection and returns before its deadline, without giving up."""
    lab = Lab(name=f"hardening-stop-{state}", retry=FAST)
    ports = [server.port for server in lab.servers.values()]
    client = STOP_STATES[state](lab)
    stop = lab.stop if how == "stop" else lambda: Lab(name=lab.name).stop()
    assert returns_within(lab_server.STOP_DEADLINE + 10, stop), "the stop hung"
    assert repr(lab) == f"<Lab {lab.name!r}: stopped>"
    assert client.dropped(), "the server left the connection open"
    for port in ports:  # every port is free: a new server can listen on it
        socket.create_server((LOOPBACK, port)).close()


def test_a_server_that_cannot_stop_gives_up_after_its_deadline_says_so_and_frees_its_port(
    lab, monkeypatch
):
    """A loop that never ends (here: wedged by a callback that blocks it) costs a stop
    STOP_DEADLINE seconds, a RuntimeWarning, and its thread; the port is free at once."""
    monkeypatch.setattr(lab_server, "STOP_DEADLINE", 0.5)
    server = lab.server(ROLES["mx"])
    stuck, wedged, release = server.controller, threading.Event(), threading.Event()
    assert stuck is not None
    stuck.loop.call_soon_threadsafe(lambda: (wedged.set(), release.wait()))
    assert wedged.wait(10)
    try:
        with pytest.warns(
            RuntimeWarning,
            match=r"^mx1\.example\.org: the server did not stop "
            r"within 0\.5 s; its port \d+ is free, its thread left behind$",
        ):
            server.down()
        server.up()  # on the same port, which nothing listens on any more
        client = greeted(lab, "mx")
        client.send(b"QUIT\r\n")
        assert client.code() == 221
    finally:
        release.set()
    wait_until(stuck.loop.is_closed, what="the abandoned loop ends once it can")


def reset(client: Raw) -> None:
    """Close with a TCP reset, as a client does that closes with data still unread."""
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def test_a_client_that_resets_leaves_no_error_for_asyncio_to_report(lab):
    """The reset reaches the session as ConnectionResetError, which asyncio keeps in a
    future nobody awaits: read at once, it cannot print "Future exception was never
    retrieved" later, whichever the garbage collector finalizes first."""
    host = ROLES["submission"]
    reset(after_quit(lab, "submission"))
    lab.transcripts(host, at_least=1)  # the server has seen the connection go
    session = lab.server(host).controller.smtpd  # the last session it made: that one
    assert not session._closed._log_traceback  # read already: nothing left to report
    assert isinstance(session._closed.exception(), ConnectionResetError)


STOPPING_AT_EXIT = """
import sys
sys.path.insert(0, sys.argv[1])
from peers.smtp import close_all
from test_hardening import STOP_STATES, after_quit, reset
from smtplab import Lab

for state in STOP_STATES:
    lab = Lab(name="at-exit")
    STOP_STATES[state](lab)
    reset(after_quit(lab, "submissions"))
    lab.stop()
    close_all()
"""


def test_stopping_labs_in_every_state_prints_nothing_up_to_the_exit():
    """The same states, in a process of their own, print nothing: no "Exception in
    callback" (a hang-up that failed), no "Future exception was never retrieved" (at
    exit), no ResourceWarning (a socket left open); and the process does not hang."""
    done = subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-c", STOPPING_AT_EXIT, str(TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=TESTS.parent,
    )
    assert (done.returncode, done.stderr) == (0, "")


# -- spool failures -------------------------------------------------------------------------------
def spool_target(lab: Lab, role: str) -> Path:
    """The folder a 250 depends on: Bob's Maildir ``new/`` (MX) or the queue (submission)."""
    if role == "mx":
        return lab.maildirs[RECIPIENT].path / "new"
    return lab.queues[ROLES[role]].spool.folder / "queue"


@pytest.mark.parametrize("role", ROLES)
def test_a_spool_that_cannot_be_written_gets_451_4_3_0_never_250(lab, role):
    """RFC 5321 §6.1 (250 only once stored) and §4.2.3: 451 4.3.0 (RFC 3463), then it heals."""
    target = spool_target(lab, role)
    target.rmdir()
    target.write_bytes(b"not a folder")  # as root, chmod would not stop a write: this does
    client = ready(lab, role)
    begin_data(client)
    client.send(b"Subject: first try\r\n\r\nx\r\n.\r\n")
    assert client.last().startswith("451 4.3.0 ")
    target.unlink()
    target.mkdir()
    client.send(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RECIPIENT}>\r\nDATA\r\n".encode())
    assert client.codes(3) == [250, 250, 354]
    client.send(b"Subject: second try\r\n\r\nx\r\n.\r\nQUIT\r\n")
    assert client.codes(2) == [250, 221]
    assert stored(lab) == 1


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, filled up; skipped where mounting is not allowed (not root, no CAP)."""
    mount = tmp_path / "full"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.parametrize("role", ROLES)
def test_a_full_spool_gets_451_4_3_0_never_250(lab, role, tiny_tmpfs):
    """RFC 5321 §6.1 and §4.2.3: a write that fails (ENOSPC) gives 451 4.3.0, not 250."""
    tmp = spool_target(lab, role).parent / "tmp"  # where every file is written first
    filler = os.open(tiny_tmpfs / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(filler, b"\0" * 4096):
            pass
    except OSError as error:
        assert error.errno == errno.ENOSPC
    finally:
        os.close(filler)
    tmp.rmdir()
    tmp.symlink_to(tiny_tmpfs)
    client = ready(lab, role)
    begin_data(client)
    client.send(b"Subject: no room\r\n\r\n" + (b"x" * 78 + b"\r\n") * 100 + b".\r\n")
    assert client.last().startswith("451 4.3.0 ")
    client.close()
    tmp.unlink()
    tmp.mkdir()
    assert stored(lab) == 0


# -- crashes --------------------------------------------------------------------------------------
def start_lab_process(root: Path, hold: bool) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    command = [sys.executable, str(TESTS / "peers" / "smtp.py"), str(root)]
    process = subprocess.Popen(
        [*command, *(["--hold"] if hold else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    return process, json.loads(process.stdout.readline())


def submit(described: dict[str, Any], ca: str, subjects: list[str]) -> None:
    """Submit one message per subject on one session: each got its 250 before the next."""
    port = next(s["port"] for s in described["servers"] if s["host"] == "smtp.example.com")
    context = ssl.create_default_context(cafile=ca)
    with smtplib.SMTP(LOOPBACK, port, local_hostname="client.example.net", timeout=10) as client:
        client._host = "smtp.example.com"  # verify the certificate by the lab host name
        client.starttls(context=context)
        client.login(SENDER, "alice-lab-pw")
        for subject in subjects:
            head = f"From: {SENDER}\r\nMessage-ID: <{subject}@crash>\r\nSubject: {subject}\r\n"
            body = head + "\r\nx\r\n"
            assert client.sendmail(SENDER, [RECIPIENT], body.encode()) == {}


@pytest.mark.slow
@pytest.mark.parametrize("hold", [True, False], ids=["queue-held", "relay-in-flight"])
def test_a_crash_after_250_loses_nothing_and_duplicates_at_most_once(tmp_path, hold):
    """RFC 5321 §6.1: after 250 the message must survive a crash; a duplicate is allowed.

    ``queue-held``: the MX hosts are down, so every message is still queued when
    the process is killed. ``relay-in-flight``: the queue is relaying while the
    kill lands. Either way, after a restart on the same folder each message is
    in the mailbox once, or at most twice.
    """
    subjects = [f"m{n}" for n in range(8)]
    process, described = start_lab_process(tmp_path, hold)
    try:
        submit(described, described["ca_cert"], subjects)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        process.stdout.close()  # type: ignore[union-attr]
    if hold:
        assert len(files_under(tmp_path / "spool" / "smtp.example.com" / "queue")) == len(subjects)
    with Lab(name="after-crash", root=tmp_path, retry=FAST) as lab:
        lab.settle(15)
        counts = Counter(m.subject for m in lab.mailbox(RECIPIENT))
    assert set(counts) == set(subjects), "lost messages"
    assert max(counts.values()) <= 2, counts
    if hold:
        assert set(counts.values()) == {1}


def test_a_crash_through_the_cli_root_option(tmp_path):
    """RFC 5321 §6.1, through the CLI: ``smtplab up --root DIR --hold``, SIGKILL, restart."""
    done = subprocess.run(
        [sys.executable, "-m", "smtplab.cli", "up", "--help"], capture_output=True, text=True
    )
    if "--root" not in done.stdout or "--hold" not in done.stdout:
        pytest.skip("needs smtplab up --root DIR --hold")
    command = [sys.executable, "-m", "smtplab.cli", "up", "--json", "--root", str(tmp_path)]
    quiet = ["--no-pop-imap"] if "--no-pop-imap" in done.stdout else []  # SMTP is enough here
    process = subprocess.Popen(
        [*command, "--hold", *quiet],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        described = json.loads(process.stdout.readline())  # type: ignore[union-attr]
        submit(described, described["ca_cert"], ["cli"])
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        process.stdout.close()  # type: ignore[union-attr]
    assert len(files_under(tmp_path / "spool" / "smtp.example.com" / "queue")) == 1  # held
    with Lab(name="after-cli-crash", root=tmp_path, retry=FAST) as lab:
        lab.settle(15)
        assert [m.subject for m in lab.mailbox(RECIPIENT)] == ["cli"]


# -- next hop -------------------------------------------------------------------------------------
def test_next_hop_down_stays_queued_retries_with_backoff_then_a_dsn_after_the_maximum_age():
    """RFC 5321 §4.5.4.1 (retry, then give up) and RFC 3464: a failure DSN, status 4.4.1."""
    policy = RetryPolicy(first_delay=0.05, factor=2.0, max_attempts=1000, max_age=1.0)
    with Lab(name="hardening-max-age", retry=policy) as lab:
        for host in ("mx1.example.org", "mx2.example.org"):
            lab.server(host).down()
        result = lab.send(SENDER, RECIPIENT, "held", "x")
        result.journey.wait_for("retry", 10)
        assert files_under(lab.queues["smtp.example.com"].spool.folder / "queue")
        lab.settle(15)
        delays = [
            float(m[1])
            for s in result.journey.steps
            if (m := re.search(r"retry in ([\d.]+) s", s.text))
        ]
        assert len(delays) >= 3 and delays == sorted(delays) and delays[1] == 2 * delays[0]
        assert len(delays) < policy.max_attempts  # it was the age that ended it
        assert result.journey.outcome(RECIPIENT) == "bounced"
        (bounce,) = lab.mailbox(SENDER)
        (report,) = summarize(bounce.raw)
        assert report["Action"] == "failed" and report["Status"].startswith("4.4.")


def test_a_4xx_on_one_rcpt_is_retried_for_that_recipient_only(lab):
    """RFC 5321 §4.2.5 and §4.5.4.1: a per-recipient 450 is retried; the others are done."""
    lab.server("mx2.example.org").down()
    lab.server("mx1.example.org").fail("RCPT", "450 4.2.1 Mailbox busy", times=1)
    result = lab.send(SENDER, [RECIPIENT, "carol@example.org"], "busy", "x")
    result.journey.wait(10)
    retries = [s for s in result.journey.steps if s.kind == "retry"]
    assert [s.recipients for s in retries] == [(RECIPIENT,)]
    assert stored(lab) == 1 and len(lab.mailbox("carol@example.org")) == 1
    assert len(lab.mailbox(SENDER)) == 0  # delivered in the end: no DSN


def test_a_next_hop_slow_to_answer_the_final_dot_is_waited_for(lab):
    """RFC 5321 §4.5.3.2.6 (wait long for the reply to the dot; the lab scales 10 min to 10 s)."""
    handler = lab.server("mx1.example.org").handler
    answer = handler.handle_DATA
    held = threading.Event()

    async def slow_handle_data(server, session, envelope):
        import asyncio

        held.set()
        await asyncio.sleep(1.5)  # the slow next hop itself, not a wait for a race
        return await answer(server, session, envelope)

    handler.handle_DATA = slow_handle_data  # read by each new session
    started = time.monotonic()
    result = lab.send(SENDER, RECIPIENT, "slow", "x")
    result.journey.wait(15)
    assert held.is_set() and time.monotonic() - started >= 1.5
    assert "retry" not in [s.kind for s in result.journey.steps]
    assert stored(lab) == 1


# -- DNS ------------------------------------------------------------------------------------------
def test_nxdomain_bounces_with_5_1_2(lab):
    """RFC 5321 §5.1 (no such domain) and RFC 3463 5.1.2: a failure DSN, no retry."""
    result = lab.send(SENDER, "someone@nowhere.invalid", "lost", "x")
    lab.settle(10)
    assert result.journey.outcome("someone@nowhere.invalid") == "bounced"
    assert "retry" not in [s.kind for s in result.journey.steps]
    (bounce,) = lab.mailbox(SENDER)
    assert summarize(bounce.raw)[0]["Status"] == "5.1.2"


# -- load -----------------------------------------------------------------------------------------
LOAD_CLIENTS = 50
LOAD_MESSAGES = 100
LOAD_DEADLINE = 40.0


def rss_bytes() -> int:
    """This process's resident set size now (Linux), else its peak so far."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def load_client(port: int, client: int, errors: list[BaseException], deadline: float) -> None:
    try:
        with smtplib.SMTP(LOOPBACK, port, local_hostname=f"c{client}.example", timeout=30) as smtp:
            for n in range(LOAD_MESSAGES):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"client {client} at message {n} after the deadline")
                body = f"X-Load-Id: {client}-{n}\r\nSubject: load\r\n\r\nmessage {n}\r\n"
                assert smtp.sendmail(SENDER, [RECIPIENT], body.encode()) == {}
    except BaseException as error:
        errors.append(error)


@pytest.mark.slow
def test_load_50_clients_times_100_messages_each_delivered_exactly_once(lab, record_property):
    """RFC 5321 §6.1 under load: 5,000 250s, 5,000 messages, no duplicate; memory bounded."""
    port = lab.server("mx1.example.org").port
    peak, stop = [rss_bytes()], threading.Event()
    baseline = peak[0]

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    errors: list[BaseException] = []
    started = time.monotonic()
    deadline = started + LOAD_DEADLINE
    clients = [
        threading.Thread(target=load_client, args=(port, n, errors, deadline), daemon=True)
        for n in range(LOAD_CLIENTS)
    ]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(max(0.0, deadline + 5 - time.monotonic()))
    elapsed = time.monotonic() - started
    stop.set()
    sampler.join()
    assert not any(thread.is_alive() for thread in clients), "clients still running"
    assert errors == []
    ids = Counter()
    for path in (lab.maildirs[RECIPIENT].path / "new").iterdir():
        head = path.read_bytes().split(b"\n\n", 1)[0]
        ids[re.search(rb"^X-Load-Id: (\S+)$", head, re.M)[1]] += 1
    assert len(ids) == LOAD_CLIENTS * LOAD_MESSAGES and set(ids.values()) == {1}
    growth = (peak[0] - baseline) / 2**20
    record_property("load_seconds", round(elapsed, 1))
    record_property("load_rss_growth_mib", round(growth, 1))
    print(f"\nload: {len(ids)} messages in {elapsed:.1f} s, peak RSS growth {growth:.1f} MiB")
    assert growth < 64, f"RSS grew by {growth:.0f} MiB"


# -- properties of the protocol and transcript parsing --------------------------------------------
TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\0"), max_size=40
)
LINE = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@given(st.text(max_size=60))
def test_any_text_parses_as_a_reply_line_or_none_and_codes_are_added_once(text):
    """RFC 5321 §4.2 reply syntax, RFC 2034 §3: never crashes; enhancing is idempotent."""
    parsed = parse_reply_line(text)
    enhanced = with_enhanced_code(text)
    assert with_enhanced_code(enhanced) == enhanced
    if parsed is not None:
        again = parse_reply_line(enhanced)
        assert again is not None and (again.code, again.last) == (parsed.code, parsed.last)


@given(st.integers(200, 599), TEXT)
def test_a_rendered_reply_line_parses_back(code, text):
    """RFC 5321 §4.2: ``NNN text`` round-trips through the parser, enhanced code split off."""
    for last in (True, False):
        line = f"{code}{' ' if last else '-'}{text}"
        parsed = parse_reply_line(line)
        assert parsed is not None and (parsed.code, parsed.last, parsed.text) == (code, last, text)
        enhanced = parse_reply_line(with_enhanced_code(line))
        assert enhanced is not None and (enhanced.code, enhanced.last) == (code, last)
        status = split_enhanced(enhanced.text)[0]
        if split_enhanced(text)[0] is None:  # (a text may already open with, say, "2.0.0")
            assert (status is not None) == (code // 100 != 3)  # RFC 3463 §3.1: 2, 4, 5


@given(st.lists(LINE, max_size=12))
def test_dot_stuffing_round_trips_any_bytes_and_never_ends_early(lines):
    """RFC 5321 §4.5.2: stuffed data has no early CRLF.CRLF and unstuffs to the same bytes."""
    body = b"".join(line + b"\r\n" for line in lines)
    wire = dot_stuff(body)
    assert (b"\r\n" + wire).find(b"\r\n.\r\n") == len(wire) - 3
    assert dot_unstuff(wire) == body


@given(st.binary(max_size=80))
def test_normalised_newlines_are_crlf_only_and_idempotent(data):
    """RFC 5321 §2.3.8: after normalising, every CR and LF is part of a CRLF."""
    out = normalize_newlines(data)
    assert out.count(b"\r") == out.count(b"\n") == out.count(b"\r\n")
    assert normalize_newlines(out) == out


COMMANDS = st.sampled_from(["EHLO c.example", "MAIL FROM:<a@b.example>", "RCPT TO:<c@d>", "NOOP"])
REPLIES = st.tuples(
    st.integers(200, 599).filter(lambda c: c != 354), st.lists(TEXT, min_size=1, max_size=3)
)
EXCHANGES = st.lists(
    st.one_of(st.tuples(COMMANDS, REPLIES), st.lists(LINE, max_size=5)), max_size=8
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(EXCHANGES, st.lists(st.integers(1, 50), min_size=1, max_size=10))
def test_a_rendered_conversation_parses_back_however_it_is_cut(exchanges, cuts):
    """The wire parser (RFC 5321 §4.1, §4.2, §4.5.2) gives back what was said, in any chunking."""
    expected: list[Any] = []
    chunks: list[tuple[str, bytes]] = [("server", b"220 s ESMTP\r\n")]
    for exchange in exchanges:
        if isinstance(exchange, tuple):
            command, (code, texts) = exchange
            reply = b"".join(
                f"{code}{'-' if i < len(texts) - 1 else ' '}{t}\r\n".encode()
                for i, t in enumerate(texts)
            )
            chunks += [("client", f"{command}\r\n".encode()), ("server", reply)]
            expected += [command, (code, tuple(texts))]
        else:
            body = b"".join(line + b"\r\n" for line in exchange)
            chunks += [("client", b"DATA\r\n"), ("server", b"354 go\r\n")]
            chunks += [("client", dot_stuff(body)), ("server", b"250 ok\r\n")]
            expected += ["DATA", (354, ("go",)), dot_stuff(body), (250, ("ok",))]
    recut: list[tuple[float, Any, bytes]] = []
    for side, data in chunks:  # cut each side's bytes at arbitrary points
        position = 0
        for cut in cuts:
            if position >= len(data):
                break
            recut.append((0.0, side, data[position : position + cut]))
            position += cut
        if position < len(data):
            recut.append((0.0, side, data[position:]))
    events = parse_conversation("c", "s", recut)
    got: list[Any] = []
    for event in events:
        if isinstance(event, Command):
            got.append(event.line)
        elif isinstance(event, Reply):
            got.append((event.code, event.texts))
        elif isinstance(event, Data):
            got.append(event.wire)
    assert got == [(220, ("s ESMTP",)), *expected]


@pytest.fixture(scope="module")
def fuzz_lab() -> Iterator[Lab]:
    with Lab(name="hardening-fuzz") as running:
        yield running


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_a_server_and_its_transcript_renders(fuzz_lab, garbage):
    """Any bytes from a client: the server answers or hangs up, keeps serving, and records it."""
    client = Raw(fuzz_lab.server("mx1.example.org").port)
    peer = client.sock.getsockname()[:2]
    assert client.code() == 220
    client.send(garbage + b"\r\n.\r\nRSET\r\nQUIT\r\n")
    try:
        while True:
            client.reply()
    except (Closed, TimeoutError, OSError):
        pass
    client.close()
    log = fuzz_lab.journal.wait_for(lambda log: log.view == "server" and log.peer == peer)
    transcript = log.transcript()
    assert transcript.to_text(full_data=True) and transcript._repr_html_()
    probe = Raw(fuzz_lab.server("mx1.example.org").port)
    assert probe.code() == 220
    probe.send(b"QUIT\r\n")
    assert probe.code() == 221
    probe.close()


# -- the table in docs/hardening.md ---------------------------------------------------------------
def test_every_test_named_in_the_hardening_table_exists():
    """docs/hardening.md cannot drift: each row's test id names a test function that exists,
    and every test in the hardening files (tests/test_hardening*.py) is in a row."""
    rows = [
        line for line in TABLE.read_text().splitlines() if line.startswith("|") and "::" in line
    ]
    assert len(rows) >= 30
    defined: dict[str, set[str]] = {}
    named = re.compile(r"`(tests/test_\w+\.py)::(test_\w+)(?:\[[^\]`]*\])?`")
    for row in rows:
        ids = named.findall(row)
        assert ids, f"a row without a test id: {row}"
        for path, name in ids:
            if path not in defined:
                source = (TESTS.parent / path).read_text()
                defined[path] = set(re.findall(r"^def (test_\w+)\(", source, re.M))
            assert name in defined[path], f"{path}::{name} is in the table but not in the tests"
    # Every test of the hardening files (test_hardening.py, test_hardening_*.py) has a row.
    for suite in sorted(TESTS.glob("test_hardening*.py")):
        path = f"tests/{suite.name}"
        ours = set(re.findall(r"^def (test_\w+)\(", suite.read_text(), re.M))
        listed = {name for row in rows for p, name in named.findall(row) if p == path}
        missing = ours - listed - {"test_every_test_named_in_the_hardening_table_exists"}
        assert missing == set(), f"{path}: not in {TABLE.name}: {sorted(missing)}"
