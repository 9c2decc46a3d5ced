"""Reading a stored message for display, bounded in depth, parts, header bytes and time.

An MX accepts whatever fits its size limit, as a real one does, so a mailbox can
hold hostile MIME: multiparts nested a thousand deep (the email package recurses
and raises RecursionError), a hundred thousand RFC 2047 encoded words or a
subject of half a million words (its header parser is quadratic in both: minutes,
gigabytes), hundreds of thousands of parts or header fields. So before the email
package sees a message, :func:`problem` walks its structure on the raw bytes, in
linear time and without parsing, and names the first limit it breaks:

* each header section at most ``MAX_HEADER_BYTES`` (100 KiB, Postfix's
  ``header_size_limit``) and ``MAX_HEADER_FIELDS`` fields, all of them together
  at most ``MAX_TOTAL_HEADER_BYTES``;
* each field at most ``MAX_FIELD_BYTES`` unfolded and ``MAX_ENCODED_WORDS``
  encoded words;
* MIME parts (multipart bodies, ``message/*`` parts, delivery-status blocks)
  nested at most ``MAX_DEPTH`` deep, and at most ``MAX_PARTS`` of them.

A message within the limits lists in a twentieth of a second and renders its
full header table in under a second (measured on the worst that fits); one
beyond them is shown as "could not be displayed: ..." with its size, and its
bytes stay available as they are (``StoredMessage.raw``). One bad message never
makes the others unreadable.
"""

from __future__ import annotations

import email.parser
import email.policy
import re
from email.message import EmailMessage

from smtplab.errors import SmtplabError

MAX_HEADER_BYTES = 100 * 1024
MAX_TOTAL_HEADER_BYTES = 256 * 1024
MAX_HEADER_FIELDS = 1000
MAX_FIELD_BYTES = 8 * 1024
MAX_ENCODED_WORDS = 200
MAX_DEPTH = 50
MAX_PARTS = 200

# RFC 2047 §2: =?charset?encoding?encoded-text?=
_ENCODED_WORD = re.compile(rb"=\?[^?\s]*\?[bBqQ]\?[^?\s]*\?=")
# The first Content-Type field of a header section, unfolded (RFC 2045 §5.1).
_CONTENT_TYPE = re.compile(rb"^content-type[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)", re.I | re.M)
_MEDIA_TYPE = re.compile(rb"\s*([!#$%&'*+.^_`|~0-9a-z-]+)\s*/\s*([!#$%&'*+.^_`|~0-9a-z-]+)", re.I)
_BOUNDARY = re.compile(rb""";\s*boundary\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;"]+))""", re.I)
_BLANK_LINE = re.compile(rb"\n\r?\n")


def notice(problem: str, size: int) -> str:
    """What a reader is shown instead of a message that breaks a limit."""
    return f"could not be displayed: {problem} ({size} bytes; .raw holds them)"


class UnreadableMessage(SmtplabError, ValueError):
    """A message the lab will not hand to the email package; says which limit it breaks."""

    def __init__(self, problem: str, size: int):
        super().__init__(notice(problem, size))
        self.problem = problem
        self.size = size


def parse(raw: bytes, *, headers_only: bool = False) -> EmailMessage:
    """``raw`` parsed by the email package, or UnreadableMessage if it breaks a limit.

    ``headers_only`` leaves the body unparsed (a summary needs From and Subject).
    """
    found = problem(raw)
    if found is not None:
        raise UnreadableMessage(found, len(raw))
    parser = email.parser.BytesParser(policy=email.policy.default)
    parsed = parser.parsebytes(raw, headersonly=headers_only)
    assert isinstance(parsed, EmailMessage)
    return parsed


def problem(raw: bytes) -> str | None:
    """The first limit ``raw`` breaks (see the module docstring), or None if it has none.

    Parts are ``(start, end)`` ranges of ``raw``: nothing is copied but header
    sections, which are small once their size is checked.
    """
    pending = [(0, len(raw), 1, b"text/plain")]  # start, end, depth, default content type
    parts = 0
    header_bytes = 0
    while pending:
        start, end, depth, default = pending.pop()
        parts += 1
        if parts > MAX_PARTS:
            return f"more than {MAX_PARTS} MIME parts (limit {MAX_PARTS})"
        head_end, body_start = _head_end(raw, start, end)
        head = raw[start:head_end]
        header_bytes += len(head)
        if header_bytes > MAX_TOTAL_HEADER_BYTES:
            return f"more than {MAX_TOTAL_HEADER_BYTES} bytes of headers in all its parts"
        why = _header_problem(head)
        if why is not None:
            return why
        maintype, subtype, boundary = _content_type(head, default)
        children: list[tuple[int, int, bytes]] = []
        if maintype == b"multipart":
            if boundary is None:
                continue  # the email package reads such a body as plain text
            ranges = _parts(raw, body_start, end, boundary, MAX_PARTS - parts + 1)
            if ranges is None:
                return f"more than {MAX_PARTS} MIME parts (limit {MAX_PARTS})"
            inner = b"message/rfc822" if subtype == b"digest" else b"text/plain"
            children = [(s, e, inner) for s, e in ranges]
        elif maintype == b"message" and subtype == b"delivery-status":
            children = [(s, e, b"text/plain") for s, e in _blocks(raw, body_start, end)]
        elif maintype == b"message":
            children = [(body_start, end, b"text/plain")]
        if children and depth >= MAX_DEPTH:
            return f"MIME parts nested more than {MAX_DEPTH} deep (limit {MAX_DEPTH})"
        pending.extend((s, e, depth + 1, inner_default) for s, e, inner_default in children)
    return None


def _head_end(raw: bytes, start: int, end: int) -> tuple[int, int]:
    """Where the header section of ``raw[start:end]`` ends, and where its body starts.

    Only the first ``MAX_HEADER_BYTES`` (and a little) are searched: a longer
    section is reported by its size without reading the rest.
    """
    if raw.startswith((b"\n", b"\r\n"), start, end):  # no header fields at all
        return start, raw.index(b"\n", start) + 1
    window = min(end, start + MAX_HEADER_BYTES + 4)
    found = _BLANK_LINE.search(raw, start, window)
    if found is None:
        return window, window if window < end else end
    return found.start() + 1, found.end()


def _header_problem(head: bytes) -> str | None:
    """The first limit one header section breaks, or None (one pass over its lines)."""
    if len(head) > MAX_HEADER_BYTES:
        return f"a header section of more than {MAX_HEADER_BYTES} bytes (limit {MAX_HEADER_BYTES})"
    fields = 0
    name, size, words = "", 0, 0
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and fields:  # a continuation line (RFC 5322 §2.2.3)
            size += len(line)
        elif line.strip():
            fields += 1
            if fields > MAX_HEADER_FIELDS:
                return f"more than {MAX_HEADER_FIELDS} header fields (limit {MAX_HEADER_FIELDS})"
            name, size, words = line.split(b":", 1)[0][:40].decode("ascii", "replace"), len(line), 0
        else:
            continue
        if size > MAX_FIELD_BYTES:
            return f"a {name} field of more than {MAX_FIELD_BYTES} bytes (limit {MAX_FIELD_BYTES})"
        words += len(_ENCODED_WORD.findall(line))  # an encoded word never spans lines
        if words > MAX_ENCODED_WORDS:
            return f"more than {MAX_ENCODED_WORDS} encoded words in one {name} field"
    return None


def _content_type(head: bytes, default: bytes) -> tuple[bytes, bytes, bytes | None]:
    """(maintype, subtype, boundary) as the email package would read them (RFC 2045 §5.2:
    a missing or unreadable Content-Type means the default)."""
    field = _CONTENT_TYPE.search(head)
    value = field[1] if field else default
    media = _MEDIA_TYPE.match(value)
    if media is None:
        media = _MEDIA_TYPE.match(default)
        assert media is not None
    boundary = _BOUNDARY.search(value)
    found = None
    if boundary is not None:
        found = boundary[2] if boundary[1] is None else re.sub(rb"\\(.)", rb"\1", boundary[1])
    elif b"boundary*" in value.lower():  # RFC 2231 parameters: the email package reads them
        found = b""  # a boundary no line can match: the body counts as one opaque part
    return media[1].lower(), media[2].lower(), found


def _parts(
    raw: bytes, start: int, end: int, boundary: bytes, most: int
) -> list[tuple[int, int]] | None:
    """The body parts of a multipart body (RFC 2046 §5.1.1): the ranges between its
    delimiter lines, up to the close delimiter; None if there are more than ``most``."""
    delimiter = b"--" + boundary
    ranges: list[tuple[int, int]] = []
    begin = None
    at = start
    while True:
        found = raw.find(delimiter, at, end)
        if found < 0:
            break
        at = found + len(delimiter)
        if found != start and raw[found - 1 : found] != b"\n":
            continue  # not at the start of a line
        line_end = raw.find(b"\n", at, end)
        line_end = end if line_end < 0 else line_end
        rest = raw[at:line_end].rstrip(b" \t\r")
        if rest not in (b"", b"--"):
            continue
        if begin is not None:
            ranges.append((begin, max(begin, found - 1)))
            if len(ranges) > most:
                return None
        if rest == b"--":
            break
        begin = at = min(line_end + 1, end)
    if begin is not None and (not ranges or ranges[-1][0] != begin):
        ranges.append((begin, end))  # no close delimiter: the email package keeps the rest
    return ranges


def _blocks(raw: bytes, start: int, end: int) -> list[tuple[int, int]]:
    """The header blocks of a message/delivery-status body (RFC 3464 §2.1), up to a bound."""
    blocks: list[tuple[int, int]] = []
    at = start
    while at < end and len(blocks) <= MAX_PARTS:
        found = _BLANK_LINE.search(raw, at, end)
        stop = end if found is None else found.start() + 1
        if raw[at:stop].strip():
            blocks.append((at, stop))
        at = end if found is None else found.end()
    return blocks
