"""The Lab: a miniature mail world running in this process, on loopback.

Theory of operation
-------------------
``Lab()`` reads a :class:`~smtplab.world.World` (the default one unless given),
starts a recording aiosmtpd server for each of its hosts on 127.0.0.1, and
keeps every connection's bytes in a :class:`~smtplab.record.recordings.Recordings`.
``lab.send(...)`` is a real SMTP client connection; its result carries the
transcript and the server's answer for every recipient.

A notebook cell that creates a lab may run many times: a new lab stops the
previous lab of the same ``name`` first, so no old server keeps a port or a
thread. Labs with different names live side by side (every port is chosen by
the OS). Everything is stopped, and the lab's folder removed, when the process
exits.

``Lab`` is a facade: each job is a module beside it (:mod:`.assembly` builds the world,
:mod:`.routing` says where mail goes, :mod:`.client` sends with :mod:`.submit`, as
``smtplab send`` does; README, "How it works", lists them all).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import tempfile
from collections.abc import Callable, Iterable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from smtplab.dns.route import Route
from smtplab.dns.server import LabDNSServer, make_resolver
from smtplab.lab import queues, running
from smtplab.lab.accounts import Accounts
from smtplab.lab.assembly import Parts, ensure_free, maildirs, outbound_queue, start_server, zones
from smtplab.lab.client import LabClient
from smtplab.lab.listing import Row, describe, html_table, server_rows, text_table
from smtplab.lab.outgoing import prepare
from smtplab.lab.routing import Router
from smtplab.lab.sendresult import SendResult
from smtplab.lab.server import LabServer
from smtplab.mailstore.dovecot import Dovecot
from smtplab.mailstore.dovecot import for_lab as dovecot_for_lab
from smtplab.mailstore.dovecot_conf import MailstoreUnavailable
from smtplab.mailstore.maildir import Mailbox
from smtplab.mailstore.retrieval import FetchResult, Protocol, TLSMode
from smtplab.paths import RootLock
from smtplab.protocol.clock import LabClock
from smtplab.protocol.rules import domain_of
from smtplab.queue.delivery import DeliveryQueue, RetryPolicy
from smtplab.record.journey import JourneyBook
from smtplab.record.recordings import Recordings
from smtplab.record.transcript import Transcript
from smtplab.senderauth.wiring import LabAuthenticity
from smtplab.smtp.conversation import Conversation
from smtplab.tls.ca import LabCA
from smtplab.tls.eavesdrop import Eavesdropper
from smtplab.world import World, default_world, port_plan

#: Seconds a stopping lab lets its queues finish their delivery attempts (Lab.stop).
QUEUE_GRACE = 1.0
DEFAULT_RETRY = RetryPolicy()


class Lab:
    """A running mail world. Use ``with Lab() as lab:`` or call :meth:`stop`.

    ``root`` keeps the lab's mailboxes and queues in a folder that outlives the
    lab (a restarted lab delivers what its queues still hold); without it they
    live in a temporary folder removed at :meth:`stop`. ``seed`` fixes the
    shuffle of equal-preference MX hosts, so runs are repeatable.
    ``retrieval=True`` also starts POP3 and IMAP (a private Dovecot) for
    :meth:`fetch`; ``"auto"`` starts them only where Dovecot is installed.
    ``authenticity=True`` switches on SPF, DKIM, DMARC and a spam filter
    (chapter 09): see ``lab.auth``, a :class:`~smtplab.senderauth.wiring.LabAuthenticity`.
    ``hold=True`` starts the queues held (see :meth:`hold`). ``port_base``
    gives every server a fixed port (see :func:`~smtplab.world.port_plan`);
    by default the OS picks free ones. ``clock`` dates headers (default: the
    fixed :class:`~smtplab.protocol.clock.LabClock` the chapters need).
    """

    def __init__(
        self,
        world: World | None = None,
        *,
        name: str = "lab",
        root: Path | str | None = None,
        seed: int = 0,
        retry: RetryPolicy = DEFAULT_RETRY,
        retrieval: bool | str = False,
        authenticity: bool = False,
        hold: bool = False,
        port_base: int | None = None,
        clock: LabClock | None = None,
    ):
        running.replace(name)
        self.name = name
        self.world = world or default_world()
        self.clock = clock or LabClock()
        #: Fixed ports by server host, "dns" and POP3/IMAP role; empty: the OS picks.
        self.ports = port_plan(self.world, port_base) if port_base is not None else {}
        ensure_free(self.ports)
        self.journal = Recordings()
        self.journeys = JourneyBook()
        self._folder = None if root else tempfile.TemporaryDirectory(prefix=f"smtplab-{name}-")
        self.root = Path(root or self._folder.name)  # type: ignore[union-attr]
        self._root_lock = RootLock(self.root)  # InvalidInput if another lab uses it
        self._message_ids = itertools.count(1)
        self.servers: dict[str, LabServer] = {}
        self.queues: dict[str, DeliveryQueue] = {}
        self.mailstore: Dovecot | None = None
        self.mailstore_unavailable: str | None = None if retrieval else "not asked for"
        self.auth: LabAuthenticity | None = None
        self._accounts = Accounts(self.world)
        self._stopped = False
        try:
            self.maildirs = maildirs(self.world, self.root)
            self.ca = LabCA(self.root / "tls")
            self.client_tls = self.ca.client_context()  # one context: reused by every client
            self.dns = zones(self.world)
            self.dns_server = LabDNSServer(self.dns, port=self.ports.get("dns", 0)).start()
            self.resolver = make_resolver(self.dns_server.host, self.dns_server.port)
            self.router = Router(self.world, self.dns, self.resolver, self.servers, seed=seed)
            #: Servers the lab did not start, by host: their ports (see add_external).
            self.external = self.router.external
            if authenticity:  # chapter 09: addresses, DKIM keys, SPF/DKIM/DMARC records
                self.auth = LabAuthenticity(self.world, self.dns, self.resolver, self.clock)
            parts = Parts(
                self.root,
                self.maildirs,
                self.journeys,
                self.journal,
                self.clock,
                self.ca,
                self.client_tls,
                self.auth,
                self._accounts.authenticate,
                self.ports,
            )
            client = self.world.client_host
            self._client = LabClient(client, self.servers, self.router, self._accounts, parts)
            for spec in self.world.servers:  # every role sends mail: onward, or its notices
                self.queues[spec.host] = outbound_queue(spec, self.router.hop(), retry, parts)
                self.servers[spec.host] = start_server(spec, self.queues[spec.host], parts)
            for queue in self.queues.values():
                if hold:
                    queue.hold()
                queue.start()
            if retrieval:  # POP3/IMAP (chapter 11): a private Dovecot, see mailstore.dovecot
                try:
                    self.mailstore = dovecot_for_lab(self)
                except MailstoreUnavailable as why:
                    if retrieval != "auto":
                        raise
                    self.mailstore_unavailable = str(why)
        except BaseException:
            self.stop()
            raise
        running.register(name, self)

    def add_external(self, host: str, port: int) -> None:
        """Make a server the lab did not start (Postfix, smtp-sink) reachable as ``host``.

        The lab DNS gets an A record for ``host``; its queues connect to
        127.0.0.1:``port`` when a route leads there. Point a domain's MX at it
        with ``lab.dns.replace(domain, "MX", [f"10 {host}."])``.
        """
        self.router.add_external(host, port)

    def ui(self) -> Any:
        """Compose, transcripts, path and mailboxes in one widget (use it as a cell's value)."""
        from smtplab.view.widgets import dashboard  # lazily: the lab itself never needs ipywidgets

        return dashboard(self)

    def talk(self, host: str) -> Conversation:
        """Open a recorded connection to ``host`` to type SMTP by hand (see Conversation)."""
        self.server(host)  # KeyError naming the lab's servers
        return Conversation(self._client.connect(host), self.client_tls)

    @contextlib.contextmanager
    def eavesdrop(self, host: str) -> Iterator[Eavesdropper]:
        """Put a wiretap in front of ``host`` while the block runs: the lab's client and
        the lab's queues (a relay's hop to an MX) then connect to it through the tap.

        ``tap.view()`` then shows what anyone on the path could read: plain text
        before STARTTLS, TLS records after it (chapter 08).
        """
        with Eavesdropper(self.server(host).port) as tap, self.router.through(host, tap.port):
            yield tap

    # -- using -----------------------------------------------------------------
    def server(self, host: str) -> LabServer:
        try:
            return self.servers[host]
        except KeyError:
            raise KeyError(f"no lab server named {host!r}; have {sorted(self.servers)}") from None

    def route(self, domain: str) -> Route:
        """Where mail for ``domain`` goes, asked of the lab DNS (RFC 5321 §5.1)."""
        return self.router.route(domain)

    def default_route(self, sender: str, recipients: list[str]) -> str:
        """Without ``via``: the sender's submission server, else the recipient's best MX."""
        return self.router.default_route(sender, recipients)

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
        password: str | None = None,
        notify: Iterable[str] = (),
        ret: str | None = None,
        attachments: Iterable[tuple[str, bytes, str]] = (),
    ) -> SendResult:
        """Send one message over a real SMTP connection and return what happened.

        ``recipients`` (To), ``cc`` and ``bcc`` all go into the envelope; only To
        and Cc become headers. ``via`` names the lab server to connect to; by
        default that is the sender's submission server (STARTTLS, then AUTH
        with the sender's lab password, or ``password``). ``notify`` asks for
        delivery status notifications (RFC 3461: SUCCESS, FAILURE, DELAY,
        NEVER) and ``ret`` ("FULL" or "HDRS") what they return. ``message``
        replaces the built message (an EmailMessage or raw bytes).
        ``attachments`` are ``(filename, content, "type/subtype")`` triples added
        to the built message (multipart/mixed, RFC 2046). ``headers`` adds header
        fields (names as RFC 5322 §2.2 allows; not the fields lab.send writes
        itself, nor a second Reply-To or References). Anything unusable raises
        InvalidInput naming the argument, before a connection is opened. The
        result's ``journey`` follows the message on from there.
        """
        out = prepare(
            sender,
            recipients,
            subject,
            body,
            cc=cc,
            bcc=bcc,
            via=via,
            servers=self.servers,
            # a default that is no lab server fails here, before a Message-ID is used up
            default_route=lambda s, envelope: self.server(self.default_route(s, envelope)).host,
            message=message,
            headers=headers,
            password=password,
            notify=notify,
            ret=ret,
            attachments=attachments,
            new_message_id=lambda s: f"<{next(self._message_ids):04d}.{self.name}@{domain_of(s)}>",
            date=self.clock.rfc5322,
        )
        return self._client.send(out, password)

    def hold(self) -> None:
        """Hold every queue: mail waits where it is, with no attempt, no expiry and no
        bounce, however long, until :meth:`release` (``smtplab up --hold``)."""
        for queue in self.queues.values():
            queue.hold()

    def release(self) -> None:
        """End the hold: held mail is due at once, its held time not counted as age."""
        for queue in self.queues.values():
            queue.release()

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until every queue is empty (or, held, holds nothing but held mail): retries
        done, bounces delivered.

        Raises TimeoutError naming what is still queued after ``timeout`` seconds.
        """
        queues.settle(self.queues.values(), timeout)

    def mailbox(self, address: str, folder: str | None = None) -> Mailbox:
        """The messages delivered to a lab user so far, oldest first.

        ``folder="Junk"`` shows what the spam filter set aside (chapter 09).
        """
        address = address.lower()
        if address not in self.maildirs:
            raise KeyError(f"{address!r} is not a lab user; have {sorted(self.maildirs)}")
        if folder:
            return Mailbox(f"{address} ({folder})", self.maildirs[address].folder(folder))
        return Mailbox(address, self.maildirs[address])

    def fetch(
        self,
        address: str,
        protocol: Protocol = "imap",
        *,
        password: str | None = None,
        tls: TLSMode = "starttls",
        delete: bool = False,
    ) -> FetchResult:
        """Read ``address``'s inbox the way a mail program does: over IMAP or POP3.

        Needs ``Lab(retrieval=True)``. ``tls`` is "starttls" (the plain port,
        upgraded), "implicit" (TLS from the first byte) or "none"; ``delete``
        (POP3) removes each message after downloading it. The result holds the
        messages and the recorded transcript (see :mod:`smtplab.mailstore.retrieval`).
        """
        return self._client.fetch(
            self.mailstore,
            self.mailstore_unavailable,
            address,
            protocol,
            password=password,
            tls=tls,
            delete=delete,
            context=self.ca.client_context(),
        )

    def transcripts(
        self, server: str | None = None, *, at_least: int = 0, timeout: float = 10.0
    ) -> list[Transcript]:
        """Finished connections as the lab's servers recorded them, oldest first.

        ``at_least`` waits (up to ``timeout`` s) until that many have closed: a
        server notices a client's goodbye a moment after the client does.
        """

        if at_least:
            self.journal.wait_for(lambda _: len(self.journal.finished(server)) >= at_least, timeout)
        return [log.transcript() for log in self.journal.finished(server)]

    def describe(self) -> dict[str, Any]:
        """The lab as data: the contract behind ``smtplab up --json`` (only add keys)."""
        servers, dns = self.servers.values(), (self.dns_server.host, self.dns_server.port)
        users = self.world.users
        return describe(self.name, servers, self.mailstore, users, self.maildirs, dns, self.ca)

    def _server_rows(self) -> tuple[list[Row], list[Row]]:
        return server_rows(self.servers.values(), self.mailstore)

    def table(self, *, ports: bool = True) -> str:
        """A plain-text table of servers. Notebooks leave out ports: they change every run."""
        dns_port = self.dns_server.port if ports else None
        return text_table(*self._server_rows(), self.world.users, dns_port)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(f"{self!r}\n{self.table(ports=False)}")

    def _repr_html_(self) -> str:
        """The table of every server, SMTP and POP3/IMAP, as in :meth:`table` (no ports)."""
        return html_table(repr(self), *self._server_rows(), self.world.users)

    # -- lifecycle ---------------------------------------------------------------
    def stop(self) -> None:
        """Stop queues, servers and DNS; remove a temporary folder. Safe to call twice.

        Returns within a few seconds whatever the sessions are doing: a server that
        cannot stop cleanly gives up after ``STOP_DEADLINE`` (see LabController.stop).
        A step that fails (a warning, where warnings are errors) does not keep the
        steps after it from running; its exception is raised once they have run.
        """
        if self._stopped:
            return
        self._stopped = True
        steps: list[Callable[[], object]] = [
            lambda: queues.finish(self.queues.values(), QUEUE_GRACE)
        ]
        steps += [server.down for server in self.servers.values()]
        steps.append(self.servers.clear)
        steps += [queue.stop for queue in self.queues.values()]  # their attempts have ended
        if hasattr(self, "dns_server"):
            steps.append(self.dns_server.stop)
        steps.append(lambda: running.forget(self.name, self))
        if self.mailstore is not None:
            steps.append(self.mailstore.stop)
        if hasattr(self, "_root_lock"):
            steps.append(self._root_lock.release)
        if self._folder is not None:
            steps.append(self._folder.cleanup)
        with contextlib.ExitStack() as later:
            for step in reversed(steps):  # an ExitStack unwinds last in, first out
                later.callback(step)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else f"{sum(map(len, self._server_rows()))} servers"
        return f"<Lab {self.name!r}: {state}>"


# Registered after everything the lab imports, so that it runs before their exit hooks.
atexit.register(running.stop_all)
