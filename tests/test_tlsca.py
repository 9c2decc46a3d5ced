"""The lab CA and the eavesdropper, over real sockets and real TLS on 127.0.0.1."""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.handlers import Sink
from cryptography import x509

from smtplab.record.recordings import Recordings
from smtplab.smtp.client import LabSMTP, RecordingClient
from smtplab.smtp.controller import LabController
from smtplab.tls import loopback
from smtplab.tls.ca import LabCA
from smtplab.tls.eavesdrop import Eavesdropper
from smtplab.tls.records import client_hello_server_name

MX1 = "mx1.example.org"
CLIENT = "client.example.com"
TIMEOUT = 10.0
MESSAGE = b"Subject: hi\r\n\r\nHello over TLS\r\n"


@pytest.fixture
def ca(tmp_path: Path) -> LabCA:
    return LabCA(tmp_path / "tls")


@pytest.fixture
def journal() -> Recordings:
    return Recordings()


@pytest.fixture
def starttls_server(ca: LabCA, journal: Recordings) -> Iterator[LabController]:
    """Port-25/587 style: plain text until the client says STARTTLS."""
    controller = LabController(
        Sink(), host_name=MX1, journal=journal, tls_context=ca.server_context(MX1)
    )
    controller.start()
    yield controller
    controller.stop()


@pytest.fixture
def implicit_server(ca: LabCA, journal: Recordings) -> Iterator[LabController]:
    """Port-465 style (RFC 8314): TLS from the first byte."""
    controller = LabController(
        Sink(), host_name=MX1, journal=journal, ssl_context=ca.server_context(MX1)
    )
    controller.start()
    yield controller
    controller.stop()


def lab_client(port: int) -> RecordingClient:
    """The lab's recording client, connecting by host name (it is a LabSMTP)."""
    client = RecordingClient(MX1, client_name=CLIENT, timeout=TIMEOUT)
    client.connect(MX1, port)
    return client


def implicit_client(host: str, port: int, context: ssl.SSLContext) -> RecordingClient:
    """Implicit TLS (port 465 style, RFC 8314) to a lab host name, as the lab's client does it."""
    client = RecordingClient(host, client_name=CLIENT, timeout=TIMEOUT, implicit_tls=context)
    client.connect(host, port)
    return client


def send_one(client: smtplib.SMTP) -> None:
    client.ehlo()
    client.sendmail("alice@example.com", ["bob@example.org"], MESSAGE)
    client.quit()


# --- the CA itself ----------------------------------------------------------------------------


def test_ca_certificate_is_written_as_pem(ca: LabCA, tmp_path: Path) -> None:
    assert ca.cert_path == tmp_path / "tls" / "lab-ca.pem"
    pem = ca.cert_path.read_bytes()
    assert pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert pem == ca.cert_pem
    cert = x509.load_pem_x509_certificate(pem)
    assert cert.subject.rfc4514_string() == "OU=lab CA,O=smtplab"
    assert [p.name for p in ca.cert_path.parent.iterdir()] == ["lab-ca.pem"]


def test_description_is_stable_across_labs(tmp_path: Path) -> None:
    first, second = LabCA(tmp_path / "a"), LabCA(tmp_path / "b")
    expected = {"subject_cn": MX1, "san": [MX1], "issuer": "smtplab lab CA"}
    assert first.describe(MX1) == expected
    assert second.describe(MX1) == expected
    assert first.cert_pem != second.cert_pem  # stable words, but different keys


def test_context_settings(ca: LabCA) -> None:
    server = ca.server_context(MX1)
    assert server.verify_mode == ssl.CERT_NONE
    assert not server.check_hostname
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2
    client = ca.client_context()
    assert client.verify_mode == ssl.CERT_REQUIRED
    assert client.check_hostname
    assert client.minimum_version == ssl.TLSVersion.TLSv1_2
    assert client.cert_store_stats()["x509_ca"] == 1  # the lab CA and nothing else


def test_aiosmtpd_does_not_warn_about_the_server_context(
    ca: LabCA, journal: Recordings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="mail.log"):
        controller = LabController(
            Sink(), host_name=MX1, journal=journal, tls_context=ca.server_context(MX1)
        )
        controller.start()
        controller.stop()
    assert [r.getMessage() for r in caplog.records if "tls_context" in r.getMessage()] == []


def test_one_leaf_per_host(ca: LabCA, starttls_server: LabController) -> None:
    def presented() -> bytes:
        with LabSMTP(MX1, starttls_server.port, local_hostname=CLIENT, timeout=TIMEOUT) as c:
            c.starttls(context=ca.client_context())
            assert isinstance(c.sock, ssl.SSLSocket)
            der = c.sock.getpeercert(binary_form=True)
            assert der is not None
            return der

    assert presented() == presented()
    assert ca.describe("mx2.example.org")["san"] == ["mx2.example.org"]


def test_a_key_pair_is_the_hosts_certificate_and_its_key(ca: LabCA, tmp_path: Path) -> None:
    """What the lab hands its Dovecot: a chain for the host, and the key that goes with it."""
    chain, key = ca.key_pair("imap.example.com")
    (tmp_path / "chain.pem").write_bytes(chain)
    (tmp_path / "key.pem").write_bytes(key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "chain.pem", tmp_path / "key.pem")  # a mismatch raises
    leaf = x509.load_pem_x509_certificate(chain)
    assert leaf.subject.rfc4514_string().startswith("CN=imap.example.com")


# --- STARTTLS: verify the name, not the address --------------------------------------------


def test_starttls_verifies_the_host_name(
    ca: LabCA, starttls_server: LabController, journal: Recordings
) -> None:
    client = LabSMTP(MX1, starttls_server.port, local_hostname=CLIENT, timeout=TIMEOUT)
    assert client.sock is not None
    assert client.sock.getpeername()[0] == "127.0.0.1"
    code, _ = client.starttls(context=ca.client_context())
    assert code == 220
    assert isinstance(client.sock, ssl.SSLSocket)
    assert client.sock.version() in {"TLSv1.2", "TLSv1.3"}
    send_one(client)
    server_log = journal.wait_for(lambda log: log.transcript().tls is not None, timeout=TIMEOUT)
    assert server_log.transcript().reply_to("DATA") is not None


def test_starttls_with_plain_smtplib_and_host_set_by_hand(
    ca: LabCA, starttls_server: LabController
) -> None:
    """Plain smtplib works too: it verifies against ``_host``, so set it before STARTTLS."""
    client = smtplib.SMTP("127.0.0.1", starttls_server.port, local_hostname=CLIENT, timeout=TIMEOUT)
    client._host = MX1
    client.starttls(context=ca.client_context())
    send_one(client)


@pytest.mark.parametrize(
    ("host", "reason"),
    [("mx2.example.org", "Hostname mismatch"), ("127.0.0.1", "IP address mismatch")],
)
def test_starttls_refuses_a_wrong_name_or_the_address(
    ca: LabCA, starttls_server: LabController, host: str, reason: str
) -> None:
    with (
        LabSMTP(host, starttls_server.port, local_hostname=CLIENT, timeout=TIMEOUT) as client,
        pytest.raises(ssl.SSLCertVerificationError) as failure,
    ):
        client.starttls(context=ca.client_context())
    assert reason in failure.value.verify_message


def test_a_client_made_before_it_connects_checks_the_name_it_connects_to(
    ca: LabCA, starttls_server: LabController
) -> None:
    """smtplib checks STARTTLS against its constructor's host; the lab's client is made
    first and connected later, so LabSMTP keeps the name given to connect()."""
    client = RecordingClient("mx2.example.org", client_name=CLIENT, timeout=TIMEOUT)
    client.connect("mx2.example.org", starttls_server.port)
    with pytest.raises(ssl.SSLCertVerificationError) as failure:
        client.starttls(context=ca.client_context())
    assert "Hostname mismatch" in failure.value.verify_message
    client.close()


# --- implicit TLS (port 465 style) ----------------------------------------------------------


def test_implicit_tls_verifies_the_host_name(ca: LabCA, implicit_server: LabController) -> None:
    client = implicit_client(MX1, implicit_server.port, ca.client_context())
    assert isinstance(client.sock, ssl.SSLSocket)
    assert client.sock.getpeername()[0] == "127.0.0.1"
    assert client.sock.server_hostname == MX1
    send_one(client)


@pytest.mark.parametrize(
    ("host", "reason"),
    [("mx2.example.org", "Hostname mismatch"), ("127.0.0.1", "IP address mismatch")],
)
def test_implicit_tls_refuses_a_wrong_name_or_the_address(
    ca: LabCA, implicit_server: LabController, host: str, reason: str
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError) as failure:
        implicit_client(host, implicit_server.port, ca.client_context())
    assert reason in failure.value.verify_message


def test_a_refused_certificate_closes_the_connection(
    ca: LabCA, implicit_server: LabController
) -> None:
    sock = loopback.connect(implicit_server.port, TIMEOUT)
    assert sock.getpeername()[0] == "127.0.0.1"
    with pytest.raises(ssl.SSLCertVerificationError):
        loopback.start_tls(sock, ca.client_context(), "mx2.example.org")
    assert sock.fileno() == -1


def test_the_system_store_does_not_trust_the_lab(implicit_server: LabController) -> None:
    context = ssl.create_default_context()
    with (
        socket.create_connection(("127.0.0.1", implicit_server.port), TIMEOUT) as raw,
        pytest.raises(ssl.SSLCertVerificationError) as failure,
    ):
        context.wrap_socket(raw, server_hostname=MX1)
    assert "unable to get local issuer certificate" in failure.value.verify_message


def test_another_lab_does_not_trust_this_one(
    implicit_server: LabController, tmp_path: Path
) -> None:
    other = LabCA(tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        implicit_client(MX1, implicit_server.port, other.client_context())


# --- the eavesdropper -----------------------------------------------------------------------


def after(stream: bytes, marker: bytes) -> bytes:
    return stream[stream.index(marker) + len(marker) :]


def test_eavesdropper_reads_until_starttls_then_sees_ciphertext(
    ca: LabCA, starttls_server: LabController, journal: Recordings
) -> None:
    with Eavesdropper(starttls_server.port) as eve:
        client = lab_client(eve.port)
        client.ehlo()
        client.starttls(context=ca.client_context())
        send_one(client)
        sent, received = eve.data("client"), eve.data("server")

    assert sent.startswith(b"EHLO client.example.com\r\nSTARTTLS\r\n")
    assert b"mail from" not in sent.lower()
    assert b"Hello over TLS" not in sent
    assert after(sent, b"STARTTLS\r\n")[0] == 0x16  # a TLS handshake record: ClientHello
    assert b"250-STARTTLS" in received
    assert after(received, b"Ready to start TLS\r\n")[0] == 0x16  # ServerHello
    # ...while the server itself read the envelope in clear, after decrypting it.
    server_log = journal.wait_for(lambda log: log.transcript().tls is not None, timeout=TIMEOUT)
    assert any(c.verb == "MAIL" for c in server_log.transcript().commands)

    view = eve.view(limit=1000)
    assert " -> EHLO client.example.com" in view
    assert " -> STARTTLS" in view
    assert "Ready to start TLS" in view
    # The first records are the handshake in the clear, the SNI readable (RFC 6066 §3);
    # everything after it is application_data only the two ends can read.
    assert " -> [TLS handshake 0x16, in the clear: ClientHello, server name (SNI) mx1" in view
    assert "<-  [TLS handshake 0x16, in the clear: ServerHello] " in view
    assert " -> [TLS application_data 0x17, encrypted] " in view
    assert "MAIL FROM" not in view


def test_eavesdropper_reads_everything_without_tls(starttls_server: LabController) -> None:
    with Eavesdropper(starttls_server.port) as eve:
        send_one(lab_client(eve.port))
        sent = eve.data("client")
    assert b"MAIL FROM:<alice@example.com>" in sent
    assert b"Hello over TLS" in sent
    assert "[TLS" not in eve.view(limit=1000)


def test_eavesdropper_on_implicit_tls_sees_no_text_at_all(
    ca: LabCA, implicit_server: LabController
) -> None:
    with Eavesdropper(implicit_server.port) as eve:
        send_one(implicit_client(MX1, eve.port, ca.client_context()))
        sent, received = eve.data("client"), eve.data("server")
    assert sent[0] == received[0] == 0x16
    assert b"EHLO" not in sent
    assert b"ESMTP" not in received


def test_eavesdropper_stops_recording_at_its_limit(starttls_server: LabController) -> None:
    with Eavesdropper(starttls_server.port, limit=10) as eve:
        send_one(lab_client(eve.port))
    assert eve.truncated
    assert eve.data("client") == b"EHLO clien"
    assert len(eve.data("server")) == 10
    assert eve.view().endswith("[recording stopped after 10 bytes in one direction]")


def test_eavesdropper_stop_is_idempotent_and_closes_the_port(
    starttls_server: LabController,
) -> None:
    eve = Eavesdropper(starttls_server.port).start()
    port = eve.port
    eve.stop()
    eve.stop()
    assert eve._thread is not None and not eve._thread.is_alive()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), TIMEOUT).close()
    Eavesdropper(starttls_server.port).stop()  # never started: still releases its socket


def test_eavesdropper_closes_the_client_when_the_target_is_down() -> None:
    with socket.create_server(("127.0.0.1", 0)) as gone:
        dead_port = gone.getsockname()[1]
    with (
        Eavesdropper(dead_port) as eve,
        socket.create_connection(("127.0.0.1", eve.port), TIMEOUT) as client,
    ):
        assert client.recv(1) == b""
    assert eve.chunks == []


def tls_record(content_type: int, body: bytes) -> bytes:
    return bytes([content_type, 3, 3]) + len(body).to_bytes(2, "big") + body


def handshake(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + len(body).to_bytes(3, "big") + body


def client_hello(server_name: bytes) -> bytes:
    """A ClientHello with one extension, server_name (RFC 8446 §4.1.2, RFC 6066 §3)."""
    entry = b"\x00" + len(server_name).to_bytes(2, "big") + server_name
    names = len(entry).to_bytes(2, "big") + entry
    extension = b"\x00\x00" + len(names).to_bytes(2, "big") + names
    body = (
        b"\x03\x03"
        + bytes(32)  # legacy_version, random
        + b"\x00"  # no legacy_session_id
        + b"\x00\x02\x13\x01"  # one cipher suite
        + b"\x01\x00"  # null compression
        + len(extension).to_bytes(2, "big")
        + extension
    )
    return handshake(1, body)


def test_view_rendering() -> None:
    eve = Eavesdropper(9)
    eve.chunks = [
        ("server", b"220 mx1.example.org ESMTP\r\n"),
        ("client", b"EHLO a\r\n"),
        ("server", b"250-mx1.example.org\r\n"),
        ("server", b"250 STARTTLS\r\n"),  # split by TCP: shown as one run
        ("client", b"STARTTLS\r\n"),
        ("server", b"220 Ready\r\n"),
        ("client", tls_record(22, client_hello(b"mx1.example.org"))),
        ("server", tls_record(22, handshake(2, bytes(40))) + tls_record(20, b"\x01")),
        ("server", tls_record(23, bytes(100)) + tls_record(23, bytes(50))),  # one run
        ("client", tls_record(20, b"\x01") + tls_record(22, handshake(20, bytes(12)))),
    ]
    eve.stop()
    assert eve.view() == "\n".join(
        [
            "<-  220 mx1.example.org ESMTP",
            " -> EHLO a",
            "<-  250-mx1.example.org",
            "<-  250 STARTTLS",
            " -> STARTTLS",
            "<-  220 Ready",
            " -> [TLS handshake 0x16, in the clear: ClientHello, server name (SNI)"
            " mx1.example.org] 76 bytes",
            "<-  [TLS handshake 0x16, in the clear: ServerHello] 49 bytes",
            "<-  [TLS change_cipher_spec 0x14] 6 bytes",
            "<-  [TLS application_data 0x17, encrypted] 2 records, 160 bytes",
            " -> [TLS change_cipher_spec 0x14] 6 bytes",
            # after its change_cipher_spec a side's handshake is ciphertext (TLS 1.2 Finished)
            " -> [TLS handshake 0x16, encrypted] 21 bytes",
        ]
    )
    assert eve.view(limit=2).splitlines()[-1] == "... 10 more lines"


def test_view_of_a_record_cut_short_and_of_bytes_that_are_not_tls() -> None:
    eve = Eavesdropper(9)
    eve.chunks = [
        ("client", tls_record(22, client_hello(b"mx1.example.org"))[:20]),
        ("server", bytes([0x80, 0x01])),
    ]
    eve.stop()
    assert eve.view() == "\n".join(
        [" -> [TLS record, truncated or not TLS] 20 bytes", "<-  [2 bytes, not text] 80 01"]
    )


def test_client_hello_server_name() -> None:
    assert client_hello_server_name(client_hello(b"mx1.example.org")[4:]) == "mx1.example.org"
    assert client_hello_server_name(client_hello(b"")[4:]) == ""
    assert client_hello_server_name(b"") is None  # short or malformed: no name, no error
    assert client_hello_server_name(client_hello(b"mx1")[4:-2]) is None
