"""Maildir delivery (smtplab/mailstore/maildir.py) never overwrites a message.

Unique names and a move into new/ that links, never renames over a name in use, also
for two labs that happen to run with the same process id (a fresh PID namespace, as in
a container). docs/hardening.md lists every case with its test id.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest

from smtplab import Lab

pytestmark = pytest.mark.hardening


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
