"""Where does mail for a domain go? The route selection of RFC 5321 §5.1, step by step.

Theory of operation
-------------------
A sending server asks DNS for the domain's MX records, orders them by preference
(lowest first; equal preferences in random order to spread load), and looks up the
addresses of each host. With no MX records the domain itself is the "implicit MX"
with preference 0. A single MX "0 ." is a null MX (RFC 7505): the domain takes no mail.
A relay that finds itself in the list keeps only the hosts it prefers to itself, so a
backup MX hands mail to the primary and never to itself or another backup (§5.1).

`resolve_route` returns a `Route` recording every answer and one explanation line
per step, so a reader can see which record sent the mail where. When no route
exists it raises a `RouteError` that carries the SMTP reply the sender would report:
permanent (5xx: null MX, no such domain) or temporary (4xx: DNS failed, try later).
A REFUSED answer is temporary too: a resolver that every server refuses cannot
tell whether the domain exists (dnspython raises NoNameservers, as glibc's
resolver reports "try again"), and RFC 5321 §5.1 queues on a temporary error.

All DNS I/O is in `_ask`, one question at a time through the resolver it is given
(the lab's, from `smtplab.dns.server.make_resolver`); `order_mx` is the pure ordering rule.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import dns.exception
import dns.name
import dns.resolver

from smtplab.errors import SmtplabError
from smtplab.protocol import replies
from smtplab.protocol.replies import SMTPReply

Method = Literal["mx", "implicit-mx", "null-mx"]
#: How the last line of an explanation, its conclusion, begins.
CONCLUSION = "route: "
_TEMPORARY = ("timeout", "SERVFAIL", "REFUSED", "DNS error")


@dataclass(frozen=True)
class Candidate:
    """One host to try, with the preference that placed it and its addresses."""

    host: str
    preference: int
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class Route:
    """The outcome of an MX lookup: hosts to try in order, and how we chose them."""

    domain: str
    method: Method
    mx: tuple[tuple[int, str], ...] | None  # the MX answer, sorted; None if there was none
    candidates: tuple[Candidate, ...]
    explanation: tuple[str, ...]
    #: Why the asking relay's own record and the ones after it were dropped (§5.1), if so.
    discarded: str | None = None

    @property
    def hosts(self) -> list[str]:
        return [c.host for c in self.candidates]

    @property
    def decisions(self) -> list[str]:
        """What a queue reports of it, in its "route" steps: a discarded record, then the
        hosts it will try (the conclusion without its own "route: ")."""
        plan = self.explanation[-1].removeprefix(CONCLUSION)
        return [line for line in (self.discarded, plan) if line]

    def __str__(self) -> str:
        return "\n".join(self.explanation)


class RouteError(SmtplabError):
    """No route: carries the SMTP reply (code, enhanced status, text) a sender would give,
    one of the table's (:mod:`smtplab.protocol.replies`) with its fields filled in."""

    def __init__(
        self,
        reply: SMTPReply,
        explanation: Iterable[str] = (),
        route: Route | None = None,
        **fields: object,
    ) -> None:
        self.code, self.status = reply.code, reply.enhanced or ""
        self.text = reply.text.format(**fields)
        self.route, self.explanation = route, tuple(explanation)
        super().__init__(self.reply)

    @property
    def reply(self) -> str:
        return f"{self.code} {self.status} {self.text}"


class PermanentRouteError(RouteError):
    """5xx: retrying cannot help (RFC 5321 §4.2.1); bounce now."""


class TemporaryRouteError(RouteError):
    """4xx: DNS may recover; keep the message queued and retry later."""


def no_route(
    reply: SMTPReply, explanation: Iterable[str] = (), route: Route | None = None, **fields: object
) -> RouteError:
    """The error for ``reply``: permanent for a 5yz, temporary for a 4yz (RFC 5321 §4.2.1)."""
    kind = PermanentRouteError if reply.code >= 500 else TemporaryRouteError
    return kind(reply, explanation, route, **fields)


def order_mx(records: Iterable[tuple[int, str]], rng: random.Random) -> list[tuple[int, str]]:
    """Lowest preference first; equal preferences shuffled to spread load (RFC 5321 §5.1).

    Ties are sorted before shuffling so the result depends only on the records and
    `rng`, not on the order the DNS server happened to send them in.
    """
    records = list(records)
    ordered: list[tuple[int, str]] = []
    for pref in sorted({p for p, _ in records}):
        tied = sorted(host for p, host in records if p == pref)
        rng.shuffle(tied)
        ordered += [(pref, host) for host in tied]
    return ordered


def closer_than(
    local: str, hosts: list[tuple[int, str]], domain: str, steps: list[str]
) -> list[tuple[int, str]]:
    """The hosts a relay named ``local`` may send to: if it is in the list itself, only those
    it prefers to itself (RFC 5321 §5.1: its own record and every record of equal or higher
    preference value are discarded). None left: the message is undeliverable (PermanentRouteError).
    """
    own = [p for p, h in hosts if h.lower().rstrip(".") == local.lower().rstrip(".")]
    if not own:
        return hosts
    kept = [(p, h) for p, h in hosts if p < min(own)]
    steps.append(
        f"{local} is itself in the list at preference {min(own)}: discard it and every "
        f"record of preference {min(own)} or more (RFC 5321 §5.1)"
        + (": " + ", ".join(f"{h} ({p})" for p, h in kept) + " left" if kept else "")
    )
    if not kept:
        steps.append("no record left: the message is undeliverable (RFC 5321 §5.1)")
        raise no_route(replies.NO_CLOSER_MX, steps, domain=domain, local=local)
    return kept


def _show(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True)


def _ask(resolver: dns.resolver.Resolver, name: str, rdtype: str) -> tuple[str, list[Any]]:
    """The module's only DNS I/O: one question; the outcome as a word and the records."""
    try:
        return "ok", list(resolver.resolve(name, rdtype, search=False))
    except dns.resolver.NXDOMAIN:
        return "NXDOMAIN", []
    except dns.resolver.NoAnswer:
        return "NODATA", []
    except dns.exception.Timeout:
        return "timeout", []
    except dns.resolver.NoNameservers as error:  # every server failed or refused: try later
        answers = {str(e[3]) for e in error.kwargs.get("errors", [])}
        return (answers.pop() if len(answers) == 1 else "SERVFAIL"), []
    except dns.exception.DNSException:
        return "DNS error", []


def resolve_route(
    domain: str,
    resolver: dns.resolver.Resolver,
    rng: random.Random | None = None,
    *,
    local: str | None = None,
) -> Route:
    """Find the hosts that accept mail for `domain`, in the order to try them.

    ``local`` is the name of the relay asking: it never sends to itself or to a host it
    prefers less (:func:`closer_than`)."""
    rng = rng if rng is not None else random.Random()
    try:
        d = _show(dns.name.from_text(domain))
    except dns.exception.DNSException as exc:
        raise no_route(replies.NOT_A_DOMAIN, domain=domain, why=exc) from None
    steps: list[str] = []
    outcome, rdatas = _ask(resolver, d, "MX")
    mx: tuple[tuple[int, str], ...] | None = None
    if outcome == "ok":
        # Sorted: DNS servers shuffle answers, and a reader should see the same text each run.
        mx = tuple(sorted((r.preference, _show(r.exchange)) for r in rdatas))
        steps.append(f"MX lookup {d} → " + ", ".join(f"{p} {h}" for p, h in mx))
        if len(mx) == 1 and mx[0][1] == ".":
            steps.append(f"a single MX '{mx[0][0]} .' is a null MX: {d} accepts no mail (RFC 7505)")
            route = Route(d, "null-mx", mx, (), tuple(steps))
            raise no_route(replies.NULL_MX, steps, route)
        if any(h == "." for _, h in mx):
            steps.append("ignore MX '.': a null MX must be the only MX record (RFC 7505 §3)")
        method: Method = "mx"
        hosts = order_mx([(p, h) for p, h in mx if h != "."], rng)
        steps.append(
            "order by preference, lowest first, equal preferences shuffled (RFC 5321 §5.1): "
            + ", ".join(f"{h} ({p})" for p, h in hosts)
        )
    elif outcome == "NXDOMAIN":
        steps.append(f"MX lookup {d} → NXDOMAIN: the domain does not exist")
        raise no_route(replies.NO_SUCH_DOMAIN, steps, domain=d)
    elif outcome == "NODATA":
        steps.append(
            f"MX lookup {d} → no MX records: {d} itself is the implicit MX, "
            "preference 0 (RFC 5321 §5.1)"
        )
        method, hosts = "implicit-mx", [(0, d)]
    else:
        steps.append(f"MX lookup {d} → {outcome}: cannot tell where mail goes yet")
        raise no_route(replies.MX_LOOKUP_FAILED, steps, domain=d, outcome=outcome)

    before = len(steps)
    if local is not None:
        hosts = closer_than(local, hosts, d, steps)
    discarded = steps[before] if len(steps) > before else None
    candidates, temporary = [], False
    for pref, host in hosts:
        addresses: list[str] = []
        problems: list[str] = []
        for rdtype in ("A", "AAAA"):
            outcome, rdatas = _ask(resolver, host, rdtype)
            addresses += [r.address for r in rdatas]
            temporary |= outcome in _TEMPORARY
            if outcome == "NXDOMAIN":
                problems = ["NXDOMAIN"]
                break
            if outcome != "ok" and outcome != "NODATA":
                problems.append(f"{rdtype} {outcome}")
        if addresses:
            steps.append(f"A/AAAA {host} → " + ", ".join(addresses))
            candidates.append(Candidate(host, pref, tuple(addresses)))
        else:
            why = ", ".join(problems) or "no A/AAAA records"
            steps.append(f"A/AAAA {host} → {why}: skip this host")

    if not candidates and method == "implicit-mx":
        if temporary:
            raise no_route(replies.ADDRESS_LOOKUP_FAILED, steps, domain=d)
        raise no_route(replies.NO_MX_NO_ADDRESS, steps, domain=d)
    if not candidates:
        steps.append("no MX host has an address: report an error (RFC 5321 §5.1)")
        route = Route(d, method, mx, (), tuple(steps))
        raise no_route(replies.NO_MX_ADDRESS, steps, route, domain=d)
    plan = ", then ".join(f"{c.host} [{', '.join(c.addresses)}]" for c in candidates)
    steps.append(f"{CONCLUSION}try {plan}; on failure move to the next host (RFC 5321 §5.1)")
    return Route(d, method, mx, tuple(candidates), tuple(steps), discarded)
