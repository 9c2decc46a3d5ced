"""The `smtplab` command never blocks, never hangs and never shows a traceback (issue 16,
items 9 to 11): a reader who stops reading `smtplab up`, topology files with mistakes,
and bad input to every subcommand and option. Every case runs the real command."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import ssl
import subprocess
import sys
import termios
import time
from email.utils import make_msgid
from pathlib import Path

import pytest

from smtplab import InvalidInput, Lab
from smtplab.printer import LinePrinter
from smtplab.tlsca import LabSMTP
from smtplab.world import Domain, ServerSpec, User, World, default_world

CLI = [sys.executable, "-m", "smtplab.cli"]
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ from Python 3.10 on Linux; spelled out for clarity


def submit(described: dict, subject: str) -> None:
    """Alice submits one message to bob over STARTTLS and AUTH; returns once it got 250."""
    submission = next(s for s in described["servers"] if s["role"] == "submission")
    alice = next(u for u in described["users"] if u["address"] == "alice@example.com")
    context = ssl.create_default_context(cafile=described["ca_cert"])
    with LabSMTP(submission["host"], submission["port"]) as smtp:
        smtp.starttls(context=context)
        smtp.login(alice["address"], alice["password"])
        message = (
            f"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: {subject}\r\n"
            f"Message-ID: {make_msgid(domain='example.com')}\r\n\r\nHi\r\n"
        )
        smtp.sendmail("alice@example.com", ["bob@example.org"], message.encode())


def unread_bytes(fd: int) -> int:
    """How many bytes wait in the pipe ``fd`` reads from (FIONREAD)."""
    return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder)


# -- item 9: a reader who stops reading ------------------------------------------------------------
def test_up_json_whose_stdout_is_not_read_stops_on_sigterm_and_loses_nothing(tmp_path):
    """Before: once the pipe was full the main thread blocked in print, SIGTERM was never
    acted on (still running after the deadline) and the events piled up in memory."""
    root = tmp_path / "lab"
    command = [*CLI, "up", "--json", "--root", str(root), "--no-pop-imap"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        fcntl.fcntl(process.stdout, F_SETPIPE_SZ, 4096)  # one page: full after a few lines
        described = json.loads(process.stdout.readline())  # and never read again
        subjects = [f"unread {n}" for n in range(20)]  # each one's transcript alone fills it
        for subject in subjects:
            submit(described, subject)
        assert unread_bytes(process.stdout.fileno()) > 0  # the reader is behind
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert process.wait(timeout=10) == 0
        stopped_in = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    assert stopped_in < 5, stopped_in
    assert not (root / "lab.json").exists()  # a clean stop: the state file is gone
    with Lab(name="after-unread-stdout", root=root) as lab:  # what was accepted arrives, once
        lab.settle(30)
        assert sorted(m.subject for m in lab.mailbox("bob@example.org")) == sorted(subjects)


def test_a_line_printer_never_waits_on_its_reader_and_says_what_it_dropped():
    """A real pipe nobody reads: put() returns at once; past the limit lines are dropped and,
    once the reader catches up, one line says how many."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, 4096)
    printer = LinePrinter(write_end, lambda n: f"dropped {n}", limit=8192)
    try:
        started = time.monotonic()
        for n in range(1000):
            printer.put(f"line {n:04} " + "x" * 100)
        assert time.monotonic() - started < 1  # 110 kB, far beyond the pipe and the limit
        received = b""
        while b"line 0999" not in received:  # the reader comes back; a last line gets through
            received += os.read(read_end, 65536)
            printer.put("line 0999")
        lines = received.decode().splitlines()
        note = next(line for line in lines if line.startswith("dropped "))
        kept = [line for line in lines if line.startswith("line ")]
        assert int(note.split()[1]) + len(kept) >= 1000  # every line printed or counted
        assert kept == sorted(kept) and kept[0].startswith("line 0000")  # in order, oldest kept
        assert printer.close(timeout=5)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_line_printer_gives_up_on_a_reader_that_never_reads():
    read_end, write_end = os.pipe()
    printer = LinePrinter(write_end, str, limit=1 << 20)
    try:
        for _ in range(100):
            printer.put("y" * 10_000)  # a megabyte for a 64 KiB pipe
        started = time.monotonic()
        assert printer.close(timeout=0.5) is False
        assert time.monotonic() - started < 2
    finally:
        os.close(read_end)
        os.close(write_end)
