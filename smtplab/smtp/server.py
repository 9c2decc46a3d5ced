"""aiosmtpd servers that record every byte and start reliably inside a kernel.

Theory of operation
-------------------
* :class:`RecordingSMTP` is aiosmtpd's ``SMTP`` protocol with two taps: every
  byte the server reads passes through ``data_received`` and every reply it
  writes passes through ``push`` (aiosmtpd has no other write path). Both are
  appended to the connection's :class:`~smtplab.record.wirelog.WireLog`. After STARTTLS
  aiosmtpd's TLS layer hands ``data_received`` the decrypted bytes, so the
  transcript stays readable.
* :class:`LabController` is aiosmtpd's threaded ``Controller`` (its own event
  loop in a daemon thread, which is what works next to a kernel's running
  loop) with two changes. It binds port 0 and reads back the port the kernel
  chose, so there is no window in which another process can take the port. And
  it always stops: it aborts every TCP connection (under any TLS layer, which
  it knows because it makes implicit TLS's layer itself, :class:`TLSLayer`),
  lets every task end, and gives up on a loop that has not ended after
  ``STOP_DEADLINE`` seconds, freeing its port and saying so.
* Fault injection (:mod:`smtplab.smtp.faults`) sits in front of each command and at
  the end of DATA, so a reader can make any server greylist, refuse, slow down
  or hang up.
* The Controller opens one readiness probe connection on start. Nobody else can
  know the port before ``start()`` returns, so the first connection is always
  the probe, and its log is never put in the journal.
* Latency (``LabServer.slow_down``) models a network round trip, not a slow
  server: bytes the client sends reach the session ``Faults.latency`` seconds
  after they arrive, in order, and the greeting comes one round trip after the
  connection (TCP's handshake); replies are written at once. So a client that
  waits for each reply pays a round trip per command, while a pipelined group
  (RFC 2920) pays one for all its commands. Bytes are recorded when they reach
  the session, so a transcript reads the same with or without latency. A
  client that closes right after its last command (``QUIT``, then FIN) still
  has that command read: its end of file waits behind the bytes in flight (on a
  plain socket the server can still answer; under TLS the connection closes at
  once, so the command is read but not answered). Bytes still in flight when
  the *server* hangs up, or the client resets, are lost, as on a real network.
  The TLS handshake itself is not delayed.
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
import base64
import binascii
import collections
import functools
import logging
import os
import socket
import ssl
import warnings
import weakref
from asyncio import sslproto
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, syntax

from smtplab.protocol.dsn_params import (
    DSNParamError,
    MailDSN,
    RcptDSN,
    split_mail_params,
    split_rcpt_params,
)
from smtplab.protocol.replies import (
    AUTH_CANCELLED,
    AUTH_LINE_TOO_LONG,
    AUTH_NOT_OFFERED,
    AUTHZID_REFUSED,
    BAD_BASE64,
    BAD_HELO_NAME,
    BAD_LINE_END,
    BAD_RECIPIENT_SYNTAX,
    CANNOT_SPLIT,
    LOCAL_ERROR,
    LOGIN_PASSWORD_PROMPT,
    LOGIN_USERNAME_PROMPT,
    NON_ASCII_RECIPIENT,
    NON_ASCII_SENDER,
    NOT_UTF8_RECIPIENT,
    NOT_UTF8_SENDER,
    NUL_IN_COMMAND,
    STOCK,
    TIMEOUT,
    TLS_ACTIVE,
    TOO_MANY_AUTH_FAILURES,
    TOO_MANY_CONNECTIONS,
    TOO_MANY_RECIPIENTS,
)
from smtplab.protocol.rules import (
    COMMAND_LINE_LIMIT,
    CRLF,
    parse_path,
    with_enhanced_code,
    without_enhanced_code,
)
from smtplab.record.recordings import Recordings
from smtplab.record.wirelog import WireLog
from smtplab.smtp.faults import END_OF_DATA, FaultRule, Faults
from smtplab.world import LOOPBACK

# aiosmtpd logs to "mail.log"; with no handler anywhere, Python's last-resort
# handler would print its warnings from server threads into whatever notebook
# cell runs next. The lab records the wire itself, so give the logger a
# NullHandler: anyone who configures logging still sees every record.
logging.getLogger("mail.log").addHandler(logging.NullHandler())

IDENT = "ESMTP smtplab"
#: Extensions smtplab adds to aiosmtpd's own (SIZE, 8BITMIME, SMTPUTF8, STARTTLS, AUTH).
LAB_EXTENSIONS = frozenset({"PIPELINING", "ENHANCEDSTATUSCODES", "DSN"})
#: Failed AUTH attempts before the server hangs up (brute-force protection).
AUTH_FAILURE_LIMIT = 3
#: The longest AUTH response line, CRLF included: RFC 4954 §4 calls 12288 octets enough.
AUTH_LINE_LIMIT = 12288
#: Recipients per transaction: RFC 5321 §4.5.3.1.8 asks for at least 100.
MAX_RECIPIENTS = 100
#: Sessions one server holds at once (as Postfix's default process limit).
MAX_CONNECTIONS = 100
#: Seconds a stopping server may take before the lab gives up on it (LabController.stop).
STOP_DEADLINE = 5.0
#: How much longer MAIL and RCPT lines may be for DSN's parameters (RFC 3461 §4);
#: aiosmtpd itself adds SIZE's 26 octets (RFC 1870) and SMTPUTF8's 10 to MAIL.
_DSN_ALLOWANCE = {"MAIL": 100, "RCPT": 500}
#: Where an unforeseen error in a session is logged (aiosmtpd's logger, see above).
log = logging.getLogger("mail.log")


@functools.cache
def aiosmtpd_hooks(cls: type) -> list[str]:
    """The attributes aiosmtpd looks for when it builds a session: a protocol's
    ``smtp_*`` commands and ``auth_*`` mechanisms, a handler's ``handle_*`` hooks.

    ``SMTP.__init__`` runs ``inspect.getmembers`` and ``dir`` over the session and
    its handler for every new connection, reading every attribute; a ``__dir__``
    that answers with this list (computed once per class) makes that cheap.
    """
    return sorted(name for name in dir(cls) if name.startswith(("smtp_", "auth_", "handle_")))


class ConnectionSlots:
    """The open connections of one server, and its sessions (at most ``limit``); used on
    the server's loop only."""

    def __init__(self, limit: int | None):
        self.limit = limit
        self.sessions: set[RecordingSMTP] = set()
        #: Every TCP connection, under any TLS layer; weakly, as the asyncio.Server of
        #: Python 3.13 keeps its clients: a closed transport leaves with its connection.
        self.links: weakref.WeakSet[asyncio.Transport] = weakref.WeakSet()
        self.closing = False

    def link(self, tcp: asyncio.BaseTransport) -> None:
        """A new TCP connection; dropped at once if the server is going down (one accepted
        just before it stopped listening meets its protocol only after :meth:`hang_up`)."""
        if self.closing:
            tcp.abort()  # type: ignore[attr-defined]
        else:
            self.links.add(tcp)  # type: ignore[arg-type]

    def take(self, session: RecordingSMTP) -> bool:
        if self.limit is not None and len(self.sessions) >= self.limit:
            return False
        self.sessions.add(session)
        return True

    def give_back(self, session: RecordingSMTP) -> None:
        self.sessions.discard(session)

    def hang_up(self) -> None:
        """Drop every connection (the server is going down, as if it crashed).

        The TCP transports, not the sessions' TLS ones: a TLS transport closed twice
        (aiosmtpd closes it at QUIT and again as the session ends) has let go of its
        connection, so its ``abort()`` raises AttributeError on Python 3.11.1-3.11.3
        and does nothing later (CPython gh-98539), while the connection waits up to 30 s
        for the client's TLS close_notify. A connection in the middle of a TLS handshake
        has no session yet at all.
        """
        self.closing = True
        for link in list(self.links):
            link.abort()


class GuardedCommand:
    """One command method behind its session's :meth:`RecordingSMTP.guarded`; reads
    through to the method's own attributes (``HELP`` shows its ``@syntax``)."""

    __slots__ = ("command", "method", "session")

    def __init__(self, session: RecordingSMTP, command: str, method: Any):
        self.session, self.command, self.method = session, command, method

    def __call__(self, arg: str | None) -> Any:
        return self.session.guarded(self.command, self.method, arg)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.method, name)


class GuardedCommands(dict[str, Any]):
    """A session's command table (aiosmtpd's ``_smtp_methods``). The dispatcher's
    lookup hands out the command behind the guard; built per command run, not for
    every command a session knows, because most connections run only a few."""

    def __init__(self, session: RecordingSMTP, methods: dict[str, Any]):
        super().__init__(methods)
        self.session = session

    def get(self, command: str, default: Any = None) -> Any:  # type: ignore[override]
        method = super().get(command)
        return default if method is None else GuardedCommand(self.session, command, method)


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


def _not_utf8(text: str) -> bool:
    """Whether ``text`` came from bytes that are not UTF-8 (aiosmtpd decodes command
    arguments with ``surrogateescape``, so each such byte is a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _is_ascii_text(text: str) -> bool:
    return text.isascii() and text.isprintable()


class RecordingSMTP(SMTP):
    """aiosmtpd's SMTP session, recording both directions into a WireLog."""

    #: AUTH LOGIN's prompts (aiosmtpd's own are "User Name\0" and "Password\0").
    AuthLoginUsernameChallenge = LOGIN_USERNAME_PROMPT
    AuthLoginPasswordChallenge = LOGIN_PASSWORD_PROMPT

    def __init__(
        self,
        handler: Any,
        *,
        journal: Recordings | None,
        faults: Faults,
        extensions: frozenset[str] = LAB_EXTENSIONS,
        max_recipients: int = MAX_RECIPIENTS,
        connections: ConnectionSlots | None = None,
        **kwargs: Any,
    ):
        authenticator = kwargs.get("authenticator")
        self._check = None if authenticator is None else self._counting(authenticator)
        if self._check is not None:
            kwargs["authenticator"] = self._check
        super().__init__(handler, **kwargs)
        self._journal = journal
        self.faults = faults
        self.extensions = extensions
        self.max_recipients = max_recipients
        self._slots = connections
        self._holds_slot = False
        self._answering_ehlo = False
        self._auth_failures = 0
        self._credentials_refused = False
        self._said_ehlo = False  # the client's last greeting was EHLO (RFC 2034 §3)
        self._verb = ""  # the command being answered
        self._bad_line_end = False
        # aiosmtpd keeps these limits in a dict shared by every session of every
        # server (and compares them with the line *without* its CRLF): give each
        # session its own, counting the CRLF as RFC 5321 §4.5.3.1.4 does.
        self.command_size_limit = COMMAND_LINE_LIMIT - len(CRLF)
        self.command_size_limits = collections.defaultdict(lambda: self.command_size_limit)
        self.wire = WireLog(client="unknown", server=self.hostname, view="server")
        # The simulated network (see the module docstring): what the client sent that
        # has not reached the session yet, as (arrival number, bytes or "eof"/"lost").
        self._in_flight: collections.deque[tuple[int, bytes | str]] = collections.deque()
        self._arrivals = 0
        self._last_due = 0.0
        self._peer_eof = False
        self._gone = False
        self._smtp_methods = GuardedCommands(self, self._smtp_methods)

    def __dir__(self) -> list[str]:
        return aiosmtpd_hooks(type(self))

    async def guarded(self, command: str, method: Any, arg: str | None) -> None:
        """Run a command unless its line is malformed or a fault rule answers instead."""
        self._verb = command
        if self._bad_line_end:  # RFC 5321 §2.3.8: only CRLF ends a command line
            await self.push(BAD_LINE_END())
            return
        if arg is not None and "\0" in arg:
            await self.push(NUL_IN_COMMAND())
            return
        rule = self.faults.take(command)
        if rule is None:
            await method(arg)
        else:
            await self._misbehave(rule)

    def _cb_client_connected(self, reader: asyncio.StreamReader, writer: Any) -> None:
        """Note whether each command line ended with anything but one CRLF: aiosmtpd
        splits on LF and strips every CR before it, so ``\\n`` and ``\\r\\r\\n`` pass."""
        super()._cb_client_connected(reader, writer)
        read_until = reader.readuntil

        async def readuntil(separator: bytes = b"\n") -> bytes:
            self._bad_line_end = False
            line = await read_until(separator)
            if separator == b"\n":  # a command line (DATA reads up to CRLF)
                self._bad_line_end = not line.endswith(CRLF) or line.endswith(b"\r" + CRLF)
            return line

        reader.readuntil = readuntil  # type: ignore[method-assign]

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
        if command in ("MAIL", "RCPT") and (refusal := self._refuse(command, args[0])):
            return refusal
        if command == "DATA":  # the data is in: storing it gets a timeout of its own
            self._reset_timeout()
        return await super()._call_handler_hook(command, *args)

    def _refuse(self, command: str, address: str) -> str | None:
        """Protocol rules the handlers need not know, checked before their MAIL/RCPT hooks."""
        assert self.envelope is not None
        mail = command == "MAIL"
        if not mail and address == "<>":  # only the reverse-path may be null
            return BAD_RECIPIENT_SYNTAX()
        if not address.isascii() and not self.envelope.smtp_utf8:  # RFC 6531 §3.5
            return NON_ASCII_SENDER() if mail else NON_ASCII_RECIPIENT()
        if _not_utf8(address):  # RFC 6531 §3.3: a UTF-8 path is UTF-8
            return NOT_UTF8_SENDER() if mail else NOT_UTF8_RECIPIENT()
        if not mail and len(self.envelope.rcpt_tos) >= self.max_recipients:
            return TOO_MANY_RECIPIENTS(limit=self.max_recipients)
        return None

    async def handle_exception(self, error: Exception) -> str:
        """An error no rule foresaw: log it and answer 451, never with its text (aiosmtpd
        would answer ``500 Error: (ValueError) ...``)."""
        log.error("%s: %s failed", self.hostname, self._verb or "session", exc_info=error)
        return LOCAL_ERROR()

    def requires_tls_for_auth(self) -> bool:
        """Whether AUTH waits for TLS on this connection (port 587 before STARTTLS)."""
        return bool(self._auth_require_tls) and not self._over_tls()

    def _over_tls(self) -> bool:
        transport = self.transport
        return transport is not None and transport.get_extra_info("ssl_object") is not None

    def _enhanced_codes(self) -> bool:
        """RFC 2034 §3: on every reply after EHLO (also once STARTTLS has reset the
        session, until the client greets again), never after HELO, in the greeting or
        in the EHLO response."""
        offered = "ENHANCEDSTATUSCODES" in self.extensions
        return self._said_ehlo and offered and not self._answering_ehlo

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

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
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
        if hostname and not _is_ascii_text(hostname):
            await self.push(BAD_HELO_NAME())
            return
        if hostname:  # the HELO response already has no enhanced code
            self._said_ehlo = False
        await super().smtp_HELO(hostname)

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        if hostname and not _is_ascii_text(hostname):  # a name for Received: (RFC 5321 §4.4)
            await self.push(BAD_HELO_NAME())
            return
        self._answering_ehlo = True  # the EHLO response carries no enhanced codes
        self.command_size_limits.clear()  # aiosmtpd adds its allowances at every EHLO
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._answering_ehlo = False
        if hostname:
            self._said_ehlo = True
        if hostname and "DSN" in self.extensions:
            for verb, extra in _DSN_ALLOWANCE.items():
                self.command_size_limits[verb] += extra

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        """RFC 3207 §4.2: STARTTLS is not offered once TLS is on; asked again, it is a bad
        sequence (§4.1: 503 is not in its list, but 501 and 454 say something else)."""
        if self._over_tls():
            await self.push(TLS_ACTIVE())
            return
        await super().smtp_STARTTLS(arg)

    def _counting(self, authenticator: Any) -> Any:
        """The authenticator, noting each refusal: only checked credentials are failed
        logins (an unknown mechanism's 504, a syntax error or a cancel are not)."""

        def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
            result = authenticator(server, session, envelope, mechanism, data)
            self._credentials_refused = not result.success
            return result

        return check

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        """AUTH (RFC 4954), hanging up after repeated failures (§4: servers may limit)."""
        if not getattr(self.event_handler, "offers_auth", True):
            await self.push(AUTH_NOT_OFFERED())
            return
        self._credentials_refused = False
        await super().smtp_AUTH(arg)
        if not self._credentials_refused or self.transport is None:
            return
        self._auth_failures += 1
        if self._auth_failures >= AUTH_FAILURE_LIMIT:
            await self.push(TOO_MANY_AUTH_FAILURES())
            self.transport.close()

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        """PLAIN (RFC 4616) with its authorization identity, which aiosmtpd ignores (so
        ``bob\\0alice\\0alice's password`` logged in as alice). The lab has no proxy users:
        an authzid other than the authcid is refused (§2) before any password is checked."""
        response = await self._initial_or_challenged(args, "")
        if response is None:
            return AuthResult(success=False, handled=True)
        parts = response.split(b"\0")
        if len(parts) != 3:
            await self.push(CANNOT_SPLIT())
            return AuthResult(success=False, handled=True)
        authzid, authcid, password = parts
        if authzid and authzid.lower() != authcid.lower():
            self._credentials_refused = True
            return AuthResult(success=False, handled=False, message=AUTHZID_REFUSED())
        return self._check_password("PLAIN", authcid, password)

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        """LOGIN (draft-murchison-sasl-login): the user name (perhaps on the AUTH line),
        then the password, each after its prompt."""
        login = await self._initial_or_challenged(args, LOGIN_USERNAME_PROMPT)
        if login is None:
            return AuthResult(success=False, handled=True)
        password = await self._challenged(LOGIN_PASSWORD_PROMPT)
        if password is None:
            return AuthResult(success=False, handled=True)
        return self._check_password("LOGIN", login, password)

    def _check_password(self, mechanism: str, login: bytes, password: bytes) -> AuthResult:
        assert self.session is not None and self.envelope is not None
        if self._check is None:  # no users on this server: nobody logs in
            return AuthResult(success=False, handled=False)
        data = LoginPassword(login, password)
        return self._check(self, self.session, self.envelope, mechanism, data)

    async def _initial_or_challenged(self, args: list[str], prompt: str) -> bytes | None:
        """The initial response on the AUTH line (RFC 4954 §4), else the answer to
        ``prompt``; None once a reply has said why there is none."""
        if len(args) == 1:
            return await self._challenged(prompt)
        try:
            return base64.b64decode(args[1], validate=True)
        except binascii.Error:
            await self.push(BAD_BASE64())
            return None

    async def _challenged(self, prompt: str) -> bytes | None:
        """Send a 334 challenge and decode the client's answer; None once a reply has said
        why there is none: cancelled (``*``), not base64, or too long (RFC 4954 §4)."""
        await self.push(b"334 " + base64.b64encode(prompt.encode()))
        line = await self._auth_line()
        if line is None:
            await self.push(AUTH_LINE_TOO_LONG())
            return None
        blob = line.strip()
        if blob == b"*":
            await self.push(AUTH_CANCELLED())
            return None
        try:
            return base64.b64decode(blob, validate=True)
        except binascii.Error:
            await self.push(BAD_BASE64())
            return None

    async def _auth_line(self) -> bytes | None:
        """The client's next line, at most ``AUTH_LINE_LIMIT`` octets; a longer one is read
        to its end, kept no further, and gives None. (aiosmtpd's ``readline`` raised at
        the stream's limit, and its text became the reply.)"""
        kept, size = bytearray(), 0
        while True:
            try:
                piece = await self._reader.readuntil()
                done = True
            except asyncio.LimitOverrunError as error:
                piece, done = await self._reader.readexactly(error.consumed), False
            except asyncio.IncompleteReadError as error:
                piece, done = error.partial, True
            size += len(piece)
            if size <= AUTH_LINE_LIMIT:
                kept += piece
            if done:
                return bytes(kept) if size <= AUTH_LINE_LIMIT else None

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
            self._land(self._arrivals)
        super().connection_made(transport)
        if not starting_tls:
            if self._slots is not None and transport.get_extra_info("sslcontext") is None:
                self._slots.link(transport)  # TCP: not behind a TLSLayer
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
        if not starting_tls and self._slots is not None:
            self._holds_slot = self._slots.take(self)
            if not self._holds_slot:  # RFC 5321 §3.8: refuse with 421, then close
                assert self._handler_coroutine is not None
                self._handler_coroutine.cancel()  # no greeting
                self._say_and_close(TOO_MANY_CONNECTIONS(host=self.hostname))

    def _say_and_close(self, reply: str) -> None:
        """Write a last reply and close, outside the command loop (a timer, a refusal)."""
        if self.transport is None or self.transport.is_closing():
            return
        data = reply.encode("ascii") + CRLF
        self.wire.record("server", data)
        self.transport.write(data)  # type: ignore[attr-defined]
        self.transport.close()

    def _reset_timeout(self, duration: float | None = None) -> None:
        """Move the idle deadline. aiosmtpd cancels its timer and makes a new one for
        every command; one timer that, firing early, waits again for the rest costs
        less, and the deadline is the same."""
        self._deadline = self.loop.time() + (duration or self._timeout_duration)
        handle = self._timeout_handle
        if handle is None or handle.cancelled() or handle.when() > self._deadline:
            if handle is not None:
                handle.cancel()
            self._timeout_handle = self.loop.call_at(self._deadline, self._timer_fired)

    def _timer_fired(self) -> None:
        if self.loop.time() < self._deadline:
            self._timeout_handle = self.loop.call_at(self._deadline, self._timer_fired)
        else:
            self._timeout_cb()

    def _timeout_cb(self) -> None:
        """Idle (or in DATA) too long: say so before closing (RFC 5321 §4.5.3.2, §3.8)."""
        self._say_and_close(TIMEOUT(host=self.hostname))

    def connection_lost(self, error: Exception | None) -> None:
        if self._in_flight and self._peer_eof and error is None and not self._gone:
            self._arrive("lost", 0.0)  # the client closed after bytes still in flight
            return
        self._gone = True
        self._in_flight.clear()
        if self._holds_slot and self._slots is not None:
            self._slots.give_back(self)
            self._holds_slot = False
        if self.session is not None and self.session.host_name:
            # The server knows the client only by the name it claimed in HELO/EHLO.
            self.wire.client = self.session.host_name
        super().connection_lost(error)
        # asyncio keeps a reset (ConnectionResetError) in a future that only
        # StreamWriter.wait_closed() reads, and nobody calls it. aiosmtpd's __del__ reads
        # it, but a session dies in a reference cycle, where the garbage collector may
        # finalize the future first: "Future exception was never retrieved", at exit.
        if self._closed.done() and not self._closed.cancelled():
            self._closed.exception()
        if self._journal is not None:
            self._journal.closed(self.wire)
        else:
            self.wire.close()

    # -- the simulated network (LabServer.slow_down; see the module docstring) ------
    async def _handle_client(self) -> None:
        if self.faults.latency:  # the greeting: one round trip after the connection
            try:
                await asyncio.sleep(self.faults.latency)
            except asyncio.CancelledError:  # the client left first (aiosmtpd would close)
                if self.transport is not None:
                    self.transport.close()
                raise
        await super()._handle_client()

    def data_received(self, data: bytes) -> None:
        latency = self.faults.latency
        if latency or self._in_flight:
            self._arrive(data, latency)
        else:
            self._hand_over(data)

    def eof_received(self) -> bool | None:
        self._peer_eof = True
        if not self._in_flight:
            return super().eof_received()
        self._arrive("eof", 0.0)  # after the bytes still in flight
        # A plain socket stays open to answer them (TLS closes whatever we return).
        return self.transport is not None and self.transport.get_extra_info("sslcontext") is None

    def _hand_over(self, data: bytes) -> None:
        """Give bytes to the session, recording them as it reads them."""
        self.wire.record("client", data)
        super().data_received(data)

    def _arrive(self, item: bytes | str, latency: float) -> None:
        """Let ``item`` reach the session ``latency`` s from now, after everything before it."""
        self._arrivals += 1
        self._last_due = max(self.loop.time() + latency, self._last_due)
        self._in_flight.append((self._arrivals, item))
        self.loop.call_at(self._last_due, self._land, self._arrivals)

    def _land(self, upto: int) -> None:
        """Hand over what is in flight, in order, up to arrival number ``upto``."""
        while self._in_flight and self._in_flight[0][0] <= upto and not self._gone:
            _, item = self._in_flight.popleft()
            if isinstance(item, str):
                # After the session has read the bytes before it: a FIN is read after data.
                self.loop.call_soon(self._end, item)
            elif self._peer_eof or (self.transport is not None and not self.transport.is_closing()):
                self._hand_over(item)
            # else: the server hung up; what was still in flight is lost

    def _end(self, item: str) -> None:
        if self._gone:
            return
        if item == "lost":
            self.connection_lost(None)
        elif not super().eof_received() and self.transport is not None:
            self.transport.close()

    async def push(self, status: str | bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return  # hung up (a fault rule): nothing more crosses the wire
        if isinstance(status, str):
            ours = STOCK.get((self._verb, status)) or STOCK.get(("*", status))
            status = ours() if ours is not None else status
            if self._enhanced_codes():
                status = with_enhanced_code(status)
            else:
                status = without_enhanced_code(status)
            # Replies are ASCII (RFC 5321 §2.4) but in a transaction that declared SMTPUTF8
            # (RFC 6531); a byte that is no character (a lone surrogate) becomes an escape.
            utf8 = self.envelope is not None and self.envelope.smtp_utf8
            status = status.encode("utf-8" if utf8 else "ascii", "backslashreplace")
        self.wire.record("server", status + CRLF)
        await super().push(status)


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
        super().__init__(loop, app, context, None, server_side=True)
        self._connections = connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._connections.link(transport)


class LabController(Controller):
    """A threaded aiosmtpd Controller on 127.0.0.1, on a port the OS picks, that always stops."""

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
        is_probe = not self._factory_invoked.is_set()
        return self.smtp_class(
            self.handler,
            journal=None if is_probe else self.journal,
            faults=Faults() if is_probe else self.faults,
            connections=None if is_probe else self.connections,
            **self.SMTP_kwargs,
        )

    async def _bind(self) -> asyncio.AbstractServer:
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
        session = self._factory_invoker()
        if self.ssl_context is None:
            return session
        return TLSLayer(self.loop, session, self.ssl_context, self.connections)

    def _create_server(self):  # type: ignore[override]  # a coroutine is what _run awaits
        return self._bind()

    async def _shut_down(self) -> None:
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

    def stop(self, no_assert: bool = False) -> None:
        """Stop the loop and its thread, waiting at most :data:`STOP_DEADLINE` seconds.

        A loop that has not ended by then is given up on: its listening socket is closed,
        which frees the port, its daemon thread is left to end whenever it can, and a
        RuntimeWarning names the server (a stop never hangs a kernel or a test run).
        """
        thread, self._thread = self._thread, None
        assert no_assert or thread is not None, "SMTP daemon not running"
        self.loop.call_soon_threadsafe(self.loop.create_task, self._shut_down())
        if thread is not None:
            thread.join(STOP_DEADLINE)
            if thread.is_alive():
                self._give_up()
                return
        self._cleanup()

    def _give_up(self) -> None:
        """Free the port of a loop that does not stop, and say so. The thread keeps what
        ``_cleanup()`` would reset: it may still need it, should it end one day.

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

