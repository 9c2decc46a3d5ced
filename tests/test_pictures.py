"""The chapters' pictures, drawn from a real lab: what they say, what they light, how they scale.

Every picture is parsed as XML and checked for what could be wrong: the hosts
and ports it names, the order of hops, which path of a flow chart is lit, where
TLS starts, who is responsible after each step. The browser test renders each
one in Chromium in a 930-px pane (the dashboard's width) and saves a PNG to
``test-artifacts/pictures/``.
"""

from __future__ import annotations

import base64
import importlib.util
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from email.message import EmailMessage
from pathlib import Path

import pytest
from IPython.core.formatters import DisplayFormatter
from test_browser import CHROMIUM, CHROMIUM_ARGS
from test_reader import nested_multipart

import smtplab
from smtplab import (
    REPLY_CLASSES,
    Lab,
    PermanentRouteError,
    Picture,
    RetryPolicy,
    RouteError,
    World,
    default_world,
    reply_meaning,
)
from smtplab.dns.route import resolve_route
from smtplab.view.pictures import journey_svg, sequence_svg
from smtplab.world import Domain, ServerSpec, User

SVG = "{http://www.w3.org/2000/svg}"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "pictures"
PANE = 930  # the dashboard's pane in JupyterLab
FAST = RetryPolicy(first_delay=0.2, max_attempts=3, max_age=10)
BUSY = "450 4.2.0 Mailbox temporarily unavailable, try again later"


def svg_root(svg: str) -> ET.Element:
    """The root of an SVG drawing that scales: viewBox, width 100%, at most its own width."""
    root = ET.fromstring(svg)
    _, _, width, height = (int(n) for n in root.get("viewBox", "").split())
    assert root.get("width") == "100%" and "height" not in root.attrib
    assert root.get("style") == f"max-width:{width}px" and height > 0
    return root


def parse(picture: Picture) -> ET.Element:
    """The picture's root, after the checks every picture must pass."""
    assert isinstance(picture, Picture)
    root = svg_root(str(picture))
    assert picture._repr_svg_() == str(picture) == picture.svg
    assert root.findtext(f"{SVG}title") == picture.title and picture.title
    assert root.findtext(f"{SVG}desc")
    assert repr(picture) == f"<Picture: {picture.title}>"
    return root


def texts(root: ET.Element, css: str | None = None) -> list[str]:
    """Every text in drawing order, or those whose class holds ``css``."""
    return [
        t.text or ""
        for t in root.iter(f"{SVG}text")
        if css is None or css in (t.get("class") or "").split()
    ]


def groups(root: ET.Element, css: str) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if css in (g.get("class") or "").split()]


def lit(root: ET.Element) -> set[str]:
    """The stations of a diagram drawn lit: their key is the class after "station"."""
    return {
        g.get("class", "").split()[1] for g in groups(root, "lit") if "station" in g.get("class")
    }


def station_text(root: ET.Element, key: str) -> list[str]:
    (group,) = [g for g in groups(root, "station") if g.get("class", "").split()[1] == key]
    return [t.text or "" for t in group.iter(f"{SVG}text")]


def desc(root: ET.Element) -> str:
    return root.findtext(f"{SVG}desc") or ""


# -- the pictures are plain functions ---------------------------------------------------------
def test_the_pictures_and_drawings_import_no_ipywidgets():
    """A chapter, nbconvert or an application can draw without the widget stack."""
    code = (
        "import sys; import smtplab.view.pictures; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ipywidgets', 'traitlets')))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert shown.strip() == "[]"


# -- the drawings of the Path tab scale too ----------------------------------------------------
def test_journey_and_sequence_drawings_scale_to_their_container(lab):
    result = lab.send("alice@example.com", "bob@example.org", "Hi", "Hello")
    journey = result.journey.wait()
    svg_root(journey_svg(journey))
    svg_root(sequence_svg(result.transcript))


# -- the time of a step ----------------------------------------------------------------------
def test_a_step_records_when_it_happened_on_the_clock_of_retry_at():
    with Lab(name="step-times", retry=FAST) as lab:
        for host in ("mx1.example.org", "mx2.example.org"):  # else mx2 takes it at once
            lab.server(host).fail("RCPT", "451 4.7.1 Greylisted, try again later")
        before = time.time()
        journey = lab.send("alice@example.com", "bob@example.org", "Hi", "Hello").journey.wait()
        after = time.time()
    stamps = [step.at for step in journey.steps]
    assert stamps == sorted(stamps) and before <= stamps[0] and stamps[-1] <= after
    retry = next(step for step in journey.steps if step.kind == "retry")
    assert retry.retry_at is not None and retry.retry_at <= retry.at + FAST.first_delay
    assert "at=" not in repr(retry) and str(retry).startswith("retry ")


# -- 00, 02, 11: drawn from the world ----------------------------------------------------------
def test_the_journey_overview_names_the_worlds_hosts_ports_and_mx_records(lab):
    picture = smtplab.journey_overview_picture(lab)
    root = parse(picture)
    assert picture.svg == smtplab.journey_overview_picture(lab.world).svg  # a lab draws its world
    assert station_text(root, "client") == [
        "1 mail program",
        "client.example.com",
        "alice@example.com",
    ]
    assert station_text(root, "submission")[1] == "smtp.example.com"
    assert "→ 10 mx1.example.org," in station_text(root, "dns")
    assert station_text(root, "mx")[1:3] == ["mx1.example.org", "preference 10"]
    assert "mx2.example.org (20)" in station_text(root, "mx")
    assert station_text(root, "retrieval")[1:] == ["imap.example.com", "pop.example.com"]
    assert {"587", "25", "143", "110", "4 MX?"} <= set(texts(root))
    assert picture.title == "The journey of a message: alice@example.com → bob@example.org"


def small_world() -> World:
    return World(
        domains=(
            Domain("shop.test", (User("sales@shop.test", "sales-pw"),), ((5, "in.shop.test"),)),
            Domain(
                "home.test",
                (User("postmaster@home.test", "pm-pw"), User("eve@home.test", "eve-pw")),
                ((7, "mail.home.test"),),
            ),
        ),
        servers=(
            ServerSpec("out.shop.test", "submission", ("shop.test",)),
            ServerSpec("in.shop.test", "mx", ("shop.test",)),
            ServerSpec("mail.home.test", "mx", ("home.test",)),
        ),
        client_host="laptop.shop.test",
    )


def test_world_pictures_follow_another_world():
    world = small_world()
    overview = parse(smtplab.journey_overview_picture(world))
    assert station_text(overview, "client")[1:] == ["laptop.shop.test", "sales@shop.test"]
    assert station_text(overview, "mx")[1:] == ["mail.home.test", "preference 7"]
    assert station_text(overview, "maildir")[1] == "eve@home.test"  # not the postmaster
    ports = parse(smtplab.ports_picture(world))
    assert station_text(ports, "submissions")[1] == "(none in this world)"
    assert [k for k in ("mx-1", "mx-2") if groups(ports, k)] == ["mx-1"]
    agents = parse(smtplab.mail_agents_picture(world))
    assert station_text(agents, "msa")[1] == "out.shop.test"
    assert station_text(agents, "store")[-1] == "eve@home.test"


def test_the_ports_picture_shows_587_465_and_25_to_each_mx_in_preference_order(lab):
    root = parse(smtplab.ports_picture(lab))
    assert station_text(root, "submission") == [
        "587 submission",
        "smtp.example.com",
        "STARTTLS, then AUTH",
    ]
    assert station_text(root, "submissions")[:2] == ["465 submissions", "smtps.example.com"]
    assert station_text(root, "mx-1")[:2] == ["25 MX", "mx1.example.org"]
    assert station_text(root, "mx-1")[2:] == ["preference 10"]
    assert station_text(root, "mx-2")[:2] == ["25 backup MX", "mx2.example.org"]
    (backup,) = [g for g in groups(root, "station") if "mx-2" in g.get("class")]
    assert backup.find(f"{SVG}rect").get("stroke-dasharray")  # the backup is dashed
    assert len(groups(root, "queue-mx-2")) == 1


def test_the_agents_picture_names_the_running_pop3_and_imap_listeners():
    with Lab(name="pictures-agents", retrieval=True) as lab:
        running = parse(smtplab.mail_agents_picture(lab))
    access = station_text(running, "access")
    assert access == ["POP3 / IMAP", "IMAP imap.example.com", "POP3 pop.example.com"]
    assert "imap, imaps, pop3, pop3s running" in desc(running)
    stopped = station_text(parse(smtplab.mail_agents_picture(default_world())), "access")
    assert stopped[-1] == "(not running)"
    assert station_text(running, "mda")[1] == "mx1.example.org"


# -- 02: in the clear, then encrypted ---------------------------------------------------------
def columns(root: ET.Element) -> list[list[tuple[str, str]]]:
    """Per connection, its rows in order: (band, text), the TLS bar as ("tls", "")."""
    out = []
    for group in groups(root, "connection"):
        rows: list[tuple[str, str]] = []
        elements = list(group)
        for element in elements:
            css = (element.get("class") or "").split()
            if "tls-start" in css:
                rows.append(("tls", ""))
            elif "wire" in css:
                rows.append((css[1], ""))
            elif "event" in css:
                rows[-1] = (rows[-1][0], element.text or "")
        out.append(rows)
    return out


def test_the_tls_timeline_shows_what_crossed_in_the_clear_on_587_and_nothing_on_465(lab):
    starttls = lab.send("alice@example.com", "bob@example.org", "587", "x").transcript
    implicit = lab.send(
        "alice@example.com", "bob@example.org", "465", "x", via="smtps.example.com"
    ).transcript
    picture = smtplab.tls_timeline_picture(starttls, implicit)
    assert picture.svg == smtplab.tls_timeline_picture(starttls, implicit).svg
    on_587, on_465 = columns(parse(picture))
    boundary = on_587.index(("tls", ""))
    assert [text for _, text in on_587[:boundary]] == [
        "← 220 smtp.example.com ESMTP smtplab",
        "→ EHLO client.example.com",
        "← 250-smtp.example.com (+8 lines)",
        "→ STARTTLS",
        "← 220 2.0.0 Ready to start TLS",
    ]
    assert {band for band, _ in on_587[:boundary]} == {"clear"}
    assert {band for band, _ in on_587[boundary + 1 :]} == {"encrypted"}
    assert on_587[boundary + 1][1] == "→ EHLO client.example.com"
    assert "→ AUTH PLAIN ********" in [text for _, text in on_587[boundary:]]
    assert on_465[0] == ("tls", "") and {b for b, _ in on_465[1:]} == {"encrypted"}
    words = desc(parse(picture))
    assert "2 commands (EHLO, STARTTLS) and 3 replies crossed in the clear" in words
    assert "smtps.example.com: TLS from the first byte; nothing crossed in the clear" in words


def test_a_hop_without_tls_counts_the_message_apart_from_the_commands(lab):
    """Chapter 08: the relay's hop to an MX that offers no STARTTLS is all in the clear."""
    lab.server("mx1.example.org").disable("STARTTLS")
    plain = lab.send("alice@example.com", "bob@example.org", "25", "x").journey.wait().hops()[-1]
    picture = smtplab.tls_timeline_picture(plain)
    (rows,) = columns(parse(picture))
    summary = next(line for line in plain.to_text().splitlines() if "[message data" in line)
    assert ("clear", "→ " + summary.removeprefix(" -> ")) in rows  # as the transcript counts it
    words = desc(parse(picture))
    assert (
        "mx1.example.org: 5 commands (EHLO, MAIL, RCPT, DATA, QUIT), the message itself "
        "and 7 replies crossed in the clear, all of it: no TLS."
    ) in words


def test_a_login_before_starttls_is_marked_and_its_password_stays_masked(lab):
    secret = "AGFsaWNlQGV4YW1wbGUuY29tAGFsaWNlLWxhYi1wdw=="
    with lab.talk("smtp.example.com") as talk:
        talk.say("EHLO client.example.com")
        talk.say(f"AUTH PLAIN {secret}")
        talk.starttls()
    picture = smtplab.tls_timeline_picture(talk.transcript)
    (rows,) = columns(parse(picture))
    assert rows[3] == ("clear", "→ ⚠ AUTH PLAIN ********")
    assert rows[4][1].startswith("← 538 5.7.11")
    assert secret not in picture.svg
    assert "AUTH went before TLS" in desc(parse(picture))


# -- 04: the MIME tree --------------------------------------------------------------------------
def rich_message(filename: str = "actions.csv") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "alice@example.com"
    message["To"] = "bob@example.org"
    message["Subject"] = "Minutes"
    message.set_content("Hi Bob,\n\nthe café at noon\n", cte="quoted-printable")
    message.add_alternative("<p>the <b>café</b></p>\n", subtype="html", cte="quoted-printable")
    message.add_attachment(
        b"item,owner\nbudget,alice\n", maintype="text", subtype="csv", filename=filename
    )
    return message


def parts(root: ET.Element) -> list[tuple[int, list[str]]]:
    return [
        (
            int(g.get("class", "").split()[1].removeprefix("depth-")),
            [t.text or "" for t in g.iter(f"{SVG}text")],
        )
        for g in groups(root, "part")
    ]


def test_the_mime_tree_of_a_delivered_message_nests_alternative_and_attachment(lab):
    lab.send("alice@example.com", "bob@example.org", message=rich_message(), via="mx1.example.org")
    stored = lab.mailbox("bob@example.org")[-1]
    picture = smtplab.mime_tree_picture(stored)
    tree = parts(parse(picture))
    assert [(depth, lines[0]) for depth, lines in tree] == [
        (0, "message: multipart/mixed"),
        (1, "multipart/alternative"),
        (2, "text/plain"),
        (2, "text/html"),
        (1, "text/csv"),
    ]
    assert tree[0][1][1] == "2 parts · Subject: Minutes" and tree[1][1][1] == "2 parts"
    decoded = len("Hi Bob,\n\nthe café at noon\n".encode())
    assert tree[2][1][1].startswith("charset=utf-8 · quoted-printable, ")
    assert tree[2][1][1].endswith(f"({decoded} decoded)")
    assert tree[4][1][1].startswith("attachment: actions.csv · base64, ")
    assert smtplab.mime_tree_picture(stored.raw).svg == picture.svg
    assert [lines[0] for _, lines in parts(parse(smtplab.mime_tree_picture(stored.message)))] == [
        lines[0] for _, lines in tree
    ]


def test_a_hostile_message_is_a_notice_and_odd_file_names_are_escaped():
    hostile = smtplab.mime_tree_picture(nested_multipart(60))
    ((_, lines),) = parts(parse(hostile))
    assert lines[1].startswith("could not be displayed: MIME parts nested more than 50 deep")
    odd = smtplab.mime_tree_picture(rich_message('a<b>&"c".csv'))
    assert parts(parse(odd))[-1][1][1].startswith('attachment: a<b>&"c".csv')
    assert "<b>&" not in odd.svg


def test_a_message_built_in_memory_is_drawn_only_up_to_the_readers_part_limit():
    message = EmailMessage()
    message.set_content("many attachments")
    for n in range(250):
        message.add_attachment(
            b"x", maintype="application", subtype="octet-stream", filename=f"{n}.bin"
        )
    tree = parts(parse(smtplab.mime_tree_picture(message)))
    assert len(tree) == 201
    assert tree[-1][1] == ["…", "52 more parts not shown (at most 200)"]


# -- 05: the §5.1 flow chart, lit along the path taken -----------------------------------------
def outcome(lab: Lab, domain: str):
    try:
        return lab.route(domain)
    except RouteError as error:
        return error


def test_the_route_chart_lights_the_path_each_dns_answer_took(lab):
    lab.dns.add_zone("example.net")
    lab.dns.add("example.net", "A", "127.0.0.1")
    lab.dns.add_zone("nomail.example")
    lab.dns.add("nomail.example", "MX", "0 .")
    lab.dns.add_zone("ghost.example")
    lab.dns.add("ghost.example", "MX", "10 nowhere.ghost.example.")
    lab.dns.add_zone("empty.example")
    lab.dns.add_zone("broken.example")
    lab.dns.set_fault("broken.example", "servfail")
    expected = {
        "example.org": ("lookup", "mx", "order", "self", "addresses", "route"),
        "example.net": ("lookup", "nodata", "implicit", "addresses", "route"),
        "nomail.example": ("lookup", "null-mx", "refuse-556"),
        "nothere.example.org": ("lookup", "nxdomain", "refuse-550"),
        "broken.example": ("lookup", "failure", "retry-451"),
        "ghost.example": ("lookup", "mx", "order", "self", "addresses", "no-address"),
        "empty.example": ("lookup", "nodata", "implicit", "addresses", "no-address"),
    }
    replies = {}
    for domain, path in expected.items():
        found = outcome(lab, domain)
        root = parse(smtplab.route_picture(found))
        assert lit(root) == set(path), domain
        assert len(groups(root, "lit")) == len(path) + len(path) - 1  # boxes and arrows
        replies[domain] = getattr(found, "reply", None)
        if replies[domain]:
            assert f"reply: {replies[domain]}" in texts(root, "caption")
    assert replies == {
        "example.org": None,
        "example.net": None,
        "nomail.example": "556 5.1.10 Recipient address has null MX",
        "nothere.example.org": "550 5.1.2 Domain nothere.example.org does not exist",
        "broken.example": "451 4.4.3 DNS lookup of MX for broken.example failed (SERVFAIL); "
        "will retry",
        "ghost.example": "451 4.4.4 No MX host of ghost.example has an address; will retry",
        "empty.example": "550 5.1.2 Domain empty.example has no MX and no A/AAAA records",
    }


def test_the_route_chart_lights_a_relay_that_drops_itself_or_finds_no_closer_mx(lab):
    backup = resolve_route("example.org", lab.resolver, local="mx2.example.org")
    root = parse(smtplab.route_picture(backup))
    assert lit(root) == {"lookup", "mx", "order", "self", "addresses", "route"}
    assert backup.discarded in root.findtext(f"{SVG}desc")
    lab.dns.replace("example.org", "MX", ["10 mx2.example.org."])
    with pytest.raises(PermanentRouteError) as alone:
        resolve_route("example.org", lab.resolver, local="mx2.example.org")
    root = parse(smtplab.route_picture(alone.value))
    assert lit(root) == {"lookup", "mx", "order", "self", "none-left"}
    assert f"reply: {alone.value.reply}" in texts(root, "caption")
    assert alone.value.reply.startswith("550 5.4.4 ")


def test_the_route_chart_alone_lights_nothing():
    root = parse(smtplab.route_picture())
    assert lit(root) == set() and not groups(root, "lit")
    reply, *words = station_text(root, "refuse-556")
    assert (reply, " ".join(words)) == ("556 5.1.10", "bounce: it takes no mail (RFC 7505)")


# -- 06: store and forward ----------------------------------------------------------------------
def hop_labels(root: ET.Element) -> list[str]:
    """Each hop's label in full (its tooltip); the drawn label may be cut to fit."""
    tips = [g.findtext(f"{SVG}title") or "" for g in groups(root, "beat")]
    assert all(
        tip.startswith(shown.rstrip("…"))
        for tip, shown in zip(tips, texts(root, "hop-label"), strict=True)
    )
    return tips


def bars(root: ET.Element) -> list[str]:
    return [g.findtext(f"{SVG}title") or "" for g in groups(root, "bar")]


def test_store_and_forward_hands_responsibility_on_at_each_250(lab):
    journey = lab.send("alice@example.com", "bob@example.org", "Hi", "Hello").journey.wait()
    picture = smtplab.store_and_forward_picture(journey)
    root = parse(picture)
    assert picture.svg == smtplab.store_and_forward_picture(journey).svg
    lanes = [g.findtext(f"{SVG}text") for g in groups(root, "lane")]
    assert lanes == ["client.example.com", "smtp.example.com", "mx1.example.org"]
    assert hop_labels(root) == ["250 to the data", "250 to the data"]
    assert bars(root) == [
        "client.example.com: responsible for the message",
        "smtp.example.com: responsible for the message",
        "mx1.example.org: responsible for the message",
        "mx1.example.org: the message is in its mailbox",
    ]
    assert desc(root).endswith(
        "Responsible in turn: client.example.com → smtp.example.com (250 to the data) → "
        "mx1.example.org (250 to the data) → stored in the mailbox."
    )


def test_after_a_4xx_the_queue_keeps_the_message_and_after_a_5xx_it_reports():
    with Lab(name="pictures-saf", retry=FAST) as lab:
        for host in ("mx1.example.org", "mx2.example.org"):  # else mx2 takes it at once
            lab.server(host).fail("RCPT", "451 4.7.1 Greylisted, try again later")
        grey = lab.send("alice@example.com", "bob@example.org", "Hi", "Hello").journey.wait()
        unknown = lab.send("alice@example.com", "dave@example.org", "Hi", "?").journey.wait()
    root = parse(smtplab.store_and_forward_picture(grey))
    assert hop_labels(root) == [
        "250 to the data",
        "451 4.7.1 Greylisted, try again later",
        "451 4.7.1 Greylisted, try again later",
        "250 to the data",
    ]
    assert bars(root)[:2] == [
        "client.example.com: responsible for the message",
        "smtp.example.com: responsible for the message",
    ]
    assert bars(root).count("smtp.example.com: responsible for the message") == 1  # kept
    assert desc(root).count("mx1.example.org (250 to the data)") == 1
    bounced = parse(smtplab.store_and_forward_picture(unknown))
    assert "mx1.example.org" not in " ".join(bars(bounced))
    assert desc(bounced).endswith(
        "smtp.example.com (250 to the data) → bounced: smtp.example.com gives up and reports."
    )


# -- 07: reply classes; retries over time -------------------------------------------------------
def test_the_reply_class_picture_lights_the_class_of_a_code():
    root = parse(smtplab.reply_classes_picture(451))
    assert lit(root) == {"class-4", "client-4", "queue-4", "report-4"}
    assert f"451: {reply_meaning(451)}" in texts(root, "caption")
    plain = parse(smtplab.reply_classes_picture())
    assert lit(plain) == set()
    for digit, meaning in REPLY_CLASSES.items():
        assert station_text(plain, f"class-{digit}")[0] == f"{digit}yz"
        assert meaning.startswith(station_text(plain, f"class-{digit}")[1])
    assert "never does (RFC 5321 §6.1)" in " ".join(station_text(plain, "report-5"))


def test_the_retry_timeline_places_attempts_at_the_scheduled_waits():
    with Lab(name="pictures-retry", retry=FAST) as lab:
        for host in ("mx1.example.org", "mx2.example.org"):
            lab.server(host).fail("RCPT", BUSY, times=None)
        journey = lab.send("alice@example.com", "bob@example.org", "Hi", "Hello").journey.wait()
    picture = smtplab.retry_timeline_picture(journey)
    root = parse(picture)
    assert picture.svg == smtplab.retry_timeline_picture(journey).svg
    assert texts(root, "offset") == ["0 s", "0.2 s", "0.6 s"]
    assert texts(root, "wait") == ["wait 0.2 s", "wait 0.4 s"]
    circles = [g.find(f"{SVG}circle") for g in groups(root, "attempt")]
    xs = [int(c.get("cx")) for c in circles]
    assert xs == sorted(xs) and abs((xs[2] - xs[1]) - 2 * (xs[1] - xs[0])) <= 1
    assert {c.get("fill") for c in circles} == {"#ef6c00"}  # 4xx: orange
    assert texts(root, "caption")[-1] == f"bounced: {BUSY}"


def test_a_journey_without_queue_attempts_says_so(lab):
    direct = lab.send("alice@example.com", "bob@example.org", "Hi", "x", via="mx1.example.org")
    root = parse(smtplab.retry_timeline_picture(direct.journey.wait()))
    assert "No queue attempts in this journey." in texts(root)


# -- 09: three identities -------------------------------------------------------------------------
def test_the_identities_picture_shows_alignment_from_a_real_verdict():
    with Lab(name="pictures-auth", authenticity=True) as lab:
        good = lab.send("alice@example.com", "bob@example.org", "Lunch", "Hi Bob")
        good.journey.wait()
        forged_message = EmailMessage()
        forged_message["From"] = "Bob <bob@example.org>"
        forged_message["To"] = "carol@example.org"
        forged_message["Subject"] = "New bank details"
        forged_message.set_content("Please pay into my new account.")
        forged = lab.send("alice@example.com", "carol@example.org", message=forged_message)
        forged.journey.wait()
        verdicts = lab.auth.verdict(good.message_id), lab.auth.verdict(forged.message_id)
    passed, failed = (parse(smtplab.identities_picture(v)) for v in verdicts)
    assert station_text(passed, "envelope") == ["MAIL FROM", "example.com", "sent from 127.0.0.2"]
    assert station_text(passed, "signature") == ["DKIM-Signature", "d=example.com", "s=lab"]
    assert station_text(passed, "dmarc")[:2] == [
        "DMARC: pass",
        "SPF aligned pass ✓; DKIM aligned pass ✓",
    ]
    assert station_text(passed, "placement") == ["mx1.example.org decided", "→ the inbox"]
    assert station_text(failed, "from")[1] == "example.org"
    assert " ".join(station_text(failed, "dmarc")).startswith(
        "DMARC: fail SPF passed, not aligned ✗; DKIM passed, not aligned ✗"
    )
    assert station_text(failed, "placement")[1].startswith("→ 550 5.7.1")
    only_auth = parse(smtplab.identities_picture(verdicts[1].auth))
    assert not [g for g in groups(only_auth, "station") if "placement" in g.get("class")]


# -- every picture: an SVG output, and what Chromium makes of it -----------------------------------
def test_a_picture_is_an_svg_output_in_a_notebook():
    picture = smtplab.reply_classes_picture(250)
    data, _ = DisplayFormatter().format(picture)
    assert data["image/svg+xml"] == picture.svg
    assert data["text/plain"] == repr(picture)


def every_picture() -> dict[str, str]:
    """Each picture (and the Path tab's drawings) from a real lab, by name."""
    drawn: dict[str, str] = {}
    with Lab(name="pictures-all", retry=FAST) as lab:
        drawn["00-overview"] = str(smtplab.journey_overview_picture(lab))
        drawn["02-ports"] = str(smtplab.ports_picture(lab))
        first = lab.send(
            "alice@example.com",
            ["bob@example.org", "carol@example.org"],
            "Hi",
            "Hello",
            bcc="alice@example.com",
        )
        implicit = lab.send(
            "alice@example.com", "bob@example.org", "465", "x", via="smtps.example.com"
        )
        drawn["02-tls"] = str(smtplab.tls_timeline_picture(first.transcript, implicit.transcript))
        journey = first.journey.wait()
        implicit.journey.wait()
        lab.send(
            "alice@example.com", "bob@example.org", message=rich_message(), via="mx1.example.org"
        )
        drawn["04-mime"] = str(smtplab.mime_tree_picture(lab.mailbox("bob@example.org")[-1]))
        drawn["05-route"] = str(smtplab.route_picture(lab.route("example.org")))
        drawn["06-store-and-forward"] = str(smtplab.store_and_forward_picture(journey))
        drawn["07-reply-classes"] = str(smtplab.reply_classes_picture(550))
        for host in ("mx1.example.org", "mx2.example.org"):
            lab.server(host).fail("RCPT", BUSY, times=None)
        retried = lab.send("alice@example.com", "bob@example.org", "Hi", "x").journey.wait()
        drawn["07-retries"] = str(smtplab.retry_timeline_picture(retried))
        drawn["11-agents"] = str(smtplab.mail_agents_picture(lab))
        drawn["path-journey"] = journey_svg(journey)
        drawn["path-sequence"] = sequence_svg(first.transcript)
    with Lab(name="pictures-all-auth", authenticity=True) as lab:
        sent = lab.send("alice@example.com", "bob@example.org", "Lunch", "Hi Bob")
        sent.journey.wait()
        drawn["09-identities"] = str(smtplab.identities_picture(lab.auth.verdict(sent.message_id)))
    return drawn


@pytest.mark.browser
@pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="no playwright")
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (Debian: chromium)")
def test_every_picture_fits_a_930_px_pane_inline_and_as_an_image():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    drawn = every_picture()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": PANE + 40, "height": 900})
            for name, svg in drawn.items():
                _, _, width, height = (int(n) for n in ET.fromstring(svg).get("viewBox").split())
                page.set_content(f'<div id="pane" style="width:{PANE}px">{svg}</div>')
                shown = page.locator("#pane svg").bounding_box()
                assert shown["width"] == min(width, PANE), name
                assert abs(shown["height"] - shown["width"] * height / width) < 1.5, name
                page.locator("#pane svg").screenshot(path=str(ARTIFACTS / f"{name}.png"))
                data = base64.b64encode(svg.encode()).decode()
                page.set_content(
                    f'<div style="width:{PANE}px"><img id="i" style="max-width:100%"'
                    f' src="data:image/svg+xml;base64,{data}"></div>'
                )
                image = page.locator("#i").bounding_box()
                assert abs(image["width"] - PANE) < 1 and image["height"] > 0, name  # as JupyterLab
        finally:
            browser.close()
