"""``smtplab dns``: list the lab DNS's records, or ask it one question."""

from __future__ import annotations

import argparse
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from smtplab.cli.errors import CLIError
from smtplab.cli.state import lab_state
from smtplab.protocol.rules import domain_of


def _names(state: dict[str, Any]) -> list[str]:
    """Every name the lab DNS answers for: its domains and its hosts."""
    names = {domain_of(u["address"]) for u in state["users"]}
    for server in state["servers"]:
        names.add(server["host"])
        names.update(server["domains"])
    return sorted(names, key=lambda n: (list(reversed(n.split("."))), n))


def _ask(state: dict[str, Any], query: dns.message.Message) -> dns.message.Message:
    where = state["dns"]["host"], state["dns"]["port"]
    try:
        response, _ = dns.query.udp_with_fallback(query, where[0], timeout=5, port=where[1])
    except (OSError, dns.exception.DNSException) as error:
        raise CLIError(f"the lab DNS at {where[0]} did not answer: {error}") from None
    return response


def _record_type(text: str) -> str:
    """``dns TYPE``: a record type to ask the lab DNS for (or ANY), or CLIError; type 0,
    AXFR, IXFR, OPT and the other meta types are no question to ask it."""
    try:
        rdtype = dns.rdatatype.from_text(text.upper())
    except (dns.rdatatype.UnknownRdatatype, ValueError):
        raise CLIError(
            f"unknown record type {text!r} (MX, A, TXT, ... or TYPE1 to TYPE65535)"
        ) from None
    if rdtype != dns.rdatatype.ANY and (rdtype == 0 or dns.rdatatype.is_metatype(rdtype)):
        raise CLIError(f"{text!r} is not a record type to ask for (MX, A, TXT, ... or ANY)")
    return dns.rdatatype.to_text(rdtype)


def run_dns(args: argparse.Namespace) -> int:
    rdtype = _record_type(args.type)
    names = [args.name] if args.name is not None else None
    try:
        queries = [dns.message.make_query(name, rdtype) for name in names or []]
    except dns.exception.DNSException as error:
        raise CLIError(f"{args.name!r} is not a DNS name: {error}") from None
    state = lab_state(args)
    if names is None:
        queries = [dns.message.make_query(name, rdtype) for name in _names(state)]
    status = 0
    for query in queries:
        response = _ask(state, query)
        rows = [
            f"{rrset.name.to_text():<28} {rrset.ttl:>6} IN {kind:<6} {rd.to_text()}"
            for rrset in response.answer
            for kind in [dns.rdatatype.to_text(rrset.rdtype)]
            for rd in sorted(rrset, key=lambda rd: rd.to_text())
        ]
        if rows:
            print("\n".join(rows))
        elif names:
            rcode = response.rcode()
            why = (
                "outside the lab's zones" if rcode == dns.rcode.REFUSED else f"no {rdtype} records"
            )
            asked = query.question[0].name.to_text(omit_final_dot=True)
            print(f"{asked}: {dns.rcode.to_text(rcode)} ({why})")
            status = 1
    return status
