"""Latency models a network round trip (LabServer.slow_down, smtplab.smtp.latency).

With a round trip of L seconds, a client that waits for every reply pays L per
command, while a pipelined group (RFC 2920) pays one L for all its commands.
Two kinds of checks, neither of which a slow or busy machine can break. Elapsed
time has a lower bound that the lab guarantees (bytes are never handed over
early): a client pays at least L per reply it waits for. And the server's own
recording shows how the delay was applied: a pipelined group reaches the session
as one, so all its commands are read before the first of their replies is
written, where a lab that delayed each command on its own would interleave them.
How much pipelining saves in seconds is measured by the benchmarks, not here.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import pytest

from smtplab import Lab

L = 0.05  # seconds: a round trip, as on the Internet
N = 10  # commands per measurement
MX = "mx1.example.org"


class RawClient:
    """A plain socket, so that the test decides exactly what is sent when."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def reply(self) -> list[bytes]:
        """One (possibly multi-line) reply."""
        lines = []
        while True:
            line = self.file.readline()
            assert line, "the server closed the connection"
            lines.append(line)
            if line[3:4] != b"-":
                return lines

    def say(self, line: bytes) -> list[bytes]:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def slow_lab() -> Iterator[Lab]:
    with Lab(name="test-latency") as lab:
        lab.server(MX).slow_down(L)
        yield lab


@pytest.fixture
def client(slow_lab: Lab) -> Iterator[RawClient]:
    raw = RawClient(slow_lab.server(MX).port)
    try:
        yield raw
    finally:
        raw.close()


def test_the_greeting_comes_one_round_trip_after_connecting(slow_lab: Lab) -> None:
    began = time.monotonic()
    raw = RawClient(slow_lab.server(MX).port)
    try:
        assert raw.reply()[0].startswith(b"220 ")
        assert time.monotonic() - began >= L * 0.99
    finally:
        raw.close()


def test_each_command_waited_for_costs_a_round_trip(client: RawClient) -> None:
    client.reply()
    client.say(b"EHLO client.example.com")
    began = time.monotonic()
    for _ in range(N):
        assert client.say(b"NOOP")[0].startswith(b"250")
    assert time.monotonic() - began >= N * L * 0.99


def _sides(lab: Lab) -> str:
    """The server's recording of the last connection, one letter a line: C or S."""
    server = lab.transcripts(MX, at_least=1)[-1]
    lines = server.lines(full_data=True)
    return "".join(line.side[0].upper() for line in lines if line.side in ("client", "server"))


def test_a_pipelined_group_costs_one_round_trip(client: RawClient, slow_lab: Lab) -> None:
    client.reply()
    assert b"250 PIPELINING\r\n" in b"".join(client.say(b"EHLO client.example.com")).replace(
        b"250-", b"250 "
    )
    began = time.monotonic()
    client.sock.sendall(b"NOOP\r\n" * N)
    replies = [client.reply() for _ in range(N)]
    assert time.monotonic() - began >= L * 0.99  # a round trip: the lab never delivers early
    assert all(r[0].startswith(b"250") for r in replies)
    client.close()
    # greeting, EHLO and its reply, then the whole group before any of its replies
    assert _sides(slow_lab).endswith("C" * N + "S" * N)


def test_a_whole_transaction_pipelined_reaches_the_server_in_two_groups(
    client: RawClient, slow_lab: Lab
) -> None:
    client.reply()
    client.say(b"EHLO client.example.com")
    envelope = [b"MAIL FROM:<alice@example.com>", b"RCPT TO:<bob@example.org>", b"DATA"]
    message = b"Subject: latency\r\n\r\nHello\r\n.\r\n"

    began = time.monotonic()
    client.sock.sendall(b"".join(line + b"\r\n" for line in envelope))
    codes = [client.reply()[0][:3] for _ in envelope]
    client.sock.sendall(message)
    codes.append(client.reply()[0][:3])
    assert codes == [b"250", b"250", b"354", b"250"]
    assert time.monotonic() - began >= 2 * L * 0.99  # two round trips, at least
    client.close()
    # MAIL, RCPT, DATA read together, then their three replies; then the message
    # (its lines) and the one reply to it
    sides = _sides(slow_lab)
    assert sides.endswith("CCCSSS" + "C" * 4 + "S"), sides


def _masked(transcript: object) -> list[tuple[str, str]]:
    """(side, text) per line, with the per-message queue id masked."""
    lines = transcript.lines(full_data=True)  # type: ignore[attr-defined]
    return [(line.side, re.sub(r"queued as \w+", "queued as X", line.text)) for line in lines]


def test_transcripts_are_the_same_with_and_without_latency(lab: Lab) -> None:
    raw = (
        b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: same\r\n"
        b"Date: Mon, 02 Nov 2026 09:00:00 +0000\r\nMessage-ID: <same@example.com>\r\n"
        b"\r\nThe same words, near or far.\r\n"
    )
    results = []
    for latency in (0.0, L):
        lab.server(MX).slow_down(latency)
        result = lab.send("alice@example.com", "bob@example.org", message=raw, via=MX)
        assert result.ok
        results.append((_masked(result.transcript), _masked(result.server_view())))
    assert results[0] == results[1]
    assert results[0][0] == results[0][1]  # and both ends still agree


def test_a_quit_sent_right_before_closing_is_still_answered(
    client: RawClient, slow_lab: Lab
) -> None:
    client.reply()
    client.say(b"EHLO client.example.com")
    client.sock.sendall(b"QUIT\r\n")
    client.sock.shutdown(socket.SHUT_WR)  # FIN right behind the command, still in flight
    assert client.reply()[0].startswith(b"221")
    server = slow_lab.transcripts(MX, at_least=1)[-1]
    assert [c.verb for c in server.commands][-1] == "QUIT"


def test_under_tls_a_quit_sent_right_before_closing_is_still_read(slow_lab: Lab) -> None:
    host = "smtps.example.com"
    slow_lab.server(host).slow_down(L)
    plain = socket.create_connection(("127.0.0.1", slow_lab.server(host).port), timeout=10)
    tls = slow_lab.client_tls.wrap_socket(plain, server_hostname=host)
    with tls, tls.makefile("rb") as file:
        assert file.readline().startswith(b"220 ")
        tls.sendall(b"QUIT\r\n")
    server = slow_lab.transcripts(host, at_least=1)[-1]
    assert [c.verb for c in server.commands] == ["QUIT"]


def test_bytes_sent_before_the_tls_handshake_are_still_discarded(
    client: RawClient, slow_lab: Lab
) -> None:
    """RFC 3207 §4.2 with a command that is still in flight when TLS starts."""
    slow_lab.server(MX).slow_down(0.2)  # room for the injection to overtake the handshake
    client.reply()
    client.say(b"EHLO client.example.com")
    client.sock.sendall(b"STARTTLS\r\n")
    time.sleep(0.02)  # a separate packet, sent before the server has even read STARTTLS
    client.sock.sendall(b"MAIL FROM:<mallory@example.net>\r\n")
    assert client.reply()[0].startswith(b"220")
    client.file.close()
    tls = slow_lab.client_tls.wrap_socket(client.sock, server_hostname=MX)
    with tls, tls.makefile("rb") as file:
        tls.sendall(b"RSET\r\n")
        assert file.readline().startswith(b"250")  # the first reply after TLS is RSET's
        tls.sendall(b"QUIT\r\n")
        assert file.readline().startswith(b"221")
    server = slow_lab.transcripts(MX, at_least=1)[-1]
    assert "were discarded" in str(server)
    assert "mallory" not in "".join(str(c) for c in server.commands)


def test_a_client_that_leaves_before_the_greeting_is_let_go(slow_lab: Lab) -> None:
    slow_lab.server(MX).slow_down(0.5)
    raw = RawClient(slow_lab.server(MX).port)
    raw.close()  # before the greeting could come
    # closed at once, well before the session timeout (60 s), or this wait times out
    server = slow_lab.transcripts(MX, at_least=1, timeout=10)[-1]
    assert not server.replies
