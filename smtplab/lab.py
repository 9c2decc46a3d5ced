"""The Lab: a miniature mail world running in this process, on loopback.

Theory of operation
-------------------
``Lab()`` reads a :class:`~smtplab.world.World` (the default one unless given),
starts a recording aiosmtpd server for each of its hosts on 127.0.0.1, and
keeps every connection's bytes in a :class:`~smtplab.journal.WireJournal`.
``lab.send(...)`` is a real SMTP client connection; its result carries the
transcript and the server's answer for every recipient.

A notebook cell that creates a lab may run many times: a new lab stops the
previous lab of the same ``name`` first, so no old server keeps a port or a
thread. Labs with different names live side by side (every port is chosen by
the OS). Everything is stopped, and the lab's folder removed, when the process
exits.
"""

from __future__ import annotations

import atexit
import html
import itertools
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any

from smtplab.client import Outcome, RecordingClient, transact
from smtplab.clock import LabClock
from smtplab.compose import InvalidInput, address_list, build_message, check_address
from smtplab.handlers import MailboxHandler, domain_of
from smtplab.journal import WireJournal
from smtplab.maildir import Mailbox, Maildir
from smtplab.server import LOOPBACK, LabController
from smtplab.transcript import Transcript
from smtplab.wire import WireLog
from smtplab.world import ServerSpec, World, default_world

MAX_MESSAGE_SIZE = 10 * 1024 * 1024
SESSION_TIMEOUT = 60.0

_running: dict[str, Lab] = {}
_running_lock = threading.Lock()


@dataclass
class LabServer:
    """A running lab server: its spec, where it listens, and its controller."""

    spec: ServerSpec
    controller: LabController

    @property
    def host(self) -> str:
        return self.spec.host

    @property
    def role(self) -> str:
        return self.spec.role

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def describe(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "host": self.host,
            "address": LOOPBACK,
            "port": self.port,
            "domains": list(self.spec.domains),
        }


@dataclass(frozen=True)
class SendResult:
    """What happened when the lab's client sent one message."""

    sender: str
    recipients: tuple[str, ...]
    server: str
    message_id: str
    outcomes: tuple[Outcome, ...]
    transcript: Transcript
    wire: WireLog = field(repr=False)
    journal: WireJournal = field(repr=False)

    @property
    def ok(self) -> bool:
        """True when every recipient was accepted."""
        return all(o.accepted for o in self.outcomes)

    @property
    def accepted(self) -> list[str]:
        return [o.recipient for o in self.outcomes if o.accepted]

    @property
    def refused(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.accepted]

    def server_view(self, timeout: float = 10.0) -> Transcript:
        """The same connection as the server recorded it (waits for it to close)."""
        log = self.journal.wait_for(
            lambda w: w.view == "server" and w.peer == self.wire.peer and w.server == self.server,
            timeout,
        )
        return log.transcript()

    def summary(self) -> str:
        return "\n".join(str(o) for o in self.outcomes)

    def __str__(self) -> str:
        return f"{self.summary()}\n\n{self.transcript}"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<li>{'✅' if o.accepted else '❌'} {html.escape(str(o))}</li>" for o in self.outcomes
        )
        return f"<ul>{rows}</ul>{self.transcript._repr_html_()}"


class Lab:
    """A running mail world. Use ``with Lab() as lab:`` or call :meth:`stop`."""

    def __init__(self, world: World | None = None, *, name: str = "lab"):
        with _running_lock:
            previous = _running.pop(name, None)
        if previous is not None:
            previous.stop()
        self.name = name
        self.world = world or default_world()
        self.clock = LabClock()
        self.journal = WireJournal()
        self._folder = tempfile.TemporaryDirectory(prefix=f"smtplab-{name}-")
        self.root = Path(self._folder.name)
        self.maildirs = {
            user.address: Maildir(self.root / "mail" / user.address) for user in self.world.users
        }
        self._message_ids = itertools.count(1)
        self.servers: dict[str, LabServer] = {}
        self._stopped = False
        try:
            for spec in self.world.servers:
                self.servers[spec.host] = self._start(spec)
        except BaseException:
            self.stop()
            raise
        with _running_lock:
            _running[name] = self

    # -- building ------------------------------------------------------------
    def _start(self, spec: ServerSpec) -> LabServer:
        handler = MailboxHandler(
            spec.host,
            set(spec.domains),
            {a: m for a, m in self.maildirs.items() if domain_of(a) in spec.domains},
            self.clock,
        )
        controller = LabController(
            handler,
            host_name=spec.host,
            journal=self.journal,
            enable_SMTPUTF8=True,
            data_size_limit=MAX_MESSAGE_SIZE,
            timeout=SESSION_TIMEOUT,
        )
        controller.start()
        return LabServer(spec, controller)

    # -- using -----------------------------------------------------------------
    def server(self, host: str) -> LabServer:
        try:
            return self.servers[host]
        except KeyError:
            raise KeyError(f"no lab server named {host!r}; have {sorted(self.servers)}") from None

    def default_route(self, recipients: list[str]) -> str:
        """Where a message goes without ``via``: the best MX of the first recipient's domain."""
        domain = self.world.domain(domain_of(recipients[0]))
        if domain is None or not domain.mx:
            raise InvalidInput("to", f"{recipients[0]!r} is not in a lab domain; pass via=")
        return min(domain.mx)[1]

    def send(
        self,
        sender: str,
        recipients: str | Iterable[str],
        subject: str = "",
        body: str = "",
        *,
        cc: str | Iterable[str] = (),
        bcc: str | Iterable[str] = (),
        via: str | None = None,
        message: EmailMessage | bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> SendResult:
        """Send one message over a real SMTP connection and return what happened.

        ``recipients`` (To), ``cc`` and ``bcc`` all go into the envelope; only To
        and Cc become headers. ``via`` names the lab server to connect to.
        ``message`` replaces the built message (an EmailMessage or raw bytes).
        """
        sender = check_address("from", sender)
        to, cc_list, bcc_list = (
            address_list("to", recipients),
            address_list("cc", cc),
            address_list("bcc", bcc),
        )
        envelope = to + cc_list + bcc_list
        if not envelope:
            raise InvalidInput("to", "at least one recipient is required")
        host = via or self.default_route(envelope)
        server = self.server(host)
        message_id = f"<{next(self._message_ids):04d}.{self.name}@{domain_of(sender)}>"
        if message is None:
            message = build_message(
                sender,
                to,
                cc_list,
                subject,
                body,
                date=self.clock.rfc5322(),
                message_id=message_id,
                headers=headers,
            )
        raw = message if isinstance(message, bytes) else message.as_bytes(policy=SMTP_POLICY)
        client = RecordingClient(host, client_name=self.world.client_host, journal=self.journal)
        client.connect(LOOPBACK, server.port)
        outcomes = transact(client, sender, envelope, raw)
        assert client.wire is not None
        return SendResult(
            sender=sender,
            recipients=tuple(envelope),
            server=host,
            message_id=message_id,
            outcomes=tuple(outcomes),
            transcript=client.wire.transcript(),
            wire=client.wire,
            journal=self.journal,
        )

    def mailbox(self, address: str) -> Mailbox:
        """The messages delivered to a lab user so far, oldest first."""
        address = address.lower()
        if address not in self.maildirs:
            raise KeyError(f"{address!r} is not a lab user; have {sorted(self.maildirs)}")
        return Mailbox(address, self.maildirs[address])

    def transcripts(self, server: str | None = None) -> list[Transcript]:
        """Finished connections as the lab's servers recorded them, oldest first."""
        return [
            log.transcript()
            for log in self.journal.logs()
            if log.view == "server" and log.closed.is_set() and server in (None, log.server)
        ]

    def describe(self) -> dict[str, Any]:
        """The lab as data: the contract behind ``smtplab up --json`` (only add keys)."""
        return {
            "name": self.name,
            "servers": [s.describe() for s in self.servers.values()],
            "users": [
                {
                    "address": u.address,
                    "password": u.password,
                    "maildir": str(self.maildirs[u.address].path),
                }
                for u in self.world.users
            ],
        }

    def table(self, *, ports: bool = True) -> str:
        """A plain-text table of servers. Notebooks leave out ports: they change every run."""
        rows = [f"{'role':<12}{'host':<20}{'domains':<14}{'listens on' if ports else ''}".rstrip()]
        for s in self.servers.values():
            where = f"{LOOPBACK}:{s.port}" if ports else ""
            rows.append(f"{s.role:<12}{s.host:<20}{' '.join(s.spec.domains):<14}{where}".rstrip())
        rows += ["", "users: " + ", ".join(u.address for u in self.world.users)]
        return "\n".join(rows)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(f"{self!r}\n{self.table(ports=False)}")

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{s.role}</td><td>{s.host}</td><td>{' '.join(s.spec.domains)}</td></tr>"
            for s in self.servers.values()
        )
        users = ", ".join(html.escape(u.address) for u in self.world.users)
        return (
            f"<b>{html.escape(repr(self))}</b><table><tr><th>role</th><th>host</th>"
            f"<th>domains</th></tr>{rows}</table>users: {users}"
        )

    # -- lifecycle ---------------------------------------------------------------
    def stop(self) -> None:
        """Stop every server and remove the lab's folder. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        for server in self.servers.values():
            server.controller.stop()
        self.servers.clear()
        with _running_lock:
            if _running.get(self.name) is self:
                del _running[self.name]
        self._folder.cleanup()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else f"{len(self.servers)} servers"
        return f"<Lab {self.name!r}: {state}>"


@atexit.register
def _stop_all() -> None:
    with _running_lock:
        labs = list(_running.values())
    for lab in labs:
        lab.stop()
