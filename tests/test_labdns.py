"""The lab DNS server over real UDP and TCP sockets on 127.0.0.1."""

from __future__ import annotations

import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest
from hypothesis import given
from hypothesis import strategies as st
from peers.smtp import Raw, wait_until

from smtplab import Lab
from smtplab.dns.records import DNSQuery, Record, RecordStore, answer
from smtplab.dns.server import LabDNSServer, make_resolver


def lab_store() -> RecordStore:
    store = RecordStore()
    for zone in ("example.com", "example.org"):
        store.add_zone(zone)
    store.add("example.org", "MX", "10 mx1.example.org.")
    store.add("example.org", "MX", "20 mx2.example.org")
    store.add("example.org", "TXT", '"v=spf1 -all"')
    store.add("mx1.example.org", "A", "192.0.2.1")
    store.add("mx1.example.org", "AAAA", "2001:db8::1")
    store.add("mx2.example.org", "A", "192.0.2.2")
    store.add("deep.sub.example.com", "A", "192.0.2.9")
    return store


@pytest.fixture
def store() -> RecordStore:
    return lab_store()


@pytest.fixture
def server(store: RecordStore) -> Iterator[LabDNSServer]:
    with LabDNSServer(store) as srv:
        yield srv


@pytest.fixture
def resolver(server: LabDNSServer) -> dns.resolver.Resolver:
    return make_resolver(server.host, server.port, timeout=2.0)


def udp(server: LabDNSServer, name: str, rdtype: str, timeout: float = 2.0) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    return dns.query.udp(query, server.host, port=server.port, timeout=timeout)


def texts(resolver: dns.resolver.Resolver, name: str, rdtype: str) -> list[str]:
    return sorted(rd.to_text() for rd in resolver.resolve(name, rdtype))


# --- the record store -----------------------------------------------------------------------


def test_store_is_case_insensitive_and_ordered(store: RecordStore) -> None:
    store.add("MX1.Example.ORG", "A", "192.0.2.1")  # duplicate of an existing record
    assert [r.value for r in store.records("mx1.example.org.")] == ["192.0.2.1", "2001:db8::1"]
    assert store.records("mx2.example.org") == [Record("mx2.example.org.", "A", 300, "192.0.2.2")]
    assert store.records() == lab_store().records()
    assert store.zones() == ["example.com.", "example.org."]
    assert "mx1.example.org." in repr(store) and "<table>" in store._repr_html_()


def test_soa_serial_bumps_on_every_change(store: RecordStore) -> None:
    def serial() -> int:
        (soa,) = store.records("example.org")[:1]
        return int(soa.value.split()[2])

    before = serial()
    store.add("www.example.org", "A", "192.0.2.80")
    store.replace("www.example.org", "A", ["192.0.2.81"])
    assert store.remove("www.example.org", "A") == 1
    assert serial() == before + 3
    assert store.remove("www.example.org", "A") == 0
    assert serial() == before + 3


def test_store_rejects_what_it_cannot_serve(store: RecordStore) -> None:
    with pytest.raises(ValueError, match="no lab zone"):
        store.add("example.net", "A", "192.0.2.1")
    with pytest.raises(ValueError, match="SOA"):
        store.add("example.org", "SOA", "a. b. 1 2 3 4 5")
    with pytest.raises(dns.exception.SyntaxError):
        store.add("example.org", "A", "not-an-address")
    with pytest.raises(ValueError, match="fault"):
        store.set_fault("example.org", "slow")  # type: ignore[arg-type]


# --- the server -----------------------------------------------------------------------------


def test_udp_answers_through_the_lab_resolver(resolver: dns.resolver.Resolver) -> None:
    assert texts(resolver, "example.org", "MX") == ["10 mx1.example.org.", "20 mx2.example.org."]
    assert texts(resolver, "mx1.example.org", "A") == ["192.0.2.1"]
    assert texts(resolver, "mx1.example.org", "AAAA") == ["2001:db8::1"]
    assert texts(resolver, "example.org", "TXT") == ['"v=spf1 -all"']


def test_tcp_on_the_same_port_is_authoritative(server: LabDNSServer) -> None:
    query = dns.message.make_query("example.org", "MX")
    response = dns.query.tcp(query, server.host, port=server.port, timeout=2.0)
    assert response.rcode() == dns.rcode.NOERROR and response.flags & dns.flags.AA
    assert sorted(rd.exchange.to_text() for rd in response.answer[0]) == [
        "mx1.example.org.",
        "mx2.example.org.",
    ]
    assert [(q.transport, q.name, q.rdtype) for q in server.queries] == [
        ("tcp", "example.org.", "MX")
    ]


def test_tcp_connection_carries_several_queries(server: LabDNSServer) -> None:
    queries = [dns.message.make_query(n, "A") for n in ("mx1.example.org", "mx2.example.org")]
    with socket.create_connection((server.host, server.port), timeout=2.0) as sock:
        sock.sendall(b"".join(q.to_wire(prepend_length=True) for q in queries))
        for query in queries:
            response, _ = dns.query.receive_tcp(sock, time.monotonic() + 2.0)
            assert response.id == query.id and response.answer[0].name == query.question[0].name


def test_nxdomain_and_nodata_carry_the_soa(server: LabDNSServer) -> None:
    for name, rcode in [
        ("nope.example.org", dns.rcode.NXDOMAIN),
        ("mx2.example.org", dns.rcode.NOERROR),  # exists, but has no TXT: NODATA
        ("sub.example.com", dns.rcode.NOERROR),  # empty non-terminal: NODATA
    ]:
        response = udp(server, name, "TXT")
        assert response.rcode() == rcode and response.flags & dns.flags.AA
        assert response.answer == []
        (soa,) = response.authority
        assert soa.rdtype == dns.rdatatype.SOA and soa.name.to_text() in name + "."
        assert soa.ttl == 60  # RFC 2308: min(SOA TTL, SOA minimum)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_outside_the_lab_zones_is_refused_without_authority(
    server: LabDNSServer, transport: str
) -> None:
    """RFC 1035 §4.1.1: an authoritative-only server refuses names it does not serve."""
    query = dns.message.make_query("google.com", "MX")
    ask = dns.query.udp if transport == "udp" else dns.query.tcp
    response = ask(query, server.host, port=server.port, timeout=2.0)
    assert response.rcode() == dns.rcode.REFUSED
    assert not response.flags & dns.flags.AA
    assert response.answer == response.authority == []
    with pytest.raises(dns.resolver.NoNameservers, match="REFUSED"):
        make_resolver(server.host, server.port).resolve("example.net", "A")


def test_a_served_invalid_zone_answers_nxdomain(store: RecordStore, server: LabDNSServer) -> None:
    """RFC 6761 §6.4: names under .invalid never exist; the lab serves the zone to say so."""
    store.add_zone("invalid")
    response = udp(server, "exmaple.invalid", "MX")
    assert response.rcode() == dns.rcode.NXDOMAIN and response.flags & dns.flags.AA
    assert response.authority[0].name.to_text() == "invalid."


def test_edits_show_at_the_next_lookup(store: RecordStore, resolver: dns.resolver.Resolver) -> None:
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("www.example.org", "A")
    store.add("www.example.org", "A", "192.0.2.80")
    assert texts(resolver, "www.example.org", "A") == ["192.0.2.80"]
    store.replace("example.org", "MX", ["5 backup.example.org."])
    assert texts(resolver, "example.org", "MX") == ["5 backup.example.org."]
    store.remove("example.org", "MX", "5 backup.example.org")
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve("example.org", "MX")


def test_large_answers_truncate_on_udp_and_resolver_retries_tcp(
    store: RecordStore, server: LabDNSServer, resolver: dns.resolver.Resolver
) -> None:
    values = [f'"{i:02d} {"x" * 60}"' for i in range(20)]
    store.replace("big.example.org", "TXT", values)
    assert udp(server, "big.example.org", "TXT").flags & dns.flags.TC
    assert len(texts(resolver, "big.example.org", "TXT")) == 20
    assert {q.transport for q in server.queries} == {"udp", "tcp"}


def test_servfail_fault(store: RecordStore, server: LabDNSServer) -> None:
    store.set_fault("example.org", "servfail")
    assert udp(server, "example.org", "MX").rcode() == dns.rcode.SERVFAIL
    with pytest.raises(dns.resolver.NoNameservers):
        make_resolver(server.host, server.port).resolve("example.org", "MX")
    store.clear_fault("example.org")
    assert udp(server, "example.org", "MX").rcode() == dns.rcode.NOERROR


def test_timeout_fault(store: RecordStore, server: LabDNSServer) -> None:
    store.set_fault("mx1.example.org", "timeout")
    with pytest.raises(dns.exception.Timeout):
        udp(server, "mx1.example.org", "A", timeout=0.3)
    with pytest.raises(dns.resolver.LifetimeTimeout):
        make_resolver(server.host, server.port, timeout=0.3).resolve("mx1.example.org", "A")
    assert server.queries[0].rcode.startswith("(no answer")
    store.clear_fault()
    assert udp(server, "mx1.example.org", "A").rcode() == dns.rcode.NOERROR


def test_malformed_packets_do_not_kill_the_server(server: LabDNSServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        sock.sendto(b"\x01", (server.host, server.port))  # no header: dropped
        sock.sendto(b"\xbe\xef" + b"\x01\x00" + b"\xff" * 20, (server.host, server.port))
        reply = sock.recv(512)  # the first reply is to the second packet
    assert reply[:2] == b"\xbe\xef" and reply[3] & 0x0F == dns.rcode.FORMERR
    assert udp(server, "mx2.example.org", "A").answer[0][0].to_text() == "192.0.2.2"
    assert [q.rcode for q in server.queries] == ["(garbage dropped)", "FORMERR", "NOERROR"]


def test_query_log_is_bounded(store: RecordStore) -> None:
    with LabDNSServer(store, log_size=2) as server:
        for name in ("example.org", "mx1.example.org", "mx2.example.org"):
            udp(server, name, "A")
        assert [q.name for q in server.queries] == ["mx1.example.org.", "mx2.example.org."]
        assert server.queries[-1] == DNSQuery(
            "udp", "mx2.example.org.", "A", "NOERROR", ("mx2.example.org. 300 IN A 192.0.2.2",)
        )
        server.clear_log()
        assert server.queries == []


def ports_held_here(port: int) -> list[str]:
    """This process's sockets bound to ``port`` (``"tcp"``/``"udp"``), from /proc.

    Asking the kernel whose sockets hold the port, rather than binding it again,
    keeps the check true on a busy machine where another process may take a freed
    port at once."""
    ours = {
        link.readlink().name
        for link in Path("/proc/self/fd").iterdir()
        if link.is_symlink() and link.readlink().name.startswith("socket:")
    }
    held = []
    for protocol in ("tcp", "udp"):
        for line in Path(f"/proc/net/{protocol}").read_text().splitlines()[1:]:
            fields = line.split()
            local_port, inode = int(fields[1].rsplit(":", 1)[1], 16), fields[9]
            if local_port == port and f"socket:[{inode}]" in ours:
                held.append(protocol)
    return held


def test_stop_releases_the_port_and_is_idempotent(store: RecordStore) -> None:
    server = LabDNSServer(store).start()
    port = server.port
    assert server.host == "127.0.0.1" and port > 0 and "running" in repr(server)
    assert sorted(ports_held_here(port)) == ["tcp", "udp"]
    server.stop()
    server.stop()
    assert ports_held_here(port) == []


def test_tcp_port_taken_on_a_fixed_port_fails_cleanly(store: RecordStore) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            LabDNSServer(store, port=taken.getsockname()[1]).start()


# --- the pure answering function ------------------------------------------------------------


FROZEN_STORE = lab_store()
FROZEN_STORE.set_fault("mx2.example.org", "timeout")


@given(st.binary(max_size=600))
def test_answer_never_raises_on_random_bytes(wire: bytes) -> None:
    out = answer(FROZEN_STORE, wire)
    assert out is None or len(out) >= 12


@given(
    st.sampled_from(["example.org", "mx1.example.org", "x.example.com", "example.net", "."]),
    st.sampled_from(["A", "AAAA", "MX", "TXT", "SOA", "ANY", "NS", "PTR"]),
    st.data(),
)
def test_answer_survives_corrupted_queries(name: str, rdtype: str, data: st.DataObject) -> None:
    wire = bytearray(dns.message.make_query(name, rdtype, use_edns=0).to_wire())
    for _ in range(data.draw(st.integers(0, 4))):
        wire[data.draw(st.integers(0, len(wire) - 1))] = data.draw(st.integers(0, 255))
    out = answer(FROZEN_STORE, bytes(wire), udp=True)
    if out is not None:
        assert out[:2] == wire[:2] and out[2] & 0x80  # same id, QR set


# -- a flood of idle TCP connections (docs/hardening.md) ----------------------------------------
FLOOD = 3000


def idle_connection(where: tuple[str, int]) -> socket.socket:
    """A connection that sends nothing, non-blocking so that :func:`is_open` never waits."""
    sock = socket.create_connection(where, timeout=10)
    sock.setblocking(False)
    return sock


def is_open(sock: socket.socket) -> bool:
    """Whether the server still holds this connection (a closed one reads as EOF or a reset)."""
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:  # nothing to read, and not closed
        return True
    except OSError:
        return False


@pytest.fixture
def descriptors() -> Iterator[int]:
    """Room for the flood in this process: the soft limit on open files, raised if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FLOOD + 1000
    if soft < wanted and (hard == resource.RLIM_INFINITY or hard >= wanted):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield min(FLOOD, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 500)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.slow
@pytest.mark.hardening
def test_a_flood_of_idle_dns_tcp_connections_is_capped_and_timed_out(descriptors):
    """RFC 7766 §6.2.3 (close idle connections; the timer restarts only on a whole message)
    and §6.2.2, §10 (limit concurrent connections): 3000 idle connections leave at most the cap
    open, a new query is still answered, the SMTP servers of the same process still greet, and
    the idle ones are closed once the idle timeout has passed."""
    with Lab(name="dns-flood") as lab:
        server = lab.dns_server
        server.tcp_idle_timeout = 3.0
        where = (server.host, server.port)
        flood = []
        try:
            for _ in range(descriptors):
                flood.append(idle_connection(where))
            cap = server.max_tcp_connections
            wait_until(lambda: sum(map(is_open, flood)) <= cap, 30, "at most the cap stays open")
            smtp = Raw(lab.server("mx1.example.org").port)  # the same process: no EMFILE
            assert smtp.code() == 220
            smtp.close()
            query = dns.message.make_query("example.org", "MX")
            answer = dns.query.tcp(query, server.host, port=server.port, timeout=5)
            assert sorted(rr.to_text() for rr in answer.answer[0]) == [
                "10 mx1.example.org.",
                "20 mx2.example.org.",
            ]
            # a connection that asks whole queries stays; one that drips half a query does not
            busy = socket.create_connection(where, timeout=5)
            drip = idle_connection(where)
            wire = query.to_wire()
            message = len(wire).to_bytes(2, "big") + wire
            drip.sendall(message[:5])
            started = time.monotonic()
            while time.monotonic() - started < server.tcp_idle_timeout + 1:
                busy.sendall(message)
                assert len(busy.recv(65535)) > 2
                if is_open(drip):
                    drip.sendall(message[5:6])  # a byte now and then: never a whole message
                time.sleep(0.5)  # the pace of a client that keeps asking
            busy.setblocking(False)
            assert is_open(busy)  # active for longer than the idle timeout: still served
            wait_until(lambda: not any(map(is_open, [*flood, drip])), 15, "idle ones closed")
            busy.close()
            drip.close()
        finally:
            for sock in flood:
                sock.close()
