"""Where the lab's mail goes, and the port that reaches each host: the lab's router.

Theory of operation
-------------------
A :class:`Router` answers the questions a sender asks before it connects. For a
domain: which hosts, in which order (:func:`~smtplab.dns.route.resolve_route`,
RFC 5321 §5.1, asked of the lab DNS). For a host: which port on 127.0.0.1 reaches
it (a lab server's, a wiretap's while one is in front of it, or that of a server the
lab did not start) and what it does with mail (its role). The delivery queues get
these answers as a :class:`~smtplab.queue.delivery.Hop` (:meth:`Router.hop`);
``lab.send`` gets its default server from :meth:`Router.default_route`.

A queue's routes are remembered until the lab DNS changes: real MTAs cache answers
for their TTL, but here any edit (a record, a zone, a fault) makes the next delivery
look again, so a lesson's change takes effect at once. Every lookup, the lab's and
the queues', draws from one seeded random generator, so equal-preference MX hosts
are shuffled the same way on every run.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

import dns.resolver

from smtplab.dns.records import RecordStore
from smtplab.dns.route import Route, resolve_route
from smtplab.protocol.message import InvalidInput
from smtplab.protocol.rules import domain_of
from smtplab.queue.delivery import Hop
from smtplab.world import LOOPBACK, ROLES, World


class Listening(Protocol):
    """A running lab server as the router sees it."""

    @property
    def host(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def port(self) -> int: ...


class Router:
    """Routes from the lab DNS and ports on loopback, for the lab's client and its queues.

    ``servers`` is the lab's own mapping of host to server, read at each question (the
    lab fills it as it starts its servers).
    """

    def __init__(
        self,
        world: World,
        dns: RecordStore,
        resolver: dns.resolver.Resolver,
        servers: Mapping[str, Listening],
        *,
        seed: int = 0,
    ):
        self.world = world
        self.dns = dns
        self.resolver = resolver
        self.servers = servers
        #: Servers the lab did not start (Postfix, smtp-sink), by host: their ports.
        self.external: dict[str, int] = {}
        self._taps: dict[str, int] = {}
        self._rng = random.Random(seed)
        self._routes: dict[tuple[str, str], tuple[int, Route]] = {}
        self._routes_lock = threading.Lock()

    # -- domains ----------------------------------------------------------------------
    def route(self, domain: str) -> Route:
        """Where mail for ``domain`` goes, asked of the lab DNS (RFC 5321 §5.1)."""
        return resolve_route(domain, self.resolver, self._rng)

    def queue_route(self, domain: str, local: str) -> Route:
        """:meth:`route` for the queue of ``local``, remembered until the lab DNS changes;
        ``local`` never sends to itself or to a less preferred MX (RFC 5321 §5.1)."""
        version = self.dns.version
        with self._routes_lock:
            cached = self._routes.get((domain, local))
        if cached is not None and cached[0] == version:
            return cached[1]
        route = resolve_route(domain, self.resolver, self._rng, local=local)
        with self._routes_lock:
            self._routes[(domain, local)] = (version, route)
        return route

    def default_route(self, sender: str, recipients: Sequence[str]) -> str:
        """Without ``via``: the sender's submission server, else the recipient's best MX."""
        for spec in self.world.servers:
            if ROLES[spec.role].client_default and domain_of(sender) in spec.domains:
                return spec.host
        domain = self.world.domain(domain_of(recipients[0]))
        if domain is None or not domain.mx:
            raise InvalidInput("to", f"{recipients[0]!r} is not in a lab domain; pass via=")
        return min(domain.mx)[1]

    # -- hosts ------------------------------------------------------------------------
    def reach(self, host: str) -> int:
        """The port that reaches the lab server ``host``: its wiretap's while one is on."""
        return self._taps.get(host, self.servers[host].port)

    def port_of(self, host: str) -> int | None:
        """Where a queue connects for ``host``: a lab server (or its wiretap), a server
        added with :meth:`add_external`, or None for a host nothing listens for."""
        return self.reach(host) if host in self.servers else self.external.get(host)

    def role_of(self, host: str) -> str | None:
        """A lab server's role, or None for a host outside the lab (:meth:`add_external`)."""
        server = self.servers.get(host)
        return server.role if server is not None else None

    def hop(self) -> Hop:
        """The router's answers as a delivery queue asks for them."""
        return Hop(self.queue_route, self.port_of, self.role_of)

    def add_external(self, host: str, port: int) -> None:
        """Reach ``host`` at 127.0.0.1:``port``, with an A record for it in the lab DNS."""
        self.external[host] = port
        if not any(f".{host}.".endswith(f".{zone}") for zone in self.dns.zones()):
            self.dns.add_zone(host.partition(".")[2] or host)
        self.dns.replace(host, "A", [LOOPBACK])

    @contextlib.contextmanager
    def through(self, host: str, port: int) -> Iterator[None]:
        """While the block runs, connections to the lab server ``host`` go to ``port``
        (a wiretap in front of it)."""
        self._taps[host] = port
        try:
            yield
        finally:
            del self._taps[host]
