"""The wire parser turns recorded bytes into events, following the server's rules."""

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import LINE, TEXT

from smtplab.protocol.rules import dot_stuff
from smtplab.record.transcript import Command, Data, Note, Reply
from smtplab.record.wirelog import WireLog, parse_conversation


def conversation(*chunks):
    return parse_conversation("c.example", "s.example", [(0.0, k, b) for k, b in chunks])


def test_pipelined_commands_pair_with_replies_in_order():
    events = conversation(
        ("server", b"220 s ESMTP\r\n"),
        ("client", b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
        ("server", b"250 ok\r\n250 ok\r\n354 go\r\n"),
        ("client", b"Subject: hi\r\n\r\n..dot\r\n.\r\n"),
        ("server", b"250 queued\r\n"),
        ("close", b""),
    )
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "Opened",
        "Reply",
        "Command",
        "Command",
        "Command",
        "Reply",
        "Reply",
        "Reply",
        "Data",
        "Reply",
        "Closed",
    ]
    data = next(e for e in events if isinstance(e, Data))
    assert data.lines == ["Subject: hi", "", "..dot"]


def test_bytes_after_data_are_commands_when_data_is_refused():
    events = conversation(
        ("server", b"220 s\r\n"),
        ("client", b"DATA\r\nQUIT\r\n"),
        ("server", b"503 need RCPT\r\n221 bye\r\n"),
    )
    assert [e.line for e in events if isinstance(e, Command)] == ["DATA", "QUIT"]


def test_a_bare_lf_dot_does_not_end_data():
    """RFC 5321 §2.3.8: only CRLF.CRLF ends the data (the smuggling lesson)."""
    events = conversation(
        ("server", b"220 s\r\n"),
        ("client", b"DATA\r\n"),
        ("server", b"354 go\r\n"),
        ("client", b"a\n.\nMAIL FROM:<evil@x>\r\n.\r\n"),
    )
    assert [type(e).__name__ for e in events][-1] == "Data"
    assert not [e for e in events if isinstance(e, Command) and e.verb == "MAIL"]


def test_auth_responses_are_secret_and_masked():
    events = conversation(
        ("server", b"220 s\r\n"),
        ("client", b"AUTH LOGIN\r\n"),
        ("server", b"334 VXNlcm5hbWU6\r\n"),
        ("client", b"YWxpY2U=\r\n"),
        ("server", b"334 UGFzc3dvcmQ6\r\n"),
        ("client", b"c2VjcmV0\r\n"),
        ("server", b"235 2.7.0 ok\r\n"),
    )
    secrets = [e for e in events if isinstance(e, Command) and e.secret]
    assert [s.line for s in secrets] == ["YWxpY2U=", "c2VjcmV0"]


def test_multiline_replies_are_one_event():
    events = conversation(("server", b"250-a\r\n250-b\r\n250 c\r\n"))
    replies = [e for e in events if isinstance(e, Reply)]
    assert len(replies) == 1 and replies[0].texts == ("a", "b", "c")


def test_unfinished_lines_are_noted_at_close():
    events = conversation(("server", b"220 s\r\n"), ("client", b"HELO x"), ("close", b""))
    assert any(isinstance(e, Note) and "without finishing" in e.text for e in events)


def test_log_is_bounded_and_says_what_it_dropped():
    log = WireLog("c", "s", "server", limit=10)
    log.record("client", b"x" * 25)
    log.close()
    assert sum(len(p) for _, kind, p in log.chunks if kind == "client") == 10
    assert "15 more bytes from the client" in log.transcript().to_text()


chunk = st.tuples(st.sampled_from(["client", "server", "note", "close"]), st.binary(max_size=60))


@given(st.lists(chunk, max_size=30))
def test_random_bytes_never_crash_the_parser_and_render(chunks):
    events = conversation(*chunks)
    from smtplab.record.transcript import Transcript

    transcript = Transcript("c", "s", tuple(events))
    assert transcript.to_text(full_data=True) is not None
    assert transcript._repr_html_().startswith("<div")


def test_commands_injected_before_the_tls_handshake_are_shown_as_discarded():
    """CVE-2024-34083 family: a NOOP pipelined behind STARTTLS must not count."""
    events = conversation(
        ("server", b"220 s\r\n"),
        ("client", b"STARTTLS\r\nNOOP\r\n"),
        ("server", b"220 2.0.0 Ready to start TLS\r\n"),
        ("tls", b"TLSv1.3\0TLS_AES_256_GCM_SHA384"),
        ("client", b"EHLO c\r\n"),
        ("server", b"250 s\r\n"),
    )
    assert [e.line for e in events if isinstance(e, Command)] == ["STARTTLS", "EHLO c"]
    assert any(
        isinstance(e, Note) and "6 bytes sent before TLS were discarded" in e.text for e in events
    )


# -- properties: what is rendered parses back (docs/hardening.md) -----------------------------
COMMANDS = st.sampled_from(["EHLO c.example", "MAIL FROM:<a@b.example>", "RCPT TO:<c@d>", "NOOP"])
REPLIES = st.tuples(
    st.integers(200, 599).filter(lambda c: c != 354), st.lists(TEXT, min_size=1, max_size=3)
)
EXCHANGES = st.lists(
    st.one_of(st.tuples(COMMANDS, REPLIES), st.lists(LINE, max_size=5)), max_size=8
)


@pytest.mark.hardening
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
