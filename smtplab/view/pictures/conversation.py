"""Pictures of one connection: what crossed the wire in the clear or encrypted (02, 08),
and a sequence diagram of its commands and replies (the dashboard's Path tab).

Also the two facts about a transcript the journey pictures need: the reply to the
message data (the one that decides who is responsible, RFC 5321 §6.1) and the
first failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from smtplab.record.transcript import Command, Data, Reply, TLSStarted, Transcript
from smtplab.record.transcript import _data_summary as data_summary
from smtplab.view.pictures.kit import (
    FRAME,
    HALO,
    MUTED,
    PAD,
    TONES,
    TOP,
    Box,
    Canvas,
    Picture,
    code_tone,
    escape,
    line_arrow,
    sketch_svg,
    sketch_text,
)


def end_of_data_code(transcript: Transcript) -> int | None:
    """The reply to the message data (the one that decides responsibility), if it came."""
    seen_data = False
    for event in transcript.events:
        seen_data = seen_data or isinstance(event, Data)
        if seen_data and isinstance(event, Reply):
            return event.code
    return None


def first_failure(transcript: Transcript) -> Reply | None:
    return next((r for r in transcript.replies if r.code >= 400), None)


# -- in the clear or encrypted: the TLS timeline ------------------------------------------
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
            rows.append(_Row("server", event.lines[0] + more, code_tone(event.code)))
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
    canvas = Canvas(
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


def _tls_column(canvas: Canvas, transcript: Transcript, x: int, width: int) -> str:
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


def _tls_bar(canvas: Canvas, x: int, y: int, width: int, version: str) -> int:
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


# -- the sequence diagram of one connection ---------------------------------------------
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
    body: list[str] = [sketch_text(PAD, PAD + 8, title, SEQ_W - 2 * PAD, font_weight="bold")]
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
            f'<g class="lane"><title>{escape(host)} ({end})</title>'
            f'<rect x="{lane - HEAD_W // 2}" y="{head_y}" width="{HEAD_W}" height="{HEAD_H}" '
            f'rx="5" fill="{TONES["info"].fill}" stroke="{FRAME}"/>'
            + sketch_text(
                lane, head_y + 15, host, HEAD_W - 12, text_anchor="middle", font_weight="bold"
            )
            + sketch_text(lane, head_y + 29, end, HEAD_W - 12, text_anchor="middle", fill=MUTED)
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
            fill = "#fff8e1" if isinstance(event, TLSStarted) else TONES["info"].fill
            body.append(
                f'<g class="note"><title>{escape(about)}</title>'
                f'<rect x="{LANE_L - 60}" y="{y - 13}" width="{LANE_R - LANE_L + 120}" '
                f'height="{ROW - 6}" rx="3" fill="{fill}" stroke="#bdbdbd"/>'
                + sketch_text(
                    (LANE_L + LANE_R) // 2,
                    y - 1,
                    label,
                    LANE_R - LANE_L + 100,
                    text_anchor="middle",
                    fill=TONES["info"].ink,
                )
                + "</g>"
            )
            continue
        if side == "client":
            colour, x1, x2, kind = TONES["client"].ink, LANE_L, LANE_R, "command"
        else:
            code = event.code if isinstance(event, Reply) else None
            colour, x1, x2, kind = TONES[code_tone(code)].ink, LANE_R, LANE_L, "reply"
        body.append(
            f'<g class="{kind}"><title>{escape(about)}</title>'
            + line_arrow(x1, y + 2, x2, y + 2, colour, False)
            + sketch_text(
                (LANE_L + LANE_R) // 2, y - 3, label, label_w, text_anchor="middle", fill=colour
            )
            + "</g>"
        )
    return sketch_svg(SEQ_W, bottom + PAD, title, "smtplab-sequence", body)
