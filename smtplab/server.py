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
* Fault injection (:mod:`smtplab.faults`) sits in front of each command and at
  the end of DATA, so a reader can make any server greylist, refuse, slow down
  or hang up.
* The Controller opens one readiness probe connection on start. Nobody else can
  know the port before ``start()`` returns, so the first connection is always
  the probe, and its log is never put in the journal.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, syntax

from smtplab.dsn import DSNParamError, MailDSN, RcptDSN, split_mail_params, split_rcpt_params
from smtplab.faults import END_OF_DATA, FaultRule, Faults
from smtplab.journal import WireJournal
from smtplab.protocol import CRLF, with_enhanced_code
from smtplab.wire import WireLog

# aiosmtpd logs to "mail.log"; with no handler anywhere, Python's last-resort
# handler would print its warnings from server threads into whatever notebook
# cell runs next. The lab records the wire itself, so give the logger a
# NullHandler: anyone who configures logging still sees every record.
logging.getLogger("mail.log").addHandler(logging.NullHandler())

IDENT = "ESMTP smtplab"
LOOPBACK = "127.0.0.1"
#: Extensions smtplab adds to aiosmtpd's own (SIZE, 8BITMIME, SMTPUTF8, STARTTLS, AUTH).
LAB_EXTENSIONS = frozenset({"PIPELINING", "ENHANCEDSTATUSCODES", "DSN"})
#: Failed AUTH attempts before the server hangs up (brute-force protection).
AUTH_FAILURE_LIMIT = 3


class LabEnvelope(Envelope):
    """aiosmtpd's envelope plus the RFC 3461 DSN options of the transaction."""

    def __init__(self) -> None:
        super().__init__()
        self.dsn = MailDSN()
        self.rcpt_dsn: dict[str, RcptDSN] = {}


def _split_params(arg: str) -> tuple[str, list[str]]:
    """``FROM:<a@b> SIZE=10`` → (``FROM:<a@b>``, [``SIZE=10``])."""
    head, bracket, tail = arg.rpartition(">")
    if bracket:
        return head + bracket, tail.split()
    first, *rest = arg.split()
    return first, rest


class RecordingSMTP(SMTP):
    """aiosmtpd's SMTP session, recording both directions into a WireLog."""

    def __init__(
        self,
        handler: Any,
        *,
        journal: WireJournal | None,
        faults: Faults,
        extensions: frozenset[str] = LAB_EXTENSIONS,
        **kwargs: Any,
    ):
        super().__init__(handler, **kwargs)
        self._journal = journal
        self.faults = faults
        self.extensions = extensions
        self._answering_ehlo = False
        self._auth_failures = 0
        self.wire = WireLog(client="unknown", server=self.hostname, view="server")
        self._smtp_methods = {
            name: self._with_faults(name, method) for name, method in self._smtp_methods.items()
        }

    def _with_faults(self, command: str, method: Any) -> Any:
        async def run(arg: str | None) -> None:
            rule = self.faults.take(command)
            if rule is None:
                await method(arg)
            else:
                await self._misbehave(rule)

        return run

    async def _misbehave(self, rule: FaultRule) -> None:
        """Answer the rule's reply (closing after a 421), or hang up without a word."""
        if rule.reply is not None:
            await self.push(rule.reply)
        if (rule.reply is None or rule.reply.startswith("421")) and self.transport is not None:
            self.transport.abort()

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        if command == "DATA" and (rule := self.faults.take(END_OF_DATA)) is not None:
            assert self.transport is not None
            if rule.reply is None:
                self.transport.abort()  # no reply will cross the wire (see push)
                return "451 4.3.0 connection dropped"
            if rule.reply.startswith("421"):
                self.loop.call_soon(self.transport.close)  # after the reply is written
            return rule.reply
        return await super()._call_handler_hook(command, *args)

    def _enhanced_codes(self) -> bool:
        """RFC 2034: only after EHLO, never in the greeting or the EHLO response."""
        extended = self.session is not None and self.session.extended_smtp
        return extended and "ENHANCEDSTATUSCODES" in self.extensions and not self._answering_ehlo

    def _create_envelope(self) -> LabEnvelope:
        return LabEnvelope()

    def advertised(self) -> list[str]:
        """The extension lines smtplab adds to the EHLO reply (see handlers.RoleHandler)."""
        return sorted(self.extensions)

    async def _dsn_params(self, arg: str | None, split: Any) -> tuple[str | None, Any]:
        """Take RFC 3461 parameters out of MAIL/RCPT (aiosmtpd refuses unknown ones)."""
        if arg is None or "DSN" not in self.extensions:
            return arg, None
        address, params = _split_params(arg)
        try:
            rest, dsn = split(params)
        except DSNParamError as error:
            await self.push(error.reply)
            return None, error
        return " ".join([address, *rest]), dsn

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        self._answering_ehlo = True  # the EHLO response carries no enhanced codes
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._answering_ehlo = False

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        """AUTH (RFC 4954), hanging up after repeated failures (§4: servers may limit)."""
        if not getattr(self.event_handler, "offers_auth", True):
            await self.push("503 5.5.1 Error: authentication not enabled on this server")
            return
        await super().smtp_AUTH(arg)
        assert self.session is not None
        if self.session.authenticated or self.transport is None:
            return
        self._auth_failures += 1
        if self._auth_failures >= AUTH_FAILURE_LIMIT:
            await self.push("421 4.7.0 Too many failed authentication attempts, goodbye")
            self.transport.close()

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        arg, dsn = await self._dsn_params(arg, split_mail_params)
        if isinstance(dsn, DSNParamError):
            return
        await super().smtp_MAIL(arg)
        if dsn is not None and isinstance(self.envelope, LabEnvelope) and self.envelope.mail_from:
            self.envelope.dsn = dsn

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        arg, dsn = await self._dsn_params(arg, split_rcpt_params)
        if isinstance(dsn, DSNParamError):
            return
        assert self.envelope is not None
        before = len(self.envelope.rcpt_tos)
        await super().smtp_RCPT(arg)
        accepted = len(self.envelope.rcpt_tos) > before
        if dsn is not None and accepted and isinstance(self.envelope, LabEnvelope):
            self.envelope.rcpt_dsn[self.envelope.rcpt_tos[-1]] = dsn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        starting_tls = self.transport is not None
        super().connection_made(transport)
        if not starting_tls:
            peer = transport.get_extra_info("peername")
            self.wire.peer = (peer[0], peer[1]) if peer else None
            self.wire.client = peer[0] if peer else "unknown"
            if self._journal is not None:
                self._journal.opened(self.wire)
        # After STARTTLS, or from the start on an implicit-TLS port (RFC 8314).
        ssl_object = transport.get_extra_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject):
            cipher = ssl_object.cipher()
            self.wire.tls_started(str(ssl_object.version()), cipher[0] if cipher else "")

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
        if self.transport is None or self.transport.is_closing():
            return  # hung up (a fault rule): nothing more crosses the wire
        if self.faults.latency:
            await asyncio.sleep(self.faults.latency)
        if isinstance(status, str):
            if self._enhanced_codes():
                status = with_enhanced_code(status)
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
        faults: Faults | None = None,
        port: int = 0,
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

    def factory(self) -> RecordingSMTP:
        is_probe = not self._factory_invoked.is_set()
        return self.smtp_class(
            self.handler,
            journal=None if is_probe else self.journal,
            faults=Faults() if is_probe else self.faults,
            **self.SMTP_kwargs,
        )

    async def _bind(self) -> asyncio.AbstractServer:
        """Bind ``self.port`` (0 = any free port; a server coming back up asks for its old one)."""
        server = await self.loop.create_server(
            self._factory_invoker, host=self.hostname, port=self.port, ssl=self.ssl_context
        )
        self.port = server.sockets[0].getsockname()[1]
        return server

    def _create_server(self):  # type: ignore[override]  # a coroutine is what _run awaits
        return self._bind()

    def _trigger_server(self) -> None:
        """The readiness probe. aiosmtpd's wraps implicit TLS with the *server*
        context, which cannot make a client socket; use an unverifying client."""
        if self.ssl_context is None:
            super()._trigger_server()
            return
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        probe.check_hostname, probe.verify_mode = False, ssl.CERT_NONE
        raw = socket.create_connection((self.hostname, self.port), 1.0)
        with probe.wrap_socket(raw) as tls:
            tls.recv(1024)
