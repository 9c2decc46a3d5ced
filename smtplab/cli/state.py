"""The other commands' view of a running lab: its state file (``--lab``, ``--root`` or
``$SMTPLAB_LAB``), checked for the shape they rely on, and what they look up in it."""

from __future__ import annotations

import argparse
import json
import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from smtplab.cli.errors import CLIError
from smtplab.cli.worldfile import read_text
from smtplab.world import (
    SMTP_ROLES,
)

STATE_FILE = "lab.json"


def lab_state(args: argparse.Namespace) -> dict[str, Any]:
    """The running lab's JSON, from --lab, --root or $SMTPLAB_LAB."""
    if args.lab:
        path = args.lab
    elif args.root:
        path = args.root / STATE_FILE
    elif os.environ.get("SMTPLAB_LAB"):
        path = Path(os.environ["SMTPLAB_LAB"])
    else:
        raise CLIError(
            "which lab? pass --lab FILE or --root DIR (smtplab up prints its state file), "
            "or set SMTPLAB_LAB"
        )
    if not path.exists():
        raise CLIError(f"no lab state at {path}: is `smtplab up` running?")
    try:
        state = json.loads(read_text(path, "the lab state"))
    except (ValueError, RecursionError) as error:
        raise CLIError(f"the lab state {path} is not JSON: {error}") from None
    problem = _state_problem(state)
    if problem:
        raise CLIError(f"{path} is not a state file of `smtplab up` ({problem})")
    return state  # type: ignore[no-any-return]


#: What the commands read from a state file, and of what kind (``up --json`` writes more).
_STATE_KEYS: Mapping[str, type] = {
    "servers": list,
    "users": list,
    "dns": dict,
    "ca_cert": str,
    "root": str,
}
_SERVER_KEYS: Mapping[str, type] = {"role": str, "host": str, "port": int, "domains": list}
_USER_KEYS: Mapping[str, type] = {"address": str, "password": str}
_DNS_KEYS: Mapping[str, type] = {"host": str, "port": int}


def _state_problem(state: object) -> str | None:
    """What is wrong with a parsed state file, or None: the commands may rely on its shape."""

    def wrong(item: object, keys: Mapping[str, type], where: str) -> str | None:
        if not isinstance(item, dict):
            return f"{where} is not an object"
        missing = next((k for k, kind in keys.items() if not isinstance(item.get(k), kind)), None)
        return None if missing is None else f"{where}: no {keys[missing].__name__} {missing!r}"

    problems = [wrong(state, _STATE_KEYS, "the top level")]
    if problems[0] is None:
        assert isinstance(state, dict)
        problems += [wrong(state["dns"], _DNS_KEYS, "dns")]
        problems += [
            wrong(s, _SERVER_KEYS, f"servers[{i}]") for i, s in enumerate(state["servers"])
        ]
        problems += [wrong(u, _USER_KEYS, f"users[{i}]") for i, u in enumerate(state["users"])]
        problems += [
            f"servers[{i}].domains holds a non-name"
            for i, s in enumerate(state["servers"])
            if isinstance(s, dict) and not all(isinstance(d, str) for d in s.get("domains", []))
        ]
    return next((p for p in problems if p), None)


def smtp_server(state: dict[str, Any], host: str) -> dict[str, Any]:
    """The lab's SMTP server ``host`` (--via): POP3/IMAP listeners do not count."""
    smtp: list[dict[str, Any]] = [s for s in state["servers"] if s["role"] in SMTP_ROLES]
    for server in smtp:
        if server["host"] == host.lower():
            return server
    hosts = sorted({s["host"] for s in smtp})
    raise CLIError(f"--via takes a lab SMTP server, not {host!r}: {', '.join(hosts)}")


def password_for(state: dict[str, Any], address: str, given: str | None) -> str:
    if given is not None:
        return given
    for user in state["users"]:
        if user["address"] == address.lower():
            return str(user["password"])
    raise CLIError(f"{address} is not a lab user: pass --password")


def ca_context(state: dict[str, Any]) -> ssl.SSLContext:
    """Trust the lab CA only, and check host names (as the lab's own clients do)."""
    try:
        return ssl.create_default_context(cafile=state["ca_cert"])
    except (OSError, ssl.SSLError) as error:
        raise CLIError(f"cannot use the lab CA {state['ca_cert']}: {error}") from None
