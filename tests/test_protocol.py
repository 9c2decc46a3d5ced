import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import LINE, TEXT

from smtplab.protocol.rules import (
    command_verb,
    domain_of,
    dot_stuff,
    dot_unstuff,
    normalize_newlines,
    parse_path,
    parse_reply_line,
    reply_meaning,
    split_enhanced,
    with_enhanced_code,
)


def test_reply_lines_continue_with_dash_and_end_with_space():
    assert parse_reply_line("250-SIZE 1000").last is False
    last = parse_reply_line("250 HELP")
    assert (last.code, last.last, last.text) == (250, True, "HELP")
    assert parse_reply_line("250").text == ""
    assert parse_reply_line("hello") is None
    assert parse_reply_line("199 too low") is None


def test_enhanced_status_codes_are_split_off():
    assert split_enhanced("2.1.0 Sender ok") == ("2.1.0", "Sender ok")
    assert split_enhanced("5.7.1 <a@b>: Relay access denied")[0] == "5.7.1"
    assert split_enhanced("Ok") == (None, "Ok")
    assert split_enhanced("3.0.0 not a class") == (None, "3.0.0 not a class")


def test_meanings_fall_back_to_the_reply_class():
    assert reply_meaning(354).startswith("Start mail input")
    assert reply_meaning(299).startswith("Positive Completion")


def test_command_verb_is_upper_case():
    assert command_verb("mail FROM:<a@b>") == "MAIL"
    assert command_verb("QUIT") == "QUIT"


def test_dot_stuffing_doubles_leading_dots_and_terminates():
    assert dot_stuff(b".a\r\nb\r\n.\r\n") == b"..a\r\nb\r\n..\r\n.\r\n"
    assert dot_stuff(b"no newline") == b"no newline\r\n.\r\n"


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\r\n"), max_size=20)))
def test_dot_stuffing_round_trips(lines):
    body = "".join(f"{line}\r\n" for line in lines).encode("utf-8", "surrogatepass")
    wire = dot_stuff(body)
    assert b"\r\n.\r\n" not in wire[:-3] and not wire[:-3].startswith(b".\r\n")
    assert dot_unstuff(wire) == body


def test_bare_line_endings_become_crlf():
    assert normalize_newlines(b"a\nb\rc\r\nd") == b"a\r\nb\r\nc\r\nd"


def test_message_id_and_hop_count_are_read_from_the_header_block():
    from smtplab.protocol.rules import count_received, message_id_of

    folded = (
        b"Received: a\r\nReceived: b\r\nMessage-ID:\r\n <1.x@example.com>\r\n\r\nReceived: body"
    )
    assert message_id_of(folded) == "<1.x@example.com>"
    assert count_received(folded) == 2
    assert message_id_of(b"Subject: none\n\nMessage-ID: <body@x>") is None


PATHS = [
    # (MAIL/RCPT argument, (address, local part, parameters)), RFC 5321 §4.1.2
    ("<alice@example.com>", ("alice@example.com", "alice", "")),
    ("<a@example.com> SIZE=3 BODY=8BITMIME", ("a@example.com", "a", "SIZE=3 BODY=8BITMIME")),
    ("alice@example.com SIZE=1", ("alice@example.com", "alice", "SIZE=1")),  # no <>: tolerated
    ("<> SIZE=1", ("<>", "", "SIZE=1")),  # the null reverse-path
    ("<Postmaster>", ("Postmaster", "Postmaster", "")),  # §4.1.1.3: no domain needed
    ('<"john doe"@example.com>', ('"john doe"@example.com', '"john doe"', "")),  # Quoted-string
    ('<"a@b"@example.com>', ('"a@b"@example.com', '"a@b"', "")),
    ("<bob@[127.0.0.1]>", ("bob@[127.0.0.1]", "bob", "")),  # address-literal
    ("<bob@[IPv6:::1]>", ("bob@[IPv6:::1]", "bob", "")),
    ("<@relay.example,@b.example:bob@c.example>", ("bob@c.example", "bob", "")),  # source route
    ("<jösé@bücher.example>", ("jösé@bücher.example", "jösé", "")),  # RFC 6531 §3.3
]
NOT_PATHS = [
    "<alice@@example.com>",
    "<bob>",  # a domain is required
    "<.alice@example.com>",  # Dot-string: no leading, trailing or double dot
    "<a..b@example.com>",
    "<bob@example.>",
    "<bob@-example.com>",  # sub-domain starts with Let-dig
    "<bob@under_score.example>",
    "< bob@example.com >",  # no spaces inside the path
    "<bob@example.com",
    "bob@example.com>",
    "(comment)<bob@example.com>",  # RFC 5322 comments are not SMTP
]


@pytest.mark.parametrize(("text", "expected"), PATHS)
def test_paths_follow_the_rfc_5321_grammar(text, expected):
    assert parse_path(text) == expected


@pytest.mark.parametrize("text", NOT_PATHS)
def test_malformed_paths_are_refused(text):
    assert parse_path(text) is None


# -- properties: any input, never a crash (docs/hardening.md) ----------------------------------
@pytest.mark.hardening
@given(st.text(max_size=60))
def test_any_text_parses_as_a_reply_line_or_none_and_codes_are_added_once(text):
    """RFC 5321 §4.2 reply syntax, RFC 2034 §3: never crashes; enhancing is idempotent."""
    parsed = parse_reply_line(text)
    enhanced = with_enhanced_code(text)
    assert with_enhanced_code(enhanced) == enhanced
    if parsed is not None:
        again = parse_reply_line(enhanced)
        assert again is not None and (again.code, again.last) == (parsed.code, parsed.last)


@pytest.mark.hardening
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


@pytest.mark.hardening
@given(st.lists(LINE, max_size=12))
def test_dot_stuffing_round_trips_any_bytes_and_never_ends_early(lines):
    """RFC 5321 §4.5.2: stuffed data has no early CRLF.CRLF and unstuffs to the same bytes."""
    body = b"".join(line + b"\r\n" for line in lines)
    wire = dot_stuff(body)
    assert (b"\r\n" + wire).find(b"\r\n.\r\n") == len(wire) - 3
    assert dot_unstuff(wire) == body


@pytest.mark.hardening
@given(st.binary(max_size=80))
def test_normalised_newlines_are_crlf_only_and_idempotent(data):
    """RFC 5321 §2.3.8: after normalising, every CR and LF is part of a CRLF."""
    out = normalize_newlines(data)
    assert out.count(b"\r") == out.count(b"\n") == out.count(b"\r\n")
    assert normalize_newlines(out) == out


DOMAINS = [
    ("bob@example.org", "example.org"),
    ("Bob@Example.ORG", "example.org"),  # RFC 5321 §2.4: domains compare in any case
    ("bob@example.org.", "example.org"),  # the root's trailing dot names the same domain
    ("bob@example.org ", "example.org"),  # as a header address may end
    ('"a@b"@example.org', "example.org"),  # a quoted local part may hold an "@"
    ("example.org", "example.org"),  # no "@": the text is the domain
]


@pytest.mark.parametrize(("address", "domain"), DOMAINS)
def test_the_domain_of_an_address_is_compared_in_one_form(address, domain):
    assert domain_of(address) == domain
