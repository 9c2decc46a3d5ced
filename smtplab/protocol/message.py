"""Building messages and checking what a reader typed before anything is sent.

Bad input must get a clear error and lose nothing: an address with a space,
CR or LF in a header (header injection), or an empty recipient list is refused
here with an :class:`InvalidInput` that names the field, so a widget can show
the message beside it instead of a traceback.

Everything ``lab.send`` (and the compose widget) is given passes one of these
checks before a connection is opened, so no ``ValueError`` or
``UnicodeEncodeError`` surfaces from deep inside smtplib or the email package:
text that cannot be encoded (a lone surrogate), every line break the email
package knows (CR and LF, but also VT, FF, U+2028 ...), control characters,
header names outside RFC 5322 §2.2, a second copy of a field RFC 5322 §3.6
allows once, and DSN parameters (RFC 3461) that are not one word.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from email.message import EmailMessage

from smtplab.errors import SmtplabError
from smtplab.protocol.rules import is_typed_address


class InvalidInput(SmtplabError, ValueError):
    """A field a reader filled in is not acceptable; ``field`` says which one."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


#: Every character str.splitlines() breaks on: the email package refuses them all in a header.
_LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
# RFC 5322 §2.2: a field name is printable US-ASCII (33-126) except the colon.
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")
#: Fields ``build_message`` writes itself, and the argument that sets each.
_WRITTEN = {
    "from": "the sender",
    "to": "recipients=",
    "cc": "cc=",
    "bcc": "bcc= (the lab never writes a Bcc: line, so blind copies stay blind)",
    "subject": "subject=",
    "date": "the lab clock (pass message= to write your own)",
    "message-id": "the lab (pass message= to write your own)",
    "mime-version": "the body and attachments (pass message= for your own MIME)",
}
#: The other fields RFC 5322 §3.6 allows at most once.
_AT_MOST_ONCE = frozenset({"sender", "reply-to", "in-reply-to", "references"})
# RFC 3461 §4.1, §4.3 (and RFC 5321 §4.1.2 esmtp-value): one word, no "=", "," or space.
_PARAMETER_WORD = re.compile(r"[\x21-\x2b\x2d-\x3c\x3e-\x7e]+")


def _checked_text(field: str, value: object) -> str:
    """``value`` if it is text that can be encoded (no lone surrogate), else InvalidInput."""
    if not isinstance(value, str):
        raise InvalidInput(field, f"must be text, not {type(value).__name__}")
    bad = next((c for c in value if unicodedata.category(c) == "Cs"), None)
    if bad is not None:
        raise InvalidInput(field, f"{bad!r} is a lone surrogate: it cannot be encoded")
    return value


def check_header_text(field: str, value: str) -> str:
    """Refuse line breaks in a header value (they would let text inject new headers),
    control characters but TAB, and text that cannot be encoded."""
    value = _checked_text(field, value)
    if any(c in _LINE_BREAKS for c in value):
        raise InvalidInput(field, "line breaks are not allowed here (header injection)")
    bad = next((c for c in value if unicodedata.category(c) == "Cc" and c != "\t"), None)
    if bad is not None:
        raise InvalidInput(field, f"the control character {bad!r} is not allowed here")
    return value


def check_headers(headers: Mapping[str, str] | None) -> list[tuple[str, str]]:
    """Extra header fields for :func:`build_message`, checked: RFC 5322 §2.2 names and
    values, no field the message already has, none twice that §3.6 allows once."""
    if headers is None:
        return []
    if not isinstance(headers, Mapping):
        raise InvalidInput("headers", "must be a dict of header name to value")
    seen: set[str] = set()
    checked = []
    for name, value in headers.items():
        if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
            raise InvalidInput(
                "headers",
                f"{name!r} is not a header name (RFC 5322 §2.2: printable US-ASCII, "
                "no space or colon)",
            )
        key = name.lower()
        if key in _WRITTEN or key.startswith("content-"):
            owner = _WRITTEN.get(key, _WRITTEN["mime-version"])
            raise InvalidInput("headers", f"{name} is written by lab.send: set it with {owner}")
        if key in seen and key in _AT_MOST_ONCE:
            raise InvalidInput("headers", f"at most one {name} field (RFC 5322 §3.6)")
        seen.add(key)
        try:
            checked.append((name, check_header_text("headers", value)))
        except InvalidInput as error:
            raise InvalidInput("headers", f"{name}: {error.message}") from None
    return checked


def check_parameter_words(field: str, words: str | Iterable[str]) -> list[str]:
    """DSN values for MAIL or RCPT (NOTIFY, RET: RFC 3461 §4.1, §4.3), each one word.

    Only what cannot be one parameter is refused here; a word the server does not
    know (``NOTIFY=SOMETIMES``) goes to the server, which answers 501.
    """
    checked = []
    for word in [words] if isinstance(words, str) else list(words):
        if not _PARAMETER_WORD.fullmatch(_checked_text(field, word)):
            raise InvalidInput(field, f"{word!r} is not one word (no space, ',', '=' or newline)")
        checked.append(word)
    return checked


def check_address(field: str, address: str) -> str:
    """Return ``address`` stripped, or raise InvalidInput explaining what is wrong."""
    address = check_header_text(field, address).strip()
    if not address:
        raise InvalidInput(field, "an address is required")
    if not is_typed_address(address):
        raise InvalidInput(field, f"{address!r} is not an address like name@example.org")
    return address


def address_list(field: str, value: str | Iterable[str]) -> list[str]:
    """Accept ``"a@x, b@y"`` or a list; check each address."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return [
        check_address(field, item) for item in items if not isinstance(item, str) or item.strip()
    ]


def build_message(
    sender: str,
    to: list[str],
    cc: list[str],
    subject: str,
    body: str,
    *,
    date: str,
    message_id: str,
    headers: dict[str, str] | None = None,
    attachments: Iterable[tuple[str, bytes, str]] = (),
) -> EmailMessage:
    """An RFC 5322 message. Bcc recipients are not given: they never appear in headers.

    ``attachments`` are ``(filename, content, "type/subtype")``; with any, the
    message becomes multipart/mixed (RFC 2046 §5.1.3) with a boundary derived
    from ``message_id``, so the same message always has the same bytes.
    """
    extra = check_headers(headers)
    files = [check_attachment(*_triple(attachment)) for attachment in attachments]
    message = EmailMessage()
    message["From"] = sender
    if to:
        message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    message["Subject"] = check_header_text("subject", subject)
    message["Date"] = date
    message["Message-ID"] = message_id
    for name, value in extra:
        message[name] = value
    message.set_content(_checked_text("body", body))
    for filename, content, (maintype, subtype) in files:
        message.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
    if message.is_multipart():
        message.set_boundary(boundary_for(message_id))
    return message


# RFC 2045 §5.1: type "/" subtype, each a token (no space, control or tspecial).
_MIME_TYPE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+)/([!#$%&'*+.^_`|~0-9A-Za-z-]+)")


def _triple(attachment: object) -> tuple[str, bytes, str]:
    if not isinstance(attachment, tuple | list) or len(attachment) != 3:
        raise InvalidInput("attachment", "each attachment is (filename, content, content_type)")
    return attachment[0], attachment[1], attachment[2]


def check_attachment(
    filename: str, content: bytes, content_type: str
) -> tuple[str, bytes, tuple[str, str]]:
    """One ``(filename, content, "type/subtype")`` attachment, checked."""
    if not check_header_text("attachment", filename).strip():
        raise InvalidInput("attachment", "an attached file needs a name")
    if not isinstance(content, bytes | bytearray | memoryview):
        raise InvalidInput("attachment", f"{filename}: the content must be bytes")
    match = _MIME_TYPE.fullmatch(_checked_text("attachment", content_type))
    if match is None:
        raise InvalidInput("attachment", f"{content_type!r} is not a MIME type like text/plain")
    return filename, bytes(content), (match[1], match[2])


def boundary_for(message_id: str) -> str:
    """A MIME boundary made from the Message-ID (RFC 2046 §5.1.1: at most 70 characters).

    It starts with ``=_``, which quoted-printable and base64 content can never
    contain (RFC 2045 §6.7), so it cannot collide with an encoded part.
    """
    token = re.sub(r"[^A-Za-z0-9.-]", ".", message_id.strip("<>"))
    return f"=_smtplab_{token}"[:70]
