"""The world's own checks (smtplab/world.py): a user address that would lead out of the
lab's root, or a password no client can send, is refused in Python and in a --world
file, naming the field. docs/hardening.md lists every case with its test id.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from peers.cli import up_refuses

from smtplab import InvalidInput
from smtplab.world import Domain, ServerSpec, User, World, default_world

pytestmark = pytest.mark.hardening


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
