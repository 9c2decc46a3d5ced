"""The files ``smtplab up`` reads: a topology (``--world FILE``, TOML or JSON) becomes a
:class:`~smtplab.world.World`; every settings file is read with a size limit, and every
problem is a :class:`~smtplab.cli.errors.CLIError` of one line naming the file and field."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from smtplab.cli.errors import CLIError
from smtplab.protocol.message import InvalidInput
from smtplab.world import (
    Domain,
    ServerSpec,
    User,
    World,
)

#: A topology file or a state file is a few kilobytes; a larger one is refused unparsed.
MAX_SETTINGS_FILE = 1 << 20


def read_limited(path: Path, limit: int, what: str) -> bytes:
    """The bytes of ``path``, or CLIError if it cannot be read or holds more than ``limit``
    (``/dev/zero`` never ends)."""
    try:
        with path.open("rb") as file:
            raw = file.read(limit + 1)
    except OSError as error:
        raise CLIError(f"cannot read {what} {path}: {error.strerror or error}") from None
    if len(raw) > limit:
        raise CLIError(f"{what} {path} is larger than {limit} bytes")
    return raw


def read_text(path: Path, what: str) -> str:
    """A small UTF-8 settings file (see :func:`read_limited`), or CLIError."""
    raw = read_limited(path, MAX_SETTINGS_FILE, what)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CLIError(f"{what} {path} is not UTF-8 (byte {error.start})") from None


def load_world(path: Path) -> World:
    """A World from a ``.toml`` or ``.json`` topology file (see :func:`world_from_data`);
    every problem is a CLIError of one line naming the file and the field."""
    kind = "TOML" if path.suffix == ".toml" else "JSON"
    text = read_text(path, "the world file")
    try:
        data = tomllib.loads(text) if kind == "TOML" else json.loads(text)
    except (ValueError, RecursionError) as error:  # JSONDecodeError and TOMLDecodeError too
        raise CLIError(f"{path} is not valid {kind}: {error}") from None
    try:
        return world_from_data(data)
    except CLIError as error:
        raise CLIError(f"{error} (in {path})") from None


def world_from_data(data: dict[str, Any]) -> World:
    """Build a World from a dict (a parsed topology file); raise CLIError saying what is wrong.

    The shape (JSON shown; TOML is the same)::

        {"client_host": "client.example.com",
         "domains": [{"name": "example.com", "mx": [[10, "mx.example.com"]],
                      "users": [{"address": "alice@example.com", "password": "pw"}]}],
         "servers": [{"host": "mx.example.com", "role": "mx", "domains": ["example.com"]}]}

    Names and addresses are taken in lower case (an MX host may end with a dot; a
    lone ``"."`` is a null MX). An MX host that is not one of the servers gets no
    address in the lab DNS: mail for its domain waits in the queue, as it would for
    a host that is down. Everything else is checked by :func:`smtplab.world.check_world`.
    """

    def table(value: Any, where: str, keys: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise CLIError(f"{where} must be a table/object")
        unknown = sorted(set(value) - keys)
        if unknown:
            raise CLIError(
                f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(keys))})"
            )
        return value

    def need(container: dict[str, Any], key: str, kind: type, where: str, default: Any) -> Any:
        value = container.get(key, default)
        if not isinstance(value, kind):
            raise CLIError(f"{where}.{key} must be a {kind.__name__}")
        return value

    def names(container: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
        items = need(container, key, list, where, [])
        if not all(isinstance(item, str) for item in items):
            raise CLIError(f"{where}.{key} must be a list of names")
        return tuple(item.lower() for item in items)

    world = table(data, "world", {"client_host", "domains", "servers"})
    domains = []
    for i, item in enumerate(need(world, "domains", list, "world", None)):
        where = f"domains[{i}]"
        item = table(item, where, {"name", "mx", "users"})
        users = []
        for j, user in enumerate(need(item, "users", list, where, [])):
            here = f"{where}.users[{j}]"
            user = table(user, here, {"address", "password"})
            address = need(user, "address", str, here, None).lower()
            users.append(User(address, need(user, "password", str, here, None)))
        mx = []
        for j, record in enumerate(need(item, "mx", list, where, [])):
            if not isinstance(record, list) or len(record) != 2 or not isinstance(record[1], str):
                raise CLIError(f'{where}.mx[{j}] must be [preference, host], like [10, "mx.x.org"]')
            host = record[1].lower()
            mx.append((record[0], "" if host == "." else host.removesuffix(".")))
        name = need(item, "name", str, where, None).lower()
        domains.append(Domain(name, tuple(users), tuple(mx)))
    servers = []
    for i, item in enumerate(need(world, "servers", list, "world", None)):
        where = f"servers[{i}]"
        item = table(item, where, {"host", "role", "domains"})
        host = need(item, "host", str, where, None).lower()
        role = need(item, "role", str, where, None)
        servers.append(ServerSpec(host, role, names(item, "domains", where)))
    client_host = need(world, "client_host", str, "world", World.client_host).lower()
    try:
        return World(tuple(domains), tuple(servers), client_host=client_host)
    except InvalidInput as error:
        raise CLIError(str(error)) from None
