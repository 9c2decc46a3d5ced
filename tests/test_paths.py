"""The lab's folders (smtplab/paths.py): one lab per root at a time, and every path the
lab makes from a name stays under that root. docs/hardening.md lists every case.
"""

from __future__ import annotations

import pytest
from peers.cli import up_refuses
from peers.smtp import RECIPIENT, SENDER

from smtplab import InvalidInput, Lab

pytestmark = pytest.mark.hardening


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
