"""A mail program submitting one message: the client flow ``lab.send`` and ``smtplab send``
share.

The server's role (:data:`smtplab.world.ROLES`) decides what the client does before the
transaction: TLS from the first byte on 465 (RFC 8314 §3.3), STARTTLS on 587 (RFC 3207),
AUTH where the server requires it (RFC 4954, RFC 6409 §4.3), none of it on port 25.
Then one transaction (MAIL, RCPT per recipient, DATA) and QUIT; every recipient gets
its own outcome, and the connection's recording is the result's transcript.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from smtplab.record.recordings import Recordings
from smtplab.record.transcript import Transcript
from smtplab.record.wirelog import WireLog
from smtplab.smtp.client import Outcome, RcptOptions, RecordingClient, open_session, transact
from smtplab.world import RoleFacts


@dataclass(frozen=True)
class Submitted:
    """Every recipient's outcome, and the connection as the client recorded it."""

    outcomes: tuple[Outcome, ...]
    wire: WireLog

    @property
    def transcript(self) -> Transcript:
        return self.wire.transcript()


def connect(
    host: str,
    port: int,
    role: RoleFacts,
    *,
    client_name: str,
    context: ssl.SSLContext,
    journal: Recordings | None = None,
) -> RecordingClient:
    """A recording client connected to the lab server ``host`` at 127.0.0.1:``port``,
    with TLS from the first byte where ``role`` has it (``context`` verifies the name)."""
    implicit = context if role.implicit_tls else None
    client = RecordingClient(host, client_name=client_name, journal=journal, implicit_tls=implicit)
    client.connect(host, port)
    return client


def submit(
    client: RecordingClient,
    role: RoleFacts,
    sender: str,
    recipients: list[str],
    message: bytes,
    *,
    context: ssl.SSLContext,
    password_of: Callable[[str], str],
    mail_options: Sequence[str] = (),
    rcpt_options: RcptOptions = (),
) -> Submitted:
    """EHLO, STARTTLS and AUTH (as ``sender``, ``password_of(sender)``) where ``role``
    requires them, then the transaction and QUIT, on a client from :func:`connect`."""
    login = (sender, password_of(sender)) if role.auth_required else None
    starttls = context if role.starttls_required else None
    outcomes = open_session(client, recipients, context=starttls, login=login)
    if outcomes is None:
        outcomes = transact(client, sender, recipients, message, mail_options, rcpt_options)
    assert client.wire is not None  # connected
    return Submitted(tuple(outcomes), client.wire)
