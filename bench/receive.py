"""How much does recording every byte cost a receiving server?

Runs, in one process and with the same client, three receivers:

* ``plain``: aiosmtpd's own ``Sink`` handler behind a stock threaded Controller
  (the baseline);
* ``recording``: the lab's :class:`~smtplab.server.RecordingSMTP` with the same
  ``Sink`` handler: the difference to ``plain`` is the cost of recording;
* ``lab mx``: the lab's full MX role (policy, trace headers, fsynced Maildir).

The client is Postfix's ``smtp-source`` when installed (8 parallel sessions, one
message per connection, 300-byte messages), otherwise a small threaded smtplib
client. Rounds alternate between receivers so that machine noise hits them
alike; the table reports medians, and the median of the per-round ratios to
``plain``.
Target (issue 2): ``recording`` keeps at least 0.9 of ``plain``.
"""

from __future__ import annotations

import argparse
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink

from smtplab.clock import LabClock
from smtplab.handlers import MailboxHandler
from smtplab.journal import WireJournal
from smtplab.maildir import Maildir
from smtplab.server import LOOPBACK, LabController

SENDER, RECIPIENT = "alice@example.com", "bob@example.org"


def smtp_source_client(port: int, messages: int, sessions: int) -> None:
    subprocess.run(
        [
            "smtp-source",
            "-s",
            str(sessions),
            "-m",
            str(messages),
            "-l",
            "300",
            "-f",
            SENDER,
            "-t",
            RECIPIENT,
            "-M",
            "client.example.com",
            f"{LOOPBACK}:{port}",
        ],
        check=True,
    )


def python_client(port: int, messages: int, sessions: int) -> None:
    body = b"Subject: bench\r\n\r\n" + b"x" * 280 + b"\r\n"

    def one(_: int) -> None:
        with smtplib.SMTP(LOOPBACK, port, local_hostname="client.example.com") as client:
            client.sendmail(SENDER, [RECIPIENT], body)

    with ThreadPoolExecutor(sessions) as pool:
        list(pool.map(one, range(messages)))


def measure(
    start: Callable[[], Controller],
    client: Callable[[int, int, int], None],
    messages: int,
    sessions: int,
) -> float:
    """Messages per second for one round against a freshly started receiver."""
    controller = start()
    try:
        began = time.perf_counter()
        client(int(controller.port), messages, sessions)
        return messages / (time.perf_counter() - began)
    finally:
        controller.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    client = smtp_source_client if shutil.which("smtp-source") else python_client
    spool = Path(tempfile.mkdtemp(prefix="smtplab-bench-"))
    journal = WireJournal()
    mailbox = Maildir(spool / RECIPIENT)
    mx_handler = MailboxHandler(
        "mx1.example.org", {"example.org"}, {RECIPIENT: mailbox}, LabClock()
    )

    def started(controller: Controller) -> Controller:
        controller.start()
        return controller

    receivers: dict[str, Callable[[], Controller]] = {
        "plain aiosmtpd Sink": lambda: started(
            Controller(
                Sink(), hostname=LOOPBACK, port=_free_port(), server_hostname="mx1.example.org"
            )
        ),
        "recording + Sink": lambda: started(
            LabController(Sink(), host_name="mx1.example.org", journal=journal)
        ),
        "lab mx (fsync Maildir)": lambda: started(
            LabController(mx_handler, host_name="mx1.example.org", journal=journal)
        ),
    }
    results: dict[str, list[float]] = {name: [] for name in receivers}
    for _ in range(args.rounds):
        for name, start in receivers.items():
            results[name].append(measure(start, client, args.messages, args.sessions))
    baseline = results["plain aiosmtpd Sink"]
    print(
        f"client: {client.__name__}, {args.messages} messages, {args.sessions} sessions, "
        f"{args.rounds} rounds (medians; ratio = median of per-round ratios to plain)"
    )
    print(f"{'receiver':<26}{'msg/s':>10}{'ratio':>8}")
    for name, rates in results.items():
        ratio = statistics.median(rate / base for rate, base in zip(rates, baseline, strict=True))
        print(f"{name:<26}{statistics.median(rates):>10.0f}{ratio:>8.2f}")
    shutil.rmtree(spool)
    return 0


def _free_port() -> int:
    """aiosmtpd's stock Controller cannot bind port 0, so ask the OS for a free one."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
