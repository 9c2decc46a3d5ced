"""Relaying as RFC 3461, RFC 6531 and RFC 5321 §5.1 describe it, over real sockets.

DSN parameters travel to a next hop that offers DSN, and the MX that delivers sends
the success notice; SMTPUTF8 travels too, or the message bounces with 5.6.7; a relay
never sends to itself or a less preferred MX; a temporary failure at one MX moves on
to the next; and no error in one queue entry stops a queue, also after a restart.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from peers.smtp import FAST

from smtplab import Lab
from smtplab.protocol.dsn import summarize
from smtplab.queue.spool import QueuedRecipient
from smtplab.record.transcript import Transcript
from smtplab.smtp.client import RecordingClient, open_session, transact
from smtplab.world import ServerSpec, World, default_world

UTF8_SUBJECT = "From: alice@example.com\r\nTo: bob@example.org\r\nSubject: Grüße\r\n\r\nHallo\r\n"


pytestmark = pytest.mark.lab(retry=FAST)


def relay_world() -> World:
    """example.org's backup MX is a relay: it takes mail on and hands it to the primary."""
    base = default_world()
    servers = tuple(
        ServerSpec(s.host, "relay", s.domains) if s.host == "mx2.example.org" else s
        for s in base.servers
    )
    return World(domains=base.domains, servers=servers)


def hop_to(transcripts: list[Transcript], server: str) -> str:
    (hop,) = [str(t) for t in transcripts if f"connected to {server}" in str(t)]
    return hop


def submit(lab: Lab, mail: list[str], rcpt: dict[str, list[str]], message: bytes) -> None:
    """Submit as alice, with MAIL parameters and each recipient's own RCPT parameters."""
    client = RecordingClient("smtp.example.com", client_name="client.example.com")
    client.connect("smtp.example.com", lab.server("smtp.example.com").port)
    login = ("alice@example.com", "alice-lab-pw")
    assert open_session(client, list(rcpt), context=lab.client_tls, login=login) is None
    outcomes = transact(client, "alice@example.com", list(rcpt), message, mail, rcpt)
    assert all(o.accepted for o in outcomes)


# -- RFC 3461: DSN parameters travel, the final MTA reports -------------------------
def test_dsn_parameters_go_on_and_the_mx_that_delivers_reports_it(lab):
    message = b"Message-ID: <dsn-on@example.com>\r\nSubject: on\r\n\r\nx\r\n"
    submit(
        lab,
        ["RET=HDRS", "ENVID=batch+2B7"],
        {
            "bob@example.org": ["NOTIFY=SUCCESS", "ORCPT=rfc822;bob@example.org"],
            "carol@example.org": ["NOTIFY=NEVER"],
        },
        message,
    )
    journey = lab.journeys.get("<dsn-on@example.com>")
    journey.wait(10)
    lab.settle(10)
    hop = hop_to(journey.hops(), "mx1.example.org")
    assert " -> MAIL FROM:<alice@example.com> RET=HDRS ENVID=batch+2B7\n" in hop  # §5.2.1
    assert " -> RCPT TO:<bob@example.org> NOTIFY=SUCCESS ORCPT=rfc822;bob@example.org\n" in hop
    assert " -> RCPT TO:<carol@example.org> NOTIFY=NEVER\n" in hop
    (notice,) = lab.mailbox("alice@example.com")  # one notice, from the MX (§5.2.3)
    assert notice.subject == "Successful Mail Delivery Report"
    assert b"Reporting-MTA: dns; mx1.example.org" in notice.raw
    assert b"Original-Envelope-Id: batch+7" in notice.raw
    (report,) = summarize(notice.raw)
    assert report["Action"] == "delivered" and report["Status"] == "2.0.0"
    assert report["Original-Recipient"] == "rfc822;bob@example.org"
    assert "Remote-MTA" not in report
    dsn_steps = [s for s in journey.steps if s.kind == "dsn"]
    assert [(s.host, s.recipients) for s in dsn_steps] == [
        ("mx1.example.org", ("bob@example.org",))
    ]


def test_a_relay_reports_relayed_only_when_the_next_hop_has_no_dsn(lab):
    for host in ("mx1.example.org", "mx2.example.org"):
        lab.server(host).disable("DSN")
    kept = lab.send("alice@example.com", "bob@example.org", "a", notify=["SUCCESS"])
    silent = lab.send("alice@example.com", "carol@example.org", "b", notify=["NEVER"])
    lab.settle(10)
    hop = hop_to(kept.journey.hops(), "mx1.example.org")
    assert " -> RCPT TO:<bob@example.org>\n" in hop  # no NOTIFY for a server without DSN
    assert silent.journey.outcome("carol@example.org") == "delivered"
    (notice,) = lab.mailbox("alice@example.com")  # §5.2.2; and NOTIFY=NEVER: none at all
    assert notice.subject == "Successful Mail Relay Report"
    (report,) = summarize(notice.raw)
    assert (report["Action"], report["Remote-MTA"]) == ("relayed", "dns; mx1.example.org")
    assert b"Reporting-MTA: dns; smtp.example.com" in notice.raw


# -- RFC 6531: SMTPUTF8 travels, or the message bounces ---------------------------
def test_a_utf8_header_travels_with_smtputf8_on_every_hop(lab):
    result = lab.send("alice@example.com", "bob@example.org", message=UTF8_SUBJECT.encode())
    result.journey.wait(10)
    assert " -> MAIL FROM:<alice@example.com> BODY=8BITMIME SMTPUTF8\n" in str(result.transcript)
    hop = hop_to(result.journey.hops(), "mx1.example.org")
    assert " -> MAIL FROM:<alice@example.com> BODY=8BITMIME SMTPUTF8\n" in hop
    (stored,) = lab.mailbox("bob@example.org")
    assert stored.subject == "Grüße"
    received = stored.message.get_all("Received")
    assert "with UTF8SMTPS id" in received[0]  # mx1: STARTTLS (RFC 6531 §3.7.3)
    assert "with UTF8SMTPSA id" in received[1]  # smtp: STARTTLS and AUTH


def test_to_a_next_hop_without_smtputf8_it_bounces_with_5_6_7(lab):
    for host in ("mx1.example.org", "mx2.example.org"):
        lab.server(host).disable("SMTPUTF8")
    result = lab.send("alice@example.com", "bob@example.org", message=UTF8_SUBJECT.encode())
    lab.settle(10)
    assert result.journey.outcome("bob@example.org") == "bounced"
    assert "retry" not in [s.kind for s in result.journey.steps]  # permanent, at once
    assert len(lab.mailbox("bob@example.org")) == 0  # never downgraded and sent anyway
    (bounce,) = lab.mailbox("alice@example.com")
    assert summarize(bounce.raw)[0]["Status"] == "5.6.7"
    assert not any(
        "connected to mx1" in str(t) and "MAIL FROM" in str(t) for t in result.journey.hops()
    )


# -- RFC 5321 §5.1: the MX list, from a relay and after a 4yz ----------------------
def test_the_backup_mx_relays_to_the_primary_and_never_to_itself():
    with Lab(relay_world(), name="relay-backup", retry=FAST) as lab:
        lab.server("mx1.example.org").down()
        result = lab.send("alice@example.com", "bob@example.org", "via the backup", "x")
        relay = result.journey.wait_for("queued", 10)
        deadline = time.monotonic() + 10
        while not any(
            s.host == "mx2.example.org" and s.kind == "retry" for s in result.journey.steps
        ):
            assert time.monotonic() < deadline
            result.journey.wait_for("retry", 1)
        assert relay.host == "smtp.example.com"
        routes = [
            s.text
            for s in result.journey.steps
            if s.kind == "route" and s.host == "mx2.example.org"
        ]
        assert (
            "mx2.example.org is itself in the list at preference 20: discard it and every "
            "record of preference 20 or more (RFC 5321 §5.1): mx1.example.org (10) left"
        ) in routes
        lab.server("mx1.example.org").up()
        lab.queues["mx2.example.org"].flush()
        result.journey.wait(10)
        assert result.journey.outcome("bob@example.org") == "delivered"
        (stored,) = lab.mailbox("bob@example.org")
        hosts = [r.split("by ")[1].split()[0] for r in stored.message.get_all("Received")]
        assert hosts == ["mx1.example.org", "mx2.example.org", "smtp.example.com"]


def test_a_relay_left_with_no_closer_mx_bounces_with_a_routing_error():
    with Lab(relay_world(), name="relay-alone", retry=FAST) as lab:
        lab.dns.replace("example.org", "MX", ["10 mx2.example.org."])
        result = lab.send("alice@example.com", "bob@example.org", "nowhere", "x")
        lab.settle(10)
        assert result.journey.outcome("bob@example.org") == "bounced"
        (bounce,) = lab.mailbox("alice@example.com")
        (report,) = summarize(bounce.raw)
        assert report["Status"] == "5.4.4"
        assert b"Reporting-MTA: dns; mx2.example.org" in bounce.raw
        hops = [t for t in result.journey.hops() if "connected to mx2" in str(t)]
        assert len(hops) == 1  # handed to the relay once, never on to itself


@pytest.mark.parametrize(
    ("command", "reply"),
    [("EHLO", "421 4.3.2 Not now, closing"), ("RCPT", "451 4.7.1 Greylisted, try again later")],
)
def test_a_temporary_failure_at_one_mx_moves_on_to_the_next(lab, command, reply):
    lab.server("mx1.example.org").fail(command, reply, times=None)
    result = lab.send("alice@example.com", "bob@example.org", "next one", "x")
    result.journey.wait(10)
    steps = [(s.kind, s.text) for s in result.journey.steps if s.kind != "dsn"]
    assert [k for k, _ in steps][-3:] == ["attempt", "attempt", "delivered"]  # one attempt
    assert steps[-1][1] == "mx2.example.org accepted it"
    assert [m.subject for m in lab.mailbox("bob@example.org")] == ["next one"]


# -- RFC 5321 §6.1: one entry's error never stops a queue ------------------------------
POISON = QueuedRecipient("b\udcffob@example.org")  # a byte no client can encode, from the spool


def poison(lab: Lab) -> None:
    message = b"Message-ID: <poison@example.com>\r\nSubject: poison\r\n\r\nx\r\n"
    lab.queues["smtp.example.com"].accept("alice@example.com", [POISON], message)


def test_an_entry_whose_delivery_fails_with_an_error_does_not_stop_the_queue(lab):
    poison(lab)
    later = lab.send("alice@example.com", "bob@example.org", "later", "x")
    later.journey.wait(10)
    assert [m.subject for m in lab.mailbox("bob@example.org")] == ["later"]
    lab.settle(10)
    journey = lab.journeys.get("<poison@example.com>")
    retries = [s.text for s in journey.steps if s.kind == "retry"]
    assert len(retries) == FAST.max_attempts - 1
    assert "4.3.0 local error in processing (UnicodeEncodeError)" in retries[0]
    assert journey.outcome(POISON.address) == "bounced"  # expired: the sender hears of it
    (bounce,) = lab.mailbox("alice@example.com")
    assert summarize(bounce.raw)[0]["Final-Recipient"] == "rfc822; b\\udcffob@example.org"


def test_after_a_restart_a_poisoned_or_corrupt_spool_does_not_stop_the_queue(tmp_path: Path):
    with Lab(name="poisoned", root=tmp_path, retry=FAST, hold=True) as lab:
        poison(lab)  # held: still in the spool when the lab stops
    queue_folder = tmp_path / "spool" / "smtp.example.com" / "queue"
    (queue_folder / "000009-1").write_bytes(b"{not json\n")
    (queue_folder / "notes.txt").write_text("left by someone")
    (entry_file,) = [p for p in queue_folder.iterdir() if p.name.startswith("000001")]
    assert json.loads(entry_file.read_bytes().split(b"\n")[0])["recipients"][0]["address"]
    with Lab(name="poisoned", root=tmp_path, retry=FAST) as lab:
        later = lab.send("alice@example.com", "bob@example.org", "after restart", "x")
        later.journey.wait(10)
        assert [m.subject for m in lab.mailbox("bob@example.org")] == ["after restart"]
        lab.settle(10)
        corrupt = tmp_path / "spool" / "smtp.example.com" / "corrupt"
        assert sorted(p.name for p in corrupt.iterdir()) == ["000009-1", "notes.txt"]
        assert lab.journeys.get("<poison@example.com>").outcome(POISON.address) == "bounced"
