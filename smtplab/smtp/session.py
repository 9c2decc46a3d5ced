"""The lab's SMTP session: aiosmtpd's protocol, recording every byte both ways.

Theory of operation
-------------------
* :class:`RecordingSMTP` is aiosmtpd's ``SMTP`` protocol with two taps: every
  byte the server reads passes through ``data_received`` and every reply it
  writes passes through ``push`` (aiosmtpd has no other write path). Both are
  appended to the connection's :class:`~smtplab.record.wirelog.WireLog`. After STARTTLS
  aiosmtpd's TLS layer hands ``data_received`` the decrypted bytes, so the
  transcript stays readable. Bytes are recorded when they reach the session, after
  the simulated network (:mod:`smtplab.smtp.latency`), so a transcript reads the
  same with or without latency.
* Its decisions are pure functions in :mod:`smtplab.smtp.policy`; logging in is
  :mod:`smtplab.smtp.auth`'s; what it needs of aiosmtpd's internals comes through
  :mod:`smtplab.smtp._aiosmtpd`'s hooks.
* Fault injection (:mod:`smtplab.smtp.faults`) sits in front of each command and at
  the end of DATA, so a reader can make any server greylist, refuse, slow down
  or hang up.
* Limits (RFC 5321 §4.5.3): a command line is at most 512 octets with its CRLF
  (longer: 500 5.5.2; MAIL and RCPT get the allowances of SIZE, SMTPUTF8 and
  DSN), a transaction at most 100 recipients (then 452 4.5.3), a server at most
  ``max_connections`` sessions (then 421 4.7.0). A session idle for ``timeout``
  seconds, or whose DATA has not ended ``timeout`` seconds after the DATA
  command (aiosmtpd does not restart its timer on data lines), gets 421 4.4.2
  before the server closes it.
* Command lines end with CRLF only (§2.3.8): a bare LF, or a NUL in a command,
  gets an error reply, and the session goes on. Too many unknown commands end
  it with 421. A non-ASCII address without SMTPUTF8 gets 550 5.6.7 at MAIL and
  553 5.6.7 at RCPT (RFC 6531 §3.5); with SMTPUTF8, an address that is not valid
  UTF-8 gets 553 (RFC 6531 §3.3).
* Replies come from one table, :mod:`smtplab.protocol.replies`. They carry enhanced
  status codes only for a client that greeted with EHLO (RFC 2034 §3), and
  bytes beyond ASCII only in a transaction that declared SMTPUTF8; no reply
  ever carries an exception's text (:meth:`RecordingSMTP.handle_exception`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from collections.abc import Callable, Sequence
from typing import Any, cast

from aiosmtpd.smtp import Envelope, syntax

from smtplab.protocol.dsn_params import (
    DSNParamError,
    MailDSN,
    RcptDSN,
    split_mail_params,
    split_rcpt_params,
)
from smtplab.protocol.replies import LOCAL_ERROR, TIMEOUT, TLS_ACTIVE, TOO_MANY_CONNECTIONS
from smtplab.protocol.rules import COMMAND_LINE_LIMIT, CRLF, parse_path
from smtplab.record.recordings import Recordings
from smtplab.record.wirelog import WireLog
from smtplab.smtp._aiosmtpd import STOCK_REPLIES
from smtplab.smtp.auth import AuthenticatingSession
from smtplab.smtp.faults import AT_END_OF_DATA, FaultRule, Faults
from smtplab.smtp.latency import SimulatedNetwork
from smtplab.smtp.policy import (
    LAB_EXTENSIONS,
    MAX_RECIPIENTS,
    advertised,
    bad_client_name,
    enhanced_codes,
    hangs_up_after,
    line_allowances,
    malformed_command,
    path_refusal,
    requires_tls_for_auth,
    split_params,
    wire_reply,
)
from smtplab.smtp.slots import ConnectionSlots

# aiosmtpd logs to "mail.log"; with no handler anywhere, Python's last-resort
# handler would print its warnings from server threads into whatever notebook
# cell runs next. The lab records the wire itself, so give the logger a
# NullHandler: anyone who configures logging still sees every record.
logging.getLogger("mail.log").addHandler(logging.NullHandler())
#: Where an unforeseen error in a session is logged (aiosmtpd's logger, see above).
log = logging.getLogger("mail.log")


class LabEnvelope(Envelope):
    """aiosmtpd's envelope plus the RFC 3461 DSN options of the transaction."""

    def __init__(self) -> None:
        super().__init__()
        self.dsn = MailDSN()
        self.rcpt_dsn: dict[str, RcptDSN] = {}


class RecordingSMTP(AuthenticatingSession):
    """aiosmtpd's SMTP session, recording both directions into a WireLog."""

    def __init__(
        self,
        handler: Any,
        *,
        journal: Recordings | None,
        faults: Faults,
        extensions: frozenset[str] = LAB_EXTENSIONS,
        max_recipients: int = MAX_RECIPIENTS,
        connections: ConnectionSlots | None = None,
        is_probe: Callable[[Any], bool] | None = None,
        **kwargs: Any,
    ):
        super().__init__(handler, **kwargs)
        self._journal = journal
        self.faults = faults
        self.extensions = extensions
        self.max_recipients = max_recipients
        self._slots = connections
        self._is_probe = is_probe  # whether a peer address is the controller's readiness probe
        self._holds_slot = False
        self._answering_ehlo = False
        self._said_ehlo = False  # the client's last greeting was EHLO (RFC 2034 §3)
        self._verb = ""  # the command being answered
        # aiosmtpd keeps these limits in a dict shared by every session of every
        # server (and compares them with the line *without* its CRLF): give each
        # session its own, counting the CRLF as RFC 5321 §4.5.3.1.4 does.
        self.command_size_limit = COMMAND_LINE_LIMIT - len(CRLF)
        self.command_size_limits = collections.defaultdict(lambda: self.command_size_limit)
        self.wire = WireLog(client="unknown", server=self.hostname, view="server")
        self.network = SimulatedNetwork(self)  # LabServer.slow_down (smtplab.smtp.latency)

    async def run_command(self, command: str, method: Any, arg: str | None) -> None:
        """Run a command unless its line is malformed or a fault rule answers instead."""
        self._verb = command
        refusal = malformed_command(self.last_line, arg)
        if refusal is not None:
            await self.push(refusal)
            return
        rule = self.faults.take(command)
        if rule is None:
            await method(arg)
        else:
            await self._misbehave(rule)

    async def _misbehave(self, rule: FaultRule) -> None:
        """Answer the rule's reply (closing after a 421), or hang up without a word."""
        if rule.reply is not None:
            await self.push(rule.reply)
        if hangs_up_after(rule.reply) and self.transport is not None:
            cast(asyncio.Transport, self.transport).abort()

    def before_handler(self, command: str, args: Sequence[Any]) -> str | None:
        """End-of-DATA fault rules and the protocol's refusals, before the handler's hook."""
        if command == "DATA" and (rule := self.faults.take(AT_END_OF_DATA)) is not None:
            assert self.transport is not None
            if rule.reply is None:
                cast(asyncio.Transport, self.transport).abort()  # no reply crosses (see push)
                return "451 4.3.0 connection dropped"
            if rule.reply.startswith("421"):
                self.loop.call_soon(self.transport.close)  # after the reply is written
            return rule.reply
        if command in ("MAIL", "RCPT") and (refusal := self._refuse(command, args[0])):
            return refusal
        if command == "DATA":  # the data is in: storing it gets a timeout of its own
            self.restart_idle_timer()
        return None

    def _refuse(self, command: str, address: str) -> str | None:
        """Protocol rules the handlers need not know, checked before their MAIL/RCPT hooks."""
        assert self.envelope is not None
        return path_refusal(
            command,
            address,
            smtp_utf8=self.envelope.smtp_utf8,
            recipients=len(self.envelope.rcpt_tos),
            max_recipients=self.max_recipients,
        )

    async def handle_exception(self, error: Exception) -> str:
        """An error no rule foresaw: log it and answer 451, never with its text (aiosmtpd
        would answer ``500 Error: (ValueError) ...``)."""
        log.error("%s: %s failed", self.hostname, self._verb or "session", exc_info=error)
        return LOCAL_ERROR()

    def requires_tls_for_auth(self) -> bool:
        """Whether AUTH waits for TLS on this connection (port 587 before STARTTLS)."""
        return requires_tls_for_auth(
            auth_require_tls=self.tls_before_auth, over_tls=self._over_tls()
        )

    def _over_tls(self) -> bool:
        transport = self.transport
        return transport is not None and transport.get_extra_info("ssl_object") is not None

    def new_envelope(self) -> LabEnvelope:
        return LabEnvelope()

    def advertised(self) -> list[str]:
        """The extension lines smtplab adds to the EHLO reply (see handlers.RoleHandler)."""
        return advertised(self.extensions)

    async def _dsn_params(self, arg: str | None, split: Any) -> tuple[str | None, Any]:
        """Take RFC 3461 parameters out of MAIL/RCPT (aiosmtpd refuses unknown ones)."""
        if arg is None or "DSN" not in self.extensions:
            return arg, None
        address, params = split_params(arg)
        try:
            rest, dsn = split(params)
        except DSNParamError as error:
            await self.push(error.reply)
            return None, error
        return " ".join([address, *rest]), dsn

    def read_path(self, arg: str) -> tuple[str | None, str | None]:
        """The path and what follows it, by RFC 5321 §4.1.2's grammar (aiosmtpd reads
        paths with the RFC 5322 header parser, which is lenient and costs more than
        the rest of a transaction): ``(None, None)`` if malformed."""
        if not arg:
            return "", ""
        path = parse_path(arg)
        if path is None:
            return None, None
        address, local_part, rest = path
        if self.local_part_limit and len(local_part) > self.local_part_limit:
            return None, None
        return address, rest

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        if (refusal := bad_client_name(hostname)) is not None:
            await self.push(refusal)
            return
        if hostname:  # the HELO response already has no enhanced code
            self._said_ehlo = False
        await super().smtp_HELO(hostname)

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        if (refusal := bad_client_name(hostname)) is not None:  # for Received: (§4.4)
            await self.push(refusal)
            return
        self._answering_ehlo = True  # the EHLO response carries no enhanced codes
        self.command_size_limits.clear()  # aiosmtpd adds its allowances at every EHLO
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._answering_ehlo = False
        if hostname:
            self._said_ehlo = True
            for verb, extra in line_allowances(self.extensions).items():
                self.command_size_limits[verb] += extra

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        """RFC 3207 §4.2: STARTTLS is not offered once TLS is on; asked again, it is a bad
        sequence (§4.1: 503 is not in its list, but 501 and 454 say something else)."""
        if self._over_tls():
            await self.push(TLS_ACTIVE())
            return
        await super().smtp_STARTTLS(arg)

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
        if starting_tls:  # what came before the TLS handshake is discarded (RFC 3207 §4.2)
            self.network.land_all()
        super().connection_made(transport)
        if not starting_tls:
            peer = transport.get_extra_info("peername")
            if self._is_probe is not None and self._is_probe(peer):  # not a client: unrecorded
                self._journal, self.faults, self._slots = None, Faults(), None
            if self._slots is not None and transport.get_extra_info("sslcontext") is None:
                self._slots.link(transport)  # TCP: not behind a TLSLayer
            self.wire.peer = (peer[0], peer[1]) if peer else None
            self.wire.client = peer[0] if peer else "unknown"
            if self._journal is not None:
                self._journal.opened(self.wire)
        # After STARTTLS, or from the start on an implicit-TLS port (RFC 8314).
        ssl_object = transport.get_extra_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject):
            cipher = ssl_object.cipher()
            self.wire.tls_started(str(ssl_object.version()), cipher[0] if cipher else "")
        if not starting_tls and self._slots is not None:
            self._holds_slot = self._slots.take(self)
            if not self._holds_slot:  # RFC 5321 §3.8: refuse with 421, then close
                self.cancel_greeting()
                self._say_and_close(TOO_MANY_CONNECTIONS(host=self.hostname))

    def _say_and_close(self, reply: str) -> None:
        """Write a last reply and close, outside the command loop (a timer, a refusal)."""
        if self.transport is None or self.transport.is_closing():
            return
        data = reply.encode("ascii") + CRLF
        self.wire.record("server", data)
        self.transport.write(data)  # type: ignore[attr-defined]
        self.transport.close()

    def idle_timeout(self) -> None:
        """Idle (or in DATA) too long: say so before closing (RFC 5321 §4.5.3.2, §3.8)."""
        self._say_and_close(TIMEOUT(host=self.hostname))

    def connection_lost(self, error: Exception | None) -> None:
        if self.network.defers_loss(error):  # the client closed after bytes still in flight
            return
        if self._holds_slot and self._slots is not None:
            self._slots.give_back(self)
            self._holds_slot = False
        if self.session is not None and self.session.host_name:
            # The server knows the client only by the name it claimed in HELO/EHLO.
            self.wire.client = self.session.host_name
        super().connection_lost(error)
        if self._journal is not None:
            self._journal.closed(self.wire)
        else:
            self.wire.close()

    async def before_greeting(self) -> None:
        if self.faults.latency:  # the greeting: one round trip after the connection
            try:
                await asyncio.sleep(self.faults.latency)
            except asyncio.CancelledError:  # the client left first (aiosmtpd would close)
                if self.transport is not None:
                    self.transport.close()
                raise

    def data_received(self, data: bytes) -> None:
        self.network.received(data, self.faults.latency)

    def eof_received(self) -> bool | None:
        return self.network.eof()

    def hand_over(self, data: bytes) -> None:
        """Give bytes to the session, recording them as it reads them."""
        self.wire.record("client", data)
        super().data_received(data)

    def read_eof(self) -> bool | None:
        return super().eof_received()

    async def push(self, status: str | bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return  # hung up (a fault rule): nothing more crosses the wire
        if isinstance(status, str):
            ours = STOCK_REPLIES.get((self._verb, status)) or STOCK_REPLIES.get(("*", status))
            enhanced = enhanced_codes(
                said_ehlo=self._said_ehlo, extensions=self.extensions, in_ehlo=self._answering_ehlo
            )
            utf8 = self.envelope is not None and self.envelope.smtp_utf8
            status = wire_reply(
                ours() if ours is not None else status, enhanced=enhanced, utf8=utf8
            )
        self.wire.record("server", status + CRLF)
        await super().push(status)
