"""What a reply class means, and retries over time (chapter 07).

:func:`reply_classes_picture` is RFC 5321 §4.2.1's four classes as columns, from
the reply to what a mail program and a queue do and who reports a failure.
:func:`retry_timeline_picture` puts a journey's queue attempts on a time line at
the waits the queue scheduled (``retry_at``), so it is the same on every run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from smtplab.protocol.rules import REPLY_CLASSES, reply_meaning
from smtplab.record.journey import FINAL, Journey, Step
from smtplab.view.pictures.conversation import end_of_data_code, first_failure
from smtplab.view.pictures.grid import Link, Station, diagram
from smtplab.view.pictures.kit import (
    CLASS_TONES,
    HALO,
    INK,
    MUTED,
    PAD,
    TONES,
    TOP,
    Canvas,
    Picture,
    code_tone,
    escape,
)

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
    canvas = Canvas("reply-classes", "The first digit decides: what the client does next")
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
    words = diagram(canvas, stations, links, columns=4, gap_x=14, gap_y=22, lit=lit)
    if code is not None:
        canvas.caption(f"{code}: {reply_meaning(code)}", colour=INK)
    return canvas.finish("The classes of RFC 5321 §4.2.1; notices (DSNs) are RFC 3461/3464.", words)


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _scheduled(retry: Step) -> float:
    """The wait a retry step scheduled, as the queue's policy wrote it (0.2, 1.5, 16). The
    queue computes ``retry_at`` from the step's own ``at``; two significant digits only
    drop the float noise of that subtraction."""
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
            failure = first_failure(transcript) if transcript else None
            code = (
                failure.code if failure else (end_of_data_code(transcript) if transcript else None)
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
    canvas = Canvas("retry-timeline", f"Attempts over time: {journey.message_id}")
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
    canvas: Canvas,
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
        ink = TONES[code_tone(a.code)].ink
        canvas.parts.append(
            f'<g class="attempt"><title>{escape(f"attempt {a.number}: {a.text}")}</title>'
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
