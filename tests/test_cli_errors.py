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
from smtplab.cli.printer import LinePrinter
from smtplab.smtp.client import LabSMTP
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


# -- a command's error: one line on stderr, exit status 2 ------------------------------------------
def refused(*args: str | bytes | Path, env: dict | None = None) -> str:
    """Run ``smtplab ARGS`` (bytes pass undecodable argv as they are); it must exit with
    status 2 and one line on stderr, no traceback; the line is returned."""
    argv = [a if isinstance(a, bytes) else str(a) for a in args]
    done = subprocess.run(
        [*CLI, *argv], capture_output=True, timeout=60, env=env, stdin=subprocess.DEVNULL
    )
    errors = done.stderr.decode("utf-8", "replace")
    assert "Traceback" not in errors, errors
    assert done.returncode == 2, (done.returncode, errors, done.stdout[-500:])
    (line,) = errors.splitlines()
    return line


# -- item 10: topology files are checked as a whole before anything starts -------------------------
def good_world() -> dict:
    return {
        "domains": [
            {
                "name": "example.org",
                "mx": [[10, "mx.example.org"]],
                "users": [{"address": "bob@example.org", "password": "pw"}],
            }
        ],
        "servers": [{"host": "mx.example.org", "role": "mx", "domains": ["example.org"]}],
    }


def with_change(change) -> dict:
    world = good_world()
    change(world)
    return world


def domain(world: dict) -> dict:
    return world["domains"][0]


def mx_server(world: dict) -> dict:
    return world["servers"][0]


BAD_WORLDS = {
    "duplicate host": (
        lambda w: w["servers"].append(dict(mx_server(w))),
        "servers[1].host: 'mx.example.org' is already servers[0].host",
    ),
    "users differing only in case": (
        lambda w: domain(w)["users"].append({"address": "Bob@Example.org", "password": "x"}),
        "domains[0].users[1]: 'bob@example.org' is already domains[0].users[0]",
    ),
    "duplicate domain": (
        lambda w: w["domains"].append({"name": "EXAMPLE.org"}),
        "domains[1].name: 'example.org' is already domains[0].name",
    ),
    "server host outside every zone": (
        lambda w: mx_server(w).update(host="mx.elsewhere.test"),
        "servers[0].host: 'mx.elsewhere.test' is in none of the world's domains",
    ),
    "MX host outside every zone": (
        lambda w: domain(w).update(mx=[[10, "mx.elsewhere.test"]]),
        "domains[0].mx[0]: 'mx.elsewhere.test' is in none of the world's domains",
    ),
    "MX preference above 65535": (
        lambda w: domain(w).update(mx=[[65536, "mx.example.org"]]),
        "domains[0].mx[0]: the preference must be 0 to 65535 (RFC 1035 §3.3.9), not 65536",
    ),
    "MX preference below 0": (
        lambda w: domain(w).update(mx=[[-1, "mx.example.org"]]),
        "domains[0].mx[0]: the preference must be 0 to 65535",
    ),
    "MX preference enormous": (
        lambda w: domain(w).update(mx=[[10**400, "mx.example.org"]]),
        "domains[0].mx[0]: the preference must be 0 to 65535 (RFC 1035 §3.3.9), not a number",
    ),
    "MX preference a string": (
        lambda w: domain(w).update(mx=[["10", "mx.example.org"]]),
        "domains[0].mx[0]: the preference must be an integer, not '10'",
    ),
    "MX preference a float": (
        lambda w: domain(w).update(mx=[[10.5, "mx.example.org"]]),
        "domains[0].mx[0]: the preference must be an integer, not 10.5",
    ),
    "MX preference a boolean": (
        lambda w: domain(w).update(mx=[[True, "mx.example.org"]]),
        "domains[0].mx[0]: the preference must be an integer, not True",
    ),
    "null MX beside another": (
        lambda w: domain(w).update(mx=[[0, "."], [10, "mx.example.org"]]),
        "domains[0].mx[0]: a null MX (no host) is the domain's only record",
    ),
    "empty label in a domain": (
        lambda w: domain(w).update(name="example..org"),
        "domains[0].name: 'example..org' has an empty label",
    ),
    "empty label at a host's end": (
        lambda w: mx_server(w).update(host="mx.example.org."),
        "servers[0].host: 'mx.example.org.' has an empty label",
    ),
    "empty host": (lambda w: mx_server(w).update(host=""), "servers[0].host: a host name is"),
    "slash in a host": (
        lambda w: mx_server(w).update(host="mx/x.example.org"),
        "servers[0].host: 'mx/x.example.org': 'mx/x' is not a host name label",
    ),
    "space in a host": (
        lambda w: mx_server(w).update(host="mx 1.example.org"),
        "servers[0].host: 'mx 1.example.org': 'mx 1' is not a host name label",
    ),
    "label over 63": (
        lambda w: mx_server(w).update(host="m" * 64 + ".example.org"),
        f"servers[0].host: '{'m' * 64}.example.org': '{'m' * 64}' is not a host name label",
    ),
    "lone surrogate in a host": (
        lambda w: mx_server(w).update(host="mx\ud800.example.org"),
        "servers[0].host: 'mx\\ud800.example.org'",
    ),
    "lone surrogate in an address": (
        lambda w: domain(w)["users"][0].update(address="b\udc00b@example.org"),
        "domains[0].users[0]: ",
    ),
    "lone surrogate in a password": (
        lambda w: domain(w)["users"][0].update(password="p\ud800"),
        "domains[0].users[0].password: a lab password is printable US-ASCII",
    ),
    "user outside its domain": (
        lambda w: domain(w)["users"][0].update(address="bob@example.com"),
        "domains[0].users[0]: bob@example.com is not in the domain example.org",
    ),
    "served domain not in the world": (
        lambda w: mx_server(w).update(domains=["example.net"]),
        "servers[0].domains[0]: 'example.net' is not one of the world's domains",
    ),
    "unknown role": (
        lambda w: mx_server(w).update(role="pop3"),
        "servers[0].role: must be one of mx, submission, submissions, relay, not 'pop3'",
    ),
    "unknown key": (
        lambda w: domain(w).update(user=[]),
        "domains[0]: unknown key 'user' (known: mx, name, users)",
    ),
    "bad client host": (
        lambda w: w.update(client_host="client example.com"),
        "client_host: 'client example.com'",
    ),
    "users not a list": (lambda w: domain(w).update(users={}), "domains[0].users must be a list"),
    "mx record not a pair": (
        lambda w: domain(w).update(mx=[[10]]),
        "domains[0].mx[0] must be [preference, host]",
    ),
    "too many servers": (
        lambda w: w["servers"].extend(
            {"host": f"mx{n}.example.org", "role": "mx", "domains": []} for n in range(100)
        ),
        "servers: at most 100",
    ),
}


@pytest.mark.parametrize("case", list(BAD_WORLDS), ids=list(BAD_WORLDS))
def test_a_bad_world_file_is_one_line_naming_the_file_and_the_field(tmp_path, case):
    """Before: a duplicate host started two servers, one unlisted that accepted and never
    delivered; others started with names no lookup could find, or a traceback."""
    change, problem = BAD_WORLDS[case]
    world = tmp_path / "world.json"
    world.write_text(json.dumps(with_change(change)))
    root = tmp_path / "root"
    line = refused("up", "--no-pop-imap", "--world", world, "--root", root)
    assert line.startswith(f"smtplab up: {problem}"), line
    assert line.endswith(f"(in {world})"), line
    assert not (root / "spool").exists() and not (root / "mail").exists()  # nothing started


BAD_WORLD_FILES = {
    "missing": (None, "cannot read the world file {path}: No such file or directory"),
    "a folder": ("folder", "cannot read the world file {path}: Is a directory"),
    "not UTF-8": (b'{"domains": "\xff"}', "the world file {path} is not UTF-8 (byte 13)"),
    "not JSON": (b"{", "{path} is not valid JSON: "),
    "nested a million deep": (b"[" * 1_000_000, "{path} is not valid JSON: "),
    "nested deep": (b"[" * 100_000 + b"]" * 100_000, "{path} is not valid JSON: "),
    "a number of 5000 digits": (b'{"x": ' + b"9" * 5000 + b"}", "{path} is not valid JSON: "),
    "a list": (b"[]", "world must be a table/object (in {path})"),
    "empty": (b"", "{path} is not valid JSON: "),
    "huge": (b" " * (2 << 20), "the world file {path} is larger than 1048576 bytes"),
}


@pytest.mark.parametrize("case", list(BAD_WORLD_FILES), ids=list(BAD_WORLD_FILES))
def test_a_world_file_that_cannot_be_read_is_one_line(tmp_path, case):
    content, problem = BAD_WORLD_FILES[case]
    path = tmp_path / "world.json"
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    line = refused("up", "--no-pop-imap", "--world", path)
    assert line.startswith("smtplab up: ") and problem.format(path=path) in line, line


def test_a_bad_toml_world_file_is_one_line(tmp_path):
    path = tmp_path / "world.toml"
    path.write_text('domains = [\n  {name = "example.org", mx = [[10, "mx.example.org"]]}\n')
    assert refused("up", "--world", path).startswith(f"smtplab up: {path} is not valid TOML: ")
    path.write_text('servers = []\n[[domains]]\nname = "a..example"\n')
    line = refused("up", "--world", path)
    assert line.startswith("smtplab up: domains[0].name: 'a..example' has an empty label")
    assert line.endswith(f"(in {path})")


def test_lab_from_python_gets_the_same_checks_as_invalid_input():
    """``Lab(World(...))``: the World refuses itself, with InvalidInput naming the field.

    Before: two servers named mx1.example.org started; the first kept listening on a
    port no listing showed, accepted mail with 250 and never delivered it, and
    ``lab.stop()`` did not stop it."""
    base = default_world()
    twice = (*base.servers, ServerSpec("mx1.example.org", "mx", ("example.org",)))
    with pytest.raises(InvalidInput, match=r"^servers\[5\]\.host: 'mx1.example.org' is already"):
        Lab(World(base.domains, twice), name="duplicate-host")
    upper = Domain("example.net", (User("Dave@example.net", "pw"),), ())
    with pytest.raises(InvalidInput, match=r"^domains\[2\]\.users\[0\]: .*lower case"):
        World((*base.domains, upper), base.servers)
    with pytest.raises(InvalidInput, match=r"^domains\[0\]\.mx\[0\]: the preference"):
        World((Domain("example.com", (), ((1 << 16, "mx.example.com"),)),), ())
    with pytest.raises(InvalidInput, match=r"^servers\[0\]: must be a ServerSpec"):
        World(base.domains, ("mx.example.org",))  # type: ignore[arg-type]


# -- item 11: every subcommand and option, with bad input of each kind ---------------------------
@pytest.fixture(scope="module")
def lab_state(tmp_path_factory):
    """A running `smtplab up`: its state file (the commands' cases reach it, or stop before)."""
    root = tmp_path_factory.mktemp("cli-errors")
    command = [*CLI, "up", "--json", "--root", str(root), "--no-pop-imap"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as process:
        try:
            json.loads(process.stdout.readline())
            yield root / "lab.json"
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def bad_files(tmp_path: Path) -> dict[str, Path]:
    """Files no command can use, by kind."""
    files = {
        "missing": tmp_path / "missing",
        "folder": tmp_path / "folder",
        "not UTF-8": tmp_path / "latin1.json",
        "unreadable": tmp_path / "unreadable.json",
        "endless": Path("/dev/zero"),
    }
    files["folder"].mkdir()
    files["not UTF-8"].write_bytes(b'{"servers": "\xe9"}')
    files["unreadable"].write_text("{}")
    files["unreadable"].chmod(0)
    return files


SEND = ("send", "--from", "alice@example.com", "--to", "bob@example.org")
SURROGATE = b"caf\xe9"  # an argv byte that is not UTF-8: Python sees a lone surrogate


def send_cases() -> dict[str, tuple[tuple, str]]:
    return {
        "subject CRLF": ((*SEND, "--subject", "a\r\nBcc: x@y.org"), "subject: line breaks"),
        "subject U+2028": ((*SEND, "--subject", "a\u2028b"), "subject: line breaks"),
        "subject not UTF-8": ((*SEND, "--subject", SURROGATE), "subject: '\\udce9' is a lone"),
        "body not UTF-8": ((*SEND, "--body", SURROGATE), "body: '\\udce9' is a lone surrogate"),
        "helo CRLF": ((*SEND, "--helo", "a\r\nMAIL FROM:<x@y.org>"), "helo: line breaks"),
        "helo not a name": ((*SEND, "--helo", "no such name"), "helo: 'no such name' is not a"),
        "helo empty": ((*SEND, "--helo", ""), "helo: '' is not a host name"),
        "helo non-ASCII": ((*SEND, "--helo", "dévé.example"), "helo: 'dévé.example' is not"),
        "from empty": (("send", "--from", "", "--to", "b@example.org"), "from: an address is"),
        "to not UTF-8": (
            ("send", "--from", "alice@example.com", "--to", b"b\xff@example.org"),
            "to: '\\udcff' is a lone surrogate",
        ),
        "password CRLF": ((*SEND, "--password", "pw\r\nQUIT"), "password: a lab password is"),
        "password non-ASCII": ((*SEND, "--password", "pwé"), "password: a lab password is"),
        "message empty path": ((*SEND, "--message", ""), "argument --message: an empty path"),
        "via empty": ((*SEND, "--via", ""), "--via takes a lab SMTP server, not ''"),
    }


def test_send_refuses_bad_input_in_one_line(lab_state):
    """Before: CRLF or U+2028 in --subject and CRLF in --helo raised ValueError from the
    email package or smtplib, a missing or folder --message OSError, each a traceback."""
    for case, (args, problem) in send_cases().items():
        line = refused(*args, "--lab", lab_state)
        assert line.startswith("smtplab send: ") and problem in line, (case, line)
    huge = "b" * 100_000 + "@example.org"  # a well-formed address: the server judges it
    done = subprocess.run(
        [*CLI, "send", "--from", "alice@example.com", "--to", huge, "--lab", str(lab_state)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "500 5.5.2" in done.stdout and done.stderr == ""


@pytest.mark.parametrize("kind", ["missing", "folder", "not UTF-8", "unreadable", "endless"])
def test_every_file_option_refuses_a_file_it_cannot_use_in_one_line(tmp_path, lab_state, kind):
    """--message, --lab and --world, for each kind of file none of them can use."""
    if kind == "unreadable" and os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = bad_files(tmp_path)[kind]
    if kind != "not UTF-8":  # a message is bytes, sent as they are: the server judges them
        message = refused(*SEND, "--message", path, "--lab", lab_state)
        assert message.startswith("smtplab send: ") and str(path) in message, message
    for command in (("dns",), ("queue",), SEND, ("fetch", "bob@example.org")):
        line = refused(*command, "--lab", path)
        assert line.startswith(f"smtplab {command[0]}: ") and str(path) in line, line
    line = refused("up", "--no-pop-imap", "--world", path)
    assert line.startswith("smtplab up: ") and str(path) in line, line


BAD_STATES = {
    "empty": b"",
    "not JSON": b"{",
    "a list": b"[]",
    "no servers": b'{"users": [], "dns": {"host": "127.0.0.1", "port": 1}}',
    "a server without a port": (
        b'{"servers": [{"role": "mx", "host": "h", "domains": []}], "users": [], '
        b'"dns": {"host": "127.0.0.1", "port": 1}, "ca_cert": "c", "root": "r"}'
    ),
    "nested deep": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("case", list(BAD_STATES), ids=list(BAD_STATES))
def test_a_malformed_state_file_is_one_line_for_every_command(tmp_path, case):
    """Before: ``[]`` gave TypeError, a missing key KeyError, undecodable bytes
    UnicodeDecodeError, each with a traceback."""
    state = tmp_path / "lab.json"
    state.write_bytes(BAD_STATES[case])
    for command in (("dns",), ("queue",), SEND, ("fetch", "bob@example.org")):
        # `queue --root` reads the spool itself, with or without a state file
        for where in (("--lab", state), *([("--root", tmp_path)] if command != ("queue",) else [])):
            line = refused(*command, *where)
            assert line.startswith(f"smtplab {command[0]}: ") and str(state) in line, line
    env = {**os.environ, "SMTPLAB_LAB": str(state)}
    assert str(state) in refused("dns", env=env)


def test_dns_refuses_bad_names_and_types_in_one_line(lab_state):
    """Before: EmptyLabel, LabelTooLong, NameTooLong, IDNAException or ValueError tracebacks."""
    names = {
        "a..example.org": "A DNS label is empty",
        "x" * 64 + ".example.org": "A DNS label is > 63 octets long",
        "x." * 200: "A DNS name is > 255 octets long",
        SURROGATE: "IDNA",
    }
    for name, problem in names.items():
        line = refused("dns", name, "MX", "--lab", lab_state)
        assert line.startswith("smtplab dns: ") and "is not a DNS name" in line, line
        assert problem in line, line
    for rdtype in ("FOO", "TYPE70000", "", SURROGATE, "A\r\n"):
        line = refused("dns", "example.org", rdtype, "--lab", lab_state)
        assert line.startswith("smtplab dns: unknown record type "), line
    for rdtype in ("AXFR", "IXFR", "OPT", "TYPE0", "NONE", "TSIG"):
        line = refused("dns", "example.org", rdtype, "--lab", lab_state)
        assert "is not a record type to ask for" in line, line
    answered = subprocess.run(
        [*CLI, "dns", "example.org", "any", "--lab", str(lab_state)], capture_output=True
    )
    assert answered.returncode == 0 and b"mx1.example.org." in answered.stdout


def test_fetch_and_queue_refuse_bad_input_in_one_line(tmp_path, lab_state):
    assert "address: line breaks" in refused("fetch", "bob@example.org\r\nx", "--lab", lab_state)
    assert "address: an address is" in refused("fetch", "", "--lab", lab_state)
    assert "lone surrogate" in refused("fetch", SURROGATE + b"@example.org", "--lab", lab_state)
    line = refused("fetch", "bob@example.org", "--password", "a\r\nb", "--lab", lab_state)
    assert line.startswith("smtplab fetch: password: a lab password is"), line
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert refused("queue", "--root", a_file) == f"smtplab queue: --root {a_file}: not a folder"
    gone = tmp_path / "gone"
    assert refused("queue", "--root", gone) == f"smtplab queue: --root {gone}: no such folder"


def test_up_refuses_bad_options_in_one_line(tmp_path):
    """A --root that is a file (before: FileExistsError), timings that are no number of
    seconds (before: nan and inf accepted, inf then broke every date), argparse errors."""
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = {
        ("--root", a_file): f"--root {a_file}: not a folder",
        ("--root", a_file / "below"): f"--root {a_file / 'below'}: Not a directory",
        ("--root", ""): "argument --root: an empty path (see smtplab up --help)",
        ("--latency", "mx1.example.org=nan"): "argument --latency: expected HOST=SECONDS",
        ("--latency", "mx1.example.org=inf"): "argument --latency: expected HOST=SECONDS",
        ("--latency", "nowhere.example=1"): "--latency: the lab has no server 'nowhere.example'",
        ("--retry-first", "nan"): "--retry-first must be > 0",
        ("--retry-first", "0"): "--retry-first must be > 0",
        ("--retry-factor", "inf"): "--retry-first must be > 0",
        ("--retry-age", "nan"): "--retry-first must be > 0",
        ("--retry-age", "1e300"): "--retry-first must be > 0",
        ("--retry-attempts", "0"): "--retry-first must be > 0",
        ("--port-base", "70000"): "a port base must be 1 to",
        ("--port-base", "9" * 5000): "argument --port-base: invalid int value",
        ("--seed", SURROGATE): "argument --seed: invalid int value: 'caf\\udce9'",
        ("--no-such-option",): "unrecognized arguments: --no-such-option",
        ("--world",): "argument --world: expected one argument",
        ("extra\r\nline",): "unrecognized arguments: extra\\r\\nline",
    }
    for args, problem in cases.items():
        line = refused("up", "--no-pop-imap", *args)
        assert line.startswith(("smtplab up: ", "smtplab: ")) and problem in line, (args, line)
    assert refused().startswith("smtplab: the following arguments are required: COMMAND")
    assert refused(SURROGATE).startswith("smtplab: argument COMMAND: invalid choice: 'caf")


def test_a_spool_entry_that_is_not_a_queue_entry_is_named_not_a_traceback(tmp_path):
    """``smtplab queue`` lists what it can read and names the rest on stderr (status 1)."""
    queue = tmp_path / "spool" / "smtp.example.com" / "queue"
    queue.mkdir(parents=True)
    (queue / "0001-garbage").write_bytes(b"\xff not json\nSubject: x\r\n\r\n")
    (queue / "0002-wrong-keys").write_bytes(b'{"qid": 1}\nSubject: x\r\n\r\n')
    (queue / "0003-a-folder").mkdir()
    done = subprocess.run([*CLI, "queue", "--root", str(tmp_path)], capture_output=True, text=True)
    assert "Traceback" not in done.stderr and done.returncode == 1, done.stderr
    assert done.stdout == "the queues are empty\n"
    lines = done.stderr.splitlines()
    assert len(lines) == 3 and all(" is not a queue entry: " in line for line in lines), lines


def test_a_reader_who_closes_stdout_ends_a_command_quietly(lab_state):
    """``smtplab dns | head -1``: before, BrokenPipeError and a traceback."""
    with subprocess.Popen(
        [*CLI, "dns", "--lab", str(lab_state)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        process.stdout.close()  # before the first line is printed
        errors = process.stderr.read()
        assert process.wait(timeout=30) in (0, 1)
    assert b"Traceback" not in errors and b"Exception" not in errors, errors
