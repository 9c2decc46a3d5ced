"""Chapter 09's switches on a running lab: addresses, keys, DNS records and checks.

Theory of operation
-------------------
``Lab(authenticity=True)`` builds a :class:`LabAuthenticity`, which turns the
pure checks of :mod:`smtplab.senderauth.checks` and :mod:`smtplab.senderauth.spam` into a
mail world that uses them:

* **Addresses.** Every lab server listens on 127.0.0.1, so a receiving server
  could not tell senders apart. On Linux the whole of 127.0.0.0/8 is local, so
  each sending host gets its own address (``smtp.example.com`` 127.0.0.2,
  ``smtps.example.com`` 127.0.0.3, ...) and its queue binds its outgoing
  connections to it; the lab's own client keeps 127.0.0.1. The MX sees the
  real peer address of the socket. Where 127.0.0.N cannot be bound (macOS has
  only 127.0.0.1 unless told otherwise), every host sends from 127.0.0.1 and
  :attr:`LabAuthenticity.note` says so.
* **Records.** Each sending host gets an A record with its address and an SPF
  record for its HELO name. Each domain with sending hosts publishes SPF
  (``ip4:`` its hosts' addresses, ``-all``), a DKIM key at
  ``lab._domainkey.<domain>`` and DMARC ``p=reject``. A domain that only
  receives says it sends nothing: ``v=spf1 -all`` and DMARC ``p=reject``.
  They are ordinary records in ``lab.dns``: change them and the next message is
  judged by the new ones.
* **Signing.** A sending host's queue signs each message with DKIM as it leaves,
  then applies any edit set with :meth:`LabAuthenticity.edit_in_transit` (a
  gateway that changes a message after it was signed).
* **Checking.** Each MX gets an :class:`Inspector`: it removes forged
  Authentication-Results fields that name it, runs SPF, DKIM and DMARC, scores
  the message, and decides: inbox, Junk folder, or ``550 5.7.1``. Every
  decision is kept in :attr:`LabAuthenticity.verdicts`.

The DKIM key is fixed and published below, so that signatures, and the notebooks
that show them, are the same on every run. It proves nothing outside the lab:
anyone can read it, as anyone can read the example keys of RFC 8463.
"""

from __future__ import annotations

import collections
import socket
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Literal

from dns.resolver import Resolver

from smtplab.dns.records import RecordStore
from smtplab.protocol import reader
from smtplab.protocol.clock import LabClock
from smtplab.protocol.replies import DMARC_REJECT, SPAM_REJECT
from smtplab.protocol.rules import message_id_of
from smtplab.senderauth.checks import (
    Authentication,
    authenticate,
    from_domains,
    remove_results_claiming,
)
from smtplab.senderauth.signatures import DKIMKey, dkim_sign
from smtplab.senderauth.spam import Score, SpamFilter
from smtplab.world import LOOPBACK, ROLES, World

SELECTOR = "lab"
MAX_VERDICTS = 1000

#: The lab's DKIM private key (RSA, 2048 bits). Published on purpose: see the module doc.
LAB_DKIM_KEY = (
    b"-----BEGIN RSA PRIVATE KEY-----\n"
    b"MIIEpAIBAAKCAQEA2ts9TsmeuVrfUFJHKY6rHQ0/ipNuWSl1c9ReWHHgSJykWnJz\n"
    b"E+tPFPYfGnb9GBXgFk/V9EGa2JeWCxvukrQuX3dpZ2tHzWJqVk4qMLp7c0pDoXTI\n"
    b"R8UtppGcXVxVQM1C7WRGP/XvZm/2qsY4W3Hu5UkRmT6Fj7mlJmHF3wIhOVIPZg9n\n"
    b"psHu6i3qxXOwZBuPiQAdjPj1FNtWWw64ziSqSM+YWC23rJFsldHH85jNWQsqr06N\n"
    b"xiOnAI+HsdtwOywPjffld5zAhi2QMuENxRQas3nYr1IJ1MZhvyq0JGiTY/uFpglA\n"
    b"dJvecG7etR+2NYoqha6Pw//umu2F9/NtDLHpyQIDAQABAoIBABk09aV4rt2Z5A0Y\n"
    b"AOa+LiKpNzeSffvqfMLjw58LtKGgWwSo2GzDpibbpx7w8/sdb+MZ/GJG2RsXsHok\n"
    b"lDCU7J9lvT/iWRGEg4tfstfMbrILbGkw7m1nvjeIX1pYa2BMk+gMK9QrkxB5Fk+6\n"
    b"h1yu7W0+onaEPzVb1DPswHHMSL/VZ3ariowMXKbLHGzkW9oEWA5zQ0ypr6SMfUhC\n"
    b"6trpxgDhK2jOwFvTUl2KYGOuxX7kzn6B3i5wdQN70kPujs6r5kzxdQPuZ5/gwheg\n"
    b"rcuIEqugYbAxoFdRvcGtYeBfS7mmOt9eY0Jap2h8w6gVoDGIdmMFUTafreImcQ1Y\n"
    b"EG64DWECgYEA7VkhqINp2HnM78gn/6UsHkeMBHpB4Lb2HVQjlM68804A1C6sEALe\n"
    b"UI5q35BNaV5TcDmzuqF4Zd7i4Xlsqm4gUmQqAf3VwUQOOz87ratEYaW6JyRDXX9j\n"
    b"TR88Hx4qzI5ZwSOmQnAG6GncaWzdxlpUoMocMJed9D3HBBhXrYBqglECgYEA7A4Z\n"
    b"PnGqbUYAXZ+Ajkz9oia+M9oEm5Hs3AGYdcOtG6SmG/Gb3Z6JEtwKr7ax4nF+x7fR\n"
    b"/5H0sNdwk7679JZtTiW78ukuzQ3lpKf9M4d416WaI4eJU3x2hRTmjQday9jqKs+e\n"
    b"noWHu9S6WrtY9uE7dXxl29JvVx59WUJFp1tbWfkCgYEAojqpCeCA6WkfTcnWpSNF\n"
    b"y5CFwM2715fXE2beRykj932ajW01SGBdilw96n9cmifSCkQ2d9tESwUUuJ7hSoCp\n"
    b"cQdrux7ACzC0NYTcCrGktMWtPnHH5dFbk2xFENPy1wx5hs0SKBkgb51j/V9fGuPF\n"
    b"Mn3S1NfdLANJ05+71iiPJHECgYAbVaKctYLbtoByVvcHA2lXbo8V6Agij6pS66hg\n"
    b"8rDIA6/sinTXG/WZhnuCT3CX3TamH+YkZx1joP77TNns/8JWi04RWek+e359K6rJ\n"
    b"XcWjixynQpmnXkFHNd1gtVpRQqQTIwmmJ6ZJHOAbg5hQtlIxT59n7h1QhEpVnLP+\n"
    b"JjkU2QKBgQCg2oZXiCmHWV5EaysP+BGlBikO2ju5FTbIPIrgDSWzct3jyebwIpp2\n"
    b"ewwWu6WEDKaofxDpq1ug0/vejRmtC1rkxz3G9ZPUCeB8Bz93oeYLv7q58RoBdjgt\n"
    b"iSyfjnzFhUhzGWpAv9Phft1uv2zcMnYTzdmLcoybIwoUbgtnHxNclw==\n"
    b"-----END RSA PRIVATE KEY-----\n"
)

Placement = Literal["inbox", "junk", "rejected"]
Edit = Callable[[bytes], bytes]


@dataclass(frozen=True)
class Verdict:
    """What one MX decided about one message, and why."""

    host: str  # the MX that decided
    peer: str  # the address the message came from
    helo: str
    mail_from: str
    subject: str
    message_id: str | None
    auth: Authentication
    score: Score
    placement: Placement
    reply: str | None = None  # the 5xx reply when rejected

    @property
    def folder(self) -> str | None:
        """The Maildir folder the message goes to: None for the inbox."""
        return "Junk" if self.placement == "junk" else None

    def summary(self) -> str:
        where = {"inbox": "→ inbox", "junk": "→ Junk folder", "rejected": f"→ {self.reply}"}
        return f"{self.auth.summary()} score={self.score.points:g} {where[self.placement]}"

    def __str__(self) -> str:
        return (
            f"{self.host}: mail from <{self.mail_from}> via {self.helo} [{self.peer}], "
            f"subject {self.subject!r}\n  {self.summary()}"
        )


@dataclass(frozen=True)
class Decision:
    """What the MX does with a message: refuse it, or store ``content`` in ``folder``."""

    verdict: Verdict
    content: bytes  # the message with the added header fields (empty when refused)

    @property
    def refusal(self) -> str | None:
        return self.verdict.reply

    @property
    def folder(self) -> str | None:
        return self.verdict.folder


def _usable(address: str) -> bool:
    """Can this machine send from ``address``? (Linux: any 127.x; macOS: 127.0.0.1 only.)"""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
    except OSError:
        return False
    return True


def _message(content: bytes) -> EmailMessage | None:
    try:  # hostile MIME never reaches the email package (see smtplab.protocol.reader)
        return reader.parse(content)
    except Exception:  # a filter must survive any input; the score just sees less
        return None


def _text_of(message: EmailMessage | None) -> tuple[str, str]:
    """(subject, plain-text body) for the spam filter; empty where unreadable."""
    if message is None:
        return "", ""
    try:
        subject = str(message.get("Subject", ""))
        part = message.get_body(preferencelist=("plain", "html"))
        body = "" if part is None else str(part.get_content())
    except Exception:
        return "", ""
    return subject, body


class Inspector:
    """The checks one MX runs at the end of DATA, before it stores anything."""

    def __init__(self, host: str, lab: LabAuthenticity):
        self.host = host
        self.lab = lab

    def __call__(self, session: Any, envelope: Any, content: bytes) -> Decision:
        peer = session.peer[0] if session.peer else LOOPBACK
        helo = session.host_name or ""
        sender = envelope.mail_from or ""
        return self.inspect(peer, helo, "" if sender == "<>" else sender, content)

    def inspect(self, peer: str, helo: str, mail_from: str, content: bytes) -> Decision:
        """Authenticate, score and place one message received from ``peer``."""
        lab = self.lab
        content, _ = remove_results_claiming(content, self.host)
        auth = authenticate(lab.resolver, peer, helo, mail_from, content)
        subject, body = _text_of(_message(content))
        results = {"spf": auth.spf.result, "dkim": auth.dkim_result, "dmarc": auth.dmarc.result}
        score = lab.spam.score(subject, body, results)
        dmarc = auth.dmarc
        wants = dmarc.disposition if lab.enforce_dmarc else "none"
        reply = None
        if wants == "reject":
            reply = DMARC_REJECT(domain=dmarc.from_domain, policy=dmarc.policy)
        elif score.action == "reject":
            reply = SPAM_REJECT(score=f"{score.points:g}", limit=f"{score.reject_at:g}")
        placement: Placement = (
            "rejected" if reply else "junk" if "quarantine" in (wants, score.action) else "inbox"
        )
        added = ""
        if reply is None:
            added = auth.header(self.host) + score.status_header()
            if placement == "junk":
                added += "X-Spam-Flag: YES\r\n"
        verdict = Verdict(
            self.host,
            peer,
            helo,
            mail_from,
            subject,
            message_id_of(content),
            auth,
            score,
            placement,
            reply,
        )
        lab.verdicts.append(verdict)
        return Decision(verdict, b"" if reply else added.encode() + content)


class LabAuthenticity:
    """SPF, DKIM, DMARC and a spam filter, switched on for one lab (``lab.auth``).

    ``spam`` is the lab's :class:`~smtplab.senderauth.spam.SpamFilter` (change its
    thresholds at will); ``enforce_dmarc`` False makes MXs only report DMARC, as
    a receiver may; ``signing`` False stops DKIM signing.
    """

    def __init__(
        self,
        world: World,
        dns: RecordStore,
        resolver: Resolver,
        clock: LabClock,
        *,
        key_pem: bytes = LAB_DKIM_KEY,
        selector: str = SELECTOR,
    ):
        self.world = world
        self.dns = dns
        self.resolver = resolver
        self.clock = clock
        self.spam = SpamFilter()
        self.enforce_dmarc = True
        self.signing = True
        self.verdicts: collections.deque[Verdict] = collections.deque(maxlen=MAX_VERDICTS)
        self._edits: dict[str, Edit] = {}
        senders = [s for s in world.servers if ROLES[s.role].forwards]
        wanted = {s.host: f"127.0.0.{n}" for n, s in enumerate(senders, start=2)}
        self.note = ""
        if not all(_usable(address) for address in wanted.values()):
            wanted = dict.fromkeys(wanted, LOOPBACK)
            self.note = (
                "This system cannot send from 127.0.0.N, so every lab host sends from "
                "127.0.0.1 and SPF cannot tell them apart from your own client."
            )
        #: The address each sending host connects from; the lab's client uses 127.0.0.1.
        self.addresses: dict[str, str] = wanted
        self.domains = {d for s in senders for d in s.domains}
        #: The DKIM key of each domain that sends mail.
        self.keys = {d: DKIMKey(d, selector, key_pem) for d in sorted(self.domains)}
        self._hosts_of = {h: next(s for s in senders if s.host == h).domains for h in wanted}
        self._publish()

    # -- DNS ----------------------------------------------------------------------
    def _publish(self) -> None:
        for host, address in self.addresses.items():
            self.dns.replace(host, "A", [address])
            self.dns.replace(host, "TXT", ['"v=spf1 a -all"'])  # for its HELO name
        for domain in self.world.domains:
            name = domain.name
            if name in self.domains:
                allowed = sorted(
                    {a for h, a in self.addresses.items() if name in self._hosts_of[h]},
                    key=lambda a: tuple(int(p) for p in a.split(".")),
                )
                spf = " ".join(["v=spf1", *(f"ip4:{a}" for a in allowed), "-all"])
                self.dns.replace(self.keys[name].record_name, "TXT", [self.keys[name].record()])
            else:
                spf = "v=spf1 -all"  # this domain sends no mail at all, and says so
            self.dns.replace(name, "TXT", [f'"{spf}"'])
            self.dns.replace(f"_dmarc.{name}", "TXT", ['"v=DMARC1; p=reject"'])

    def records(self) -> list[str]:
        """The authenticity records now in the lab DNS (TXT), one line each, keys shortened."""
        rows = []
        for record in self.dns.records():
            if record.rdtype != "TXT":
                continue
            value = record.value.replace('" "', "")
            if len(value) > 60:
                value = value[:50] + "…" + value[-4:]
            rows.append(f"{record.name:<30} TXT {value}")
        return rows

    # -- sending --------------------------------------------------------------------
    def address(self, host: str) -> str | None:
        """The address ``host`` sends from (None: not a sending host)."""
        return self.addresses.get(host)

    def key_for(self, host: str, message: bytes) -> DKIMKey | None:
        """The key ``host`` signs ``message`` with: its From domain's, else its own domain's."""
        served = self._hosts_of.get(host, ())
        if not served:
            return None
        froms = from_domains(message)
        domain = froms[0] if froms and froms[0] in served else served[0]
        return self.keys.get(domain)

    def outgoing(self, host: str) -> Edit:
        """What ``host``'s queue does to each message as it leaves: sign it, then any edit."""

        def prepare(message: bytes) -> bytes:
            key = self.key_for(host, message) if self.signing else None
            if key is not None:
                message = dkim_sign(message, key, int(self.clock.now().timestamp()))
            edit = self._edits.get(host)
            return edit(message) if edit is not None else message

        return prepare

    def edit_in_transit(self, host: str, edit: Edit | None) -> None:
        """Change every message ``host`` relays *after* it was signed (None: stop).

        ``edit`` takes and returns the raw message (CRLF line endings), like a
        gateway that tags subjects or appends a footer on the way out.
        """
        if host not in self.addresses:
            raise KeyError(f"{host!r} sends no mail; have {sorted(self.addresses)}")
        if edit is None:
            self._edits.pop(host, None)
        else:
            self._edits[host] = edit

    # -- receiving ------------------------------------------------------------------
    def inspector(self, host: str) -> Inspector:
        return Inspector(host, self)

    def verdict(self, message_id: str) -> Verdict | None:
        """The latest decision any MX made about the message with this Message-ID."""
        found = [v for v in list(self.verdicts) if v.message_id == message_id]
        return found[-1] if found else None

    def check(self, message: bytes, *, peer: str, helo: str, mail_from: str) -> Authentication:
        """Run SPF, DKIM and DMARC on ``message`` as if it arrived from ``peer``."""
        return authenticate(self.resolver, peer, helo, mail_from, message)

    def table(self) -> str:
        rows = [f"{'host':<20}sends from", f"{self.world.client_host:<20}{LOOPBACK} (you)"]
        rows += [f"{host:<20}{address}" for host, address in self.addresses.items()]
        return "\n".join(rows + ([self.note] if self.note else []))

    def __repr__(self) -> str:
        return "\n".join([self.table(), "", *self.records()])
