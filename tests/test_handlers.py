"""What the role handlers (smtplab/roles/handlers.py) accept, refuse and store.

Relaying needs AUTH, a body with NUL or 100 Received: lines is refused, bare CR and LF
are stored as line ends, and a store that fails gets 451 4.3.0, never 250. Over real
sockets; docs/hardening.md lists every case with its test id.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers.smtp import (
    FAST,
    RECIPIENT,
    ROLES,
    SENDER,
    SUBMISSION_ROLES,
    begin_data,
    greeted,
    nothing_kept,
    ready,
    received_headers,
    stored,
)

from smtplab import Lab
from smtplab.protocol import replies

pytestmark = [pytest.mark.lab(retry=FAST), pytest.mark.hardening]


# -- relay and AUTH -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("role", "command", "expected"),
    [
        ("mx", "RCPT TO:<someone@elsewhere.example>", "550 5.7.1 "),
        ("submissions", "MAIL FROM:<alice@example.com>", str(replies.AUTH_REQUIRED)),
    ],
)
def test_unauthenticated_relay_is_refused_and_nothing_is_queued(lab, role, command, expected):
    """RFC 5321 §3.6.2 (no open relay): MX 550 5.7.1; RFC 4954 §6 / RFC 6409 §4.3: 530 5.7.0."""
    client = greeted(lab, role)
    if role == "mx":
        client.send(f"MAIL FROM:<{SENDER}>\r\n".encode())
        assert client.code() == 250
    client.send(command.encode() + b"\r\nDATA\r\n")
    assert client.last().startswith(expected)
    assert client.last().startswith("503")  # no recipient, no data
    client.close()
    assert all(queue.pending() == [] for queue in lab.queues.values())
    assert nothing_kept(lab)


@pytest.mark.parametrize("role", ROLES)
def test_a_nul_in_a_body_is_refused_and_nothing_is_stored(lab, role):
    """RFC 5322 §2.3 and RFC 2045 §2.7-2.8 (no NUL in mail): 554 5.6.0, never passed on."""
    client = ready(lab, role)
    begin_data(client)
    client.send(b"Subject: nul\r\n\r\nbefore\0after\r\n.\r\n")
    assert client.last().startswith("554 5.6.0 ")
    assert nothing_kept(lab)


def test_bare_cr_and_lf_in_a_body_are_normalised_at_the_mx(lab):
    """RFC 5321 §2.3.8: bare CR and LF are not line ends on the wire; the MX stores CRLF (LF)."""
    client = ready(lab, "mx")
    begin_data(client)
    client.send(b"Subject: bare\r\n\r\na\nb\rc\r\n.\r\n")
    assert client.code() == 250
    (message,) = lab.mailbox(RECIPIENT)
    assert message.raw.endswith(b"\n\na\nb\nc\n") and b"\r" not in message.raw


@pytest.mark.parametrize("role", SUBMISSION_ROLES)
def test_a_looping_message_gets_554_5_4_0_at_submission(lab, role):
    """RFC 5321 §6.3: 100 Received: headers mean a loop: 554 5.4.0 (RFC 3463 §3.5), none queued."""
    client = ready(lab, role)
    begin_data(client)
    client.send(received_headers(100) + b"Subject: loop\r\n\r\nx\r\n.\r\n")
    assert client.last().startswith("554 5.4.0 ")
    assert nothing_kept(lab)


# -- spool failures -------------------------------------------------------------------------------
def spool_target(lab: Lab, role: str) -> Path:
    """The folder a 250 depends on: Bob's Maildir ``new/`` (MX) or the queue (submission)."""
    if role == "mx":
        return lab.maildirs[RECIPIENT].path / "new"
    return lab.queues[ROLES[role]].spool.folder / "queue"


@pytest.mark.parametrize("role", ROLES)
def test_a_spool_that_cannot_be_written_gets_451_4_3_0_never_250(lab, role):
    """RFC 5321 §6.1 (250 only once stored) and §4.2.3: 451 4.3.0 (RFC 3463), then it heals."""
    target = spool_target(lab, role)
    target.rmdir()
    target.write_bytes(b"not a folder")  # as root, chmod would not stop a write: this does
    client = ready(lab, role)
    begin_data(client)
    client.send(b"Subject: first try\r\n\r\nx\r\n.\r\n")
    assert client.last().startswith("451 4.3.0 ")
    target.unlink()
    target.mkdir()
    client.send(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RECIPIENT}>\r\nDATA\r\n".encode())
    assert client.codes(3) == [250, 250, 354]
    client.send(b"Subject: second try\r\n\r\nx\r\n.\r\nQUIT\r\n")
    assert client.codes(2) == [250, 221]
    assert stored(lab) == 1


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, filled up; skipped where mounting is not allowed (not root, no CAP)."""
    mount = tmp_path / "full"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.parametrize("role", ROLES)
def test_a_full_spool_gets_451_4_3_0_never_250(lab, role, tiny_tmpfs):
    """RFC 5321 §6.1 and §4.2.3: a write that fails (ENOSPC) gives 451 4.3.0, not 250."""
    tmp = spool_target(lab, role).parent / "tmp"  # where every file is written first
    filler = os.open(tiny_tmpfs / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(filler, b"\0" * 4096):
            pass
    except OSError as error:
        assert error.errno == errno.ENOSPC
    finally:
        os.close(filler)
    tmp.rmdir()
    tmp.symlink_to(tiny_tmpfs)
    client = ready(lab, role)
    begin_data(client)
    client.send(b"Subject: no room\r\n\r\n" + (b"x" * 78 + b"\r\n") * 100 + b".\r\n")
    assert client.last().startswith("451 4.3.0 ")
    client.close()
    tmp.unlink()
    tmp.mkdir()
    assert stored(lab) == 0
