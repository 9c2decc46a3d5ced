"""Where does mail for a domain go (chapter 05): RFC 5321 §5.1 as a flow chart, with null MX
(RFC 7505), lit along the path one ``lab.route(domain)`` took."""

from __future__ import annotations

from smtplab.dns.route import PermanentRouteError, Route, RouteError
from smtplab.view.pictures.grid import Link, Station, diagram
from smtplab.view.pictures.kit import INK, Canvas, Picture

ROUTE_STATIONS = (
    Station("lookup", (2, 0), ("MX lookup", "ask DNS for the domain's MX records"), "dns"),
    Station("null-mx", (0, 1), ("null MX", "a single MX '0 .'"), "error"),
    Station("mx", (1, 1), ("MX records", "one or more hosts"), "dns"),
    Station("nodata", (2, 1), ("no MX", "the name exists (NODATA)"), "dns"),
    Station("nxdomain", (3, 1), ("NXDOMAIN", "no such domain"), "error"),
    Station("failure", (4, 1), ("no answer", "SERVFAIL, timeout, REFUSED"), "retry"),
    Station("refuse-556", (0, 2), ("556 5.1.10", "bounce: it takes no mail (RFC 7505)"), "error"),
    Station("order", (1, 2), ("order", "by preference, lowest first; ties shuffled"), "dns"),
    Station("implicit", (2, 2), ("implicit MX", "the domain itself, preference 0"), "dns"),
    Station("refuse-550", (3, 2), ("550 5.1.2", "bounce: permanent"), "error"),
    Station("retry-451", (4, 2), ("451 4.4.3", "keep it queued, retry later"), "retry"),
    Station("none-left", (0, 3), ("550 5.4.4", "no host closer than me: bounce"), "error"),
    Station("self", (1, 3), ("am I listed?", "a relay drops its own and worse records"), "dns"),
    Station("addresses", (1, 4), ("A/AAAA", "the addresses of each host"), "dns", span=2),
    Station("route", (1, 5), ("route", "try the hosts in order; on failure the next"), "server"),
    Station(
        "no-address", (2, 5), ("no address", "MX hosts: 451 4.4.4; implicit: 550 5.1.2"), "error"
    ),
)
ROUTE_LINKS = (
    *(
        Link("lookup", key, tone="dns")
        for key in ("null-mx", "mx", "nodata", "nxdomain", "failure")
    ),
    Link("null-mx", "refuse-556", tone="error"),
    Link("mx", "order", tone="dns"),
    Link("nodata", "implicit", tone="dns"),
    Link("nxdomain", "refuse-550", tone="error"),
    Link("failure", "retry-451", tone="retry"),
    Link("order", "self", tone="dns"),
    Link("self", "none-left", tone="error"),
    Link("self", "addresses", tone="dns"),
    Link("implicit", "addresses", tone="dns"),
    Link("addresses", "route", tone="server"),
    Link("addresses", "no-address", tone="error"),
)
ANSWER_PATHS = {  # how DNS answered the MX question -> the stations down to the result
    "mx": ("lookup", "mx", "order", "self", "addresses"),
    "implicit-mx": ("lookup", "nodata", "implicit", "addresses"),
    "null-mx": ("lookup", "null-mx", "refuse-556"),
    "nxdomain": ("lookup", "nxdomain", "refuse-550"),
    "failure": ("lookup", "failure", "retry-451"),
    "no-closer": ("lookup", "mx", "order", "self", "none-left"),
}


def _answer(outcome: Route | RouteError) -> str | None:
    """How DNS answered the MX question: a key of ANSWER_PATHS (None: not a domain name).

    A Route, or an error that carries one, says it by its method; the others say
    it in the first line of their explanation (``MX lookup D → NXDOMAIN: ...``).
    After MX records, only a relay that found no host closer than itself fails
    for good (:func:`smtplab.dns.route.closer_than`); any other failure there is DNS's.
    """
    route = outcome if isinstance(outcome, Route) else outcome.route
    if route is not None:
        return route.method
    asked = outcome.explanation[0] if outcome.explanation else ""
    if not asked.startswith("MX lookup "):
        return None
    if "→ NXDOMAIN" in asked:
        return "nxdomain"
    if "→ no MX records" in asked:
        return "implicit-mx"
    return "no-closer" if isinstance(outcome, PermanentRouteError) else "failure"


def _route_path(outcome: Route | RouteError) -> tuple[str, ...]:
    """The stations of the §5.1 flow chart a route or route error went through."""
    path = ANSWER_PATHS.get(_answer(outcome) or "", ())
    if path and path[-1] == "addresses":
        path += ("route",) if isinstance(outcome, Route) else ("no-address",)
    return path


def route_picture(outcome: Route | RouteError | None = None) -> Picture:
    """RFC 5321 §5.1 as a flow chart, lit along the path ``outcome`` took.

    ``outcome`` is what ``lab.route(domain)`` returned or raised (a Route, or a
    RouteError with its reply); without one, the chart alone.
    """
    canvas = Canvas("route", "Where does the mail go? RFC 5321 §5.1, with null MX (RFC 7505)")
    lit = _route_path(outcome) if outcome is not None else None
    words = diagram(canvas, ROUTE_STATIONS, ROUTE_LINKS, columns=5, gap_x=16, gap_y=28, lit=lit)
    if outcome is None:
        return canvas.finish("How a sending server finds where mail for a domain goes.", words)
    told = [*outcome.explanation]
    if isinstance(outcome, RouteError):
        told.append(f"reply: {outcome.reply}")
    return canvas.finish("\n".join(told), words, colour=INK)
