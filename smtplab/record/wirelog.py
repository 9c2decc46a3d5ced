"""Recording what crosses a socket, and reading it back as a conversation.

Theory of operation
-------------------
Recording must be cheap (it runs for every byte the servers handle) and
faithful (a notebook may never show a transcript that differs from the wire).
So a :class:`WireLog` only appends ``(time, side, bytes)`` chunks; nothing is
parsed while the connection is busy. Turning the chunks into a
:class:`~smtplab.record.transcript.Transcript` happens later, on the reader's thread,
in :func:`parse_conversation`, a pure function.

The parser follows the server's reading rules so that both ends agree:

* client bytes are split into command lines on LF, as the server reads them;
* after ``DATA`` the client's bytes are held until the server's reply to it:
  a 354 turns them into message data, ending at the first ``CRLF . CRLF``
  (RFC 5321 §4.1.1.4 — never at a bare LF, see §2.3.8);
* after ``AUTH`` a 334 challenge makes the next client line a secret response;
* after a 220 to ``STARTTLS`` the client's bytes wait for the TLS handshake:
  whatever arrived before it is discarded by the server (RFC 3207 §4.2, the
  command-injection attack), and the transcript says so;
* replies are matched to commands in order, which is all that pipelining
  (RFC 2920) needs.

Each log keeps at most ``limit`` bytes per side, and at most ``MAX_CHUNKS``
chunks, so that a 10 MB garbage line, a client dripping one byte per packet or a
bulk run cannot exhaust the kernel's memory. Past either bound the recording
stops, for both sides at once (a ``cut`` chunk says where and why): a transcript
never shows a client's later command (an IMAP ``LOGOUT``) without the server
data it answered, and a line cut short is not taken for one the peer left
unfinished. At the close a note counts what was not recorded. A log in
a :class:`~smtplab.record.recordings.Recordings` also reports what it costs in memory
(``CHUNK_COST`` per chunk beyond its bytes), so that the journal can keep all
its recordings under one byte budget.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from smtplab.protocol.rules import DATA_TERMINATOR, command_verb, parse_reply_line
from smtplab.record.transcript import (
    Closed,
    Command,
    Data,
    Event,
    Note,
    Opened,
    Reply,
    TLSStarted,
    Transcript,
)

ChunkKind = Literal["client", "server", "tls", "note", "cut", "close"]
DEFAULT_LIMIT = 1 << 20
#: What one chunk costs in memory beyond its bytes: the tuple, its float, the bytes
#: object's header and a list slot (about 120 bytes on CPython 3.11-3.13, 64-bit).
CHUNK_COST = 128
#: Chunks one log keeps. A session of a thousand messages needs about ten thousand;
#: a client dripping a byte per packet would otherwise pay 128 bytes per byte.
MAX_CHUNKS = 1 << 16

_GREETING = "<greeting>"
_AUTH_STEP = "<auth-response>"
_DATA_REPLY = "<end-of-data>"  # the reply due once the message data has ended
_HOLDING_VERBS = {"DATA", "AUTH", _AUTH_STEP, "STARTTLS"}


@dataclass
class WireLog:
    """The raw bytes of one connection, as recorded by one of its ends.

    ``client``/``server`` are host names; ``peer`` identifies the connection's
    client socket (``(ip, port)``) so that the two ends' logs can be paired.
    """

    client: str
    server: str
    view: Literal["client", "server"]
    peer: tuple[str, int] | None = None
    limit: int = DEFAULT_LIMIT
    started: float = field(default_factory=time.monotonic)
    chunks: list[tuple[float, ChunkKind, bytes]] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)
    #: Bytes the chunks take in memory (``CHUNK_COST`` each beyond their payload).
    cost: int = 0
    #: Told of every chunk's cost: the journal's byte budget (see Recordings).
    budget: Callable[[int], None] | None = field(default=None, repr=False, compare=False)
    #: True once :meth:`discard` dropped the recorded bytes.
    dropped: bool = False
    #: True once a bound stopped the recording (see :meth:`record`).
    stopped: bool = False
    _sizes: dict[str, int] = field(default_factory=lambda: {"client": 0, "server": 0})
    _dropped: dict[str, int] = field(default_factory=lambda: {"client": 0, "server": 0})

    def _add(self, kind: ChunkKind, payload: bytes) -> None:
        self.chunks.append((time.monotonic() - self.started, kind, payload))
        cost = len(payload) + CHUNK_COST
        self.cost += cost
        if self.budget is not None:
            self.budget(cost)

    def record(self, side: Literal["client", "server"], data: bytes) -> None:
        """Append bytes one side sent; once a bound is reached, only their count is kept."""
        if not self.stopped and len(self.chunks) >= MAX_CHUNKS:
            self._stop(f"it holds at most {MAX_CHUNKS} pieces")
        if self.stopped:
            self._dropped[side] += len(data)
            return
        room = self.limit - self._sizes[side]
        if len(data) > room:
            self._dropped[side] += len(data) - room
            data = data[:room]
            if data:
                self._sizes[side] += len(data)
                self._add(side, data)
            self._stop(f"the {side} sent more than the {self.limit} bytes it keeps of a side")
            return
        self._sizes[side] += len(data)
        self._add(side, data)

    def _stop(self, why: str) -> None:
        self.stopped = True
        self._add("cut", f"the recording stopped here: {why}".encode())

    def tls_started(self, version: str, cipher: str) -> None:
        self._add("tls", f"{version}\0{cipher}".encode())

    def note(self, text: str) -> None:
        self._add("note", text.encode())

    def close(self) -> None:
        """Mark the end of the connection; idempotent."""
        if self.closed.is_set():
            return
        for side, dropped in self._dropped.items():
            if dropped:
                self.note(f"{dropped} more bytes from the {side} were not recorded")
        self._add("close", b"")
        self.closed.set()

    def discard(self, why: str) -> int:
        """Drop a closed log's recorded bytes, leaving a note that says so; return the
        bytes freed. The log stays (a journey may still show it), as a stub."""
        assert self.closed.is_set(), "only a finished recording is dropped"
        if self.dropped:
            return 0
        self.dropped = True
        recorded = sum(len(p) for _, kind, p in self.chunks if kind in ("client", "server"))
        end = self.chunks[-1][0] if self.chunks else 0.0
        note = f"{recorded} recorded bytes of this connection were dropped: {why}".encode()
        before = self.cost
        self.chunks = [(0.0, "note", note), (end, "close", b"")]
        self.cost = len(note) + 2 * CHUNK_COST
        return before - self.cost

    def transcript(self) -> Transcript:
        """Parse the chunks recorded so far into a Transcript."""
        events = parse_conversation(self.client, self.server, list(self.chunks))
        return Transcript(self.client, self.server, tuple(events), view=self.view)


class ReadTap:
    """The socket file a client library (smtplib, poplib, imaplib) reads the server's
    replies from, copying every read into a WireLog: the client end's record."""

    def __init__(self, inner: Any, wire: WireLog):
        self._inner = inner
        self._wire = wire

    def readline(self, size: int | None = -1) -> bytes:
        data: bytes = self._inner.readline(size)
        if data:
            self._wire.record("server", data)
        return data

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._inner.read(size)
        if data:
            self._wire.record("server", data)
        return data

    def close(self) -> None:
        self._inner.close()


def _decode(line: bytes) -> str:
    return line.decode("utf-8", "backslashreplace").replace("\0", "\\x00")


@dataclass
class _Parser:
    """State of :func:`parse_conversation` (kept in one place for readability)."""

    events: list[Event] = field(default_factory=list)
    client_buf: bytearray = field(default_factory=bytearray)
    server_buf: bytearray = field(default_factory=bytearray)
    reply_lines: list[str] = field(default_factory=list)
    pending: deque[str] = field(default_factory=lambda: deque([_GREETING]))
    mode: Literal["command", "data", "auth", "tls"] = "command"
    now: float = 0.0

    def client_bytes(self, data: bytes) -> None:
        self.client_buf += data
        self._drain_client()

    def server_bytes(self, data: bytes) -> None:
        self.server_buf += data
        while (end := self.server_buf.find(b"\n")) >= 0:
            raw = bytes(self.server_buf[: end + 1])
            del self.server_buf[: end + 1]
            self._server_line(_decode(raw.rstrip(b"\r\n")))

    def _server_line(self, text: str) -> None:
        parsed = parse_reply_line(text)
        if parsed is None:
            self.events.append(Note(self.now, f"server sent a line that is not a reply: {text!r}"))
            return
        self.reply_lines.append(parsed.text)
        if not parsed.last:
            return
        self.events.append(Reply(self.now, parsed.code, tuple(self.reply_lines)))
        self.reply_lines.clear()
        answered = self.pending.popleft() if self.pending else ""
        if answered == "DATA" and parsed.code == 354:
            self.mode = "data"
        elif answered in ("AUTH", _AUTH_STEP) and parsed.code == 334:
            self.mode = "auth"
        elif answered == "STARTTLS" and parsed.code == 220:
            self.mode = "tls"
        self._drain_client()

    def _holding(self) -> bool:
        """True while the meaning of the client's next bytes depends on a reply."""
        return bool(self.pending) and self.pending[-1] in _HOLDING_VERBS

    def tls_started(self) -> None:
        """The handshake is done: bytes sent in the clear before it were never read."""
        if self.mode == "tls" and self.client_buf:
            self.events.append(
                Note(
                    self.now,
                    f"{len(self.client_buf)} bytes sent before TLS were discarded (RFC 3207 §4.2)",
                )
            )
            self.client_buf.clear()
        self.mode = "command"

    def _drain_client(self) -> None:
        while self.client_buf and self.mode != "tls":
            if self.mode == "data":
                if not self._take_data():
                    return
                continue
            if self._holding() and self.mode != "auth":
                return
            end = self.client_buf.find(b"\n")
            if end < 0:
                return
            raw = bytes(self.client_buf[: end + 1])
            del self.client_buf[: end + 1]
            text = _decode(raw.rstrip(b"\r\n"))
            if self.mode == "auth":
                self.mode = "command"
                self.events.append(Command(self.now, text, secret=True))
                self.pending.append(_AUTH_STEP)
            else:
                self.events.append(Command(self.now, text))
                self.pending.append(command_verb(text))

    def _take_data(self) -> bool:
        buf = self.client_buf
        if buf.startswith(b".\r\n"):
            end = 3
        else:
            found = buf.find(DATA_TERMINATOR)
            if found < 0:
                return False
            end = found + len(DATA_TERMINATOR)
        self.events.append(Data(self.now, bytes(buf[:end])))
        del buf[:end]
        self.mode = "command"
        self.pending.append(_DATA_REPLY)
        return True

    def stopped(self) -> None:
        """The recording stopped: what is half read was cut by it, not left unfinished."""
        self.client_buf.clear()
        self.server_buf.clear()
        self.reply_lines.clear()

    def finish(self) -> None:
        for side, buf in (("client", self.client_buf), ("server", self.server_buf)):
            if buf:
                what = "message data" if side == "client" and self.mode == "data" else "bytes"
                self.events.append(
                    Note(self.now, f"{side} sent {len(buf)} {what} without finishing the line")
                )
                buf.clear()


def parse_conversation(
    client: str, server: str, chunks: list[tuple[float, ChunkKind, bytes]]
) -> list[Event]:
    """Turn recorded chunks into transcript events (pure; see the module docstring)."""
    parser = _Parser()
    parser.events.append(Opened(0.0, client, server))
    for t, kind, payload in chunks:
        parser.now = t
        if kind == "client":
            parser.client_bytes(payload)
        elif kind == "server":
            parser.server_bytes(payload)
        elif kind == "tls":
            version, _, cipher = payload.decode("utf-8", "replace").partition("\0")
            parser.tls_started()
            parser.events.append(TLSStarted(t, version, cipher))
        elif kind == "note":
            parser.events.append(Note(t, payload.decode("utf-8", "replace")))
        elif kind == "cut":
            parser.stopped()
            parser.events.append(Note(t, payload.decode("utf-8", "replace")))
        elif kind == "close":
            parser.finish()
            parser.events.append(Closed(t))
    return parser.events
