"""A durable outbound queue on disk: one file per message and destination domain.

Theory of operation
-------------------
RFC 5321 §6.1: a server that answered 250 must not lose the message. So
:meth:`Spool.put` returns only when every file is on disk for good: each entry is
written to ``tmp/``, fsynced, renamed into ``queue/`` (atomic on POSIX), and the
directory is fsynced. A crash before the rename leaves only a file in ``tmp/``,
which :class:`Spool` deletes when it opens: half-written entries are never
delivered.

Writes are group-committed, as databases do: one writer thread takes every
request waiting, writes all their files, then fsyncs them, renames them and
fsyncs the directory once, and meanwhile the next requests gather. The first
fsync of a batch makes the journal commit the others' data too, so under load
a message costs well under the two journal commits it costs alone. Callers
get a future (:meth:`Spool.put_later`), so a server's event loop waits without
a thread per message; the writer runs only while there is work. Each request
still gets all of its files or none.

:meth:`Spool.remove` does not fsync: if a crash undoes a removal, the message is
delivered once more after restart, the one duplicate that §6.1 accepts.

The spool also keeps the messages it wrote in memory (up to ``CACHE_LIMIT``
bytes), because the queue sends each one moments after storing it: reading it
back would open the file again, behind other writers' fsyncs. After a restart,
or past the limit, messages are read from disk.

A file in ``queue/`` that cannot be read as an entry is moved to ``corrupt/``
when the queue starts, so one damaged file never keeps the rest from being
delivered, and nothing is deleted that a person may want to recover.

Each file holds one JSON line (the envelope: sender, the recipients still to
deliver, attempt count, next attempt, DSN options, and whether and since when
the entry is held) and then the message bytes with CRLF line endings, exactly
as they will be sent on.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

from smtplab.mailstore.maildir import fsync_dir

#: Bytes of recently stored messages the spool keeps in memory (see above).
CACHE_LIMIT = 32 << 20


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
    #: Held (``DeliveryQueue.hold``): since when (epoch seconds), and the seconds it was
    #: held before, which do not count towards the queue's maximum age.
    held_since: float | None = None
    held_seconds: float = 0.0

    def age(self, now: float) -> float:
        """Seconds in the queue, not counting the time it was held."""
        held = self.held_seconds + (now - self.held_since if self.held_since is not None else 0)
        return now - self.created - held

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
        self._batch = threading.Lock()
        self._waiting: list[_Write] = []  # for the next batch
        self._writer: threading.Thread | None = None
        self._cached: dict[str, bytes] = {}
        self._cached_bytes = 0
        self._next = 1 + max((_number(p.name) for p in self._queue.iterdir()), default=0)
        #: Files :meth:`entries` could not read, moved aside to ``corrupt/`` (never deleted).
        self.set_aside: list[Path] = []

    def new_qid(self) -> str:
        """A queue id unique in this spool, also across restarts."""
        with self._lock:
            qid, self._next = f"{self._next:06X}", self._next + 1
            return qid

    def put(self, entries: list[QueueEntry], message: bytes) -> None:
        """Store all entries durably, or none (OSError): the client's retry must not
        duplicate a domain's part that was stored before another part failed."""
        self.put_later(entries, message).result()

    def put_later(self, entries: list[QueueEntry], message: bytes) -> Future[None]:
        """:meth:`put`, without waiting: the future is done once the entries are durable."""
        return self._submit(_Write([(entry, message) for entry in entries], replaces=False))

    def update(self, entry: QueueEntry) -> None:
        """Rewrite an entry's envelope (after an attempt), keeping its message."""
        self._submit(_Write([(entry, self.message(entry.qid))], replaces=True)).result()

    def remove(self, qid: str) -> None:
        """Forget a delivered entry (no fsync: see the module docstring)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self._queue, qid))  # not pathlib's /: once per message
        with self._lock:
            self._cached_bytes -= len(self._cached.pop(qid, b""))

    def _submit(self, request: _Write) -> Future[None]:
        with self._batch:
            self._waiting.append(request)
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_batches, name=f"spool {self.folder.name}", daemon=True
                )
                self._writer.start()
        return request.future

    def _write_batches(self) -> None:
        """The writer: commit what has gathered, again and again, until nothing has."""
        while True:
            with self._batch:
                gathered, self._waiting = self._waiting, []
                if not gathered:
                    self._writer = None
                    return
            # A request whose caller gave up (its session ended) before the write began is
            # dropped: it never got a 250. Once running, a future can no longer be cancelled.
            batch = [r for r in gathered if r.future.set_running_or_notify_cancel()]
            try:
                self._commit(batch)
            except BaseException as error:  # a bug: every caller of this batch hears of it
                for request in batch:
                    request.error = request.error or error  # type: ignore[assignment]
            for request in batch:
                if request.error is None:
                    request.future.set_result(None)
                else:
                    request.future.set_exception(request.error)

    def _commit(self, batch: list[_Write]) -> None:
        """Write every request's files, fsync them, rename them, fsync the directory once."""
        staged: list[tuple[_Write, list[tuple[str, BinaryIO]]]] = []
        for request in batch:
            files: list[tuple[str, BinaryIO]] = []
            try:
                for entry, message in request.files:
                    # Open until the batch's fsync phase, closed by _sync or _undo.
                    files.append((entry.qid, open(self._tmp / entry.qid, "wb")))  # noqa: SIM115
                    files[-1][1].write(entry.to_json() + b"\n" + message)
                    files[-1][1].flush()
                staged.append((request, files))
            except OSError as error:
                self._undo(request, files, error)
        for step in (self._sync, self._publish):
            for request, files in list(staged):
                try:
                    step(files)
                except OSError as error:
                    self._undo(request, files, error)
                    staged.remove((request, files))
        if staged:
            try:
                fsync_dir(self._queue)
            except OSError as error:
                for request, files in staged:
                    self._undo(request, files, error)
                return
        for request, _ in staged:
            self._remember(request)

    @staticmethod
    def _sync(files: list[tuple[str, BinaryIO]]) -> None:
        for _, handle in files:
            os.fsync(handle.fileno())
            handle.close()

    def _publish(self, files: list[tuple[str, BinaryIO]]) -> None:
        for qid, _ in files:
            os.replace(self._tmp / qid, self._queue / qid)

    def _remember(self, request: _Write) -> None:
        with self._lock:
            for entry, message in request.files:
                if entry.qid not in self._cached and (
                    self._cached_bytes + len(message) <= CACHE_LIMIT
                ):
                    self._cached[entry.qid] = message
                    self._cached_bytes += len(message)

    def _undo(self, request: _Write, files: list[tuple[str, BinaryIO]], error: OSError) -> None:
        """A request failed: none of its new files may stay (an update keeps the old one)."""
        request.error = error
        for qid, handle in files:
            handle.close()
            with contextlib.suppress(OSError):  # the folder may be what failed
                (self._tmp / qid).unlink(missing_ok=True)
            if not request.replaces:
                with contextlib.suppress(OSError):
                    (self._queue / qid).unlink(missing_ok=True)

    def message(self, qid: str) -> bytes:
        cached = self._cached.get(qid)
        if cached is not None:
            return cached
        return (self._queue / qid).read_bytes().split(b"\n", 1)[1]

    def entries(self) -> list[QueueEntry]:
        """Every entry on disk, oldest first: what a restarted queue must deliver.

        A file that is no entry (cut short, edited, left by another program) must not keep
        the others from being delivered: it is moved to ``corrupt/`` for a person to look
        at, and listed in :attr:`set_aside`.
        """
        found = []
        for path in sorted(self._queue.iterdir()):
            try:
                with open(path, "rb") as handle:
                    entry = QueueEntry.from_json(handle.readline())
                if entry.qid != path.name:
                    raise ValueError(f"names entry {entry.qid!r}")
            except (OSError, ValueError, TypeError, KeyError, AttributeError):
                self._set_aside(path)
                continue
            found.append(entry)
        return found

    def _set_aside(self, path: Path) -> None:
        corrupt = self.folder / "corrupt"
        corrupt.mkdir(exist_ok=True)
        with contextlib.suppress(OSError):  # if it cannot even be moved, it stays unread
            os.replace(path, corrupt / path.name)
            self.set_aside.append(corrupt / path.name)

    @staticmethod
    def look(folder: Path) -> Iterator[tuple[Path, QueueEntry | Exception, bytes]]:
        """The spool at ``folder`` read, changing nothing (``smtplab queue``, from another
        process, while the lab runs): each file of ``queue/`` oldest first, with its entry
        (or why it is none) and its message. A file removed while we look is left out."""
        queue = folder / "queue"
        for path in sorted(queue.iterdir()) if queue.is_dir() else []:
            try:
                head, _, message = path.read_bytes().partition(b"\n")
                entry = QueueEntry.from_json(head)
            except FileNotFoundError:  # delivered while we looked
                continue
            except (OSError, ValueError, KeyError, TypeError, RecursionError) as error:
                yield path, error, b""
                continue
            yield path, entry, message


def _number(name: str) -> int:
    """The queue id's number in an entry's file name (``00002A-1``); 0 for any other name."""
    try:
        return int(name.split("-")[0], 16)
    except ValueError:
        return 0


@dataclass
class _Write:
    """One caller's files (entry, message), waiting for a batch; then its outcome."""

    files: list[tuple[QueueEntry, bytes]]
    replaces: bool  # an update: the entry's older file stays if this one fails
    error: OSError | None = None
    future: Future[None] = field(default_factory=Future)
