"""A wiretap for the lessons: a TCP relay that keeps a copy of every byte it forwards.

Theory of operation
-------------------
:class:`Eavesdropper` sits between a client and a server on 127.0.0.1 and
records each chunk *before* forwarding it, so once a client has read a reply,
everything it sent before that reply, and the reply itself, is already
recorded: tests and notebooks need no waiting. One selector thread does all the
work; a socket pair wakes it up to stop. :meth:`Eavesdropper.view` shows what a
wiretap sees: text in the clear, and after STARTTLS only TLS records
(:mod:`smtplab.tls.records`), which is why TLS matters.
"""

from __future__ import annotations

import selectors
import socket
import string
import threading
from types import TracebackType
from typing import Literal

from smtplab.tls.records import describe_tls, is_tls
from smtplab.world import LOOPBACK

Direction = Literal["client", "server"]

RECORD_LIMIT = 1 << 20
_PRINTABLE = frozenset(string.printable.encode("ascii")) - frozenset(b"\x0b\x0c")
_ARROWS: dict[Direction, str] = {"client": " -> ", "server": "<-  "}


class _Pipe:
    """One direction of one relayed connection: bytes read from ``src`` for ``dst``."""

    def __init__(self, src: socket.socket, dst: socket.socket, direction: Direction):
        self.src = src
        self.dst = dst
        self.direction = direction
        self.pending = bytearray()
        self.eof = False
        self.shut = False


class Eavesdropper:
    """A TCP relay on 127.0.0.1 that keeps a copy of every byte, as a wiretap would.

    Point a client at :attr:`port` instead of the server's port. ``chunks`` holds
    ``("client", bytes)`` / ``("server", bytes)`` in the order the relay read
    them, at most ``limit`` bytes per direction (``truncated`` says if more went by).
    """

    def __init__(self, target_port: int, *, target_host: str = LOOPBACK, limit: int = RECORD_LIMIT):
        self.target = (target_host, target_port)
        self.limit = limit
        self.chunks: list[tuple[Direction, bytes]] = []
        self.truncated = False
        self._recorded: dict[Direction, int] = {"client": 0, "server": 0}
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._pipes: dict[socket.socket, tuple[_Pipe, _Pipe]] = {}  # sock -> (out, in)
        self._thread: threading.Thread | None = None
        self._stopped = False

    # --- lifecycle

    def start(self) -> Eavesdropper:
        if self._thread is None:
            self._selector.register(self._listener, selectors.EVENT_READ)
            self._selector.register(self._wake_r, selectors.EVENT_READ)
            self._thread = threading.Thread(target=self._run, name="eavesdropper", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop relaying, close every socket and wait for the thread (safe to repeat)."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread is not None:
            self._wake_w.send(b"x")
            self._thread.join()
        else:
            self._close_all()

    def __enter__(self) -> Eavesdropper:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def clear(self) -> None:
        """Forget what was recorded so far (the next connection starts a fresh view)."""
        self.chunks = []
        self._recorded = {"client": 0, "server": 0}
        self.truncated = False

    # --- what was seen

    def data(self, direction: Direction) -> bytes:
        """Everything recorded in one direction, joined."""
        return b"".join(chunk for side, chunk in list(self.chunks) if side == direction)

    def view(self, limit: int = 40, hex_bytes: int = 16) -> str:
        """What a wiretap shows: readable lines as text, TLS records by what they are.

        Consecutive chunks in the same direction are joined first, since how TCP
        happened to split them means nothing. A run of printable ASCII becomes
        one line per text line; a run of TLS records one line per group of like
        records (:func:`~smtplab.tls.records.describe_tls`): the handshake sent in
        the clear, with the server name a ClientHello asks for, then
        ``application_data`` that only the two ends can read. Anything else
        becomes ``[N bytes, not text]`` and its first ``hex_bytes`` bytes. At most
        ``limit`` lines are shown.
        """
        runs: list[tuple[Direction, bytes]] = []
        for side, chunk in list(self.chunks):
            if runs and runs[-1][0] == side:
                runs[-1] = (side, runs[-1][1] + chunk)
            else:
                runs.append((side, chunk))
        lines: list[str] = []
        encrypted: dict[Direction, bool] = {"client": False, "server": False}
        for side, run in runs:
            arrow = _ARROWS[side]
            if all(byte in _PRINTABLE for byte in run):
                encrypted = {"client": False, "server": False}  # plain text: a new connection
                text = run.decode("ascii")
                lines.extend(arrow + line.rstrip("\r") for line in text.splitlines())
            elif is_tls(run):
                records, encrypted[side] = describe_tls(run, encrypted=encrypted[side])
                lines.extend(f"{arrow}{record}" for record in records)
            else:
                shown = " ".join(f"{byte:02x}" for byte in run[:hex_bytes])
                more = " ..." if len(run) > hex_bytes else ""
                lines.append(f"{arrow}[{len(run)} bytes, not text] {shown}{more}")
        if len(lines) > limit:
            hidden = len(lines) - limit
            lines = [*lines[:limit], f"... {hidden} more line{'s' if hidden != 1 else ''}"]
        if self.truncated:
            lines.append(f"[recording stopped after {self.limit} bytes in one direction]")
        return "\n".join(lines)

    # --- the relay thread

    def _record(self, direction: Direction, data: bytes) -> None:
        room = self.limit - self._recorded[direction]
        if len(data) > room:
            self.truncated = True
            data = data[: max(room, 0)]
        if data:
            self._recorded[direction] += len(data)
            self.chunks.append((direction, bytes(data)))

    def _run(self) -> None:
        try:
            while True:
                for key, events in self._selector.select():
                    sock = key.fileobj
                    if sock is self._wake_r:
                        return
                    if sock is self._listener:
                        self._accept()
                    elif isinstance(sock, socket.socket) and sock in self._pipes:
                        self._service(sock, events)
        finally:
            self._close_all()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            server = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return
        for sock in (client, server):
            sock.setblocking(False)
        upstream = _Pipe(client, server, "client")
        downstream = _Pipe(server, client, "server")
        self._pipes[client] = (upstream, downstream)
        self._pipes[server] = (downstream, upstream)
        self._selector.register(client, selectors.EVENT_READ)
        self._selector.register(server, selectors.EVENT_READ)

    def _service(self, sock: socket.socket, events: int) -> None:
        outgoing, incoming = self._pipes[sock]
        try:
            if events & selectors.EVENT_READ and not outgoing.eof and not outgoing.pending:
                data = sock.recv(65536)
                if data:
                    self._record(outgoing.direction, data)
                    outgoing.pending += data
                else:
                    outgoing.eof = True
                self._flush(outgoing)
            if events & selectors.EVENT_WRITE:
                self._flush(incoming)
        except OSError:
            self._drop(sock)
            return
        if outgoing.shut and incoming.shut:
            self._drop(sock)
            return
        self._update(outgoing.src)
        self._update(outgoing.dst)

    def _flush(self, pipe: _Pipe) -> None:
        if pipe.pending:
            try:
                sent = pipe.dst.send(pipe.pending)
            except BlockingIOError:
                sent = 0
            del pipe.pending[:sent]
        if pipe.eof and not pipe.pending and not pipe.shut:
            pipe.shut = True
            pipe.dst.shutdown(socket.SHUT_WR)

    def _update(self, sock: socket.socket) -> None:
        """Read only when the previous read was delivered (bounded memory); write when owed."""
        outgoing, incoming = self._pipes[sock]
        events = 0
        if not outgoing.eof and not outgoing.pending:
            events |= selectors.EVENT_READ
        if incoming.pending:
            events |= selectors.EVENT_WRITE
        registered = sock in self._selector.get_map()
        if events and registered:
            self._selector.modify(sock, events)
        elif events:
            self._selector.register(sock, events)
        elif registered:
            self._selector.unregister(sock)

    def _drop(self, sock: socket.socket) -> None:
        outgoing, _ = self._pipes[sock]
        for end in (outgoing.src, outgoing.dst):
            self._pipes.pop(end, None)
            if end in self._selector.get_map():
                self._selector.unregister(end)
            end.close()

    def _close_all(self) -> None:
        for sock in list(self._pipes):
            sock.close()
        self._pipes.clear()
        self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
