"""RFC 5321 §5.1 route selection against the real lab DNS server."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtplab.dns.records import RecordStore
from smtplab.dns.route import (
    Candidate,
    PermanentRouteError,
    TemporaryRouteError,
    order_mx,
    resolve_route,
)
from smtplab.dns.server import LabDNSServer, make_resolver


@pytest.fixture
def store() -> RecordStore:
    store = RecordStore()
    for zone in ("example.org", "example.com", "example.net"):
        store.add_zone(zone)
    # example.org: two MX hosts, mx1 preferred
    store.replace("example.org", "MX", ["20 mx2.example.org.", "10 mx1.example.org."])
    store.add("mx1.example.org", "A", "192.0.2.1")
    store.add("mx1.example.org", "AAAA", "2001:db8::1")
    store.add("mx2.example.org", "A", "192.0.2.2")
    # example.com: no MX, only an A record (implicit MX)
    store.add("example.com", "A", "192.0.2.10")
    return store


@pytest.fixture
def server(store: RecordStore) -> Iterator[LabDNSServer]:
    with LabDNSServer(store) as srv:
        yield srv


def route(server: LabDNSServer, domain: str, seed: int = 0, timeout: float = 2.0):
    resolver = make_resolver(server.host, server.port, timeout=timeout)
    return resolve_route(domain, resolver, random.Random(seed))


# --- the pure ordering rule -----------------------------------------------------------------


def test_order_by_preference_lowest_first() -> None:
    records = [(20, "b"), (5, "c"), (10, "a")]
    assert order_mx(records, random.Random(1)) == [(5, "c"), (10, "a"), (20, "b")]


def test_equal_preferences_shuffle_deterministically_per_seed() -> None:
    records = [(10, f"mx{i}") for i in range(5)] + [(0, "first"), (99, "last")]
    orders = {tuple(order_mx(records, random.Random(seed))) for seed in range(20)}
    assert len(orders) > 1  # the seed matters...
    assert order_mx(records, random.Random(7)) == order_mx(records[::-1], random.Random(7))
    for order in orders:  # ...but only within a preference
        assert order[0] == (0, "first") and order[-1] == (99, "last")


HOSTS = st.text("abmx.", min_size=1, max_size=8)


@given(st.lists(st.tuples(st.integers(0, 20), HOSTS), max_size=12), st.integers())
def test_order_is_a_sorted_permutation(records: list[tuple[int, str]], seed: int) -> None:
    ordered = order_mx(records, random.Random(seed))
    assert sorted(ordered) == sorted(records)
    assert [p for p, _ in ordered] == sorted(p for p, _ in records)


# --- resolve_route over real DNS ------------------------------------------------------------


def test_mx_route_in_preference_order(server: LabDNSServer) -> None:
    result = route(server, "example.org")
    assert result.method == "mx"
    assert result.mx is not None and sorted(result.mx) == [
        (10, "mx1.example.org"),
        (20, "mx2.example.org"),
    ]
    assert result.candidates == (
        Candidate("mx1.example.org", 10, ("192.0.2.1", "2001:db8::1")),
        Candidate("mx2.example.org", 20, ("192.0.2.2",)),
    )
    assert result.hosts == ["mx1.example.org", "mx2.example.org"]
    text = str(result)
    assert "MX lookup example.org →" in text and "10 mx1.example.org" in text
    assert "20 mx2.example.org" in text and "RFC 5321 §5.1" in text
    assert "A/AAAA mx1.example.org → 192.0.2.1, 2001:db8::1" in text


def test_equal_preferences_vary_with_the_seed(store: RecordStore, server: LabDNSServer) -> None:
    store.replace("example.org", "MX", ["10 mx1.example.org", "10 mx2.example.org"])
    firsts = {route(server, "example.org", seed).hosts[0] for seed in range(12)}
    assert firsts == {"mx1.example.org", "mx2.example.org"}
    # the server shuffles the RRset on the wire, like real ones; the route must not care
    assert route(server, "example.org", 3).hosts == route(server, "example.org", 3).hosts


def test_implicit_mx_falls_back_to_the_a_record(server: LabDNSServer) -> None:
    result = route(server, "example.com")
    assert result.method == "implicit-mx" and result.mx is None
    assert result.candidates == (Candidate("example.com", 0, ("192.0.2.10",)),)
    assert "implicit MX" in str(result)


def test_null_mx_is_permanent(store: RecordStore, server: LabDNSServer) -> None:
    store.replace("example.org", "MX", ["0 ."])
    with pytest.raises(PermanentRouteError) as info:
        route(server, "example.org")
    assert (info.value.code, info.value.status) == (556, "5.1.10")
    assert info.value.reply == "556 5.1.10 Recipient address has null MX"
    assert info.value.route is not None and info.value.route.method == "null-mx"
    assert any("RFC 7505" in line for line in info.value.explanation)


def test_nxdomain_is_permanent(server: LabDNSServer) -> None:
    with pytest.raises(PermanentRouteError) as info:
        route(server, "nope.example.org")
    assert (info.value.code, info.value.status) == (550, "5.1.2")
    assert "NXDOMAIN" in info.value.explanation[0]


def test_no_mx_and_no_address_is_permanent(store: RecordStore, server: LabDNSServer) -> None:
    store.add("example.net", "TXT", '"v=spf1 -all"')
    with pytest.raises(PermanentRouteError) as info:
        route(server, "example.net")
    assert (info.value.code, info.value.status) == (550, "5.1.2")


def test_a_bad_domain_name_is_permanent(server: LabDNSServer) -> None:
    with pytest.raises(PermanentRouteError, match=r"553 5\.1\.3"):
        route(server, "x" * 64 + ".example.org")
    assert server.queries == []  # rejected before asking DNS


def test_servfail_is_temporary(store: RecordStore, server: LabDNSServer) -> None:
    store.set_fault("example.org", "servfail")
    with pytest.raises(TemporaryRouteError) as info:
        route(server, "example.org")
    assert (info.value.code, info.value.status) == (451, "4.4.3")
    assert "SERVFAIL" in info.value.reply


def test_a_refused_name_is_temporary(server: LabDNSServer) -> None:
    """REFUSED (a name outside every lab zone) says nothing about the domain: try later."""
    with pytest.raises(TemporaryRouteError) as info:
        route(server, "exmaple.org")
    assert (info.value.code, info.value.status) == (451, "4.4.3")
    assert info.value.explanation == (
        "MX lookup exmaple.org → REFUSED: cannot tell where mail goes yet",
    )


def test_timeout_is_temporary(store: RecordStore, server: LabDNSServer) -> None:
    store.set_fault("example.org", "timeout")
    with pytest.raises(TemporaryRouteError) as info:
        route(server, "example.org", timeout=0.3)
    assert (info.value.code, info.value.status) == (451, "4.4.3")
    assert "timeout" in info.value.text


def test_unresolvable_mx_hosts_are_skipped(store: RecordStore, server: LabDNSServer) -> None:
    store.remove("mx1.example.org", "A")
    store.remove("mx1.example.org", "AAAA")  # mx1 now does not exist at all
    result = route(server, "example.org")
    assert result.hosts == ["mx2.example.org"]
    assert "A/AAAA mx1.example.org → NXDOMAIN: skip this host" in result.explanation


def test_no_usable_mx_host_is_temporary(store: RecordStore, server: LabDNSServer) -> None:
    store.replace("example.org", "MX", ["10 ghost.example.org", "20 mx2.example.org"])
    store.set_fault("mx2.example.org", "servfail")
    with pytest.raises(TemporaryRouteError) as info:
        route(server, "example.org")
    assert (info.value.code, info.value.status) == (451, "4.4.4")
    assert info.value.route is not None and info.value.route.candidates == ()
    assert "A/AAAA mx2.example.org → A SERVFAIL, AAAA SERVFAIL: skip this host" in str(
        info.value.route
    )
