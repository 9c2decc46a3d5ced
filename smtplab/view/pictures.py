"""Pictures for the chapters: SVG drawn from the lab's own data, the same bytes on every run.

Theory of operation
-------------------
Each public function takes what the lab already has (a :class:`~smtplab.world.World`,
:class:`~smtplab.record.transcript.Transcript` s, a message, a :class:`~smtplab.dns.route.Route` or
:class:`~smtplab.dns.route.RouteError`, a :class:`~smtplab.record.journey.Journey`, a verdict of
chapter 09) and returns a :class:`Picture`. A notebook cell whose value is a Picture
gets an ``image/svg+xml`` output (IPython calls ``_repr_svg_``), which GitHub,
nbviewer and ``jupyter nbconvert`` show without JavaScript; ``str(picture)`` is the
SVG text.

The pictures share one small kit: a :class:`_Canvas` that collects elements (boxes
with a tooltip, arrows, labels with a white halo so a line never runs through
them, a wrapped caption), and :func:`_diagram`, which places boxes on a grid and
joins them. Text is escaped and cut with "…" where it does not fit (a monospace
advance of ``CHAR_W`` pixels per character), the whole text kept in a ``<title>``.
Nothing reads a clock, a port or a random number, coordinates are integers and
input order is kept, so the same data gives the same bytes and strict nbval can
compare the outputs. The root ``<svg>`` has a viewBox, ``width="100%"`` and its
natural width as ``max-width``: a drawing shrinks to fit a narrow pane instead of
being clipped. Colours are the transcript's (client blue, server green, the lab's
remarks grey) and the reply classes' (3yz teal, 4yz orange, 5yz red), on a white
card that stays readable in a dark theme.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from email.message import EmailMessage, Message
from typing import TYPE_CHECKING, Any

from smtplab.dns.route import PermanentRouteError, Route, RouteError
from smtplab.mailstore.dovecot_conf import IMAP_HOST, POP_HOST
from smtplab.protocol import reader
from smtplab.protocol.rules import REPLY_CLASSES, reply_meaning
from smtplab.record.journey import FINAL, Journey, Step
from smtplab.record.transcript import _COLOUR as SIDE_COLOURS
from smtplab.record.transcript import Command, Data, Reply, TLSStarted, Transcript
from smtplab.record.transcript import _data_summary as data_summary
from smtplab.world import Domain, ServerSpec, World

if TYPE_CHECKING:
    from smtplab.lab import Lab
    from smtplab.mailstore.maildir import StoredMessage
    from smtplab.senderauth.checks import Authentication
    from smtplab.senderauth.wiring import Verdict

WIDTH = 900
PAD = 16
TOP = 44  # where drawing starts, below the heading
FONT = 12
FONT_FAMILY = "ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace"
CHAR_W = 7.4  # the advance of a 12 px monospace character (0.6 em), with a margin
LINE_H = 16
INK = "#212121"
MUTED = "#616161"
HALO = "#ffffff"

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
class Tone:
    """A colour pair: the line and text colour, and the light fill behind it."""

    ink: str
    fill: str


TONES: dict[str, Tone] = {
    "client": Tone(SIDE_COLOURS["client"], "#e3f2fd"),
    "server": Tone(SIDE_COLOURS["server"], "#e8f5e9"),
    "info": Tone(SIDE_COLOURS["info"], "#f5f5f5"),
    "more": Tone("#00838f", "#e0f7fa"),
    "retry": Tone("#ef6c00", "#fff3e0"),
    "error": Tone("#c62828", "#ffebee"),
    "dns": Tone("#6a1b9a", "#f3e5f5"),
    "store": Tone("#455a64", "#eceff1"),
    "muted": Tone("#757575", "#fafafa"),
}
CLASS_TONES = {2: "server", 3: "more", 4: "retry", 5: "error"}


def _code_tone(code: int | None) -> str:
    """The tone of a reply code's class (2yz green ... 5yz red); grey without a code."""
    return CLASS_TONES.get((code or 0) // 100, "info")


# -- the picture -------------------------------------------------------------------------
@dataclass(frozen=True, repr=False)
class Picture:
    """An SVG drawing. As a cell's value it shows as ``image/svg+xml``; ``str()`` is the SVG."""

    svg: str
    title: str

    def _repr_svg_(self) -> str:
        return self.svg

    def __str__(self) -> str:
        return self.svg

    def __repr__(self) -> str:
        return f"<Picture: {self.title}>"


# -- text ----------------------------------------------------------------------------------
def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _fit(text: str, width: float) -> str:
    """``text`` cut to ``width`` pixels, ending in "…" when cut."""
    room = max(1, int(width / CHAR_W))
    return text if len(text) <= room else text[: room - 1] + "…"


def _wrap(text: str, width: float, most: int = 6) -> list[str]:
    """``text`` in lines of at most ``width`` pixels (a newline always breaks), at most
    ``most`` of them, the last cut with "…" if more was left."""
    room = max(1, int(width / CHAR_W))
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            while len(word) > room:  # a word longer than a line (a host list) is broken
                if line:
                    lines.append(line)
                lines.append(word[:room])
                line, word = "", word[room:]
            if line and len(line) + 1 + len(word) > room:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        lines.append(line)
    if len(lines) > most:
        lines = [*lines[: most - 1], _fit(" ".join(lines[most - 1 :]), width)]
    return lines


# -- the kit: boxes, arrows, labels --------------------------------------------------------
@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int

    @property
    def cx(self) -> int:
        return self.x + self.w // 2

    @property
    def cy(self) -> int:
        return self.y + self.h // 2

    def side_toward(self, other: Box) -> tuple[int, int]:
        """Where a line to ``other`` leaves: the middle of the facing side, or, above or
        below a wider box, straight down (or up) from the narrower one's middle."""
        x = other.cx if other.w < self.w and self.x < other.cx < self.x + self.w else self.cx
        if other.y >= self.y + self.h:
            return x, self.y + self.h
        if other.y + other.h <= self.y:
            return x, self.y
        return (self.x + self.w, self.cy) if other.x >= self.x + self.w else (self.x, self.cy)


def _head(x: float, y: float, dx: float, dy: float, colour: str) -> str:
    """A filled arrowhead with its tip at (x, y), pointing along (dx, dy)."""
    length = math.hypot(dx, dy) or 1.0
    ux, uy = dx / length, dy / length
    back_x, back_y = x - 9 * ux, y - 9 * uy
    corners = [(x, y), (back_x - 4 * uy, back_y + 4 * ux), (back_x + 4 * uy, back_y - 4 * ux)]
    return '<polygon points="{}" fill="{}"/>'.format(
        " ".join(f"{px:.1f},{py:.1f}" for px, py in corners), colour
    )


class _Canvas:
    """SVG elements in drawing order, a heading on top and a caption below."""

    def __init__(self, kind: str, title: str, width: int = WIDTH):
        self.kind, self.title, self.width = kind, title, width
        self.parts: list[str] = []
        self.bottom = TOP
        self.text(PAD, PAD + 12, title, width=width - 2 * PAD, bold=True)

    def reach(self, y: int) -> None:
        self.bottom = max(self.bottom, y)

    def text(
        self,
        x: int,
        y: int,
        text: str,
        *,
        width: float,
        colour: str = INK,
        anchor: str = "start",
        bold: bool = False,
        css: str = "",
        halo: bool = False,
    ) -> None:
        attrs = f' class="{_e(css)}"' if css else ""
        attrs += f' text-anchor="{anchor}"' if anchor != "start" else ""
        attrs += ' font-weight="bold"' if bold else ""
        if halo:  # a white outline under the letters: readable across any line
            attrs += (
                f' stroke="{HALO}" stroke-width="4" stroke-linejoin="round" paint-order="stroke"'
            )
        self.parts.append(
            f'<text x="{x}" y="{y}" fill="{colour}"{attrs}>{_e(_fit(text, width))}</text>'
        )
        self.reach(y + 5)

    def rect(self, box: Box, fill: str, *, css: str) -> None:
        """A plain filled rectangle: a band behind rows, a bar."""
        self.parts.append(
            f'<rect class="{_e(css)}" x="{box.x}" y="{box.y}" width="{box.w}" height="{box.h}" '
            f'fill="{fill}"/>'
        )

    def box(
        self,
        box: Box,
        lines: Sequence[str],
        *,
        tone: str = "info",
        css: str = "",
        tip: str = "",
        strong: bool = False,
        dashed: bool = False,
        align: str = "middle",
    ) -> None:
        """A rounded box; its first line bold, the others in the tone's colour."""
        colours = TONES[tone]
        stroke = ' stroke-width="2.5"' if strong else ""
        stroke += ' stroke-dasharray="5 3"' if dashed else ""
        self.parts.append(
            f'<g class="{_e(css)}"><title>{_e(tip or " · ".join(lines))}</title>'
            f'<rect x="{box.x}" y="{box.y}" width="{box.w}" height="{box.h}" rx="6" '
            f'fill="{colours.fill}" stroke="{colours.ink}"{stroke}/>'
        )
        x = box.cx if align == "middle" else box.x + 8
        top = box.cy - (LINE_H * len(lines)) // 2 + 12
        for i, line in enumerate(lines):
            self.text(
                x,
                top + LINE_H * i,
                line,
                width=box.w - 12,
                colour=INK if i == 0 else colours.ink,
                anchor=align,
                bold=i == 0,
            )
        self.parts.append("</g>")
        self.reach(box.y + box.h)

    def arrow(
        self,
        points: Sequence[tuple[int, int]],
        *,
        tone: str = "info",
        dashed: bool = False,
        css: str = "",
        tip: str = "",
        weight: float = 1.5,
    ) -> None:
        colour = TONES[tone].ink
        path = " ".join(f"{x},{y}" for x, y in points)
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        (x1, y1), (x2, y2) = points[-2], points[-1]
        self.parts.append(
            f'<g class="{_e(css)}"><title>{_e(tip)}</title>'
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="{weight}"'
            f"{dash}/>" + _head(x2, y2, x2 - x1, y2 - y1, colour) + "</g>"
        )

    def caption(self, text: str, *, colour: str = MUTED) -> None:
        """Wrapped lines of prose under everything drawn so far."""
        y = self.bottom + 24
        for line in _wrap(text, self.width - 2 * PAD, most=12):
            self.text(PAD, y, line, width=self.width - 2 * PAD, colour=colour, css="caption")
            y += LINE_H

    def finish(self, caption: str, words: str = "", *, colour: str = MUTED) -> Picture:
        """The picture with ``caption`` under it; its <desc> is the caption and ``words``
        (what is drawn, said in full, for readers who cannot see it)."""
        self.caption(caption, colour=colour)
        return self.picture(f"{caption}\n{words}".strip())

    def picture(self, desc: str) -> Picture:
        width, height = self.width, self.bottom + PAD
        svg = (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="smtplab-picture smtplab-{self.kind}" '
            f'width="100%" viewBox="0 0 {width} {height}" style="max-width:{width}px" '
            f'font-family="{FONT_FAMILY}" font-size="{FONT}" role="img" '
            f'aria-label="{_e(self.title)}">'
            f"<title>{_e(self.title)}</title><desc>{_e(desc)}</desc>"
            f'<rect class="card" x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" '
            f'rx="8" fill="#ffffff" stroke="#e0e0e0"/>' + "".join(self.parts) + "</svg>"
        )
        return Picture(svg, self.title)


# -- boxes on a grid, joined by arrows -----------------------------------------------------
@dataclass(frozen=True)
class Station:
    """A box of a grid diagram, at ``place`` (column, row; a half centres it between two)."""

    key: str
    place: tuple[float, float]  # (column, row)
    lines: tuple[str, ...]
    tone: str = "info"
    span: int = 1
    dashed: bool = False


@dataclass(frozen=True)
class Link:
    """An arrow from one station to another; ``shift`` moves it sideways (a pair)."""

    src: str
    dst: str
    label: tuple[str, ...] = ()
    tone: str = "info"
    dashed: bool = False
    shift: int = 0


def _diagram(
    canvas: _Canvas,
    stations: Sequence[Station],
    links: Sequence[Link],
    *,
    columns: int,
    gap_x: int,
    gap_y: int = 40,
    lit: Iterable[str] | None = None,
) -> str:
    """Draw ``stations`` on a grid of ``columns`` and ``links`` between them; return
    what was drawn in words, for the picture's <desc>.

    All boxes are as tall as the tallest (lines wrap to the box width). With
    ``lit``, those stations (and links between two of them) are drawn strong and
    the others muted: the path one case took through a flow chart.
    """
    box_w = (canvas.width - 2 * PAD - (columns - 1) * gap_x) // columns

    def width(station: Station) -> int:
        return station.span * box_w + (station.span - 1) * gap_x

    texts = {
        s.key: [
            s.lines[0],
            *(w for line in s.lines[1:] if line for w in _wrap(line, width(s) - 12)),
        ]
        for s in stations
    }
    box_h = 12 + LINE_H * max(len(t) for t in texts.values())
    lit = None if lit is None else set(lit)
    top = canvas.bottom + 8
    boxes = {
        s.key: Box(
            PAD + round(s.place[0] * (box_w + gap_x)),
            top + round(s.place[1] * (box_h + gap_y)),
            width(s),
            box_h,
        )
        for s in stations
    }
    for s in stations:
        on = lit is None or s.key in lit
        tone = s.tone if on else "muted"
        css = f"station {s.key}" + (" lit" if lit is not None and on else "")
        canvas.box(
            boxes[s.key],
            texts[s.key],
            tone=tone,
            css=css,
            strong=lit is not None and on,
            dashed=s.dashed,
        )
    for link in links:
        on = lit is None or (link.src in lit and link.dst in lit)
        _link(canvas, boxes[link.src], boxes[link.dst], link, on, gap_x, lit is not None)
    said = {s.key: f"{s.lines[0]} ({', '.join(filter(None, s.lines[1:]))})" for s in stations}
    arrows = [
        f"{said[k.src]} → {said[k.dst]}" + (f" [{' '.join(k.label)}]" if k.label else "")
        for k in links
    ]
    return "; ".join(arrows or said.values()) + "."


def _link(
    canvas: _Canvas, a: Box, b: Box, link: Link, on: bool, gap_x: int, lighting: bool
) -> None:
    """One arrow between two boxes, from the facing sides, labelled at its middle."""
    (x1, y1), (x2, y2) = a.side_toward(b), b.side_toward(a)
    if y1 == y2 or x1 == x2:  # straight across or down: a pair runs side by side
        dx, dy = (0, link.shift) if y1 == y2 else (link.shift, 0)
        x1, y1, x2, y2 = x1 + dx, y1 + dy, x2 + dx, y2 + dy
    tone = link.tone if on else "muted"
    css = f"link {link.src}-{link.dst}" + (" lit" if lighting and on else "")
    tip = f"{link.src} → {link.dst}: {' '.join(link.label)}"
    canvas.arrow(
        [(x1, y1), (x2, y2)],
        tone=tone,
        dashed=link.dashed,
        css=css,
        tip=tip,
        weight=2.5 if lighting and on else 1.5,
    )
    mx, my = (x1 + x2) // 2, (y1 + y2) // 2
    colour = TONES[tone].ink
    if x1 == x2:  # a vertical arrow: labels beside it
        anchor, x = ("end", mx - 8) if link.shift < 0 else ("start", mx + 8)
        for i, line in enumerate(link.label):
            canvas.text(
                x, my + LINE_H * i - 2, line, width=200, colour=colour, anchor=anchor, halo=True
            )
        return
    room = gap_x - 6 if y1 == y2 else 180
    first = my - 6 - LINE_H * (len(link.label) - 1) if y1 == y2 else my
    for i, line in enumerate(link.label):
        canvas.text(
            mx, first + LINE_H * i, line, width=room, colour=colour, anchor="middle", halo=True
        )


# -- who is who in a world ----------------------------------------------------------------
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


def _cast(source: World | Lab) -> _Cast:
    world: World = getattr(source, "world", source)
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


def _host(spec: ServerSpec | None) -> str:
    return spec.host if spec is not None else "(none in this world)"


# -- 00: the journey of a message ---------------------------------------------------------
def journey_overview_picture(source: World | Lab) -> Picture:
    """The way a message goes through a lab world, from mail program to mailbox and back out.

    Drawn from the world (a :class:`World` or a running :class:`Lab`): its
    client, submission server, the recipient domain's MX records and servers,
    the mailbox, and POP3/IMAP, with the standard port of each step.
    """
    cast = _cast(source)
    sub = _host(cast.submission)
    (first_pref, first), *backups = cast.mx or ((0, cast.domain),)
    backup = ", ".join(f"backup {host} ({pref})" for pref, host in backups)
    answer = ", ".join(f"{pref} {host}" for pref, host in cast.mx) or "no MX"
    canvas = _Canvas(
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
    words = _diagram(canvas, stations, links, columns=4, gap_x=64)
    caption = (
        "The numbers follow the message; after each 250 the server that said it is responsible."
    )
    return canvas.finish(caption, words)


# -- 02: ports and roles; where TLS starts --------------------------------------------------
def ports_picture(source: World | Lab) -> Picture:
    """A mail program submits on 587 (STARTTLS) or 465 (implicit TLS); the submission
    server relays to the recipient's MX on 25. Hosts and preferences from the world."""
    cast = _cast(source)
    canvas = _Canvas("ports", "Ports and roles: mail program → 587/465 → submission → 25 → MX")
    centre = (max(len(cast.mx), 2) - 1) / 2
    stations = [
        Station("client", (0, centre), ("mail program", cast.client, "MUA"), "client"),
        Station(
            "submission",
            (1, 0),
            (f"{PORTS['submission']} submission", _host(cast.submission), "STARTTLS, then AUTH"),
            "server",
        ),
        Station(
            "submissions",
            (1, 1),
            (
                f"{PORTS['submissions']} submissions",
                _host(cast.submissions),
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
    words = _diagram(canvas, stations, links, columns=4, gap_x=60)
    caption = (
        "AUTH only once TLS is on (587: after STARTTLS; 465: from the first byte); 25: no login."
    )
    return canvas.finish(caption, words)


@dataclass(frozen=True)
class _Row:
    """One thing that crossed the wire, for the TLS timeline."""

    side: str
    text: str
    tone: str
    exposed: bool = False  # a login sent in the clear
    data: bool = False  # the message itself, not a command


def _wire_rows(transcript: Transcript) -> tuple[list[_Row], int | None, str]:
    """The transcript's commands, replies and data in order; where TLS started (the
    number of rows before it, or None), and the TLS version."""
    rows: list[_Row] = []
    started: int | None = None
    version = ""
    for event in transcript.events:
        if isinstance(event, TLSStarted) and started is None:
            started, version = len(rows), event.version
        elif isinstance(event, Command):
            exposed = started is None and (event.secret or event.verb == "AUTH")
            rows.append(
                _Row(
                    "client",
                    event.shown(transcript.revealed),
                    "error" if exposed else "client",
                    exposed,
                )
            )
        elif isinstance(event, Reply):
            more = f" (+{len(event.lines) - 1} lines)" if len(event.lines) > 1 else ""
            rows.append(_Row("server", event.lines[0] + more, _code_tone(event.code)))
        elif isinstance(event, Data):
            rows.append(_Row("client", data_summary(event), "client", data=True))
    return rows, started, version


TLS_ROW = 20
MAX_ROWS = 40


def tls_timeline_picture(*transcripts: Transcript) -> Picture:
    """What crossed the wire in the clear and what encrypted, one column per connection.

    Give the transcript of a STARTTLS session (port 587) and of an implicit-TLS
    one (port 465): every command and reply in order, on a red band until TLS
    started and a green one after it; a login sent before TLS is marked.
    """
    if not transcripts:
        raise ValueError("tls_timeline_picture needs at least one transcript")
    canvas = _Canvas(
        "tls-timeline", "In the clear or encrypted: " + " | ".join(t.server for t in transcripts)
    )
    col_w = (canvas.width - 2 * PAD - 24 * (len(transcripts) - 1)) // len(transcripts)
    summaries = []
    for n, transcript in enumerate(transcripts):
        x = PAD + n * (col_w + 24)
        canvas.parts.append('<g class="connection">')
        summaries.append(_tls_column(canvas, transcript, x, col_w))
        canvas.parts.append("</g>")
    return canvas.finish(" ".join(summaries))


def _tls_column(canvas: _Canvas, transcript: Transcript, x: int, width: int) -> str:
    """One connection's column; returns the sentence that sums it up."""
    rows, started, version = _wire_rows(transcript)
    shown = rows[:MAX_ROWS]
    clear = len(rows) if started is None else started
    how = "no TLS" if started is None else "implicit TLS" if started == 0 else "STARTTLS"
    canvas.text(x, TOP + 10, f"{transcript.server}: {how}", width=width, bold=True)
    canvas.text(x, TOP + 26, transcript.hop, width=width, colour=MUTED)
    y = TOP + 36
    for i, row in enumerate(shown):
        if i == started:
            y = _tls_bar(canvas, x, y, width, version)
        band = "clear" if i < clear else "encrypted"
        canvas.rect(
            Box(x, y, width, TLS_ROW),
            TONES["error" if band == "clear" else "server"].fill,
            css=f"wire {band}",
        )
        arrow = "→ " if row.side == "client" else "← "
        mark = "⚠ " if row.exposed else ""
        canvas.text(
            x + 6,
            y + 14,
            f"{arrow}{mark}{row.text}",
            width=width - 12,
            colour=TONES[row.tone].ink,
            css=f"event {row.side}",
        )
        y += TLS_ROW
    if started is not None and started >= len(shown):
        y = _tls_bar(canvas, x, y, width, version)
    if len(rows) > len(shown):
        canvas.text(x + 6, y + 14, f"… {len(rows) - len(shown)} more", width=width, colour=MUTED)
        y += TLS_ROW
    canvas.reach(y)
    in_clear = rows[:clear]
    sent = [r.text.split(" ")[0] for r in in_clear if r.side == "client" and not r.data]
    if clear == 0:
        return f"{transcript.server}: TLS from the first byte; nothing crossed in the clear."
    said = (
        f"{transcript.server}: {len(sent)} commands ({', '.join(sent) or 'none'})"
        + (", the message itself" if any(r.data for r in in_clear) else "")
        + f" and {sum(r.side == 'server' for r in in_clear)} replies crossed in the clear, "
        + ("then TLS started." if started is not None else "all of it: no TLS.")
    )
    if any(r.exposed for r in rows[:clear]):
        said += " ⚠ AUTH went before TLS: the login was on the wire before any reply came."
    return said


def _tls_bar(canvas: _Canvas, x: int, y: int, width: int, version: str) -> int:
    """The line where TLS starts: above it in the clear, below it encrypted."""
    canvas.rect(Box(x, y + 2, width, 18), TONES["server"].ink, css="tls-start")
    canvas.text(
        x + width // 2,
        y + 15,
        f"TLS handshake: {version}, encrypted from here",
        width=width - 8,
        colour=HALO,
        anchor="middle",
        bold=True,
    )
    return y + 22


# -- 04: the MIME tree ---------------------------------------------------------------------
@dataclass(frozen=True)
class _Part:
    depth: int
    parent: int | None
    head: str
    detail: str
    tone: str


def _describe(part: Message) -> tuple[str, str, str]:
    """(content type, details, tone) of one MIME part."""
    ctype = part.get_content_type()
    if part.is_multipart():
        count = len(part.get_payload())
        return ctype, f"{count} part{'s' if count != 1 else ''}", "store"
    bits = []
    charset = part.get_param("charset")
    if isinstance(charset, str):
        bits.append(f"charset={charset}")
    filename = part.get_filename()
    disposition = part.get_content_disposition()
    if filename or disposition:
        bits.append(f"{disposition or 'attachment'}: {filename}" if filename else disposition)
    encoding = str(part.get("Content-Transfer-Encoding", "7bit")).lower()
    raw = part.get_payload()
    size = len(raw.encode("utf-8", "surrogateescape")) if isinstance(raw, str) else 0
    decoded = part.get_payload(decode=True)
    bits.append(f"{encoding}, {size} bytes")
    if encoding in ("base64", "quoted-printable") and isinstance(decoded, bytes):
        bits[-1] += f" ({len(decoded)} decoded)"
    return ctype, " · ".join(bits), "dns" if filename else "client"


def _parts(message: Message) -> list[_Part]:
    """The tree in reading order, at most reader.MAX_PARTS parts, reader.MAX_DEPTH deep."""
    parts: list[_Part] = []
    pending: list[tuple[Message, int, int | None]] = [(message, 0, None)]
    while pending and len(parts) < reader.MAX_PARTS:
        part, depth, parent = pending.pop()
        head, detail, tone = _describe(part)
        parts.append(_Part(depth, parent, head, detail, tone))
        children = part.get_payload() if part.is_multipart() else []
        if depth < reader.MAX_DEPTH and isinstance(children, list):
            me = len(parts) - 1
            pending.extend((child, depth + 1, me) for child in reversed(children))
    if pending:
        left = f"{len(pending)} more parts not shown (at most {reader.MAX_PARTS})"
        parts.append(_Part(0, None, "…", left, "error"))
    return parts


TREE_INDENT = 40
TREE_ROW = 50


def mime_tree_picture(message: bytes | EmailMessage | StoredMessage) -> Picture:
    """The MIME structure of a message: a box per part, children indented under parents.

    Each part shows its content type, charset, file name, transfer encoding and
    size (encoded, and decoded where it differs). Bytes and stored messages are
    read with the lab's bounded reader, so hostile MIME shows as a notice.
    """
    raw = getattr(message, "raw", message)
    canvas = _Canvas("mime-tree", "The MIME tree of the message")
    if isinstance(raw, bytes):
        problem = reader.problem(raw)
        if problem is not None:
            notice = reader.notice(problem, len(raw))
            canvas.box(
                Box(PAD, TOP, canvas.width - 2 * PAD, 40),
                ["message", notice],
                tone="error",
                css="part depth-0 unreadable",
            )
            return canvas.picture(notice)
        parsed: Message = reader.parse(raw)
    else:
        parsed = raw
    parts = _parts(parsed)
    subject = str(parsed.get("Subject", ""))
    for i, part in enumerate(parts):
        x = PAD + part.depth * TREE_INDENT
        box = Box(x, TOP + i * TREE_ROW, canvas.width - PAD - x, TREE_ROW - 12)
        if part.parent is not None:
            stem = PAD + parts[part.parent].depth * TREE_INDENT + 16
            top = TOP + part.parent * TREE_ROW + TREE_ROW - 12
            canvas.parts.append(
                f'<polyline points="{stem},{top} {stem},{box.cy} {x},{box.cy}" fill="none" '
                f'stroke="{TONES["store"].ink}" stroke-width="1.5"/>'
            )
        head, detail = part.head, part.detail
        if i == 0:
            head, detail = (
                f"message: {head}",
                f"{detail} · Subject: {subject}" if subject else detail,
            )
        canvas.box(
            box, [head, detail], tone=part.tone, css=f"part depth-{part.depth}", align="start"
        )
    outline = "; ".join(f"{'  ' * p.depth}{p.head} ({p.detail})" for p in parts)
    desc = f"Subject {subject!r}: {len(parts)} MIME parts: {outline}"
    canvas.caption(
        f"{len(parts)} parts. A multipart part holds others; the leaves hold content: "
        "text for the reader, attachments by file name, each in its transfer encoding."
    )
    return canvas.picture(desc)


# -- 05: where does mail for a domain go? --------------------------------------------------
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
    canvas = _Canvas("route", "Where does the mail go? RFC 5321 §5.1, with null MX (RFC 7505)")
    lit = _route_path(outcome) if outcome is not None else None
    words = _diagram(canvas, ROUTE_STATIONS, ROUTE_LINKS, columns=5, gap_x=16, gap_y=28, lit=lit)
    if outcome is None:
        return canvas.finish("How a sending server finds where mail for a domain goes.", words)
    told = [*outcome.explanation]
    if isinstance(outcome, RouteError):
        told.append(f"reply: {outcome.reply}")
    return canvas.finish("\n".join(told), words, colour=INK)


# -- 06: store and forward ------------------------------------------------------------------
def _end_of_data_code(transcript: Transcript) -> int | None:
    """The reply to the message data (the one that decides responsibility), if it came."""
    seen_data = False
    for event in transcript.events:
        seen_data = seen_data or isinstance(event, Data)
        if seen_data and isinstance(event, Reply):
            return event.code
    return None


def _first_failure(transcript: Transcript) -> Reply | None:
    return next((r for r in transcript.replies if r.code >= 400), None)


@dataclass(frozen=True)
class _Beat:
    """One row of the store-and-forward picture: a hop (arrow) or a note on a lane,
    and, after it, who is responsible for the message and where it is stored."""

    step: Step
    src: str
    dst: str | None
    label: str
    tone: str
    holders: frozenset[str]
    stored: frozenset[str]


def _taken_by(steps: Sequence[Step], i: int, server: str) -> set[str]:
    """Recipients whose responsibility the hop ``steps[i]`` handed to ``server``.

    A client's hop (submitted) hands over every recipient the server did not
    refuse; a queue's hop (attempt) those its next delivered/relayed step names.
    """
    hop = steps[i]
    if hop.kind == "submitted":
        refused = {
            r for s in steps if s.kind == "refused" and s.host == server for r in s.recipients
        }
        return set(hop.recipients) - refused
    for later in steps[i + 1 :]:
        if later.host != hop.host:
            continue
        if later.kind in ("delivered", "relayed"):
            return set(later.recipients)
        if later.kind in ("attempt", "retry", "bounced"):
            break
    return set()


def _beats(journey: Journey) -> tuple[list[_Beat], list[str]]:
    """The journey's steps with who holds the message after each; and the handovers."""
    steps = journey.steps
    holder: dict[str, str | None] = {
        r: (steps[0].host if steps else None) for r in journey.recipients
    }
    stored: set[str] = set()
    beats, handovers = [], [steps[0].host] if steps else []
    for i, step in enumerate(steps):
        transcript = step.transcript
        if transcript is not None:
            src, dst = transcript.client, transcript.server
            code = _end_of_data_code(transcript)
            failure = _first_failure(transcript)
            if code is not None and code // 100 == 2:
                taken = _taken_by(steps, i, dst)
                holder.update(dict.fromkeys(taken, dst))
                label = f"{code} to the data"
                handovers += [f"{dst} ({code} to the data)"] if taken else []
            else:
                code = failure.code if failure else None
                label = failure.lines[0] if failure else "no reply to the data"
        else:
            src, dst, code = step.host, None, None
            label = f"{step.kind}: {step.text.removeprefix(f'{step.kind}: ')}"
            if step.kind == "delivered":
                stored.update(h for r, h in holder.items() if r in step.recipients and h)
                handovers.append("stored in the mailbox")
            elif step.kind in ("bounced", "postmaster"):
                holder.update(dict.fromkeys(step.recipients))
                handovers.append(f"{step.kind}: {step.host} gives up and reports")
        tone = _code_tone(code) if code else _note_tone(step.kind)
        held = frozenset(h for h in holder.values() if h)
        beats.append(_Beat(step, src, dst, label, tone, held - stored, frozenset(stored) & held))
    return beats, handovers


def _note_tone(kind: str) -> str:
    return {
        "delivered": "server",
        "relayed": "server",
        "bounced": "error",
        "refused": "error",
        "retry": "retry",
        "route": "dns",
    }.get(kind, "store")


BEAT_ROW = 28
BAR_W = 10


def store_and_forward_picture(journey: Journey) -> Picture:
    """Each hop of a journey and who is responsible for the message after it.

    A lane per host in order of appearance; a hop is an arrow labelled with the
    reply to the message data; the queue's own steps are notes on its lane. A
    green bar on a lane: that host is responsible for the message; a 250 to the
    data hands the responsibility on (RFC 5321 §6.1), a 4xx leaves it where it
    was; grey: stored in the mailbox.
    """
    beats, handovers = _beats(journey)
    lanes = list(dict.fromkeys(h for b in beats for h in (b.src, b.dst) if h))
    canvas = _Canvas("store-and-forward", f"Store and forward: {journey.message_id}")
    spacing = (canvas.width - 2 * PAD) // max(len(lanes), 1)
    lane_x = {host: PAD + spacing // 2 + n * spacing for n, host in enumerate(lanes)}
    top = TOP + 44
    bottom = top + BEAT_ROW * len(beats) + 6
    for host, x in lane_x.items():
        canvas.parts.append(
            f'<line x1="{x}" y1="{top - 8}" x2="{x}" y2="{bottom}" stroke="#bdbdbd" '
            'stroke-dasharray="4 3"/>'
        )
        canvas.box(
            Box(x - spacing // 2 + 6, TOP, spacing - 12, 30), [host], tone="store", css="lane"
        )
        for state, tone in (("holders", "server"), ("stored", "store")):
            first = [host == lanes[0]] if state == "holders" else [False]  # before any step
            _bars(canvas, host, x, first + [host in getattr(b, state) for b in beats], top, tone)
    for n, beat in enumerate(beats):
        _beat(canvas, beat, lane_x, top + BEAT_ROW * n + 18)
    canvas.reach(bottom)
    caption = "Green: responsible for the message (RFC 5321 §6.1); grey: in the mailbox."
    return canvas.finish(caption, "Responsible in turn: " + " → ".join(handovers) + ".")


def _bars(canvas: _Canvas, host: str, x: int, holding: list[bool], top: int, tone: str) -> None:
    """Bars on a lane while ``host`` holds the message: ``holding[0]`` is before the first
    step, ``holding[n]`` after step n, each from its step's arrow to the next."""
    what = "responsible for the message" if tone == "server" else "the message is in its mailbox"
    n = 0
    while n < len(holding):
        end = n
        while end < len(holding) and holding[end]:
            end += 1
        if end > n:
            y1 = max(top + BEAT_ROW * (n - 1) + 14, top - 8)
            y2 = min(top + BEAT_ROW * (end - 1) + 14, top + BEAT_ROW * (len(holding) - 1) + 6)
            canvas.parts.append(
                f'<g class="bar {tone}"><title>{_e(f"{host}: {what}")}</title>'
                f'<rect x="{x - BAR_W // 2}" y="{y1}" width="{BAR_W}" height="{y2 - y1}" rx="3" '
                f'fill="{TONES[tone].fill}" stroke="{TONES[tone].ink}"/></g>'
            )
        n = end + 1


def _beat(canvas: _Canvas, beat: _Beat, lane_x: dict[str, int], y: int) -> None:
    """One row: an arrow between two lanes, or a note beside one lane."""
    x1 = lane_x[beat.src]
    ink = TONES[beat.tone].ink
    css = f"beat {beat.step.kind}"
    if beat.dst is None:
        canvas.parts.append(
            f'<g class="note"><title>{_e(beat.label)}</title>'
            f'<circle cx="{x1}" cy="{y - 4}" r="3" fill="{ink}"/></g>'
        )
        canvas.text(
            x1 + 10,
            y,
            beat.label,
            width=canvas.width - PAD - x1 - 10,
            colour=ink,
            css=css,
            halo=True,
        )
        return
    x2 = lane_x[beat.dst]
    inset = BAR_W if x2 > x1 else -BAR_W
    canvas.arrow(
        [(x1 + inset // 2, y - 4), (x2 - inset, y - 4)],
        tone=beat.tone,
        css=css,
        tip=beat.label,
        dashed=beat.tone != "server",
    )
    canvas.text(
        min(x1, x2) + BAR_W,
        y - 9,
        beat.label,
        width=abs(x2 - x1) - 2 * BAR_W,
        colour=ink,
        halo=True,
        css="hop-label",
    )


# -- 07: what a reply class means; retries over time ---------------------------------------
REPLY_ROLES = {  # class -> (what a mail program does, what a queue does, who reports)
    2: (
        "done: go on with the next command",
        "after DATA: the next server is responsible now",
        "nobody, unless the sender asked for a success notice (RFC 3461 NOTIFY=SUCCESS)",
    ),
    3: (
        "send more: the message after 354, the next AUTH step after 334",
        "the same: send what was asked for",
        "nobody: the exchange goes on",
    ),
    4: (
        "keep the message and try again later",
        "keep it queued, retry with backoff; past its maximum age, give up as for 5yz",
        "a delay notice if asked (NOTIFY=DELAY); at the end, as for 5yz",
    ),
    5: (
        "do not repeat it as is: tell the user",
        "give up now: bounce",
        "the queue mails a notice (DSN) from <> to the reverse-path; for mail from <> "
        "it never does (RFC 5321 §6.1)",
    ),
}


def reply_classes_picture(code: int | None = None) -> Picture:
    """Reply class → what the client does: 2yz done, 3yz send more, 4yz keep and retry,
    5yz bounce; and who reports a failure. ``code`` lights its class."""
    canvas = _Canvas("reply-classes", "The first digit decides: what the client does next")
    lit = (
        None
        if code is None
        else [
            f"class-{code // 100}",
            *(f"{row}-{code // 100}" for row in ("client", "queue", "report")),
        ]
    )
    stations = []
    for col, (digit, (client, queue, report)) in enumerate(REPLY_ROLES.items()):
        tone = CLASS_TONES[digit]
        stations += [
            Station(f"class-{digit}", (col, 0), (f"{digit}yz", REPLY_CLASSES[digit]), tone),
            Station(f"client-{digit}", (col, 1), ("a mail program", client), tone),
            Station(f"queue-{digit}", (col, 2), ("a queue (relaying)", queue), tone),
            Station(f"report-{digit}", (col, 3), ("who reports", report), tone),
        ]
    links = [
        Link(f"{a}-{d}", f"{b}-{d}", tone=CLASS_TONES[d])
        for d in REPLY_ROLES
        for a, b in (("class", "client"), ("client", "queue"), ("queue", "report"))
    ]
    words = _diagram(canvas, stations, links, columns=4, gap_x=14, gap_y=22, lit=lit)
    if code is not None:
        canvas.caption(f"{code}: {reply_meaning(code)}", colour=INK)
    return canvas.finish("The classes of RFC 5321 §4.2.1; notices (DSNs) are RFC 3461/3464.", words)


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _scheduled(retry: Step) -> float:
    """The wait a retry step scheduled, as the queue's policy wrote it: two significant
    digits (0.2, 1.5, 16), which the microseconds between its clock reads cannot change."""
    assert retry.retry_at is not None
    return float(f"{retry.retry_at - retry.at:.2g}")


@dataclass(frozen=True)
class _Attempt:
    number: int
    offset: float  # seconds after the first attempt, as scheduled
    text: str
    code: int | None
    wait: float | None  # the wait scheduled after it


def _attempts(steps: Sequence[Step]) -> list[_Attempt]:
    """One queue entry's attempts, each placed at the sum of the waits before it. One
    attempt may try several MX hosts in turn (RFC 5321 §5.1): it is one marker, with the
    outcome of the last host it tried."""
    attempts: list[_Attempt] = []
    offset = 0.0
    previous = None
    for step in steps:
        if step.kind == "attempt":
            transcript = step.transcript
            failure = _first_failure(transcript) if transcript else None
            code = (
                failure.code if failure else (_end_of_data_code(transcript) if transcript else None)
            )
            if previous == "attempt":  # the next MX host, in the same attempt
                text = f"{attempts[-1].text}; {step.text}"
                attempts[-1] = replace(attempts[-1], text=text, code=code)
            else:
                attempts.append(_Attempt(len(attempts) + 1, offset, step.text, code, None))
        elif step.kind == "retry" and step.retry_at is not None and attempts:
            attempts[-1] = replace(attempts[-1], wait=_scheduled(step))
            offset += _scheduled(step)
        if step.kind in ("attempt", "retry", "route"):
            previous = step.kind
    return attempts


TIMELINE_LEFT = 200


def retry_timeline_picture(journey: Journey) -> Picture:
    """The attempts of each queue entry of a journey on a time line, with the waits
    between them (``retry_at - at`` of each retry step) and how each ended.

    Attempts sit at the waits the queue scheduled, added up; the attempts
    themselves take milliseconds, so the picture is the same on every run.
    """
    steps = journey.steps
    entries = list(dict.fromkeys(s.qid for s in steps if s.qid and s.kind == "attempt"))
    canvas = _Canvas("retry-timeline", f"Attempts over time: {journey.message_id}")
    lanes = {qid: _attempts([s for s in steps if s.qid == qid]) for qid in entries}
    span = max((a[-1].offset for a in lanes.values() if a), default=0.0) or 1.0
    scale = (canvas.width - TIMELINE_LEFT - 3 * PAD) / span
    y = TOP + 30
    rows = []
    for qid, attempts in lanes.items():
        finals = [s for s in steps if s.qid == qid and s.kind in FINAL]
        _timeline_lane(canvas, qid, attempts, finals, y, scale)
        rows += [
            f"attempt {a.number} at {_seconds(a.offset)}: {a.text}"
            + (f"; then wait {_seconds(a.wait)}" if a.wait else "")
            for a in attempts
        ]
        rows += [f"{s.kind}: {s.text}" for s in finals]
        y += 90
    if not entries:
        canvas.text(PAD, y, "No queue attempts in this journey.", width=canvas.width, colour=MUTED)
    canvas.reach(y - 30)
    canvas.caption(
        "Each attempt sits at the waits the queue scheduled before it (retry_at), added up."
    )
    desc = "\n".join(rows) or "no attempts"
    canvas.caption(desc, colour=INK)
    return canvas.picture(desc)


def _timeline_lane(
    canvas: _Canvas,
    qid: str,
    attempts: Sequence[_Attempt],
    finals: Sequence[Step],
    y: int,
    scale: float,
) -> None:
    """One queue entry: an axis, a marker per attempt, the waits between them."""
    left = TIMELINE_LEFT
    right = canvas.width - 2 * PAD
    canvas.text(PAD, y + 4, f"queue entry {qid}", width=left - PAD - 8, bold=True)
    outcome = finals[-1].kind if finals else "still queued"
    tone = {"delivered": "server", "relayed": "server", "still queued": "retry"}.get(outcome)
    canvas.text(PAD, y + 22, outcome, width=left - PAD - 8, colour=TONES[tone or "error"].ink)
    canvas.parts.append(f'<line x1="{left}" y1="{y}" x2="{right}" y2="{y}" stroke="#bdbdbd"/>')
    for a in attempts:
        x = left + round(a.offset * scale)
        ink = TONES[_code_tone(a.code)].ink
        canvas.parts.append(
            f'<g class="attempt"><title>{_e(f"attempt {a.number}: {a.text}")}</title>'
            f'<circle cx="{x}" cy="{y}" r="9" fill="{ink}"/></g>'
        )
        canvas.text(x, y + 4, str(a.number), width=20, colour=HALO, anchor="middle", bold=True)
        canvas.text(
            x, y + 26, _seconds(a.offset), width=80, colour=MUTED, anchor="middle", css="offset"
        )
        if a.wait:
            gap = round(a.wait * scale)
            canvas.text(
                x + gap // 2,
                y - 14,
                f"wait {_seconds(a.wait)}",
                width=gap - 22,
                colour=TONES["retry"].ink,
                anchor="middle",
                css="wait",
            )
    canvas.reach(y + 30)


# -- 09: three identities and DMARC alignment -----------------------------------------------
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
    auth: Authentication = getattr(checked, "auth", checked)
    spf, dmarc = auth.spf, auth.dmarc
    passing = [d for d in auth.dkim if d.result == "pass"]
    signature = (passing or list(auth.dkim) or [None])[0]
    spf_label, spf_tone = _alignment(dmarc.spf_aligned, spf.result, dmarc.result)
    dkim_label, dkim_tone = _alignment(dmarc.dkim_aligned, auth.dkim_result, dmarc.result)
    evaluated = dmarc.result in ("pass", "fail")
    canvas = _Canvas("identities", f"Three identities and DMARC: {auth.summary()}")
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
    placement = getattr(checked, "placement", None)
    if placement is not None:
        where = {"inbox": "the inbox", "junk": "the Junk folder"}.get(placement, checked.reply)
        stations.append(
            Station(
                "placement",
                (0, 3),
                (f"{checked.host} decided", f"→ {where}"),
                "server" if placement == "inbox" else "error",
                span=3,
            )
        )
        links.append(Link("dmarc", "placement", (), "info"))
    words = _diagram(canvas, stations, links, columns=3, gap_x=48, gap_y=44)
    caption = (
        "DMARC needs one aligned pass: SPF or DKIM passing for the From: domain (RFC 7489 §4.2)."
    )
    return canvas.finish(caption, words)


# -- 11: the agents, from mail program to mail program --------------------------------------
def _listeners(source: World | Lab) -> dict[str, Any]:
    """The lab's running POP3/IMAP listeners by role ("imap", "pop3s", ...); none for a World."""
    return dict(getattr(getattr(source, "mailstore", None), "listeners", None) or {})


def mail_agents_picture(source: World | Lab) -> Picture:
    """MUA → MSA → MTA → MDA → mailbox store ← POP3/IMAP ← MUA, named by the world's
    hosts; POP3/IMAP from the lab's running listeners when there are any."""
    cast = _cast(source)
    running = _listeners(source)
    sub = _host(cast.submission)
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
    canvas = _Canvas("mail-agents", "Who does what: MUA → MSA → MTA → MDA → store ← POP3/IMAP")
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
    words = _diagram(canvas, stations, links, columns=4, gap_x=64, gap_y=36)
    state = f"{', '.join(running)} running" if running else "not running in this lab"
    return canvas.finish(f"Role names as in RFC 5598; POP3/IMAP: {state}.", words)
