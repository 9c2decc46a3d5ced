"""LabController (smtplab/smtp/controller.py): how the lab's servers start, cap and stop.

Starting: aiosmtpd's controller opens one connection of its own on start, to see the
server answer. After ``LabServer.down()`` and ``up()`` the port is the old one on purpose,
and a queue retrying it may connect before that probe does (issue 15 item 8), so the probe
is told by its socket. Connections over the cap get 421. Stopping, whatever the sessions
are doing: every connection is hung up on, every port freed, within a deadline, and
nothing is printed afterwards. docs/hardening.md lists every case with its test id.
"""

from __future__ import annotations

import socket
import ssl
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from peers.smtp import (
    FAST,
    RECIPIENT,
    ROLES,
    SENDER,
    Raw,
    begin_data,
    connect,
    greeted,
    ready,
    wait_until,
)

from smtplab import Lab
from smtplab.protocol.clock import LabClock
from smtplab.record.recordings import Recordings
from smtplab.roles.handlers import RoleHandler
from smtplab.smtp import controller as lab_server
from smtplab.smtp.controller import LabController
from smtplab.smtp.faults import Faults
from smtplab.world import LOOPBACK

pytestmark = [pytest.mark.lab(retry=FAST), pytest.mark.hardening]
TESTS = Path(__file__).parent


# -- connections ----------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_one_connection_over_the_cap_gets_421_4_7_0(lab, role):
    """RFC 5321 §3.8 and §4.2.2 (421 instead of the banner), RFC 3463 4.7.0; slots free up."""
    host = ROLES[role]
    lab.server(host).reconfigure(max_connections=2)
    first, second = greeted(lab, role), greeted(lab, role)
    extra = connect(lab, role)
    assert extra.last().startswith(f"421 4.7.0 {host} ")
    assert extra.is_closed()
    first.send(b"QUIT\r\n")
    assert first.code() == 221
    first.close()
    extra.close()
    lab.transcripts(host, at_least=2)  # the server has let both go
    again = greeted(lab, role)
    second.send(b"NOOP\r\n")
    again.send(b"NOOP\r\n")
    assert second.code() == again.code() == 250
    for client in (first, second, again, extra):
        client.close()


# -- stopping -------------------------------------------------------------------------------------
def after_quit(lab: Lab, role: str) -> Raw:
    """A TLS session that said QUIT and got 221, whose client never sends its close_notify."""
    client = ready(lab, role)
    client.send(b"QUIT\r\n")
    assert client.code() == 221
    return client


def half_a_client_hello(client: Raw, lab: Lab, host: str) -> Raw:
    """Send the first half of a real TLS ClientHello, so the server waits in the handshake."""
    outgoing = ssl.MemoryBIO()
    tls = lab.ca.client_context().wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=host)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    client.send(hello[: len(hello) // 2])
    return client


def mid_starttls(lab: Lab) -> Raw:
    client = greeted(lab, "submission")
    client.send(b"STARTTLS\r\n")
    assert client.code() == 220
    return half_a_client_hello(client, lab, ROLES["submission"])


def in_flight(lab: Lab) -> Raw:
    """Pipelined commands, and the greeting, still on their way (LabServer.slow_down)."""
    lab.server(ROLES["mx"]).slow_down(60)
    client = connect(lab, "mx")
    client.send(
        f"EHLO client.example.net\r\nMAIL FROM:<{SENDER}>\r\nRCPT TO:<{RECIPIENT}>\r\n"
        "DATA\r\n".encode()
    )
    return client


def queue_mid_attempt(lab: Lab) -> Raw:
    """The submission queue waiting for the greeting of an MX a minute away, which its
    client would give 10 s per MX host; and a client of ours waiting alongside it."""
    for host in ("mx1.example.org", "mx2.example.org"):
        lab.server(host).slow_down(60)
    assert lab.send(SENDER, RECIPIENT, "Slow", "x").ok  # queued; the queue starts on it
    wait_until(
        lambda: any(log.server == ROLES["mx"] for log in lab.journal.logs()),
        what="the queue connected to the MX",
    )
    return connect(lab, "mx")


def silent_in_data(lab: Lab) -> Raw:
    """A client that vanished in the middle of its message, without closing."""
    client = ready(lab, "submission")
    begin_data(client)
    client.send(b"Subject: gone\r\n\r\nhalf a mess")
    return client


#: Session states a stopping lab must hang up on; the first one hung Lab.stop() forever on
#: Python 3.11.2 and took 30 s on 3.12 (the client's close_notify, never sent, was awaited).
STOP_STATES = {
    "starttls-after-quit": lambda lab: after_quit(lab, "submission"),
    "implicit-tls-after-quit": lambda lab: after_quit(lab, "submissions"),
    "mid-starttls-handshake": mid_starttls,
    "mid-implicit-tls-handshake": lambda lab: half_a_client_hello(
        Raw(lab.server(ROLES["submissions"]).port), lab, ROLES["submissions"]
    ),
    "pipelined-in-flight": in_flight,
    "silent-in-data": silent_in_data,
    "queue-mid-attempt": queue_mid_attempt,
}


def returns_within(seconds: float, call: Any) -> bool:
    """Run ``call`` in a thread: False if it has not returned after ``seconds``; its
    exception (a warning, where warnings are errors) is raised here."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as error:
            outcome.append(error)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if not outcome:
        return False
    if outcome[0] is not None:
        raise outcome[0]
    return True


@pytest.mark.parametrize("how", ["stop", "rerun"])
@pytest.mark.parametrize("state", STOP_STATES)
def test_a_lab_stops_within_its_deadline_whatever_its_sessions_are_doing(state, how):
    """A stop (or a kernel re-running ``Lab(name=...)``, which stops the lab of that name)
    hangs up on every connection and returns before its deadline, without giving up."""
    lab = Lab(name=f"hardening-stop-{state}", retry=FAST)
    ports = [server.port for server in lab.servers.values()]
    client = STOP_STATES[state](lab)
    stop = lab.stop if how == "stop" else lambda: Lab(name=lab.name).stop()
    assert returns_within(lab_server.STOP_DEADLINE + 10, stop), "the stop hung"
    assert repr(lab) == f"<Lab {lab.name!r}: stopped>"
    assert client.dropped(), "the server left the connection open"
    for port in ports:  # every port is free: a new server can listen on it
        socket.create_server((LOOPBACK, port)).close()


def test_a_server_that_cannot_stop_gives_up_after_its_deadline_says_so_and_frees_its_port(
    lab, monkeypatch
):
    """A loop that never ends (here: wedged by a callback that blocks it) costs a stop
    STOP_DEADLINE seconds, a RuntimeWarning, and its thread; the port is free at once."""
    monkeypatch.setattr(lab_server, "STOP_DEADLINE", 0.5)
    server = lab.server(ROLES["mx"])
    stuck, wedged, release = server.controller, threading.Event(), threading.Event()
    assert stuck is not None
    stuck.loop.call_soon_threadsafe(lambda: (wedged.set(), release.wait()))
    assert wedged.wait(10)
    try:
        with pytest.warns(
            RuntimeWarning,
            match=r"^mx1\.example\.org: the server did not stop "
            r"within 0\.5 s; its port \d+ is free, its thread left behind$",
        ):
            server.down()
        server.up()  # on the same port, which nothing listens on any more
        client = greeted(lab, "mx")
        client.send(b"QUIT\r\n")
        assert client.code() == 221
    finally:
        release.set()
    wait_until(stuck.loop.is_closed, what="the abandoned loop ends once it can")


def reset(client: Raw) -> None:
    """Close with a TCP reset, as a client does that closes with data still unread."""
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def test_a_client_that_resets_leaves_no_error_for_asyncio_to_report(lab):
    """The reset reaches the session as ConnectionResetError, which asyncio keeps in a
    future nobody awaits: read at once, it cannot print "Future exception was never
    retrieved" later, whichever the garbage collector finalizes first."""
    host = ROLES["submission"]
    reset(after_quit(lab, "submission"))
    lab.transcripts(host, at_least=1)  # the server has seen the connection go
    session = lab.server(host).controller.smtpd  # the last session it made: that one
    assert not session._closed._log_traceback  # read already: nothing left to report
    assert isinstance(session._closed.exception(), ConnectionResetError)


STOPPING_AT_EXIT = """
import sys
sys.path.insert(0, sys.argv[1])
from peers.smtp import close_all
from test_controller import STOP_STATES, after_quit, reset
from smtplab import Lab

for state in STOP_STATES:
    lab = Lab(name="at-exit")
    STOP_STATES[state](lab)
    reset(after_quit(lab, "submissions"))
    lab.stop()
    close_all()
"""


def test_stopping_labs_in_every_state_prints_nothing_up_to_the_exit():
    """The same states, in a process of their own, print nothing: no "Exception in
    callback" (a hang-up that failed), no "Future exception was never retrieved" (at
    exit), no ResourceWarning (a socket left open); and the process does not hang."""
    done = subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-c", STOPPING_AT_EXIT, str(TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=TESTS.parent,
    )
    assert (done.returncode, done.stderr) == (0, "")


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
    journal, faults = Recordings(), Faults()
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
    journal = Recordings()
    controller = LabController(RoleHandler(HOST, LabClock()), host_name=HOST, journal=journal)
    controller.start()
    controller.stop()
    assert journal.logs() == []
