"""The lab's SMTP sessions (smtplab/smtp/session.py) against hostile and unlucky clients.

Over real sockets, on each role the case applies to: the MX (port 25, plain SMTP,
STARTTLS offered), submission (587, STARTTLS then AUTH) and submissions (465,
implicit TLS, then AUTH). Each test names the reply it expects and the RFC section
behind it; docs/hardening.md lists every case with its test id.
"""

from __future__ import annotations

import re
import smtplib
import threading
import time
import tracemalloc
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peers.memory import rss_bytes
from peers.smtp import (
    AUTH_PLAIN,
    FAST,
    RECIPIENT,
    ROLES,
    SENDER,
    SUBMISSION_ROLES,
    WRONG_PLAIN,
    Closed,
    Raw,
    begin_data,
    connect,
    greeted,
    nothing_kept,
    ready,
    stored,
)

from smtplab.protocol import replies
from smtplab.world import LOOPBACK

pytestmark = [pytest.mark.lab(retry=FAST), pytest.mark.hardening]


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


# -- load -----------------------------------------------------------------------------------------
LOAD_CLIENTS = 50
LOAD_MESSAGES = 100
LOAD_DEADLINE = 40.0


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


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_a_server_and_its_transcript_renders(lab, garbage):
    """Any bytes from a client: the server answers or hangs up, keeps serving, and records it."""
    client = Raw(lab.server("mx1.example.org").port)
    peer = client.sock.getsockname()[:2]
    assert client.code() == 220
    client.send(garbage + b"\r\n.\r\nRSET\r\nQUIT\r\n")
    try:
        while True:
            client.reply()
    except (Closed, TimeoutError, OSError):
        pass
    client.close()
    log = lab.journal.wait_for(lambda log: log.view == "server" and log.peer == peer)
    transcript = log.transcript()
    assert transcript.to_text(full_data=True) and transcript._repr_html_()
    probe = Raw(lab.server("mx1.example.org").port)
    assert probe.code() == 220
    probe.send(b"QUIT\r\n")
    assert probe.code() == 221
    probe.close()
