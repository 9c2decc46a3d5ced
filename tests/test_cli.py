"""`smtplab up` drives a real lab that real clients (swaks) can use."""

from __future__ import annotations

import json
import mailbox
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


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


@pytest.mark.skipif(
    shutil.which("swaks") is None, reason="swaks is not installed (apt install swaks)"
)
def test_swaks_delivers_through_the_lab(lab_process):
    _, described = lab_process
    mx1 = next(s for s in described["servers"] if s["host"] == "mx1.example.org")
    bob = next(u for u in described["users"] if u["address"] == "bob@example.org")
    sent = subprocess.run(
        [
            "swaks",
            "--server",
            f"127.0.0.1:{mx1['port']}",
            "--from",
            "alice@example.com",
            "--to",
            "bob@example.org",
            "--helo",
            "swaks.example.net",
            "--header",
            "Subject: via swaks",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "<-  250 2.0.0 Ok: queued as" in sent.stdout
    box = mailbox.Maildir(Path(bob["maildir"]), create=False)
    wait_for(lambda: len(box) == 1)
    assert next(iter(box))["Subject"] == "via swaks"


@pytest.mark.skipif(
    shutil.which("swaks") is None, reason="swaks is not installed (apt install swaks)"
)
def test_relaying_through_the_cli_lab_is_refused(lab_process):
    _, described = lab_process
    mx1 = next(s for s in described["servers"] if s["host"] == "mx1.example.org")
    sent = subprocess.run(
        [
            "swaks",
            "--server",
            f"127.0.0.1:{mx1['port']}",
            "--from",
            "alice@example.com",
            "--to",
            "someone@elsewhere.net",
            "--helo",
            "swaks.example.net",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert sent.returncode != 0
    assert "554 5.7.1" in sent.stdout


def test_sigterm_stops_cleanly_and_removes_the_lab_folder(lab_process):
    process, described = lab_process
    maildir = Path(described["users"][0]["maildir"])
    assert maildir.exists()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    assert not maildir.exists()
