"""The lab's servers as a table: plain text for a terminal or a notebook, HTML for Jupyter,
and the lab as data (:func:`describe`, the contract behind ``smtplab up --json``).

One row per SMTP server and per POP3/IMAP listener (role, host, the domains it serves),
with the lab DNS and the ports where a mail program needs them (``smtplab up``);
notebooks leave the ports out, as they change every run.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

from smtplab.lab.server import LabServer
from smtplab.mailstore.dovecot import Dovecot
from smtplab.mailstore.maildir import Maildir
from smtplab.tls.ca import LabCA
from smtplab.world import LOOPBACK, User

#: (role, host, domains, port)
Row = tuple[str, str, str, int]


def server_rows(
    servers: Iterable[LabServer], mailstore: Dovecot | None
) -> tuple[list[Row], list[Row]]:
    """The rows of the SMTP servers, and of the POP3/IMAP listeners."""
    smtp = [(s.role, s.host, " ".join(s.spec.domains), s.port) for s in servers]
    listeners = mailstore.describe() if mailstore else []
    store = [(d["role"], d["host"], "(all)", d["port"]) for d in listeners]  # all domains
    return smtp, store


def text_table(
    smtp: list[Row], store: list[Row], users: Iterable[User], dns_port: int | None
) -> str:
    """The table as text; with ``dns_port``, the ports too (and the lab DNS's)."""
    ports = dns_port is not None

    def line(role: str, host: str, domains: str, port: int) -> str:
        where = f"{LOOPBACK}:{port}" if ports else ""
        return f"{role:<12}{host:<20}{domains:<14}{where}".rstrip()

    rows = [f"{'role':<12}{'host':<20}{'domains':<14}{'listens on' if ports else ''}".rstrip()]
    rows += [line(*row) for row in smtp]
    if ports:  # where mail programs and dig ask (notebooks use lab.dns instead)
        where = f"{LOOPBACK}:{dns_port} (UDP and TCP)"
        rows.append(f"{'dns':<12}{'(the lab DNS)':<20}{'(all)':<14}{where}")
    rows += [line(*row) for row in store]
    rows += ["", "users: " + ", ".join(u.address for u in users)]
    return "\n".join(rows)


def html_table(title: str, smtp: list[Row], store: list[Row], users: Iterable[User]) -> str:
    """The table as HTML under a bold ``title``, without ports."""
    cells = [(role, host, domains) for role, host, domains, _ in smtp + store]
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in cells
    )
    names = ", ".join(html.escape(u.address) for u in users)
    return (
        f"<b>{html.escape(title)}</b><table><tr><th>role</th><th>host</th>"
        f"<th>domains</th></tr>{rows}</table>users: {names}"
    )


def describe(
    name: str,
    servers: Iterable[LabServer],
    mailstore: Dovecot | None,
    users: Iterable[User],
    maildirs: dict[str, Maildir],
    dns: tuple[str, int],
    ca: LabCA,
) -> dict[str, Any]:
    """The lab as data, as ``smtplab up --json`` prints it: scripts rely on these keys, so
    keys are only ever added."""
    return {
        "name": name,
        "servers": [s.describe() for s in servers] + (mailstore.describe() if mailstore else []),
        "users": [
            {"address": u.address, "password": u.password, "maildir": str(maildirs[u.address].path)}
            for u in users
        ],
        "dns": {"host": dns[0], "port": dns[1]},
        "ca_cert": str(ca.cert_path),
    }
