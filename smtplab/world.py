"""The lab's topology as plain data: domains, users, MX records and servers.

A :class:`World` describes; a :class:`~smtplab.lab.Lab` builds and runs it. Host
names are fixed and fictional (RFC 2606 example domains), so transcripts read
the same on every machine; the real ports are assigned at start-up and never
appear in a transcript.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Any, Literal

from smtplab.compose import InvalidInput, check_address
from smtplab.protocol import parse_path

#: Where every lab server listens: nothing in a lab faces a network (Binder blocks
#: outbound port 25, and a lab must never send mail to the Internet).
LOOPBACK = "127.0.0.1"

Role = Literal["mx", "submission", "submissions", "relay"]
#: The roles that speak SMTP (``smtplab send --via`` takes only these).
SMTP_ROLES: tuple[Role, ...] = ("mx", "submission", "submissions", "relay")
#: POP3/IMAP listeners (a private Dovecot), in the order they are listed and numbered.
MAILSTORE_ROLES = ("imap", "imaps", "pop3", "pop3s")


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


@dataclass(frozen=True)
class User:
    address: str
    password: str

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


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
    client_host: str = "client.example.com"
    users: tuple[User, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "users", tuple(u for d in self.domains for u in d.users))
        for i, domain in enumerate(self.domains):
            for j, user in enumerate(domain.users):
                check_user_address(f"domains[{i}].users[{j}]", user.address)
                check_password(f"domains[{i}].users[{j}].password", user.password)

    def domain(self, name: str) -> Domain | None:
        return next((d for d in self.domains if d.name == name.lower()), None)

    def user(self, address: str) -> User | None:
        return next((u for u in self.users if u.address == address.lower()), None)


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
