"""A private certificate authority per lab: real TLS with no Internet and no system store.

Theory of operation
-------------------
* Real TLS needs certificates a client can verify, and the lab must never need
  the Internet or touch the reader's system trust store. So each lab makes its
  own CA with trustme (:class:`LabCA`), issues one leaf certificate per lab host
  name, and writes only the CA certificate to ``lab-ca.pem``. Real clients trust
  that one file explicitly (``swaks --tls-ca-path lab-ca.pem``,
  ``curl --cacert lab-ca.pem``), and the lab's own clients use
  :meth:`LabCA.client_context`, which trusts that CA and nothing else.
* Certificates name hosts (``mx1.example.org``), never addresses; the lab's
  clients reach every name on 127.0.0.1 and check the name
  (:mod:`smtplab.tls.loopback`).
* Notebooks are checked byte for byte, so everything a chapter may print about
  a certificate (:meth:`LabCA.describe`) is stable: fixed subject and issuer
  names, no serial numbers, no validity dates.
"""

from __future__ import annotations

import os
import ssl
import threading
from pathlib import Path
from typing import Any

import trustme
from cryptography import x509
from cryptography.x509.oid import NameOID

CA_FILE_NAME = "lab-ca.pem"
CA_ORGANIZATION = "smtplab"
CA_UNIT = "lab CA"
LEAF_UNIT = "lab server"
MINIMUM_TLS = ssl.TLSVersion.TLSv1_2


class LabCA:
    """A throwaway certificate authority that signs the lab's server certificates.

    trustme gives a CA a random unit name unless told otherwise; we name it, so
    that the issuer a notebook prints is the same on every run.
    """

    def __init__(self, folder: Path):
        self.ca = trustme.CA(organization_name=CA_ORGANIZATION, organization_unit_name=CA_UNIT)
        self._leaves: dict[str, trustme.LeafCert] = {}
        self._lock = threading.Lock()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.cert_path = folder / CA_FILE_NAME
        # Write then rename: a swaks started by the reader never reads half a file.
        partial = folder / f".{CA_FILE_NAME}.{os.getpid()}.tmp"
        partial.write_bytes(self.ca.cert_pem.bytes())
        os.replace(partial, self.cert_path)

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate (PEM), the one thing a client must trust."""
        return self.ca.cert_pem.bytes()

    def _leaf(self, host: str) -> trustme.LeafCert:
        """One leaf certificate per host name, issued on first use and then reused."""
        with self._lock:
            leaf = self._leaves.get(host)
            if leaf is None:
                leaf = self.ca.issue_cert(
                    host,
                    common_name=host,
                    organization_name=CA_ORGANIZATION,
                    organization_unit_name=LEAF_UNIT,
                )
                self._leaves[host] = leaf
            return leaf

    def server_context(self, host: str) -> ssl.SSLContext:
        """A server-side context presenting ``host``'s certificate (STARTTLS or port 465).

        It asks for no client certificate (CERT_NONE, no hostname check), which
        is what aiosmtpd expects and what public mail servers do.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = MINIMUM_TLS
        self._leaf(host).configure_cert(context)
        return context

    def key_pair(self, host: str) -> tuple[bytes, bytes]:
        """``host``'s certificate chain and private key (PEM), for a server the lab does not
        run in Python (its Dovecot), issued like every other lab host's."""
        leaf = self._leaf(host)
        chain = b"".join(pem.bytes() for pem in leaf.cert_chain_pems)
        return chain, leaf.private_key_pem.bytes()

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts the lab CA only and checks host names.

        Built from a bare ``SSLContext`` rather than ``create_default_context``,
        so the system's CAs are not loaded: a certificate verifies only if this
        lab issued it.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = MINIMUM_TLS
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        self.ca.configure_trust(context)
        return context

    def describe(self, host: str) -> dict[str, Any]:
        """What the certificate for ``host`` says, minus anything that changes per run.

        Returns ``{"subject_cn": ..., "san": [...], "issuer": ...}``. The CA's
        subject has no common name, so the issuer is its organization and unit
        ("smtplab lab CA"), read from the certificate itself.
        """
        pem = self._leaf(host).cert_chain_pems[0].bytes()
        cert = x509.load_pem_x509_certificate(pem)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return {
            "subject_cn": _name_part(cert.subject, NameOID.COMMON_NAME),
            "san": [str(name.value) for name in san.value],
            "issuer": _name_part(cert.issuer, NameOID.COMMON_NAME)
            or " ".join(
                part
                for part in (
                    _name_part(cert.issuer, NameOID.ORGANIZATION_NAME),
                    _name_part(cert.issuer, NameOID.ORGANIZATIONAL_UNIT_NAME),
                )
                if part
            ),
        }


def _name_part(name: x509.Name, oid: x509.ObjectIdentifier) -> str:
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value) if values else ""
