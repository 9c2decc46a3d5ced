"""Drawings: where a message went (:func:`journey_svg`), one conversation (:func:`sequence_svg`).

Theory of operation
-------------------
Both are pure functions from the lab's data (a :class:`~smtplab.record.journey.Journey`,
a :class:`~smtplab.record.transcript.Transcript`) to SVG text. They read no clock and
no port, use integer coordinates and keep input order, so the same data always
gives the same bytes: a chapter can show ``IPython.display.SVG(journey_svg(j))``
and strict nbval still passes. Text is escaped; a label too long for its place
is cut with "…" and the whole text goes into a ``<title>`` (a hover tooltip).
Arrowheads are drawn as polygons, not ``<marker>`` definitions, so two drawings
on one page cannot clash over element ids.

The journey drawing puts one box per host in order of first appearance (the
client, the submission server, relays, the MX), then a mailbox box per
recipient delivered. Each connection is an arrow labelled with the code that
decided it (``451 ↻ 250`` for a retried hop); steps without a connection (DNS
lookups, queueing, retries, bounces) are tags under the host that did them.

:class:`PathView` shows both drawings as a widget, following a
:class:`~smtplab.view.widgets.models.JourneyModel`.
"""

from __future__ import annotations

import html
import math
import textwrap
from collections.abc import Iterable, Sequence
from typing import Any

import ipywidgets as ipw

from smtplab.record.transcript import Data, Reply, TLSStarted, Transcript
from smtplab.view.widgets._html import ShortRepr, style_widget
from smtplab.view.widgets.models import JourneyModel, PathModel

CHAR_W = 6.7  # advance of an 11 px monospace character, for cutting labels to fit
FONT = 11
PAD = 16

COLOURS = {
    "client": "#1f5fa8",
    "info": "#757575",
    2: "#2e7d32",
    3: "#00838f",
    4: "#ef6c00",
    5: "#c62828",
    None: "#757575",
}
TAGS: dict[str, tuple[str, str, str]] = {  # step kind -> (label, stroke, fill)
    "route": ("DNS", "#6a1b9a", "#f3e5f5"),
    "retry": ("↻ retry", "#ef6c00", "#fff3e0"),
    "queued": ("queued", "#455a64", "#eceff1"),
    "bounced": ("✗ bounced", "#c62828", "#ffebee"),
    "dsn": ("DSN", "#ad1457", "#fce4ec"),
    "submitted": ("submitted", "#616161", "#fafafa"),
    "attempt": ("attempt", "#ef6c00", "#fff3e0"),
    "note": ("note", "#616161", "#fafafa"),
    "refused": ("✗ refused", "#c62828", "#ffebee"),
    "relayed": ("→ relayed", "#2e7d32", "#e8f5e9"),
    "held": ("⏸ held", "#455a64", "#eceff1"),
    "released": ("▶ released", "#455a64", "#eceff1"),
    "postmaster": ("postmaster", "#ad1457", "#fce4ec"),
}


# -- SVG text helpers ---------------------------------------------------------------
def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _fit(text: str, width: float) -> str:
    """``text`` cut to what fits in ``width`` pixels, ending in "…" when cut."""
    limit = max(1, int(width // CHAR_W))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _wrap(text: str, width: float, lines: int) -> list[str]:
    """``text`` broken into at most ``lines`` lines that fit ``width`` pixels; the last is cut."""
    limit = max(1, int(width // CHAR_W))
    out = textwrap.wrap(text, limit, break_long_words=True, break_on_hyphens=False) or [""]
    if len(out) > lines:
        out = [*out[: lines - 1], _fit(" ".join(out[lines - 1 :]), width)]
    return out


def _text(x: int, y: int, text: str, width: float, **attrs: object) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{_e(v)}"' for k, v in attrs.items())
    return f'<text x="{x}" y="{y}"{extra}>{_e(_fit(text, width))}</text>'


def _head(x: float, y: float, dx: float, dy: float, colour: str) -> str:
    """A filled arrowhead with its tip at (x, y), pointing along (dx, dy)."""
    length = math.hypot(dx, dy) or 1.0
    ux, uy = dx / length, dy / length
    bx, by = x - 8 * ux, y - 8 * uy
    points = [(x, y), (bx - 4 * uy, by + 4 * ux), (bx + 4 * uy, by - 4 * ux)]
    coords = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
    return f'<polygon points="{coords}" fill="{colour}"/>'


def _line_arrow(x1: int, y1: int, x2: int, y2: int, colour: str, dashed: bool) -> str:
    dash = ' stroke-dasharray="5 3"' if dashed else ""
    return (
        f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="{colour}" stroke-width="1.5"'
        f"{dash}/>" + _head(x2, y2, x2 - x1, y2 - y1, colour)
    )


def _svg(width: int, height: int, label: str, css_class: str, body: Iterable[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{css_class}" width="100%" '
        f'viewBox="0 0 {width} {height}" style="max-width:{width}px" font-family="monospace" '
        f'font-size="{FONT}" role="img" aria-label="{_e(label)}">'
        f"<title>{_e(label)}</title>"
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>'
        + "".join(body)
        + "</svg>"
    )


def _decisive_code(transcript: Transcript) -> int | None:
    """The reply that decided a connection: the one to the end of data, else the first failure."""
    after_data = False
    for event in transcript.events:
        if isinstance(event, Data):
            after_data = True
        elif isinstance(event, Reply) and after_data:
            return event.code
    failures = [r.code for r in transcript.replies if r.code >= 400]
    if failures:
        return failures[0]
    return transcript.replies[-1].code if transcript.replies else None


def _colour(code: int | None) -> str:
    return COLOURS.get(code // 100 if code is not None else None, COLOURS[None])


# -- the journey ----------------------------------------------------------------------
BOX_W, BOX_H, GAP = 170, 48, 96
TAG_H, TAG_GAP, TAG_LINE, TAG_LINES = 18, 4, 14, 2
MAILBOX_GAP = 10
ARC_STEP = 22


def journey_svg(journey: Any, *, roles: dict[str, str] | None = None) -> str:
    """An SVG drawing of a Journey: host boxes, an arrow per hop, tags for DNS and retries.

    ``roles`` (host → role, such as ``{"mx1.example.org": "mx"}``) adds a second
    line to each box; the first hop's client is called "client" unless given.
    """
    steps = list(journey.steps)
    message_id = getattr(journey, "message_id", "") or ""
    roles = dict(roles or {})
    hosts: list[str] = []
    edges: dict[tuple[str, str], list[tuple[int | None, str]]] = {}
    tags: dict[str, list[tuple[str, str]]] = {}
    mailboxes: list[str] = []
    deliveries: list[tuple[str, str, str]] = []
    reached: dict[str, str] = {}  # host -> the server it last connected to
    bounced: set[str] = set()
    hop = 0

    def place(host: str) -> None:
        if host not in hosts:
            hosts.append(host)

    for step in steps:
        who = f" [{', '.join(step.recipients)}]" if step.recipients else ""
        transcript = step.transcript
        if transcript is not None:
            hop += 1
            place(transcript.client)
            place(transcript.server)
            if hop == 1:
                roles.setdefault(transcript.client, "client")
            code = _decisive_code(transcript)
            about = f"hop {hop}: {transcript.hop} ({step.kind}) {code or '---'} {step.text}"
            edges.setdefault((transcript.client, transcript.server), []).append((code, about))
            reached[transcript.client] = transcript.server
        elif step.kind == "delivered":
            # A queue reports "delivered" once the next hop took the message: the
            # mailbox is behind the server it last connected to.
            store = reached.get(step.host, step.host)
            place(store)
            for rcpt in step.recipients or ("mailbox",):
                if rcpt not in mailboxes:
                    mailboxes.append(rcpt)
                deliveries.append((store, rcpt, f"{step.host}: {step.text}{who}"))
        else:
            if step.kind == "bounced":
                bounced.update(step.recipients)
            place(step.host)
            text = step.text.removeprefix(f"{step.kind}: ")
            tags.setdefault(step.host, []).append((step.kind, f"{text}{who}"))

    columns = {host: i for i, host in enumerate(hosts)}
    mailbox_col = len(hosts)

    # Arrows that skip a column, or go back, arc over the boxes: one level each.
    arc_levels: dict[tuple[int, int, int], int] = {}  # (from column, to column, to row)
    for src, dst in edges:
        if columns[dst] != columns[src] + 1:
            arc_levels.setdefault((columns[src], columns[dst], 0), len(arc_levels))
    for src, rcpt, _ in deliveries:
        if mailbox_col != columns[src] + 1:
            key = (columns[src], mailbox_col, mailboxes.index(rcpt))
            arc_levels.setdefault(key, len(arc_levels))
    top = PAD + 24 + ARC_STEP * len(arc_levels)

    def x_of(col: int) -> int:
        return PAD + col * (BOX_W + GAP)

    def y_of(row: int) -> int:
        return top + row * (BOX_H + MAILBOX_GAP)

    body: list[str] = []
    ends = [f"{len(mailboxes)} delivered"] if mailboxes else []
    ends += [f"{len(bounced)} bounced"] if bounced else []
    state = ", ".join(ends) or "on its way"
    title = f"Journey of {message_id}" if message_id else "Journey of the message"
    if steps:
        title += f": {len(steps)} steps, {hop} hop{'s' if hop != 1 else ''}, {state}"
    body.append(_text(PAD, PAD + 8, title, 10_000, font_weight="bold"))
    if not steps:
        body.append(_text(PAD, top + 14, "No steps yet.", 10_000, fill=COLOURS["info"]))

    # Boxes.
    for host, col in columns.items():
        x, y = x_of(col), y_of(0)
        role = roles.get(host, "")
        fill = "#e3f2fd" if role == "client" else "#f5f5f5"
        body.append(
            f'<g class="host"><title>{_e(host)}{_e(f" ({role})" if role else "")}</title>'
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{fill}" '
            f'stroke="#424242"/>'
            + _text(x + 8, y + 19, host, BOX_W - 16, font_weight="bold")
            + (_text(x + 8, y + 36, role, BOX_W - 16, fill="#616161") if role else "")
            + "</g>"
        )
    for row, rcpt in enumerate(mailboxes):
        x, y = x_of(mailbox_col), y_of(row)
        body.append(
            f'<g class="mailbox"><title>mailbox of {_e(rcpt)}</title>'
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="#e8f5e9" '
            f'stroke="#2e7d32"/>'
            + _text(x + 8, y + 19, "mailbox", BOX_W - 16, fill="#2e7d32", font_weight="bold")
            + _text(x + 8, y + 36, rcpt, BOX_W - 16)
            + "</g>"
        )

    # Arrows.
    def arrow(
        src_col: int, dst_col: int, dst_row: int, label: str, about: str, colour: str, dashed: bool
    ) -> str:
        key = (src_col, dst_col, dst_row)
        if dst_col == src_col + 1:
            x1, y1 = x_of(src_col) + BOX_W, y_of(0) + BOX_H // 2
            x2, y2 = x_of(dst_col), y_of(dst_row) + BOX_H // 2
            drawn = _line_arrow(x1, y1, x2, y2, colour, dashed)
            lx, ly = (x1 + x2) // 2, min(y1, y2) - 6
        else:
            level = arc_levels[key]
            x1, x2 = x_of(src_col) + BOX_W // 2, x_of(dst_col) + BOX_W // 2 - 12
            y1, y2 = y_of(0), y_of(dst_row)
            peak = top - 10 - ARC_STEP * level
            cx, cy = (x1 + x2) // 2, 2 * peak - (y1 + y2) // 2
            dash = ' stroke-dasharray="5 3"' if dashed else ""
            drawn = (
                f'<path d="M {x1} {y1} Q {cx} {cy} {x2} {y2}" fill="none" stroke="{colour}" '
                f'stroke-width="1.5"{dash}/>' + _head(x2, y2, x2 - cx, y2 - cy, colour)
            )
            lx, ly = cx, peak - 3
        return (
            f'<g class="hop"><title>{_e(about)}</title>{drawn}'
            + _text(lx, ly, label, GAP - 4, text_anchor="middle", fill=colour)
            + "</g>"
        )

    for (src, dst), attempts in edges.items():
        codes = [code for code, _ in attempts]
        last = codes[-1]
        label = " ↻ ".join("---" if c is None else str(c) for c in codes)
        about = "\n".join(text for _, text in attempts)
        dashed = last is None or last // 100 != 2
        body.append(arrow(columns[src], columns[dst], 0, label, about, _colour(last), dashed))
    drawn_deliveries: set[tuple[str, str]] = set()
    for src, rcpt, about in deliveries:
        if (src, rcpt) in drawn_deliveries:
            continue
        drawn_deliveries.add((src, rcpt))
        row = mailboxes.index(rcpt)
        body.append(arrow(columns[src], mailbox_col, row, "", about, COLOURS[2], False))

    # Tags under their hosts.
    bottom = y_of(0) + BOX_H
    tag_w = BOX_W + GAP - 12
    for host, items in tags.items():
        x = x_of(columns[host])
        y = y_of(0) + BOX_H + 10
        for kind, text in items:
            name, stroke, fill = TAGS.get(kind, (kind, "#616161", "#fafafa"))
            lines = _wrap(f"{name}: {text}", tag_w - 10, TAG_LINES)
            height = TAG_H + TAG_LINE * (len(lines) - 1)
            body.append(
                f'<g class="tag {_e(kind)}"><title>{_e(f"{kind}: {text}")}</title>'
                f'<rect x="{x}" y="{y}" width="{tag_w}" height="{height}" rx="3" fill="{fill}" '
                f'stroke="{stroke}"/>'
                + "".join(
                    _text(x + 5, y + 13 + TAG_LINE * i, line, tag_w - 10, fill=stroke)
                    for i, line in enumerate(lines)
                )
                + "</g>"
            )
            y += height + TAG_GAP
        bottom = max(bottom, y)
    if mailboxes:
        bottom = max(bottom, y_of(len(mailboxes) - 1) + BOX_H)
    columns_drawn = len(hosts) + (1 if mailboxes else 0)
    width = max(
        420,
        PAD + columns_drawn * (BOX_W + GAP) - GAP + PAD,
        max((x_of(columns[h]) + tag_w + PAD for h in tags), default=0),
    )
    height = max(bottom, top + 24) + PAD
    return _svg(width, height, title, "smtplab-journey", body)


# -- one conversation -------------------------------------------------------------------
SEQ_W = 760
LANE_L, LANE_R = 140, 620
HEAD_W, HEAD_H = 230, 36
ROW = 22


def _groups(transcript: Transcript) -> list[tuple[str, Any, list[str]]]:
    """The transcript's lines grouped by the event they came from: one arrow per group."""
    groups: list[tuple[str, Any, list[str]]] = []
    for line in transcript.lines():
        if groups and groups[-1][1] is line.event:
            groups[-1][2].append(line.text)
        else:
            groups.append((line.side, line.event, [line.text]))
    return groups


def sequence_svg(transcript: Transcript) -> str:
    """A sequence diagram of one connection: client and server lanes, an arrow per line.

    Each command is an arrow from client to server and each reply one back
    (a multi-line reply is one arrow, labelled with its first line); message
    data is one arrow. Replies are coloured by class (2xx green, 3xx teal,
    4xx orange, 5xx red); the lab's remarks are grey notes across both lanes.
    """
    groups = _groups(transcript)
    title = f"{transcript.hop} (recorded by the {transcript.view})"
    body: list[str] = [_text(PAD, PAD + 8, title, SEQ_W - 2 * PAD, font_weight="bold")]
    head_y = PAD + 20
    first = head_y + HEAD_H + 8
    bottom = first + ROW * len(groups) + 8
    for lane, host, end in (
        (LANE_L, transcript.client, "client"),
        (LANE_R, transcript.server, "server"),
    ):
        body.append(
            f'<line x1="{lane}" y1="{head_y + HEAD_H}" x2="{lane}" y2="{bottom}" stroke="#9e9e9e" '
            f'stroke-dasharray="4 3"/>'
            f'<g class="lane"><title>{_e(host)} ({end})</title>'
            f'<rect x="{lane - HEAD_W // 2}" y="{head_y}" width="{HEAD_W}" height="{HEAD_H}" '
            f'rx="5" fill="#f5f5f5" stroke="#424242"/>'
            + _text(lane, head_y + 15, host, HEAD_W - 12, text_anchor="middle", font_weight="bold")
            + _text(lane, head_y + 29, end, HEAD_W - 12, text_anchor="middle", fill="#616161")
            + "</g>"
        )
    label_w = LANE_R - LANE_L - 16
    for i, (side, event, texts) in enumerate(groups):
        y = first + ROW * i + 14
        if isinstance(event, TLSStarted):  # everything below crossed the wire encrypted
            body.insert(
                1,
                f'<rect class="encrypted" x="{LANE_L - 70}" y="{y - 16}" '
                f'width="{LANE_R - LANE_L + 140}" height="{bottom - y + 16}" fill="#fffde7"/>',
            )
        if isinstance(event, Data):
            label = " ".join(texts)
        elif len(texts) > 1:
            label = f"{texts[0]} (+{len(texts) - 1} lines)"
        else:
            label = texts[0]
        about = "\n".join(texts)
        if side == "info":
            fill = "#fff8e1" if isinstance(event, TLSStarted) else "#f5f5f5"
            body.append(
                f'<g class="note"><title>{_e(about)}</title>'
                f'<rect x="{LANE_L - 60}" y="{y - 13}" width="{LANE_R - LANE_L + 120}" '
                f'height="{ROW - 6}" rx="3" fill="{fill}" stroke="#bdbdbd"/>'
                + _text(
                    (LANE_L + LANE_R) // 2,
                    y - 1,
                    label,
                    LANE_R - LANE_L + 100,
                    text_anchor="middle",
                    fill=COLOURS["info"],
                )
                + "</g>"
            )
            continue
        if side == "client":
            colour, x1, x2, kind = COLOURS["client"], LANE_L, LANE_R, "command"
        else:
            code = event.code if isinstance(event, Reply) else None
            colour, x1, x2, kind = _colour(code), LANE_R, LANE_L, "reply"
        body.append(
            f'<g class="{kind}"><title>{_e(about)}</title>'
            + _line_arrow(x1, y + 2, x2, y + 2, colour, False)
            + _text(
                (LANE_L + LANE_R) // 2, y - 3, label, label_w, text_anchor="middle", fill=colour
            )
            + "</g>"
        )
    return _svg(SEQ_W, bottom + PAD, title, "smtplab-sequence", body)


# -- the widget -------------------------------------------------------------------------
class PathView(ShortRepr, ipw.VBox):
    """The journey drawing above the sequence diagram of one hop (chosen in a dropdown)."""

    kind = "smtplab path view"

    def __init__(self, model: PathModel, **kwargs: Any):
        self.model = model
        self.journey_html = ipw.HTML(layout=ipw.Layout(overflow="auto", width="100%"))
        self.hop_picker = ipw.Dropdown(
            description="Hop",
            options=[("newest", -1)],
            value=-1,
            layout=ipw.Layout(width="100%", max_width="480px"),
        )
        self.sequence_html = ipw.HTML(layout=ipw.Layout(overflow="auto", width="100%"))
        children = [style_widget(), self.journey_html, self.hop_picker, self.sequence_html]
        super().__init__(children=children, **kwargs)
        self.add_class("smtplab-path")
        ipw.link((model, "hop"), (self.hop_picker, "value"))
        model.journey.observe(self._render, names=["steps", "hops"])
        model.observe(self._render_sequence, names=["hop"])
        self._render()

    def _render(self, change: dict[str, Any] | None = None) -> None:
        journey_model: JourneyModel = self.model.journey
        journey = journey_model.journey
        self.journey_html.value = (
            journey_svg(journey, roles=journey_model.roles) if journey is not None else ""
        )
        hops: Sequence[Transcript] = journey_model.hops
        options = [("newest", -1), *((f"{i + 1}. {t.hop}", i) for i, t in enumerate(hops))]
        if list(self.hop_picker.options) != options:
            keep = self.model.hop if self.model.hop < len(hops) else -1
            self.hop_picker.options = options
            self.hop_picker.value = keep
        self._render_sequence()

    def _render_sequence(self, change: dict[str, Any] | None = None) -> None:
        transcript = self.model.transcript
        self.sequence_html.value = sequence_svg(transcript) if transcript is not None else ""


def path_view(item: Any = None, *, roles: dict[str, str] | None = None) -> PathView:
    """A widget drawing a SendResult's (or Journey's) path and each hop's sequence diagram."""
    return PathView(PathModel(JourneyModel(item, roles=roles)))
