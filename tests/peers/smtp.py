"""SMTP peers for the tests: a raw SMTP client, sessions ready on each role, waits.

:class:`Raw` is a bare client over a socket (plain, STARTTLS or implicit TLS)
for what no well-behaved library would send: over-long lines, NUL bytes, bare
line ends, commands before the banner. :func:`ready` opens a session on a
server role that is ready for ``MAIL FROM:<alice@example.com>``: EHLO on the MX,
STARTTLS + EHLO + AUTH on submission (587), AUTH on submissions (465).

:func:`stored` and :func:`nothing_kept` say what a lab kept once its queues settled.

:func:`hold_lab` is the body of a separate process that runs a lab over a
folder that outlives it, for the crash test (the test kills it with SIGKILL).
"""

from __future__ import annotations

import base64
import json
import os
import select
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smtplab import RetryPolicy
from smtplab.world import LOOPBACK

#: The server each role is tested on, in the default world.
ROLES = {
    "mx": "mx1.example.org",
    "submission": "smtp.example.com",
    "submissions": "smtps.example.com",
}
#: The roles that take mail from users: STARTTLS then AUTH (587), implicit TLS then AUTH (465).
SUBMISSION_ROLES = ["submission", "submissions"]
SENDER = "alice@example.com"
PASSWORD = "alice-lab-pw"
RECIPIENT = "bob@example.org"
AUTH_PLAIN = b"AUTH PLAIN " + base64.b64encode(f"\0{SENDER}\0{PASSWORD}".encode()) + b"\r\n"
WRONG_PLAIN = b"AUTH PLAIN " + base64.b64encode(f"\0{SENDER}\0wrong".encode()) + b"\r\n"
#: A retry policy for tests: the first retry after 50 ms, three attempts, 20 s at most.
FAST = RetryPolicy(first_delay=0.05, factor=2.0, max_attempts=3, max_age=20.0)


#: Every Raw client not yet closed by :func:`close_all`.
OPEN: list[Raw] = []


class Closed(ConnectionError):
    """The server closed the connection."""


class Raw:
    """A bare SMTP client over a socket: writes bytes exactly as given, reads whole replies.

    Every client is remembered in :data:`OPEN` so a fixture can close whatever a
    test left open (a server that hangs up does not close the client's socket).
    """

    def __init__(self, port: int, *, tls: ssl.SSLContext | None = None, host: str = "", timeout=10):
        sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        OPEN.append(self)
        if tls is not None:  # implicit TLS (RFC 8314): the handshake comes before the banner
            sock = tls.wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self.file = sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        try:
            line = self.file.readline()
        except (ConnectionError, ssl.SSLError) as error:
            raise Closed(str(error)) from error
        if not line:
            raise Closed("closed")
        return line

    def reply(self) -> list[str]:
        """One whole (possibly multi-line) reply, one string per line."""
        lines = []
        while True:
            line = self.line().decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line)
            if line[3:4] != "-":
                return lines

    def last(self) -> str:
        """The last line of the next reply: ``250 2.1.0 Sender ok``."""
        return self.reply()[-1]

    def code(self) -> int:
        return int(self.last()[:3])

    def codes(self, count: int) -> list[int]:
        return [self.code() for _ in range(count)]

    def is_closed(self) -> bool:
        """True once the server has closed the connection (waits up to the socket timeout)."""
        try:
            self.line()
        except Closed:
            return True
        return False

    def dropped(self, timeout: float = 10.0) -> bool:
        """Whether the server closed the TCP connection (FIN or RST) within ``timeout`` s.

        Read below any TLS layer, on a duplicate of the socket: TLS records still on
        their way (a close_notify, session tickets) are read past, so only the end of the
        connection itself counts."""
        deadline = time.monotonic() + timeout
        with socket.socket(fileno=os.dup(self.sock.fileno())) as tcp:
            try:
                while (remaining := deadline - time.monotonic()) > 0:
                    tcp.settimeout(remaining)
                    if not tcp.recv(65536):
                        return True
            except ConnectionResetError:
                return True
            except TimeoutError:
                pass
        return False

    def readable(self, timeout: float) -> bool:
        """Whether the server has sent something (or closed) within ``timeout`` seconds."""
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        return bool(select.select([self.sock], [], [], timeout)[0])

    def starttls(self, context: ssl.SSLContext, host: str, inject: bytes = b"") -> None:
        """STARTTLS (RFC 3207); ``inject`` goes in the same packet, right behind it."""
        self.send(b"STARTTLS\r\n" + inject)
        assert self.code() == 220
        self.file.close()
        self.sock = context.wrap_socket(self.sock, server_hostname=host)
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass


def close_all() -> None:
    while OPEN:
        OPEN.pop().close()


def connect(lab: Any, role: str, **kwargs: Any) -> Raw:
    """A connection to the role's server; implicit TLS on submissions. The banner is not read."""
    host = ROLES[role]
    tls = lab.ca.client_context() if role == "submissions" else None
    return Raw(lab.server(host).port, tls=tls, host=host, **kwargs)


def greeted(lab: Any, role: str, **kwargs: Any) -> Raw:
    """Connected, banner read, EHLO answered (no STARTTLS, no AUTH yet)."""
    client = connect(lab, role, **kwargs)
    assert client.code() == 220
    client.send(b"EHLO client.example.net\r\n")
    assert client.code() == 250
    return client


def ready(lab: Any, role: str, **kwargs: Any) -> Raw:
    """A session ready for ``MAIL FROM:<alice@example.com>`` on ``role``."""
    client = greeted(lab, role, **kwargs)
    if role == "submission":
        client.starttls(lab.ca.client_context(), ROLES[role])
        client.send(b"EHLO client.example.net\r\n")
        assert client.code() == 250
    if role != "mx":
        client.send(AUTH_PLAIN)
        assert client.code() == 235
    return client


def begin_data(client: Raw, recipient: str = RECIPIENT) -> None:
    """MAIL, RCPT and DATA (pipelined), up to the 354."""
    client.send(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode())
    assert client.codes(3) == [250, 250, 354]


def files_under(folder: Path) -> list[Path]:
    """Every file below ``folder`` (a spool or the Maildirs): partial files included."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def stored(lab: Any, address: str = RECIPIENT) -> int:
    """Messages in the mailbox once every queue has settled (so nothing is still on its way)."""
    lab.settle(10)
    return len(lab.mailbox(address))


def nothing_kept(lab: Any) -> bool:
    """No message anywhere: no queue entry, no spool file (even partial), no mailbox file."""
    lab.settle(10)
    return not files_under(lab.root / "spool") and not files_under(lab.root / "mail")


def received_headers(count: int) -> bytes:
    """``count`` Received: lines, as ``count`` hops would have added them (RFC 5321 §6.3)."""
    return b"".join(
        b"Received: from a by b; Mon, 2 Nov 2026 09:00:00 +0000\r\n" for _ in range(count)
    )


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` until it holds; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true after {timeout} s: {what or predicate}")
        time.sleep(0.01)


# -- a lab in another process, for the crash test --------------------------------------------
def hold_lab(root: str, hold: bool) -> None:
    """Run the default lab over ``root`` until killed; with ``hold``, its MX hosts are down.

    Prints one JSON line (``Lab.describe()``) once the lab is up. Run as
    ``python tests/peers/smtp.py ROOT [--hold]``.
    """
    from smtplab import Lab

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    lab = Lab(name="crash-test", root=root)
    if hold:  # the queue keeps everything: nothing can be relayed
        for spec in lab.world.servers:
            if spec.role == "mx":
                lab.server(spec.host).down()
    print(json.dumps(lab.describe()), flush=True)
    stop.wait()
    lab.stop()


if __name__ == "__main__":
    hold_lab(sys.argv[1], hold="--hold" in sys.argv[2:])
    os._exit(0)
