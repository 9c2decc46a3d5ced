"""The lab talks to a real MTA: Postfix relays into the lab, the lab relays into smtp-sink.

Both tests use tests/peers/postfix.py: a private Postfix instance (its own main.cf,
queue and log in a temporary folder, listening on 127.0.0.1 only, never using
DNS) and Postfix's smtp-sink. They need Debian's postfix package and root
(Postfix's daemons drop to the postfix user); otherwise they are skipped.
"""

from __future__ import annotations

import shutil
import smtplib
import tempfile
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from peers import postfix as postfix_peer

from smtplab import Lab


def _unavailable() -> str | None:
    try:
        postfix_peer.postfix_binary()
        postfix_peer.sbin("smtp-sink")
    except postfix_peer.PostfixUnavailable as error:
        return str(error)
    return None


UNAVAILABLE = _unavailable()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=f"needs Postfix: {UNAVAILABLE}"),
]

SINK_HOST = "sink.example.net"
TIMEOUT = 10.0


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A folder Postfix's daemons can reach (pytest's tmp_path sits under a 0700 directory)."""
    folder = Path(tempfile.mkdtemp(prefix="smtplab-interop-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _point_mx_at_sink(lab: Lab, port: int) -> None:
    if "example.net." not in lab.dns.zones():
        lab.dns.add_zone("example.net")  # add_external needs a zone for the host's name
    lab.add_external(SINK_HOST, port)
    lab.dns.replace("example.org", "MX", [f"10 {SINK_HOST}."])


def test_postfix_relays_into_the_lab_mx(scratch: Path) -> None:
    with Lab(name="test-postfix-into-lab") as lab:
        mx_port = lab.server("mx1.example.org").port
        with postfix_peer.PrivatePostfix(
            scratch / "postfix",
            listen_port=postfix_peer.free_port(),
            relay_to=("127.0.0.1", mx_port),
            relay_domains=["example.org"],
        ) as postfix:
            message = EmailMessage()
            message["From"] = "someone@example.net"
            message["To"] = "bob@example.org"
            message["Subject"] = "via Postfix"
            message["Message-ID"] = "<interop.1@example.net>"
            message.set_content("Relayed by a real Postfix.")
            port = postfix.listen_port
            with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example.net") as client:
                client.send_message(message)
            # The lab MX records the connection; it closes once Postfix has its 250.
            lab.journal.wait_for(
                lambda w: (
                    w.view == "server"
                    and w.server == "mx1.example.org"
                    and w.client == postfix_peer.HOSTNAME
                ),
                TIMEOUT,
            )
            assert postfix.wait_empty(time.monotonic() + TIMEOUT), postfix.postqueue()

        stored = [m for m in lab.mailbox("bob@example.org") if m.subject == "via Postfix"]
        assert len(stored) == 1
        received = stored[0].message.get_all("Received")
        assert received is not None and len(received) >= 2
        lab_hop, postfix_hop = received[0], received[1]
        assert "by mx1.example.org (smtplab)" in lab_hop
        assert f"from {postfix_peer.HOSTNAME}" in lab_hop
        assert f"by {postfix_peer.HOSTNAME} (Postfix)" in postfix_hop
        assert "from client.example.net" in postfix_hop
        assert stored[0].message["Message-ID"] == "<interop.1@example.net>"


def test_lab_queue_relays_into_smtp_sink(scratch: Path) -> None:
    with postfix_peer.SmtpSink(scratch / "sink") as sink, Lab(name="test-lab-into-sink") as lab:
        _point_mx_at_sink(lab, sink.port)
        result = lab.send("alice@example.com", "bob@example.org", "To the sink", "Hello smtp-sink")
        assert result.ok, result.summary()
        lab.settle(timeout=TIMEOUT)
        journey = result.journey.wait(TIMEOUT)
        relayed = [s for s in journey.steps if s.kind == "relayed"]
        assert len(relayed) == 1, str(journey)
        assert SINK_HOST in relayed[0].text
        assert journey.outcome("bob@example.org") == "relayed"
        assert sink.wait_count(1, time.monotonic() + TIMEOUT)
        assert sink.count == 1
        dump = sink.dumped()
        assert f"Message-ID: {result.message_id}".encode() in dump
        assert b"by smtp.example.com (smtplab)" in dump
        assert b"X-Rcpt-Args: <bob@example.org>" in dump
