"""The replies the lab gives are the RFCs' (issue 13 "Replies", issue 16 items 1, 7, 8, 13, 14).

Over real sockets, on each role the case applies to: the MX (port 25), submission
(587, STARTTLS then AUTH) and submissions (465, implicit TLS). Expected replies are
named from the table, :mod:`smtplab.protocol.replies`, never written out again here.
"""

from __future__ import annotations

import base64
import re

import pytest
from peers.smtp import (
    AUTH_PLAIN,
    PASSWORD,
    RECIPIENT,
    ROLES,
    SENDER,
    Raw,
    connect,
    greeted,
    ready,
)

from smtplab import Lab
from smtplab.protocol import replies
from smtplab.protocol.dsn import RecipientStatus, Report, build_dsn
from smtplab.protocol.replies import SMTPReply
from smtplab.record.transcript import Command, Data, Note
from smtplab.record.wirelog import WireLog

SUBMISSION_ROLES = ["submission", "submissions"]
#: An enhanced status code opening a reply's text (RFC 3463 §2).
ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}( |$)")


def is_reply(line: str, reply: SMTPReply) -> bool:
    return reply.matches(line)


def logged_out(lab: Lab, role: str) -> Raw:
    """EHLO answered, over TLS (STARTTLS on submission), not logged in: AUTH may begin."""
    client = greeted(lab, role)
    if role == "submission":
        client.starttls(lab.ca.client_context(), ROLES[role])
        client.send(b"EHLO client.example.net\r\n")
        assert client.code() == 250
    return client


def helo(lab: Lab, role: str) -> Raw:
    client = connect(lab, role)
    assert client.code() == 220
    client.send(b"HELO client.example.net\r\n")
    assert client.code() == 250
    return client


# -- the reply value (issue 15 item 5) -------------------------------------------------------
def test_replies_are_equal_by_code_enhanced_code_and_text_not_by_the_rfc_they_cite():
    assert SMTPReply(221, "2.0.0", "Bye") == replies.BYE
    assert hash(replies.BYE) == hash(SMTPReply(221, "2.0.0", "Bye", "RFC 5321"))
    assert SMTPReply(221, None, "Bye") != replies.BYE


@pytest.mark.parametrize(
    ("reply", "fields", "line"),
    [
        (SMTPReply(250, None, "Ok"), {}, "250 Ok"),
        (
            replies.RELAY_DENIED,
            {"address": "eve@elsewhere.example"},
            "550 5.7.1 <eve@elsewhere.example>: Relay access denied",
        ),
        (
            replies.TOO_MANY_RECIPIENTS,
            {"limit": 100},
            "452 4.5.3 Too many recipients (at most 100 per message)",
        ),
    ],
)
def test_a_reply_line_is_code_enhanced_code_and_text_with_its_fields(reply, fields, line):
    assert reply(**fields) == line
    assert reply.matches(line)


def test_every_reply_in_the_table_cites_the_rfc_behind_it():
    assert all(reply.rfc.startswith("RFC ") for reply in replies.TABLE), [
        reply for reply in replies.TABLE if not reply.rfc.startswith("RFC ")
    ]


# -- issue 13, items 1 and 2 -----------------------------------------------------------------
def test_relay_refused_is_550_5_7_1(lab):
    """RFC 5321 §3.6.2: "a 550 response SHOULD be returned" (Postfix's default is 554)."""
    client = greeted(lab, "mx")
    client.send(b"MAIL FROM:<x@elsewhere.example>\r\nRCPT TO:<eve@elsewhere.example>\r\n")
    assert client.code() == 250
    line = client.last()
    assert line == replies.RELAY_DENIED(address="eve@elsewhere.example"), line
    assert line.startswith("550 5.7.1 ")


@pytest.mark.parametrize("role", SUBMISSION_ROLES)
def test_a_sender_the_user_does_not_own_is_550_5_7_1_and_the_null_sender_is_accepted(lab, role):
    """RFC 6409 §6.1 (refused at MAIL with 550); a null reverse-path MUST be accepted (§3.2)."""
    client = ready(lab, role)
    client.send(b"MAIL FROM:<bob@example.org>\r\n")
    line = client.last()
    assert line == replies.SENDER_NOT_OWNED(address="bob@example.org", login=SENDER), line
    assert line.startswith("550 5.7.1 ")
    client.send(b"MAIL FROM:<>\r\n")
    assert client.last() == str(replies.SENDER_OK)


# -- items 3 and 4, issue 16 item 1 --------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("local", [b"jos\xc3\xa9", b"anne\xff"], ids=["utf8", "invalid-utf8"])
def test_a_non_ascii_address_without_smtputf8_gets_5_6_7_in_ascii_and_the_session_goes_on(
    lab, role, local
):
    """RFC 6531 §3.5: 550 5.6.7 at MAIL, 553 5.6.7 at RCPT; the reply echoes no byte the
    client did not negotiate (before: 553 echoing the address, and for \\xff a crash:
    ``500 5.5.2 Error: (UnicodeEncodeError) ...``)."""
    client = ready(lab, role)
    client.send(b"MAIL FROM:<" + local + b"@example.com>\r\n")
    raw = client.line()
    assert raw.isascii(), raw
    assert raw.decode().rstrip() == str(replies.NON_ASCII_SENDER)
    client.send(f"MAIL FROM:<{SENDER}>\r\n".encode())
    assert client.last() == str(replies.SENDER_OK)
    client.send(b"RCPT TO:<" + local + b"@example.org>\r\n")
    raw = client.line()
    assert raw.isascii(), raw
    assert raw.decode().rstrip() == str(replies.NON_ASCII_RECIPIENT)
    client.send(b"NOOP\r\n")
    assert client.code() == 250


@pytest.mark.parametrize("role", ROLES)
def test_invalid_utf8_in_a_path_is_refused_with_smtputf8_too(lab, role):
    """RFC 6531 §3.3 widens the path grammar to UTF-8, not to any byte: 553 5.1.7 at MAIL,
    553 5.1.3 at RCPT (RFC 3463 §3.2). Before, RCPT was accepted and poisoned the queue."""
    client = ready(lab, role)
    client.send(b"MAIL FROM:<anne\xff@example.com> SMTPUTF8\r\n")
    assert client.last() == str(replies.NOT_UTF8_SENDER)
    client.send(f"MAIL FROM:<{SENDER}> SMTPUTF8\r\n".encode())
    assert client.last() == str(replies.SENDER_OK)
    client.send(b"RCPT TO:<b\xffob@example.org>\r\n")
    assert client.last() == str(replies.NOT_UTF8_RECIPIENT)
    client.send(f"RCPT TO:<{RECIPIENT}>\r\nDATA\r\n".encode())
    assert client.codes(2) == [250, 354]
    client.send(b"Subject: after a refused path\r\n\r\nbody\r\n.\r\n")
    assert client.code() == 250
    lab.settle(10)
    assert any(m.subject == "after a refused path" for m in lab.mailbox(RECIPIENT))


# -- item 5 -------------------------------------------------------------------------------------
#: Commands that each get a reply, after a greeting, on any role.
PROBES = [
    b"NOOP",
    b"RSET",
    b"VRFY bob",
    b"HELP",
    b"HELP MAIL",
    b"XYZZY",
    b"RCPT TO:<bob@example.org>",
    b"DATA",
    b"MAIL FROM:<a@@b>",
    b"MAIL FROM:<alice@example.com> BOGUS=1",
    b"AUTH FOO",
    b"EXPN list",
]


@pytest.mark.parametrize("role", ROLES)
def test_every_reply_after_ehlo_has_an_enhanced_code_and_none_after_helo(lab, role):
    """RFC 2034 §3: once the client said EHLO, every reply but 334/354 carries one (before,
    ``503 Error: send HELO first`` after STARTTLS had none); after HELO none does (before,
    ``250 2.1.0 Sender ok``)."""
    client = ready(lab, role)
    for probe in PROBES:
        client.send(probe + b"\r\n")
        for line in client.reply():
            assert ENHANCED.match(line), (probe, line)
    client.send(b"HELO client.example.net\r\n")  # back to plain SMTP: its answer has none
    assert client.last() == f"250 {ROLES[role]}"
    client = helo(lab, role)
    for probe in [*PROBES, b"MAIL FROM:<alice@example.com>"]:
        client.send(probe + b"\r\n")
        for line in client.reply():
            assert not ENHANCED.match(line), (probe, line)


@pytest.mark.parametrize("role", ["mx", "submission"])
def test_after_starttls_replies_keep_their_enhanced_codes_until_the_new_ehlo(lab, role):
    client = greeted(lab, role)
    client.starttls(lab.ca.client_context(), ROLES[role])
    client.send(b"MAIL FROM:<alice@example.com>\r\nAUTH PLAIN\r\n")
    for _ in range(2):
        line = client.last()
        assert line.startswith("503 5.5.1 "), line


# -- item 6 -------------------------------------------------------------------------------------
def test_mail_on_587_before_starttls_says_that_starttls_is_missing(lab):
    """RFC 3207 §4: 530 5.7.0 Must issue a STARTTLS command first (AUTH is not offered yet)."""
    client = greeted(lab, "submission")
    client.send(f"MAIL FROM:<{SENDER}>\r\n".encode())
    assert client.last() == str(replies.STARTTLS_FIRST)
    client.starttls(lab.ca.client_context(), ROLES["submission"])
    client.send(b"EHLO client.example.net\r\n")
    assert client.code() == 250
    client.send(f"MAIL FROM:<{SENDER}>\r\n".encode())
    assert client.last() == str(replies.AUTH_REQUIRED)


# -- item 7 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("role", SUBMISSION_ROLES)
def test_auth_login_prompts_are_username_and_password(lab, role):
    """draft-murchison-sasl-login: ``334 VXNlcm5hbWU6`` ("Username:"), ``334 UGFzc3dvcmQ6``."""
    client = logged_out(lab, role)
    client.send(b"AUTH LOGIN\r\n")
    assert client.last() == "334 VXNlcm5hbWU6"
    client.send(base64.b64encode(SENDER.encode()) + b"\r\n")
    assert client.last() == "334 UGFzc3dvcmQ6"
    client.send(base64.b64encode(PASSWORD.encode()) + b"\r\n")
    assert client.code() == 235


# -- item 8 -------------------------------------------------------------------------------------
def _report(*statuses: str) -> Report:
    return Report(
        reporting_mta="smtp.example.com",
        mailer_daemon="MAILER-DAEMON@example.com",
        original_sender=SENDER,
        arrival_date="Mon, 2 Nov 2026 09:00:00 +0000",
        recipients=tuple(
            RecipientStatus(f"r{n}@example.org", "failed", status=s) for n, s in enumerate(statuses)
        ),
        original_message=b"Subject: x\r\n\r\nx\r\n",
        date="Mon, 2 Nov 2026 09:01:00 +0000",
        message_id="<dsn@example.com>",
    )


def _prose(report: Report) -> str:
    text = build_dsn(report).decode()
    return " ".join(text.split())


def test_a_give_up_bounce_says_the_problem_was_temporary():
    """RFC 3463 §3.1: 4.x.x is a persistent transient failure; the prose agrees with Status."""
    assert "The problem was temporary, but it lasted longer" in _prose(_report("4.4.1"))
    assert "permanent" not in _prose(_report("4.4.1"))
    assert "The problem is permanent" in _prose(_report("5.1.1"))
    mixed = _prose(_report("5.1.1", "4.4.1"))
    assert "For some recipients the problem is permanent" in mixed


# -- issue 16 item 7 ---------------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_starttls_inside_tls_is_a_bad_sequence_and_is_not_offered(lab, role):
    """RFC 3207 §4.2: not offered after TLS; asked again, ``503 5.5.1`` (before: a nested
    handshake on 587 and the MX, ``454 TLS not available`` on 465)."""
    client = connect(lab, role)
    assert client.code() == 220
    if role != "submissions":
        client.send(b"EHLO client.example.net\r\n")
        assert "250-STARTTLS" in client.reply()
        client.starttls(lab.ca.client_context(), ROLES[role])
    client.send(b"EHLO client.example.net\r\n")
    assert not any("STARTTLS" in line for line in client.reply())
    client.send(b"STARTTLS\r\n")
    assert client.last() == str(replies.TLS_ACTIVE)
    client.send(b"NOOP\r\n")
    assert client.code() == 250


# -- issue 16 item 8 ---------------------------------------------------------------------------
#: Malformed input of every kind, each a line the server must answer and go on.
MALFORMED = [
    b"MAIL FROM:<anne\xff@example.com>",
    b"MAIL FROM:<anne\xff@example.com> SMTPUTF8",
    b"RCPT TO:<b\xffob@example.org>",
    b"MAIL FROM:<\xed\xa0\x80@example.com> SMTPUTF8",  # an encoded surrogate
    b"VRFY b\xffob",
    b"HELP \xff",
    b"NOOP \xff",
    b"EHLO h\xffst",
    b"HELO h\xc3\xa9st",
    b"RSET",
    b"M\xffIL FROM:<a@b>",
    b"MAIL FROM:" + b"<" + b"a" * 600 + b"@example.com>",
    b"AUTH PLAIN " + b"A" * 9000,
    b"AUTH LOGIN \xff",
    b"DATA",
]


@pytest.mark.parametrize("role", ROLES)
def test_no_reply_ever_carries_exception_text_or_bytes_not_negotiated(lab, role):
    """No ``Error: (`` from aiosmtpd's generic handler, only ASCII, and the session goes on."""
    client = ready(lab, role)
    for line in MALFORMED:
        client.send(line + b"\r\n")
        raw = client.line()
        assert raw.isascii() and b"Error: (" not in raw, (line, raw)
        client.send(b"RSET\r\n")
        assert client.code() == 250, line


@pytest.mark.parametrize("role", SUBMISSION_ROLES)
def test_an_auth_response_over_the_limit_gets_500_5_5_6_and_the_session_goes_on(lab, role):
    """RFC 4954 §4: 12288 octets are enough; longer gets 500 5.5.6 (§6). Before, 8 KiB gave
    ``500 5.5.2 Error: (ValueError) Separator is found, but chunk is longer than limit``."""
    client = logged_out(lab, role)
    client.send(b"AUTH PLAIN\r\n")
    assert client.last() == "334 "
    client.send(b"A" * 12000 + b"\r\n")  # read whole: a PLAIN response without its NULs
    assert client.last() == str(replies.CANNOT_SPLIT)
    for size in (12289, 20000, 100_000):
        client.send(b"AUTH PLAIN\r\n")
        assert client.last() == "334 "
        client.send(b"A" * size + b"\r\n")
        assert client.last() == str(replies.AUTH_LINE_TOO_LONG), size
    client.send(AUTH_PLAIN)
    assert client.code() == 235


# -- issue 16 item 13 --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path", ["<postmaster>", "<POSTMASTER>", "<Postmaster@example.org>", "<postMaster@EXAMPLE.ORG>"]
)
def test_the_mx_accepts_postmaster_in_any_case(lab, path):
    """RFC 5321 §4.5.1: "Postmaster" with or without a domain, case-insensitively."""
    client = greeted(lab, "mx")
    client.send(f"MAIL FROM:<x@elsewhere.example>\r\nRCPT TO:{path}\r\n".encode())
    assert client.codes(2) == [250, 250]


# -- issue 16 item 14 --------------------------------------------------------------------------
@pytest.mark.parametrize("role", SUBMISSION_ROLES)
def test_a_plain_authzid_other_than_the_user_is_refused(lab, role):
    """RFC 4616 §2: the server checks the authcid may act as the authzid; the lab has no
    proxy users (before: ``bob`` with alice's password logged in as alice)."""
    client = logged_out(lab, role)
    forged = base64.b64encode(f"bob@example.org\0{SENDER}\0{PASSWORD}".encode())
    client.send(b"AUTH PLAIN " + forged + b"\r\n")
    assert client.last() == str(replies.AUTHZID_REFUSED)
    same = base64.b64encode(f"{SENDER.upper()}\0{SENDER}\0{PASSWORD}".encode())
    client.send(b"AUTH PLAIN " + same + b"\r\n")
    assert client.code() == 235


def test_unknown_mechanisms_are_not_failed_logins(lab):
    """A 504 is a wrong word, not a wrong password (before: three 504s ended the session)."""
    client = logged_out(lab, "submissions")
    for _ in range(5):
        client.send(b"AUTH FOO\r\n")
        assert client.code() == 504
    client.send(AUTH_PLAIN)
    assert client.code() == 235


# -- issue 13, transcripts: items 12 and 13 ----------------------------------------------------
def test_the_message_data_summary_counts_the_message_without_dots_it_gained_on_the_wire():
    """RFC 1870 §5: not the terminating dot, nor the doubled dots of dot-stuffing."""
    from smtplab.record.transcript import Transcript

    data = Data(0.0, b"..x\r\nbody\r\n.\r\n")
    shown = Transcript("c", "s", (data,)).to_text()
    assert "[message data: 2 lines, 10 bytes]" in shown  # ".x\r\nbody\r\n"


def test_the_data_summary_of_a_real_send_is_the_size_of_the_message_stored(lab):
    message = b"Subject: size\r\n\r\n.leading dot\r\n..two\r\nend\r\n"
    result = lab.send("carol@example.org", RECIPIENT, via="mx1.example.org", message=message)
    line = next(t for t in result.transcript.to_text().splitlines() if "message data" in t)
    lab.settle(10)
    stored = next(m for m in lab.mailbox(RECIPIENT) if m.subject == "size").raw
    trace = re.match(rb"Return-Path: .*\nReceived: (?:.*\n\t)*.*\n", stored)
    assert trace is not None
    content = stored[trace.end() :]  # a Maildir keeps LF line ends; SMTP sent CRLF
    size = len(content) + content.count(b"\n")
    assert f", {size} bytes]" in line, line


def test_a_recording_stopped_at_its_limit_says_so_and_shows_no_later_command():
    """The server's data passed the limit: the client's LOGOUT after it is not shown, and
    the cut line is not called unfinished."""
    log = WireLog("c", "s", "client", limit=40)
    log.record("server", b"220 s ready\r\n")
    log.record("client", b"NOOP\r\n")
    log.record("server", b"250-" + b"x" * 60 + b"\r\n250 ok\r\n")
    log.record("client", b"LOGOUT\r\n")
    log.close()
    events = log.transcript().events
    assert [e.line for e in events if isinstance(e, Command)] == ["NOOP"]
    notes = [e.text for e in events if isinstance(e, Note)]
    assert any("the recording stopped here" in n for n in notes), notes
    assert not any("without finishing" in n for n in notes), notes
