"""A durable outbound queue on disk: one file per message and destination domain.

Theory of operation
-------------------
RFC 5321 §6.1: a server that answered 250 must not lose the message. So
:meth:`Spool.put` returns only when every file is on disk for good: each entry is
written to ``tmp/``, fsynced, renamed into ``queue/`` (atomic on POSIX), and the
directory is fsynced. Concurrent ``put`` calls share directory fsyncs (group
commit): one fsync made after a rename makes that rename durable, whoever made
it. A crash before the rename leaves only a file in ``tmp/``, which
:class:`Spool` deletes when it opens: half-written entries are never delivered.

:meth:`Spool.remove` does not fsync: if a crash undoes a removal, the message is
delivered once more after restart, the one duplicate that §6.1 accepts.

Each file holds one JSON line (the envelope: sender, the recipients still to
deliver, attempt count, next attempt, DSN options) and then the message bytes
with CRLF line endings, exactly as they will be sent on.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from smtplab.maildir import fsync_dir


@dataclass
class QueuedRecipient:
    """A recipient still to be delivered, with its RFC 3461 DSN options."""

    address: str
    notify: list[str] = field(default_factory=list)
    orcpt: str | None = None


@dataclass
class QueueEntry:
    """The envelope of one queued message for one destination domain."""

    qid: str
    sender: str
    domain: str
    recipients: list[QueuedRecipient]
    arrival: str
    created: float
    message_id: str | None = None
    ret: str | None = None
    envid: str | None = None
    attempts: int = 0
    next_attempt: float = 0.0
    delay_notified: bool = False

    @classmethod
    def from_json(cls, line: bytes) -> QueueEntry:
        data = json.loads(line)
        data["recipients"] = [QueuedRecipient(**r) for r in data["recipients"]]
        return cls(**data)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()


class Spool:
    """The queue folder of one server."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._queue = folder / "queue"
        self._tmp = folder / "tmp"
        for sub in (self._queue, self._tmp):
            sub.mkdir(parents=True, exist_ok=True)
        for leftover in self._tmp.iterdir():
            leftover.unlink()
        self._lock = threading.Lock()
        self._durable = threading.Condition()
        self._renamed = self._synced = 0  # rename generations: made, and made durable
        self._syncing = False
        self._next = 1 + max(
            (int(p.name.split("-")[0], 16) for p in self._queue.iterdir()), default=0
        )

    def new_qid(self) -> str:
        """A queue id unique in this spool, also across restarts."""
        with self._lock:
            qid, self._next = f"{self._next:06X}", self._next + 1
            return qid

    def put(self, entries: list[QueueEntry], message: bytes) -> None:
        """Store all entries durably, or none (OSError): the client's retry must not
        duplicate a domain's part that was stored before another part failed."""
        try:
            staged = [(self._stage(entry, message), entry.qid) for entry in entries]
            for tmp, qid in staged:
                os.replace(tmp, self._queue / qid)
            self._commit()
        except OSError:
            for entry in entries:
                (self._tmp / entry.qid).unlink(missing_ok=True)
                (self._queue / entry.qid).unlink(missing_ok=True)
            raise

    def update(self, entry: QueueEntry) -> None:
        """Rewrite an entry's envelope (after an attempt), keeping its message."""
        os.replace(self._stage(entry, self.message(entry.qid)), self._queue / entry.qid)
        self._commit()

    def remove(self, qid: str) -> None:
        """Forget a delivered entry (no fsync: see the module docstring)."""
        (self._queue / qid).unlink(missing_ok=True)

    def _commit(self) -> None:
        """Make this thread's renames durable, sharing one directory fsync with others."""
        with self._durable:
            self._renamed += 1
            mine = self._renamed
            while self._synced < mine:
                if self._syncing:
                    self._durable.wait()
                    continue
                self._syncing, target = True, self._renamed
                self._durable.release()
                try:
                    fsync_dir(self._queue)
                finally:
                    self._durable.acquire()
                    self._syncing = False
                    self._durable.notify_all()
                self._synced = max(self._synced, target)

    def message(self, qid: str) -> bytes:
        return (self._queue / qid).read_bytes().split(b"\n", 1)[1]

    def entries(self) -> list[QueueEntry]:
        """Every entry on disk, oldest first: what a restarted queue must deliver."""
        found = []
        for path in sorted(self._queue.iterdir()):
            with open(path, "rb") as handle:
                found.append(QueueEntry.from_json(handle.readline()))
        return found

    def _stage(self, entry: QueueEntry, message: bytes) -> Path:
        """Write the entry's file into ``tmp/`` and fsync it; no partial file survives."""
        tmp = self._tmp / entry.qid
        try:
            with open(tmp, "wb") as handle:
                handle.write(entry.to_json() + b"\n" + message)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        return tmp
