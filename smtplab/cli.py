"""smtplab: the mail lab from a terminal, for real mail clients.

``smtplab up`` starts a lab (the default world, or one from ``--world FILE``),
prints where each server listens and then every conversation as it finishes
and every queue event as it happens (queued, attempt, retry, delivered,
bounced, held ...), until Ctrl-C or SIGTERM. With ``--json`` the first line
printed is one JSON object (see :meth:`smtplab.lab.Lab.describe`, plus
``root`` and ``state``) that scripts and tests rely on, and every later line is
one JSON object too, with an ``event`` key (``connection`` or ``queue``).
``up`` also writes the first line's JSON to ``ROOT/lab.json`` (the *state
file*) and removes it when it stops. Unlike a notebook, a terminal lab dates
headers with the real time (``--fixed-clock`` keeps the chapters' clock).

The other commands work on a running lab, found through its state file
(``--lab FILE``, ``--root DIR`` or the ``SMTPLAB_LAB`` environment variable):
``send`` submits one message, ``fetch`` reads a mailbox over IMAP or POP3,
``dns`` asks the lab DNS, ``queue`` shows what the lab's queues hold.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import io
import json
import os
import queue
import signal
import ssl
import sys
import threading
import time
import tomllib
from collections.abc import Callable
from datetime import datetime
from email.utils import format_datetime, make_msgid
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from smtplab.assembly import PortInUse
from smtplab.errors import SmtplabError
from smtplab.lab import Lab
from smtplab.labserver import MAX_MESSAGE_SIZE
from smtplab.mailstore.maildir import StoredMessage
from smtplab.mailstore.retrieval import fetch_mailbox
from smtplab.printer import LinePrinter
from smtplab.protocol.clock import WallClock
from smtplab.protocol.message import InvalidInput, build_message, check_address, check_header_text
from smtplab.protocol.rules import parse_path
from smtplab.queue.delivery import DEFAULT_POLICY, RetryPolicy
from smtplab.queue.spool import Spool
from smtplab.record.journey import Step
from smtplab.record.wirelog import WireLog
from smtplab.submit import connect, submit
from smtplab.world import (
    CLIENT_HOST,
    ROLES,
    SMTP_ROLES,
    Domain,
    ServerSpec,
    User,
    World,
    check_password,
    mailstore_role,
)

STATE_FILE = "lab.json"
DEFAULT_SUBJECT = "Test from smtplab send"
DEFAULT_BODY = "This is a test message, sent with smtplab send."
DEFAULT_HELO = CLIENT_HOST
#: The queue's steps that ``smtplab up`` prints as they happen (route lookups are left out).
QUEUE_EVENTS = frozenset(
    {"queued", "attempt", "retry", "delivered", "relayed", "bounced", "dsn"}
    | {"held", "released", "postmaster"}
)


class CLIError(SmtplabError):
    """A problem to report in one line, without a traceback (exit status 2)."""


# --- worlds from a file -------------------------------------------------------------------------


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
        servers.append(ServerSpec(host, role, names(item, "domains", where)))  # type: ignore[arg-type]
    client_host = need(world, "client_host", str, "world", World.client_host).lower()
    try:
        return World(tuple(domains), tuple(servers), client_host=client_host)
    except InvalidInput as error:
        raise CLIError(str(error)) from None


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


# --- up -----------------------------------------------------------------------------------------


def _write_state(path: Path, described: dict[str, Any]) -> None:
    """Write the state file atomically: a reader never sees half of it."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(described, indent=2) + "\n")
    os.replace(partial, path)


def _queue_event(message_id: str | None, step: Step) -> dict[str, Any]:
    """One queue event as ``smtplab up --json`` prints it (one object per line)."""
    return {
        "event": "queue",
        "step": step.kind,
        "host": step.host,
        "qid": step.qid,
        "message_id": message_id,
        "recipients": list(step.recipients),
        "text": step.text,
        "time": _iso(time.time()),
        "retry_at": _iso(step.retry_at) if step.retry_at is not None else None,
    }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


def _event_line(event: dict[str, Any]) -> str:
    """The same event, compact, for people: time, host, queue id, step, text, recipients."""
    when = event["time"][11:19]
    at = f" (at {event['retry_at'][11:19]})" if event["retry_at"] else ""
    to = " ".join(f"<{r}>" for r in event["recipients"])
    return f"{when} queue {event['host']} {event['qid']} {event['step']}: {event['text']}{at} {to}"


def _connection(log: WireLog) -> dict[str, Any]:
    return {
        "event": "connection",
        "client": log.client,
        "server": log.server,
        "transcript": str(log.transcript()),
    }


def _retry_policy(args: argparse.Namespace) -> RetryPolicy:
    policy = RetryPolicy(args.retry_first, args.retry_factor, args.retry_attempts, args.retry_age)
    if not (
        0 < policy.first_delay <= MAX_SECONDS
        and 1 <= policy.factor <= MAX_SECONDS
        and policy.max_attempts >= 1
        and 0 <= policy.max_age <= MAX_SECONDS
    ):
        raise CLIError(
            f"--retry-first must be > 0, --retry-factor >= 1, --retry-attempts >= 1, "
            f"--retry-age >= 0, each a number up to {MAX_SECONDS:g}"
        )
    return policy


#: The longest time an option takes (a year): every later date must stay a date.
MAX_SECONDS = 365 * 24 * 3600.0
#: The longest --latency: a round trip longer than this is a server that is down.
MAX_LATENCY = 60.0


def _latency(text: str) -> tuple[str, float]:
    """``HOST=SECONDS`` for --latency."""
    host, _, seconds = text.partition("=")
    try:
        value = float(seconds)
    except ValueError:
        value = -1.0
    if not host or not 0 <= value <= MAX_LATENCY:  # also refuses nan
        raise argparse.ArgumentTypeError(
            f"expected HOST=SECONDS, 0 to {MAX_LATENCY:g} s (like mx1.example.org=0.02): {text}"
        )
    return host.lower(), value


def _table(lab: Lab, state: Path) -> str:
    """What a mail program needs: servers and ports, users, the CA, how to verify names."""
    return "\n".join(
        [
            lab.table(),
            *(f"user {user.address} password {user.password}" for user in lab.world.users),
            f"CA file {lab.ca.cert_path}",
            "  certificates name the hosts above, not 127.0.0.1: connect to 127.0.0.1 and verify\n"
            "  the host name (curl --resolve HOST:PORT:127.0.0.1 --cacert CA; msmtp\n"
            "  tls_host_override HOST; swaks 20201014 checks only the chain: --tls-verify\n"
            "  --tls-ca-path CA). The README has a complete example for each.",
            f"state file {state}  (smtplab send/fetch/dns/queue --lab {state})",
            "Press Ctrl-C to stop.",
        ]
    )


def _dropped_note(as_json: bool) -> Callable[[int], str]:
    """The line that tells a reader who did not keep up how many lines it missed."""

    def note(count: int) -> str:
        text = f"{count} line{'s' if count != 1 else ''} dropped: stdout was not read in time"
        if as_json:
            return json.dumps({"event": "dropped", "lines": count, "text": text})
        return f"({text})"

    return note


#: After a stop, how long a slow reader gets to take the lines still waiting for it.
PRINT_GRACE = 1.0


def _up(args: argparse.Namespace) -> int:
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    world = load_world(args.world) if args.world else None
    root = _lab_root(args.root) if args.root else None
    retrieval = False if args.no_pop_imap else "auto"
    try:
        # Held until we listen: what a restart delivers is printed like any delivery.
        lab = Lab(
            world,
            name="cli",
            root=root,
            seed=args.seed,
            retry=_retry_policy(args),
            retrieval=retrieval,
            authenticity=args.authenticity,
            hold=True,
            port_base=args.port_base,
            clock=None if args.fixed_clock else WallClock(),
        )
    except PortInUse as error:
        raise CLIError(f"{error}; pick another --port-base") from None
    except ValueError as error:  # a port base out of range
        raise CLIError(str(error)) from None
    except OSError as error:  # a root the lab cannot write in
        raise CLIError(f"cannot start the lab in {root or 'a new folder'}: {error}") from None
    output: queue.Queue[WireLog | dict[str, Any]] = queue.Queue()
    printer = LinePrinter(sys.stdout.fileno(), _dropped_note(args.json))
    try:
        with lab:
            _serve(args, lab, output, printer, stopping)
    finally:
        printer.close(PRINT_GRACE)
    print("lab stopped", file=sys.stderr)
    return 0


def _lab_root(given: Path) -> Path:
    """``up --root DIR``: the folder, made if need be, or CLIError (a file, no permission)."""
    root = given.resolve()
    if root.exists() and not root.is_dir():
        raise CLIError(f"--root {given}: not a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CLIError(f"--root {given}: {error.strerror or error}") from None
    return root


def _serve(
    args: argparse.Namespace,
    lab: Lab,
    output: queue.Queue[WireLog | dict[str, Any]],
    printer: LinePrinter,
    stopping: threading.Event,
) -> None:
    """Print the lab, then its conversations and queue events until ``stopping`` is set.

    Printing never waits on the reader (see :mod:`smtplab.printer`), so a signal is
    answered within one ``output`` poll whatever the reader does.
    """
    for host, seconds in args.latency:
        if host not in lab.servers:
            raise CLIError(f"--latency: the lab has no server {host!r}")
        lab.server(host).slow_down(seconds)
    lab.journal.listen(lambda log: log.view == "server" and output.put(log))
    lab.journeys.listen(
        lambda message_id, step: (
            step.kind in QUEUE_EVENTS and output.put(_queue_event(message_id, step))
        )
    )
    state = lab.root / STATE_FILE
    described = {**lab.describe(), "root": str(lab.root), "state": str(state)}
    _write_state(state, described)
    try:
        printer.put(json.dumps(described) if args.json else _table(lab, state))
        if lab.mailstore is None and not args.no_pop_imap:
            print(f"POP3/IMAP not started: {lab.mailstore_unavailable}", file=sys.stderr)
        if args.hold:
            lab.hold()  # again, now that we listen: reports what the queues hold
        else:
            lab.release()
        while not stopping.is_set():
            try:
                item = output.get(timeout=0.2)
            except queue.Empty:
                continue
            if isinstance(item, WireLog):
                item = _connection(item)
            if args.json:
                printer.put(json.dumps(item))
            elif item["event"] == "queue":
                printer.put(_event_line(item))
            else:
                printer.put(f"\n--- {item['client']} → {item['server']}\n{item['transcript']}")
    finally:
        state.unlink(missing_ok=True)


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
_STATE_KEYS = {"servers": list, "users": list, "dns": dict, "ca_cert": str, "root": str}
_SERVER_KEYS = {"role": str, "host": str, "port": int, "domains": list}
_USER_KEYS = {"address": str, "password": str}
_DNS_KEYS = {"host": str, "port": int}


def _state_problem(state: object) -> str | None:
    """What is wrong with a parsed state file, or None: the commands may rely on its shape."""

    def wrong(item: object, keys: dict[str, type], where: str) -> str | None:
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


def _smtp_server(state: dict[str, Any], host: str) -> dict[str, Any]:
    """The lab's SMTP server ``host`` (--via): POP3/IMAP listeners do not count."""
    smtp = [s for s in state["servers"] if s["role"] in SMTP_ROLES]
    for server in smtp:
        if server["host"] == host.lower():
            return server
    hosts = sorted({s["host"] for s in smtp})
    raise CLIError(f"--via takes a lab SMTP server, not {host!r}: {', '.join(hosts)}")


def _password(state: dict[str, Any], address: str, given: str | None) -> str:
    if given is not None:
        return given
    for user in state["users"]:
        if user["address"] == address.lower():
            return str(user["password"])
    raise CLIError(f"{address} is not a lab user: pass --password")


def _context(state: dict[str, Any]) -> ssl.SSLContext:
    """Trust the lab CA only, and check host names (as the lab's own clients do)."""
    try:
        return ssl.create_default_context(cafile=state["ca_cert"])
    except (OSError, ssl.SSLError) as error:
        raise CLIError(f"cannot use the lab CA {state['ca_cert']}: {error}") from None


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def _check_helo(name: str) -> str:
    """``--helo``: what RFC 5321 §4.1.1.1 allows after EHLO, a Domain or an address literal
    (in US-ASCII: smtplib sends nothing else), or InvalidInput."""
    check_header_text("helo", name)
    parsed = parse_path(f"<postmaster@{name}>") if name.isascii() else None
    if parsed is None or parsed[0] != f"postmaster@{name}" or parsed[2]:
        raise InvalidInput(
            "helo", f"{name!r} is not a host name or an address literal like [192.0.2.1]"
        )
    return name


def _message_file(path: Path) -> bytes:
    """``--message FILE`` with CRLF line ends, or CLIError (missing, a folder, too large)."""
    raw = read_limited(path, MAX_MESSAGE_SIZE, "the message file")
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _send(args: argparse.Namespace) -> int:
    sender = check_address("from", args.sender)
    recipients = [check_address("to", r) for r in args.to]
    helo = _check_helo(args.helo)
    if args.password is not None:
        check_password("password", args.password)
    if args.message:
        raw = _message_file(args.message)
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
    state = _state(args)
    if args.via is not None:
        server = _smtp_server(state, args.via)
    else:
        submission = [
            s
            for s in state["servers"]
            if s["role"] in ROLES and ROLES[s["role"]].client_default
            and _domain(sender) in s["domains"]
        ]
        if not submission:
            raise CLIError(f"no submission server serves {_domain(sender)}: pass --via HOST")
        server = submission[0]
    role, context = ROLES[server["role"]], _context(state)
    try:
        client = connect(server["host"], server["port"], role, client_name=helo, context=context)
    except OSError as error:
        raise CLIError(f"cannot connect to {server['host']}: {error}") from None
    submitted = submit(
        client,
        role,
        sender,
        recipients,
        raw,
        context=context,
        password_of=lambda address: _password(state, address, args.password),
    )
    print(submitted.transcript.to_text(full_data=args.full))
    print()
    for outcome in submitted.outcomes:
        print(outcome)
    return 0 if all(o.accepted for o in submitted.outcomes) else 1


def _fetch(args: argparse.Namespace) -> int:
    address = check_address("address", args.address).lower()
    if args.password is not None:
        check_password("password", args.password)
    state = _state(args)
    role = mailstore_role(args.protocol, implicit_tls=args.tls == "implicit")
    listeners = [s for s in state["servers"] if s["role"] == role]
    if not listeners:
        raise CLIError("this lab runs no POP3/IMAP (install Dovecot and restart `smtplab up`)")
    result = fetch_mailbox(
        listeners[0]["host"],
        listeners[0]["port"],
        address,
        _password(state, address, args.password),
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


def _ask(state: dict[str, Any], query: dns.message.Message) -> dns.message.Message:
    where = state["dns"]["host"], state["dns"]["port"]
    try:
        response, _ = dns.query.udp_with_fallback(query, where[0], timeout=5, port=where[1])
    except (OSError, dns.exception.DNSException) as error:
        raise CLIError(f"the lab DNS at {where[0]} did not answer: {error}") from None
    return response


def _record_type(text: str) -> str:
    """``dns TYPE``: a record type to ask the lab DNS for (or ANY), or CLIError; type 0,
    AXFR, IXFR, OPT and the other meta types are no question to ask it."""
    try:
        rdtype = dns.rdatatype.from_text(text.upper())
    except (dns.rdatatype.UnknownRdatatype, ValueError):
        raise CLIError(
            f"unknown record type {text!r} (MX, A, TXT, ... or TYPE1 to TYPE65535)"
        ) from None
    if rdtype != dns.rdatatype.ANY and (rdtype == 0 or dns.rdatatype.is_metatype(rdtype)):
        raise CLIError(f"{text!r} is not a record type to ask for (MX, A, TXT, ... or ANY)")
    return dns.rdatatype.to_text(rdtype)


def _dns(args: argparse.Namespace) -> int:
    rdtype = _record_type(args.type)
    names = [args.name] if args.name is not None else None
    try:
        queries = [dns.message.make_query(name, rdtype) for name in names or []]
    except dns.exception.DNSException as error:
        raise CLIError(f"{args.name!r} is not a DNS name: {error}") from None
    state = _state(args)
    if names is None:
        queries = [dns.message.make_query(name, rdtype) for name in _names(state)]
    status = 0
    for query in queries:
        response = _ask(state, query)
        rows = [
            f"{rrset.name.to_text():<28} {rrset.ttl:>6} IN {kind:<6} {rd.to_text()}"
            for rrset in response.answer
            for kind in [dns.rdatatype.to_text(rrset.rdtype)]
            for rd in sorted(rrset, key=lambda rd: rd.to_text())
        ]
        if rows:
            print("\n".join(rows))
        elif names:
            rcode = response.rcode()
            why = (
                "outside the lab's zones" if rcode == dns.rcode.REFUSED else f"no {rdtype} records"
            )
            asked = query.question[0].name.to_text(omit_final_dot=True)
            print(f"{asked}: {dns.rcode.to_text(rcode)} ({why})")
            status = 1
    return status


def _queue(args: argparse.Namespace) -> int:
    """List the spools of ROOT; an entry that cannot be read is named on stderr (status 1)."""
    root = args.root
    if root is None:
        root = Path(_state(args)["root"])
    elif not root.is_dir():
        raise CLIError(f"--root {root}: {'not a folder' if root.exists() else 'no such folder'}")
    spool = root / "spool"
    entries = []
    unreadable = 0
    for folder in sorted(spool.glob("*/queue")) if spool.is_dir() else []:
        for path, entry, message in Spool.look(folder.parent):
            if isinstance(entry, Exception):
                print(
                    f"smtplab queue: {path} is not a queue entry: {entry!r:.200}", file=sys.stderr
                )
                unreadable += 1
                continue
            entries.append(
                {
                    "server": folder.parent.name,
                    "qid": entry.qid,
                    "sender": entry.sender,
                    "recipients": [r.address for r in entry.recipients],
                    "domain": entry.domain,
                    "attempts": entry.attempts,
                    "next_attempt": entry.next_attempt,
                    "held": entry.held_since is not None,
                    "subject": StoredMessage(path.name, message).subject,  # bounded
                    "size": len(message),
                }
            )
    status = 1 if unreadable else 0
    if args.json:
        for listed in entries:
            print(json.dumps(listed))
        return status
    if not entries:
        print("the queues are empty")
        return status
    now = time.time()
    for e in entries:
        due = e["next_attempt"] - now
        when = "held" if e["held"] else f"next try in {due:.0f} s" if due > 0 else "due now"
        print(
            f"{e['server']} {e['qid']}  {e['size']} bytes  <{e['sender']}>  "
            f"attempts {e['attempts']}, {when}  Subject: {e['subject']}"
        )
        for recipient in e["recipients"]:
            print(f"    -> <{recipient}>")
    print(f"{len(entries)} message{'s' if len(entries) != 1 else ''} queued")
    return status


# --- the parser ---------------------------------------------------------------------------------


def _locate(command: argparse.ArgumentParser) -> None:
    where = command.add_argument_group("which lab", "the `smtplab up` to talk to")
    where.add_argument(
        "--lab",
        type=_path,
        metavar="FILE",
        help="the state file `smtplab up` printed (default: $SMTPLAB_LAB)",
    )
    where.add_argument(
        "--root",
        type=_path,
        metavar="DIR",
        help="the --root given to `smtplab up` (default: --lab, then $SMTPLAB_LAB)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="smtplab",
        description="The smtplab mail world from a terminal: start it with `smtplab up`, "
        "then use it with real mail programs or the other commands.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up",
        help="start the lab's servers until Ctrl-C",
        description="Start a lab on 127.0.0.1: SMTP servers, the lab DNS and, where Dovecot "
        "is installed, POP3 and IMAP. Prints each conversation as it finishes and each "
        "queue event as it happens.",
    )
    up.add_argument(
        "--json",
        action="store_true",
        help="print the lab as one JSON line first, then one JSON object per event (default: text)",
    )
    up.add_argument(
        "--root",
        type=_path,
        metavar="DIR",
        help="keep mailboxes and queues in DIR across restarts (default: a temporary folder)",
    )
    up.add_argument(
        "--world",
        type=_path,
        metavar="FILE",
        help="a topology file, .toml or .json (default: the chapters' world)",
    )
    up.add_argument(
        "--hold",
        action="store_true",
        help="hold the queues: mail waits, never tried, never expired, until a start without "
        "--hold (default: deliver)",
    )
    up.add_argument(
        "--port-base",
        type=int,
        metavar="N",
        help="fixed ports from N: SMTP servers in the listed order, then DNS, IMAP, IMAPS, "
        "POP3, POP3S (default: free ports, new each start)",
    )
    up.add_argument(
        "--authenticity",
        action="store_true",
        help="SPF, DKIM, DMARC and the spam filter, as in chapter 09 (default: off)",
    )
    up.add_argument(
        "--latency",
        type=_latency,
        action="append",
        default=[],
        metavar="HOST=SECONDS",
        help="put a server a network round trip away, as in chapter 10; repeatable (default: none)",
    )
    up.add_argument(
        "--retry-first",
        type=float,
        default=DEFAULT_POLICY.first_delay,
        metavar="SECONDS",
        help=f"the queue's first retry delay (default: {DEFAULT_POLICY.first_delay:g})",
    )
    up.add_argument(
        "--retry-factor",
        type=float,
        default=DEFAULT_POLICY.factor,
        metavar="X",
        help=f"each later delay is X times the one before (default: {DEFAULT_POLICY.factor:g})",
    )
    up.add_argument(
        "--retry-attempts",
        type=int,
        default=DEFAULT_POLICY.max_attempts,
        metavar="N",
        help=f"attempts before a bounce (default: {DEFAULT_POLICY.max_attempts})",
    )
    up.add_argument(
        "--retry-age",
        type=float,
        default=DEFAULT_POLICY.max_age,
        metavar="SECONDS",
        help=f"a message older than this bounces at its next failure "
        f"(default: {DEFAULT_POLICY.max_age:g})",
    )
    up.add_argument(
        "--seed",
        type=int,
        default=0,
        help="the shuffle of equal-preference MX hosts (default: 0)",
    )
    up.add_argument(
        "--fixed-clock",
        action="store_true",
        help="date headers with the chapters' clock, 2026-11-02 09:00 UTC +1 s per reading "
        "(default: the real time)",
    )
    up.add_argument(
        "--no-pop-imap",
        action="store_true",
        help="do not start POP3/IMAP (default: start them where Dovecot is installed)",
    )
    up.set_defaults(run=_up)

    send = commands.add_parser(
        "send",
        help="send one message through a running lab",
        description="Submit one message with STARTTLS and AUTH (or to any SMTP server of the "
        "lab with --via) and print the transcript. Exit status 1 if a recipient was refused.",
    )
    send.add_argument(
        "--from", dest="sender", required=True, metavar="ADDRESS", help="the sender (required)"
    )
    send.add_argument(
        "--to",
        action="append",
        required=True,
        metavar="ADDRESS",
        help="a recipient (required; repeat for more)",
    )
    send.add_argument(
        "--subject", default=DEFAULT_SUBJECT, help=f"the Subject: (default: {DEFAULT_SUBJECT!r})"
    )
    send.add_argument("--body", default=DEFAULT_BODY, help="the text (default: a test sentence)")
    send.add_argument(
        "--message",
        type=_path,
        metavar="FILE",
        help="send this RFC 5322 file as it is (default: build one from --subject and --body)",
    )
    send.add_argument(
        "--via",
        metavar="HOST",
        help="the lab SMTP server to connect to (default: the sender's submission server)",
    )
    send.add_argument("--password", help="the AUTH password (default: the sender's lab password)")
    send.add_argument(
        "--helo",
        default=DEFAULT_HELO,
        metavar="NAME",
        help=f"the name to give in EHLO (default: {DEFAULT_HELO})",
    )
    send.add_argument(
        "--full", action="store_true", help="show the message data in full (default: a summary)"
    )
    _locate(send)
    send.set_defaults(run=_send)

    fetch = commands.add_parser(
        "fetch",
        help="read a mailbox over IMAP or POP3",
        description="Log in as a lab user, fetch the inbox and print the transcript.",
    )
    fetch.add_argument("address", help="the lab user whose inbox to read")
    fetch.add_argument(
        "--protocol", choices=("imap", "pop3"), default="imap", help="(default: imap)"
    )
    fetch.add_argument(
        "--tls",
        choices=("starttls", "implicit", "none"),
        default="starttls",
        help="STARTTLS on the plain port, TLS from the first byte, or none (default: starttls)",
    )
    fetch.add_argument("--password", help="(default: the user's lab password)")
    fetch.add_argument(
        "--delete", action="store_true", help="POP3: delete after downloading (default: keep)"
    )
    fetch.add_argument(
        "--full", action="store_true", help="show the messages in full (default: a summary)"
    )
    _locate(fetch)
    fetch.set_defaults(run=_fetch)

    ask = commands.add_parser(
        "dns",
        help="list or query the lab DNS",
        description="Without NAME: every record the lab DNS holds for its domains and hosts. "
        "With NAME: the records of TYPE at NAME.",
    )
    ask.add_argument(
        "name", nargs="?", metavar="NAME", help="a name to look up (default: list everything)"
    )
    ask.add_argument(
        "type", nargs="?", default="ANY", metavar="TYPE", help="MX, A, TXT, ... (default: ANY)"
    )
    _locate(ask)
    ask.set_defaults(run=_dns)

    show = commands.add_parser(
        "queue",
        help="show what the lab's queues hold",
        description="List the messages waiting in the outbound queues (ROOT/spool/HOST/queue), "
        "held ones marked as held.",
    )
    show.add_argument(
        "--json", action="store_true", help="one JSON object per queued message (default: text)"
    )
    _locate(show)
    show.set_defaults(run=_queue)
    return parser


def one_line(text: str) -> str:
    """``text`` with what a terminal would not show as text escaped (line breaks, control
    characters, lone surrogates from undecodable argv bytes): an error stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors in one line like every other error (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{one_line(f'{self.prog}: {message}')} (see {self.prog} --help)\n")


def _path(text: str) -> Path:
    """A FILE or DIR argument: an empty one would be the current folder, so it is refused."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    return Path(text)


def main(argv: list[str] | None = None) -> int:
    """Run one command; every error is one line on stderr and exit status 2, never a
    traceback (an interrupt is status 130, a reader who closed stdout ends it quietly)."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):  # text from the wire or argv, never a crash
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (CLIError, InvalidInput) as error:
        print(one_line(f"smtplab {args.command}: {error}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"smtplab {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `smtplab dns | head -1`: stop, and let nothing flush into it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
