"""The lab's topology as plain data: domains, users, MX records and servers.

A :class:`World` describes; a :class:`~smtplab.lab.Lab` builds and runs it. Host
names are fixed and fictional (RFC 2606 example domains), so transcripts read
the same on every machine; the real ports are assigned at start-up and never
appear in a transcript.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from smtplab.protocol.message import InvalidInput, check_address
from smtplab.protocol.rules import domain_of, parse_path

#: Where every lab server listens: nothing in a lab faces a network (Binder blocks
#: outbound port 25, and a lab must never send mail to the Internet).
LOOPBACK = "127.0.0.1"

#: The name the lab's own client gives in EHLO (and in IMAP/POP3 transcripts).
CLIENT_HOST = "client.example.com"

Role = Literal["mx", "submission", "submissions", "relay"]


@dataclass(frozen=True)
class RoleFacts:
    """What a server of one role does: the facts the lab, its client, its queues, its CLI
    and Dovecot would otherwise each derive from the role's name.

    ``starttls_required`` and ``auth_required`` say what a client must do before a
    transaction (on 587, AUTH before MAIL and TLS before AUTH: RFC 6409 §4.3, RFC 8314
    §3). ``forwards`` means mail it accepts goes on through its queue to a next hop
    (every SMTP role has a queue: a notice of its own may have to go out);
    ``final_delivery`` means it stores mail in its domains' mailboxes.
    """

    name: str
    protocol: Literal["smtp", "imap", "pop3"]
    implicit_tls: bool = False  # TLS from the first byte (RFC 8314 §3.3)
    starttls_offered: bool = False  # STARTTLS on a plain connection (RFC 3207, RFC 2595)
    starttls_required: bool = False
    auth_offered: bool = False  # SMTP AUTH (RFC 4954)
    auth_required: bool = False
    forwards: bool = False
    final_delivery: bool = False
    #: ``lab.send`` and ``smtplab send`` go to this role's server of the sender's domain.
    client_default: bool = False


#: Every role a lab server or listener can have, by name.
ROLES: Mapping[str, RoleFacts] = {
    role.name: role
    for role in (
        # port 25: STARTTLS offered, never required (RFC 3207 §4); mail for its domains
        RoleFacts("mx", "smtp", starttls_offered=True, final_delivery=True),
        # port 587: STARTTLS first, then AUTH (RFC 6409, RFC 3207, RFC 4954)
        RoleFacts(
            "submission",
            "smtp",
            starttls_offered=True,
            starttls_required=True,
            auth_offered=True,
            auth_required=True,
            forwards=True,
            client_default=True,
        ),
        # port 465: TLS from the first byte, then AUTH (RFC 8314 §3.3)
        RoleFacts(
            "submissions",
            "smtp",
            implicit_tls=True,
            auth_offered=True,
            auth_required=True,
            forwards=True,
        ),
        # a backup MX: port 25 like an MX, and onward to the primary
        RoleFacts("relay", "smtp", starttls_offered=True, forwards=True),
        # POP3/IMAP (a private Dovecot): STARTTLS on the plain ports, TLS on the others
        RoleFacts("imap", "imap", starttls_offered=True),
        RoleFacts("imaps", "imap", implicit_tls=True),
        RoleFacts("pop3", "pop3", starttls_offered=True),
        RoleFacts("pop3s", "pop3", implicit_tls=True),
    )
}
#: The roles that speak SMTP (``smtplab send --via`` takes only these).
SMTP_ROLES = tuple(r for r in ROLES if ROLES[r].protocol == "smtp")
#: POP3/IMAP listeners (a private Dovecot), in the order they are listed and numbered.
MAILSTORE_ROLES = tuple(r for r in ROLES if ROLES[r].protocol != "smtp")


def mailstore_role(protocol: str, *, implicit_tls: bool) -> str:
    """The POP3/IMAP listener's role for ``protocol`` ("imap", "pop3") with or without
    TLS from the first byte."""
    return next(
        role.name
        for role in ROLES.values()
        if role.protocol == protocol and role.implicit_tls == implicit_tls
    )


def server_listing(role: str, host: str, port: int, domains: tuple[str, ...]) -> dict[str, Any]:
    """One server as ``smtplab up --json`` lists it; scripts rely on these keys (add, never
    rename)."""
    return {"role": role, "host": host, "address": LOOPBACK, "port": port, "domains": list(domains)}


def check_user_address(field: str, address: str) -> str:
    """A lab user's address, stripped, or InvalidInput saying what is wrong with it.

    The address names the user's Maildir folder (``ROOT/mail/ADDRESS``) and
    Dovecot home, so beyond being an address it must be one harmless file name:
    a local part that is an RFC 5321 §4.1.2 Dot-string (no leading, trailing or
    doubled dot, so never a ``..`` segment), no ``/`` or ``\\``, and no
    control, format or surrogate characters (NUL, ESC, bidi overrides, lone
    surrogates that no file system can store).
    """
    for char in address if isinstance(address, str) else ():
        if char in "/\\":
            raise InvalidInput(field, f"{address!r}: a lab user's address cannot hold {char!r}")
        if unicodedata.category(char) in ("Cc", "Cf", "Cs"):
            raise InvalidInput(
                field, f"{address!r}: a lab user's address cannot hold the character {char!r}"
            )
    address = check_address(field, address)
    parsed = parse_path(f"<{address}>")
    if parsed is None or parsed[0] != address or parsed[1].startswith('"'):
        raise InvalidInput(
            field,
            f"{address!r}: the part before @ must be dot-separated words "
            "(no dot at either end, no '..')",
        )
    return address


def check_password(field: str, password: str) -> str:
    """A lab password, or InvalidInput: printable US-ASCII (space included), nothing else.

    Every client must be able to send it. A line break cannot be: POP3's PASS
    takes the rest of one line (RFC 1939 §3, §7) and an IMAP quoted string holds no
    CR or LF (RFC 9051 §4.3), so it would break the lab's own LOGIN; SASL PLAIN
    forbids NUL (RFC 4616 §2); and the lab's clients (smtplib, imaplib) send
    ASCII only. No mail program lets a reader type such a password either.
    """
    if not isinstance(password, str):
        raise InvalidInput(field, f"must be text, not {type(password).__name__}")
    bad = next((c for c in password if not " " <= c <= "~"), None)
    if bad is not None:
        raise InvalidInput(
            field,
            f"a lab password is printable US-ASCII; it holds {bad!r}, which clients cannot send",
        )
    return password


#: RFC 1035 §2.3.1 with RFC 1123 §2.1 (a label may start with a digit): letters, digits and
#: inner hyphens, 1 to 63 of them (§2.3.4). Lower case: the lab compares names in lower case.
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
#: RFC 1035 §2.3.4: 255 octets on the wire, so at most 253 characters written out.
MAX_NAME_LENGTH = 253


def check_host_name(field: str, name: object) -> str:
    """A domain or host name of the lab, or InvalidInput saying what is wrong with it.

    The name becomes a DNS owner name, a certificate's subject, a folder under the
    root and a key the lab looks things up by, so it is one plain form only: dot-separated
    labels of lower-case letters, digits and inner hyphens, no trailing dot.
    """
    if not isinstance(name, str):
        raise InvalidInput(field, f"must be a host name, not {type(name).__name__}")
    if not name:
        raise InvalidInput(field, "a host name is required")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(
            field, f"{name[:40]!r}...: at most {MAX_NAME_LENGTH} characters (RFC 1035 §2.3.4)"
        )
    for label in name.split("."):
        if not label:
            raise InvalidInput(field, f"{name!r} has an empty label (a dot at an end or '..')")
        if not _LABEL.fullmatch(label):
            raise InvalidInput(
                field,
                f"{name!r}: {label[:70]!r} is not a host name label: lower-case letters, digits "
                "and inner hyphens, at most 63 (RFC 1035 §2.3.1, RFC 1123 §2.1)",
            )
    return name


@dataclass(frozen=True)
class User:
    address: str
    password: str

    @property
    def domain(self) -> str:
        return domain_of(self.address)


@dataclass(frozen=True)
class Domain:
    """A mail domain: its users and its MX records as ``(preference, host)``."""

    name: str
    users: tuple[User, ...]
    mx: tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class ServerSpec:
    """One lab server: its host name, its role and the domains it serves."""

    host: str
    role: Role
    domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class World:
    domains: tuple[Domain, ...]
    servers: tuple[ServerSpec, ...]
    client_host: str = CLIENT_HOST
    users: tuple[User, ...] = field(init=False)

    def __post_init__(self) -> None:
        check_world(self)
        object.__setattr__(self, "users", tuple(u for d in self.domains for u in d.users))

    def domain(self, name: str) -> Domain | None:
        return next((d for d in self.domains if d.name == name.lower()), None)

    def user(self, address: str) -> User | None:
        return next((u for u in self.users if u.address == address.lower()), None)


#: More servers than a lab on one machine runs: each has a thread, sockets and a certificate.
MAX_SERVERS = 100


def check_world(world: World) -> None:
    """Refuse, with InvalidInput naming the field, a world the lab could not run as written.

    Checked as a whole before anything starts: two servers with one host name (the
    first kept listening, unlisted, accepting mail it never delivered), two users one
    mailbox apart (the lab compares addresses in lower case), a host outside every
    domain (the lab DNS, authoritative for the world's domains only, could never
    answer for it), an MX preference that is not a 16-bit integer (RFC 1035 §3.3.9).
    """
    domains = _items("domains", world.domains, Domain)
    servers = _items("servers", world.servers, ServerSpec)
    if len(servers) > MAX_SERVERS:
        raise InvalidInput("servers", f"at most {MAX_SERVERS}: each has its threads and sockets")
    check_host_name("client_host", world.client_host)
    names: dict[str, str] = {}
    addresses: dict[str, str] = {}
    for i, domain in enumerate(domains):
        where = f"domains[{i}]"
        _once(names, check_host_name(f"{where}.name", domain.name), f"{where}.name")
        for j, user in enumerate(_items(f"{where}.users", domain.users, User)):
            here = f"{where}.users[{j}]"
            address = check_user_address(here, user.address)
            check_password(f"{here}.password", user.password)
            if user.address != address.lower():
                raise InvalidInput(
                    here, f"{user.address!r}: the lab compares addresses in lower case: write so"
                )
            if user.domain != domain.name:
                raise InvalidInput(here, f"{address} is not in the domain {domain.name}")
            _once(addresses, address, here)
    zones = list(names)
    for i, domain in enumerate(domains):
        for j, record in enumerate(_items(f"domains[{i}].mx", domain.mx, tuple)):
            _check_mx(f"domains[{i}].mx[{j}]", record, len(domain.mx), zones)
    hosts: dict[str, str] = {}
    for i, spec in enumerate(servers):
        where = f"servers[{i}]"
        host = _in_a_zone(f"{where}.host", check_host_name(f"{where}.host", spec.host), zones)
        if host in ("dns", *MAILSTORE_ROLES):
            raise InvalidInput(f"{where}.host", f"{host!r} names a port of the lab's port plan")
        _once(hosts, host, f"{where}.host")
        if spec.role not in SMTP_ROLES:
            raise InvalidInput(
                f"{where}.role", f"must be one of {', '.join(SMTP_ROLES)}, not {spec.role!r}"
            )
        for j, served in enumerate(_items(f"{where}.domains", spec.domains, str)):
            if served not in names:
                raise InvalidInput(
                    f"{where}.domains[{j}]", f"{served!r} is not one of the world's domains"
                )


def _items(field: str, items: object, kind: type) -> tuple[Any, ...]:
    """``items`` as a tuple if it is a list or tuple of ``kind``, else InvalidInput."""
    if not isinstance(items, tuple | list):
        raise InvalidInput(field, f"must be a tuple of {kind.__name__}, not {type(items).__name__}")
    for n, item in enumerate(items):
        if not isinstance(item, kind):
            raise InvalidInput(f"{field}[{n}]", f"must be a {kind.__name__}, not {item!r:.60}")
    return tuple(items)


def _once(seen: dict[str, str], name: str, field: str) -> None:
    """Remember where ``name`` was given; InvalidInput if it was given before."""
    if name in seen:
        raise InvalidInput(field, f"{name!r} is already {seen[name]}: each may be given once")
    seen[name] = field


def _in_a_zone(field: str, host: str, zones: Iterable[str]) -> str:
    if not any(host == zone or host.endswith(f".{zone}") for zone in zones):
        raise InvalidInput(
            field,
            f"{host!r} is in none of the world's domains, so the lab DNS could not answer for it",
        )
    return host


def _check_mx(field: str, record: tuple[Any, ...], count: int, zones: list[str]) -> None:
    """One ``(preference, host)``; a null MX (RFC 7505 §3) is ``(0, "")``, alone."""
    if len(record) != 2:
        raise InvalidInput(field, f"must be (preference, host), not {record!r:.60}")
    preference, host = record
    if isinstance(preference, bool) or not isinstance(preference, int):
        raise InvalidInput(field, f"the preference must be an integer, not {preference!r:.30}")
    if not 0 <= preference <= 65535:
        raise InvalidInput(
            field,
            "the preference must be 0 to 65535 (RFC 1035 §3.3.9), not "
            + (str(preference) if preference.bit_length() < 64 else "a number that large"),
        )
    if host == "":
        if preference != 0 or count != 1:
            raise InvalidInput(
                field, "a null MX (no host) is the domain's only record, preference 0 (RFC 7505 §3)"
            )
        return
    _in_a_zone(field, check_host_name(field, host), zones)


def port_plan(world: World, base: int) -> dict[str, int]:
    """Fixed ports from ``base`` (``smtplab up --port-base``), one each, in this order: the
    SMTP servers in the world's order, the lab DNS (UDP and TCP), then IMAP, IMAPS, POP3 and
    POP3S (numbered even when they do not run, so the others keep their ports)."""
    names = [*(spec.host for spec in world.servers), "dns", *MAILSTORE_ROLES]
    if not 1 <= base <= 65536 - len(names):
        raise ValueError(f"a port base must be 1 to {65536 - len(names)}: {len(names)} ports")
    return {name: base + n for n, name in enumerate(names)}


def default_world() -> World:
    """example.com sends (through its submission server), example.org receives.

    example.org has a primary and a backup MX; both store into the same
    mailboxes, as a provider's MX hosts share one mail store. Each domain has a
    postmaster, as RFC 5321 §4.5.1 requires; notices that cannot be delivered
    end in its mailbox.
    """
    return World(
        domains=(
            Domain(
                "example.com",
                users=(
                    User("alice@example.com", "alice-lab-pw"),
                    User("postmaster@example.com", "postmaster-lab-pw"),
                ),
                mx=((10, "mx.example.com"),),
            ),
            Domain(
                "example.org",
                users=(
                    User("bob@example.org", "bob-lab-pw"),
                    User("carol@example.org", "carol-lab-pw"),
                    User("postmaster@example.org", "postmaster-lab-pw"),
                ),
                mx=((10, "mx1.example.org"), (20, "mx2.example.org")),
            ),
        ),
        servers=(
            ServerSpec("smtp.example.com", "submission", ("example.com",)),
            ServerSpec("smtps.example.com", "submissions", ("example.com",)),
            ServerSpec("mx.example.com", "mx", ("example.com",)),
            ServerSpec("mx1.example.org", "mx", ("example.org",)),
            ServerSpec("mx2.example.org", "mx", ("example.org",)),
        ),
    )
