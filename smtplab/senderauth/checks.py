"""Is this message really from who it says? SPF, DKIM and DMARC, asked of the lab DNS.

Theory of operation
-------------------
SMTP lets anyone claim any sender: the envelope (``MAIL FROM``) and the ``From:``
header are whatever the client wrote. Three mechanisms let a receiving server
check a claim against DNS records that only the domain's owner can publish:

* **SPF** (RFC 7208) checks the *connecting IP address* against the TXT record
  ``v=spf1 ...`` of the envelope sender's domain (or of the HELO name when the
  envelope sender is empty): pass, fail, softfail, neutral or none.
* **DKIM** (RFC 6376) checks a *signature* over chosen header fields and the
  body, made by the sending domain's server with a private key whose public half
  is in DNS at ``<selector>._domainkey.<domain>``.
* **DMARC** (RFC 7489) ties them to the address people see: a pass counts only
  if its domain is *aligned* with the ``From:`` domain, and the From domain's
  record at ``_dmarc.<domain>`` says what to do when neither aligns.

The cryptography and the policy logic are well-kept libraries: `pyspf` for SPF,
`dkimpy` for DKIM, `dmarc` for DMARC evaluation, and `publicsuffixlist` (its
bundled list, never downloaded) for organizational domains. What the lab adds
is the plumbing that makes every one of them ask **only the lab DNS**: each check
takes a resolver from :func:`smtplab.dns.server.make_resolver`, and pyspf, which has no
resolver parameter, gets its documented module hook (:mod:`smtplab.senderauth.lookups`).
Nothing here can query the Internet. This module checks SPF and DMARC and writes the
result; DKIM signing and verifying are in :mod:`smtplab.senderauth.signatures`.

:func:`authenticate` runs all three and returns an :class:`Authentication`, whose
:meth:`~Authentication.header` is the ``Authentication-Results:`` field of
RFC 8601 that a receiving server adds. All functions are pure apart from DNS.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import getaddresses
from typing import Any

import dkim
import dmarc
import dns.exception
import spf

from smtplab.protocol.rules import domain_of
from smtplab.senderauth.lookups import (
    Resolver,
    organizational_domain,
    spf_resolver,
    txt_records,
)
from smtplab.senderauth.signatures import DKIMResult, verify_dkim

# --- SPF (RFC 7208), checked by pyspf ------------------------------------------------------

SPF_RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")


@dataclass(frozen=True)
class SPFResult:
    """The SPF verdict for one connection (RFC 7208 §2.6)."""

    result: str
    ip: str
    domain: str  # the domain whose record was checked
    identity: str  # "mailfrom", or "helo" when the envelope sender was empty (§2.4)
    explanation: str = ""

    @property
    def comment(self) -> str:
        """A short explanation for people, for the Authentication-Results header."""
        return {
            "pass": f"{self.domain} allows {self.ip}",
            "fail": f"{self.domain} does not allow {self.ip}",
            "softfail": f"{self.domain} probably does not allow {self.ip}",
            "neutral": f"{self.domain} says nothing about {self.ip}",
            "none": f"{self.domain} publishes no SPF record" if self.domain else "no domain",
        }.get(self.result, self.explanation)

    def resinfo(self) -> str:
        prop = "smtp.mailfrom" if self.identity == "mailfrom" else "smtp.helo"
        return f"spf={self.result} ({self.comment}) {prop}={self.domain}"


def check_spf(resolver: Resolver, ip: str, mail_from: str, helo: str) -> SPFResult:
    """SPF's check_host() for a client at ``ip`` (RFC 7208 §4), through the lab DNS."""
    identity = "mailfrom" if mail_from else "helo"
    domain = domain_of(mail_from) if mail_from else helo.lower()
    with spf_resolver(resolver):
        result, explanation = spf.check2(i=ip, s=mail_from, h=helo, querytime=0, timeout=5)
    return SPFResult(str(result), ip, domain, identity, str(explanation))


# --- DMARC (RFC 7489), evaluated by the dmarc package --------------------------------------


class _OrganizationalDomains:
    """What ``dmarc`` asks of a public suffix list: the organizational domain of a name."""

    def get_public_suffix(self, domain: str) -> str:
        return organizational_domain(domain)


@dataclass(frozen=True)
class DMARCResult:
    """The DMARC verdict: did an aligned SPF or DKIM pass, and what the policy asks."""

    result: str  # pass, fail, none, temperror or permerror
    from_domain: str
    policy: str = ""  # the record's p= (or sp= for a subdomain): none, quarantine, reject
    disposition: str = "none"  # what the policy asks for this message
    spf_aligned: bool = False
    dkim_aligned: bool = False
    record: str = ""
    reason: str = ""

    def resinfo(self) -> str:
        if self.result in ("pass", "fail"):
            comment = f"p={self.policy} dis={self.disposition}"
        else:
            comment = self.reason
        return f"dmarc={self.result} ({comment}) header.from={self.from_domain or 'unknown'}"


def from_domains(message: bytes) -> list[str]:
    """The domains of every address in the message's From: header fields (RFC 5322 §3.6.2)."""
    headers, _ = dkim.rfc822_parse(message)
    values = [
        value.decode("utf-8", "replace").replace("\r\n", "")
        for name, value in headers
        if name.lower() == b"from"
    ]
    return [domain_of(address) for _, address in getaddresses(values) if "@" in address]


def find_policy(resolver: Resolver, domain: str) -> tuple[str, str | None]:
    """The DMARC record for ``domain``: its own, else its organizational domain's (§6.6.3).

    Returns ``(record, org_domain)``; ``org_domain`` is None when the record is
    the domain's own, and the record is "" when neither has exactly one.
    """
    candidates = [domain]
    org = organizational_domain(domain)
    if org != domain:
        candidates.append(org)
    for name in candidates:
        records = [r for r in txt_records(resolver, f"_dmarc.{name}") if r.startswith("v=DMARC1")]
        if len(records) == 1:
            return records[0], (None if name == domain else name)
    return "", None


def check_dmarc(
    resolver: Resolver, message: bytes, spf_result: SPFResult, dkim_results: list[DKIMResult]
) -> DMARCResult:
    """Evaluate the From domain's DMARC policy against the SPF and DKIM results."""
    domains = sorted(set(from_domains(message)))
    if len(domains) != 1:
        why = "no From: address" if not domains else "From: names several domains"
        return DMARCResult("permerror" if domains else "none", ",".join(domains), reason=why)
    (from_domain,) = domains
    try:
        record, org_domain = find_policy(resolver, from_domain)
    except dns.exception.DNSException:
        return DMARCResult("temperror", from_domain, reason="DMARC lookup failed")
    if not record:
        return DMARCResult("none", from_domain, reason="no DMARC record")
    try:
        policy = dmarc.DMARCPolicy(
            record=record,
            domain=from_domain,
            org_domain=org_domain,
            publicsuffix=_OrganizationalDomains(),
        )
    except dmarc.RecordSyntaxError as error:
        return DMARCResult("permerror", from_domain, record=record, reason=str(error))
    results: list[Any] = []
    if spf_result.result in SPF_RESULTS and spf_result.domain:
        results.append(dmarc.SPFAuthResult(spf_result.domain, dmarc.SPFResult(spf_result.result)))
    for signature in dkim_results:
        if signature.domain:  # a signature without d= can align with nothing
            result = dmarc.DKIMResult(signature.result)
            results.append(dmarc.DKIMAuthResult(signature.domain, result, signature.selector))
    with contextlib.suppress(dmarc.PolicyError):  # raised for a fail: we report it instead
        policy.verify(auth_results=results)
    outcome = policy.result
    assert outcome is not None
    published = policy.policy.sp if org_domain and policy.policy.sp.value else policy.policy.p
    return DMARCResult(
        result=outcome.result.value,
        from_domain=from_domain,
        policy=str(published.value),
        disposition=str(outcome.disposition.value) if outcome.result.value == "fail" else "none",
        spf_aligned=outcome.spf.value == "pass",
        dkim_aligned=outcome.dkim.value == "pass",
        record=record,
    )


# --- Authentication-Results (RFC 8601) --------------------------------------------------------


@dataclass(frozen=True)
class Authentication:
    """SPF, DKIM and DMARC verdicts for one message, as a receiving server found them."""

    spf: SPFResult
    dkim: tuple[DKIMResult, ...]
    dmarc: DMARCResult

    @property
    def dkim_result(self) -> str:
        """One word for DKIM: pass if any signature passed, none if there were none."""
        if not self.dkim:
            return "none"
        results = [d.result for d in self.dkim]
        return "pass" if "pass" in results else results[0]

    def summary(self) -> str:
        """``spf=pass dkim=pass dmarc=pass``: the three verdicts on one line."""
        return f"spf={self.spf.result} dkim={self.dkim_result} dmarc={self.dmarc.result}"

    def resinfos(self) -> list[str]:
        dkim_lines = [d.resinfo() for d in self.dkim] or ["dkim=none (message not signed)"]
        return [self.spf.resinfo(), *dkim_lines, self.dmarc.resinfo()]

    def header(self, authserv_id: str) -> str:
        """The ``Authentication-Results:`` field (RFC 8601 §2.2), folded, ending in CRLF."""
        return ";\r\n\t".join([f"Authentication-Results: {authserv_id}", *self.resinfos()]) + "\r\n"


def authenticate(
    resolver: Resolver, ip: str, helo: str, mail_from: str, message: bytes
) -> Authentication:
    """Run SPF, DKIM and DMARC on a message received from ``ip``, all through the lab DNS."""
    spf_result = check_spf(resolver, ip, mail_from, helo)
    dkim_results = verify_dkim(resolver, message)
    return Authentication(
        spf_result, tuple(dkim_results), check_dmarc(resolver, message, spf_result, dkim_results)
    )


def _header_fields(message: bytes) -> Iterator[bytes]:
    """Each header field of a CRLF message, with its continuation lines."""
    if message.startswith(b"\r\n"):
        return
    blank = message.find(b"\r\n\r\n")
    head_end = len(message) if blank < 0 else blank + 2
    position = 0
    while position < head_end:
        end = message.find(b"\r\n", position, head_end)
        end = head_end if end < 0 else end + 2
        while end < head_end and message[end : end + 1] in (b" ", b"\t"):
            next_end = message.find(b"\r\n", end, head_end)
            end = head_end if next_end < 0 else next_end + 2
        yield message[position:end]
        position = end


def remove_results_claiming(message: bytes, authserv_id: str) -> tuple[bytes, int]:
    """Drop Authentication-Results fields that claim to come from ``authserv_id``.

    Anyone can write such a field into a message; a receiving server must remove
    those that name it before adding its own (RFC 8601 §5). Returns the message
    and how many fields went.
    """
    fields = list(_header_fields(message))
    head_end = sum(len(raw) for raw in fields)
    kept, removed = [], 0
    prefix = b"authentication-results:"
    for raw in fields:
        if raw.lower().startswith(prefix):
            value = re.sub(rb"\([^)]*\)", b"", raw[len(prefix) :])  # comments (CFWS)
            if value.split(b";", 1)[0].strip().lower() == authserv_id.lower().encode():
                removed += 1
                continue
        kept.append(raw)
    return b"".join(kept) + message[head_end:], removed
