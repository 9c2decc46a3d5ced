"""Hardening II: what an attacker and a crash found (issue 16), over real sockets and files.

Overwritten mail after a restart with the same process id, files written outside
the lab's root, hostile MIME that made a mailbox unreadable, recordings bounded
by count instead of bytes, a DNS flood over TCP, header names that bypass the
one-Subject rule, and lab users Dovecot could not log in. ``docs/hardening.md``
lists every case with its test id (checked by ``tests/test_hardening.py``).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import pytest
from peers.smtp import Raw, wait_until

from smtplab import InvalidInput, Lab, UnreadableMessage
from smtplab.world import Domain, ServerSpec, User, World, default_world

TESTS = Path(__file__).parent
SENDER, RECIPIENT = "alice@example.com", "bob@example.org"


def up_refuses(*arguments: str) -> str:
    """Run ``smtplab up ARGUMENTS``: it must exit with status 2 before starting anything, with
    one line on stderr, which is returned."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "smtplab.cli", "up", "--no-pop-imap", *arguments],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"smtplab up {' '.join(arguments)} started a lab instead of refusing")
    assert done.returncode == 2 and done.stdout == "", done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    return line


# -- Maildir names ---------------------------------------------------------------------------------
SAME_PID_DELIVERY = textwrap.dedent(
    """
    import os, sys
    from smtplab import Lab
    assert os.getpid() == 1, os.getpid()  # a fresh PID namespace: as in a container
    with Lab(name="same-pid", root=sys.argv[1]) as lab:
        result = lab.send(
            "alice@example.com", "bob@example.org", sys.argv[2], "x", via="mx1.example.org"
        )
        assert result.ok, result
    """
)


def unshare_pid(*command: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` as PID 1 of a new PID namespace (needs root or user namespaces)."""
    return subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", *command],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_two_labs_with_the_same_pid_never_overwrite_each_others_mail(tmp_path):
    """Maildir (cr.yp.to/proto/maildir.html): unique names and a move that never replaces.

    RFC 5321 §6.1: a message answered with 250 must not be lost, also not by the
    next lab on the same folder that happens to get the same process id.
    """
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    probe = unshare_pid(sys.executable, "-c", "import os; print(os.getpid())")
    if probe.returncode != 0 or probe.stdout.strip() != "1":
        pytest.skip(f"cannot make a PID namespace here: {probe.stderr.strip()}")
    for subject in ("first", "second"):
        done = unshare_pid(sys.executable, "-c", SAME_PID_DELIVERY, str(tmp_path), subject)
        assert done.returncode == 0, done.stderr
    with Lab(name="same-pid-reader", root=tmp_path) as lab:
        messages = lab.mailbox("bob@example.org")
        assert [m.subject for m in messages] == ["first", "second"]  # both, oldest first
        assert len({m.key for m in messages}) == 2


def test_a_delivery_never_replaces_a_message_that_has_its_name(tmp_path, monkeypatch):
    """Maildir: the move into new/ links (fails on an existing name), never renames over it."""
    from smtplab.mailstore import maildir

    names = iter(["1.M000001P1Q1R0.same", "1.M000001P1Q1R0.same", "2.M000001P1Q2R0.fresh"])
    monkeypatch.setattr(maildir, "unique_name", lambda: next(names))
    box = maildir.Maildir(tmp_path / "box")
    first = box.deliver(b"Subject: first\r\n\r\nx\r\n")
    second = box.deliver(b"Subject: second\r\n\r\nx\r\n")
    assert (first, second) == ("1.M000001P1Q1R0.same", "2.M000001P1Q2R0.fresh")
    assert [m.subject for m in box.messages()] == ["first", "second"]
    assert list((tmp_path / "box" / "tmp").iterdir()) == []


def test_two_labs_never_share_a_root_at_once(tmp_path):
    """A second lab on a root in use is refused (InvalidInput naming the root; ``smtplab up``
    in one line, exit status 2): two queues on one spool would number their entries alike
    and replace each other's queued mail (RFC 5321 §6.1). Once the first stops, it may start."""
    first = Lab(name="first-on-root", root=tmp_path)
    try:
        for server in first.servers.values():
            if server.role == "mx":
                server.down()  # the queue holds the message
        assert first.send(SENDER, RECIPIENT, "first", "x").ok
        with pytest.raises(InvalidInput, match=r"^root: .* is in use by another lab"):
            second = Lab(name="second-on-root", root=tmp_path)
            second.send(SENDER, RECIPIENT, "second", "x")  # before: queued under the same id
            second.stop()
        line = up_refuses("--root", str(tmp_path))
        assert line.startswith("smtplab up: root: ") and "in use by another lab" in line, line
    finally:
        first.stop()
    with Lab(name="after-first", root=tmp_path) as again:  # free again, and nothing was lost
        again.settle(15)
        assert [m.subject for m in again.mailbox(RECIPIENT)] == ["first"]


# -- paths outside the root ------------------------------------------------------------------------
def escaping_addresses(tmp_path: Path) -> list[str]:
    """User addresses that, as folder names, lead out of the lab's root (all within tmp_path)."""
    return ["../../outside@example.org", f"{tmp_path}/abs/path@example.org"]


def world_with_user(address: str) -> dict:
    return {
        "domains": [
            {
                "name": "example.org",
                "mx": [[10, "mx.example.org"]],
                "users": [
                    {"address": "bob@example.org", "password": "pw"},
                    {"address": address, "password": "pw"},
                ],
            }
        ],
        "servers": [{"host": "mx.example.org", "role": "mx", "domains": ["example.org"]}],
    }


def everything_under(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


@pytest.mark.parametrize("which", [0, 1], ids=["dot-dot", "absolute"])
def test_a_world_file_user_that_would_leave_the_root_is_refused_in_one_line(tmp_path, which):
    """``smtplab up --world``: exit status 2, one line naming the field; nothing is written."""
    address = escaping_addresses(tmp_path)[which]
    world = tmp_path / "world.json"
    world.write_text(json.dumps(world_with_user(address)))
    root = tmp_path / "deep" / "er" / "root"
    before = everything_under(tmp_path)
    line = up_refuses("--json", "--world", str(world), "--root", str(root))
    assert line.startswith("smtplab up: domains[0].users[1]: ") and "'/'" in line, line
    created = everything_under(tmp_path) - before
    assert all(path.is_relative_to(root) for path in created), created


def test_a_lab_user_that_would_leave_the_root_is_refused_by_the_world(tmp_path):
    """``Lab(World(...))``: InvalidInput (a ValueError) naming the user, before anything runs."""
    for address in [*escaping_addresses(tmp_path), "a\0b@example.org", "..@example.org"]:
        with pytest.raises(InvalidInput, match=r"^domains\[0\]\.users\[0\]: ") as refused:
            World(
                (Domain("example.org", (User(address, "pw"),), ((10, "mx.example.org"),)),),
                (ServerSpec("mx.example.org", "mx", ("example.org",)),),
            )
        assert isinstance(refused.value, ValueError) and repr(address) in str(refused.value)
    assert not (tmp_path / "abs").exists()


def test_every_path_the_lab_makes_from_a_name_stays_under_its_root(tmp_path):
    """A queue or Maildir folder that is a link out of the root, or a Maildir++ folder name
    that leads out, is refused (InvalidInput naming it) instead of followed."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    for planted in ("mail/bob@example.org", "spool/smtp.example.com"):
        link = root / planted
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(outside, target_is_directory=True)
        with pytest.raises(InvalidInput, match=r"^(host|user): .* would lead outside "):
            Lab(name="escaping-link", root=root)
        link.unlink()
    with Lab(name="escaping-folder", root=root) as lab:
        for folder in ("../../../../outside", "/x", "."):
            with pytest.raises(InvalidInput, match=r"^folder: "):
                lab.mailbox("bob@example.org", folder=folder)
    assert list(outside.iterdir()) == []
    assert {p.name for p in tmp_path.iterdir()} == {"root", "outside"}


# -- lab.send input --------------------------------------------------------------------------------
BAD_HEADERS = [
    # (headers=, why)
    ({"Bcc: carol@example.org, X-Y": "v"}, "a colon in the name: a visible Bcc line"),
    ({"X Bad": "v"}, "a space in the name"),
    ({"": "v"}, "an empty name"),
    ({"X-Ü": "v"}, "a name that is not US-ASCII"),
    ({"X-\x7f": "v"}, "DEL in the name"),
    ({"Subject:": "two"}, "a second Subject behind a colon"),
    ({"Subject ": "two"}, "a second Subject behind a space"),
    ({"subject": "two"}, "a second Subject in other case"),
    ({"FROM": "eve@example.net"}, "a second From"),
    ({"Date": "Mon, 2 Nov 2026 09:00:00 +0000"}, "a second Date"),
    ({"Message-ID": "<x@example.com>"}, "a second Message-ID"),
    ({"To": "eve@example.net"}, "To: is what recipients= writes"),
    ({"Cc": "eve@example.net"}, "Cc: is what cc= writes"),
    ({"Bcc": "eve@example.net"}, "a Bcc: line every recipient would see"),
    ({"Reply-To": "a@example.com", "reply-to": "b@example.com"}, "two Reply-To"),
    ({"References": "<a@x>", "REFERENCES": "<b@x>"}, "two References"),
    ({"Content-Type": "text/html"}, "MIME headers come from the body and attachments"),
    ({"MIME-Version": "2.0"}, "MIME headers come from the body and attachments"),
    ({"X-Tag": "a\u2028b"}, "a line separator in a value"),
    ({"X-Tag": "a\x00b"}, "NUL in a value"),
    ({"X-Tag": "a\udcffb"}, "a lone surrogate in a value"),
    ({"X-Tag": 7}, "a value that is not text"),
]


@pytest.fixture(scope="module")
def input_lab():
    with Lab(name="hardening-ii-input") as running:
        yield running


def refused_before_sending(lab: Lab, field: str, **send) -> InvalidInput:
    """lab.send(...) raises InvalidInput naming ``field``, and no connection was opened."""
    before = len(lab.journal.logs())
    arguments = {"sender": SENDER, "recipients": RECIPIENT, "subject": "Hi", "body": "x", **send}
    with pytest.raises(InvalidInput) as refused:
        lab.send(**arguments)
    assert refused.value.field == field, refused.value
    assert len(lab.journal.logs()) == before
    return refused.value


@pytest.mark.parametrize(("headers", "why"), BAD_HEADERS, ids=[why for _, why in BAD_HEADERS])
def test_a_header_name_or_value_that_breaks_rfc_5322_is_refused_before_sending(
    input_lab, headers, why
):
    """RFC 5322 §2.2 (a field name is printable US-ASCII but ':'; no line breaks in a body)
    and §3.6 (at most one From, Subject, Date, Message-ID, To, Cc, Bcc, Reply-To, References)."""
    refused = refused_before_sending(input_lab, "headers", headers=headers)
    assert "Traceback" not in str(refused), why


def test_extra_headers_that_follow_rfc_5322_are_sent_once_each(input_lab):
    """RFC 5322 §3.6: optional fields, Reply-To and References once each, in the stored copy."""
    headers = {"Reply-To": "carol@example.org", "References": "<a@x>", "X-Tag": "kept"}
    result = input_lab.send(
        SENDER, RECIPIENT, "One subject", "x", headers=headers, via="mx1.example.org"
    )
    assert result.ok
    stored = input_lab.mailbox(RECIPIENT)[-1].message
    for name, value in [*headers.items(), ("Subject", "One subject")]:
        assert stored.get_all(name) == [value], name


@pytest.mark.parametrize(
    ("field", "send"),
    [
        ("notify", {"notify": ["SUCCESS\r\nRSET"]}),
        ("notify", {"notify": ["SUCCESS ORCPT=rfc822;eve@example.net"]}),
        ("notify", {"notify": ["SUCC\udcffESS"]}),
        ("ret", {"ret": "FULL\r\nRSET"}),
        ("ret", {"ret": "HDRS ENVID=x"}),
        ("to", {"recipients": "b\udcffob@example.org"}),
        ("to", {"recipients": "b\x00ob@example.org"}),
        ("to", {"recipients": [None]}),
        ("cc", {"cc": "c\ud800@example.org"}),
        ("bcc", {"bcc": "carol@example.org\u2028"}),
        ("from", {"sender": "al\udcffice@example.com"}),
        ("subject", {"subject": "a\u2028b"}),
        ("subject", {"subject": "a\x0bb"}),
        ("subject", {"subject": "a\udcffb"}),
        ("subject", {"subject": None}),
        ("body", {"body": "a\udcffb"}),
        ("body", {"body": b"bytes"}),
        ("password", {"password": "\udcff"}),
        ("attachment", {"attachments": [("f\udcff.txt", b"x", "text/plain")]}),
        ("attachment", {"attachments": [("f\u2028.txt", b"x", "text/plain")]}),
        ("attachment", {"attachments": [("f.txt", b"x", "text/pl\r\nain")]}),
        ("attachment", {"attachments": [("f.txt", "not bytes", "text/plain")]}),
        ("via", {"via": "nowhere.example"}),
        ("message", {"message": "a str is not a message"}),
    ],
)
def test_every_send_parameter_refuses_what_it_cannot_send_with_invalid_input(
    input_lab, field, send
):
    """Bad input gets InvalidInput naming the field, never ValueError or UnicodeEncodeError
    from deep inside smtplib or email (RFC 3461 §4.1, §4.3: NOTIFY and RET are one word each;
    RFC 5322 §2.2: no line breaks in a header; a lone surrogate cannot be encoded)."""
    refused_before_sending(input_lab, field, **send)


# -- POP3 and IMAP (Dovecot) -----------------------------------------------------------------------
needs_dovecot = pytest.mark.skipif(
    __import__("smtplab.mailstore.dovecot").mailstore.dovecot.find_dovecot() is None,
    reason="needs Dovecot (apt-get install dovecot-imapd dovecot-pop3d)",
)
#: Local parts with characters Dovecot treats specially: %-variables (%u, %h, %d),
#: characters outside its default auth_username_chars, IMAP list wildcards and braces.
ODD_USERS = {
    "a%u@example.org": "pct-u-pw",
    "h%h@example.org": "pct-h-pw",
    "b+tag@example.org": "plus-pw",
    "q*{x}~@example.org": "brace-pw",
    "o'brien@example.org": "apostrophe-pw",  # Dovecot escapes ' before its passwd-file lookup
    "all!#$&*+-=?^_`{|}~@example.org": "atext-pw",  # every atext but "/" (see check_user_address)
    "quote@example.org": 'pa"ss\\word',  # quoted-specials in the password (RFC 9051 §4.3)
}


@needs_dovecot
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_lab_user_with_percent_or_other_atext_reads_mail_over_imap_and_pop3(protocol):
    """RFC 5321 §4.1.2 atext ('%', '+', '*', '{', '~') in a lab user's local part, and
    quoted-specials in a password: Dovecot logs them in (no %-expansion, no username
    filter) and the lab's IMAP client sends LOGIN's userid as a quoted string where an
    atom cannot carry it (RFC 9051 §6.2.3, §9 astring)."""
    base = default_world()
    users = (User("bob@example.org", "bob-lab-pw"), *(User(a, p) for a, p in ODD_USERS.items()))
    world = World((base.domains[0], Domain("example.org", users, base.domains[1].mx)), base.servers)
    with Lab(world, name=f"odd-users-{protocol}", retrieval=True) as lab:
        result = lab.send(SENDER, list(ODD_USERS), "for odd names", "x", via="mx1.example.org")
        assert result.ok, result.summary()
        for address in ODD_USERS:
            fetched = lab.fetch(address, protocol)
            assert fetched.ok, (address, fetched.error)
            assert [m.subject for m in fetched] == ["for odd names"], address


@pytest.mark.parametrize("password", ["line\nbreak", "cr\rlf", "nul\0", "tab\t", "pässwort"])
def test_a_lab_password_no_client_can_send_is_refused_in_the_world(tmp_path, password):
    """RFC 1939 §3, §7 (POP3 PASS is one line), RFC 9051 §4.3 (no CR or LF in an IMAP quoted
    string), RFC 4616 §2 (no NUL in PLAIN): such a password would break the lab's own LOGIN,
    so the world refuses it, naming the field; ``smtplab up`` in one line, exit status 2."""
    base = default_world()
    users = (*base.domains[1].users, User("nl@example.org", password))
    field = rf"^domains\[1\]\.users\[{len(users) - 1}\]\.password: "
    with pytest.raises(InvalidInput, match=field):
        World((base.domains[0], Domain("example.org", users, base.domains[1].mx)), base.servers)
    world = tmp_path / "world.json"
    data = world_with_user("nl@example.org")
    data["domains"][0]["users"][1]["password"] = password
    world.write_text(json.dumps(data))
    line = up_refuses("--world", str(world))
    assert line.startswith("smtplab up: domains[0].users[1].password: a lab password is"), line


# -- the lab DNS over TCP --------------------------------------------------------------------------
FLOOD = 3000


def idle_connection(where: tuple[str, int]) -> socket.socket:
    """A connection that sends nothing, non-blocking so that :func:`is_open` never waits."""
    sock = socket.create_connection(where, timeout=10)
    sock.setblocking(False)
    return sock


def is_open(sock: socket.socket) -> bool:
    """Whether the server still holds this connection (a closed one reads as EOF or a reset)."""
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:  # nothing to read, and not closed
        return True
    except OSError:
        return False


@pytest.fixture
def descriptors() -> Iterator[int]:
    """Room for the flood in this process: the soft limit on open files, raised if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FLOOD + 1000
    if soft < wanted and (hard == resource.RLIM_INFINITY or hard >= wanted):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield min(FLOOD, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 500)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.slow
def test_a_flood_of_idle_dns_tcp_connections_is_capped_and_timed_out(descriptors):
    """RFC 7766 §6.2.3 (close idle connections; the timer restarts only on a whole message)
    and §6.2.2, §10 (limit concurrent connections): 3000 idle connections leave at most the cap
    open, a new query is still answered, the SMTP servers of the same process still greet, and
    the idle ones are closed once the idle timeout has passed."""
    with Lab(name="dns-flood") as lab:
        server = lab.dns_server
        server.tcp_idle_timeout = 3.0
        where = (server.host, server.port)
        flood = []
        try:
            for _ in range(descriptors):
                flood.append(idle_connection(where))
            cap = server.max_tcp_connections
            wait_until(lambda: sum(map(is_open, flood)) <= cap, 30, "at most the cap stays open")
            smtp = Raw(lab.server("mx1.example.org").port)  # the same process: no EMFILE
            assert smtp.code() == 220
            smtp.close()
            query = dns.message.make_query("example.org", "MX")
            answer = dns.query.tcp(query, server.host, port=server.port, timeout=5)
            assert sorted(rr.to_text() for rr in answer.answer[0]) == [
                "10 mx1.example.org.",
                "20 mx2.example.org.",
            ]
            # a connection that asks whole queries stays; one that drips half a query does not
            busy = socket.create_connection(where, timeout=5)
            drip = idle_connection(where)
            wire = query.to_wire()
            message = len(wire).to_bytes(2, "big") + wire
            drip.sendall(message[:5])
            started = time.monotonic()
            while time.monotonic() - started < server.tcp_idle_timeout + 1:
                busy.sendall(message)
                assert len(busy.recv(65535)) > 2
                if is_open(drip):
                    drip.sendall(message[5:6])  # a byte now and then: never a whole message
                time.sleep(0.5)  # the pace of a client that keeps asking
            busy.setblocking(False)
            assert is_open(busy)  # active for longer than the idle timeout: still served
            wait_until(lambda: not any(map(is_open, [*flood, drip])), 15, "idle ones closed")
            busy.close()
            drip.close()
        finally:
            for sock in flood:
                sock.close()


# -- memory: the recordings ------------------------------------------------------------------------
GARBAGE_CONNECTIONS = 2000
GARBAGE_BYTES = 256 << 10
RECORDING_BUDGET = 16 << 20


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def garbage_client(port: int, count: int, errors: list[BaseException]) -> None:
    """``count`` unauthenticated connections, each sending one long line of garbage."""
    line = b"x" * GARBAGE_BYTES + b"\r\n"
    try:
        for _ in range(count):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.recv(512)  # the banner
                sock.sendall(line)
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):  # 500 5.5.2, then the server closes on our EOF
                    pass
    except BaseException as error:
        errors.append(error)


@pytest.mark.slow
def test_garbage_connections_keep_the_recordings_under_their_byte_budget():
    """2000 unauthenticated connections of 256 KiB garbage each (512 MiB in all) to a real MX:
    the journal's recordings stay under its byte budget (oldest dropped first, each with a
    note in its transcript), and so does the process's memory, roughly. The count bound
    (2000 connections) alone would have kept all 512 MiB."""
    with Lab(name="garbage") as lab:
        lab.journal.max_bytes = RECORDING_BUDGET
        port = lab.server("mx1.example.org").port
        rss_before = rss_bytes()
        errors: list[BaseException] = []
        workers = [
            threading.Thread(target=garbage_client, args=(port, GARBAGE_CONNECTIONS // 8, errors))
            for _ in range(8)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(300)
        assert errors == [] and not any(worker.is_alive() for worker in workers)
        lab.transcripts("mx1.example.org", at_least=1)
        wait_until(lambda: all(log.closed.is_set() for log in lab.journal.logs()), 30)
        growth = rss_bytes() - rss_before
        recorded = sum(len(p) for log in lab.journal.logs() for _, _, p in log.chunks)
        retained = lab.journal.retained_bytes
        print(
            f"\nrecorded {recorded >> 20} MiB (accounted {retained >> 20} MiB),"
            f" RSS +{growth >> 20} MiB"
        )
        assert recorded <= retained <= RECORDING_BUDGET
        assert growth < 8 * RECORDING_BUDGET, f"RSS grew by {growth >> 20} MiB"
        oldest = lab.transcripts("mx1.example.org")[0].to_text()
        assert "recorded bytes of this connection were dropped: the lab keeps 16 MiB" in oldest
        newest = lab.transcripts("mx1.example.org")[-1].to_text()
        assert "<-  500 Command line too long" in newest  # the recent ones are whole


def test_the_journey_book_keeps_its_steps_under_a_byte_budget(input_lab):
    """The journey book drops its oldest journeys once their steps pass ``max_bytes``
    (as the journal does with recordings); the newest journey always stays."""
    book = input_lab.journeys
    book.max_bytes = 20_000
    try:
        results = [
            input_lab.send(SENDER, RECIPIENT, f"budget {n}", "x", via="mx1.example.org")
            for n in range(60)
        ]
        assert book.retained_bytes <= 20_000 and book.dropped > 0
        assert book.get(results[-1].message_id) is results[-1].journey
        assert book.get(results[0].message_id) is None
    finally:
        book.max_bytes = 32 << 20


# -- hostile MIME ----------------------------------------------------------------------------------
def hostile_head(tag: str, subject: bytes = b"") -> bytes:
    return (
        b"From: eve@example.net\r\nTo: bob@example.org\r\n"
        + f"Message-ID: <{tag}@hostile.example.net>\r\n".encode()
        + (b"Subject: " + subject + b"\r\n" if subject else b"")
    )


def nested_multipart(depth: int) -> bytes:
    opening = [
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (d, d)
        for d in range(depth)
    ]
    closing = [b"--b%d--\r\n" % d for d in reversed(range(depth))]
    return (
        hostile_head("nested", b"nested")
        + b"MIME-Version: 1.0\r\n"
        + b"".join(opening)
        + b"Content-Type: text/plain\r\n\r\ndeep\r\n"
        + b"".join(closing)
    )


def encoded_words(count: int) -> bytes:
    lines = [b" ".join([b"=?utf-8?q?a?="] * 60) for _ in range(count // 60)]
    return hostile_head("words") + b"Subject: " + b"\r\n ".join(lines) + b"\r\n\r\nx\r\n"


def folded_subject(lines: int) -> bytes:
    fold = b"".join(b" " + b"w " * 490 + b"\r\n" for _ in range(lines))
    return hostile_head("folded") + b"Subject: folded\r\n" + fold + b"\r\nx\r\n"


def many_parts(count: int) -> bytes:
    body = b"".join(b"--B\r\n\r\n%d\r\n" % n for n in range(count)) + b"--B--\r\n"
    return (
        hostile_head("parts", b"parts")
        + b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n'
        + body
    )


def many_headers(count: int) -> bytes:
    fields = b"".join(b"X-H: %d\r\n" % n for n in range(count))
    return hostile_head("headers", b"headers") + fields + b"\r\nx\r\n"


HOSTILE = {
    "nested 1000 deep": (nested_multipart(1000), "MIME parts nested more than 50 deep"),
    "100k encoded words": (encoded_words(100_000), "a header section of more than"),
    "a Subject folded over 1000 lines": (folded_subject(1000), "a header section of more than"),
    "300k parts": (many_parts(300_000), "more than 200 MIME parts"),
    "300k header fields": (many_headers(300_000), "a header section of more than"),
}


@pytest.mark.slow
def test_hostile_mime_accepted_by_the_mx_never_makes_the_mailbox_unreadable():
    """The MX accepts them, as a real MX does (RFC 5321 §4.5.3.1.7: only the size is its
    business); reading, listing and rendering stay bounded: each hostile message shows as
    "could not be displayed: ..." with its size, its bytes stay in .raw, and the messages
    around it read as usual (before: RecursionError, MemoryError past 5 GB, minutes)."""
    from smtplab.view.widgets import mailbox_view

    with Lab(name="hostile-mime", retrieval="auto") as lab:
        ordinary = b"From: alice@example.com\r\nSubject: before\r\n\r\nhello\r\n"
        assert lab.send(SENDER, RECIPIENT, message=ordinary, via="mx1.example.org").ok
        for name, (raw, _) in HOSTILE.items():
            result = lab.send(SENDER, RECIPIENT, message=raw, via="mx1.example.org")
            assert result.ok, (name, result.summary())
        after = ordinary.replace(b"before", b"after")
        assert lab.send(SENDER, RECIPIENT, message=after, via="mx1.example.org").ok
        tracemalloc.start()
        try:
            mailbox = lab.mailbox(RECIPIENT)
            listing, page = repr(mailbox), mailbox._repr_html_()
            view = mailbox_view(lab, RECIPIENT)
            for index in range(len(mailbox)):
                view.model.selected = index
                assert view.headers.value and view.source.value
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 256 * 2**20, f"peak {peak / 2**20:.0f} MiB"
        first, *hostile, last = mailbox
        assert (first.subject, first.body, last.subject) == ("before", "hello\n", "after")
        for message, (name, (raw, why)) in zip(hostile, HOSTILE.items(), strict=True):
            assert message.problem is not None and message.problem.startswith(why), name
            assert message.raw.endswith(raw.replace(b"\r\n", b"\n")), name
            assert (message.subject, message.sender, message.body) == ("", "", ""), name
            with pytest.raises(UnreadableMessage, match=f"{len(message.raw)} bytes"):
                message.message.items()
            notice = f"could not be displayed: {message.problem} ({len(message.raw)} bytes"
            assert (
                notice in listing and notice in view.messages.options[hostile.index(message) + 1][0]
            )
        assert listing.count("could not be displayed") == len(HOSTILE)
        assert page.count("could not be displayed") == len(HOSTILE)
        if lab.mailstore is not None:  # the same messages over IMAP (RetrievedMessage)
            fetched = lab.fetch(RECIPIENT)
            assert fetched.ok and fetched.summary().count("could not be displayed") == len(HOSTILE)
