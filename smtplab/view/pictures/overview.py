"""Pictures drawn from a world: the journey of a message (00), ports and roles (02), the
mail agents (11).

Each takes a :class:`~smtplab.world.World` or a running :class:`~smtplab.lab.Lab`
and picks its cast (:func:`_cast_of`): the client, the first submission server, a
sender at the submission server's domain and a recipient at another domain
with MX records, whose preferences the pictures show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from smtplab.mailstore.dovecot import Listener
from smtplab.mailstore.dovecot_conf import IMAP_HOST, POP_HOST
from smtplab.view.pictures.grid import Link, Station, diagram
from smtplab.view.pictures.kit import Canvas, Picture
from smtplab.world import Domain, ServerSpec, World

if TYPE_CHECKING:
    from smtplab.lab import Lab


#: The standard port of each role (the lab's own ports are chosen at start-up).
PORTS = {
    "mx": 25,
    "submission": 587,
    "submissions": 465,
    "pop3": 110,
    "pop3s": 995,
    "imap": 143,
    "imaps": 993,
}


@dataclass(frozen=True)
class _Cast:
    """The parts of a world the overview pictures show: one sender, one recipient."""

    client: str
    sender: str
    recipient: str
    domain: str
    mx: tuple[tuple[int, str], ...]
    submission: ServerSpec | None
    submissions: ServerSpec | None


def _person(domain: Domain | None, name: str) -> str:
    """A domain's first user who is not the postmaster (the one a chapter writes to)."""
    users = [u.address for u in domain.users] if domain else []
    return next((u for u in users if not u.startswith("postmaster@")), users[0] if users else name)


def _cast_of(source: World | Lab) -> _Cast:
    world = source if isinstance(source, World) else source.world
    role = {spec.role: spec for spec in reversed(world.servers)}  # the first of each role
    sub = role.get("submission") or role.get("submissions")
    home = sub.domains[0] if sub and sub.domains else world.domains[0].name
    away = next((d for d in world.domains if d.name != home and d.mx), world.domain(home))
    assert away is not None
    return _Cast(
        client=world.client_host,
        sender=_person(world.domain(home), f"someone@{home}"),
        recipient=_person(away, f"someone@{away.name}"),
        domain=away.name,
        mx=tuple(sorted(away.mx)),
        submission=role.get("submission"),
        submissions=role.get("submissions"),
    )


def _host_of(spec: ServerSpec | None) -> str:
    return spec.host if spec is not None else "(none in this world)"


# -- 00: the journey of a message ---------------------------------------------------------
def journey_overview_picture(source: World | Lab) -> Picture:
    """The way a message goes through a lab world, from mail program to mailbox and back out.

    Drawn from the world (a :class:`World` or a running :class:`Lab`): its
    client, submission server, the recipient domain's MX records and servers,
    the mailbox, and POP3/IMAP, with the standard port of each step.
    """
    cast = _cast_of(source)
    sub = _host_of(cast.submission)
    (first_pref, first), *backups = cast.mx or ((0, cast.domain),)
    backup = ", ".join(f"backup {host} ({pref})" for pref, host in backups)
    answer = ", ".join(f"{pref} {host}" for pref, host in cast.mx) or "no MX"
    canvas = Canvas(
        "journey-overview", f"The journey of a message: {cast.sender} → {cast.recipient}"
    )
    stations = [
        Station("dns", (2, 0), ("lab DNS", f"MX {cast.domain}?", f"→ {answer}"), "dns"),
        Station("client", (0, 1), ("1 mail program", cast.client, cast.sender), "client"),
        Station("submission", (1, 1), ("2 submission", sub, "STARTTLS, AUTH"), "server"),
        Station("queue", (2, 1), ("3 queue", f"on {sub}'s disk", "retries on 4xx"), "store"),
        Station("mx", (3, 1), ("5 MX", first, f"preference {first_pref}", backup), "server"),
        Station("maildir", (3, 2), ("6 Maildir", cast.recipient, "on disk before 250"), "store"),
        Station("retrieval", (2, 2), ("7 POP3 / IMAP", IMAP_HOST, POP_HOST), "server"),
        Station("reader", (1, 2), ("8 mail program", f"{cast.recipient} reads"), "client"),
    ]
    links = [
        Link("client", "submission", (str(PORTS["submission"]),), "client"),
        Link("submission", "queue", ("250",), "server"),
        Link("queue", "dns", ("4 MX?",), "dns", shift=-10),
        Link("dns", "queue", ("answer",), "dns", shift=10),
        Link("queue", "mx", (str(PORTS["mx"]),), "client"),
        Link("mx", "maildir", ("stored",), "server"),
        Link("maildir", "retrieval", ("reads",), "store"),
        Link("retrieval", "reader", (f"{PORTS['imap']}", f"{PORTS['pop3']}"), "server"),
    ]
    words = diagram(canvas, stations, links, columns=4, gap_x=64)
    caption = (
        "The numbers follow the message; after each 250 the server that said it is responsible."
    )
    return canvas.finish(caption, words)


# -- 02: ports and roles -----------------------------------------------------------------
def ports_picture(source: World | Lab) -> Picture:
    """A mail program submits on 587 (STARTTLS) or 465 (implicit TLS); the submission
    server relays to the recipient's MX on 25. Hosts and preferences from the world."""
    cast = _cast_of(source)
    canvas = Canvas("ports", "Ports and roles: mail program → 587/465 → submission → 25 → MX")
    centre = (max(len(cast.mx), 2) - 1) / 2
    stations = [
        Station("client", (0, centre), ("mail program", cast.client, "MUA"), "client"),
        Station(
            "submission",
            (1, 0),
            (f"{PORTS['submission']} submission", _host_of(cast.submission), "STARTTLS, then AUTH"),
            "server",
        ),
        Station(
            "submissions",
            (1, 1),
            (
                f"{PORTS['submissions']} submissions",
                _host_of(cast.submissions),
                "TLS first, then AUTH",
            ),
            "server",
        ),
        Station(
            "queue", (2, centre), ("queue", f"MX lookup of {cast.domain}", "then relay"), "store"
        ),
    ]
    links = [
        Link("client", "submission", (str(PORTS["submission"]),), "client"),
        Link("client", "submissions", (str(PORTS["submissions"]),), "client"),
        Link("submission", "queue", ("250",), "server"),
        Link("submissions", "queue", ("250",), "server"),
    ]
    for rank, (pref, host) in enumerate(cast.mx):
        key = f"mx-{rank + 1}"
        role = "MX" if rank == 0 else "backup MX"
        stations.append(
            Station(
                key,
                (3, rank),
                (f"{PORTS['mx']} {role}", host, f"preference {pref}"),
                "server",
                dashed=rank > 0,
            )
        )
        links.append(Link("queue", key, (str(PORTS["mx"]),), "client", dashed=rank > 0))
    words = diagram(canvas, stations, links, columns=4, gap_x=60)
    caption = (
        "AUTH only once TLS is on (587: after STARTTLS; 465: from the first byte); 25: no login."
    )
    return canvas.finish(caption, words)


# -- 11: the agents, from mail program to mail program --------------------------------------
def _listeners(source: World | Lab) -> dict[str, Listener]:
    """The lab's running POP3/IMAP listeners by role ("imap", "pop3s", ...); none for a World."""
    store = None if isinstance(source, World) else source.mailstore
    return dict(store.listeners) if store is not None else {}


def mail_agents_picture(source: World | Lab) -> Picture:
    """MUA → MSA → MTA → MDA → mailbox store ← POP3/IMAP ← MUA, named by the world's
    hosts; POP3/IMAP from the lab's running listeners when there are any."""
    cast = _cast_of(source)
    running = _listeners(source)
    sub = _host_of(cast.submission)
    first = cast.mx[0][1] if cast.mx else cast.domain
    access = [
        f"{name} {next((running[r].host for r in roles if r in running), host)}"
        for name, host, roles in (
            ("IMAP", IMAP_HOST, ("imap", "imaps")),
            ("POP3", POP_HOST, ("pop3", "pop3s")),
        )
        if not running or any(r in running for r in roles)
    ]
    p = PORTS
    canvas = Canvas("mail-agents", "Who does what: MUA → MSA → MTA → MDA → store ← POP3/IMAP")
    stations = [
        Station("mua", (0, 0), ("MUA", "mail program", cast.sender), "client"),
        Station("msa", (1, 0), ("MSA", sub, "takes submissions"), "server"),
        Station("mta", (2, 0), ("MTA", f"{sub}'s queue", "relays"), "store"),
        Station("mx", (3, 0), ("MTA (MX)", first, "receives"), "server"),
        Station(
            "ports",
            (0, 1),
            (
                "standard ports",
                f"submission {p['submission']} (STARTTLS), {p['submissions']} (TLS)",
                f"SMTP between servers {p['mx']}",
                f"IMAP {p['imap']}/{p['imaps']}, POP3 {p['pop3']}/{p['pop3s']}",
            ),
            "info",
            span=3,
            dashed=True,
        ),
        Station("mda", (3, 1), ("MDA", f"{first}", "delivers locally"), "server"),
        Station("store", (3, 2), ("mailbox store", "Maildir of", cast.recipient), "store"),
        Station(
            "access",
            (2, 2),
            ("POP3 / IMAP", *(access if running else [*access, "(not running)"])),
            "server",
            dashed=not running,
        ),
        Station("reader", (1, 2), ("MUA", "mail program", cast.recipient), "client"),
    ]
    links = [
        Link("mua", "msa", ("SMTP",), "client"),
        Link("msa", "mta", ("250",), "server"),
        Link("mta", "mx", ("SMTP",), "client"),
        Link("mx", "mda", (), "server"),
        Link("mda", "store", ("writes",), "server"),
        Link("store", "access", ("reads",), "store"),
        Link("access", "reader", ("fetch",), "server"),
    ]
    words = diagram(canvas, stations, links, columns=4, gap_x=64, gap_y=36)
    state = f"{', '.join(running)} running" if running else "not running in this lab"
    return canvas.finish(f"Role names as in RFC 5598; POP3/IMAP: {state}.", words)
