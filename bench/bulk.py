"""Bulk mail through the whole lab: throughput, and how much memory it keeps.

One run sends ``--messages`` messages (default 10,000) through the complete lab
path, with every connection recorded at both ends as always:

    client  →  smtp.example.com (STARTTLS, AUTH, fsync to its queue, 250)
            →  the queue relays to mx1.example.org (route from the lab DNS)
            →  Maildir of bob@example.org (fsync, then 250)

The client is the one of ``relay.py``: a separate Python process with
``--sessions`` connections, each sending its share one transaction after
another. The run ends when every queue is empty (``lab.settle``).

Memory is the resident set size of this process, which holds the lab:
``before`` after a warm-up of ``--warmup`` messages (so that thread pools,
TLS contexts and imports already exist), ``after`` once the queues are empty
and the garbage collector has run, and ``peak`` sampled every 20 ms during the
run. Target: ``after - before`` at most 150 MB after 10,000 messages.

What bounds it: the journal keeps the last 2,000 connections
(``smtplab.record.recordings.DEFAULT_KEEP``) and the journey book the last 2,000
messages (``smtplab.record.journey.DEFAULT_KEEP``); each recording keeps at most 1 MiB
per direction (``smtplab.record.wirelog.DEFAULT_LIMIT``, the rest is only counted), and
all recordings together at most 256 MiB (``smtplab.record.recordings.DEFAULT_MAX_BYTES``,
the journeys' steps 32 MiB more). In practice a connection carries a few KiB
per message, and the report shows what the journal really holds at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import PeakSampler, machine, rss_kib  # bench/ is not a package: see sys.path
from relay import Client

SENDER, RECIPIENT = "alice@example.com", "bob@example.org"
SUBMISSION = "smtp.example.com"


def send(lab: object, messages: int, sessions: int, size: int, tag: str, deadline: float) -> dict:
    """Send ``messages`` through the lab's submission server and wait until the queues drain."""
    user = lab.world.user(SENDER)  # type: ignore[attr-defined]
    spec = {
        "port": lab.server(SUBMISSION).port,  # type: ignore[attr-defined]
        "server_name": SUBMISSION,
        "ca_file": str(lab.ca.cert_path),  # type: ignore[attr-defined]
        "login": (user.address, user.password),
        "messages": messages,
        "sessions": sessions,
        "size": size,
        "tag": tag,
    }
    client = Client(spec)
    try:
        began = time.monotonic()
        client.go()
        result = client.result(deadline)
        accepted_at = time.monotonic()
        lab.settle(timeout=deadline)  # type: ignore[attr-defined]
        ended = time.monotonic()
    finally:
        client.kill()
    return {
        "accepted": result["accepted"],
        "errors": result["n_errors"],
        "accept_rate": result["accepted"] / max(accepted_at - began, 1e-9),
        "rate": result["accepted"] / max(ended - began, 1e-9),
        "seconds": ended - began,
    }


def journal_bytes(lab: object) -> tuple[int, int]:
    """(connections kept, bytes their recordings hold) in the lab's journal."""
    logs = lab.journal.logs()  # type: ignore[attr-defined]
    held = sum(len(chunk[2]) for log in logs for chunk in list(log.chunks))
    return len(logs), held


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--size", type=int, default=300, help="bytes per message (default 300)")
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds to drain")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    args = parser.parse_args()

    from smtplab import Lab

    with Lab(name="bench-bulk") as lab:
        send(lab, args.warmup, args.sessions, args.size, "warmup", args.deadline)
        gc.collect()
        before = rss_kib(os.getpid()) or 0
        with PeakSampler(lambda: [os.getpid()]) as memory:
            run = send(lab, args.messages, args.sessions, args.size, "bulk", args.deadline)
        gc.collect()
        after = rss_kib(os.getpid()) or 0
        kept, held = journal_bytes(lab)
        delivered = len(lab.mailbox(RECIPIENT))
    expected = args.warmup + args.messages
    result = {
        "messages": args.messages,
        "sessions": args.sessions,
        "size": args.size,
        **run,
        "delivered": delivered,
        "expected": expected,
        "before_mib": before / 1024,
        "after_mib": after / 1024,
        "peak_mib": memory.peak_kib / 1024,
        "growth_mib": (after - before) / 1024,
        "journal_connections": kept,
        "journal_mib": held / 1024 / 1024,
        "machine": machine(),
    }
    print(
        f"bulk: {args.messages} messages through smtp.example.com → queue → mx1 → Maildir, "
        f"{args.sessions} sessions, {args.size} B, transcripts kept\n"
        f"  {run['rate']:.0f} msg/s end to end ({run['accept_rate']:.0f} msg/s accepted), "
        f"{run['seconds']:.1f} s; {delivered} of {expected} delivered, {run['errors']} errors\n"
        f"  memory (RSS of the lab's process): before {before / 1024:.0f} MiB, "
        f"after {after / 1024:.0f} MiB (growth {(after - before) / 1024:+.0f} MiB), "
        f"peak {memory.peak_kib / 1024:.0f} MiB\n"
        f"  journal: {kept} connections kept, {held / 1024 / 1024:.1f} MiB of recordings"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0 if delivered == expected and not run["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
