"""Every DNS lookup of the sender checks goes to the lab DNS, never to the Internet.

dkimpy and the DMARC policy lookup take a lab resolver (:func:`txt_records`);
pyspf has no resolver parameter, so its documented module hook (``spf.DNSLookup``)
is pointed, once for the process, at :func:`_spf_lookup`, which answers from the
resolver that :func:`spf_resolver` sets for the current context and refuses to run
without one. The organizational domain (RFC 7489 §3.2) comes from
publicsuffixlist's bundled list, never downloaded.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from functools import cache
from typing import Any

import dns.exception
import dns.resolver
import spf
from publicsuffixlist import PublicSuffixList

Resolver = dns.resolver.Resolver


_spf_resolver: contextvars.ContextVar[Resolver | None] = contextvars.ContextVar(
    "smtplab_spf_resolver", default=None
)


def _spf_lookup(name: str, qtype: str, strict: bool = True, timeout: float = 30) -> list[Any]:
    """pyspf's DNS hook (``spf.DNSLookup``), answering only from the lab resolver.

    Same results as pyspf's own dnspython lookup: ``[((name, type), value), ...]``.
    Without a lab resolver it raises a temporary error instead of asking the
    system's resolver, so no SPF check in this process can reach the Internet.
    """
    resolver = _spf_resolver.get()
    if resolver is None:
        raise spf.TempError("DNS: smtplab resolves through the lab DNS only; no lab resolver")
    try:
        answer = resolver.resolve(name, qtype, raise_on_no_answer=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as error:
        raise spf.TempError(f"DNS {error}") from error
    found: list[Any] = []
    for rdata in answer.rrset or ():
        if qtype in ("A", "AAAA"):
            found.append(((name, qtype), rdata.address))
        elif qtype == "MX":
            found.append(((name, qtype), (rdata.preference, rdata.exchange)))
        elif qtype == "PTR":
            found.append(((name, qtype), rdata.target.to_text(True)))
        elif qtype in ("TXT", "SPF"):
            found.append(((name, qtype), rdata.strings))
    return found


@contextlib.contextmanager
def spf_resolver(resolver: Resolver) -> Iterator[None]:
    """Let pyspf's lookups in this context ask ``resolver`` (see :func:`_spf_lookup`)."""
    token = _spf_resolver.set(resolver)
    try:
        yield
    finally:
        _spf_resolver.reset(token)


# pyspf's documented hook for a custom resolver (its maintainer's answer in
# sdgathman/pyspf#29). Set once, for the whole process: see _spf_lookup.
spf.DNSLookup = _spf_lookup


def txt_records(resolver: Resolver, name: str) -> list[str]:
    """The TXT records at ``name`` (each one's strings joined); [] when there are none.

    Raises :class:`dns.exception.DNSException` when DNS itself fails.
    """
    try:
        answer = resolver.resolve(name, "TXT", raise_on_no_answer=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer.rrset or ()]


@cache
def _public_suffixes() -> PublicSuffixList:
    return PublicSuffixList()  # the list bundled with the package: no download


def organizational_domain(domain: str) -> str:
    """``news.example.com`` → ``example.com``: one label below the public suffix (RFC 7489 §3.2)."""
    return _public_suffixes().privatesuffix(domain.lower()) or domain.lower()
