"""A simulated network between a client and a lab session (``LabServer.slow_down``).

Theory of operation
-------------------
Latency models a network round trip, not a slow server: bytes the client sends
reach the session ``latency`` seconds after they arrive, in order, and the greeting
comes one round trip after the connection (TCP's handshake); replies are written at
once. So a client that waits for each reply pays a round trip per command, while a
pipelined group (RFC 2920) pays one for all its commands. Bytes are recorded when they
reach the session, so a transcript reads the same with or without latency.

A client that closes right after its last command (``QUIT``, then FIN) still has that
command read: its end of file waits behind the bytes in flight (on a plain socket the
server can still answer; under TLS the connection closes at once, so the command is
read but not answered). Bytes still in flight when the *server* hangs up, or the
client resets, are lost, as on a real network. The TLS handshake itself is not delayed.

:class:`SimulatedNetwork` holds what is in flight for one connection and hands it to
its :class:`Receiver` (the session) when it is due, on the session's loop.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Protocol

#: What may be in flight besides bytes: the client's end of file, and the connection's
#: loss after it (the client closed with bytes still in flight).
EOF, LOST = "eof", "lost"


class Receiver(Protocol):
    """The session end of a simulated network."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def transport(self) -> asyncio.BaseTransport | None: ...

    def hand_over(self, data: bytes) -> None:
        """Read ``data`` now (it has reached the session)."""

    def read_eof(self) -> bool | None:
        """Read the client's end of file now (as ``eof_received``)."""

    def connection_lost(self, error: Exception | None) -> None: ...


class SimulatedNetwork:
    """What the client of one connection sent that has not reached the session yet."""

    def __init__(self, receiver: Receiver):
        self.receiver = receiver
        #: (arrival number, bytes or EOF/LOST), in order.
        self.in_flight: collections.deque[tuple[int, bytes | str]] = collections.deque()
        self.arrivals = 0
        self.last_due = 0.0
        self.peer_eof = False
        self.gone = False

    def received(self, data: bytes, latency: float) -> None:
        """Bytes from the client: to the session at once, or ``latency`` s from now."""
        if latency or self.in_flight:
            self.arrive(data, latency)
        else:
            self.receiver.hand_over(data)

    def eof(self) -> bool | None:
        """The client's end of file, behind any bytes in flight (as ``eof_received``)."""
        self.peer_eof = True
        if not self.in_flight:
            return self.receiver.read_eof()
        self.arrive(EOF, 0.0)
        # A plain socket stays open to answer them (TLS closes whatever we return).
        transport = self.receiver.transport
        return transport is not None and transport.get_extra_info("sslcontext") is None

    def defers_loss(self, error: Exception | None) -> bool:
        """Whether the connection's loss waits behind bytes in flight (the client closed
        after sending them); else nothing in flight will reach the session any more."""
        if self.in_flight and self.peer_eof and error is None and not self.gone:
            self.arrive(LOST, 0.0)
            return True
        self.gone = True
        self.in_flight.clear()
        return False

    def land_all(self) -> None:
        """Hand over everything in flight now (STARTTLS: it all came before the handshake)."""
        self.land(self.arrivals)

    def arrive(self, item: bytes | str, latency: float) -> None:
        """Let ``item`` reach the session ``latency`` s from now, after everything before it."""
        loop = self.receiver.loop
        self.arrivals += 1
        self.last_due = max(loop.time() + latency, self.last_due)
        self.in_flight.append((self.arrivals, item))
        loop.call_at(self.last_due, self.land, self.arrivals)

    def land(self, upto: int) -> None:
        """Hand over what is in flight, in order, up to arrival number ``upto``."""
        while self.in_flight and self.in_flight[0][0] <= upto and not self.gone:
            _, item = self.in_flight.popleft()
            transport = self.receiver.transport
            if isinstance(item, str):
                # After the session has read the bytes before it: a FIN is read after data.
                self.receiver.loop.call_soon(self.end, item)
            elif self.peer_eof or (transport is not None and not transport.is_closing()):
                self.receiver.hand_over(item)
            # else: the server hung up; what was still in flight is lost

    def end(self, item: str) -> None:
        if self.gone:
            return
        if item == LOST:
            self.receiver.connection_lost(None)
        elif not self.receiver.read_eof() and (transport := self.receiver.transport) is not None:
            transport.close()
