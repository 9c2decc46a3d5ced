"""The lab's own authoritative DNS server, so that MX routing never needs the Internet.

Theory of operation
-------------------
`LabDNSServer` puts :func:`smtplab.dns.records.answer` (the records and the protocol) on
UDP and TCP (2-byte length prefix, RFC 1035 §4.2.2) on the same 127.0.0.1 port, in its
own asyncio loop in a daemon thread, because a Jupyter kernel's loop is already running.
Its TCP side shares the process's file descriptors with every SMTP server of the lab, so
it keeps few: a connection idle for `tcp_idle_timeout` seconds is closed (RFC 7766
§6.2.3: of the order of seconds; only a whole message restarts the timer, so a slow drip
does not), and beyond `max_tcp_connections` the least recently active one is closed to
make room (RFC 7766 §6.2.2, §10). `make_resolver` is the only way the lab resolves
names: it never reads /etc/resolv.conf and never caches, so an edit shows at the next
lookup.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import threading

import dns.nameserver
import dns.resolver

from smtplab.dns.records import DNSQuery, RecordStore, respond

#: Seconds a TCP connection may stay without a whole query (RFC 7766 §6.2.3).
TCP_IDLE_TIMEOUT = 10.0
#: TCP connections served at once. The lab's resolvers ask over UDP and use TCP only
#: for a truncated answer, one short connection each; 64 is far above that, and a
#: small share of a 1024 open-file limit, so a flood cannot starve the SMTP servers.
MAX_TCP_CONNECTIONS = 64


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, server: LabDNSServer) -> None:
        self.server, self.closed = server, asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.DatagramTransport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        out = self.server._handle(data, udp=True)
        if out is not None:
            self.transport.sendto(out, addr)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set_result(None)


class _TCP(asyncio.Protocol):
    def __init__(self, server: LabDNSServer) -> None:
        self.server, self.buffer = server, b""
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport, self.closed = transport, asyncio.get_running_loop().create_future()
        conns = self.server._tcp_conns
        while len(conns) >= self.server.max_tcp_connections:  # make room: the least active goes
            oldest = next(iter(conns))
            del conns[oldest]
            oldest.transport.close()
        conns[self] = None
        self._active()

    def _active(self) -> None:
        """A whole message (or the connection) arrived: restart the idle timer."""
        if self._idle is not None:
            self._idle.cancel()
        conns = self.server._tcp_conns
        if self in conns:  # most recently active last
            del conns[self]
            conns[self] = None
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(self.server.tcp_idle_timeout, self.transport.close)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 2:
            n = int.from_bytes(self.buffer[:2])
            if len(self.buffer) < 2 + n:
                break
            msg, self.buffer = self.buffer[2 : 2 + n], self.buffer[2 + n :]
            self._active()
            out = self.server._handle(msg, udp=False)
            if out is not None:
                self.transport.write(len(out).to_bytes(2) + out)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self.server._tcp_conns.pop(self, None)
        self.closed.set_result(None)


class LabDNSServer:
    """Serve a RecordStore on 127.0.0.1, UDP and TCP on one port, from a daemon thread."""

    def __init__(
        self,
        store: RecordStore,
        host: str = "127.0.0.1",
        port: int = 0,
        log_size: int = 1000,
        *,
        tcp_idle_timeout: float = TCP_IDLE_TIMEOUT,
        max_tcp_connections: int = MAX_TCP_CONNECTIONS,
    ) -> None:
        self.store, self.host, self.port, self._want_port = store, host, port, port
        self._log: collections.deque[DNSQuery] = collections.deque(maxlen=log_size)
        self._log_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        #: Read for every connection and every message: may be changed while running.
        self.tcp_idle_timeout = tcp_idle_timeout
        self.max_tcp_connections = max_tcp_connections
        self._tcp_conns: dict[_TCP, None] = {}  # least recently active first

    @property
    def queries(self) -> list[DNSQuery]:
        """The most recent queries, oldest first."""
        with self._log_lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._log_lock:
            self._log.clear()

    def _handle(self, wire: bytes, udp: bool) -> bytes | None:
        out, entry = respond(self.store, wire, udp)
        with self._log_lock:
            self._log.append(entry)
        return out

    def start(self) -> LabDNSServer:
        """Bind both sockets and return once they are listening."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run, args=(ready, failure), name="smtplab-dns", daemon=True
        )
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    async def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        for _attempt in range(10):
            udp, self._udp = await loop.create_datagram_endpoint(
                lambda: _UDP(self), local_addr=(self.host, self._want_port)
            )
            port = udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await loop.create_server(lambda: _TCP(self), self.host, port)
            except OSError as exc:  # someone holds this TCP port: try another UDP port
                udp.close()
                await self._udp.closed
                if exc.errno != errno.EADDRINUSE or self._want_port:
                    raise
                continue
            self.port = port
            return
        raise OSError(errno.EADDRINUSE, "no port free for both UDP and TCP")

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = self._loop
        try:
            loop.run_until_complete(self._bind())
        except BaseException as exc:
            failure.append(exc)
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._close())
            loop.close()

    async def _close(self) -> None:
        self._tcp.close()
        self._udp.transport.close()
        conns = list(self._tcp_conns)
        for conn in conns:
            conn.transport.abort()
        await asyncio.gather(self._udp.closed, self._tcp.wait_closed(), *(c.closed for c in conns))

    def stop(self) -> None:
        """Close the sockets and join the thread; safe to call twice."""
        if self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = None

    def __enter__(self) -> LabDNSServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._thread else "stopped"
        return f"<LabDNSServer {self.host}:{self.port} udp+tcp {state}>"


def make_resolver(host: str, port: int, timeout: float = 2.0) -> dns.resolver.Resolver:
    """A resolver that asks only the lab server: no resolv.conf, no cache."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port)]
    resolver.port = port
    resolver.cache = None
    resolver.timeout = resolver.lifetime = timeout
    return resolver
