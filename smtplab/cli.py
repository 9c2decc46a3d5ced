"""``smtplab``: the same lab from a terminal, for real mail clients.

``smtplab up`` starts a lab (the default world, or one from ``--world FILE``),
prints where each server listens and then every conversation as it finishes,
until Ctrl-C or SIGTERM. With ``--json`` the first line printed is one JSON
object (see :meth:`smtplab.lab.Lab.describe`, plus ``root`` and ``state``) that
scripts and tests rely on. ``up`` also writes that JSON to ``ROOT/lab.json``
(the *state file*) and removes it when it stops.

The other commands work on a running lab, found through its state file
(``--lab FILE``, ``--root DIR`` or the ``SMTPLAB_LAB`` environment variable):
``send`` submits one message, ``fetch`` reads a mailbox over IMAP or POP3,
``dns`` asks the lab DNS, ``queue`` shows what the lab's queues hold.
"""

from __future__ import annotations

import argparse
import contextlib
import email
import email.policy
import json
import os
import queue
import signal
import ssl
import sys
import threading
import time
import tomllib
from email.utils import format_datetime, make_msgid
from pathlib import Path
from types import FrameType
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from smtplab.client import RecordingClient, open_session, transact
from smtplab.compose import InvalidInput, build_message, check_address
from smtplab.lab import Lab
from smtplab.maildir import StoredMessage
from smtplab.retrieval import fetch_mailbox
from smtplab.wire import WireLog
from smtplab.world import (
    Domain,
    ServerSpec,
    User,
    World,
    check_password,
    check_user_address,
)

STATE_FILE = "lab.json"
ROLES = ("mx", "submission", "submissions", "relay")
DEFAULT_BODY = "This is a test message, sent with smtplab send."


class CLIError(Exception):
    """A problem to report in one line, without a traceback (exit status 2)."""


# --- worlds from a file -------------------------------------------------------------------------


def world_from_data(data: dict[str, Any]) -> World:
    """Build a World from a dict (a parsed topology file); raise CLIError saying what is wrong.

    The shape (JSON shown; TOML is the same)::

        {"client_host": "client.example.com",
         "domains": [{"name": "example.com", "mx": [[10, "mx.example.com"]],
                      "users": [{"address": "alice@example.com", "password": "pw"}]}],
         "servers": [{"host": "mx.example.com", "role": "mx", "domains": ["example.com"]}]}

    An MX host that is not one of the servers gets no address in the lab DNS:
    mail for its domain waits in the queue, as it would for a host that is down.
    """

    def need(container: dict[str, Any], key: str, kind: type, where: str) -> Any:
        value = container.get(key)
        if not isinstance(value, kind):
            raise CLIError(f"{where}: '{key}' must be a {kind.__name__}")
        return value

    domains = []
    for i, item in enumerate(need(data, "domains", list, "world")):
        where = f"domains[{i}]"
        if not isinstance(item, dict):
            raise CLIError(f"{where} must be a table/object")
        name = need(item, "name", str, where).lower()
        users = []
        for j, user in enumerate(item.get("users", [])):
            here = f"{where}.users[{j}]"
            if not isinstance(user, dict):
                raise CLIError(f"{here} must be a table/object")
            try:
                address = check_user_address(here, need(user, "address", str, here)).lower()
                password = check_password(f"{here}.password", need(user, "password", str, here))
            except InvalidInput as error:
                raise CLIError(str(error)) from None
            if address.rpartition("@")[2] != name:
                raise CLIError(f"{here}: {address} is not in the domain {name}")
            users.append(User(address, password))
        mx = []
        for j, record in enumerate(item.get("mx", [])):
            if (
                not isinstance(record, list)
                or len(record) != 2
                or not isinstance(record[0], int)
                or not isinstance(record[1], str)
            ):
                raise CLIError(
                    f'{where}.mx[{j}] must be [preference, host], like [10, "mx.{name}"]'
                )
            mx.append((record[0], record[1].lower().rstrip(".")))
        domains.append(Domain(name, tuple(users), tuple(mx)))
    servers = []
    for i, item in enumerate(need(data, "servers", list, "world")):
        where = f"servers[{i}]"
        if not isinstance(item, dict):
            raise CLIError(f"{where} must be a table/object")
        role = need(item, "role", str, where)
        if role not in ROLES:
            raise CLIError(f"{where}: role must be one of {', '.join(ROLES)}, not {role!r}")
        served = item.get("domains", [])
        if not isinstance(served, list) or not all(isinstance(d, str) for d in served):
            raise CLIError(f"{where}: 'domains' must be a list of domain names")
        servers.append(
            ServerSpec(
                need(item, "host", str, where).lower(), role, tuple(d.lower() for d in served)
            )
        )
    client_host = data.get("client_host", "client.example.com")
    if not isinstance(client_host, str):
        raise CLIError("world: 'client_host' must be a string")
    return World(tuple(domains), tuple(servers), client_host=client_host)


def load_world(path: Path) -> World:
    """A World from a ``.toml`` or ``.json`` topology file (see :func:`world_from_data`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise CLIError(f"cannot read {path}: {error.strerror}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        kind = "TOML" if path.suffix == ".toml" else "JSON"
        raise CLIError(f"{path} is not valid {kind}: {error}") from None
    if not isinstance(data, dict):
        raise CLIError(f"{path}: the top level must be a table/object")
    return world_from_data(data)


# --- up -----------------------------------------------------------------------------------------


def _write_state(path: Path, described: dict[str, Any]) -> None:
    """Write the state file atomically: a reader never sees half of it."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(described, indent=2) + "\n")
    os.replace(partial, path)


def _up(args: argparse.Namespace) -> int:
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    world = load_world(args.world) if args.world else None
    root = None
    if args.root:
        root = args.root.resolve()
        root.mkdir(parents=True, exist_ok=True)
    finished: queue.Queue[WireLog] = queue.Queue()
    retrieval = False if args.no_pop_imap else "auto"
    with Lab(world, name="cli", root=root, retrieval=retrieval) as lab:
        lab.journal.listen(lambda log: log.view == "server" and finished.put(log))
        if args.hold:  # connections to the MX hosts are refused: the queues keep everything
            for server in lab.servers.values():
                if server.role == "mx":
                    server.down()
        state = lab.root / STATE_FILE
        described = {**lab.describe(), "root": str(lab.root), "state": str(state)}
        _write_state(state, described)
        try:
            if args.json:
                print(json.dumps(described), flush=True)
            else:
                print(lab.table())
                for user in lab.world.users:
                    print(f"user {user.address} password {user.password}")
                print(f"state file {state}  (smtplab send/fetch/dns/queue --lab {state})")
                print("Press Ctrl-C to stop.", flush=True)
            if lab.mailstore is None and retrieval:
                print(f"POP3/IMAP not started: {lab.mailstore_unavailable}", file=sys.stderr)
            while not stopping.is_set():
                try:
                    log = finished.get(timeout=0.2)
                except queue.Empty:
                    continue
                print(f"\n--- {log.client} → {log.server}\n{log.transcript()}", flush=True)
        finally:
            state.unlink(missing_ok=True)
    print("lab stopped", file=sys.stderr)
    return 0


# --- commands on a running lab ------------------------------------------------------------------


def _state(args: argparse.Namespace) -> dict[str, Any]:
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
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CLIError(f"no lab state at {path}: is `smtplab up` running?") from None
    except (OSError, json.JSONDecodeError) as error:
        raise CLIError(f"cannot read the lab state {path}: {error}") from None


def _server(state: dict[str, Any], host: str) -> dict[str, Any]:
    for server in state["servers"]:
        if server["host"] == host.lower():
            return server
    hosts = sorted({s["host"] for s in state["servers"]})
    raise CLIError(f"the lab has no server {host!r}; it has {', '.join(hosts)}")


def _password(state: dict[str, Any], address: str, given: str | None) -> str:
    if given is not None:
        return given
    for user in state["users"]:
        if user["address"] == address.lower():
            return str(user["password"])
    raise CLIError(f"{address} is not a lab user: pass --password")


def _context(state: dict[str, Any]) -> ssl.SSLContext:
    """Trust the lab CA only, and check host names (as the lab's own clients do)."""
    return ssl.create_default_context(cafile=state["ca_cert"])


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def _send(args: argparse.Namespace) -> int:
    state = _state(args)
    try:
        sender = check_address("from", args.sender)
        recipients = [check_address("to", r) for r in args.to]
    except InvalidInput as error:
        raise CLIError(str(error)) from None
    if args.via:
        server = _server(state, args.via)
    else:
        submission = [
            s
            for s in state["servers"]
            if s["role"] == "submission" and _domain(sender) in s["domains"]
        ]
        if not submission:
            raise CLIError(f"no submission server serves {_domain(sender)}: pass --via HOST")
        server = submission[0]
    if args.message:
        raw = args.message.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    else:
        message = build_message(
            sender,
            recipients,
            [],
            args.subject,
            args.body,
            date=format_datetime(email.utils.localtime()),
            message_id=make_msgid(domain=_domain(sender)),
        )
        raw = message.as_bytes(policy=email.policy.SMTP)
    role, context = server["role"], _context(state)
    client = RecordingClient(
        server["host"],
        client_name=args.helo,
        implicit_tls=context if role == "submissions" else None,
    )
    try:
        client.connect(server["host"], server["port"])
    except OSError as error:
        raise CLIError(f"cannot connect to {server['host']}: {error}") from None
    submitting = role in ("submission", "submissions")
    login = (sender, _password(state, sender, args.password)) if submitting else None
    outcomes = open_session(
        client, recipients, context=context if role == "submission" else None, login=login
    )
    if outcomes is None:
        outcomes = transact(client, sender, recipients, raw)
    assert client.wire is not None
    print(client.wire.transcript().to_text(full_data=args.full))
    print()
    for outcome in outcomes:
        print(outcome)
    return 0 if all(o.accepted for o in outcomes) else 1


def _fetch(args: argparse.Namespace) -> int:
    state = _state(args)
    role = f"{args.protocol}s" if args.tls == "implicit" else args.protocol
    listeners = [s for s in state["servers"] if s["role"] == role]
    if not listeners:
        raise CLIError("this lab runs no POP3/IMAP (install Dovecot and restart `smtplab up`)")
    result = fetch_mailbox(
        listeners[0]["host"],
        listeners[0]["port"],
        args.address.lower(),
        _password(state, args.address, args.password),
        protocol=args.protocol,
        tls=args.tls,
        context=_context(state),
        delete=args.delete,
    )
    print(result.transcript.to_text(full_data=args.full))
    print()
    print(result.summary())
    return 0 if result.ok else 1


def _names(state: dict[str, Any]) -> list[str]:
    """Every name the lab DNS answers for: its domains and its hosts."""
    names = {_domain(u["address"]) for u in state["users"]}
    for server in state["servers"]:
        names.add(server["host"])
        names.update(server["domains"])
    return sorted(names, key=lambda n: (list(reversed(n.split("."))), n))


def _ask(state: dict[str, Any], name: str, rdtype: str) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    where = state["dns"]["host"], state["dns"]["port"]
    try:
        response, _ = dns.query.udp_with_fallback(query, where[0], timeout=5, port=where[1])
    except (OSError, dns.exception.DNSException) as error:
        raise CLIError(f"the lab DNS at {where[0]} did not answer: {error}") from None
    return response


def _dns(args: argparse.Namespace) -> int:
    state = _state(args)
    rdtype = args.type.upper()
    try:
        dns.rdatatype.from_text(rdtype)
    except dns.rdatatype.UnknownRdatatype:
        raise CLIError(f"unknown record type {args.type!r}") from None
    names = [args.name] if args.name else _names(state)
    status = 0
    for name in names:
        response = _ask(state, name, rdtype)
        rows = [
            f"{rrset.name.to_text():<28} {rrset.ttl:>6} IN {kind:<6} {rd.to_text()}"
            for rrset in response.answer
            for kind in [dns.rdatatype.to_text(rrset.rdtype)]
            for rd in sorted(rrset, key=lambda rd: rd.to_text())
        ]
        if rows:
            print("\n".join(rows))
        elif args.name:
            print(f"{name}: {dns.rcode.to_text(response.rcode())} (no {rdtype} records)")
            status = 1
    return status


def _queue(args: argparse.Namespace) -> int:
    root = args.root
    if root is None:
        root = Path(_state(args)["root"])
    spool = root / "spool"
    entries = []
    for folder in sorted(spool.glob("*/queue")) if spool.is_dir() else []:
        for path in sorted(folder.iterdir()):
            with contextlib.suppress(FileNotFoundError):  # delivered while we looked
                head, _, message = path.read_bytes().partition(b"\n")
                data = json.loads(head)
                entries.append(
                    {
                        "server": folder.parent.name,
                        "qid": data.get("qid", path.name),
                        "sender": data.get("sender", ""),
                        "recipients": [r["address"] for r in data.get("recipients", [])],
                        "domain": data.get("domain", ""),
                        "attempts": data.get("attempts", 0),
                        "next_attempt": data.get("next_attempt", 0.0),
                        "subject": StoredMessage(path.name, message).subject,  # bounded
                        "size": len(message),
                    }
                )
    if args.json:
        for entry in entries:
            print(json.dumps(entry))
        return 0
    if not entries:
        print("the queues are empty")
        return 0
    now = time.time()
    for e in entries:
        due = e["next_attempt"] - now
        when = f"next try in {due:.0f} s" if due > 0 else "due now"
        print(
            f"{e['server']} {e['qid']}  {e['size']} bytes  <{e['sender']}>  "
            f"attempts {e['attempts']}, {when}  Subject: {e['subject']}"
        )
        for recipient in e["recipients"]:
            print(f"    -> <{recipient}>")
    print(f"{len(entries)} message{'s' if len(entries) != 1 else ''} queued")
    return 0


# --- the parser ---------------------------------------------------------------------------------


def _locate(command: argparse.ArgumentParser) -> None:
    where = command.add_argument_group("which lab")
    where.add_argument("--lab", type=Path, metavar="FILE", help="the state file `smtplab up` wrote")
    where.add_argument("--root", type=Path, metavar="DIR", help="the --root given to `smtplab up`")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smtplab", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up",
        help="start the lab's servers until Ctrl-C",
        description="Start a lab on 127.0.0.1: SMTP servers, the lab DNS and, where Dovecot "
        "is installed, POP3 and IMAP. Prints each conversation as it finishes.",
    )
    up.add_argument("--json", action="store_true", help="print the lab as one JSON line first")
    up.add_argument(
        "--root",
        type=Path,
        metavar="DIR",
        help="keep mailboxes and queues in DIR across restarts (default: a temporary folder)",
    )
    up.add_argument(
        "--world",
        type=Path,
        metavar="FILE",
        help="a topology file (.toml or .json: domains, users, MX records, servers)",
    )
    up.add_argument(
        "--hold",
        action="store_true",
        help="keep the MX servers down: submitted mail waits in the queue (see `smtplab queue`)",
    )
    up.add_argument("--no-pop-imap", action="store_true", help="do not start POP3/IMAP (Dovecot)")
    up.set_defaults(run=_up)

    send = commands.add_parser(
        "send",
        help="send one message through a running lab",
        description="Submit one message with STARTTLS and AUTH (or to any lab server with "
        "--via) and print the transcript. Exit status 1 if a recipient was refused.",
    )
    send.add_argument("--from", dest="sender", required=True, metavar="ADDRESS")
    send.add_argument(
        "--to",
        action="append",
        required=True,
        metavar="ADDRESS",
        help="a recipient (repeat for more)",
    )
    send.add_argument("--subject", default="Test from smtplab send")
    send.add_argument("--body", default=DEFAULT_BODY)
    send.add_argument(
        "--message",
        type=Path,
        metavar="FILE",
        help="send this RFC 5322 file as it is instead of --subject/--body",
    )
    send.add_argument(
        "--via",
        metavar="HOST",
        help="the lab server to connect to (default: the sender's submission server)",
    )
    send.add_argument("--password", help="default: the sender's lab password")
    send.add_argument(
        "--helo", default="client.example.com", metavar="NAME", help="the name to give in EHLO"
    )
    send.add_argument("--full", action="store_true", help="show the message data in full")
    _locate(send)
    send.set_defaults(run=_send)

    fetch = commands.add_parser(
        "fetch",
        help="read a mailbox over IMAP or POP3",
        description="Log in as a lab user, fetch the inbox and print the transcript.",
    )
    fetch.add_argument("address")
    fetch.add_argument("--protocol", choices=("imap", "pop3"), default="imap")
    fetch.add_argument("--tls", choices=("starttls", "implicit", "none"), default="starttls")
    fetch.add_argument("--password", help="default: the user's lab password")
    fetch.add_argument("--delete", action="store_true", help="POP3: delete after downloading")
    fetch.add_argument("--full", action="store_true", help="show the messages in full")
    _locate(fetch)
    fetch.set_defaults(run=_fetch)

    ask = commands.add_parser(
        "dns",
        help="list or query the lab DNS",
        description="Without NAME: every record the lab DNS holds for its domains and hosts. "
        "With NAME: the records of TYPE (default ANY) at NAME.",
    )
    ask.add_argument("name", nargs="?", metavar="NAME")
    ask.add_argument("type", nargs="?", default="ANY", metavar="TYPE", help="MX, A, TXT, ...")
    _locate(ask)
    ask.set_defaults(run=_dns)

    show = commands.add_parser(
        "queue",
        help="show what the lab's queues hold",
        description="List the messages waiting in the outbound queues (ROOT/spool/HOST/queue).",
    )
    show.add_argument("--json", action="store_true", help="one JSON object per queued message")
    _locate(show)
    show.set_defaults(run=_queue)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (CLIError, InvalidInput) as error:
        print(f"smtplab {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
