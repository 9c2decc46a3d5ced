"""``smtplab``: the same lab from a terminal, for real mail clients.

``smtplab up`` starts the default world, prints where each server listens and
then every conversation as it finishes, until Ctrl-C or SIGTERM. With
``--json`` the first line printed is one JSON object (see
:meth:`smtplab.lab.Lab.describe`) that scripts and tests rely on.
"""

from __future__ import annotations

import argparse
import json
import queue
import signal
import sys
import threading
from types import FrameType

from smtplab.lab import Lab
from smtplab.wire import WireLog


def _up(args: argparse.Namespace) -> int:
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    finished: queue.Queue[WireLog] = queue.Queue()
    with Lab(name="cli") as lab:
        lab.journal.listen(lambda log: log.view == "server" and finished.put(log))
        if args.json:
            print(json.dumps(lab.describe()), flush=True)
        else:
            print(lab.table())
            for user in lab.world.users:
                print(f"user {user.address} password {user.password}")
            print("Press Ctrl-C to stop.", flush=True)
        while not stopping.is_set():
            try:
                log = finished.get(timeout=0.2)
            except queue.Empty:
                continue
            print(f"\n--- {log.client} → {log.server}\n{log.transcript()}", flush=True)
    print("lab stopped", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smtplab", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the lab's servers until Ctrl-C")
    up.add_argument("--json", action="store_true", help="print the lab as one JSON line first")
    up.set_defaults(run=_up)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
