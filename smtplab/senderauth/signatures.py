"""DKIM (RFC 6376): the lab's signature on outgoing mail, and verifying what arrives.

Signing and verifying are dkimpy's; a signature is verified with the public key
that the lab DNS publishes at ``<selector>._domainkey.<domain>``
(:func:`smtplab.senderauth.lookups.txt_records`), so nothing asks the Internet.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

import dkim
import dns.exception
from cryptography.hazmat.primitives import serialization

from smtplab.senderauth.lookups import Resolver, txt_records


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


class _LabDKIM(dkim.DKIM):  # type: ignore[misc]  # dkimpy ships no types
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
        tags: dict[bytes, bytes] = dkim.util.parse_tag_value(value)
        return tags
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
