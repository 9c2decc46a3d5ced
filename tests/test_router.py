"""The lab's router (smtplab.lab.routing) on a running lab: routes, their cache, ports, roles."""

from __future__ import annotations

import socket

import pytest

from smtplab import InvalidInput, PermanentRouteError
from smtplab.queue.delivery import Hop
from smtplab.world import LOOPBACK


def hosts(route) -> list[str]:
    return [candidate.host for candidate in route.candidates]


def test_a_route_follows_the_mx_records_in_preference_order(lab):
    route = lab.router.route("example.org")
    assert route.method == "mx" and hosts(route) == ["mx1.example.org", "mx2.example.org"]


def test_a_queue_never_routes_to_itself_or_a_less_preferred_mx(lab):
    assert hosts(lab.router.queue_route("example.org", "mx2.example.org")) == ["mx1.example.org"]
    with pytest.raises(PermanentRouteError, match=r"closer than mx1\.example\.org"):
        lab.router.queue_route("example.org", "mx1.example.org")
    assert hosts(lab.router.queue_route("example.org", "smtp.example.com")) == [
        "mx1.example.org",
        "mx2.example.org",
    ]


def test_a_queue_route_is_remembered_until_the_lab_dns_changes(lab):
    first = lab.router.queue_route("example.org", "smtp.example.com")
    assert lab.router.queue_route("example.org", "smtp.example.com") is first
    lab.dns.replace("example.org", "MX", ["5 mx2.example.org."])
    changed = lab.router.queue_route("example.org", "smtp.example.com")
    assert changed is not first and hosts(changed) == ["mx2.example.org"]
    assert lab.router.queue_route("example.org", "smtp.example.com") is changed


@pytest.mark.parametrize(
    ("sender", "recipient", "expected"),
    [
        ("alice@example.com", "bob@example.org", "smtp.example.com"),  # its submission server
        ("bob@example.org", "alice@example.com", "mx.example.com"),  # no submission: the MX
        ("someone@elsewhere.net", "carol@example.org", "mx1.example.org"),  # the best MX
    ],
)
def test_the_default_route_is_the_submission_server_else_the_best_mx(
    lab, sender, recipient, expected
):
    assert lab.router.default_route(sender, [recipient]) == expected


def test_the_default_route_refuses_a_recipient_outside_the_lab(lab):
    with pytest.raises(InvalidInput, match="pass via="):
        lab.router.default_route("bob@example.org", ["someone@elsewhere.net"])


def test_ports_and_roles_of_lab_servers_and_of_hosts_outside(lab):
    for host, server in lab.servers.items():
        assert lab.router.port_of(host) == lab.router.reach(host) == server.port
        assert lab.router.role_of(host) == server.role
    assert lab.router.port_of("nowhere.example.org") is None
    assert lab.router.role_of("nowhere.example.org") is None


def test_an_external_server_gets_a_port_and_an_a_record_but_no_role(lab):
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        port = listener.getsockname()[1]
        lab.add_external("sink.example.org", port)
        assert lab.router.port_of("sink.example.org") == port
        assert lab.router.role_of("sink.example.org") is None
        answer = lab.resolver.resolve("sink.example.org", "A")
        assert [record.to_text() for record in answer] == [LOOPBACK]


def test_a_wiretap_takes_the_hosts_connections_while_it_is_on(lab):
    with lab.eavesdrop("mx1.example.org") as tap:
        assert lab.router.port_of("mx1.example.org") == tap.port
        assert tap.port != lab.server("mx1.example.org").port
    assert lab.router.port_of("mx1.example.org") == lab.server("mx1.example.org").port


def test_the_hop_gives_the_queues_the_routers_answers(lab):
    hop = lab.router.hop()
    assert isinstance(hop, Hop)
    assert hop.locate("mx1.example.org") == lab.server("mx1.example.org").port
    assert hop.role_of("smtp.example.com") == "submission"
    assert hop.resolve("example.org", "smtp.example.com") is lab.router.queue_route(
        "example.org", "smtp.example.com"
    )
