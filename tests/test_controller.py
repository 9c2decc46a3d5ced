"""LabController (smtplab/smtp/controller.py): the readiness probe is told by its socket.

aiosmtpd's controller opens one connection of its own on start, to see the server
answer. After ``LabServer.down()`` and ``up()`` the port is the old one on purpose,
and a queue retrying it may connect before that probe does (issue 15 item 8).
"""

from __future__ import annotations

from smtp_peers import Raw

from smtplab.protocol.clock import LabClock
from smtplab.record.recordings import WireJournal
from smtplab.smtp.controller import LabController
from smtplab.smtp.faults import Faults
from smtplab.smtp.handlers import RoleHandler

HOST = "mx.example.org"


class ClientBeforeProbe(LabController):
    """A controller whose readiness probe comes after a client has had its session."""

    def _trigger_server(self) -> None:
        client = Raw(self.port)
        self.greeting = client.last()
        client.send(b"NOOP\r\n")
        self.noop_reply = client.last()
        client.send(b"QUIT\r\n")
        client.last()
        client.close()
        super()._trigger_server()


def test_a_client_that_connects_before_the_readiness_probe_is_recorded_and_meets_the_faults():
    """Before: the first connection was taken for the probe, whatever it was: the client's
    session went unrecorded and past the fault rules, and the probe was recorded instead."""
    journal, faults = WireJournal(), Faults()
    faults.add("NOOP", "451 4.3.0 Try again later", times=None)
    handler = RoleHandler(HOST, LabClock())
    controller = ClientBeforeProbe(handler, host_name=HOST, journal=journal, faults=faults)
    controller.start()
    controller.stop()
    assert controller.greeting.startswith("220 "), controller.greeting
    assert controller.noop_reply == "451 Try again later", "the fault rule was bypassed"
    recorded = [log.transcript().to_text() for log in journal.logs()]
    assert len(recorded) == 1, recorded  # the client's session; never the probe's
    assert "NOOP" in recorded[0], recorded[0]


def test_the_readiness_probe_alone_is_never_recorded():
    journal = WireJournal()
    controller = LabController(RoleHandler(HOST, LabClock()), host_name=HOST, journal=journal)
    controller.start()
    controller.stop()
    assert journal.logs() == []
