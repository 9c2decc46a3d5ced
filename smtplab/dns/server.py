"""The lab's own authoritative DNS server, so that MX routing never needs the Internet.

Theory of operation
-------------------
`RecordStore` holds the lab's records keyed by (owner name, type), grouped under zone
apexes that each carry an SOA. A notebook edits it while the server thread reads it,
so every access takes one lock, and every edit bumps the zone's SOA serial.

`answer(store, wire)` is the whole protocol: DNS query bytes in, response bytes (or
None, "say nothing") out. It is pure apart from reading the store, so it can be fuzzed.
Inside a lab zone responses are authoritative (AA): the answer, or NODATA or
NXDOMAIN with the zone's SOA in the authority section (RFC 2308). For a name
outside every lab zone the server is no authority, and, being authoritative
only (no recursion), it answers REFUSED without AA, as any such server does
(RFC 1035 §4.1.1: it "refuses to perform the specified operation for policy
reasons"); a resolver then tries its next server, and with none left reports a
temporary failure. A lab that wants a name to not exist serves a zone for it:
every lab serves ``invalid``, the name RFC 6761 §6.4 reserves for names that
never exist. FORMERR for garbage whose header we can read. Faults set on a name
turn it into SERVFAIL or silence, to show how a mail server copes with a broken
DNS.

`LabDNSServer` puts `answer` on UDP and TCP (2-byte length prefix, RFC 1035 §4.2.2)
on the same 127.0.0.1 port, in its own asyncio loop in a daemon thread, because a
Jupyter kernel's loop is already running. Its TCP side shares the process's file
descriptors with every SMTP server of the lab, so it keeps few: a connection idle
for `tcp_idle_timeout` seconds is closed (RFC 7766 §6.2.3: of the order of seconds;
only a whole message restarts the timer, so a slow drip does not), and beyond
`max_tcp_connections` the least recently active one is closed to make room
(RFC 7766 §6.2.2, §10). `make_resolver` is the only way the lab
resolves names: it never reads /etc/resolv.conf and never caches, so an edit shows
at the next lookup.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import html
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset

Fault = Literal["servfail", "timeout"]
RRset = dns.rrset.RRset
_Key = tuple[dns.name.Name, dns.rdatatype.RdataType]
_SOA = dns.rdatatype.SOA
_SILENT = -1  # pseudo-rcode: the "timeout" fault sends nothing at all
#: Seconds a TCP connection may stay without a whole query (RFC 7766 §6.2.3).
TCP_IDLE_TIMEOUT = 10.0
#: TCP connections served at once. The lab's resolvers ask over UDP and use TCP only
#: for a truncated answer, one short connection each; 64 is far above that, and a
#: small share of a 1024 open-file limit, so a flood cannot starve the SMTP servers.
MAX_TCP_CONNECTIONS = 64


@dataclass(frozen=True)
class Record:
    """One resource record as a reader sees it (zone-file text)."""

    name: str
    rdtype: str
    ttl: int
    value: str


@dataclass(frozen=True)
class DNSQuery:
    """One query the server saw and what it said back, for the lab to show."""

    transport: str
    name: str
    rdtype: str
    rcode: str
    answers: tuple[str, ...]


def _name(name: str | dns.name.Name) -> dns.name.Name:
    """Absolute and lower-case, so one owner is one key however the reader spells it."""
    return (name if isinstance(name, dns.name.Name) else dns.name.from_text(name)).canonicalize()


def _type(rdtype: str | int) -> dns.rdatatype.RdataType:
    return dns.rdatatype.RdataType.make(rdtype)


def _rdata(rdtype: dns.rdatatype.RdataType, value: str) -> dns.rdata.Rdata:
    return dns.rdata.from_text(
        dns.rdataclass.IN, rdtype, value, origin=dns.name.root, relativize=False
    )


class RecordStore:
    """The lab's zones and records; thread-safe, read live by the server (no cache)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._rrsets: dict[_Key, tuple[int, tuple[dns.rdata.Rdata, ...]]] = {}
        self._apexes: set[dns.name.Name] = set()
        self._faults: dict[dns.name.Name, Fault] = {}
        #: Grows with every change (records, zones, faults): lets a cache know it is stale.
        self.version = 0

    def add_zone(self, apex: str, ttl: int = 300) -> None:
        """Serve `apex` with an SOA; re-adding an existing zone changes nothing."""
        origin = _name(apex)
        with self._lock:
            if origin in self._apexes:
                return
            self._apexes.add(origin)
            self.version += 1
            soa = f"ns.{origin} hostmaster.{origin} 1 3600 600 86400 60"
            self._rrsets[(origin, _SOA)] = (ttl, (_rdata(_SOA, soa),))

    def zones(self) -> list[str]:
        with self._lock:
            return [z.to_text() for z in sorted(self._apexes)]

    def add(self, name: str, rdtype: str | int, value: str, ttl: int = 300) -> None:
        """Add one record; the whole RRset takes `ttl` (RFC 2181 §5.2)."""
        new = _rdata(_type(rdtype), value)
        self._edit(name, rdtype, lambda old: (*old, new), ttl)

    def remove(self, name: str, rdtype: str | int, value: str | None = None) -> int:
        """Remove one record, or all of that type if `value` is None; return how many went."""
        gone = None if value is None else _rdata(_type(rdtype), value)
        return self._edit(name, rdtype, lambda old: [r for r in old if gone not in (None, r)])

    def replace(self, name: str, rdtype: str | int, values: Iterable[str], ttl: int = 300) -> None:
        """Make `values` the whole RRset (no values removes it)."""
        new = [_rdata(_type(rdtype), v) for v in values]
        self._edit(name, rdtype, lambda old: new, ttl)

    def records(self, name: str | None = None) -> list[Record]:
        """All records (or those at `name`) in DNSSEC canonical order: deterministic."""
        with self._lock:
            items = sorted(self._rrsets.items(), key=lambda kv: (kv[0][0], kv[0][1]))
        want = None if name is None else _name(name)
        return [
            Record(owner.to_text(), kind.name, ttl, rd.to_text())
            for (owner, kind), (ttl, rds) in items
            if want is None or owner == want
            for rd in rds
        ]

    def set_fault(self, name: str, kind: Fault) -> None:
        """Make queries for `name` fail: "servfail" answers SERVFAIL, "timeout" never answers."""
        if kind not in ("servfail", "timeout"):
            raise ValueError(f"fault must be 'servfail' or 'timeout', not {kind!r}")
        with self._lock:
            self._faults[_name(name)] = kind
            self.version += 1

    def clear_fault(self, name: str | None = None) -> None:
        """Clear the fault on `name`, or every fault if `name` is None."""
        with self._lock:
            if name is None:
                self._faults.clear()
            else:
                self._faults.pop(_name(name), None)
            self.version += 1

    def _edit(self, name: str, rdtype: str | int, change: Callable, ttl: int | None = None) -> int:
        """Apply `change` to one RRset under the lock and bump the zone's serial."""
        owner, kind = _name(name), _type(rdtype)
        if kind == _SOA:
            raise ValueError("the SOA is managed by add_zone(); its serial bumps on every edit")
        with self._lock:
            if self._zone_of(owner) is None:
                raise ValueError(f"{owner} is in no lab zone; call add_zone() first")
            old_ttl, old = self._rrsets.pop((owner, kind), (300, ()))
            new, new_ttl = tuple(dict.fromkeys(change(old))), old_ttl if ttl is None else ttl
            if new:
                self._rrsets[(owner, kind)] = (new_ttl, new)
            if (new, new_ttl) != (old, old_ttl):
                self._bump(owner)
            return len(set(old) - set(new))

    def _zone_of(self, name: dns.name.Name) -> dns.name.Name | None:
        with self._lock:
            inside = [z for z in self._apexes if name.is_subdomain(z)]
        return max(inside, key=len, default=None)

    def _bump(self, owner: dns.name.Name) -> None:
        self.version += 1
        apex = self._zone_of(owner)
        assert apex is not None
        ttl, (soa,) = self._rrsets[(apex, _SOA)]
        self._rrsets[(apex, _SOA)] = (ttl, (soa.replace(serial=(soa.serial + 1) % 2**32),))

    def _lookup(self, qname: dns.name.Name, qtype: int) -> tuple[int, list[RRset], list[RRset]]:
        """Return (rcode, answer RRsets, authority RRsets) for one question."""
        with self._lock:
            fault = self._faults.get(qname)
            if fault is not None:
                return (_SILENT if fault == "timeout" else dns.rcode.SERVFAIL), [], []
            apex = self._zone_of(qname)
            if apex is None:
                return dns.rcode.REFUSED, [], []  # not ours to answer (see the docstring)
            found = [
                dns.rrset.from_rdata_list(owner, ttl, rds)
                for (owner, kind), (ttl, rds) in sorted(self._rrsets.items())
                if owner == qname and (kind == qtype or qtype == dns.rdatatype.ANY)
            ]
            if found:
                return dns.rcode.NOERROR, found, []
            ttl, (soa,) = self._rrsets[(apex, _SOA)]
            negative = [dns.rrset.from_rdata_list(apex, min(ttl, soa.minimum), [soa])]
            exists = any(owner.is_subdomain(qname) for owner, _ in self._rrsets)
            return (dns.rcode.NOERROR if exists else dns.rcode.NXDOMAIN), [], negative

    def __repr__(self) -> str:
        rows = [f"{r.name:30} {r.ttl:>6} IN {r.rdtype:6} {r.value}" for r in self.records()]
        return "\n".join(["RecordStore(", *(f"  {row}" for row in rows), ")"])

    def _repr_html_(self) -> str:
        def row(tag: str, cells: Iterable[object]) -> str:
            return (
                "<tr>" + "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in cells) + "</tr>"
            )

        rows = [row("td", (r.name, r.ttl, r.rdtype, r.value)) for r in self.records()]
        return "<table>" + row("th", ("name", "TTL", "type", "value")) + "".join(rows) + "</table>"


def _header_only(wire: bytes, rcode: int) -> bytes | None:
    """A bare reply echoing the id and opcode of a query we could not parse."""
    if len(wire) < 12 or wire[2] & 0x80:  # no full header, or it is itself a response
        return None
    (qid, flags) = struct.unpack("!HH", wire[:4])
    return struct.pack("!6H", qid, 0x8000 | (flags & 0x7900) | rcode, 0, 0, 0, 0)


def _respond(store: RecordStore, wire: bytes, udp: bool) -> tuple[bytes | None, DNSQuery]:
    transport = "udp" if udp else "tcp"
    try:
        query = dns.message.from_wire(wire)
        if query.flags & dns.flags.QR:
            return None, DNSQuery(transport, "?", "?", "(response dropped)", ())
        (question,) = query.question
        response = dns.message.make_response(query)
    except Exception:
        out = _header_only(wire, dns.rcode.FORMERR)
        return out, DNSQuery(transport, "?", "?", "FORMERR" if out else "(garbage dropped)", ())
    qname, qtype = question.name, question.rdtype
    log = dict(transport=transport, name=qname.to_text(), rdtype=dns.rdatatype.to_text(qtype))
    if query.opcode() != dns.opcode.QUERY:
        rcode, answer, authority = dns.rcode.NOTIMP, [], []
    elif question.rdclass != dns.rdataclass.IN:
        rcode, answer, authority = dns.rcode.REFUSED, [], []
    else:
        rcode, answer, authority = store._lookup(qname, qtype)
    if rcode == _SILENT:
        return None, DNSQuery(**log, rcode="(no answer: timeout fault)", answers=())
    if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        response.flags |= dns.flags.AA
    response.set_rcode(rcode)
    response.answer, response.authority = answer, authority
    limit = (max(512, query.payload) if query.edns >= 0 else 512) if udp else 65535
    try:
        out = response.to_wire(max_size=limit, prefer_truncation=True)
    except Exception:  # e.g. a TSIG we cannot sign: say so rather than crash
        return _header_only(wire, dns.rcode.SERVFAIL), DNSQuery(**log, rcode="SERVFAIL", answers=())
    texts = tuple(f"{rs.name} {rs.ttl} IN {rs.rdtype.name} {rd}" for rs in answer for rd in rs)
    return out, DNSQuery(**log, rcode=dns.rcode.to_text(rcode), answers=texts)


def answer(store: RecordStore, wire: bytes, udp: bool = False) -> bytes | None:
    """Answer one DNS query in wire format; None means send nothing. Never raises."""
    return _respond(store, wire, udp)[0]


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
        out, entry = _respond(self.store, wire, udp)
        with self._log_lock:
            self._log.append(entry)
        return out

    def start(self) -> LabDNSServer:
        """Bind both sockets and return once they are listening."""
        if self._thread is not None:
            return self
        ready, failure = threading.Event(), []
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
