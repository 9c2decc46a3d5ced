"""The ``smtplab`` command line: its commands, their options and defaults."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from smtplab.cli.errors import one_line
from smtplab.cli.lookup import run_dns
from smtplab.cli.mail import DEFAULT_BODY, DEFAULT_HELO, DEFAULT_SUBJECT, run_fetch, run_send
from smtplab.cli.spools import run_queue
from smtplab.cli.up import latency_option, run_up
from smtplab.queue.delivery import DEFAULT_POLICY


def add_lab_options(command: argparse.ArgumentParser) -> None:
    where = command.add_argument_group("which lab", "the `smtplab up` to talk to")
    where.add_argument(
        "--lab",
        type=path_option,
        metavar="FILE",
        help="the state file `smtplab up` printed (default: $SMTPLAB_LAB)",
    )
    where.add_argument(
        "--root",
        type=path_option,
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
        type=path_option,
        metavar="DIR",
        help="keep mailboxes and queues in DIR across restarts (default: a temporary folder)",
    )
    up.add_argument(
        "--world",
        type=path_option,
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
        type=latency_option,
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
    up.set_defaults(run=run_up)

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
        type=path_option,
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
    add_lab_options(send)
    send.set_defaults(run=run_send)

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
    add_lab_options(fetch)
    fetch.set_defaults(run=run_fetch)

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
    add_lab_options(ask)
    ask.set_defaults(run=run_dns)

    show = commands.add_parser(
        "queue",
        help="show what the lab's queues hold",
        description="List the messages waiting in the outbound queues (ROOT/spool/HOST/queue), "
        "held ones marked as held.",
    )
    show.add_argument(
        "--json", action="store_true", help="one JSON object per queued message (default: text)"
    )
    add_lab_options(show)
    show.set_defaults(run=run_queue)
    return parser


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors in one line like every other error (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{one_line(f'{self.prog}: {message}')} (see {self.prog} --help)\n")


def path_option(text: str) -> Path:
    """A FILE or DIR argument: an empty one would be the current folder, so it is refused."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    return Path(text)
