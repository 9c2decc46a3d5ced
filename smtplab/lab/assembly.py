"""Building a lab's parts from its world: the DNS zones, each server's queue and server.

Theory of operation
-------------------
:class:`~smtplab.lab.Lab` starts its world in this order: the lab DNS from
:func:`zones`, then for each server of the world its outbound queue
(:func:`outbound_queue`: every role sends mail, onward or its own notices) and the
server itself (:func:`start_server`), whose handler and TLS and AUTH options come
from its role's facts (:data:`smtplab.world.ROLES`). Each function returns what it
built; the lab keeps them (``lab.queues``, ``lab.servers``).

With ``port_base`` every server has a fixed port: :func:`ensure_free` checks them
all before anything starts, so a taken port is reported by name, not halfway through.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smtplab.dns.records import RecordStore
from smtplab.errors import SmtplabError
from smtplab.lab.server import MAX_MESSAGE_SIZE, LabServer
from smtplab.mailstore.maildir import Maildir
from smtplab.paths import inside
from smtplab.protocol.clock import LabClock
from smtplab.protocol.rules import domain_of
from smtplab.queue.delivery import DeliveryQueue, Hop, RetryPolicy
from smtplab.queue.spool import Spool
from smtplab.record.journey import JourneyBook
from smtplab.record.recordings import Recordings
from smtplab.roles.handlers import RoleHandler, SubmissionHandler
from smtplab.roles.relaying import RelayHandler, ReportingMailboxHandler
from smtplab.senderauth.wiring import LabAuthenticity
from smtplab.smtp.client import opportunistic_tls
from smtplab.tls.ca import LabCA
from smtplab.world import LOOPBACK, ROLES, ServerSpec, World

#: Seconds a session may sit idle before the server closes it.
SESSION_TIMEOUT = 60.0


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


def zones(world: World) -> RecordStore:
    """The lab's DNS: a zone per domain, its MX records, an A record per host, and the
    zone ``invalid``, where no name exists (RFC 6761 §6.4): a domain that does not exist
    gets NXDOMAIN, as on the Internet, while names outside every zone are REFUSED."""
    store = RecordStore()
    store.add_zone("invalid")
    for domain in world.domains:
        store.add_zone(domain.name)
        for preference, host in domain.mx:
            store.add(domain.name, "MX", f"{preference} {host}.")
    for spec in world.servers:
        store.add(spec.host, "A", LOOPBACK)
    return store


@dataclass(frozen=True)
class Parts:
    """What every queue and server of a lab is built with (the lab's own, shared)."""

    root: Path
    maildirs: Mapping[str, Maildir]
    journeys: JourneyBook
    journal: Recordings
    clock: LabClock
    ca: LabCA
    client_tls: ssl.SSLContext
    auth: LabAuthenticity | None
    authenticator: Callable[..., Any]
    ports: Mapping[str, int]  # fixed ports by host; none: the OS picks


def maildirs(world: World, root: Path) -> dict[str, Maildir]:
    """A Maildir for every user of the world, under ``ROOT/mail/ADDRESS``."""
    return {
        user.address: Maildir(inside(root, "mail", user.address, field="user"))
        for user in world.users
    }


def outbound_queue(spec: ServerSpec, hop: Hop, policy: RetryPolicy, parts: Parts) -> DeliveryQueue:
    """The outbound queue of one server, in ``ROOT/spool/HOST``."""

    def postmaster(address: str) -> Maildir:
        """A lab user's Maildir, or one on disk for an address that is no user (a queue's
        postmaster in a world without one): nothing handed to it is lost."""
        return parts.maildirs.get(address) or Maildir(parts.root / "mail" / address)

    auth = parts.auth
    return DeliveryQueue(
        spec.host,
        Spool(inside(parts.root, "spool", spec.host, field="host")),
        hop,
        journeys=parts.journeys,
        journal=parts.journal,
        clock=parts.clock,
        postmaster=postmaster,
        policy=policy,
        open_client=lambda client: opportunistic_tls(client, parts.client_tls),
        outgoing=auth.outgoing(spec.host) if auth else None,
        source_address=auth.address(spec.host) if auth else None,
    )


def start_server(spec: ServerSpec, queue: DeliveryQueue, parts: Parts) -> LabServer:
    """Start the server of ``spec``, as its role has it: TLS from the first byte or
    STARTTLS, AUTH (checked by the parts' ``authenticator``), and the handler that stores
    mail in the parts' ``maildirs``, passes it on through ``queue``, or both."""
    role = ROLES[spec.role]
    tls, clock, auth = parts.ca.server_context(spec.host), parts.clock, parts.auth
    options: dict[str, Any] = {
        "port": parts.ports.get(spec.host, 0),
        "enable_SMTPUTF8": True,
        "data_size_limit": MAX_MESSAGE_SIZE,
        "timeout": SESSION_TIMEOUT,
    }
    if role.implicit_tls:  # already encrypted: AUTH needs no STARTTLS first
        options.update(ssl_context=tls, auth_require_tls=False)
    elif role.starttls_offered:
        options.update(tls_context=tls)
    if role.auth_offered:
        options.update(authenticator=parts.authenticator)
    mailboxes = {a: m for a, m in parts.maildirs.items() if domain_of(a) in spec.domains}
    handler: RoleHandler
    if role.final_delivery:
        handler = ReportingMailboxHandler(spec.host, set(spec.domains), mailboxes, clock, queue)
        if auth is not None:  # chapter 09: SPF, DKIM, DMARC and the spam filter
            handler.inspector = auth.inspector(spec.host)
    elif role.auth_required:  # submission: authenticated users, to anyone
        handler = SubmissionHandler(spec.host, clock, queue)
    else:  # a relay: mail from anyone for its domains' known recipients, onward
        handler = RelayHandler(spec.host, clock, queue, set(spec.domains), mailboxes)
    return LabServer(spec, handler, parts.journal, **options)
