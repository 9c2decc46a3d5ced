"""Handshake and security: roles and ports, TLS, AUTH policy, extensions, smuggling."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator

import pytest

from smtplab import Lab
from smtplab.record.transcript import TLSStarted
from smtplab.world import LOOPBACK


class Raw:
    """A bare SMTP client over a socket: for what smtplib would never send."""

    def __init__(self, port: int):
        self.sock = socket.create_connection((LOOPBACK, port), timeout=10)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> list[str]:
        """One whole (possibly multi-line) reply."""
        lines = []
        while True:
            line = self.file.readline().decode().rstrip("\r\n")
            if not line:
                raise ConnectionError("closed")
            lines.append(line)
            if line[3:4] != "-":
                return lines

    def code(self) -> int:
        return int(self.reply()[-1][:3])

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def raw_mx(lab: Lab) -> Iterator[Raw]:
    client = Raw(lab.server("mx1.example.org").port)
    assert client.code() == 220
    client.send(b"EHLO raw.example\r\n")
    assert client.code() == 250
    yield client
    client.close()


def test_each_role_is_its_own_server_with_its_own_name(lab):
    described = lab.describe()
    by_role = {}
    for server in described["servers"]:
        by_role.setdefault(server["role"], []).append(server["host"])
    assert by_role["submission"] == ["smtp.example.com"]
    assert by_role["submissions"] == ["smtps.example.com"]
    assert "mx1.example.org" in by_role["mx"]
    assert described["ca_cert"].endswith(".pem")


def test_implicit_tls_starts_before_the_greeting(lab):
    result = lab.send("alice@example.com", "bob@example.org", via="smtps.example.com")
    assert result.ok
    _, first, greeting = result.transcript.events[:3]
    assert isinstance(first, TLSStarted) and first.version.startswith("TLSv1.")
    assert greeting.code == 220


def test_the_lab_client_verifies_the_host_name_not_the_address(lab):
    port = lab.server("smtps.example.com").port
    context = lab.ca.client_context()
    for wrong_name in ("mx1.example.org", LOOPBACK):
        with (
            socket.create_connection((LOOPBACK, port), timeout=5) as sock,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            context.wrap_socket(sock, server_hostname=wrong_name)


def test_plaintext_auth_is_refused_until_the_lesson_switch_and_masked_until_revealed(lab):
    submission = lab.server("smtp.example.com")
    client = Raw(submission.port)
    client.reply()
    client.send(b"EHLO c.example\r\nAUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tAGFsaWNlLWxhYi1wdw==\r\n")
    assert client.code() == 250
    assert client.reply() == [
        "538 5.7.11 Encryption required for requested authentication mechanism"
    ]
    client.close()
    submission.allow_plaintext_auth()
    client = Raw(submission.port)
    client.reply()
    client.send(
        b"EHLO c.example\r\nAUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tAGFsaWNlLWxhYi1wdw==\r\nQUIT\r\n"
    )
    assert client.code() == 250 and client.code() == 235 and client.code() == 221
    client.close()
    transcript = lab.transcripts("smtp.example.com", at_least=2)[1]
    assert " -> AUTH PLAIN ********" in transcript.to_text()
    assert "AGFsaWNlQGV4YW1wbGUuY29tAGFsaWNlLWxhYi1wdw==" in transcript.reveal().to_text()


def test_repeated_auth_failures_end_the_session_with_421(lab):
    lab.server("smtp.example.com").allow_plaintext_auth()
    client = Raw(lab.server("smtp.example.com").port)
    client.reply()
    client.send(b"EHLO c.example\r\n")
    client.reply()
    for _ in range(2):
        client.send(b"AUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tAHdyb25n\r\n")
        assert client.reply() == ["535 5.7.8 Authentication credentials invalid"]
    client.send(b"AUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tAHdyb25n\r\n")
    assert client.code() == 535
    assert client.reply()[0].startswith("421 4.7.0")
    with pytest.raises(ConnectionError):
        client.reply()
    client.close()


def test_an_mx_offers_starttls_but_not_auth(raw_mx):
    raw_mx.send(b"EHLO raw.example\r\n")
    lines = raw_mx.reply()
    assert "250-STARTTLS" in lines and not any("AUTH" in line for line in lines)
    raw_mx.send(b"AUTH PLAIN AGE=\r\n")
    assert raw_mx.reply()[0].startswith("503 5.5.1")


def test_extensions_are_advertised_and_switchable_and_helo_gets_none(lab):
    mx1 = lab.server("mx1.example.org")
    client = Raw(mx1.port)
    client.reply()
    client.send(b"EHLO c.example\r\n")
    offered = {line[4:].split(" ")[0] for line in client.reply()[1:]}
    assert offered >= {
        "SIZE",
        "8BITMIME",
        "SMTPUTF8",
        "STARTTLS",
        "PIPELINING",
        "ENHANCEDSTATUSCODES",
        "DSN",
    }
    client.send(b"HELO c.example\r\n")
    assert client.reply() == ["250 mx1.example.org"]
    client.close()
    mx1.disable("PIPELINING", "SIZE", "DSN")
    client = Raw(mx1.port)
    client.reply()
    client.send(b"EHLO c.example\r\n")
    offered = {line[4:].split(" ")[0] for line in client.reply()[1:]}
    assert not offered & {"PIPELINING", "SIZE", "DSN"} and "ENHANCEDSTATUSCODES" in offered
    client.close()


def test_pipelined_commands_are_answered_in_order(raw_mx):
    raw_mx.send(
        b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.org>\r\n"
        b"RCPT TO:<nobody@example.org>\r\nRCPT TO:<carol@example.org>\r\nDATA\r\n"
    )
    assert [raw_mx.code() for _ in range(5)] == [250, 250, 550, 250, 354]


def test_size_is_enforced_at_mail_and_after_data(lab):
    mx1 = lab.server("mx1.example.org")
    mx1.reconfigure(data_size_limit=2000)
    client = Raw(mx1.port)
    client.reply()
    client.send(b"EHLO c.example\r\nMAIL FROM:<a@example.com> SIZE=5000\r\n")
    client.reply()
    assert client.reply()[0].startswith("552 5.3.4")
    client.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
    assert [client.code() for _ in range(3)] == [250, 250, 354]
    client.send(b"Subject: big\r\n\r\n" + (b"x" * 98 + b"\r\n") * 30 + b".\r\n")
    assert client.reply()[0].startswith("552 5.3.4")
    client.close()
    assert len(lab.mailbox("bob@example.org")) == 0


def test_enhanced_status_codes_follow_ehlo_but_not_helo(lab):
    client = Raw(lab.server("mx1.example.org").port)
    client.reply()
    rcpt = b"RCPT TO:<bob@example.org>\r\n"
    client.send(b"EHLO c.example\r\n" + rcpt + b"HELO c.example\r\n" + rcpt)
    client.reply()
    assert client.reply()[0].startswith("503 5.5.1 ")
    client.reply()
    assert client.reply()[0] == "503 Error: need MAIL command"
    client.close()


@pytest.mark.parametrize("smuggled_end", [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r\r\n"])
def test_smuggling_variants_store_exactly_one_message(lab, raw_mx, smuggled_end):
    """RFC 5321 §2.3.8 / CVE-2023-51764: only CRLF . CRLF ends the data."""
    raw_mx.send(b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
    assert [raw_mx.code() for _ in range(3)] == [250, 250, 354]
    raw_mx.send(
        b"Subject: innocent\r\n\r\nhello"
        + smuggled_end
        + b"MAIL FROM:<admin@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
        + b"Subject: smuggled\r\n\r\nevil\r\n.\r\n"
    )
    assert raw_mx.code() == 250
    raw_mx.send(b"QUIT\r\n")
    assert raw_mx.code() == 221
    (stored,) = lab.mailbox("bob@example.org")
    assert stored.subject == "innocent" and b"Subject: smuggled" in stored.raw
    assert b"\r" not in stored.raw  # bare CRs were normalised, then stored with LF


def test_the_relay_never_forwards_a_bare_line_end(lab):
    body = b"From: alice@example.com\r\nSubject: x\r\nMessage-ID: <bare@x>\r\n\r\na\nb\rc\r\n"
    result = lab.send("alice@example.com", "bob@example.org", message=body)
    result.journey.wait(10)
    hop = result.journey.hops()[1]
    data = hop.data.wire
    assert b"a\r\nb\r\nc\r\n" in data
    assert data.count(b"\n") == data.count(b"\r\n") and data.count(b"\r") == data.count(b"\r\n")


def test_commands_pipelined_behind_starttls_are_discarded(lab):
    """CVE-2024-34083: nothing sent in the clear before the handshake may be obeyed."""
    client = Raw(lab.server("mx1.example.org").port)
    client.reply()
    client.send(b"EHLO c.example\r\n")
    client.reply()
    client.send(b"STARTTLS\r\nMAIL FROM:<evil@example.net>\r\n")
    assert client.reply()[0].startswith("220")
    client.file.close()
    with lab.ca.client_context().wrap_socket(client.sock, server_hostname="mx1.example.org") as tls:
        replies = tls.makefile("rb")
        tls.sendall(b"EHLO c.example\r\nRCPT TO:<bob@example.org>\r\n")
        while replies.readline().startswith(b"250-"):
            pass
        assert replies.readline().startswith(b"503 5.5.1")  # no MAIL survived the handshake
        tls.sendall(b"QUIT\r\n")
        replies.readline()
        replies.close()
    (transcript,) = lab.transcripts("mx1.example.org", at_least=1)
    assert "bytes sent before TLS were discarded (RFC 3207 §4.2)" in transcript.to_text()


def test_unauthenticated_relay_is_refused_and_nothing_is_queued(lab):
    client = Raw(lab.server("smtp.example.com").port)
    client.reply()
    client.send(b"EHLO c.example\r\nMAIL FROM:<alice@example.com>\r\n")
    client.reply()
    assert client.reply()[0].startswith("530 5.7.0")
    client.close()
    assert lab.queues["smtp.example.com"].pending() == []


def test_a_wiretap_on_an_mx_sees_the_relay_hop_and_a_stripped_starttls_leaves_it_plain(lab):
    """lab.eavesdrop taps the queue's hop to an MX too (chapter 08). Opportunistic STARTTLS
    on port 25: with STARTTLS gone from the EHLO reply, the relay delivers in the clear,
    which is what an attacker who deletes it achieves (RFC 3207 §6)."""
    mx1 = lab.server("mx1.example.org")
    with lab.eavesdrop("mx1.example.org") as tap:
        lab.send("alice@example.com", "bob@example.org", "Over TLS", "secret one").journey.wait()
        relay_said = tap.data("client")
    assert relay_said.startswith(b"EHLO smtp.example.com\r\nSTARTTLS\r\n")
    assert b"secret one" not in relay_said
    assert "ClientHello, server name (SNI) mx1.example.org" in tap.view(limit=1000)

    mx1.disable("STARTTLS")
    with lab.eavesdrop("mx1.example.org") as tap:
        plain = lab.send("alice@example.com", "bob@example.org", "In the clear", "secret two")
        assert plain.journey.wait().outcome("bob@example.org") == "delivered"
        relay_said = tap.data("client")
    assert b"STARTTLS" not in relay_said
    assert b"MAIL FROM:<alice@example.com>" in relay_said and b"secret two" in relay_said
    assert " with ESMTP id " in lab.mailbox("bob@example.org")[-1].message["Received"]
