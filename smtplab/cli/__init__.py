"""smtplab: the mail lab from a terminal, for real mail clients.

``smtplab up`` starts a lab (the default world, or one from ``--world FILE``),
prints where each server listens and then every conversation as it finishes
and every queue event as it happens (queued, attempt, retry, delivered,
bounced, held ...), until Ctrl-C, SIGTERM or SIGHUP. With ``--json`` the first line
printed is one JSON object (see :meth:`smtplab.lab.Lab.describe`, plus
``root`` and ``state``) that scripts and tests rely on, and every later line is
one JSON object too, with an ``event`` key (``connection``, ``queue``, or ``dropped``
when lines a slow reader missed were left out).
``up`` also writes the first line's JSON to ``ROOT/lab.json`` (the *state
file*) and removes it when it stops. Unlike a notebook, a terminal lab dates
headers with the real time (``--fixed-clock`` keeps the chapters' clock).

The other commands work on a running lab, found through its state file
(``--lab FILE``, ``--root DIR`` or the ``SMTPLAB_LAB`` environment variable):
``send`` submits one message, ``fetch`` reads a mailbox over IMAP or POP3,
``dns`` asks the lab DNS, ``queue`` shows what the lab's queues hold.
"""

from __future__ import annotations

import io
import os
import sys

from smtplab.cli.errors import CLIError, one_line
from smtplab.cli.parser import build_parser
from smtplab.cli.worldfile import load_world, world_from_data
from smtplab.protocol.message import InvalidInput

__all__ = ["CLIError", "build_parser", "load_world", "main", "world_from_data"]


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
