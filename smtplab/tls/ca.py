"""A private certificate authority per lab, and an eavesdropper to show why TLS matters.

Theory of operation
-------------------
* Real TLS needs certificates a client can verify, and the lab must never need
  the Internet or touch the reader's system trust store. So each lab makes its
  own CA with trustme (:class:`LabCA`), issues one leaf certificate per lab host
  name, and writes only the CA certificate to ``lab-ca.pem``. Real clients trust
  that one file explicitly (``swaks --tls-ca-path lab-ca.pem``,
  ``curl --cacert lab-ca.pem``), and the lab's own clients use
  :meth:`LabCA.client_context`, which trusts that CA and nothing else.
* Every lab server listens on 127.0.0.1, but certificates name hosts
  (``mx1.example.org``), never addresses. A client therefore connects to the
  address and verifies the *name*: that is what RFC 7817 / RFC 6125 ask of a
  mail client, and what a reader sees fail when the name is wrong. smtplib
  verifies against the host it was asked to connect to, so
  :class:`LabSMTP` / :class:`LabSMTP_SSL` take the host *name* and map every
  name to 127.0.0.1, like a line in ``/etc/hosts``.
* Notebooks are checked byte for byte, so everything a chapter may print about
  a certificate (:meth:`LabCA.describe`) is stable: fixed subject and issuer
  names, no serial numbers, no validity dates.
* :class:`Eavesdropper` is a plain TCP relay between a client and a server that
  keeps a copy of every chunk it forwards. It records a chunk *before*
  forwarding it, so once a client has read a reply, everything it sent before
  that reply, and the reply itself, is already recorded: tests and notebooks
  need no waiting. One selector thread does all the work; a socket pair wakes it
  up to stop.
"""

from __future__ import annotations

import os
import selectors
import smtplib
import socket
import ssl
import string
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import trustme
from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

from smtplab.tls.records import describe_tls, is_tls
from smtplab.world import LOOPBACK

CA_FILE_NAME = "lab-ca.pem"
CA_ORGANIZATION = "smtplab"
CA_UNIT = "lab CA"
LEAF_UNIT = "lab server"
MINIMUM_TLS = ssl.TLSVersion.TLSv1_2

Direction = Literal["client", "server"]


class LabCA:
    """A throwaway certificate authority that signs the lab's server certificates.

    trustme gives a CA a random unit name unless told otherwise; we name it, so
    that the issuer a notebook prints is the same on every run.
    """

    def __init__(self, folder: Path):
        self.ca = trustme.CA(organization_name=CA_ORGANIZATION, organization_unit_name=CA_UNIT)
        self._leaves: dict[str, trustme.LeafCert] = {}
        self._lock = threading.Lock()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.cert_path = folder / CA_FILE_NAME
        # Write then rename: a swaks started by the reader never reads half a file.
        partial = folder / f".{CA_FILE_NAME}.{os.getpid()}.tmp"
        partial.write_bytes(self.ca.cert_pem.bytes())
        os.replace(partial, self.cert_path)

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate (PEM), the one thing a client must trust."""
        return self.ca.cert_pem.bytes()

    def _leaf(self, host: str) -> trustme.LeafCert:
        """One leaf certificate per host name, issued on first use and then reused."""
        with self._lock:
            leaf = self._leaves.get(host)
            if leaf is None:
                leaf = self.ca.issue_cert(
                    host,
                    common_name=host,
                    organization_name=CA_ORGANIZATION,
                    organization_unit_name=LEAF_UNIT,
                )
                self._leaves[host] = leaf
            return leaf

    def server_context(self, host: str) -> ssl.SSLContext:
        """A server-side context presenting ``host``'s certificate (STARTTLS or port 465).

        It asks for no client certificate (CERT_NONE, no hostname check), which
        is what aiosmtpd expects and what public mail servers do.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = MINIMUM_TLS
        self._leaf(host).configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts the lab CA only and checks host names.

        Built from a bare ``SSLContext`` rather than ``create_default_context``,
        so the system's CAs are not loaded: a certificate verifies only if this
        lab issued it.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = MINIMUM_TLS
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        self.ca.configure_trust(context)
        return context

    def describe(self, host: str) -> dict[str, Any]:
        """What the certificate for ``host`` says, minus anything that changes per run.

        Returns ``{"subject_cn": ..., "san": [...], "issuer": ...}``. The CA's
        subject has no common name, so the issuer is its organization and unit
        ("smtplab lab CA"), read from the certificate itself.
        """
        pem = self._leaf(host).cert_chain_pems[0].bytes()
        cert = x509.load_pem_x509_certificate(pem)
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
        return {
            "subject_cn": _name_part(cert.subject, NameOID.COMMON_NAME),
            "san": [str(name.value) for name in san.value],
            "issuer": _name_part(cert.issuer, NameOID.COMMON_NAME)
            or " ".join(
                part
                for part in (
                    _name_part(cert.issuer, NameOID.ORGANIZATION_NAME),
                    _name_part(cert.issuer, NameOID.ORGANIZATIONAL_UNIT_NAME),
                )
                if part
            ),
        }


def _name_part(name: x509.Name, oid: x509.ObjectIdentifier) -> str:
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value) if values else ""


# --- clients that verify a name while connecting to 127.0.0.1 ----------------------------


class LabLoopbackMixin:
    """Connect every host name to 127.0.0.1, like an ``/etc/hosts`` line for the lab.

    smtplib verifies a server certificate against the host given to
    ``connect()`` (its ``_host``), for ``starttls()`` and for ``SMTP_SSL`` alike.
    Giving it the lab host name and swapping in the address only when the socket
    is opened makes it verify the name, with no private attribute to set.
    """

    loopback_address = LOOPBACK

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return super()._get_socket(self.loopback_address, port, timeout)  # type: ignore[misc]


class LabSMTP(LabLoopbackMixin, smtplib.SMTP):
    """``smtplib.SMTP("mx1.example.org", port)`` reaching the lab on 127.0.0.1."""


class LabSMTP_SSL(LabLoopbackMixin, smtplib.SMTP_SSL):  # named after smtplib.SMTP_SSL
    """Implicit TLS (port 465 style, RFC 8314) to a lab host name on 127.0.0.1."""


# --- the eavesdropper -----------------------------------------------------------------------

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
