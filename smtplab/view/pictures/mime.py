"""The MIME tree of a message (chapter 04): a box per part, children indented under parents.

The message is read with the lab's bounded reader (:mod:`smtplab.protocol.reader`):
at most ``MAX_PARTS`` parts, ``MAX_DEPTH`` deep, and a message it refuses shows
as a notice instead of a tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage, Message
from typing import TYPE_CHECKING

from smtplab.protocol import reader
from smtplab.view.pictures.kit import PAD, TONES, TOP, Box, Canvas, Picture

if TYPE_CHECKING:
    from smtplab.mailstore.maildir import StoredMessage


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
    if filename:
        bits.append(f"{disposition or 'attachment'}: {filename}")
    elif disposition:
        bits.append(disposition)
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
            pending.extend(
                (child, depth + 1, me) for child in reversed(children) if isinstance(child, Message)
            )
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
    raw = message if isinstance(message, bytes | Message) else message.raw
    canvas = Canvas("mime-tree", "The MIME tree of the message")
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
