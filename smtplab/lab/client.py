"""The world's client host (``client.example.com``): the mail program behind ``lab.send``,
``lab.talk`` and ``lab.fetch``.

It connects to a lab server by name, through the router (so a wiretap in front of the
server hears it), and records every connection in the lab's journal. A message it sends
opens a journey: the ``submitted`` step, then each recipient's refusal, or its final
delivery when the server it talked to stores mail itself (a submission server's or a
relay's queue reports from there on).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

from smtplab.lab.accounts import Accounts
from smtplab.lab.assembly import Parts
from smtplab.lab.outgoing import Outgoing
from smtplab.lab.routing import Router
from smtplab.lab.sendresult import SendResult
from smtplab.lab.server import LabServer
from smtplab.lab.submit import connect, submit
from smtplab.mailstore.dovecot import Dovecot
from smtplab.mailstore.retrieval import FetchResult, Protocol, TLSMode, fetch_mailbox
from smtplab.record.journey import Step
from smtplab.smtp.client import RecordingClient
from smtplab.world import ROLES, mailstore_role


class LabClient:
    """The lab's mail program, named ``client_host``; the parts' ``client_tls`` verifies the
    lab's certificates on every SMTP connection."""

    def __init__(
        self,
        client_host: str,
        servers: Mapping[str, LabServer],
        router: Router,
        accounts: Accounts,
        parts: Parts,
    ):
        self.client_host = client_host
        self.servers = servers
        self.router = router
        self.accounts = accounts
        self.journal = parts.journal
        self.journeys = parts.journeys
        self.context = parts.client_tls

    def connect(self, host: str) -> RecordingClient:
        """A recorded connection to the lab server ``host`` (or to its wiretap)."""
        return connect(
            host,
            self.router.reach(host),
            ROLES[self.servers[host].role],
            client_name=self.client_host,
            context=self.context,
            journal=self.journal,
        )

    def send(self, out: Outgoing, password: str | None) -> SendResult:
        """Submit ``out`` to its server, logging in with ``password`` or the sender's lab
        password where the server's role requires AUTH."""
        host, envelope = out.host, out.envelope
        journey = self.journeys.open(out.message_id, tuple(envelope))
        client = self.connect(host)
        assert client.wire is not None
        journey.add(Step("submitted", self.client_host, f"→ {host}", tuple(envelope), client.wire))
        role = ROLES[self.servers[host].role]
        submitted = submit(
            client,
            role,
            out.sender,
            envelope,
            out.raw,
            context=self.context,
            password_of=lambda address: password or self.accounts.password(address),
            mail_options=out.mail_options,
            rcpt_options=out.rcpt_options,
        )
        for outcome in submitted.outcomes:
            if not outcome.accepted:
                journey.add(
                    Step("refused", host, f"{outcome.code} {outcome.text}", (outcome.recipient,))
                )
            elif role.final_delivery:  # a relay's or submission server's queue reports on
                journey.add(Step("delivered", host, "stored in the mailbox", (outcome.recipient,)))
        return SendResult(
            sender=out.sender,
            recipients=tuple(envelope),
            server=host,
            message_id=out.message_id,
            outcomes=submitted.outcomes,
            transcript=submitted.transcript,
            journey=journey,
            wire=submitted.wire,
            journal=self.journal,
        )

    def fetch(
        self,
        mailstore: Dovecot | None,
        unavailable: str | None,
        address: str,
        protocol: Protocol,
        *,
        password: str | None,
        tls: TLSMode,
        delete: bool,
        context: ssl.SSLContext,
    ) -> FetchResult:
        """Read ``address``'s inbox from ``mailstore``'s listener for ``protocol`` and
        ``tls``, as a mail program does (see :meth:`smtplab.lab.Lab.fetch`); without a
        mailstore, a RuntimeError saying why there is none (``unavailable``)."""
        if mailstore is None:
            raise RuntimeError(
                f"POP3/IMAP are not running ({unavailable}); start the lab with Lab(retrieval=True)"
            )
        if protocol not in ("imap", "pop3"):
            raise ValueError(f"protocol must be 'imap' or 'pop3', not {protocol!r}")
        listener = mailstore.listeners[mailstore_role(protocol, implicit_tls=tls == "implicit")]
        return fetch_mailbox(
            listener.host,
            listener.port,
            address.lower(),
            password if password is not None else self.accounts.password(address),
            protocol=protocol,
            tls=tls,
            context=context,
            client_name=self.client_host,
            delete=delete,
        )
