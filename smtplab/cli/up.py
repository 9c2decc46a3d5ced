"""``smtplab up``: start a lab, write its state file, print its conversations and queue
events until a signal.

The first line printed (``--json``: one JSON object, see :meth:`smtplab.lab.Lab.describe`
plus ``root`` and ``state``) is a contract scripts rely on; so is the state file
``ROOT/lab.json``, which holds the same object while the lab runs. Printing never waits
on the reader (:mod:`smtplab.cli.printer`), so a signal is answered at once.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from smtplab.cli.errors import CLIError
from smtplab.cli.printer import LinePrinter
from smtplab.cli.state import STATE_FILE
from smtplab.cli.worldfile import load_world
from smtplab.lab import Lab
from smtplab.lab.assembly import PortInUse
from smtplab.protocol.clock import WallClock
from smtplab.queue.delivery import RetryPolicy
from smtplab.record.journey import Step
from smtplab.record.wirelog import WireLog

#: The queue's steps that ``smtplab up`` prints as they happen (route lookups are left out).
QUEUE_EVENTS = frozenset(
    {"queued", "attempt", "retry", "delivered", "relayed", "bounced", "dsn"}
    | {"held", "released", "postmaster"}
)


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


def latency_option(text: str) -> tuple[str, float]:
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


def run_up(args: argparse.Namespace) -> int:
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

    Printing never waits on the reader (see :mod:`smtplab.cli.printer`), so a signal is
    answered within one ``output`` poll whatever the reader does.
    """
    for host, seconds in args.latency:
        if host not in lab.servers:
            raise CLIError(f"--latency: the lab has no server {host!r}")
        lab.server(host).slow_down(seconds)

    def finished(log: WireLog) -> None:
        if log.view == "server":
            output.put(log)

    def stepped(message_id: str | None, step: Step) -> None:
        if step.kind in QUEUE_EVENTS:
            output.put(_queue_event(message_id, step))

    lab.journal.listen(finished)
    lab.journeys.listen(stepped)
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
