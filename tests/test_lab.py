"""The lab over real sockets: sending, both ends' views, mailboxes, policy, lifecycle."""

from __future__ import annotations

import smtplib
import socket

import pytest

from smtplab import InvalidInput, Lab
from smtplab.world import LOOPBACK


@pytest.mark.parametrize(
    ("via", "codes"),
    [
        ("mx1.example.org", [220, 250, 250, 250, 354, 250, 221]),
        ("smtp.example.com", [220, 250, 220, 250, 235, 250, 250, 354, 250, 221]),
    ],
)
def test_send_delivers_and_both_ends_record_the_same_conversation(lab, via, codes):
    result = lab.send("alice@example.com", "bob@example.org", "Hi", "Hello Bob", via=via)
    assert result.ok and result.server == via
    client_lines = [(line.side, line.text) for line in result.transcript.lines(full_data=True)]
    server_view = result.server_view()
    assert server_view.view == "server"
    assert [(line.side, line.text) for line in server_view.lines(full_data=True)] == client_lines
    assert [r.code for r in result.transcript.replies] == codes


def test_the_mailbox_holds_the_message_with_trace_headers(lab):
    lab.send("alice@example.com", "bob@example.org", "Hi", "Hello Bob", via="mx1.example.org")
    (stored,) = lab.mailbox("bob@example.org")
    assert stored.subject == "Hi" and stored.body == "Hello Bob\n"
    assert stored.raw.startswith(
        b"Return-Path: <alice@example.com>\nReceived: from client.example.com"
    )
    assert b"\r\n" not in stored.raw
    assert len(lab.mailbox("carol@example.org")) == 0


def test_unknown_user_gets_550_and_the_others_still_get_mail(lab):
    result = lab.send(
        "alice@example.com",
        ["nobody@example.org", "carol@example.org"],
        "x",
        "y",
        via="mx1.example.org",
    )
    refused, accepted = result.outcomes
    assert (refused.code, refused.enhanced, refused.stage) == (550, "5.1.1", "RCPT")
    assert accepted.accepted and len(lab.mailbox("carol@example.org")) == 1


def test_the_lab_is_never_an_open_relay(lab):
    result = lab.send("alice@example.com", "victim@elsewhere.net", via="mx1.example.org")
    (outcome,) = result.outcomes
    assert (outcome.code, outcome.enhanced) == (550, "5.7.1")  # RFC 5321 §3.6.2
    assert all(len(lab.mailbox(u.address)) == 0 for u in lab.world.users)


def test_bcc_is_in_the_envelope_but_not_the_headers(lab):
    result = lab.send("alice@example.com", "bob@example.org", "s", "b", bcc="carol@example.org")
    assert result.recipients == ("bob@example.org", "carol@example.org")
    result.journey.wait()
    (copy,) = lab.mailbox("carol@example.org")
    assert "Bcc" not in copy.message and copy.message["To"] == "bob@example.org"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"recipients": "bob@@example.org"}, "to"),
        ({"recipients": "bob@example.org\r\nRCPT TO:<x@y>"}, "to"),
        ({"recipients": []}, "to"),
        ({"recipients": "bob@example.org", "subject": "x\r\nBcc: evil@x"}, "subject"),
    ],
)
def test_bad_input_is_refused_before_anything_is_sent(lab, kwargs, field):
    before = len(lab.journal.logs())
    with pytest.raises(InvalidInput) as caught:
        lab.send("alice@example.com", **kwargs)
    assert caught.value.field == field
    assert len(lab.journal.logs()) == before


def test_a_malformed_command_gets_an_error_and_the_server_keeps_serving(lab):
    port = lab.server("mx1.example.org").port
    with smtplib.SMTP(LOOPBACK, port, local_hostname="probe.example") as client:
        assert client.docmd("MAIL", "FROM:<not an address")[0] == 503
        assert client.docmd("BOGUS")[0] == 500
        assert client.ehlo()[0] == 250
        assert client.docmd("MAIL", "FROM:<>")[0] == 250
    assert lab.send("alice@example.com", "bob@example.org").ok


def test_the_readiness_probe_never_shows_up(lab):
    assert lab.journal.logs() == []
    lab.send("alice@example.com", "bob@example.org", via="mx1.example.org")
    views = sorted(log.view for log in lab.journal.logs())
    assert views == ["client", "server"]


def test_servers_listen_on_loopback_only(lab):
    for server in lab.servers.values():
        with socket.create_connection((LOOPBACK, server.port), timeout=5) as sock:
            if server.role == "submissions":  # TLS from the first byte (RFC 8314)
                context = lab.ca.client_context()
                with context.wrap_socket(sock, server_hostname=server.host) as tls:
                    greeting = tls.recv(100)
            else:
                greeting = sock.recv(100)
        assert greeting.startswith(f"220 {server.host} ".encode())
        bound = server.controller.server.sockets[0].getsockname()
        assert bound[0] == LOOPBACK


def test_a_new_lab_with_the_same_name_stops_the_old_one():
    first = Lab(name="rerun")
    port = first.server("mx1.example.org").port
    second = Lab(name="rerun")
    try:
        assert repr(first) == "<Lab 'rerun': stopped>"
        assert not first.root.exists()
        with pytest.raises(OSError):
            socket.create_connection((LOOPBACK, port), timeout=2).close()
        assert second.send("alice@example.com", "bob@example.org").ok
    finally:
        second.stop()


def test_two_labs_with_different_names_run_side_by_side():
    with Lab(name="one") as one, Lab(name="two") as two:
        assert one.server("mx1.example.org").port != two.server("mx1.example.org").port
        one.send("alice@example.com", "bob@example.org", via="mx1.example.org")
        assert len(one.mailbox("bob@example.org")) == 1
        assert len(two.mailbox("bob@example.org")) == 0


def test_describe_is_the_json_contract(lab):
    described = lab.describe()
    mx = {s["host"]: s for s in described["servers"]}["mx1.example.org"]
    assert mx["role"] == "mx" and mx["port"] == lab.server("mx1.example.org").port
    assert mx["domains"] == ["example.org"]
    users = {u["address"]: u for u in described["users"]}
    assert users["bob@example.org"]["password"]
    assert users["bob@example.org"]["maildir"].startswith(str(lab.root))


def test_the_lab_client_writes_its_commands_in_the_case_the_chapters_teach(lab):
    """Verbs in capitals and ``MAIL FROM:`` / ``RCPT TO:`` as RFC 5321 §4.1.1 spells them, on
    every Python: smtplib's own spelling changed in 3.13 (``from:``, ``to:``). The submission
    (STARTTLS, AUTH, DSN parameters) and the queue's relay to the MX both show it."""
    result = lab.send("alice@example.com", ["bob@example.org", "carol@example.org"],
                      "Case", "x", notify=["SUCCESS"], ret="HDRS")
    assert result.ok
    lab.settle(10)
    relayed = [t for t in lab.transcripts("mx1.example.org") if t.commands]
    lines = [c.line for t in [result.transcript, *relayed] for c in t.commands if not c.secret]
    verbs = {"EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "QUIT", "RSET", "NOOP"}
    assert {line.split()[0] for line in lines} <= verbs
    envelope = [line for line in lines if line.startswith(("MAIL", "RCPT"))]
    assert envelope, "no MAIL or RCPT seen"
    assert all(line.startswith(("MAIL FROM:<", "RCPT TO:<")) for line in envelope), envelope
    assert "MAIL FROM:<alice@example.com> RET=HDRS" in lines
    assert "RCPT TO:<bob@example.org> NOTIFY=SUCCESS" in lines


def test_eight_bit_bodies_and_international_addresses_are_declared(lab):
    """RFC 6152 (BODY=8BITMIME) and RFC 6531 (SMTPUTF8) are declared when needed."""
    cafe = lab.send(
        "alice@example.com", "bob@example.org", "Café", "Un café crème.\n", via="mx1.example.org"
    )
    assert cafe.ok
    assert cafe.transcript.commands[1].line == "MAIL FROM:<alice@example.com> BODY=8BITMIME"
    jose = lab.send("josé@example.com", "bob@example.org", "Hola", "x", via="mx1.example.org")
    assert jose.ok
    assert jose.transcript.commands[1].line == "MAIL FROM:<josé@example.com> SMTPUTF8"
    lab.server("mx1.example.org").disable("SMTPUTF8")
    refused = lab.send("josé@example.com", "bob@example.org", "Hola", "x", via="mx1.example.org")
    (outcome,) = refused.outcomes
    assert outcome.code is None and "SMTPUTF8" in outcome.text


def test_every_domain_has_a_postmaster_and_a_bare_postmaster_is_accepted(lab):
    """RFC 5321 §4.5.1: postmaster@ each domain served, and RCPT TO:<Postmaster> with none."""
    with lab.talk("mx1.example.org") as talk:
        talk.say("EHLO client.example.com")
        talk.say("MAIL FROM:<alice@example.com>")
        assert str(talk.say("RCPT TO:<Postmaster>")).startswith("250 ")
        assert str(talk.say("DATA")).startswith("354 ")
        assert str(talk.say("Subject: for the postmaster\r\n\r\nHi\r\n.")).startswith("250 ")
        talk.say("QUIT")
    (kept,) = lab.mailbox("postmaster@example.org")
    assert (
        kept.subject == "for the postmaster"
        and "for <postmaster@example.org>" in kept.message["Received"]
    )
    assert {u.address for u in lab.world.users} >= {
        "postmaster@example.com",
        "postmaster@example.org",
    }


def test_a_host_that_is_no_lab_server_is_refused_naming_the_servers(lab):
    for use in (lab.talk, lab.server):
        with pytest.raises(KeyError, match=r"no lab server named 'nope\.example\.org'; have"):
            use("nope.example.org")
