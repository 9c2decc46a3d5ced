"""The lab's aiosmtpd controller: a server on 127.0.0.1 that starts reliably inside a
kernel and always stops.

Theory of operation
-------------------
:class:`LabController` is aiosmtpd's threaded ``Controller`` (its own event loop in a
daemon thread, which is what works next to a kernel's running loop) with these changes:

* It binds port 0 and reads back the port the kernel chose, so there is no window in
  which another process can take the port (a server coming back up asks for its old
  one).
* It always stops: it aborts every TCP connection (under any TLS layer, which it knows
  because it makes implicit TLS's layer itself, :class:`TLSLayer`), lets every task end,
  and gives up on a loop that has not ended after :data:`STOP_DEADLINE` seconds,
  freeing its port and saying so.
* It opens one readiness probe connection on start, from a port it knows before the
  probe connects: the session that meets that port is the probe, whose log is never
  put in the journal (after ``LabServer.up()`` the port is the old one, and a queue's
  retry may connect first).
* It holds at most ``max_connections`` sessions (:class:`~smtplab.smtp.slots.ConnectionSlots`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import warnings
from asyncio import sslproto
from typing import Any

from smtplab.record.recordings import Recordings
from smtplab.smtp._aiosmtpd import AiosmtpdController
from smtplab.smtp.faults import Faults
from smtplab.smtp.session import RecordingSMTP
from smtplab.smtp.slots import ConnectionSlots
from smtplab.world import LOOPBACK

IDENT = "ESMTP smtplab"
#: Sessions one server holds at once (as Postfix's default process limit).
MAX_CONNECTIONS = 100
#: Seconds a stopping server may take before the lab gives up on it (LabController.stop).
STOP_DEADLINE = 5.0


class TLSLayer(sslproto.SSLProtocol):
    """Implicit TLS (RFC 8314) in front of a session, as asyncio would put it there for
    ``create_server(ssl=...)``, but made by the lab so the server knows the TCP connection
    under it, from before the handshake (see :meth:`ConnectionSlots.hang_up`)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        app: Any,
        context: ssl.SSLContext,
        connections: ConnectionSlots,
    ):
        # No waiter, as the lab awaits no handshake (typeshed wants one; asyncio accepts None).
        super().__init__(loop, app, context, None, server_side=True)  # type: ignore[arg-type]
        self._connections = connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._connections.link(transport)


class LabController(AiosmtpdController):
    """A threaded aiosmtpd Controller on 127.0.0.1, on a port the OS picks, that always stops."""

    stop_deadline = STOP_DEADLINE

    def __init__(
        self,
        handler: Any,
        *,
        host_name: str,
        journal: Recordings,
        smtp_class: type[RecordingSMTP] = RecordingSMTP,
        faults: Faults | None = None,
        port: int = 0,
        max_connections: int | None = MAX_CONNECTIONS,
        **smtp_kwargs: Any,
    ):
        super().__init__(
            handler,
            hostname=LOOPBACK,
            port=port,
            server_hostname=host_name,
            ident=IDENT,
            **smtp_kwargs,
        )
        self.journal = journal
        self.smtp_class = smtp_class
        self.faults = faults or Faults()
        self.connections = ConnectionSlots(max_connections)

    def factory(self) -> RecordingSMTP:
        return self.smtp_class(
            self.handler,
            journal=self.journal,
            faults=self.faults,
            connections=self.connections,
            is_probe=self.is_probe,
            **self.SMTP_kwargs,
        )

    async def listen(self) -> asyncio.AbstractServer:
        """Bind ``self.port`` (0 = any free port; a server coming back up asks for its old one).

        The lab holds the listening socket itself, so :meth:`stop` can free the port even
        if the loop never ends. The socket names its protocol, IPPROTO_TCP, as getaddrinfo's
        would: asyncio sets TCP_NODELAY only on such sockets, and without it Nagle's algorithm
        holds every reply line after the first until the client's delayed ACK (40 ms on
        Linux), in each multi-line EHLO reply and each pipelined group (RFC 2920)."""
        listener = socket.create_server((self.hostname, self.port))
        self._listener = socket.socket(fileno=listener.detach(), proto=socket.IPPROTO_TCP)
        self.port = self._listener.getsockname()[1]
        return await self.loop.create_server(self._accept, sock=self._listener)

    def _accept(self) -> asyncio.BaseProtocol:
        session: asyncio.BaseProtocol = self.new_session()
        if self.ssl_context is None:
            return session
        return TLSLayer(self.loop, session, self.ssl_context, self.connections)

    async def shut_down(self) -> None:
        """Stopping, on the loop: stop accepting, hang up on every connection, cancel every
        task and let it end (for at most half the deadline), then stop the loop for aiosmtpd's
        ``_run`` to close the server and the loop. Stopping the loop at once, as aiosmtpd
        does, would leave sockets open for the garbage collector and tasks pending (Python
        3.11), or keep the server's ``wait_closed()`` waiting for their connections (3.12+).

        Not ``server.close()`` yet: a connection accepted a moment ago still has its
        transport to build, which asyncio refuses (and drops, unclosed) once the server is
        closed, as it drops the socket of an accepting task cancelled before it began."""
        me = asyncio.current_task()
        deadline = self.loop.time() + STOP_DEADLINE / 2
        try:
            self.loop.remove_reader(self._listener.fileno())
            self.connections.hang_up()
            await asyncio.sleep(0)  # the accepting tasks begin: their transports are built
            while (tasks := asyncio.all_tasks() - {me}) and self.loop.time() < deadline:
                for task in tasks:
                    task.cancel()
                await asyncio.wait(tasks, timeout=deadline - self.loop.time())
        finally:
            self.loop.stop()

    def give_up(self) -> None:
        """Free the port of a loop that does not stop, and say so.

        A fresh, unbound socket takes over the listening socket's file descriptor, which
        closes the listening socket; the loop, when it ends, closes that placeholder rather
        than a descriptor number that may mean something else by then."""
        if self._listener.fileno() != -1:  # else the loop has closed it already
            with socket.socket() as placeholder:
                os.dup2(placeholder.fileno(), self._listener.fileno())
        warnings.warn(
            f"{self.SMTP_kwargs['hostname']}: the server did not stop within "
            f"{STOP_DEADLINE:g} s; its port {self.port} is free, its thread left behind",
            RuntimeWarning,
            stacklevel=3,
        )
