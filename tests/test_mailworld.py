"""The journey: submission with TLS and AUTH, the queue, MX routing, retries and bounces."""

from __future__ import annotations

import smtplib
import time
from pathlib import Path

import pytest
from peers.smtp import FAST, wait_until

from smtplab import Lab
from smtplab.protocol.dsn import summarize
from smtplab.queue.delivery import RetryPolicy
from smtplab.queue.spool import QueuedRecipient
from smtplab.world import LOOPBACK, Domain, ServerSpec, User, World, default_world

pytestmark = pytest.mark.lab(retry=FAST)


def kinds(result) -> list[str]:
    return [step.kind for step in result.journey.steps]


def test_submission_uses_starttls_then_auth_and_relays_to_the_mx(lab):
    result = lab.send("alice@example.com", "bob@example.org", "Hi", "Hello")
    assert result.server == "smtp.example.com" and result.ok
    text = result.transcript.to_text()
    assert text.index(" -> STARTTLS") < text.index("=== TLS started: TLSv1.") < text.index("AUTH")
    assert " -> AUTH PLAIN ********" in text
    result.journey.wait(10)
    assert kinds(result) == ["submitted", "queued", "route", "attempt", "delivered"]
    hops = [t.hop for t in result.journey.hops()]
    assert hops == ["client.example.com → smtp.example.com", "smtp.example.com → mx1.example.org"]
    (stored,) = lab.mailbox("bob@example.org")
    received = stored.message.get_all("Received")
    assert "by mx1.example.org" in received[0] and "by smtp.example.com" in received[1]
    assert "with ESMTPSA" in received[1]
    assert stored.raw.startswith(b"Return-Path: <alice@example.com>\n")


def test_submission_refuses_mail_before_auth_and_bad_passwords(lab):
    port = lab.server("smtp.example.com").port
    with smtplib.SMTP(LOOPBACK, port, local_hostname="c.example") as client:
        client.ehlo()
        assert client.docmd("AUTH", "PLAIN AGFsaWNlAHg=")[0] == 538  # before TLS, RFC 4954 §4
        assert client.docmd("MAIL", "FROM:<alice@example.com>")[0] == 530
    result = lab.send("alice@example.com", "bob@example.org", password="wrong")
    (outcome,) = result.outcomes
    assert (outcome.code, outcome.enhanced, outcome.stage) == (535, "5.7.8", "AUTH")
    assert lab.queues["smtp.example.com"].pending() == []


def test_users_may_only_send_as_themselves(lab):
    port = lab.server("smtp.example.com").port
    with smtplib.SMTP(LOOPBACK, port, local_hostname="c.example") as client:
        client._host = "smtp.example.com"  # verify the certificate by the lab host name
        client.starttls(context=lab.ca.client_context())
        client.login("alice@example.com", "alice-lab-pw")
        code, reply = client.mail("bob@example.org")
    assert (code, reply[:5]) == (550, b"5.7.1")  # RFC 6409 §6.1


def test_recipients_are_split_into_one_delivery_per_domain(lab):
    result = lab.send(
        "alice@example.com", ["bob@example.org", "alice@example.com", "carol@example.org"]
    )
    result.journey.wait(10)
    queued = [s.text for s in result.journey.steps if s.kind == "queued"]
    assert queued == ["queued as 000001-1 for example.org", "queued as 000001-2 for example.com"]
    assert {
        len(lab.mailbox(a)) for a in ("bob@example.org", "carol@example.org", "alice@example.com")
    } == {1}


def test_the_backup_mx_takes_the_mail_when_the_primary_is_down(lab):
    lab.server("mx1.example.org").down()
    result = lab.send("alice@example.com", "bob@example.org")
    result.journey.wait(10)
    attempts = [s.text for s in result.journey.steps if s.kind == "attempt"]
    assert attempts[0].startswith("→ mx1.example.org: --- connection")
    assert attempts[1] == "→ mx2.example.org: 250 DATA"
    assert "by mx2.example.org" in lab.mailbox("bob@example.org")[0].message["Received"]


def test_greylisting_is_retried_and_then_delivered(lab):
    lab.server("mx1.example.org").fail("RCPT", "451 4.7.1 Greylisted, try again later", times=1)
    lab.server("mx2.example.org").down()
    result = lab.send("alice@example.com", "bob@example.org")
    result.journey.wait(10)
    assert kinds(result)[-4:] == ["retry", "route", "attempt", "delivered"]
    retry = next(s for s in result.journey.steps if s.kind == "retry")
    assert "451 4.7.1 Greylisted" in retry.text
    assert len(lab.mailbox("bob@example.org")) == 1


def test_a_421_mid_session_moves_on_to_the_next_mx(lab):
    lab.server("mx1.example.org").fail("MAIL", "421 4.3.2 Shutting down", times=1)
    result = lab.send("alice@example.com", "bob@example.org")
    result.journey.wait(10)
    assert [s.text for s in result.journey.steps if s.kind == "attempt"][
        -1
    ] == "→ mx2.example.org: 250 DATA"


def test_a_connection_dropped_after_the_dot_is_retried_once(lab):
    lab.server("mx1.example.org").fail("END-OF-DATA", None, times=1)
    lab.server("mx2.example.org").down()
    result = lab.send("alice@example.com", "bob@example.org")
    result.journey.wait(10)
    assert "retry" in kinds(result) and kinds(result)[-1] == "delivered"
    assert len(lab.mailbox("bob@example.org")) == 1


def test_unknown_user_bounces_with_an_rfc3464_report_from_the_null_sender(lab):
    result = lab.send("alice@example.com", ["bob@example.org", "nobody@example.org"], "Hi", "x")
    lab.settle(10)
    assert result.journey.outcome("nobody@example.org") == "bounced"
    assert result.journey.outcome("bob@example.org") == "delivered"
    (bounce,) = lab.mailbox("alice@example.com")
    assert bounce.raw.startswith(b"Return-Path: <>\n")
    assert bounce.message.get_content_type() == "multipart/report"
    (report,) = summarize(bounce.raw)
    assert (report["Action"], report["Status"]) == ("failed", "5.1.1")
    assert report["Remote-MTA"] == "dns; mx1.example.org"


def test_a_journey_reads_in_wire_order_each_notice_after_what_it_reports(lab):
    """The journey as chapter 03 first shows it: a route step does not say "route" twice,
    an attempt lists its replies in the order they crossed the wire, and a notice (dsn)
    comes after the step it reports, recorded with it: the finished journey shows both."""
    sent = lab.send("alice@example.com", ["bob@example.org", "dave@example.org"])
    steps = sent.journey.wait(10).steps
    route = next(s.text for s in steps if s.kind == "route")
    assert route.startswith("try mx1.example.org")
    attempt = next(s.text for s in steps if s.kind == "attempt")
    assert attempt == "→ mx1.example.org: 550 RCPT; 250 DATA"
    assert [s.kind for s in steps][-3:] == ["delivered", "bounced", "dsn"]


def test_no_report_is_ever_sent_about_a_report(lab):
    """An undeliverable notice gets no notice of its own: the postmaster keeps it as it is."""
    queue = lab.queues["smtp.example.com"]
    message = b"From: <>\r\nMessage-ID: <bounce@x>\r\n\r\nx\r\n"
    queue.accept("", [QueuedRecipient("nobody@example.org")], message)
    lab.settle(10)
    journey = lab.journeys.get("<bounce@x>")
    assert [s.kind for s in journey.steps][-1] == "postmaster"
    assert "dsn" not in [s.kind for s in journey.steps]
    (kept,) = lab.mailbox("postmaster@example.com")
    assert kept.raw.startswith(b"Return-Path: <>\n")
    assert kept.raw.endswith(b"Message-ID: <bounce@x>\n\nx\n")  # the notice itself, unchanged
    others = [u.address for u in lab.world.users if u.address != "postmaster@example.com"]
    assert all(len(lab.mailbox(address)) == 0 for address in others)


def test_a_bounce_refused_by_its_recipient_ends_in_the_postmasters_mailbox(lab):
    lab.server("mx.example.com").fail("RCPT", "550 5.1.1 Mailbox disabled", times=None)
    result = lab.send("alice@example.com", "nobody@example.org", "lost?", "x")
    lab.settle(10)
    assert result.journey.outcome("nobody@example.org") == "bounced"
    (kept,) = lab.mailbox("postmaster@example.com")
    assert kept.subject == "Undelivered Mail Returned to Sender"
    assert kept.message["To"] == "alice@example.com" and kept.raw.startswith(b"Return-Path: <>")
    (report,) = summarize(kept.raw)
    assert report["Final-Recipient"] == "rfc822; nobody@example.org"
    notice = lab.journeys.get(kept.message["Message-ID"])
    assert notice.outcome("alice@example.com") == "postmaster"
    assert "550 5.1.1 Mailbox disabled" in notice.steps[-1].text
    assert len(lab.mailbox("alice@example.com")) == 0


def test_a_bounce_that_expires_ends_in_the_postmasters_mailbox(lab):
    lab.server("mx.example.com").down()
    lab.send("alice@example.com", "nobody@example.org", "lost?", "x")
    lab.settle(20)
    (kept,) = lab.mailbox("postmaster@example.com")
    notice = lab.journeys.get(kept.message["Message-ID"])
    kinds_of_notice = [s.kind for s in notice.steps]
    assert kinds_of_notice.count("retry") == FAST.max_attempts - 1  # retried like any message
    assert kinds_of_notice[-1] == "postmaster"
    assert not any(queue.pending() for queue in lab.queues.values())


def test_a_held_queue_keeps_mail_past_its_maximum_age_with_no_attempt():
    short = RetryPolicy(first_delay=0.05, max_attempts=2, max_age=0.3)
    with Lab(name="held", retry=short, hold=True) as lab:
        lab.server("mx1.example.org").fail("RCPT", "451 4.7.1 Greylisted", times=1)
        lab.server("mx2.example.org").down()
        result = lab.send("alice@example.com", "bob@example.org", "waiting", "x")
        assert result.ok
        queue = lab.queues["smtp.example.com"]
        (entry,) = queue.pending()
        wait_until(lambda: time.time() - entry.created > 2 * short.max_age)
        lab.settle(5)  # at rest: the queue holds only held mail
        (still,) = queue.pending()
        assert (still.qid, still.attempts, still.held_since is not None) == (entry.qid, 0, True)
        assert [s.kind for s in result.journey.steps] == ["submitted", "queued", "held"]
        assert len(lab.mailbox("alice@example.com")) == len(lab.mailbox("bob@example.org")) == 0
        lab.release()
        # The held time is no age: the greylisting is retried, not bounced as expired.
        result.journey.wait(10)
        assert kinds(result)[2:] == [
            *("held", "released"),
            *("route", "attempt", "attempt", "retry"),  # mx1 451, then mx2 down (§5.1)
            *("route", "attempt", "delivered"),
        ]
        assert [m.subject for m in lab.mailbox("bob@example.org")] == ["waiting"]


def test_hold_and_release_while_the_lab_runs(lab):
    lab.hold()
    held = lab.send("alice@example.com", "bob@example.org", "one", "x")
    (entry,) = lab.queues["smtp.example.com"].pending()
    on_disk = lab.queues["smtp.example.com"].spool.entries()
    assert [e.held_since is not None for e in on_disk] == [True]
    lab.release()
    lab.settle(10)
    assert [s.kind for s in held.journey.steps][:4] == ["submitted", "queued", "held", "released"]
    assert held.journey.outcome("bob@example.org") == "delivered"
    assert lab.queues["smtp.example.com"].spool.entries() == []
    assert entry.qid.startswith("000001")


def test_notify_success_and_never(lab):
    lab.send("alice@example.com", "bob@example.org", "a", notify=["SUCCESS"])
    lab.send("alice@example.com", "nobody@example.org", "b", notify=["NEVER"])
    lab.settle(10)
    (notice,) = lab.mailbox("alice@example.com")
    assert notice.subject == "Successful Mail Delivery Report"
    assert summarize(notice.raw)[0]["Action"] == "delivered"


def test_a_delay_notice_then_a_failure_after_the_last_attempt(lab):
    for host in ("mx1.example.org", "mx2.example.org"):
        lab.server(host).fail("RCPT", "450 4.2.1 Mailbox busy", times=None)
    result = lab.send("alice@example.com", "bob@example.org", notify=["DELAY", "FAILURE"])
    lab.settle(20)
    assert [s.kind for s in result.journey.steps].count("retry") == FAST.max_attempts - 1
    subjects = [m.subject for m in lab.mailbox("alice@example.com")]
    assert subjects == ["Delayed Mail (still being retried)", "Undelivered Mail Returned to Sender"]


def test_dns_edits_take_effect_at_the_next_lookup(lab):
    lab.dns.replace("example.org", "MX", ["5 mx2.example.org."])
    result = lab.send("alice@example.com", "bob@example.org")
    result.journey.wait(10)
    assert next(s.text for s in result.journey.steps if s.kind == "route").startswith(
        "try mx2.example.org"
    )


def test_a_null_mx_bounces_with_556(lab):
    lab.dns.add_zone("example.net")
    lab.dns.add("example.net", "MX", "0 .")
    result = lab.send("alice@example.com", "dave@example.net")
    lab.settle(10)
    assert result.journey.outcome("dave@example.net") == "bounced"
    assert "556 5.1.10" in next(s.text for s in result.journey.steps if s.kind == "bounced")
    assert summarize(lab.mailbox("alice@example.com")[0].raw)[0]["Status"] == "5.1.10"


def test_servfail_is_temporary_and_the_retry_succeeds(lab):
    lab.dns.set_fault("example.org", "servfail")
    result = lab.send("alice@example.com", "bob@example.org")
    retry = result.journey.wait_for("retry", 10)
    assert "451 4.4.3" in retry.text
    lab.dns.clear_fault("example.org")
    result.journey.wait(10)
    assert kinds(result)[-1] == "delivered"


def test_without_mx_records_mail_goes_to_the_domain_address():
    world = World(
        domains=(
            *default_world().domains,
            Domain("example.net", (User("dave@example.net", "pw"),), mx=()),
        ),
        servers=(*default_world().servers, ServerSpec("example.net", "mx", ("example.net",))),
    )
    with Lab(world, name="implicit-mx", retry=FAST) as lab:
        result = lab.send("alice@example.com", "dave@example.net")
        result.journey.wait(10)
        route = next(s.text for s in result.journey.steps if s.kind == "route")
        assert route.startswith("try example.net")
        assert len(lab.mailbox("dave@example.net")) == 1


def test_a_mail_loop_is_stopped_by_the_hop_limit(lab):
    loop = b"".join(
        b"Received: from a by b; Mon, 2 Nov 2026 09:00:00 +0000\r\n" for _ in range(100)
    )
    result = lab.send(
        "alice@example.com",
        "bob@example.org",
        via="mx1.example.org",
        message=loop + b"Subject: loop\r\n\r\nx\r\n",
    )
    (outcome,) = result.outcomes
    assert (outcome.code, outcome.enhanced) == (554, "5.4.0")
    assert len(lab.mailbox("bob@example.org")) == 0


def test_a_restarted_lab_delivers_what_its_queue_held(tmp_path: Path):
    with Lab(name="before-restart", root=tmp_path, retry=FAST) as lab:
        for host in ("mx1.example.org", "mx2.example.org"):
            lab.server(host).down()
        result = lab.send("alice@example.com", "bob@example.org", "kept", "safe")
        assert result.ok  # 250 from the submission server: it is responsible now
    (tmp_path / "spool" / "smtp.example.com" / "tmp" / "half-written").write_bytes(b'{"qid":')
    with Lab(name="after-restart", root=tmp_path, retry=FAST) as lab:
        lab.settle(10)
        assert [m.subject for m in lab.mailbox("bob@example.org")] == ["kept"]
        assert not (tmp_path / "spool" / "smtp.example.com" / "tmp" / "half-written").exists()


def test_describe_lists_submission_dns_and_ca(lab):
    described = lab.describe()
    roles = {s["role"] for s in described["servers"]}
    assert roles == {"submission", "submissions", "mx"}
    assert described["dns"]["port"] == lab.dns_server.port
    pem = Path(described["ca_cert"]).read_text()
    assert pem.startswith("-----BEGIN CERTIFICATE-----")


def test_the_journey_book_is_bounded():
    from smtplab.record.journey import JourneyBook, Step

    book = JourneyBook(keep=3)
    for n in range(5):
        book.add(f"<{n}@x>", Step("queued", "h", "t", ("a@x",)))
    assert book.get("<0@x>") is None and book.get("<1@x>") is None
    assert book.get("<4@x>").steps[0].kind == "queued"


def test_a_spool_failure_stores_no_part_of_the_message(tmp_path: Path):
    """All recipient domains are stored, or none: a 451 must not leave a part behind."""
    from smtplab.queue.spool import QueueEntry, Spool

    spool = Spool(tmp_path)
    entries = [
        QueueEntry(f"000001-{n}", "a@x", domain, [QueuedRecipient(f"u@{domain}")], "d", 0.0)
        for n, domain in enumerate(("example.org", "example.com"), start=1)
    ]
    (tmp_path / "tmp" / "000001-2").mkdir()  # the second part cannot be written
    with pytest.raises(OSError):
        spool.put(entries, b"Subject: x\r\n\r\nx\r\n")
    (tmp_path / "tmp" / "000001-2").rmdir()
    assert spool.entries() == [] and list((tmp_path / "tmp").iterdir()) == []


def test_a_pipelined_transaction_sends_the_envelope_in_one_write(lab):
    """RFC 2920 §3.1: MAIL, each RCPT and DATA together; each reply still counts."""
    from smtplab.smtp.client import RecordingClient, transact

    client = RecordingClient("mx1.example.org", client_name="relay.example.net")
    client.connect("mx1.example.org", lab.server("mx1.example.org").port)
    recipients = ["bob@example.org", "nobody@example.org"]
    outcomes = transact(
        client, "alice@example.com", recipients, b"Subject: p\r\n\r\n.dot\r\n", pipelining=True
    )
    assert [(o.code, o.stage) for o in outcomes] == [(250, "DATA"), (550, "RCPT")]
    assert client.wire is not None
    sent = [chunk for _, side, chunk in client.wire.chunks if side == "client"]
    assert (
        b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.org>\r\n"
        b"RCPT TO:<nobody@example.org>\r\nDATA\r\n"
    ) in sent
    assert b"Subject: p\r\n\r\n..dot\r\n.\r\n" in sent  # dot-stuffed, then the end
    assert [m.subject for m in lab.mailbox("bob@example.org")] == ["p"]


def test_a_pipelined_transaction_with_no_recipient_left_sends_no_message(lab):
    """RFC 2920 §3.1: every RCPT refused, so after DATA's reply only the lone dot follows."""
    from smtplab.smtp.client import RecordingClient, transact

    client = RecordingClient("mx1.example.org", client_name="relay.example.net")
    client.connect("mx1.example.org", lab.server("mx1.example.org").port)
    outcomes = transact(
        client,
        "alice@example.com",
        ["nobody@example.org"],
        b"Subject: q\r\n\r\nx\r\n",
        pipelining=True,
    )
    assert [(o.code, o.stage) for o in outcomes] == [(550, "RCPT")]
    assert client.wire is not None
    assert b"Subject: q" not in b"".join(c for _, side, c in client.wire.chunks if side == "client")


def test_under_load_the_queue_pipelines_on_one_session(lab):
    """More mail for example.org is due: one session, each envelope in one write."""
    queue = lab.queues["smtp.example.com"]
    queue.stop()  # let the mail pile up, then deliver it all at once
    results = [lab.send("alice@example.com", "bob@example.org", f"bulk {n}", "x") for n in range(5)]
    queue.start()
    lab.settle(15)
    assert sorted(m.subject for m in lab.mailbox("bob@example.org")) == [
        f"bulk {n}" for n in range(5)
    ]
    wires = {id(s.wire): s.wire for r in results for s in r.journey.steps if s.wire is not None}
    hop = [w for w in wires.values() if w.view == "client" and w.server == "mx1.example.org"]
    assert len(hop) == 1  # the session was kept for the next message
    grouped = [c for _, side, c in hop[0].chunks if side == "client" and c.startswith(b"MAIL")]
    assert len(grouped) == 5 and all(c.endswith(b"DATA\r\n") for c in grouped[:-1])


def test_concurrent_writers_share_the_spools_fsyncs(tmp_path: Path, monkeypatch):
    """Group commit: writers that arrive during a batch's fsync go together in the next one."""
    import os
    import threading

    from smtplab.queue import spool as spool_module
    from smtplab.queue.spool import QueueEntry, Spool

    spool = Spool(tmp_path)
    first_sync, others_waiting = threading.Event(), threading.Event()
    directory_syncs: list[int] = []
    real_fsync_dir = spool_module.fsync_dir

    def fsync_dir(path):
        directory_syncs.append(1)
        if len(directory_syncs) == 1:  # hold the first batch until the rest have queued up
            first_sync.set()
            assert others_waiting.wait(10)
        real_fsync_dir(path)

    monkeypatch.setattr(spool_module, "fsync_dir", fsync_dir)

    def put(n: int) -> None:
        entry = QueueEntry(
            f"{n:06X}-1", "a@x", "example.org", [QueuedRecipient("b@example.org")], "d", 0.0
        )
        spool.put([entry], f"Subject: {n}\r\n\r\nx\r\n".encode())

    writers = [threading.Thread(target=put, args=(1,))]
    writers[0].start()
    assert first_sync.wait(10)
    writers += [threading.Thread(target=put, args=(n,)) for n in range(2, 9)]
    for writer in writers[1:]:
        writer.start()
    deadline = time.monotonic() + 10
    while len(spool._waiting) < 7 and time.monotonic() < deadline:
        time.sleep(0.001)  # polling a condition with a deadline, not papering over a race
    others_waiting.set()
    for writer in writers:
        writer.join(10)
    assert len(directory_syncs) == 2  # 8 messages, 2 directory fsyncs
    assert [e.qid for e in spool.entries()] == [f"{n:06X}-1" for n in range(1, 9)]
    assert spool.message("000005-1") == b"Subject: 5\r\n\r\nx\r\n"
    assert os.listdir(tmp_path / "tmp") == []


def test_a_stopped_queue_restarts_without_doubling_what_it_holds(lab):
    """stop() keeps the entries; start() reads the spool again and must not queue them twice."""
    queue = lab.queues["smtp.example.com"]
    queue.stop()
    lab.send("alice@example.com", "bob@example.org", "held", "x")
    queue.start()
    lab.settle(10)
    assert [m.subject for m in lab.mailbox("bob@example.org")] == ["held"]


def test_an_update_that_cannot_be_written_keeps_the_entry_as_it_was(tmp_path: Path):
    """A retry's rewrite is all or nothing too: the old envelope stays if the new one fails."""
    from dataclasses import replace

    from smtplab.queue.spool import QueueEntry, Spool

    spool = Spool(tmp_path)
    entry = QueueEntry(
        "000001-1", "a@x", "example.org", [QueuedRecipient("b@example.org")], "d", 0.0
    )
    spool.put([entry], b"Subject: x\r\n\r\nx\r\n")
    (tmp_path / "tmp" / "000001-1").mkdir()  # the rewrite cannot be staged
    with pytest.raises(OSError):
        spool.update(replace(entry, attempts=1))
    (tmp_path / "tmp" / "000001-1").rmdir()
    assert [e.attempts for e in spool.entries()] == [0]
    assert Spool(tmp_path).message("000001-1") == b"Subject: x\r\n\r\nx\r\n"  # read from disk


def test_a_write_whose_caller_gave_up_before_it_began_is_not_stored(tmp_path: Path, monkeypatch):
    """A session that ended while its message waited for the writer never got a 250."""
    import threading

    from smtplab.queue import spool as spool_module
    from smtplab.queue.spool import QueueEntry, Spool

    spool = Spool(tmp_path)
    in_first, release = threading.Event(), threading.Event()
    real_fsync_dir = spool_module.fsync_dir

    def fsync_dir(path):
        if not in_first.is_set():  # hold the first batch while the second one gathers
            in_first.set()
            assert release.wait(10)
        real_fsync_dir(path)

    monkeypatch.setattr(spool_module, "fsync_dir", fsync_dir)

    def entry(n: int) -> QueueEntry:
        return QueueEntry(f"{n:06X}-1", "a@x", "example.org", [QueuedRecipient("b@x")], "d", 0.0)

    first = spool.put_later([entry(1)], b"one\r\n")
    assert in_first.wait(10)
    given_up = spool.put_later([entry(2)], b"two\r\n")
    assert given_up.cancel()  # still waiting: it can be called off
    release.set()
    first.result(10)
    spool.put([entry(3)], b"three\r\n")  # the writer goes on
    assert [e.qid for e in spool.entries()] == ["000001-1", "000003-1"]
