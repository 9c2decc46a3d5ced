"""Bulk mail to one server, four ways, counting the round trips the client waits for.

Chapter 10 sends a newsletter one message per connection, all messages on one
connection, with PIPELINING (RFC 2920), and on several connections at once. What
separates them is how often the client stops to wait for a reply: each wait costs
one network round trip (``LabServer.slow_down`` makes that cost real time). The
clients here count their waits, so the round trips they report are exact on every
run, whatever the machine; only the measured seconds vary.

The first, second and fourth ways are ``smtplib``, which waits for every reply.
Neither smtplib nor aiosmtplib pipelines, so :func:`pipelined` is a small client
of its own on ``asyncio`` streams: the end of one message, the next envelope and
its ``DATA`` go in one write, and their replies come back in one round trip. Each
way also keeps its :class:`Round` trips, to show what went out before each wait.
"""

from __future__ import annotations

import asyncio
import smtplib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import getaddresses
from typing import TYPE_CHECKING

from smtplab.errors import SmtplabError
from smtplab.protocol.rules import DATA_TERMINATOR, dot_stuff

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

#: The connections way 4 opens at once: Postfix's default_destination_concurrency_limit.
CONNECTIONS = 20
MESSAGE = "message"  # how a round trip names the message data it carried


@dataclass(frozen=True)
class Destination:
    """The server a batch goes to, and the name the client gives in EHLO."""

    address: str
    port: int
    helo: str = "shop.example.com"
    timeout: float = 30.0


@dataclass(frozen=True)
class Round:
    """One round trip: what the client sent since its last wait, and the replies it waited for."""

    sent: tuple[str, ...]
    replies: tuple[int, ...]

    def __str__(self) -> str:
        sent = " ".join(self.sent) or "(connect)"
        return f"{sent:<28} → {' '.join(map(str, self.replies))}"


@dataclass(frozen=True)
class Sent:
    """What one way cost: messages sent, round trips waited (the clock's view), seconds."""

    messages: int
    round_trips: int
    seconds: float
    rounds: tuple[Round, ...]  # of the first connection

    @property
    def round_trips_per_message(self) -> float:
        return self.round_trips / self.messages

    @property
    def rate(self) -> float:
        """Messages per second, as measured."""
        return self.messages / self.seconds

    def __str__(self) -> str:
        """The counted part only: the seconds change from run to run."""
        return (
            f"{self.messages} messages, {self.round_trips} round trips: "
            f"{self.round_trips_per_message:.2f} per message"
        )


class PipeliningError(SmtplabError, RuntimeError):
    """The server did not offer PIPELINING, or answered a group with other replies."""


def envelope(message: EmailMessage) -> tuple[str, list[str]]:
    """MAIL FROM from ``From:``, one RCPT TO for each address in ``To:`` and ``Cc:``."""
    (_, sender), *_ = getaddresses([str(message["From"])])
    fields = [str(value) for name in ("To", "Cc") for value in message.get_all(name, [])]
    return sender, [address for _, address in getaddresses(fields)]


def _label(data: bytes) -> str:
    """``MAIL`` for a command line, ``message`` for the data after DATA."""
    return MESSAGE if data.endswith(DATA_TERMINATOR) else data.split(maxsplit=1)[0].decode().upper()


class CountingSMTP(smtplib.SMTP):
    """smtplib.SMTP that keeps a :class:`Round` for every reply it waits for."""

    def __init__(self, destination: Destination) -> None:
        self.rounds: list[Round] = []
        self._sent: list[str] = []
        super().__init__(
            destination.address,
            destination.port,
            local_hostname=destination.helo,
            timeout=destination.timeout,
        )

    def send(self, s: str | ReadableBuffer) -> None:
        data = s.encode("ascii") if isinstance(s, str) else bytes(s)
        self._sent.append(_label(data))
        super().send(s)

    def getreply(self) -> tuple[int, bytes]:
        code, text = super().getreply()
        self.rounds.append(Round(tuple(self._sent), (code,)))
        self._sent = []
        return code, text


def _timed(send: Callable[[], tuple[int, Sequence[Round]]], messages: int) -> Sent:
    began = time.perf_counter()
    waits, rounds = send()
    return Sent(messages, waits, time.perf_counter() - began, tuple(rounds))


def _on_one_connection(destination: Destination, batch: Sequence[EmailMessage]) -> list[Round]:
    with CountingSMTP(destination) as smtp:
        for message in batch:
            smtp.send_message(message)
    return smtp.rounds


def connection_per_message(destination: Destination, batch: Sequence[EmailMessage]) -> Sent:
    """Way 1: connect, send one message, QUIT; again for every message."""

    def send() -> tuple[int, list[Round]]:
        trips = [_on_one_connection(destination, [message]) for message in batch]
        return sum(map(len, trips)), trips[0]

    return _timed(send, len(batch))


def one_connection(destination: Destination, batch: Sequence[EmailMessage]) -> Sent:
    """Way 2: one connection for the whole batch, one transaction after another."""

    def send() -> tuple[int, list[Round]]:
        rounds = _on_one_connection(destination, batch)
        return len(rounds), rounds

    return _timed(send, len(batch))


def concurrently(
    destination: Destination, batch: Sequence[EmailMessage], connections: int = CONNECTIONS
) -> Sent:
    """Way 4: ``connections`` connections at once, each sending its share as in way 2.

    The connections wait side by side, so the clock sees the round trips of the one
    that waits longest.
    """

    def send() -> tuple[int, list[Round]]:
        shares = [batch[i::connections] for i in range(connections)]
        with ThreadPoolExecutor(connections) as pool:
            trips = list(pool.map(lambda share: _on_one_connection(destination, share), shares))
        return max(map(len, trips)), trips[0]

    return _timed(send, len(batch))


def _envelope_group(message: EmailMessage) -> tuple[bytes, list[str], list[int]]:
    """MAIL, one RCPT per recipient and DATA: the bytes, their labels, the replies they get."""
    sender, recipients = envelope(message)
    lines = [f"MAIL FROM:<{sender}>", *(f"RCPT TO:<{r}>" for r in recipients), "DATA"]
    wire = "".join(f"{line}\r\n" for line in lines).encode()
    return wire, [line.split(maxsplit=1)[0] for line in lines], [250] * (len(lines) - 1) + [354]


async def _pipelined(destination: Destination, batch: Sequence[EmailMessage]) -> list[Round]:
    reader, writer = await asyncio.open_connection(destination.address, destination.port)
    rounds: list[Round] = []

    async def wait(sent: list[str], count: int) -> tuple[tuple[int, ...], list[bytes]]:
        """Send what was written, then read ``count`` replies: one round trip for all."""
        await writer.drain()
        codes, lines = [], []
        for _ in range(count):
            line = await asyncio.wait_for(reader.readline(), destination.timeout)
            lines.append(line)
            while line[3:4] == b"-":  # a multi-line reply goes on
                line = await asyncio.wait_for(reader.readline(), destination.timeout)
                lines.append(line)
            if not line[:3].isdigit():
                raise PipeliningError(f"the connection closed while waiting for {sent}")
            codes.append(int(line[:3]))
        rounds.append(Round(tuple(sent), tuple(codes)))
        return tuple(codes), lines

    def expect(got: tuple[int, ...], wanted: Sequence[int], what: str) -> None:
        if list(got) != list(wanted):  # a complete client would RSET and go on
            raise PipeliningError(f"{what}: expected {list(wanted)}, got {list(got)}")

    try:
        await wait([], 1)  # the greeting
        writer.write(f"EHLO {destination.helo}\r\n".encode())
        codes, lines = await wait(["EHLO"], 1)
        expect(codes, [250], "EHLO")
        if not any(line[4:].strip().upper() == b"PIPELINING" for line in lines):
            raise PipeliningError("the server does not offer PIPELINING (RFC 2920 §3.1)")
        wire, sent, wanted = _envelope_group(batch[0])
        writer.write(wire)  # MAIL, RCPT, DATA: one group, DATA last
        for i, message in enumerate(batch):
            codes, _ = await wait(sent, len(wanted))
            expect(codes, wanted, f"message {i}")
            data = dot_stuff(message.as_bytes(policy=SMTP_POLICY))  # RFC 5321 §4.5.2
            if i + 1 < len(batch):  # the data may start a group (RFC 2920 §3.1)
                wire, sent, wanted = _envelope_group(batch[i + 1])
                sent, wanted = [MESSAGE, *sent], [250, *wanted]
            else:
                wire, sent, wanted = b"QUIT\r\n", [MESSAGE, "QUIT"], [250, 221]
            writer.write(data + wire)  # one write: one packet, not two waiting on each other
        codes, _ = await wait(sent, len(wanted))
        expect(codes, wanted, "the last message")
    finally:
        writer.close()
        await writer.wait_closed()
    return rounds


async def pipelined(destination: Destination, batch: Sequence[EmailMessage]) -> Sent:
    """Way 3: one connection with PIPELINING (RFC 2920): one round trip per message.

    Raises :class:`PipeliningError` when the server does not offer PIPELINING or a
    reply is not the one expected (this client does not recover; a complete one
    would send RSET and go on with the next message).
    """
    began = time.perf_counter()
    rounds = await _pipelined(destination, batch)
    return Sent(len(batch), len(rounds), time.perf_counter() - began, tuple(rounds))
