"""Store and forward (chapter 06): each hop of a journey and who is responsible for the
message after it.

A lane per host; a hop is an arrow labelled with the reply to the message data.
A 250 to the data hands the responsibility on (RFC 5321 §6.1), anything else
leaves it where it was; a delivery stores the message in the mailbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from smtplab.record.journey import Journey, Step
from smtplab.view.pictures.conversation import end_of_data_code, first_failure
from smtplab.view.pictures.kit import PAD, TONES, TOP, Box, Canvas, Picture, code_tone, escape


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
            code = end_of_data_code(transcript)
            failure = first_failure(transcript)
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
        tone = code_tone(code) if code else _note_tone(step.kind)
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
    canvas = Canvas("store-and-forward", f"Store and forward: {journey.message_id}")
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


def _bars(canvas: Canvas, host: str, x: int, holding: list[bool], top: int, tone: str) -> None:
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
                f'<g class="bar {tone}"><title>{escape(f"{host}: {what}")}</title>'
                f'<rect x="{x - BAR_W // 2}" y="{y1}" width="{BAR_W}" height="{y2 - y1}" rx="3" '
                f'fill="{TONES[tone].fill}" stroke="{TONES[tone].ink}"/></g>'
            )
        n = end + 1


def _beat(canvas: Canvas, beat: _Beat, lane_x: dict[str, int], y: int) -> None:
    """One row: an arrow between two lanes, or a note beside one lane."""
    x1 = lane_x[beat.src]
    ink = TONES[beat.tone].ink
    css = f"beat {beat.step.kind}"
    if beat.dst is None:
        canvas.parts.append(
            f'<g class="note"><title>{escape(beat.label)}</title>'
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
