"""The sessions' protocol decisions (smtplab/smtp/policy.py), as tables: no sockets.

Each table lists inputs and the decision expected of them, in the style of h11's
test_state.py; the behaviour tests (test_session.py) show the same rules on the wire.
"""

from __future__ import annotations

import pytest

from smtplab.protocol import replies
from smtplab.smtp import policy

LAB = policy.LAB_EXTENSIONS
NONE: frozenset[str] = frozenset()


@pytest.mark.parametrize(
    ("line", "bad"),
    [
        (b"NOOP\r\n", False),
        (b"NOOP\n", True),  # bare LF
        (b"NOOP\r\r\n", True),  # CR CR LF: aiosmtpd strips both CRs
        (b"NOOP", True),  # the stream ended mid-line
        (b"\r\n", False),
        (None, False),  # no line read (yet)
    ],
)
def test_only_one_crlf_ends_a_command_line(line, bad):
    assert policy.bad_line_end(line) is bad


@pytest.mark.parametrize(
    ("line", "arg", "expected"),
    [
        (b"NOOP\r\n", None, None),
        (b"MAIL FROM:<a@b>\r\n", "FROM:<a@b>", None),
        (b"MAIL FROM:<a@b>\n", "FROM:<a@b>", replies.BAD_LINE_END()),
        (b"MAIL FROM:<a\0@b>\r\n", "FROM:<a\0@b>", replies.NUL_IN_COMMAND()),
        (b"MAIL FROM:<a\0@b>\n", "FROM:<a\0@b>", replies.BAD_LINE_END()),  # line end first
    ],
)
def test_malformed_command_lines_are_refused(line, arg, expected):
    assert policy.malformed_command(line, arg) == expected


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [
        ("client.example.com", None),
        ("[127.0.0.1]", None),
        ("", None),  # aiosmtpd's own 501 Syntax
        ("clïent.example", replies.BAD_HELO_NAME()),
        ("client\texample", replies.BAD_HELO_NAME()),
        ("\udcff.example", replies.BAD_HELO_NAME()),  # a byte that is not UTF-8
    ],
)
def test_the_client_names_itself_in_printable_ascii(hostname, expected):
    assert policy.bad_client_name(hostname) == expected


@pytest.mark.parametrize(
    ("command", "address", "smtp_utf8", "recipients", "expected"),
    [
        ("MAIL", "alice@example.com", False, 0, None),
        ("MAIL", "<>", False, 0, None),  # the null reverse-path
        ("RCPT", "<>", False, 0, replies.BAD_RECIPIENT_SYNTAX()),
        ("MAIL", "jürgen@example.de", False, 0, replies.NON_ASCII_SENDER()),
        ("RCPT", "jürgen@example.de", False, 0, replies.NON_ASCII_RECIPIENT()),
        ("MAIL", "jürgen@example.de", True, 0, None),
        ("RCPT", "jürgen@example.de", True, 0, None),
        ("MAIL", "j\udcfcrgen@example.de", True, 0, replies.NOT_UTF8_SENDER()),
        ("RCPT", "j\udcfcrgen@example.de", True, 0, replies.NOT_UTF8_RECIPIENT()),
        ("RCPT", "bob@example.org", False, 99, None),
        ("RCPT", "bob@example.org", False, 100, replies.TOO_MANY_RECIPIENTS(limit=100)),
        ("MAIL", "alice@example.com", False, 100, None),  # the cap is on recipients
    ],
)
def test_paths_the_protocol_refuses_before_any_handler(
    command, address, smtp_utf8, recipients, expected
):
    decision = policy.path_refusal(
        command, address, smtp_utf8=smtp_utf8, recipients=recipients, max_recipients=100
    )
    assert decision == expected


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("FROM:<a@b>", ("FROM:<a@b>", [])),
        ("FROM:<a@b> SIZE=10 RET=HDRS", ("FROM:<a@b>", ["SIZE=10", "RET=HDRS"])),
        ("TO:<a@b>  NOTIFY=NEVER ", ("TO:<a@b>", ["NOTIFY=NEVER"])),
        ("FROM:a@b SIZE=10", ("FROM:a@b", ["SIZE=10"])),  # no brackets
    ],
)
def test_parameters_follow_the_last_closing_bracket(arg, expected):
    assert policy.split_params(arg) == expected


@pytest.mark.parametrize(
    ("extensions", "lines", "allowances"),
    [
        (LAB, ["DSN", "ENHANCEDSTATUSCODES", "PIPELINING"], {"MAIL": 100, "RCPT": 500}),
        (LAB - {"DSN"}, ["ENHANCEDSTATUSCODES", "PIPELINING"], {}),
        (NONE, [], {}),
    ],
)
def test_what_ehlo_offers_and_the_longer_lines_it_allows(extensions, lines, allowances):
    assert policy.advertised(extensions) == lines
    assert dict(policy.line_allowances(extensions)) == allowances


@pytest.mark.parametrize(
    ("said_ehlo", "extensions", "in_ehlo", "enhanced"),
    [
        (True, LAB, False, True),
        (False, LAB, False, False),  # HELO, or no greeting yet
        (True, LAB, True, False),  # the EHLO response itself
        (True, LAB - {"ENHANCEDSTATUSCODES"}, False, False),  # not offered
    ],
)
def test_enhanced_codes_follow_ehlo_only(said_ehlo, extensions, in_ehlo, enhanced):
    decision = policy.enhanced_codes(said_ehlo=said_ehlo, extensions=extensions, in_ehlo=in_ehlo)
    assert decision is enhanced


@pytest.mark.parametrize(
    ("reply", "enhanced", "utf8", "wire"),
    [
        ("250 2.1.0 Sender ok", True, False, b"250 2.1.0 Sender ok"),
        ("250 2.1.0 Sender ok", False, False, b"250 Sender ok"),
        ("503 Error: need MAIL command", True, False, b"503 5.5.1 Error: need MAIL command"),
        ("354 Go ahead", True, False, b"354 Go ahead"),  # 354 never carries one
        ("250 Ok für dich", False, True, "250 Ok für dich".encode()),
        ("250 Ok für dich", False, False, b"250 Ok f\\xfcr dich"),
        ("250 Ok \udcff", False, True, b"250 Ok \\udcff"),  # no character: an escape
    ],
)
def test_replies_as_they_cross_the_wire(reply, enhanced, utf8, wire):
    assert policy.wire_reply(reply, enhanced=enhanced, utf8=utf8) == wire


@pytest.mark.parametrize(
    ("reply", "hangs_up"),
    [
        (None, True),
        ("421 4.7.0 Closing", True),
        ("451 4.7.1 Greylisted", False),
        ("550 5.7.1 No", False),
    ],
)
def test_which_fault_answers_end_the_connection(reply, hangs_up):
    assert policy.hangs_up_after(reply) is hangs_up


@pytest.mark.parametrize(
    ("auth_require_tls", "over_tls", "waits"),
    [(True, False, True), (True, True, False), (False, False, False), (False, True, False)],
)
def test_auth_waits_for_tls_only_where_the_server_says_so(auth_require_tls, over_tls, waits):
    decision = policy.requires_tls_for_auth(auth_require_tls=auth_require_tls, over_tls=over_tls)
    assert decision is waits


@pytest.mark.parametrize(("failures", "hang_up"), [(0, False), (2, False), (3, True), (4, True)])
def test_the_failed_login_limit(failures, hang_up):
    assert policy.too_many_auth_failures(failures) is hang_up


@pytest.mark.parametrize(
    ("authzid", "authcid", "refused"),
    [
        (b"", b"alice@example.com", False),
        (b"alice@example.com", b"alice@example.com", False),
        (b"ALICE@example.com", b"alice@example.com", False),
        (b"bob@example.org", b"alice@example.com", True),
    ],
)
def test_plain_may_not_act_as_another_user(authzid, authcid, refused):
    assert policy.acts_as_another(authzid, authcid) is refused
