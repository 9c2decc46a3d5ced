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
bundled list, never downloaded) for organizational domains. What this module adds
is the plumbing that makes every one of them ask **only the lab DNS**: each check
takes a resolver from :func:`smtplab.dns.server.make_resolver`, and pyspf, which has no
resolver parameter, gets its documented module hook (``spf.DNSLookup``) pointed
at a lookup that refuses to run without a lab resolver. Nothing here can query
the Internet.

:func:`authenticate` runs all three and returns an :class:`Authentication`, whose
:meth:`~Authentication.header` is the ``Authentication-Results:`` field of
RFC 8601 that a receiving server adds. All functions are pure apart from DNS.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import getaddresses
from functools import cache
from typing import Any

import dkim
import dmarc
import dns.exception
import dns.resolver
import spf
from cryptography.hazmat.primitives import serialization
from publicsuffixlist import PublicSuffixList

from smtplab.protocol.rules import domain_of

Resolver = dns.resolver.Resolver

# --- DNS: every lookup goes through a lab resolver ---------------------------------------

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
    token = _spf_resolver.set(resolver)
    try:
        result, explanation = spf.check2(i=ip, s=mail_from, h=helo, querytime=0, timeout=5)
    finally:
        _spf_resolver.reset(token)
    return SPFResult(str(result), ip, domain, identity, str(explanation))


# --- DKIM (RFC 6376), signed and verified by dkimpy ------------------------------------------


@dataclass(frozen=True)
class DKIMKey:
    """A signing key for ``domain``: the private half signs, the public half goes in DNS."""

    domain: str
    selector: str
    private_pem: bytes = field(repr=False)

    @property
    def record_name(self) -> str:
        """Where verifiers look for the public key (RFC 6376 §3.6.2.1)."""
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def public_key(self) -> str:
        """The public key, base64 DER SubjectPublicKeyInfo, as the record's ``p=`` tag."""
        key = serialization.load_pem_private_key(self.private_pem, password=None)
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode("ascii")

    def record(self) -> str:
        """The TXT record in zone-file syntax, split into strings of at most 255 bytes."""
        text = f"v=DKIM1; k=rsa; p={self.public_key}"
        return " ".join(f'"{text[i : i + 255]}"' for i in range(0, len(text), 255))


class _LabDKIM(dkim.DKIM):
    """dkimpy's signer with the ``t=`` tag from the lab clock.

    ``DKIM.sign`` takes the time from ``time.time()`` with no parameter (only its
    ARC signer has one), which would make every signature differ from run to run.
    The tags pass through :meth:`gen_header` before anything is hashed, so the
    lab's timestamp goes in there.
    """

    def __init__(self, message: bytes, timestamp: int):
        super().__init__(message)
        self._timestamp = str(timestamp).encode("ascii")

    def gen_header(self, fields: list[tuple[bytes, bytes]], *args: Any, **kwargs: Any) -> Any:
        fields = [(tag, self._timestamp if tag == b"t" else value) for tag, value in fields]
        return super().gen_header(fields, *args, **kwargs)


def dkim_sign(message: bytes, key: DKIMKey, timestamp: int) -> bytes:
    """``message`` with a DKIM-Signature field on top (relaxed/relaxed, rsa-sha256).

    dkimpy picks the header fields to sign from RFC 6376 §5.4's list (From,
    Subject, Date, To, Message-ID, ...) and signs From twice, so that a second
    From: added later breaks the signature.
    """
    signer = _LabDKIM(message, timestamp)
    signature = signer.sign(
        key.selector.encode(),
        key.domain.encode(),
        key.private_pem,
        canonicalize=(b"relaxed", b"relaxed"),
    )
    return bytes(signature) + message


@dataclass(frozen=True)
class DKIMResult:
    """The verdict on one DKIM-Signature (RFC 6376 §6.1; results as in RFC 8601 §2.7.1)."""

    result: str  # pass, fail, neutral, temperror or permerror
    domain: str  # d=
    selector: str  # s=
    reason: str = ""
    signed_headers: tuple[str, ...] = ()  # h=

    def resinfo(self) -> str:
        parts = [f"dkim={self.result}"]
        if self.reason:
            parts.append('reason="{}"'.format(self.reason.replace('"', "'")))
        if self.domain:
            parts.append(f"header.d={self.domain}")
        if self.selector:
            parts.append(f"header.s={self.selector}")
        return " ".join(parts)


def _tags(value: bytes) -> dict[bytes, bytes]:
    try:
        return dkim.util.parse_tag_value(value)
    except dkim.util.InvalidTagValueList:
        return {}


def verify_dkim(resolver: Resolver, message: bytes) -> list[DKIMResult]:
    """Verify every DKIM-Signature in ``message``, fetching keys from the lab DNS.

    An empty list means the message is not signed (``dkim=none``).
    """
    verifier = dkim.DKIM(message)
    signatures = [v for k, v in verifier.headers if k.lower() == b"dkim-signature"]
    results = []
    for index, raw in enumerate(signatures):
        tags = _tags(raw)
        domain = tags.get(b"d", b"").decode("ascii", "replace")
        selector = tags.get(b"s", b"").decode("ascii", "replace")
        signed = tuple(
            h.strip().decode("ascii", "replace").lower()
            for h in re.split(rb":", re.sub(rb"\s+", b"", tags.get(b"h", b"")))
            if h.strip()
        )
        lookups: list[str] = []

        def dnsfunc(name: bytes | str, timeout: float = 5, lookups: list[str] = lookups) -> Any:
            qname = name.decode("ascii") if isinstance(name, bytes) else name
            try:
                records = txt_records(resolver, qname)
            except dns.exception.DNSException as error:
                lookups.append("temperror")
                raise dkim.DnsTimeoutError(str(error)) from error
            lookups.append("found" if records else "missing")
            return records[0].encode() if records else None

        try:
            ok = verifier.verify(idx=index, dnsfunc=dnsfunc)
        except dkim.ValidationError as error:  # the body changed, or a malformed signature
            body = "body hash" in str(error)
            verdict = ("fail", "body hash did not verify") if body else ("permerror", str(error))
        except dkim.DKIMException as error:
            verdict = ("permerror", str(error))
        else:
            if ok:
                verdict = ("pass", "")
            elif lookups[-1:] == ["temperror"]:
                verdict = ("temperror", "key lookup failed")
            elif lookups[-1:] == ["missing"]:
                verdict = ("permerror", "no key for signature")
            else:  # the hash over the signed header fields no longer matches
                verdict = ("fail", "signature did not verify")
        result, reason = verdict
        results.append(DKIMResult(result, domain, selector, reason, signed))
    return results


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
