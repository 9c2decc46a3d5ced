"""The one door to aiosmtpd's internals: every private member the lab relies on, here.

Theory of operation
-------------------
aiosmtpd 1.4 offers handler hooks, but not the places the lab needs to stand: in front
of every command, at each line read, before the greeting, around the idle timer, before
a handler's hook, at the envelope's birth, and around the controller's start and stop.
The two classes here reach those places through aiosmtpd's private members, each
override with a comment saying why, and offer public-looking hooks instead, which the
rest of the lab (:mod:`smtplab.smtp.session`, :mod:`smtplab.smtp.controller`) overrides:

* :class:`AiosmtpdSession` (aiosmtpd's ``SMTP``): :meth:`~AiosmtpdSession.run_command`,
  :attr:`~AiosmtpdSession.last_line`, :meth:`~AiosmtpdSession.before_greeting`,
  :meth:`~AiosmtpdSession.read_path`, :meth:`~AiosmtpdSession.before_handler`,
  :meth:`~AiosmtpdSession.new_envelope`, :meth:`~AiosmtpdSession.idle_timeout`, and
  services: :meth:`~AiosmtpdSession.restart_idle_timer`,
  :meth:`~AiosmtpdSession.cancel_greeting`, :attr:`~AiosmtpdSession.reader`,
  :attr:`~AiosmtpdSession.tls_before_auth` (a name that does not start with
  ``auth_``, ``smtp_`` or ``handle_``, as no hook here does: aiosmtpd would take it
  for an AUTH mechanism, a command or a handler hook).
* :class:`AiosmtpdController` (aiosmtpd's threaded ``Controller``):
  :meth:`~AiosmtpdController.listen`, :meth:`~AiosmtpdController.new_session`,
  :meth:`~AiosmtpdController.shut_down`, :meth:`~AiosmtpdController.give_up`.
* :data:`STOCK_REPLIES`: aiosmtpd's reply texts that the lab answers differently,
  matched by their wording.

``tests/test_aiosmtpd_canary.py`` names every private member used here, checks that
aiosmtpd still has it and still uses it the way this module assumes, and that no other
module of the lab touches one.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Sequence
from typing import Any

from aiosmtpd.controller import Controller, _server_to_client_ssl_ctx
from aiosmtpd.smtp import SMTP, Envelope

from smtplab.protocol import replies
from smtplab.protocol.replies import SMTPReply

#: aiosmtpd's stock replies that the lab answers differently: (command, aiosmtpd's text)
#: → the lab's reply; ``*`` stands for any command. aiosmtpd has no names for its replies,
#: so they are matched by wording (the canary checks aiosmtpd still says each).
STOCK_REPLIES: dict[tuple[str, str], SMTPReply] = {
    ("*", "502 5.5.1 Too many unrecognized commands, goodbye."): replies.TOO_MANY_UNKNOWN,
    ("MAIL", "553 5.1.3 Error: malformed address"): replies.BAD_SENDER_SYNTAX,
    ("RCPT", "553 5.1.3 Error: malformed address"): replies.BAD_RECIPIENT_SYNTAX,
}


def aiosmtpd_hooks(cls: type) -> list[str]:
    """The attributes aiosmtpd looks for when it builds a session: a protocol's
    ``smtp_*`` commands and ``auth_*`` mechanisms, a handler's ``handle_*`` hooks.

    ``SMTP.__init__`` runs ``inspect.getmembers`` and ``dir`` over the session and
    its handler for every new connection, reading every attribute; a ``__dir__``
    that answers with this list (computed once per class) makes that cheap.
    """
    hooks = _HOOKS.get(cls)
    if hooks is None:
        hooks = _HOOKS[cls] = sorted(
            name for name in dir(cls) if name.startswith(("smtp_", "auth_", "handle_"))
        )
    return hooks


_HOOKS: dict[type, list[str]] = {}


class ListsOnlyHooks:
    """A base for sessions and handlers: ``dir()`` lists only :func:`aiosmtpd_hooks`."""

    def __dir__(self) -> list[str]:
        return aiosmtpd_hooks(type(self))


class GuardedCommand:
    """One command method behind its session's :meth:`AiosmtpdSession.run_command`; reads
    through to the method's own attributes (``HELP`` shows its ``@syntax``)."""

    __slots__ = ("command", "method", "session")

    def __init__(self, session: AiosmtpdSession, command: str, method: Any):
        self.session, self.command, self.method = session, command, method

    def __call__(self, arg: str | None) -> Awaitable[None]:
        return self.session.run_command(self.command, self.method, arg)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.method, name)


class GuardedCommands(dict[str, Any]):
    """A session's command table (aiosmtpd's ``_smtp_methods``). The dispatcher's
    lookup hands out the command behind the guard; built per command run, not for
    every command a session knows, because most connections run only a few."""

    def __init__(self, session: AiosmtpdSession, methods: dict[str, Any]):
        super().__init__(methods)
        self.session = session

    def get(self, command: str, default: Any = None) -> Any:
        method = super().get(command)
        return default if method is None else GuardedCommand(self.session, command, method)


class AiosmtpdSession(ListsOnlyHooks, SMTP):
    """aiosmtpd's ``SMTP`` with hooks where the lab needs them (see the module docstring)."""

    def __init__(self, handler: Any, **kwargs: Any):
        super().__init__(handler, **kwargs)
        #: The last line read up to LF (a command line, or an AUTH response), with its
        #: line end; None while one is being read.
        self.last_line: bytes | None = None
        self._deadline = 0.0
        # aiosmtpd dispatches every command through self._smtp_methods.get(command):
        # the one place to stand in front of all of them.
        self._smtp_methods = GuardedCommands(self, self._smtp_methods)

    # -- hooks -------------------------------------------------------------------------
    async def run_command(self, command: str, method: Any, arg: str | None) -> None:
        """Run one command (``method`` is its ``smtp_*`` method)."""
        await method(arg)

    async def before_greeting(self) -> None:
        """Awaited once a connection is made, before the greeting is sent."""

    def read_path(self, arg: str) -> tuple[str | None, str | None]:
        """The path of MAIL/RCPT and what follows it; ``(None, None)`` if malformed."""
        return super()._getaddr(arg)

    def before_handler(self, command: str, args: Sequence[Any]) -> str | None:
        """A reply instead of the handler's ``handle_<command>`` hook, or None to call it."""
        return None

    def new_envelope(self) -> Envelope:
        """The envelope of each new transaction."""
        return Envelope()

    def idle_timeout(self) -> None:
        """The session was idle (or in DATA) too long: aiosmtpd closes it."""
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    # -- services ----------------------------------------------------------------------
    @property
    def reader(self) -> asyncio.StreamReader:
        """The stream the session reads the client from."""
        reader: asyncio.StreamReader = self._reader
        return reader

    @property
    def tls_before_auth(self) -> bool:
        """The ``auth_require_tls=`` option: AUTH only over TLS."""
        return bool(self._auth_require_tls)

    def cancel_greeting(self) -> None:
        """Stop the session before it says anything (it has not begun yet)."""
        assert self._handler_coroutine is not None
        self._handler_coroutine.cancel()

    def restart_idle_timer(self) -> None:
        """Give the session its full ``timeout`` again, from now."""
        self._reset_timeout()

    # -- aiosmtpd's private members ----------------------------------------------------
    def _cb_client_connected(self, reader: asyncio.StreamReader, writer: Any) -> None:
        """aiosmtpd reads command lines with ``reader.readuntil()`` and strips their line
        end, every CR before the LF: wrap that reader to keep each line as read."""
        super()._cb_client_connected(reader, writer)
        read_until = reader.readuntil

        async def readuntil(separator: bytes = b"\n") -> bytes:
            if separator != b"\n":  # a DATA line (read up to CRLF)
                return await read_until(separator)
            self.last_line = None
            self.last_line = line = await read_until(separator)
            return line

        reader.readuntil = readuntil  # type: ignore[method-assign,assignment]

    async def _handle_client(self) -> None:
        """aiosmtpd's task for the whole session, which begins with the greeting."""
        await self.before_greeting()
        await super()._handle_client()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's MAIL/RCPT path parser: see :meth:`read_path`."""
        return self.read_path(arg)

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        """aiosmtpd calls each ``handle_*`` hook of the handler through here."""
        reply = self.before_handler(command, args)
        if reply is not None:
            return reply
        return await super()._call_handler_hook(command, *args)

    def _create_envelope(self) -> Envelope:
        """aiosmtpd makes each new envelope here: see :meth:`new_envelope`."""
        return self.new_envelope()

    def _reset_timeout(self, duration: float | None = None) -> None:
        """Move the idle deadline. aiosmtpd cancels its timer and makes a new one for
        every command; one timer that, firing early, waits again for the rest costs
        less, and the deadline is the same. aiosmtpd cancels ``_timeout_handle`` when
        the connection is lost."""
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
        """aiosmtpd's idle timer fired: see :meth:`idle_timeout`."""
        self.idle_timeout()

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        # asyncio keeps a reset (ConnectionResetError) in a future that only
        # StreamWriter.wait_closed() reads, and nobody calls it. aiosmtpd's __del__ reads
        # it, but a session dies in a reference cycle, where the garbage collector may
        # finalize the future first: "Future exception was never retrieved", at exit.
        closed: asyncio.Future[None] = self._closed  # type: ignore[attr-defined]  # asyncio's
        if closed.done() and not closed.cancelled():
            closed.exception()


class AiosmtpdController(Controller):
    """aiosmtpd's threaded ``Controller`` with hooks where the lab needs them."""

    #: Seconds :meth:`stop` waits for the server's thread before :meth:`give_up`.
    stop_deadline = 5.0
    #: The local port of the readiness probe that :meth:`start` opens, until it is seen.
    probe_port: int | None = None

    # -- hooks -------------------------------------------------------------------------
    async def listen(self) -> asyncio.AbstractServer:
        """Start listening (on the controller's loop), sessions made by :meth:`new_session`."""
        raise NotImplementedError

    async def shut_down(self) -> None:
        """On the loop, at :meth:`stop`: end every task, then stop the loop."""
        self.cancel_tasks()

    def give_up(self) -> None:
        """The loop did not stop within :attr:`stop_deadline`; its thread is left behind."""

    # -- services ----------------------------------------------------------------------
    def new_session(self) -> Any:
        """A session for a new connection, made by :meth:`factory` (aiosmtpd notes that
        it was made, and turns an error in ``factory`` into one raised by ``start``)."""
        return self._factory_invoker()

    def is_probe(self, peer: Any) -> bool:
        """Whether a session's peer address (``peername``) is the readiness probe's; once."""
        if peer is None or self.probe_port is None or peer[1] != self.probe_port:
            return False
        self.probe_port = None  # the same port may be a client's one day
        return True

    # -- aiosmtpd's private members ----------------------------------------------------
    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        """aiosmtpd's ``_run`` awaits this on the new loop: see :meth:`listen`."""
        return self.listen()

    def _trigger_server(self) -> None:
        """aiosmtpd's readiness probe, which ``start`` opens once the server listens: here
        from a socket bound before it connects, so that the server tells the probe by its
        port (:meth:`is_probe`), not by being first; after a restart on the same port a
        client may come first. Otherwise as aiosmtpd's: under TLS on an implicit-TLS
        port (a client context made from the server's), reading the greeting."""
        with contextlib.ExitStack() as stack:
            probe = stack.enter_context(socket.socket())
            probe.bind((self.hostname, 0))
            self.probe_port = probe.getsockname()[1]
            probe.settimeout(1.0)
            probe.connect((self.hostname, self.port))
            if self.ssl_context:
                client = _server_to_client_ssl_ctx(self.ssl_context)
                probe = stack.enter_context(client.wrap_socket(probe))
            probe.recv(1024)

    def stop(self, no_assert: bool = False) -> None:
        """Stop the loop and its thread, waiting at most :attr:`stop_deadline` seconds.

        aiosmtpd's own ``stop`` cancels every task and stops the loop at once, and joins
        its thread (``_thread``) for ever; here the loop runs :meth:`shut_down` first, and
        a thread that has not ended by the deadline is left to :meth:`give_up`, which
        keeps what ``_cleanup()`` would reset (the thread may still need it).
        """
        thread, self._thread = self._thread, None
        assert no_assert or thread is not None, "SMTP daemon not running"
        self.loop.call_soon_threadsafe(self.loop.create_task, self.shut_down())
        if thread is not None:
            thread.join(self.stop_deadline)
            if thread.is_alive():
                self.give_up()
                return
        self._cleanup()  # type: ignore[no-untyped-call]
