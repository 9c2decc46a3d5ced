"""Mailboxes on disk in Maildir format, written durably.

Theory of operation
-------------------
RFC 5321 §6.1: once a server answers 250 to the final dot, it is responsible
for the message. So :meth:`Maildir.deliver` returns only when the message is on
disk for good: it writes into ``tmp/``, fsyncs the file, links it into ``new/``
and fsyncs the directory. A crash leaves at worst a file in ``tmp/``, which no
reader ever looks at.

Every message gets a name no other delivery can have, as the Maildir
specification (cr.yp.to/proto/maildir.html) asks: the time in seconds, a
delivery identifier (``M`` microseconds, ``P`` process id, ``Q`` deliveries by
this process, ``R`` random bits) and the host name, e.g.
``1793610000.M000001P4242Q7R3f2a09c1.lab-host``. The process id alone is not
enough: a lab restarted in a container is PID 1 again. And the move into
``new/`` never replaces a file: ``os.link`` fails on an existing name (where
``os.rename`` would silently overwrite a delivered message), and the delivery
then takes a new name. Within one process the time part never goes backwards,
so names sort in delivery order, which is how :meth:`Maildir.messages` lists
them.

Files hold the message with LF line endings, as Maildir readers (mail
programs, Dovecot, Python's :mod:`mailbox`) expect; SMTP's CRLF is restored
when a message is sent on.
"""

from __future__ import annotations

import html
import itertools
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from functools import cached_property
from pathlib import Path

from smtplab.paths import inside
from smtplab.protocol import reader

_deliveries = itertools.count(1)
_last_stamp = 0  # microseconds of the newest name this process made
_name_lock = threading.Lock()
#: Attempts at a fresh name before giving up (a clash needs the same microsecond,
#: process id and 32 random bits: a second attempt already never happens).
NAME_ATTEMPTS = 5


def _host_part() -> str:
    """gethostname() as the Maildir specification spells it in names (no / or :)."""
    return socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"


def unique_name() -> str:
    """A Maildir unique name: time, delivery identifier, host (see the module docstring)."""
    global _last_stamp
    with _name_lock:
        stamp = max(time.time_ns() // 1000, _last_stamp + 1)  # never backwards in a process
        _last_stamp = stamp
        delivery = next(_deliveries)
    seconds, micros = divmod(stamp, 1_000_000)
    return f"{seconds}.M{micros:06d}P{os.getpid()}Q{delivery}R{secrets.token_hex(4)}.{_host_part()}"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class StoredMessage:
    """One message in a mailbox: its Maildir key and its bytes (LF line endings).

    A message that breaks a reading limit (hostile MIME, see :mod:`smtplab.protocol.reader`)
    has a :attr:`problem`; its subject, sender and body read as empty, ``message``
    raises :class:`~smtplab.protocol.reader.UnreadableMessage`, and ``raw`` still holds it.
    """

    key: str
    raw: bytes

    @cached_property
    def problem(self) -> str | None:
        """The reading limit this message breaks, or None for a message that reads."""
        return reader.problem(self.raw)

    @property
    def notice(self) -> str | None:
        """ "could not be displayed: ..." with the size, for a message with a problem."""
        return None if self.problem is None else reader.notice(self.problem, len(self.raw))

    @property
    def message(self) -> EmailMessage:
        """The message parsed by the email package (UnreadableMessage past a limit)."""
        return reader.parse(self.raw)

    @cached_property
    def _from_and_subject(self) -> tuple[str, str]:
        if self.problem is not None:
            return "", ""
        head = reader.parse(self.raw, headers_only=True)
        return str(head.get("From", "")), str(head.get("Subject", ""))

    @property
    def subject(self) -> str:
        return self._from_and_subject[1]

    @property
    def sender(self) -> str:
        return self._from_and_subject[0]

    @property
    def body(self) -> str:
        if self.problem is not None:
            return ""
        part = self.message.get_body(preferencelist=("plain", "html"))
        return "" if part is None else str(part.get_content())

    def summary(self) -> str:
        """One line for a mailbox listing: From and Subject, or why it cannot be shown."""
        return self.notice or f"From: {self.sender}  Subject: {self.subject}"

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
        tmp = self._write_tmp(message.replace(b"\r\n", b"\n"))
        try:
            key = self._link_new(tmp)
        finally:
            tmp.unlink(missing_ok=True)  # linked into new/, or failed: either way done
        fsync_dir(self.path / "new")
        return key

    def _write_tmp(self, content: bytes) -> Path:
        """Write ``content`` to a fresh file in ``tmp/`` and fsync it."""
        for _attempt in range(NAME_ATTEMPTS):
            tmp = self.path / "tmp" / unique_name()
            try:
                handle = open(tmp, "xb")  # noqa: SIM115 (closed below, whatever happens)
            except FileExistsError:
                continue  # another delivery's file: never touch it
            try:
                with handle:
                    handle.write(content)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError:
                tmp.unlink(missing_ok=True)  # no half-written file left behind
                raise
            return tmp
        raise FileExistsError(f"no fresh name in {self.path / 'tmp'} after {NAME_ATTEMPTS} tries")

    def _link_new(self, tmp: Path) -> str:
        """Link ``tmp`` into ``new/`` under a name no message has; return that name."""
        key = tmp.name
        for _attempt in range(NAME_ATTEMPTS):
            try:
                os.link(tmp, self.path / "new" / key)  # fails, never replaces, if taken
            except FileExistsError:
                key = unique_name()
                continue
            return key
        raise FileExistsError(f"no fresh name in {self.path / 'new'} after {NAME_ATTEMPTS} tries")

    def folder(self, name: str) -> Maildir:
        """A subfolder such as ``Junk``: a Maildir of its own at ``.Junk`` (Maildir++)."""
        return Maildir(inside(self.path, f".{name}", field="folder"))

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
        rows = [f"  {i}. {m.summary()}" for i, m in enumerate(self)]
        return "\n".join([head, *rows])

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        rows = "".join(
            f'<tr><td>{i}</td><td colspan="2">{html.escape(m.notice)}</td></tr>'
            if m.notice
            else f"<tr><td>{i}</td><td>{html.escape(m.sender)}</td>"
            f"<td>{html.escape(m.subject)}</td></tr>"
            for i, m in enumerate(self)
        )
        return (
            f"<b>Mailbox of {html.escape(self.address)}</b>: {len(self)} message(s)"
            f"<table><tr><th>#</th><th>From</th><th>Subject</th></tr>{rows}</table>"
        )
