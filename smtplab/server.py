"""aiosmtpd servers that record every byte and start reliably inside a kernel.

Theory of operation
-------------------
* :class:`RecordingSMTP` is aiosmtpd's ``SMTP`` protocol with two taps: every
  byte the server reads passes through ``data_received`` and every reply it
  writes passes through ``push`` (aiosmtpd has no other write path). Both are
  appended to the connection's :class:`~smtplab.wire.WireLog`. After STARTTLS
  aiosmtpd's TLS layer hands ``data_received`` the decrypted bytes, so the
  transcript stays readable.
* :class:`LabController` is aiosmtpd's threaded ``Controller`` (its own event
  loop in a daemon thread, which is what works next to a kernel's running
  loop) with one change: it binds port 0 and reads back the port the kernel
  chose, so there is no window in which another process can take the port.
* The Controller opens one readiness probe connection on start. Nobody else can
  know the port before ``start()`` returns, so the first connection is always
  the probe, and its log is never put in the journal.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from smtplab.journal import WireJournal
from smtplab.protocol import CRLF
from smtplab.wire import WireLog

IDENT = "ESMTP smtplab"
LOOPBACK = "127.0.0.1"


class RecordingSMTP(SMTP):
    """aiosmtpd's SMTP session, recording both directions into a WireLog."""

    def __init__(self, handler: Any, *, journal: WireJournal | None, **kwargs: Any):
        super().__init__(handler, **kwargs)
        self._journal = journal
        self.wire = WireLog(client="unknown", server=self.hostname, view="server")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        starting_tls = self.transport is not None
        super().connection_made(transport)
        if starting_tls:
            ssl_object = transport.get_extra_info("ssl_object")
            if isinstance(ssl_object, ssl.SSLObject):
                cipher = ssl_object.cipher()
                self.wire.tls_started(str(ssl_object.version()), cipher[0] if cipher else "")
            return
        peer = transport.get_extra_info("peername")
        self.wire.peer = (peer[0], peer[1]) if peer else None
        self.wire.client = peer[0] if peer else "unknown"
        if self._journal is not None:
            self._journal.opened(self.wire)

    def connection_lost(self, error: Exception | None) -> None:
        if self.session is not None and self.session.host_name:
            # The server knows the client only by the name it claimed in HELO/EHLO.
            self.wire.client = self.session.host_name
        super().connection_lost(error)
        if self._journal is not None:
            self._journal.closed(self.wire)
        else:
            self.wire.close()

    def data_received(self, data: bytes) -> None:
        self.wire.record("client", data)
        super().data_received(data)

    async def push(self, status: str | bytes) -> None:
        if isinstance(status, str):
            status = status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii")
        self.wire.record("server", status + CRLF)
        await super().push(status)


class LabController(Controller):
    """A threaded aiosmtpd Controller on 127.0.0.1, on a port the OS picks."""

    def __init__(
        self,
        handler: Any,
        *,
        host_name: str,
        journal: WireJournal,
        smtp_class: type[RecordingSMTP] = RecordingSMTP,
        **smtp_kwargs: Any,
    ):
        super().__init__(
            handler,
            hostname=LOOPBACK,
            port=0,
            server_hostname=host_name,
            ident=IDENT,
            **smtp_kwargs,
        )
        self.journal = journal
        self.smtp_class = smtp_class

    def factory(self) -> RecordingSMTP:
        is_probe = not self._factory_invoked.is_set()
        return self.smtp_class(
            self.handler, journal=None if is_probe else self.journal, **self.SMTP_kwargs
        )

    async def _bind(self) -> asyncio.AbstractServer:
        server = await self.loop.create_server(
            self._factory_invoker, host=self.hostname, port=0, ssl=self.ssl_context
        )
        self.port = server.sockets[0].getsockname()[1]
        return server

    def _create_server(self):  # type: ignore[override]  # a coroutine is what _run awaits
        return self._bind()
