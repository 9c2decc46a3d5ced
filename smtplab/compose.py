"""Building messages and checking what a reader typed before anything is sent.

Bad input must get a clear error and lose nothing: an address with a space,
CR or LF in a header (header injection), or an empty recipient list is refused
here with an :class:`InvalidInput` that names the field, so a widget can show
the message beside it instead of a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from email.message import EmailMessage

# RFC 5321 §4.1.2 Mailbox, kept simple: dot-atom local part (or UTF-8, RFC 6531) @ domain.
_ADDRESS = re.compile(
    r"^[^\s@<>()\[\],;:\"\\]+@[A-Za-z0-9\u0080-\uffff]([A-Za-z0-9\u0080-\uffff.-]*[A-Za-z0-9\u0080-\uffff])?$"
)


class InvalidInput(ValueError):
    """A field a reader filled in is not acceptable; ``field`` says which one."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def check_header_text(field: str, value: str) -> str:
    """Refuse CR or LF in a header value: they would let text inject new headers."""
    if "\r" in value or "\n" in value:
        raise InvalidInput(field, "line breaks are not allowed here (header injection)")
    return value


def check_address(field: str, address: str) -> str:
    """Return ``address`` stripped, or raise InvalidInput explaining what is wrong."""
    address = check_header_text(field, address).strip()
    if not address:
        raise InvalidInput(field, "an address is required")
    if not _ADDRESS.match(address) or ".." in address.rpartition("@")[2]:
        raise InvalidInput(field, f"{address!r} is not an address like name@example.org")
    return address


def address_list(field: str, value: str | Iterable[str]) -> list[str]:
    """Accept ``"a@x, b@y"`` or a list; check each address."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return [check_address(field, item) for item in items if item.strip()]


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
    message = EmailMessage()
    message["From"] = sender
    if to:
        message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    message["Subject"] = check_header_text("subject", subject)
    message["Date"] = date
    message["Message-ID"] = message_id
    for name, value in (headers or {}).items():
        message[check_header_text(name, name)] = check_header_text(name, value)
    message.set_content(body)
    for filename, content, content_type in attachments:
        maintype, _, subtype = content_type.partition("/")
        if not maintype or not subtype or "/" in subtype:
            raise InvalidInput("attachment", f"{content_type!r} is not a MIME type like text/plain")
        if not check_header_text("attachment", filename).strip():
            raise InvalidInput("attachment", "an attached file needs a name")
        message.add_attachment(
            bytes(content), maintype=maintype, subtype=subtype, filename=filename
        )
    if message.is_multipart():
        message.set_boundary(boundary_for(message_id))
    return message


def boundary_for(message_id: str) -> str:
    """A MIME boundary made from the Message-ID (RFC 2046 §5.1.1: at most 70 characters).

    It starts with ``=_``, which quoted-printable and base64 content can never
    contain (RFC 2045 §6.7), so it cannot collide with an encoded part.
    """
    token = re.sub(r"[^A-Za-z0-9.-]", ".", message_id.strip("<>"))
    return f"=_smtplab_{token}"[:70]
