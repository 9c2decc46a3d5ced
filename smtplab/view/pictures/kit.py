"""The drawing kit every picture uses: escaping, cutting and wrapping text, colours, boxes,
arrowheads, and a canvas that collects SVG elements into a :class:`Picture`.

Theory of operation
-------------------
A :class:`Canvas` holds SVG elements in drawing order, a heading on top and a
wrapped caption below: rounded boxes with a tooltip, plain bands, arrows, and
labels with a white halo so a line never runs through them. Text is escaped and
cut with "…" where it does not fit (a monospace advance of ``CHAR_W`` pixels per
character), the whole text kept in a ``<title>``. Coordinates are integers, and
nothing reads a clock, a port or a random number, so the same data gives the
same bytes. The root ``<svg>`` has a viewBox, ``width="100%"`` and its natural
width as ``max-width``: a drawing shrinks to fit a narrow pane instead of being
clipped. Colours are the transcript's (client blue, server green, the lab's
remarks grey) and the reply classes' (3yz teal, 4yz orange, 5yz red), on a white
card that stays readable in a dark theme.

The Path tab's sketches (:mod:`.journey`, :func:`.conversation.sequence_svg`) are
smaller (11 px text, no card, plain SVG text rather than a Picture): they use
:func:`sketch_text`, :func:`line_arrow` and :func:`sketch_svg`, with the same
escaping, cutting, colours and arrowheads.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from smtplab.record.transcript import _COLOUR as SIDE_COLOURS

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
FRAME = "#424242"  # the outline of a sketch's boxes
SKETCH_FONT = 11
SKETCH_CHAR_W = 6.7  # the advance of an 11 px monospace character


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
    "notice": Tone("#ad1457", "#fce4ec"),  # a report about the message: a DSN, the postmaster
    "quiet": Tone(MUTED, "#fafafa"),
}
CLASS_TONES = {2: "server", 3: "more", 4: "retry", 5: "error"}


def code_tone(code: int | None) -> str:
    """The tone of a reply code's class (2yz green ... 5yz red); grey without a code."""
    return CLASS_TONES.get((code or 0) // 100, "info")


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
def escape(text: object) -> str:
    return html.escape(str(text), quote=True)


def fit(text: str, width: float, char_w: float = CHAR_W) -> str:
    """``text`` cut to ``width`` pixels, ending in "…" when cut."""
    room = max(1, int(width / char_w))
    return text if len(text) <= room else text[: room - 1] + "…"


def wrap(text: str, width: float, most: int = 6, char_w: float = CHAR_W) -> list[str]:
    """``text`` in lines of at most ``width`` pixels (a newline always breaks), at most
    ``most`` of them, the last cut with "…" if more was left."""
    room = max(1, int(width / char_w))
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
        lines = [*lines[: most - 1], fit(" ".join(lines[most - 1 :]), width, char_w)]
    return lines


# -- shapes --------------------------------------------------------------------------------
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


def arrowhead(x: float, y: float, dx: float, dy: float, colour: str, size: int = 9) -> str:
    """A filled arrowhead with its tip at (x, y), pointing along (dx, dy), ``size`` long.

    A polygon, not a ``<marker>``: two drawings on one page cannot clash over ids."""
    length = math.hypot(dx, dy) or 1.0
    ux, uy = dx / length, dy / length
    back_x, back_y = x - size * ux, y - size * uy
    corners = [(x, y), (back_x - 4 * uy, back_y + 4 * ux), (back_x + 4 * uy, back_y - 4 * ux)]
    return '<polygon points="{}" fill="{}"/>'.format(
        " ".join(f"{px:.1f},{py:.1f}" for px, py in corners), colour
    )


# -- the canvas of a Picture ---------------------------------------------------------------
class Canvas:
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
        attrs = f' class="{escape(css)}"' if css else ""
        attrs += f' text-anchor="{anchor}"' if anchor != "start" else ""
        attrs += ' font-weight="bold"' if bold else ""
        if halo:  # a white outline under the letters: readable across any line
            attrs += (
                f' stroke="{HALO}" stroke-width="4" stroke-linejoin="round" paint-order="stroke"'
            )
        self.parts.append(
            f'<text x="{x}" y="{y}" fill="{colour}"{attrs}>{escape(fit(text, width))}</text>'
        )
        self.reach(y + 5)

    def rect(self, box: Box, fill: str, *, css: str) -> None:
        """A plain filled rectangle: a band behind rows, a bar."""
        self.parts.append(
            f'<rect class="{escape(css)}" x="{box.x}" y="{box.y}" width="{box.w}" '
            f'height="{box.h}" fill="{fill}"/>'
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
            f'<g class="{escape(css)}"><title>{escape(tip or " · ".join(lines))}</title>'
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
            f'<g class="{escape(css)}"><title>{escape(tip)}</title>'
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="{weight}"'
            f"{dash}/>" + arrowhead(x2, y2, x2 - x1, y2 - y1, colour) + "</g>"
        )

    def caption(self, text: str, *, colour: str = MUTED) -> None:
        """Wrapped lines of prose under everything drawn so far."""
        y = self.bottom + 24
        for line in wrap(text, self.width - 2 * PAD, most=12):
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
            f'aria-label="{escape(self.title)}">'
            f"<title>{escape(self.title)}</title><desc>{escape(desc)}</desc>"
            f'<rect class="card" x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" '
            f'rx="8" fill="#ffffff" stroke="#e0e0e0"/>' + "".join(self.parts) + "</svg>"
        )
        return Picture(svg, self.title)


# -- the sketches of the Path tab ------------------------------------------------------------
def sketch_text(x: int, y: int, text: str, width: float, **attrs: object) -> str:
    """A ``<text>`` cut to ``width`` pixels of 11 px text; ``font_weight=`` becomes
    ``font-weight="…"``."""
    extra = "".join(f' {k.replace("_", "-")}="{escape(v)}"' for k, v in attrs.items())
    return f'<text x="{x}" y="{y}"{extra}>{escape(fit(text, width, SKETCH_CHAR_W))}</text>'


def line_arrow(x1: int, y1: int, x2: int, y2: int, colour: str, dashed: bool) -> str:
    dash = ' stroke-dasharray="5 3"' if dashed else ""
    return (
        f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="{colour}" stroke-width="1.5"'
        f"{dash}/>" + arrowhead(x2, y2, x2 - x1, y2 - y1, colour, size=8)
    )


def sketch_svg(width: int, height: int, label: str, css_class: str, body: Iterable[str]) -> str:
    """The root of a sketch: scales like a Picture, on a plain white ground."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{css_class}" width="100%" '
        f'viewBox="0 0 {width} {height}" style="max-width:{width}px" font-family="monospace" '
        f'font-size="{SKETCH_FONT}" role="img" aria-label="{escape(label)}">'
        f"<title>{escape(label)}</title>"
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>'
        + "".join(body)
        + "</svg>"
    )
