"""Three identities of a message and DMARC alignment (chapter 09).

SPF checks the connection's IP against the MAIL FROM domain, DKIM names its
domain in ``d=``, the reader sees the From: domain; DMARC passes when SPF or DKIM
passes for a domain aligned with From: (RFC 7489 §4.2).
"""

from __future__ import annotations

from smtplab.senderauth.checks import Authentication
from smtplab.senderauth.wiring import Verdict
from smtplab.view.pictures.grid import Link, Station, diagram
from smtplab.view.pictures.kit import Canvas, Picture


def _result_tone(result: str) -> str:
    tones = {"pass": "server", "none": "info", "neutral": "info", "softfail": "retry"}
    return tones.get(result, "retry" if result == "temperror" else "error")


def _alignment(aligned: bool, result: str, dmarc: str) -> tuple[str, str]:
    """The label and tone of one arrow into DMARC: an aligned pass, or why not."""
    if dmarc not in ("pass", "fail"):
        return "not evaluated", "info"
    if aligned:
        return "aligned pass ✓", "server"
    return ("passed, not aligned ✗" if result == "pass" else f"{result} ✗"), "error"


def _asks(result: str, disposition: str) -> str:
    """What DMARC's verdict leads to, in words."""
    if result == "pass":
        return "one aligned pass is enough"
    return f"the policy asks: {disposition}" if result == "fail" else ""


def identities_picture(checked: Verdict | Authentication) -> Picture:
    """The three identities of a message and how DMARC ties them to From:.

    The connection's IP is checked by SPF against the envelope's MAIL FROM
    domain; a DKIM signature names its domain in ``d=``; the reader sees the
    ``From:`` domain. DMARC passes when SPF or DKIM passes for a domain aligned
    with From: (RFC 7489 §4.2). Takes a ``lab.auth.verdict(...)`` (then also
    where the message went) or its ``.auth``.
    """
    verdict = checked if isinstance(checked, Verdict) else None
    auth = checked.auth if isinstance(checked, Verdict) else checked
    spf, dmarc = auth.spf, auth.dmarc
    passing = [d for d in auth.dkim if d.result == "pass"]
    signature = passing[0] if passing else auth.dkim[0] if auth.dkim else None
    spf_label, spf_tone = _alignment(dmarc.spf_aligned, spf.result, dmarc.result)
    dkim_label, dkim_tone = _alignment(dmarc.dkim_aligned, auth.dkim_result, dmarc.result)
    evaluated = dmarc.result in ("pass", "fail")
    canvas = Canvas("identities", f"Three identities and DMARC: {auth.summary()}")
    stations = [
        Station(
            "envelope",
            (0, 0),
            (
                "MAIL FROM" if spf.identity == "mailfrom" else "HELO",
                spf.domain or "(none)",
                f"sent from {spf.ip}",
            ),
            "client",
        ),
        Station(
            "signature",
            (1, 0),
            ("DKIM-Signature", f"d={signature.domain}", f"s={signature.selector}")
            if signature
            else ("DKIM-Signature", "none: not signed"),
            "client",
            dashed=signature is None,
        ),
        Station(
            "from",
            (2, 0),
            ("From:", dmarc.from_domain or "(none)", "what the reader sees"),
            "client",
        ),
        Station("spf", (0, 1), ("SPF", f"spf={spf.result}", spf.comment), _result_tone(spf.result)),
        Station(
            "dkim",
            (1, 1),
            ("DKIM", f"dkim={auth.dkim_result}", signature.reason if signature else ""),
            _result_tone(auth.dkim_result),
        ),
        Station(
            "policy",
            (2, 1),
            (
                "DMARC record",
                f"for {dmarc.from_domain}",
                f"p={dmarc.policy}" if evaluated else dmarc.reason,
            ),
            "dns",
        ),
        Station(
            "dmarc",
            (0, 2),
            (
                f"DMARC: {dmarc.result}",
                f"SPF {spf_label}; DKIM {dkim_label}",
                _asks(dmarc.result, dmarc.disposition),
            ),
            _result_tone(dmarc.result),
            span=3,
        ),
    ]
    links = [
        Link("envelope", "spf", ("IP and domain",), "client"),
        Link("signature", "dkim", ("key in DNS",), "client"),
        Link("from", "policy", ("its policy",), "dns"),
        Link("spf", "dmarc", (spf_label,), spf_tone),
        Link("dkim", "dmarc", (dkim_label,), dkim_tone),
        Link("policy", "dmarc", ("From: domain",), "dns"),
    ]
    if verdict is not None:
        placement = verdict.placement
        where = {"inbox": "the inbox", "junk": "the Junk folder"}.get(placement, verdict.reply)
        stations.append(
            Station(
                "placement",
                (0, 3),
                (f"{verdict.host} decided", f"→ {where}"),
                "server" if placement == "inbox" else "error",
                span=3,
            )
        )
        links.append(Link("dmarc", "placement", (), "info"))
    words = diagram(canvas, stations, links, columns=3, gap_x=48, gap_y=44)
    caption = (
        "DMARC needs one aligned pass: SPF or DKIM passing for the From: domain (RFC 7489 §4.2)."
    )
    return canvas.finish(caption, words)
