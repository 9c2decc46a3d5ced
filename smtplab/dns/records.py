"""The lab's DNS records and the pure answer to a query: the DNS server's whole logic.

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
"""

from __future__ import annotations

import html
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.SOA import SOA

Fault = Literal["servfail", "timeout"]
RRset = dns.rrset.RRset
_Key = tuple[dns.name.Name, dns.rdatatype.RdataType]
_Change = Callable[[tuple[dns.rdata.Rdata, ...]], Iterable[dns.rdata.Rdata]]
_SOA = dns.rdatatype.SOA
_SILENT = -1  # pseudo-rcode: the "timeout" fault sends nothing at all


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

    def _edit(self, name: str, rdtype: str | int, change: _Change, ttl: int | None = None) -> int:
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
        assert isinstance(soa, SOA)
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
            assert isinstance(soa, SOA)
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


def respond(store: RecordStore, wire: bytes, udp: bool) -> tuple[bytes | None, DNSQuery]:
    """The response to ``wire`` (None: say nothing) and the log entry of the query."""
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
    rcode: int
    answer: list[RRset]
    authority: list[RRset]
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
    response.set_rcode(dns.rcode.Rcode(rcode))
    response.answer, response.authority = answer, authority
    limit = (max(512, query.payload) if query.edns >= 0 else 512) if udp else 65535
    try:
        out = response.to_wire(max_size=limit, prefer_truncation=True)
    except Exception:  # e.g. a TSIG we cannot sign: say so rather than crash
        return _header_only(wire, dns.rcode.SERVFAIL), DNSQuery(**log, rcode="SERVFAIL", answers=())
    texts = tuple(f"{rs.name} {rs.ttl} IN {rs.rdtype.name} {rd}" for rs in answer for rd in rs)
    return out, DNSQuery(**log, rcode=dns.rcode.to_text(dns.rcode.Rcode(rcode)), answers=texts)


def answer(store: RecordStore, wire: bytes, udp: bool = False) -> bytes | None:
    """Answer one DNS query in wire format; None means send nothing. Never raises."""
    return respond(store, wire, udp)[0]
