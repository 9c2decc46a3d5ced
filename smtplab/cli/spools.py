"""``smtplab queue``: what the running lab's queues hold, read from its spools with
:meth:`Spool.stored` and :meth:`Spool.read` (which change nothing)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from smtplab.cli.errors import CLIError
from smtplab.cli.state import lab_state
from smtplab.mailstore.maildir import StoredMessage
from smtplab.queue.spool import NotAnEntry, Spool


def run_queue(args: argparse.Namespace) -> int:
    """List the spools of ROOT; an entry that cannot be read is named on stderr (status 1)."""
    root = args.root
    if root is None:
        root = Path(lab_state(args)["root"])
    elif not root.is_dir():
        raise CLIError(f"--root {root}: {'not a folder' if root.exists() else 'no such folder'}")
    spool = root / "spool"
    entries = []
    unreadable = 0
    for folder in sorted(spool.glob("*/queue")) if spool.is_dir() else []:
        for path in Spool.stored(folder.parent):
            try:
                entry, message = Spool.read(path)
            except FileNotFoundError:  # delivered while we looked
                continue
            except (NotAnEntry, OSError) as error:
                print(f"smtplab queue: {path} is not a queue entry: {error}", file=sys.stderr)
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
