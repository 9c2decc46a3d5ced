"""The Lab: a miniature mail world running in this process, on loopback.

Theory of operation
-------------------
``Lab()`` reads a :class:`~smtplab.world.World` (the default one unless given),
starts a recording aiosmtpd server for each of its hosts on 127.0.0.1, and
keeps every connection's bytes in a :class:`~smtplab.record.recordings.WireJournal`.
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
import contextlib
import html
import itertools
import socket
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import AuthResult, LoginPassword

from smtplab.dns.route import Route
from smtplab.dns.server import LabDNSServer, RecordStore, make_resolver
from smtplab.errors import SmtplabError
from smtplab.mailstore.dovecot import Dovecot, MailstoreUnavailable
from smtplab.mailstore.dovecot import for_lab as dovecot_for_lab
from smtplab.mailstore.maildir import Mailbox, Maildir
from smtplab.mailstore.retrieval import FetchResult, Protocol, TLSMode, fetch_mailbox
from smtplab.paths import RootLock, inside
from smtplab.protocol.clock import LabClock
from smtplab.protocol.message import (
    InvalidInput,
    address_list,
    build_message,
    check_address,
    check_parameter_words,
)
from smtplab.protocol.rules import message_id_of
from smtplab.queue.delivery import DeliveryQueue, RetryPolicy
from smtplab.queue.spool import Spool
from smtplab.record.journey import Journey, JourneyBook, Step
from smtplab.record.recordings import WireJournal
from smtplab.record.transcript import Transcript
from smtplab.record.wirelog import WireLog
from smtplab.routing import Router
from smtplab.senderauth.wiring import LabAuthenticity
from smtplab.smtp.client import Outcome, RecordingClient, opportunistic_tls
from smtplab.smtp.conversation import Conversation
from smtplab.smtp.faults import Faults
from smtplab.smtp.handlers import RoleHandler, SubmissionHandler, domain_of
from smtplab.smtp.relaying import RelayHandler, ReportingMailboxHandler
from smtplab.smtp.server import LAB_EXTENSIONS, LabController
from smtplab.submit import connect, submit
from smtplab.tls.ca import Eavesdropper, LabCA
from smtplab.world import (
    LOOPBACK,
    ROLES,
    ServerSpec,
    World,
    check_password,
    default_world,
    mailstore_role,
    port_plan,
    server_listing,
)

MAX_MESSAGE_SIZE = 10 * 1024 * 1024
SESSION_TIMEOUT = 60.0
#: Seconds a stopping lab lets its queues finish their delivery attempts (Lab.stop).
QUEUE_GRACE = 1.0
DEFAULT_RETRY = RetryPolicy()

_running: dict[str, Lab] = {}


class PortInUse(SmtplabError, OSError):
    """A fixed port (``port_base``) that another program holds: says which and for what."""


def ensure_free(ports: dict[str, int]) -> None:
    """Raise PortInUse for the first of ``ports`` (name → port) that cannot be bound on
    127.0.0.1 now: TCP for all, UDP too for the DNS."""
    for name, port in ports.items():
        kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM) if name == "dns" else (socket.SOCK_STREAM,)
        for kind in kinds:
            with socket.socket(socket.AF_INET, kind) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
                try:
                    probe.bind((LOOPBACK, port))
                except OSError as error:
                    what = "the lab DNS" if name == "dns" else name
                    raise PortInUse(f"port {port} ({what}) is in use: {error.strerror}") from None


_running_lock = threading.Lock()


class LabServer:
    """A running lab server: its spec, where it listens, and the switches a lesson flips."""

    def __init__(
        self,
        spec: ServerSpec,
        handler: RoleHandler,
        journal: WireJournal,
        *,
        port: int = 0,
        **smtp: Any,
    ):
        self.spec = spec
        self.handler = handler
        self.faults = Faults()
        self._journal = journal
        self._smtp = smtp
        self._tls = smtp.get("tls_context")
        self.controller: LabController | None = None
        self._port = port  # 0: the OS picks one
        self.up()

    @property
    def host(self) -> str:
        return self.spec.host

    @property
    def role(self) -> str:
        return self.spec.role

    @property
    def port(self) -> int:
        """Where it listens (kept while it is down, so connections are really refused)."""
        return self._port

    @property
    def is_up(self) -> bool:
        return self.controller is not None

    def up(self) -> None:
        """Start (again), on the same port as before if it had one."""
        if self.controller is not None:
            return
        controller = LabController(
            self.handler,
            host_name=self.host,
            journal=self._journal,
            faults=self.faults,
            port=self._port,
            **self._smtp,
        )
        controller.start()
        self.controller, self._port = controller, int(controller.port)

    def down(self) -> None:
        """Stop listening, as if the host crashed: connections are refused. Returns within
        a few seconds: a server that cannot stop cleanly gives up, frees its port and warns."""
        controller, self.controller = self.controller, None
        if controller is not None:
            controller.stop()

    def fail(self, command: str, reply: str | None, times: int | None = 1) -> None:
        """Answer ``reply`` to ``command`` (``None``: hang up) the next ``times`` times.

        ``command`` is an SMTP verb, or ``"END-OF-DATA"`` for the moment after the
        final dot. Examples: ``fail("RCPT", "451 4.7.1 Greylisted, try again later")``,
        ``fail("END-OF-DATA", None)``.
        """
        self.faults.add(command, reply, times)

    def slow_down(self, seconds: float) -> None:
        """Put the server a network round trip of ``seconds`` away (see faults.latency)."""
        self.faults.latency = seconds

    def heal(self) -> None:
        """Remove every fault rule and added latency."""
        self.faults.clear()

    def reconfigure(self, **smtp: Any) -> None:
        """Restart on the same port with changed aiosmtpd/smtplab server options."""
        self._smtp.update(smtp)
        was_up = self.is_up
        self.down()
        if was_up:
            self.up()

    def disable(self, *extensions: str) -> None:
        """Stop offering ESMTP extensions, e.g. ``disable("PIPELINING", "SIZE")``."""
        self.reconfigure(**self._extension_options(extensions, on=False))

    def enable(self, *extensions: str) -> None:
        """Offer ESMTP extensions again (see :meth:`disable`)."""
        self.reconfigure(**self._extension_options(extensions, on=True))

    def _extension_options(self, names: Iterable[str], *, on: bool) -> dict[str, Any]:
        options: dict[str, Any] = {}
        ours = set(self._smtp.get("extensions", LAB_EXTENSIONS))
        for name in (n.upper() for n in names):
            if name in LAB_EXTENSIONS:
                ours = ours | {name} if on else ours - {name}
            elif name == "SIZE":
                options["data_size_limit"] = MAX_MESSAGE_SIZE if on else None
            elif name == "8BITMIME":
                options["decode_data"] = not on
            elif name == "SMTPUTF8":
                options["enable_SMTPUTF8"] = on
            elif name == "STARTTLS" and self._tls is not None:
                options["tls_context"] = self._tls if on else None
            else:
                raise ValueError(f"{name!r} cannot be switched on {self.host}")
        return {**options, "extensions": frozenset(ours)}

    def allow_plaintext_auth(self, allowed: bool = True) -> None:
        """Let AUTH run before TLS (off by default: RFC 8314 §3).

        Only for the lesson that base64 is not encryption: lab servers listen on
        127.0.0.1, so the secret never leaves this machine.
        """
        self.reconfigure(auth_require_tls=not allowed)

    def describe(self) -> dict[str, Any]:
        return server_listing(self.role, self.host, self.port, self.spec.domains)


@dataclass(frozen=True)
class SendResult:
    """What happened when the lab's client sent one message."""

    sender: str
    recipients: tuple[str, ...]
    server: str
    message_id: str
    outcomes: tuple[Outcome, ...]
    transcript: Transcript
    journey: Journey = field(repr=False)
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
        return self.journal.other_end(self.wire, timeout).transcript()

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
        with _running_lock:
            previous = _running.pop(name, None)
        if previous is not None:
            previous.stop()
        self.name = name
        self.world = world or default_world()
        self.clock = clock or LabClock()
        #: Fixed ports by server host, "dns" and POP3/IMAP role; empty: the OS picks.
        self.ports = port_plan(self.world, port_base) if port_base is not None else {}
        ensure_free(self.ports)
        self.journal = WireJournal()
        self.journeys = JourneyBook()
        self._folder = None if root else tempfile.TemporaryDirectory(prefix=f"smtplab-{name}-")
        self.root = Path(root or self._folder.name)  # type: ignore[union-attr]
        self._root_lock = RootLock(self.root)  # InvalidInput if another lab uses it
        self.maildirs: dict[str, Maildir] = {}
        self._message_ids = itertools.count(1)
        self.servers: dict[str, LabServer] = {}
        self.queues: dict[str, DeliveryQueue] = {}
        self.mailstore: Dovecot | None = None
        self.mailstore_unavailable: str | None = None if retrieval else "not asked for"
        self.auth: LabAuthenticity | None = None
        self._stopped = False
        try:
            self.maildirs = {
                user.address: Maildir(inside(self.root, "mail", user.address, field="user"))
                for user in self.world.users
            }
            self.ca = LabCA(self.root / "tls")
            self.client_tls = self.ca.client_context()  # one context: reused by every client
            self.dns = self._zones()
            self.dns_server = LabDNSServer(self.dns, port=self.ports.get("dns", 0)).start()
            self.resolver = make_resolver(self.dns_server.host, self.dns_server.port)
            self.router = Router(self.world, self.dns, self.resolver, self.servers, seed=seed)
            #: Servers the lab did not start, by host: their ports (see add_external).
            self.external = self.router.external
            if authenticity:  # chapter 09: addresses, DKIM keys, SPF/DKIM/DMARC records
                self.auth = LabAuthenticity(self.world, self.dns, self.resolver, self.clock)
            for spec in self.world.servers:
                self.servers[spec.host] = self._start(spec, retry)
            for queue in self.queues.values():
                if hold:
                    queue.hold()
                queue.start()
            if (
                retrieval
            ):  # POP3/IMAP (chapter 11): a private Dovecot, see smtplab.mailstore.dovecot
                try:
                    self.mailstore = dovecot_for_lab(self)
                except MailstoreUnavailable as why:
                    if retrieval != "auto":
                        raise
                    self.mailstore_unavailable = str(why)
        except BaseException:
            self.stop()
            raise
        with _running_lock:
            _running[name] = self

    # -- building ------------------------------------------------------------
    def _zones(self) -> RecordStore:
        """The lab's DNS: a zone per domain, its MX records, an A record per host, and the
        zone ``invalid``, where no name exists (RFC 6761 §6.4): a domain that does not exist
        gets NXDOMAIN, as on the Internet, while names outside every zone are REFUSED."""
        store = RecordStore()
        store.add_zone("invalid")
        for domain in self.world.domains:
            store.add_zone(domain.name)
            for preference, host in domain.mx:
                store.add(domain.name, "MX", f"{preference} {host}.")
        for spec in self.world.servers:
            store.add(spec.host, "A", LOOPBACK)
        return store

    def _start(self, spec: ServerSpec, retry: RetryPolicy) -> LabServer:
        role = ROLES[spec.role]
        tls = self.ca.server_context(spec.host)
        options: dict[str, Any] = {
            "port": self.ports.get(spec.host, 0),
            "enable_SMTPUTF8": True,
            "data_size_limit": MAX_MESSAGE_SIZE,
            "timeout": SESSION_TIMEOUT,
        }
        if role.implicit_tls:  # already encrypted: AUTH needs no STARTTLS first
            options.update(ssl_context=tls, auth_require_tls=False)
        elif role.starttls_offered:
            options.update(tls_context=tls)
        if role.auth_offered:
            options.update(authenticator=self._authenticate)
        queue = self._queue(spec, retry)  # every role sends mail: onward, or its notices
        mailboxes = {a: m for a, m in self.maildirs.items() if domain_of(a) in spec.domains}
        handler: RoleHandler
        if role.final_delivery:
            handler = ReportingMailboxHandler(
                spec.host, set(spec.domains), mailboxes, self.clock, queue
            )
            if self.auth is not None:  # chapter 09: SPF, DKIM, DMARC and the spam filter
                handler.inspector = self.auth.inspector(spec.host)
        elif role.auth_required:  # submission: authenticated users, to anyone
            handler = SubmissionHandler(spec.host, self.clock, queue)
        else:  # a relay: mail from anyone for its domains' known recipients, onward
            handler = RelayHandler(spec.host, self.clock, queue, set(spec.domains), mailboxes)
        return LabServer(spec, handler, self.journal, **options)

    def _queue(self, spec: ServerSpec, retry: RetryPolicy) -> DeliveryQueue:
        """The outbound queue of one server, in ``ROOT/spool/HOST``."""
        queue = DeliveryQueue(
            spec.host,
            Spool(inside(self.root, "spool", spec.host, field="host")),
            self.router.hop(),
            journeys=self.journeys,
            journal=self.journal,
            clock=self.clock,
            postmaster=self._maildir_on_disk,
            policy=retry,
            open_client=lambda client: opportunistic_tls(client, self.client_tls),
            outgoing=self.auth.outgoing(spec.host) if self.auth else None,
            source_address=self.auth.address(spec.host) if self.auth else None,
        )
        self.queues[spec.host] = queue
        return queue

    def _maildir_on_disk(self, address: str) -> Maildir:
        """A lab user's Maildir, or one on disk for an address that is no user (a queue's
        postmaster in a world without one): nothing handed to it is lost."""
        return self.maildirs.get(address) or Maildir(self.root / "mail" / address)

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        """Check a lab user's password (PLAIN and LOGIN give a LoginPassword)."""
        if isinstance(data, LoginPassword):
            user = self.world.user(data.login.decode("utf-8", "replace"))
            if user is not None and user.password == data.password.decode("utf-8", "replace"):
                return AuthResult(success=True, auth_data=data)
        return AuthResult(success=False, handled=False)

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
        return Conversation(self._connect(host), self.client_tls)

    def _connect(self, host: str) -> RecordingClient:
        """The lab's recording client, connected to ``host`` (or to its wiretap)."""
        return connect(
            host,
            self.router.reach(host),
            ROLES[self.server(host).role],
            client_name=self.world.client_host,
            context=self.client_tls,
            journal=self.journal,
        )

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
        sender = check_address("from", sender)
        to, cc_list, bcc_list = (
            address_list("to", recipients),
            address_list("cc", cc),
            address_list("bcc", bcc),
        )
        envelope = to + cc_list + bcc_list
        if not envelope:
            raise InvalidInput("to", "at least one recipient is required")
        notify = check_parameter_words("notify", notify)
        ret = check_parameter_words("ret", ret)[0] if ret else None
        if password is not None:
            check_password("password", password)
        if via is not None and via not in self.servers:
            raise InvalidInput("via", f"no lab server named {via!r}; have {sorted(self.servers)}")
        if message is not None and not isinstance(message, EmailMessage | bytes):
            raise InvalidInput("message", "pass an EmailMessage or the message's bytes")
        host = via or self.default_route(sender, envelope)
        server = self.server(host)
        attachments = list(attachments)
        if message is not None and attachments:
            raise InvalidInput("attachment", "attach files to the message you pass instead")
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
                attachments=attachments,
            )
        raw = message if isinstance(message, bytes) else message.as_bytes(policy=SMTP_POLICY)
        if message_id_of(raw) is None:  # as every mail program does (RFC 5322 §3.6.4)
            raw = f"Message-ID: {message_id}\r\n".encode() + raw
        message_id = message_id_of(raw) or message_id
        journey = self.journeys.open(message_id, tuple(envelope))
        client = self._connect(host)
        assert client.wire is not None
        journey.add(
            Step("submitted", self.world.client_host, f"→ {host}", tuple(envelope), client.wire)
        )
        role = ROLES[server.role]
        submitted = submit(
            client,
            role,
            sender,
            envelope,
            raw,
            context=self.client_tls,
            password_of=lambda address: password or self._password(address),
            # The words as given, in their order: a wrong one is the server's to refuse (501).
            mail_options=[f"RET={ret}"] if ret else [],
            rcpt_options=[f"NOTIFY={','.join(notify)}"] if notify else [],
        )
        for outcome in submitted.outcomes:
            if not outcome.accepted:
                journey.add(
                    Step("refused", host, f"{outcome.code} {outcome.text}", (outcome.recipient,))
                )
            elif role.final_delivery:  # a relay's or submission server's queue reports on
                journey.add(Step("delivered", host, "stored in the mailbox", (outcome.recipient,)))
        return SendResult(
            sender=sender,
            recipients=tuple(envelope),
            server=host,
            message_id=message_id,
            outcomes=submitted.outcomes,
            transcript=submitted.transcript,
            journey=journey,
            wire=submitted.wire,
            journal=self.journal,
        )

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
        deadline = time.monotonic() + timeout
        # A queue's bounce may land in another queue: go round until all are empty.
        while not all(queue.wait_empty(deadline) for queue in self.queues.values()):
            if time.monotonic() >= deadline:
                waiting = [e.qid for q in self.queues.values() for e in q.pending()]
                raise TimeoutError(f"queues still hold {waiting} after {timeout} s")

    def _password(self, address: str) -> str:
        user = self.world.user(address)
        return user.password if user is not None else ""

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
        if self.mailstore is None:
            raise RuntimeError(
                f"POP3/IMAP are not running ({self.mailstore_unavailable}); "
                "start the lab with Lab(retrieval=True)"
            )
        if protocol not in ("imap", "pop3"):
            raise ValueError(f"protocol must be 'imap' or 'pop3', not {protocol!r}")
        listener = self.mailstore.listeners[
            mailstore_role(protocol, implicit_tls=tls == "implicit")
        ]
        return fetch_mailbox(
            listener.host,
            listener.port,
            address.lower(),
            password if password is not None else self._password(address),
            protocol=protocol,
            tls=tls,
            context=self.ca.client_context(),
            client_name=self.world.client_host,
            delete=delete,
        )

    def transcripts(
        self, server: str | None = None, *, at_least: int = 0, timeout: float = 10.0
    ) -> list[Transcript]:
        """Finished connections as the lab's servers recorded them, oldest first.

        ``at_least`` waits (up to ``timeout`` s) until that many have closed: a
        server notices a client's goodbye a moment after the client does.
        """

        def finished() -> list[WireLog]:
            return [
                log
                for log in self.journal.logs()
                if log.view == "server" and log.closed.is_set() and server in (None, log.server)
            ]

        if at_least:
            self.journal.wait_for(lambda _: len(finished()) >= at_least, timeout)
        return [log.transcript() for log in finished()]

    def describe(self) -> dict[str, Any]:
        """The lab as data: the contract behind ``smtplab up --json`` (only add keys)."""
        return {
            "name": self.name,
            "servers": [s.describe() for s in self.servers.values()]
            + (self.mailstore.describe() if self.mailstore else []),
            "users": [
                {
                    "address": u.address,
                    "password": u.password,
                    "maildir": str(self.maildirs[u.address].path),
                }
                for u in self.world.users
            ],
            "dns": {"host": self.dns_server.host, "port": self.dns_server.port},
            "ca_cert": str(self.ca.cert_path),
        }

    def _server_rows(
        self,
    ) -> tuple[list[tuple[str, str, str, int]], list[tuple[str, str, str, int]]]:
        """(role, host, domains, port) of the SMTP servers, and of the POP3/IMAP listeners."""
        smtp = [(s.role, s.host, " ".join(s.spec.domains), s.port) for s in self.servers.values()]
        listeners = self.mailstore.describe() if self.mailstore else []
        store = [(d["role"], d["host"], "(all)", d["port"]) for d in listeners]  # all domains
        return smtp, store

    def table(self, *, ports: bool = True) -> str:
        """A plain-text table of servers. Notebooks leave out ports: they change every run."""
        smtp, store = self._server_rows()

        def line(role: str, host: str, domains: str, port: int) -> str:
            where = f"{LOOPBACK}:{port}" if ports else ""
            return f"{role:<12}{host:<20}{domains:<14}{where}".rstrip()

        rows = [f"{'role':<12}{'host':<20}{'domains':<14}{'listens on' if ports else ''}".rstrip()]
        rows += [line(*row) for row in smtp]
        if ports:  # where mail programs and dig ask (notebooks use lab.dns instead)
            where = f"{LOOPBACK}:{self.dns_server.port} (UDP and TCP)"
            rows.append(f"{'dns':<12}{'(the lab DNS)':<20}{'(all)':<14}{where}")
        rows += [line(*row) for row in store]
        rows += ["", "users: " + ", ".join(u.address for u in self.world.users)]
        return "\n".join(rows)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(f"{self!r}\n{self.table(ports=False)}")

    def _repr_html_(self) -> str:
        """The table of every server, SMTP and POP3/IMAP, as in :meth:`table` (no ports)."""
        smtp, store = self._server_rows()
        cells = [(role, host, domains) for role, host, domains, _ in smtp + store]
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
            for row in cells
        )
        users = ", ".join(html.escape(u.address) for u in self.world.users)
        return (
            f"<b>{html.escape(repr(self))}</b><table><tr><th>role</th><th>host</th>"
            f"<th>domains</th></tr>{rows}</table>users: {users}"
        )

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
        steps = [self._let_queues_finish]
        steps += [server.down for server in self.servers.values()]
        steps.append(self.servers.clear)
        steps += [queue.stop for queue in self.queues.values()]  # their attempts have ended
        if hasattr(self, "dns_server"):
            steps.append(self.dns_server.stop)
        steps.append(self._forget)
        if self.mailstore is not None:
            steps.append(self.mailstore.stop)
        if hasattr(self, "_root_lock"):
            steps.append(self._root_lock.release)
        if self._folder is not None:
            steps.append(self._folder.cleanup)
        with contextlib.ExitStack() as later:
            for step in reversed(steps):  # an ExitStack unwinds last in, first out
                later.callback(step)

    def _let_queues_finish(self) -> None:
        """Give the queues :data:`QUEUE_GRACE` seconds to end the attempts they are making.
        Past it, the servers stop under them: the attempt's connection drops, its message
        stays queued (a next hop that had stored it before its 250 gets it once more
        after a restart, as RFC 5321 §6.1 allows), and the queue stops at once."""
        for queue in self.queues.values():
            queue.stop(timeout=0)
        deadline = time.monotonic() + QUEUE_GRACE
        for queue in self.queues.values():
            queue.stop(timeout=max(0.0, deadline - time.monotonic()))

    def _forget(self) -> None:
        with _running_lock:
            if _running.get(self.name) is self:
                del _running[self.name]

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else f"{sum(map(len, self._server_rows()))} servers"
        return f"<Lab {self.name!r}: {state}>"


@atexit.register
def _stop_all() -> None:
    with _running_lock:
        labs = list(_running.values())
    for lab in labs:
        lab.stop()
