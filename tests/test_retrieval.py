"""POP3 and IMAP: the transcript parser (pure), and a real private Dovecot on the lab's Maildirs."""

from __future__ import annotations

import html
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from peers.smtp import wait_until

from smtplab import Lab
from smtplab.mailstore import dovecot as dovecot_module
from smtplab.mailstore import dovecot_conf
from smtplab.mailstore.dovecot import find_dovecot
from smtplab.mailstore.dovecot_conf import MailstoreUnavailable
from smtplab.mailstore.retrieval import fetch_mailbox
from smtplab.record.retrieval import parse_retrieval
from smtplab.world import LOOPBACK

ROOT = Path(__file__).resolve().parents[1]
needs_dovecot = pytest.mark.skipif(
    find_dovecot() is None,
    reason="dovecot is not installed (apt install dovecot-imapd dovecot-pop3d)",
)


def chunks(*parts: tuple[str, bytes]) -> list[tuple[float, str, bytes]]:
    return [(float(i), kind, data) for i, (kind, data) in enumerate(parts)]


def text_of(transcript, **options) -> list[str]:
    return transcript.to_text(**options).splitlines()


# --- the parser, without any server ------------------------------------------------------------


def test_pop3_password_is_masked_and_message_bodies_are_summarised():
    recorded = chunks(
        ("server", b"+OK ready\r\n"),
        ("client", b"USER bob@example.org\r\n"),
        ("server", b"+OK\r\n"),
        ("client", b"PASS secret\r\n"),
        ("server", b"+OK Logged in.\r\n"),
        ("client", b"LIST\r\n"),
        ("server", b"+OK 1 messages:\r\n1 20\r\n.\r\n"),
        ("client", b"RETR 1\r\n"),
        ("server", b"+OK 20 octets\r\nSubject: x\r\n\r\n..dot\r\n.\r\n"),
        ("client", b"QUIT\r\n"),
        ("server", b"+OK Bye\r\n"),
        ("close", b""),
    )
    transcript = parse_retrieval("pop3", "client.example.com", "pop.example.com", recorded)
    assert text_of(transcript) == [
        "=== client.example.com connected to pop.example.com",
        "<-  +OK ready",
        " -> USER bob@example.org",
        "<-  +OK",
        " -> PASS ********",
        "<-  +OK Logged in.",
        " -> LIST",
        "<-  +OK 1 messages:",
        "<-  1 20",
        "<-  .",
        " -> RETR 1",
        "<-  +OK 20 octets",
        "<-  [message data: 3 lines, 21 bytes]",
        "<-  .",
        " -> QUIT",
        "<-  +OK Bye",
        "=== connection closed",
    ]
    full = text_of(transcript, reveal=True, full_data=True)
    assert " -> PASS secret" in full
    assert full[12:15] == ["<-  Subject: x", "<-  ", "<-  ..dot"]
    assert "secret" not in str(transcript)


def test_pop3_reply_split_across_reads_and_a_failed_login():
    recorded = chunks(
        ("server", b"+OK re"),
        ("server", b"ady\r\n"),
        ("client", b"USER bob\r\nPASS wrong\r\n"),
        ("server", b"+OK\r\n-ERR [AUTH] Authentication failed.\r\n"),
        ("close", b""),
    )
    lines = text_of(parse_retrieval("pop3", "c", "s", recorded))
    assert lines[1:6] == [
        "<-  +OK ready",
        " -> USER bob",
        " -> PASS ********",
        "<-  +OK",
        "<-  -ERR [AUTH] Authentication failed.",
    ]


def test_pop3_sasl_responses_are_secret():
    recorded = chunks(
        ("client", b"AUTH PLAIN\r\n"),
        ("server", b"+ \r\n"),
        ("client", b"AGJvYgBwdw==\r\n"),
        ("server", b"+OK Logged in.\r\n"),
        ("client", b"STAT\r\n"),
        ("close", b""),
    )
    lines = text_of(parse_retrieval("pop3", "c", "s", recorded))
    assert lines[1:6] == [
        " -> AUTH PLAIN",
        "<-  + ",
        " -> ********",
        "<-  +OK Logged in.",
        " -> STAT",
    ]


def test_imap_login_literals_and_dovecot_timings():
    recorded = chunks(
        ("server", b"* OK ready\r\n"),
        ("client", b'A1 LOGIN bob@example.org "pw"\r\n'),
        ("server", b"A1 OK Logged in\r\n"),
        ("client", b"A2 FETCH 1 (BODY.PEEK[])\r\n"),
        ("server", b"* 1 FETCH (BODY[] {12}\r\nSubject: x\r\n)\r\n"),
        ("server", b"A2 OK Fetch completed (0.001 + 0.000 + 0.002 secs).\r\n"),
        ("close", b""),
    )
    transcript = parse_retrieval("imap", "c", "imap.example.com", recorded)
    assert text_of(transcript)[1:] == [
        "<-  * OK ready",
        " -> A1 LOGIN bob@example.org ********",
        "<-  A1 OK Logged in",
        " -> A2 FETCH 1 (BODY.PEEK[])",
        "<-  * 1 FETCH (BODY[] {12}",
        "<-  [literal: 1 line, 12 bytes]",
        "<-  )",
        "<-  A2 OK Fetch completed (… secs).",
        "=== connection closed",
    ]
    exact = text_of(transcript, reveal=True, full_data=True, timings=True)
    assert ' -> A1 LOGIN bob@example.org "pw"' in exact
    assert "<-  Subject: x" in exact
    assert "<-  A2 OK Fetch completed (0.001 + 0.000 + 0.002 secs)." in exact


def test_imap_client_literal_and_authenticate_continuation():
    recorded = chunks(
        ("client", b"A1 AUTHENTICATE PLAIN\r\n"),
        ("server", b"+ \r\n"),
        ("client", b"AGJvYgBwdw==\r\n"),
        ("server", b"A1 OK Logged in\r\n"),
        ("client", b"A2 APPEND INBOX {5}\r\n"),
        ("server", b"+ OK\r\n"),
        ("client", b"hello\r\n"),
        ("server", b"A2 OK Append completed.\r\n"),
        ("close", b""),
    )
    lines = text_of(parse_retrieval("imap", "c", "s", recorded))
    assert lines[1:10] == [
        " -> A1 AUTHENTICATE PLAIN",
        "<-  + ",
        " -> ********",
        "<-  A1 OK Logged in",
        " -> A2 APPEND INBOX {5}",
        "<-  + OK",
        " -> [literal: 1 line, 5 bytes]",
        "<-  A2 OK Append completed.",
        "=== connection closed",
    ]


# --- a real Dovecot -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mail_lab():
    if find_dovecot() is None:
        pytest.skip("dovecot is not installed (apt install dovecot-imapd dovecot-pop3d)")
    with Lab(name="test-retrieval", retrieval=True) as lab:
        for subject in ("First", "Second"):
            result = lab.send(
                "alice@example.com",
                "bob@example.org",
                subject,
                "Hi Bob\n.\n",
                via="mx1.example.org",
            )
            assert result.ok
        yield lab


def test_describe_lists_pop3_and_imap_with_their_host_names(mail_lab):
    roles = {s["role"]: s for s in mail_lab.describe()["servers"]}
    assert {r: roles[r]["host"] for r in ("imap", "imaps", "pop3", "pop3s")} == {
        "imap": "imap.example.com",
        "imaps": "imap.example.com",
        "pop3": "pop.example.com",
        "pop3s": "pop.example.com",
    }
    assert all(isinstance(roles[r]["port"], int) and roles[r]["address"] == LOOPBACK for r in roles)
    assert "imap        imap.example.com" in mail_lab.table(ports=False)
    assert [r.value for r in mail_lab.dns.records("imap.example.com")] == [LOOPBACK]


def test_imap_with_starttls_fetches_what_smtp_delivered(mail_lab):
    result = mail_lab.fetch("bob@example.org", "imap")
    assert result.ok, result.error
    assert [m.subject for m in result] == ["First", "Second"]
    stored = [m.raw for m in mail_lab.mailbox("bob@example.org")]
    assert [m.raw for m in result] == stored
    lines = text_of(result.transcript)
    assert lines[0] == "=== client.example.com connected to imap.example.com"
    assert " -> A1 STARTTLS" in lines
    starttls = lines.index(" -> A1 STARTTLS")
    assert lines[starttls + 2].startswith("=== TLS started: TLS")
    assert " -> A3 LOGIN bob@example.org ********" in lines
    assert "<-  * OK [UIDVALIDITY 1] UIDs valid" in lines
    assert "bob-lab-pw" not in str(result)
    assert [m.key for m in result] == ["1", "2"]


def test_pop3_over_implicit_tls(mail_lab):
    result = mail_lab.fetch("bob@example.org", "pop3", tls="implicit")
    assert result.ok, result.error
    lines = text_of(result.transcript)
    assert lines[1].startswith("=== TLS started:")
    assert lines[2] == "<-  +OK pop.example.com POP3 server ready"
    assert " -> PASS ********" in lines
    assert [m.body for m in result] == ["Hi Bob\n.\n", "Hi Bob\n.\n"]


def test_transcripts_are_the_same_on_every_run(mail_lab):
    first = mail_lab.fetch("bob@example.org", "imap", tls="none")
    second = mail_lab.fetch("bob@example.org", "imap", tls="none")
    assert str(first) == str(second)


def test_a_wrong_password_is_reported_with_the_transcript(mail_lab):
    for protocol, refusal in (("imap", "A3 NO [AUTHENTICATIONFAILED]"), ("pop3", "-ERR [AUTH]")):
        result = mail_lab.fetch("bob@example.org", protocol, password="not-it")
        assert not result.ok and len(result) == 0
        assert any(line.startswith(f"<-  {refusal}") for line in text_of(result.transcript))
        assert "not-it" not in str(result)


def test_the_certificate_names_the_host_and_only_the_lab_ca_is_trusted(mail_lab):
    port = mail_lab.mailstore.listeners["imaps"].port
    stranger = ssl.create_default_context()  # the system's CAs, not the lab's
    result = fetch_mailbox(
        "imap.example.com", port, "bob@example.org", "bob-lab-pw", tls="implicit", context=stranger
    )
    assert not result.ok and "CERTIFICATE_VERIFY_FAILED" in result.error
    wrong_name = fetch_mailbox(
        "mail.example.net",
        port,
        "bob@example.org",
        "bob-lab-pw",
        tls="implicit",
        context=mail_lab.ca.client_context(),
    )
    assert not wrong_name.ok and "mail.example.net" in wrong_name.error


def test_pop3_delete_empties_the_mailbox_only_at_quit(mail_lab):
    mail_lab.send("alice@example.com", "carol@example.org", "For Carol", "x", via="mx1.example.org")
    assert len(mail_lab.mailbox("carol@example.org")) == 1
    result = mail_lab.fetch("carol@example.org", "pop3", delete=True)
    assert result.ok and [m.subject for m in result] == ["For Carol"]
    lines = text_of(result.transcript)
    assert lines.index(" -> DELE 1") < lines.index(" -> QUIT")
    assert len(mail_lab.mailbox("carol@example.org")) == 0
    assert len(mail_lab.fetch("carol@example.org", "imap")) == 0


def test_fetch_needs_the_mailstore():
    with Lab(name="test-no-retrieval") as lab:
        assert {s["role"] for s in lab.describe()["servers"]} == {"submission", "submissions", "mx"}
        with pytest.raises(RuntimeError, match=r"Lab\(retrieval=True\)"):
            lab.fetch("bob@example.org")


def test_without_dovecot_auto_skips_and_true_explains(monkeypatch):
    monkeypatch.setattr(dovecot_module, "find_dovecot", lambda: None)
    with Lab(name="test-auto", retrieval="auto") as lab:
        assert lab.mailstore is None
        assert "dovecot-imapd" in lab.mailstore_unavailable
        assert "imap" not in {s["role"] for s in lab.describe()["servers"]}
    with pytest.raises(MailstoreUnavailable, match="dovecot was not found"):
        Lab(name="test-required", retrieval=True)


@needs_dovecot
def test_stop_stops_dovecot_and_removes_its_folder():
    lab = Lab(name="test-stop", retrieval=True)
    store = lab.mailstore
    port = store.listeners["imap"].port
    master = int((store.folder / "run" / "master.pid").read_text())
    lab.stop()
    assert not store.folder.exists() and not store.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((LOOPBACK, port), timeout=2).close()
    assert not _alive(master)


@needs_dovecot
def test_a_new_lab_of_the_same_name_replaces_the_old_dovecot():
    first = Lab(name="test-rerun", retrieval=True)
    folder = first.mailstore.folder
    second = Lab(name="test-rerun", retrieval=True)
    try:
        assert not folder.exists() and second.mailstore.running
    finally:
        second.stop()


@needs_dovecot
def test_a_kept_root_keeps_uids_and_flags_across_restarts():
    root = Path(tempfile.mkdtemp(prefix="smtplab-test-root-"))  # every user may pass /tmp
    try:
        with Lab(name="test-keep", root=root, retrieval=True) as lab:
            lab.send("alice@example.com", "bob@example.org", "Kept", "x", via="mx1.example.org")
            assert lab.fetch("bob@example.org", "pop3").ok  # POP3 RETR marks it \Seen
        with Lab(name="test-keep", root=root, retrieval=True) as lab:
            (message,) = lab.fetch("bob@example.org", "imap")
            assert (message.subject, message.key, message.flags) == ("Kept", "1", ("\\Seen",))
    finally:
        shutil.rmtree(root)


@pytest.mark.skipif(os.getuid() != 0, reason="only root hands the Maildirs to 'nobody'")
def test_as_root_a_folder_nobody_may_enter_is_named(tmp_path):
    closed = tmp_path / "closed"
    (closed / "lab").mkdir(parents=True)
    closed.chmod(0o700)
    assert dovecot_conf._blocked_folder(closed / "lab", 65534, 65534) == closed
    assert dovecot_conf._blocked_folder(Path("/tmp"), 65534, 65534) is None


@needs_dovecot
def test_dovecot_stops_when_the_process_that_started_it_is_killed(tmp_path):
    script = textwrap.dedent(
        """
        import json, sys
        from smtplab import Lab
        lab = Lab(name="orphan-test", retrieval=True)
        print(json.dumps({"folder": str(lab.mailstore.folder), "root": str(lab.root)}), flush=True)
        sys.stdin.read()
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        started = json.loads(child.stdout.readline())
        folder = Path(started["folder"])
        master = int((folder / "run" / "master.pid").read_text())
        assert _alive(master)
        child.send_signal(signal.SIGKILL)  # no atexit, no lab.stop(): only the watchdog is left
        child.wait()
    try:
        wait_until(lambda: not _alive(master), timeout=15)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(started["root"], ignore_errors=True)


def test_apt_txt_and_ci_install_dovecot():
    apt = (ROOT / "apt.txt").read_text().split()
    assert {"dovecot-imapd", "dovecot-pop3d"} <= set(apt)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "dovecot-imapd" in ci and "dovecot-pop3d" in ci


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_the_lab_view_lists_pop3_and_imap_beside_smtp(mail_lab):
    page = mail_lab._repr_html_()
    for role, host in [
        ("mx", "mx1.example.org"),
        ("imap", "imap.example.com"),
        ("pop3s", "pop.example.com"),
    ]:
        assert f"<td>{role}</td><td>{host}</td>" in page
    smtp, listeners = len(mail_lab.servers), len(mail_lab.mailstore.listeners)
    assert repr(mail_lab) == f"<Lab {mail_lab.name!r}: {smtp + listeners} servers>"
    assert page.startswith(f"<b>{html.escape(repr(mail_lab))}</b>")
