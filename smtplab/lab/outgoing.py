"""The message ``lab.send`` sends: its arguments checked, the message built, the envelope
and the DSN parameters ready for :func:`smtplab.lab.submit.submit`.

Everything unusable raises InvalidInput naming the argument, in a fixed order and before
any connection is opened, so a reader's mistake never reaches a server half made.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

from smtplab.protocol.message import (
    InvalidInput,
    address_list,
    build_message,
    check_address,
    check_parameter_words,
)
from smtplab.protocol.rules import message_id_of
from smtplab.world import check_password


@dataclass(frozen=True)
class Outgoing:
    """One message ready to go: who from, to whom (To, Cc and Bcc), which server, the
    bytes, and the MAIL and RCPT parameters."""

    sender: str
    envelope: list[str]
    host: str
    raw: bytes
    message_id: str
    mail_options: list[str]
    rcpt_options: list[str]


def prepare(
    sender: str,
    recipients: str | Iterable[str],
    subject: str,
    body: str,
    *,
    cc: str | Iterable[str],
    bcc: str | Iterable[str],
    via: str | None,
    servers: Collection[str],
    default_route: Callable[[str, list[str]], str],
    message: EmailMessage | bytes | None,
    headers: dict[str, str] | None,
    password: str | None,
    notify: Iterable[str],
    ret: str | None,
    attachments: Iterable[tuple[str, bytes, str]],
    new_message_id: Callable[[str], str],
    date: Callable[[], str],
) -> Outgoing:
    """Check ``lab.send``'s arguments and build what it sends (see :meth:`Lab.send`).

    ``default_route`` picks the server when ``via`` is None; ``new_message_id(sender)``
    and ``date()`` are called only once every argument is known to be usable.
    """
    sender = check_address("from", sender)
    to, cc_list, bcc_list = (
        address_list("to", recipients),
        address_list("cc", cc),
        address_list("bcc", bcc),
    )
    envelope = to + cc_list + bcc_list
    if not envelope:
        raise InvalidInput("to", "at least one recipient is required")
    notify = check_parameter_words("notify", notify)
    ret = check_parameter_words("ret", ret)[0] if ret else None
    if password is not None:
        check_password("password", password)
    if via is not None and via not in servers:
        raise InvalidInput("via", f"no lab server named {via!r}; have {sorted(servers)}")
    if message is not None and not isinstance(message, EmailMessage | bytes):
        raise InvalidInput("message", "pass an EmailMessage or the message's bytes")
    host = via or default_route(sender, envelope)
    attachments = list(attachments)
    if message is not None and attachments:
        raise InvalidInput("attachment", "attach files to the message you pass instead")
    message_id = new_message_id(sender)
    if message is None:
        message = build_message(
            sender,
            to,
            cc_list,
            subject,
            body,
            date=date(),
            message_id=message_id,
            headers=headers,
            attachments=attachments,
        )
    raw = message if isinstance(message, bytes) else message.as_bytes(policy=SMTP_POLICY)
    if message_id_of(raw) is None:  # as every mail program does (RFC 5322 §3.6.4)
        raw = f"Message-ID: {message_id}\r\n".encode() + raw
    return Outgoing(
        sender,
        envelope,
        host,
        raw,
        message_id_of(raw) or message_id,
        # The words as given, in their order: a wrong one is the server's to refuse (501).
        mail_options=[f"RET={ret}"] if ret else [],
        rcpt_options=[f"NOTIFY={','.join(notify)}"] if notify else [],
    )
