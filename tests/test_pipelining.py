"""The bulk-sending ways of smtplab.smtp.pipelining, against a real lab MX over real sockets.

The round trips each way reports are counted, not timed, so the checks are exact.
"""

from __future__ import annotations

import asyncio
import socket
import time
from email.message import EmailMessage

import pytest

from smtplab import Lab
from smtplab.smtp.pipelining import (
    Destination,
    PipeliningError,
    concurrently,
    connection_per_message,
    one_connection,
    pipelined,
)

MX = "mx1.example.org"
SUBSCRIBERS = ["bob@example.org", "carol@example.org"]


def newsletter(n: int, to: str | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Alice's Tea Shop <alice@example.com>"
    message["To"] = to or SUBSCRIBERS[n % len(SUBSCRIBERS)]
    message["Subject"] = f"Tea news ({n})"
    message.set_content(".a line that starts with a dot\n")  # dot-stuffed on the way
    return message


def destination(lab: Lab) -> Destination:
    return Destination(lab.resolver.resolve(MX, "A")[0].address, lab.server(MX).port)


def subjects(lab: Lab) -> list[str]:
    return sorted(m.subject for address in SUBSCRIBERS for m in lab.mailbox(address))


def test_pipelining_waits_once_per_message_and_delivers_every_one(lab: Lab) -> None:
    batch = [newsletter(n) for n in range(3)]
    sent = asyncio.run(pipelined(destination(lab), batch))
    assert sent.round_trips == 3 + 3  # greeting, EHLO, first envelope; one per message
    assert [str(r) for r in sent.rounds] == [
        "(connect)                    → 220",
        "EHLO                         → 250",
        "MAIL RCPT DATA               → 250 250 354",
        "message MAIL RCPT DATA       → 250 250 250 354",
        "message MAIL RCPT DATA       → 250 250 250 354",
        "message QUIT                 → 250 221",
    ]
    assert subjects(lab) == [m["Subject"] for m in batch]
    assert all(m.body.startswith(".a line") for m in lab.mailbox("bob@example.org"))


def test_pipelining_sends_one_rcpt_per_recipient(lab: Lab) -> None:
    both = newsletter(0, to=", ".join(SUBSCRIBERS))
    sent = asyncio.run(pipelined(destination(lab), [both]))
    assert str(sent.rounds[2]) == "MAIL RCPT RCPT DATA          → 250 250 250 354"
    assert subjects(lab) == ["Tea news (0)", "Tea news (0)"]


def test_smtplib_ways_count_every_reply_they_wait_for(lab: Lab) -> None:
    to = destination(lab)
    batch = [newsletter(n) for n in range(4)]
    each = connection_per_message(to, batch[:2])
    assert each.round_trips == 2 * 7  # greeting, EHLO, MAIL, RCPT, DATA, message, QUIT
    assert [" ".join(r.sent) or "-" for r in each.rounds] == [
        "-",
        "EHLO",
        "MAIL",
        "RCPT",
        "DATA",
        "message",
        "QUIT",
    ]
    assert one_connection(to, batch[:3]).round_trips == 3 * 4 + 3
    side_by_side = concurrently(to, batch, connections=2)
    assert side_by_side.round_trips == 2 * 4 + 3  # the clock sees one connection's waits
    assert side_by_side.round_trips_per_message == pytest.approx(11 / 4)
    assert len(subjects(lab)) == 2 + 3 + 4


def test_no_pipelining_unless_the_server_offers_it(lab: Lab) -> None:
    lab.server(MX).disable("PIPELINING")
    with pytest.raises(PipeliningError, match="does not offer PIPELINING"):
        asyncio.run(pipelined(destination(lab), [newsletter(0)]))
    (transcript,) = lab.transcripts(MX, at_least=1)
    assert "MAIL FROM" not in str(transcript)  # nothing was sent on trust


def test_an_unexpected_reply_stops_the_client(lab: Lab) -> None:
    lab.server(MX).fail("RCPT", "450 4.7.1 Rate limit exceeded, try again later")
    with pytest.raises(PipeliningError, match=r"message 0: expected \[250, 250, 354\]"):
        asyncio.run(pipelined(destination(lab), [newsletter(0)]))


def test_a_multi_line_reply_is_not_held_back_by_delayed_acks(lab: Lab) -> None:
    """The server's lines go out as written (TCP_NODELAY, as asyncio sets by default).

    Without it, Nagle's algorithm holds every line after the first until the client
    acknowledges it, and a client delays that acknowledgement (40 ms on Linux): every
    EHLO, and every pipelined group's replies, would wait that long on loopback.
    """
    spreads = []
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", lab.server(MX).port), timeout=10) as sock:
            lines = sock.makefile("rb")
            lines.readline()  # the greeting
            sock.sendall(b"EHLO shop.example.com\r\n")
            first = lines.readline()
            began = time.monotonic()
            line = first
            while line[3:4] == b"-":
                line = lines.readline()
            spreads.append(time.monotonic() - began)
    assert min(spreads) < 0.020, spreads
