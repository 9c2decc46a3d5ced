"""The `smtplab` command: a real lab that real clients (swaks, curl, smtplib) can use."""

from __future__ import annotations

import contextlib
import json
import mailbox
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import pytest

from smtplab.cli import CLIError, load_world, world_from_data
from smtplab.tlsca import LabSMTP


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


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.02)


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
    wait_for(lambda: len(box) == 1)
    assert next(iter(box))["Subject"] == "via swaks"


@needs_swaks
def test_relaying_through_the_cli_lab_is_refused(lab_process):
    _, described = lab_process
    sent = swaks(server(described, "mx", "mx1.example.org")["port"], "someone@elsewhere.net")
    assert sent.returncode != 0
    assert "554 5.7.1" in sent.stdout


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
    wait_for(lambda: subject in subjects(described, address))


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
    assert "someone@elsewhere.net: 554 5.7.1" in sent.stdout


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
    missing = run_cli("dns", "--lab", cli_lab["state"], "nowhere.example.net", "MX")
    assert missing.returncode == 1 and "NXDOMAIN" in missing.stdout


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
        ({"servers": []}, "'domains' must be a list"),
        (
            {"domains": [{"name": "a.example"}], "servers": [{"host": "h", "role": "pop"}]},
            "role must",
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
            "[preference, host]",
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
