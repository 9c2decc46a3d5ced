"""Mailboxes on disk in Maildir format, written durably.

Theory of operation
-------------------
RFC 5321 §6.1: once a server answers 250 to the final dot, it is responsible
for the message. So :meth:`Maildir.deliver` returns only when the message is on
disk for good: it writes into ``tmp/``, fsyncs the file, renames it into
``new/`` (atomic on POSIX) and fsyncs the directory. A crash leaves at worst a
file in ``tmp/``, which no reader ever looks at.

Files hold the message with LF line endings, as Maildir readers (mail
programs, Dovecot, Python's :mod:`mailbox`) expect; SMTP's CRLF is restored
when a message is sent on.
"""

from __future__ import annotations

import email
import email.policy
import html
import itertools
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

_sequence = itertools.count(1)
_sequence_lock = threading.Lock()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class StoredMessage:
    """One message in a mailbox: its Maildir key and its bytes (LF line endings)."""

    key: str
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", ""))

    @property
    def sender(self) -> str:
        return str(self.message.get("From", ""))

    @property
    def body(self) -> str:
        part = self.message.get_body(preferencelist=("plain", "html"))
        return "" if part is None else str(part.get_content())

    def __str__(self) -> str:
        return self.raw.decode("utf-8", "replace")


class Maildir:
    """A Maildir folder (``tmp/``, ``new/``, ``cur/``) with durable delivery."""

    def __init__(self, path: Path):
        self.path = path
        for sub in ("tmp", "new", "cur"):
            (path / sub).mkdir(parents=True, exist_ok=True)

    def deliver(self, message: bytes) -> str:
        """Store ``message`` (CRLF or LF endings) durably; return its key."""
        with _sequence_lock:
            sequence = next(_sequence)
        key = f"{sequence:010d}.P{os.getpid()}.smtplab"
        tmp = self.path / "tmp" / key
        try:
            with open(tmp, "xb") as handle:
                handle.write(message.replace(b"\r\n", b"\n"))
                handle.flush()
                os.fsync(handle.fileno())
        except OSError:
            tmp.unlink(missing_ok=True)  # no half-written file left behind
            raise
        os.rename(tmp, self.path / "new" / key)
        fsync_dir(self.path / "new")
        return key

    def folder(self, name: str) -> Maildir:
        """A subfolder such as ``Junk``: a Maildir of its own at ``.Junk`` (Maildir++)."""
        return Maildir(self.path / f".{name}")

    def messages(self) -> list[StoredMessage]:
        """Every delivered message, oldest first (keys sort in delivery order)."""
        found = [p for sub in ("new", "cur") for p in (self.path / sub).iterdir()]
        found.sort(key=lambda p: p.name)
        return [StoredMessage(p.name.split(":", 1)[0], p.read_bytes()) for p in found]


class Mailbox:
    """What a reader sees of one user's Maildir: a list of messages that renders nicely."""

    def __init__(self, address: str, maildir: Maildir):
        self.address = address
        self.maildir = maildir
        self._messages = maildir.messages()

    def __len__(self) -> int:
        return len(self._messages)

    def __getitem__(self, index: int) -> StoredMessage:
        return self._messages[index]

    def __iter__(self) -> Iterator[StoredMessage]:
        return iter(self._messages)

    def summary(self) -> str:
        head = f"Mailbox of {self.address}: {len(self)} message{'s' if len(self) != 1 else ''}"
        rows = [f"  {i}. From: {m.sender}  Subject: {m.subject}" for i, m in enumerate(self)]
        return "\n".join([head, *rows])

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{i}</td><td>{html.escape(m.sender)}</td><td>{html.escape(m.subject)}</td></tr>"
            for i, m in enumerate(self)
        )
        return (
            f"<b>Mailbox of {html.escape(self.address)}</b>: {len(self)} message(s)"
            f"<table><tr><th>#</th><th>From</th><th>Subject</th></tr>{rows}</table>"
        )
