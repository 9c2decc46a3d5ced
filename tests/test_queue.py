"""The delivery queue (smtplab/queue/) relays, retries, bounces, and survives a crash.

Dots are stuffed again on the relay hop; a next hop that is down, slow or answers 4xx
is retried with backoff, a loop or an unknown domain bounces with a DSN; after a
SIGKILL the spool still holds every message answered with 250 (RFC 5321 §6.1).
docs/hardening.md lists every case with its test id.
"""

from __future__ import annotations

import json
import re
import signal
import smtplib
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from peers.smtp import (
    FAST,
    RECIPIENT,
    SENDER,
    begin_data,
    files_under,
    ready,
    received_headers,
    stored,
)

from smtplab import Lab, RetryPolicy
from smtplab.protocol.dsn import summarize
from smtplab.protocol.rules import dot_unstuff
from smtplab.world import LOOPBACK

pytestmark = [pytest.mark.lab(retry=FAST), pytest.mark.hardening]
TESTS = Path(__file__).parent


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
