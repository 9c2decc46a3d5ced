"""The `smtplab` command: a real lab that real clients (swaks, curl, smtplib) can use."""

from __future__ import annotations

import argparse
import contextlib
import json
import mailbox
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from datetime import UTC, datetime
from email.utils import make_msgid, parsedate_to_datetime
from pathlib import Path

import pytest
import trustme
from peers.smtp import wait_until

from smtplab import Lab
from smtplab.cli import CLIError, build_parser, load_world, world_from_data
from smtplab.queue.spool import NotAnEntry, Spool
from smtplab.smtp.client import LabSMTP
from smtplab.world import SMTP_ROLES


@pytest.fixture
def lab_process():
    with subprocess.Popen(
        [sys.executable, "-m", "smtplab.cli", "up", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as process:
        try:
            yield process, json.loads(process.stdout.readline())
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=10)


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
needs_swaks = pytest.mark.skipif(
    shutil.which("swaks") is None, reason="swaks is not installed (apt install swaks)"
)


def swaks(port: int, to: str, *options: str) -> subprocess.CompletedProcess[str]:
    """Send one message from alice@example.com with swaks, a real SMTP client."""
    return subprocess.run(
        [
            "swaks",
            "--server",
            f"127.0.0.1:{port}",
            "--from",
            "alice@example.com",
            "--to",
            to,
            "--helo",
            "swaks.example.net",
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def curl(url: str, message: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """Send ``message`` from alice@example.com to bob@example.org with curl, over SMTP."""
    return subprocess.run(
        [
            *("curl", "--silent", "--show-error", "--url", url, *options),
            *("--mail-from", "alice@example.com", "--mail-rcpt", "bob@example.org"),
            *("--upload-file", str(message)),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_up_json_lists_servers_and_users(lab_process):
    _, described = lab_process
    roles = {(s["role"], s["host"]) for s in described["servers"]}
    assert ("mx", "mx1.example.org") in roles
    assert all(isinstance(s["port"], int) for s in described["servers"])
    assert {u["address"] for u in described["users"]} >= {"alice@example.com", "bob@example.org"}


@needs_swaks
def test_swaks_delivers_through_the_lab(lab_process):
    _, described = lab_process
    bob = user(described, "bob@example.org")
    sent = swaks(
        server(described, "mx", "mx1.example.org")["port"],
        "bob@example.org",
        "--header",
        "Subject: via swaks",
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "<-  250 2.0.0 Ok: queued as" in sent.stdout
    box = mailbox.Maildir(Path(bob["maildir"]), create=False)
    wait_until(lambda: len(box) == 1)
    assert next(iter(box))["Subject"] == "via swaks"


@needs_swaks
def test_relaying_through_the_cli_lab_is_refused(lab_process):
    _, described = lab_process
    sent = swaks(server(described, "mx", "mx1.example.org")["port"], "someone@elsewhere.net")
    assert sent.returncode != 0
    assert "550 5.7.1" in sent.stdout


def test_sigterm_stops_cleanly_and_removes_the_lab_folder(lab_process):
    process, described = lab_process
    maildir = Path(described["users"][0]["maildir"])
    assert maildir.exists()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    assert not maildir.exists()


# --- the complete CLI: state file, send, fetch, dns, queue, --root, --world --------------------

CLI = [sys.executable, "-m", "smtplab.cli"]


def run_cli(*args, env=None):
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, timeout=60, env=env
    )


@contextlib.contextmanager
def running_lab(*args):
    """`smtplab up --json ARGS` in a subprocess; yields its JSON; SIGTERM at the end."""
    with subprocess.Popen(
        [*CLI, "up", "--json", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as process:
        try:
            yield json.loads(process.stdout.readline())
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def cli_lab():
    """One lab for the client tests; its root is under /tmp so that Dovecot may read it."""
    root = Path(tempfile.mkdtemp(prefix="smtplab-test-cli-"))
    try:
        with running_lab("--root", root) as described:
            yield described
    finally:
        shutil.rmtree(root, ignore_errors=True)


def server(described, role, host=None):
    for s in described["servers"]:
        if s["role"] == role and host in (None, s["host"]):
            return s
    pytest.skip(f"this lab has no {role} server (is Dovecot installed?)")


def user(described, address):
    return next(u for u in described["users"] if u["address"] == address)


def subjects(described, address):
    """Subjects in delivery order (the lab's Maildir keys sort in delivery order)."""
    box = mailbox.Maildir(Path(user(described, address)["maildir"]), create=False)
    return [box[key]["Subject"] for key in sorted(box.keys())]


def wait_for_subject(described, address, subject):
    wait_until(lambda: subject in subjects(described, address))


def test_up_writes_its_json_to_a_state_file(lab_process):
    _, described = lab_process
    state = Path(described["state"])
    assert state == Path(described["root"]) / "lab.json"
    assert json.loads(state.read_text()) == described


def test_send_submits_with_starttls_and_auth_and_prints_the_transcript(cli_lab):
    sent = run_cli(
        "send",
        "--lab",
        cli_lab["state"],
        "--from",
        "alice@example.com",
        "--to",
        "bob@example.org",
        "--subject",
        "via smtplab send",
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    lines = sent.stdout.splitlines()
    assert lines[0] == "=== client.example.com connected to smtp.example.com"
    assert " -> STARTTLS" in lines and " -> AUTH PLAIN ********" in lines
    assert any(line.startswith("=== TLS started: TLS") for line in lines)
    assert "alice-lab-pw" not in sent.stdout
    assert lines[-1].startswith("bob@example.org: 250 2.0.0 Ok: queued as")
    wait_for_subject(cli_lab, "bob@example.org", "via smtplab send")


def test_send_reports_a_refusal_with_exit_status_1(cli_lab):
    sent = run_cli(
        "send",
        "--root",
        cli_lab["root"],
        "--via",
        "mx1.example.org",
        "--from",
        "alice@example.com",
        "--to",
        "someone@elsewhere.net",
    )
    assert sent.returncode == 1
    assert "someone@elsewhere.net: 550 5.7.1" in sent.stdout


def test_commands_need_to_know_which_lab(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SMTPLAB_LAB"}
    sent = run_cli("send", "--from", "a@example.com", "--to", "b@example.org", env=env)
    assert sent.returncode == 2 and "which lab?" in sent.stderr
    gone = run_cli("dns", "--root", tmp_path)
    assert gone.returncode == 2 and "is `smtplab up` running?" in gone.stderr


def test_dns_lists_the_zones_and_answers_queries(cli_lab):
    listed = run_cli("dns", "--lab", cli_lab["state"])
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert ["example.org.", "300", "IN", "MX", "10", "mx1.example.org."] in rows
    assert ["mx1.example.org.", "300", "IN", "A", "127.0.0.1"] in rows
    mx = run_cli("dns", "--lab", cli_lab["state"], "example.org", "mx")
    assert [line.split()[-2:] for line in mx.stdout.splitlines()] == [
        ["10", "mx1.example.org."],
        ["20", "mx2.example.org."],
    ]
    missing = run_cli("dns", "--lab", cli_lab["state"], "nowhere.example.org", "MX")
    assert (missing.returncode, missing.stdout) == (
        1,
        "nowhere.example.org: NXDOMAIN (no MX records)\n",
    )
    elsewhere = run_cli("dns", "--lab", cli_lab["state"], "google.com", "MX")
    assert elsewhere.stdout == "google.com: REFUSED (outside the lab's zones)\n"


@needs_swaks
def test_swaks_submits_with_starttls_and_auth(cli_lab):
    password = user(cli_lab, "alice@example.com")["password"]
    sent = swaks(
        server(cli_lab, "submission")["port"],
        "bob@example.org",
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice@example.com",
        "--auth-password",
        password,
        "--header",
        "Subject: swaks submission",
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "<~  235 2.7.0 Authentication successful" in sent.stdout
    wait_for_subject(cli_lab, "bob@example.org", "swaks submission")


@needs_curl
def test_curl_sends_to_the_mx_and_submits_with_starttls(cli_lab, tmp_path):
    message = tmp_path / "message.eml"
    message.write_text("From: alice@example.com\nTo: bob@example.org\nSubject: curl\n\nHi\n")
    mx1 = server(cli_lab, "mx", "mx1.example.org")
    direct = curl(f"smtp://127.0.0.1:{mx1['port']}", message)
    assert direct.returncode == 0, direct.stderr
    submission = server(cli_lab, "submission")
    name, port = submission["host"], submission["port"]
    message.write_text(message.read_text().replace("Subject: curl", "Subject: curl submission"))
    submitted = curl(
        f"smtp://{name}:{port}",
        message,
        *("--resolve", f"{name}:{port}:127.0.0.1", "--ssl-reqd", "--cacert", cli_lab["ca_cert"]),
        *("--user", f"alice@example.com:{user(cli_lab, 'alice@example.com')['password']}"),
    )
    assert submitted.returncode == 0, submitted.stderr
    wait_for_subject(cli_lab, "bob@example.org", "curl")
    wait_for_subject(cli_lab, "bob@example.org", "curl submission")


def test_python_smtplib_submits_to_the_cli_lab(cli_lab):
    submission = server(cli_lab, "submission")
    context = ssl.create_default_context(cafile=cli_lab["ca_cert"])
    with LabSMTP(submission["host"], submission["port"]) as smtp:
        smtp.starttls(context=context)
        smtp.login("alice@example.com", user(cli_lab, "alice@example.com")["password"])
        smtp.sendmail(
            "alice@example.com",
            ["carol@example.org"],
            b"From: alice@example.com\r\nSubject: smtplib\r\n\r\nHi Carol\r\n",
        )
    wait_for_subject(cli_lab, "carol@example.org", "smtplib")


@needs_curl
def test_curl_reads_the_mailbox_over_imap_and_pop3(cli_lab):
    imaps, pop3s = server(cli_lab, "imaps"), server(cli_lab, "pop3s")
    imap, pop3 = server(cli_lab, "imap"), server(cli_lab, "pop3")
    mx1 = server(cli_lab, "mx", "mx1.example.org")
    with LabSMTP("mx1.example.org", mx1["port"]) as smtp:
        smtp.sendmail("alice@example.com", ["bob@example.org"], b"Subject: for curl\r\n\r\nHi\r\n")
    wait_for_subject(cli_lab, "bob@example.org", "for curl")
    uid = subjects(cli_lab, "bob@example.org").index("for curl") + 1  # Dovecot's UIDs: that order
    login = f"bob@example.org:{user(cli_lab, 'bob@example.org')['password']}"

    def curl(url, *extra):
        done = subprocess.run(
            ["curl", "--silent", "--show-error", "--user", login, "--url", url, *extra],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def tls(listener):
        name, port = listener["host"], listener["port"]
        return f"{name}:{port}", [
            "--resolve",
            f"{name}:{port}:127.0.0.1",
            "--cacert",
            cli_lab["ca_cert"],
        ]

    where, options = tls(imaps)
    assert "Subject: for curl" in curl(f"imaps://{where}/INBOX;UID={uid}", *options)
    where, options = tls(pop3s)
    assert "Subject: for curl" in curl(f"pop3s://{where}/{uid}", *options)
    where, options = tls(imap)
    assert "Subject: for curl" in curl(f"imap://{where}/INBOX;UID={uid}", "--ssl-reqd", *options)
    listing = curl(f"pop3://127.0.0.1:{pop3['port']}/")
    assert listing.splitlines()[uid - 1].split()[0] == str(uid)


def test_smtplab_fetch_reads_a_mailbox(cli_lab):
    server(cli_lab, "imap")
    fetched = run_cli("fetch", "--lab", cli_lab["state"], "bob@example.org")
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert " -> A3 LOGIN bob@example.org ********" in fetched.stdout.splitlines()
    assert (
        "bob@example.org: " in fetched.stdout
        and "over IMAP from imap.example.com" in fetched.stdout
    )
    wrong = run_cli(
        "fetch",
        "--lab",
        cli_lab["state"],
        "bob@example.org",
        "--protocol",
        "pop3",
        "--password",
        "nope",
    )
    assert wrong.returncode == 1 and "-ERR [AUTH] Authentication failed." in wrong.stdout


WORLD = """\
# example.net's MX has no server: mail for it waits in the queue
[[domains]]
name = "example.com"
mx = [[10, "mx.example.com"]]
users = [{address = "alice@example.com", password = "alice-pw"}]

[[domains]]
name = "example.net"
mx = [[10, "mx.example.net"]]
users = [{address = "dave@example.net", password = "dave-pw"}]

[[servers]]
host = "smtp.example.com"
role = "submission"
domains = ["example.com"]

[[servers]]
host = "mx.example.com"
role = "mx"
domains = ["example.com"]
"""


def test_up_with_a_world_file_and_the_queue_it_holds(tmp_path):
    world = tmp_path / "world.toml"
    world.write_text(WORLD)
    with running_lab("--world", world, "--no-pop-imap") as described:
        assert [(s["role"], s["host"]) for s in described["servers"]] == [
            ("submission", "smtp.example.com"),
            ("mx", "mx.example.com"),
        ]
        assert [u["address"] for u in described["users"]] == [
            "alice@example.com",
            "dave@example.net",
        ]
        assert run_cli("queue", "--lab", described["state"]).stdout == "the queues are empty\n"
        sent = run_cli(
            "send",
            "--lab",
            described["state"],
            "--from",
            "alice@example.com",
            "--to",
            "dave@example.net",
            "--subject",
            "waiting",
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        listed = run_cli("queue", "--lab", described["state"], "--json")
        (entry,) = [json.loads(line) for line in listed.stdout.splitlines()]
        assert entry["server"] == "smtp.example.com" and entry["recipients"] == ["dave@example.net"]
        assert (entry["sender"], entry["subject"]) == ("alice@example.com", "waiting")
        shown = run_cli("queue", "--lab", described["state"]).stdout
        assert f"smtp.example.com {entry['qid']}" in shown and "    -> <dave@example.net>" in shown
        assert shown.endswith("1 message queued\n")
        mx = run_cli("dns", "--lab", described["state"], "example.net", "MX").stdout
        assert mx.split()[-2:] == ["10", "mx.example.net."]


def test_up_root_keeps_mail_across_two_runs(tmp_path):
    root = tmp_path / "lab"
    with running_lab("--root", root) as first:
        assert Path(first["root"]) == root and Path(first["state"]).exists()
        mx1 = server(first, "mx", "mx1.example.org")
        with LabSMTP("mx1.example.org", mx1["port"]) as smtp:
            smtp.sendmail("alice@example.com", ["bob@example.org"], b"Subject: kept\r\n\r\nHi\r\n")
        wait_for_subject(first, "bob@example.org", "kept")
    assert not (root / "lab.json").exists()
    assert run_cli("queue", "--root", root).stdout == "the queues are empty\n"
    with running_lab("--root", root) as second:
        assert (
            user(second, "bob@example.org")["maildir"] == user(first, "bob@example.org")["maildir"]
        )
        assert subjects(second, "bob@example.org") == ["kept"]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"servers": []}, "world.domains must be a list"),
        (
            {
                "domains": [{"name": "a.example"}],
                "servers": [{"host": "h.a.example", "role": "pop"}],
            },
            "servers[0].role: must be one of",
        ),
        (
            {
                "domains": [
                    {"name": "a.example", "users": [{"address": "x@b.example", "password": "p"}]}
                ],
                "servers": [],
            },
            "not in the domain a.example",
        ),
        (
            {"domains": [{"name": "a.example", "mx": [["10", "mx"]]}], "servers": []},
            "domains[0].mx[0]: the preference must be an integer",
        ),
    ],
)
def test_a_bad_world_file_is_explained(data, problem):
    with pytest.raises(CLIError, match=re.escape(problem)):
        world_from_data(data)


def test_world_files_in_json_and_toml_agree(tmp_path):
    toml_file = tmp_path / "world.toml"
    toml_file.write_text(WORLD)
    json_file = tmp_path / "world.json"
    json_file.write_text(json.dumps(tomllib.loads(WORLD)))
    assert load_world(toml_file) == load_world(json_file)
    assert load_world(toml_file).user("dave@example.net").password == "dave-pw"
    broken = tmp_path / "broken.toml"
    broken.write_text("domains = [")
    with pytest.raises(CLIError, match="not valid TOML"):
        load_world(broken)


# --- holding, queue events, fixed ports, the chapters' worlds ----------------------------------


class LabOutput:
    """`smtplab up ARGS` in a subprocess; its stdout lines, read as they come."""

    def __init__(self, *args: object, json_mode: bool = True):
        command = [*CLI, "up", *(["--json"] if json_mode else []), *map(str, args)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_until(lambda: self.lines or self.process.poll() is not None, timeout=60)
        self.described = json.loads(self.lines[0]) if json_mode and self.lines else None

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def events(self, step: str | None = None) -> list[dict]:
        found = [json.loads(line) for line in list(self.lines[1:]) if line.startswith("{")]
        return [e for e in found if e["event"] == "queue" and step in (None, e["step"])]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(timeout=30)
        self._reader.join(timeout=10)
        self.process.stdout.close()
        self.errors = self.process.stderr.read()
        self.process.stderr.close()
        assert status == 0, self.errors

    def __enter__(self) -> LabOutput:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def submit(described, subject: str, to: str = "bob@example.org") -> str:
    """Alice submits one message over STARTTLS and AUTH, as a mail program does; its
    Message-ID."""
    message_id = make_msgid(domain="example.com")
    submission = server(described, "submission")
    context = ssl.create_default_context(cafile=described["ca_cert"])
    with LabSMTP(submission["host"], submission["port"]) as smtp:
        smtp.starttls(context=context)
        smtp.login("alice@example.com", user(described, "alice@example.com")["password"])
        head = f"From: alice@example.com\r\nTo: {to}\r\nSubject: {subject}\r\n"
        message = f"{head}Message-ID: {message_id}\r\n\r\nHi\r\n"
        smtp.sendmail("alice@example.com", [to], message.encode())
    return message_id


def queued(root: Path) -> list[dict]:
    listed = run_cli("queue", "--root", root, "--json")
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line) for line in listed.stdout.splitlines()]


SHORT_RETRY = ("--retry-first", "0.1", "--retry-attempts", "2", "--retry-age", "0.5")


def test_a_restart_delivers_every_held_message_exactly_once(tmp_path):
    root = tmp_path / "lab"
    subjects_sent = [f"held {n}" for n in range(5)]
    with LabOutput("--root", root, "--hold", "--no-pop-imap", *SHORT_RETRY) as first:
        for subject in subjects_sent:
            submit(first.described, subject)
        sent_at = time.time()
        wait_until(lambda: len(first.events("held")) == 5)
        wait_until(lambda: time.time() > sent_at + 2 * 0.5)  # past the queue's maximum age
        entries = queued(root)
        assert sorted(e["subject"] for e in entries) == subjects_sent
        assert all(e["held"] and e["attempts"] == 0 for e in entries)
        assert "held" in run_cli("queue", "--root", root).stdout
        assert first.events("attempt") == first.events("bounced") == []
    assert len(queued(root)) == 5  # the lab is down: the spool keeps them
    with LabOutput("--root", root, "--hold", "--no-pop-imap", *SHORT_RETRY) as second:
        wait_until(lambda: len(second.events("held")) == 5)  # reported again, still held
        assert subjects(second.described, "bob@example.org") == []
        assert second.events("attempt") == []
    with LabOutput("--root", root, "--no-pop-imap", *SHORT_RETRY) as third:
        wait_until(lambda: len(third.events("delivered")) == 5)
        assert len(third.events("released")) == 5
        assert sorted(subjects(third.described, "bob@example.org")) == subjects_sent
        assert third.events("bounced") == []
        wait_until(lambda: queued(root) == [])
    assert sorted(subjects(third.described, "bob@example.org")) == subjects_sent  # exactly once


def write_world(tmp_path: Path) -> Path:
    world = tmp_path / "world.toml"
    world.write_text(WORLD)
    return world


def test_up_prints_queue_events_as_json_lines(tmp_path):
    with LabOutput("--world", write_world(tmp_path), "--no-pop-imap", *SHORT_RETRY) as lab:
        message_id = submit(lab.described, "to nowhere", to="dave@example.net")
        wait_until(lambda: lab.events("delivered"))  # the bounce, back at alice's MX

        def steps(qid):
            return [e["step"] for e in lab.events() if e["qid"] == qid]

        assert steps("000001-1") == ["queued", "retry", "bounced", "dsn"]
        assert steps("000002-1") == ["queued", "attempt", "delivered"]  # the bounce to alice
        (retry,) = lab.events("retry")
        assert (retry["host"], retry["recipients"]) == ("smtp.example.com", ["dave@example.net"])
        assert retry["text"].startswith(
            "attempt 1 failed (451 4.4.4 No MX host of example.net has an address; will retry)"
        )
        assert retry["message_id"] == message_id
        assert datetime.fromisoformat(retry["retry_at"]) >= datetime.fromisoformat(retry["time"])
        (bounced,) = lab.events("bounced")
        assert bounced["recipients"] == ["dave@example.net"]
        connections = [json.loads(line) for line in lab.lines[1:] if '"connection"' in line]
        assert connections and connections[0]["transcript"].startswith("=== ")
        assert all(line.startswith("{") for line in lab.lines)  # every line is JSON


def test_up_prints_queue_events_as_text(tmp_path):
    with LabOutput(
        "--world", write_world(tmp_path), "--no-pop-imap", *SHORT_RETRY, json_mode=False
    ) as lab:
        wait_until(lambda: any(line.startswith("state file ") for line in lab.lines))
        state = next(line.split()[2] for line in lab.lines if line.startswith("state file "))
        described = json.loads(Path(state).read_text())
        submit(described, "to nowhere", to="dave@example.net")
        wait_until(lambda: any(" bounced: " in line for line in lab.lines))
    events = [line for line in lab.lines if " queue smtp.example.com " in line]
    pattern = (
        r"\d\d:\d\d:\d\d queue smtp\.example\.com 000001-1 retry: attempt 1 failed "
        r"\(451 4\.4\.4 .*\); retry in 0\.1 s \(at \d\d:\d\d:\d\d\) <dave@example\.net>"
    )
    assert any(re.fullmatch(pattern, line) for line in events), events
    queued_line = r".* 000001-1 queued: queued as 000001-1 for example\.net <dave@example\.net>"
    assert any(re.fullmatch(queued_line, line) for line in events)
    assert any(" 000001-1 bounced: 451 4.4.4 " in line for line in events)


def free_port_base(count: int = 10) -> int:
    """A base with ``count`` ports free right now (TCP and UDP) on 127.0.0.1."""
    for base in range(20000 + os.getpid() % 1000 * 10, 60000, count):
        try:
            with contextlib.ExitStack() as held:
                for port in range(base, base + count):
                    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                        probe = held.enter_context(socket.socket(socket.AF_INET, kind))
                        probe.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    pytest.skip("no ten free ports in a row")


def test_port_base_gives_every_server_a_fixed_port_and_names_a_taken_one(tmp_path):
    base = free_port_base()
    order = ["smtp.example.com", "smtps.example.com", "mx.example.com"]
    order += ["mx1.example.org", "mx2.example.org"]
    for _run in range(2):  # the same ports on every start
        with running_lab("--root", tmp_path / "lab", "--port-base", base) as described:
            smtp = [s for s in described["servers"] if s["role"] in SMTP_ROLES]
            assert [(s["host"], s["port"]) for s in smtp] == [
                (host, base + n) for n, host in enumerate(order)
            ]
            assert described["dns"]["port"] == base + 5
            mailstore = [s for s in described["servers"] if s["role"] not in SMTP_ROLES]
            assert [(s["role"], s["port"]) for s in mailstore] in (
                [],  # no Dovecot here
                [("imap", base + 6), ("imaps", base + 7), ("pop3", base + 8), ("pop3s", base + 9)],
            )
            mx = run_cli("dns", "--lab", described["state"], "example.org", "MX")
            assert mx.returncode == 0  # the DNS answers on its fixed port
    with socket.create_server(("127.0.0.1", base + 3)):  # someone else has mx1's port
        refused = run_cli("up", "--root", tmp_path / "lab", "--port-base", base)
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        f"smtplab up: port {base + 3} (mx1.example.org) is in use: Address already in use; "
        "pick another --port-base"
    ]
    assert refused.stdout == ""
    too_high = run_cli("up", "--port-base", 65530)
    assert too_high.returncode == 2 and "a port base must be 1 to 65526" in too_high.stderr


def test_up_authenticity_signs_with_dkim_and_the_mx_adds_authentication_results(tmp_path):
    with running_lab("--root", tmp_path / "lab", "--authenticity", "--no-pop-imap") as described:
        sent = run_cli(
            *("send", "--lab", described["state"], "--from", "alice@example.com"),
            *("--to", "bob@example.org", "--subject", "signed"),
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        wait_for_subject(described, "bob@example.org", "signed")
        box = mailbox.Maildir(Path(user(described, "bob@example.org")["maildir"]), create=False)
        (message,) = list(box)
    assert "d=example.com" in message["DKIM-Signature"]
    results = message["Authentication-Results"]
    assert results.startswith("mx1.example.org;")
    assert "spf=pass" in results and "dkim=pass" in results and "dmarc=pass" in results


def test_send_via_takes_smtp_servers_only(cli_lab):
    server(cli_lab, "imap")
    sent = run_cli(
        *("send", "--lab", cli_lab["state"], "--via", "imap.example.com"),
        *("--from", "alice@example.com", "--to", "bob@example.org"),
    )
    assert sent.returncode == 2 and sent.stdout == ""
    assert sent.stderr.splitlines() == [
        "smtplab send: --via takes a lab SMTP server, not 'imap.example.com': mx.example.com, "
        "mx1.example.org, mx2.example.org, smtp.example.com, smtps.example.com"
    ]


def received_date(described, subject: str) -> datetime:
    wait_for_subject(described, "bob@example.org", subject)
    box = mailbox.Maildir(Path(user(described, "bob@example.org")["maildir"]), create=False)
    message = next(m for m in box if m["Subject"] == subject)
    return parsedate_to_datetime(message["Received"].rpartition(";")[2].strip())


def test_up_dates_headers_with_the_real_time_unless_asked_for_the_fixed_clock(tmp_path):
    for flags, expect_real in (((), True), (("--fixed-clock",), False)):
        with running_lab("--root", tmp_path / str(expect_real), "--no-pop-imap", *flags) as lab:
            before = datetime.now(UTC).replace(microsecond=0)
            submit(lab, "dated")
            stamp = received_date(lab, "dated")
            if expect_real:
                assert before <= stamp <= datetime.now(UTC)
            else:
                assert stamp.isoformat().startswith("2026-11-02T09:00:")


def all_options(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                yield from ((f"{name} {o}", h) for o, h in all_options(command))
        elif not isinstance(action, argparse._HelpAction):
            yield "/".join(action.option_strings) or action.dest, action.help or ""


def test_every_option_has_one_line_of_help_with_its_default():
    shown = run_cli("--help")
    assert shown.returncode == 0 and "``" not in shown.stdout
    for option, text in all_options(build_parser()):
        assert text and "\n" not in text, f"{option} has no help"
        assert (
            "default" in text
            or "required" in text
            or option.split()[-1]
            in (
                "address",  # positional arguments say what they are
                "name",
                "type",
            )
        ), f"{option}: {text!r} does not say its default"
    for command in ("up", "send", "fetch", "dns", "queue"):
        helped = run_cli(command, "--help")
        assert helped.returncode == 0 and "``" not in helped.stdout


# --- the README's client examples, run as they are written -------------------------------------

README = Path(__file__).resolve().parents[1] / "README.md"
README_ROOT, README_BASE = "/tmp/smtplab", 2525


def readme_example(name: str) -> str:
    """The ```sh block after ``<!-- example: NAME -->`` in the README."""
    found = re.search(rf"<!-- example: {name} -->\n```sh\n(.*?)```", README.read_text(), re.S)
    assert found, f"the README has no example {name!r}"
    return found.group(1)


def here(script: str, root: Path, base: int) -> str:
    """The README's script for this lab: its root instead of /tmp/smtplab, its ports."""
    script = script.replace(README_ROOT, str(root))
    return re.sub(r"\b25(2[5-9]|3[0-4])\b", lambda m: str(base + int(m[0]) - README_BASE), script)


@pytest.fixture(scope="module")
def readme_lab():
    root = Path(tempfile.mkdtemp(prefix="smtplab-test-readme-"))
    base = free_port_base()
    program, *args = shlex.split(here(readme_example("up"), root, base))
    assert program == "smtplab" and args[0] == "up"
    try:
        with running_lab(*args[1:]) as described:
            yield described, root, base
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bash(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("client", ["swaks", "curl", "msmtp"])
def test_the_readme_client_examples_submit_with_verification_on(readme_lab, client, tmp_path):
    if shutil.which(client) is None:
        pytest.skip(f"{client} is not installed (apt install {client})")
    described, root, base = readme_lab
    script = here(readme_example(client), root, base)
    sent = bash(script, tmp_path)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    wait_for_subject(described, "bob@example.org", f"Hello from {client}")
    # Verification is on: a certificate from another CA is refused ...
    stranger = tmp_path / "another-ca.pem"
    trustme.CA().cert_pem.write_to_path(stranger)
    assert bash(script.replace(described["ca_cert"], str(stranger)), tmp_path).returncode != 0
    if client != "swaks":  # ... and (swaks 20201014 cannot check it) so is a wrong host name
        wrong = script.replace("smtp.example.com", "mx1.example.org")
        assert bash(wrong, tmp_path).returncode != 0
    assert subjects(described, "bob@example.org").count(f"Hello from {client}") == 1


def test_the_queue_listing_reads_a_running_spool_without_changing_it(tmp_path):
    """`smtplab queue` reads the spool with Spool.stored and Spool.read: every entry with its
    message, and a file that is no entry named, but left where it is (a running queue's own
    business)."""
    with Lab(name="test-spool-look", root=tmp_path, hold=True) as lab:
        lab.send("alice@example.com", "bob@example.org", "Held", "x")
        folder = lab.root / "spool" / "smtp.example.com"
        (folder / "queue" / "ZZZZZZ").write_bytes(b"not json\nmessage")
        stored = Spool.stored(folder)
        assert [path.name for path in stored][-1] == "ZZZZZZ"
        entry, message = Spool.read(stored[0])
        assert entry.sender == "alice@example.com" and b"Subject: Held" in message
        with pytest.raises(NotAnEntry):
            Spool.read(stored[1])
        assert (folder / "queue" / "ZZZZZZ").exists() and not (folder / "corrupt").exists()
