"""Boxes on a grid, joined by labelled arrows: the diagrams of chapters 00, 02, 05, 07, 09, 11.

A diagram is a list of :class:`Station` s (a box at a column and row) and
:class:`Link` s (an arrow between two of them). :func:`diagram` sizes every box
alike (the tallest decides), draws the arrows from the facing sides with their
labels at the middle, and can light one path through a flow chart (the others
muted). It returns what it drew in words, for the picture's ``<desc>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from smtplab.view.pictures.kit import LINE_H, PAD, TONES, Box, Canvas, wrap


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


def diagram(
    canvas: Canvas,
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
            *(w for line in s.lines[1:] if line for w in wrap(line, width(s) - 12)),
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


def _link(canvas: Canvas, a: Box, b: Box, link: Link, on: bool, gap_x: int, lighting: bool) -> None:
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
