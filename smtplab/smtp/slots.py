"""The connections of one lab server, and how many sessions it holds at once.

A server counts its sessions against a limit (RFC 5321 §3.8: over it, a client gets 421
and the connection closes) and keeps every TCP connection, under any TLS layer, so that
going down drops them all at once, as a crash would (:meth:`ConnectionSlots.hang_up`).
"""

from __future__ import annotations

import asyncio
import weakref


class ConnectionSlots:
    """The open connections of one server, and its sessions (at most ``limit``); used on
    the server's loop only."""

    def __init__(self, limit: int | None):
        self.limit = limit
        self.sessions: set[object] = set()
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

    def take(self, session: object) -> bool:
        if self.limit is not None and len(self.sessions) >= self.limit:
            return False
        self.sessions.add(session)
        return True

    def give_back(self, session: object) -> None:
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
