"""One transaction with a next hop for a queue entry's recipients, over a kept session.

The delivery worker hands :meth:`Sessions.transfer` an entry, a host and the
recipients still waiting. It connects with the recording client (so every hop
has a transcript), says EHLO, and runs one transaction; the next hop's
extensions decide what goes with the message: to one that offers DSN, the
sender's RET, ENVID, NOTIFY and ORCPT (RFC 3461 §5.2.1).

When more mail for the same domain is already queued, the session stays open for
the next message (RFC 5321 §4.1.4 allows many transactions per session) and each
envelope is pipelined (MAIL, RCPT, DATA in one write, RFC 2920) when the next hop
offers it, as Postfix does under load. Otherwise the client talks one command at
a time and says QUIT before the outcome is reported, so a single message's hop
always reads as the chapters teach it.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from smtplab.protocol.dsn_params import MailDSN, RcptDSN, Ret, mail_params, rcpt_params
from smtplab.queue.settle import Handoff
from smtplab.queue.spool import QueuedRecipient, QueueEntry
from smtplab.record.recordings import Recordings
from smtplab.record.wirelog import WireLog
from smtplab.smtp.client import Outcome, RecordingClient, quit_quietly, transact, wire_order


@dataclass(frozen=True)
class Transfer:
    """What one transaction gave: each recipient's handoff, the text of its journey step
    (``→ host: 250 MAIL; 250 RCPT; ...``) and the connection's recording."""

    handoffs: dict[str, Handoff]
    text: str
    wire: WireLog | None = None


class Sessions:
    """The SMTP sessions of the queue on ``client_name``: at most one kept open."""

    def __init__(
        self,
        client_name: str,
        journal: Recordings,
        *,
        more_for: Callable[[str], bool],
        open_client: Callable[[RecordingClient], None],
        source_address: str | None,
    ):
        self.client_name = client_name
        self.journal = journal
        #: Is more mail queued for this domain? Then the session is kept and pipelined.
        self.more_for = more_for
        self.open_client = open_client
        #: The loopback address this host's connections come from (chapter 09: SPF).
        self.source_address = source_address
        self._open: tuple[str, str, RecordingClient] | None = None  # (domain, host, session)

    def close(self) -> None:
        """Say QUIT on the session kept open, if any."""
        if self._open is not None:
            quit_quietly(self._open[2])
            self._open = None

    def transfer(
        self,
        entry: QueueEntry,
        host: str,
        port: int,
        message: bytes,
        recipients: list[QueuedRecipient],
    ) -> Transfer:
        """One transaction with ``host`` for ``recipients``, each outcome with its host."""
        addresses = [r.address for r in recipients]
        try:
            client = self._session(entry, host, port)
        except (OSError, smtplib.SMTPException) as error:
            why = getattr(error, "strerror", None) or type(error).__name__  # the same on any OS
            failed = {
                a: Handoff(Outcome(a, None, f"connection failed: {why}", "connection"))
                for a in addresses
            }
            return Transfer(failed, f"→ {host}: --- connection")
        # RFC 3461 §5.2.1: to a next hop that offers DSN, the sender's DSN parameters go on
        # as they came (§5.2.2 otherwise: this queue reports "relayed" itself).
        dsn = client.has_extn("dsn")
        mail_options = mail_params(MailDSN(cast(Ret | None, entry.ret), entry.envid)) if dsn else []
        rcpt_options = {
            r.address: rcpt_params(RcptDSN(frozenset(r.notify), r.orcpt)) for r in recipients
        }
        busy = self.more_for(entry.domain)  # under load: pipeline, keep the session
        try:
            outcomes = transact(
                client,
                entry.sender,
                addresses,
                message,
                mail_options,
                rcpt_options if dsn else (),
                finish=False,
                pipelining=busy,
            )
        except BaseException:
            client.close()  # never leave a session in mid-command
            raise
        if client.sock is not None and self.more_for(entry.domain):
            self._open = (entry.domain, host, client)
        else:
            quit_quietly(client)
        in_wire_order = sorted(outcomes, key=lambda o: wire_order(o.stage))
        summary = "; ".join(dict.fromkeys(f"{o.code or '---'} {o.stage}" for o in in_wire_order))
        handoffs = {
            o.recipient: Handoff(o, host if o.code is not None else None, dsn) for o in outcomes
        }
        return Transfer(handoffs, f"→ {host}: {summary}", client.wire)

    def _session(self, entry: QueueEntry, host: str, port: int) -> RecordingClient:
        """The open session to ``host`` for this domain, or a new connection (after EHLO)."""
        if self._open is not None and self._open[:2] == (entry.domain, host):
            client = self._open[2]
            self._open = None
            if client.sock is not None:
                return client
        self.close()
        client = RecordingClient(host, client_name=self.client_name, journal=self.journal)
        if self.source_address is not None:  # smtplib binds the socket to it
            client.source_address = (self.source_address, 0)
        try:
            client.connect(host, port)
            self.open_client(client)
            client.ehlo_or_helo_if_needed()  # its extensions decide the parameters
        except (OSError, smtplib.SMTPException):
            client.close()
            raise
        return client
