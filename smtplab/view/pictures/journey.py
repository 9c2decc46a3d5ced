"""Where a message went (the dashboard's Path tab): :func:`journey_svg`.

Theory of operation
-------------------
A pure function from a :class:`~smtplab.record.journey.Journey` to SVG text: it
reads no clock and no port, uses integer coordinates and keeps input order, so
the same journey always gives the same bytes. It puts one box per host in order
of first appearance (the client, the submission server, relays, the MX), then a
mailbox box per recipient delivered. Each connection is an arrow labelled with
the code that decided it (``451 ↻ 250`` for a retried hop); an arrow that skips a
column or goes back arcs over the boxes, one level each. Steps without a
connection (DNS lookups, queueing, retries, bounces) are tags under the host that
did them. Text is escaped; a label too long for its place is cut with "…" and
the whole text goes into a ``<title>`` (a hover tooltip).
"""

from __future__ import annotations

from smtplab.record.journey import Journey
from smtplab.record.transcript import Transcript
from smtplab.view.pictures.conversation import end_of_data_code, first_failure
from smtplab.view.pictures.kit import (
    FRAME,
    MUTED,
    PAD,
    SKETCH_CHAR_W,
    TONES,
    arrowhead,
    code_tone,
    escape,
    line_arrow,
    sketch_svg,
    sketch_text,
    wrap,
)

TAGS: dict[str, tuple[str, str]] = {  # step kind -> (label, tone)
    "route": ("DNS", "dns"),
    "retry": ("↻ retry", "retry"),
    "queued": ("queued", "store"),
    "bounced": ("✗ bounced", "error"),
    "dsn": ("DSN", "notice"),
    "submitted": ("submitted", "quiet"),
    "attempt": ("attempt", "retry"),
    "note": ("note", "quiet"),
    "refused": ("✗ refused", "error"),
    "relayed": ("→ relayed", "server"),
    "held": ("⏸ held", "store"),
    "released": ("▶ released", "store"),
    "postmaster": ("postmaster", "notice"),
}


def _decisive_code(transcript: Transcript) -> int | None:
    """The reply that decided a connection: the one to the end of data, else the first
    failure, else the last reply."""
    code = end_of_data_code(transcript)
    if code is not None:
        return code
    failure = first_failure(transcript)
    if failure is not None:
        return failure.code
    return transcript.replies[-1].code if transcript.replies else None


BOX_W, BOX_H, GAP = 170, 48, 96
TAG_H, TAG_GAP, TAG_LINE, TAG_LINES = 18, 4, 14, 2
MAILBOX_GAP = 10
ARC_STEP = 22


def journey_svg(journey: Journey, *, roles: dict[str, str] | None = None) -> str:
    """An SVG drawing of a Journey: host boxes, an arrow per hop, tags for DNS and retries.

    ``roles`` (host → role, such as ``{"mx1.example.org": "mx"}``) adds a second
    line to each box; the first hop's client is called "client" unless given.
    """
    steps = list(journey.steps)
    message_id = journey.message_id
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
    body.append(sketch_text(PAD, PAD + 8, title, 10_000, font_weight="bold"))
    if not steps:
        body.append(sketch_text(PAD, top + 14, "No steps yet.", 10_000, fill=TONES["info"].ink))

    # Boxes.
    for host, col in columns.items():
        x, y = x_of(col), y_of(0)
        role = roles.get(host, "")
        fill = TONES["client" if role == "client" else "info"].fill
        body.append(
            f'<g class="host"><title>{escape(host)}{escape(f" ({role})" if role else "")}</title>'
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{fill}" '
            f'stroke="{FRAME}"/>'
            + sketch_text(x + 8, y + 19, host, BOX_W - 16, font_weight="bold")
            + (sketch_text(x + 8, y + 36, role, BOX_W - 16, fill=MUTED) if role else "")
            + "</g>"
        )
    for row, rcpt in enumerate(mailboxes):
        x, y = x_of(mailbox_col), y_of(row)
        body.append(
            f'<g class="mailbox"><title>mailbox of {escape(rcpt)}</title>'
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" '
            f'fill="{TONES["server"].fill}" stroke="{TONES["server"].ink}"/>'
            + sketch_text(
                x + 8, y + 19, "mailbox", BOX_W - 16, fill=TONES["server"].ink, font_weight="bold"
            )
            + sketch_text(x + 8, y + 36, rcpt, BOX_W - 16)
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
            drawn = line_arrow(x1, y1, x2, y2, colour, dashed)
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
                f'stroke-width="1.5"{dash}/>' + arrowhead(x2, y2, x2 - cx, y2 - cy, colour, size=8)
            )
            lx, ly = cx, peak - 3
        return (
            f'<g class="hop"><title>{escape(about)}</title>{drawn}'
            + sketch_text(lx, ly, label, GAP - 4, text_anchor="middle", fill=colour)
            + "</g>"
        )

    for (src, dst), attempts in edges.items():
        codes = [code for code, _ in attempts]
        last = codes[-1]
        label = " ↻ ".join("---" if c is None else str(c) for c in codes)
        about = "\n".join(text for _, text in attempts)
        dashed = last is None or last // 100 != 2
        body.append(
            arrow(columns[src], columns[dst], 0, label, about, TONES[code_tone(last)].ink, dashed)
        )
    drawn_deliveries: set[tuple[str, str]] = set()
    for src, rcpt, about in deliveries:
        if (src, rcpt) in drawn_deliveries:
            continue
        drawn_deliveries.add((src, rcpt))
        row = mailboxes.index(rcpt)
        body.append(arrow(columns[src], mailbox_col, row, "", about, TONES["server"].ink, False))

    # Tags under their hosts.
    bottom = y_of(0) + BOX_H
    tag_w = BOX_W + GAP - 12
    for host, items in tags.items():
        x = x_of(columns[host])
        y = y_of(0) + BOX_H + 10
        for kind, text in items:
            name, tone = TAGS.get(kind, (kind, "quiet"))
            stroke, fill = TONES[tone].ink, TONES[tone].fill
            lines = wrap(f"{name}: {text}", tag_w - 10, TAG_LINES, SKETCH_CHAR_W)
            height = TAG_H + TAG_LINE * (len(lines) - 1)
            body.append(
                f'<g class="tag {escape(kind)}"><title>{escape(f"{kind}: {text}")}</title>'
                f'<rect x="{x}" y="{y}" width="{tag_w}" height="{height}" rx="3" fill="{fill}" '
                f'stroke="{stroke}"/>'
                + "".join(
                    sketch_text(x + 5, y + 13 + TAG_LINE * i, line, tag_w - 10, fill=stroke)
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
    return sketch_svg(width, height, title, "smtplab-journey", body)
