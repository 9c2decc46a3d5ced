"""``smtplab send`` and ``smtplab fetch``: a mail program's two jobs, on a running lab.

``send`` submits one message with :func:`smtplab.lab.submit.submit`, the flow ``lab.send``
uses too; ``fetch`` reads a mailbox over IMAP or POP3. Both print the transcript.
"""

from __future__ import annotations

import argparse
import email
import email.policy
from email.utils import format_datetime, make_msgid
from pathlib import Path

from smtplab.cli.errors import CLIError
from smtplab.cli.state import ca_context, lab_state, password_for, smtp_server
from smtplab.cli.worldfile import read_limited
from smtplab.lab.server import MAX_MESSAGE_SIZE
from smtplab.lab.submit import connect, submit
from smtplab.mailstore.retrieval import fetch_mailbox
from smtplab.protocol.message import InvalidInput, build_message, check_address, check_header_text
from smtplab.protocol.rules import domain_of, parse_path
from smtplab.world import (
    CLIENT_HOST,
    ROLES,
    check_password,
    mailstore_role,
)

DEFAULT_SUBJECT = "Test from smtplab send"
DEFAULT_BODY = "This is a test message, sent with smtplab send."
DEFAULT_HELO = CLIENT_HOST


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


def run_send(args: argparse.Namespace) -> int:
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
            message_id=make_msgid(domain=domain_of(sender)),
        )
        raw = message.as_bytes(policy=email.policy.SMTP)
    state = lab_state(args)
    if args.via is not None:
        server = smtp_server(state, args.via)
    else:
        submission = [
            s
            for s in state["servers"]
            if s["role"] in ROLES
            and ROLES[s["role"]].client_default
            and domain_of(sender) in s["domains"]
        ]
        if not submission:
            raise CLIError(f"no submission server serves {domain_of(sender)}: pass --via HOST")
        server = submission[0]
    role, context = ROLES[server["role"]], ca_context(state)
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
        password_of=lambda address: password_for(state, address, args.password),
    )
    print(submitted.transcript.to_text(full_data=args.full))
    print()
    for outcome in submitted.outcomes:
        print(outcome)
    return 0 if all(o.accepted for o in submitted.outcomes) else 1


def run_fetch(args: argparse.Namespace) -> int:
    address = check_address("address", args.address).lower()
    if args.password is not None:
        check_password("password", args.password)
    state = lab_state(args)
    role = mailstore_role(args.protocol, implicit_tls=args.tls == "implicit")
    listeners = [s for s in state["servers"] if s["role"] == role]
    if not listeners:
        raise CLIError("this lab runs no POP3/IMAP (install Dovecot and restart `smtplab up`)")
    result = fetch_mailbox(
        listeners[0]["host"],
        listeners[0]["port"],
        address,
        password_for(state, address, args.password),
        protocol=args.protocol,
        tls=args.tls,
        context=ca_context(state),
        delete=args.delete,
    )
    print(result.transcript.to_text(full_data=args.full))
    print()
    print(result.summary())
    return 0 if result.ok else 1
