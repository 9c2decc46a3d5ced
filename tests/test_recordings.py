"""The recordings registry (smtplab/record/recordings.py) keeps its recordings under one
byte budget, oldest dropped first, however much garbage clients send.
docs/hardening.md lists the case with its test id.
"""

from __future__ import annotations

import socket
import threading

import pytest
from peers.memory import rss_bytes
from peers.smtp import wait_until

from smtplab import Lab

pytestmark = pytest.mark.hardening


# -- memory: the recordings ------------------------------------------------------------------------
GARBAGE_CONNECTIONS = 2000
GARBAGE_BYTES = 256 << 10
RECORDING_BUDGET = 16 << 20


def garbage_client(port: int, count: int, errors: list[BaseException]) -> None:
    """``count`` unauthenticated connections, each sending one long line of garbage."""
    line = b"x" * GARBAGE_BYTES + b"\r\n"
    try:
        for _ in range(count):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.recv(512)  # the banner
                sock.sendall(line)
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):  # 500 5.5.2, then the server closes on our EOF
                    pass
    except BaseException as error:
        errors.append(error)


@pytest.mark.slow
def test_garbage_connections_keep_the_recordings_under_their_byte_budget():
    """2000 unauthenticated connections of 256 KiB garbage each (512 MiB in all) to a real MX:
    the journal's recordings stay under its byte budget (oldest dropped first, each with a
    note in its transcript), and so does the process's memory, roughly. The count bound
    (2000 connections) alone would have kept all 512 MiB."""
    with Lab(name="garbage") as lab:
        lab.journal.max_bytes = RECORDING_BUDGET
        port = lab.server("mx1.example.org").port
        rss_before = rss_bytes()
        errors: list[BaseException] = []
        workers = [
            threading.Thread(target=garbage_client, args=(port, GARBAGE_CONNECTIONS // 8, errors))
            for _ in range(8)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(300)
        assert errors == [] and not any(worker.is_alive() for worker in workers)
        lab.transcripts("mx1.example.org", at_least=1)
        wait_until(lambda: all(log.closed.is_set() for log in lab.journal.logs()), 30)
        growth = rss_bytes() - rss_before
        recorded = sum(len(p) for log in lab.journal.logs() for _, _, p in log.chunks)
        retained = lab.journal.retained_bytes
        print(
            f"\nrecorded {recorded >> 20} MiB (accounted {retained >> 20} MiB),"
            f" RSS +{growth >> 20} MiB"
        )
        assert recorded <= retained <= RECORDING_BUDGET
        assert growth < 8 * RECORDING_BUDGET, f"RSS grew by {growth >> 20} MiB"
        oldest = lab.transcripts("mx1.example.org")[0].to_text()
        assert "recorded bytes of this connection were dropped: the lab keeps 16 MiB" in oldest
        newest = lab.transcripts("mx1.example.org")[-1].to_text()
        assert "<-  500 Command line too long" in newest  # the recent ones are whole
