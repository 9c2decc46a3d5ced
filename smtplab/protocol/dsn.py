"""Delivery status notifications: the report itself (RFC 3464), with no I/O.

Theory of operation
-------------------
A sender asks for notifications with the DSN parameters of RFC 3461
(:mod:`smtplab.protocol.dsn_params`). When the queue gives up or keeps waiting, when
the MX delivers, or when a relay hands a message to a next hop without DSN (RFC 3461
§5.2; :func:`~smtplab.protocol.dsn_params.wants` decides from ``NOTIFY``), it builds
a report with :func:`build_dsn`: a ``multipart/report`` (RFC 6522) with a note for
people, a ``message/delivery-status`` for programs (RFC 3464), and the original
message or only its headers (``RET``). The report goes out from the null
reverse-path ``MAIL FROM:<>``, and :func:`must_not_notify` refuses a report about a
report, so two mail systems can never bounce mail at each other forever.

Every input, dates and Message-ID included, is passed in, and the MIME boundary
is a hash of the content: the same report has the same bytes on every run.
:func:`summarize` reads a report back with the ``email`` package.
"""

from __future__ import annotations

import hashlib
import textwrap
from dataclasses import dataclass
from email.message import Message
from typing import Literal, cast

from smtplab.protocol import reader
from smtplab.protocol.dsn_params import Action, Ret
from smtplab.protocol.rules import (
    CRLF,
    domain_of,
    normalize_newlines,
    parse_reply_line,
    split_enhanced,
)

Kind = Literal["failed", "delayed", "delivered", "relayed"]

_FOLD_AT = 78  # RFC 5322 §2.1.1: SHOULD stay under 78, MUST stay under 998
_CHUNK = 900  # a word with no space to fold at is cut into pieces this long
_SUBJECTS: dict[Kind, str] = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "delivered": "Successful Mail Delivery Report",
    "relayed": "Successful Mail Relay Report",
}
_INTROS: dict[Kind, str] = {
    "failed": "Your message could not be delivered to one or more of its recipients. "
    "{why} The reasons are listed below, and {copy} is attached.",
    "delayed": "Your message has not reached one or more of its recipients yet. "
    "This is only a warning: the mail system keeps trying, so there is no need "
    "to send the message again. The reasons for the delay are listed below.",
    "delivered": "Your message was delivered to the recipients listed below. "
    "You are getting this report because you asked for one (NOTIFY=SUCCESS).",
    "relayed": "Your message was passed on for the recipients listed below to a mail "
    "system that does not send delivery reports, so this is the last report you will "
    "get when it arrives (that system may still tell you if it fails). You are getting "
    "this report because you asked for one (NOTIFY=SUCCESS).",
}
#: Why a bounce stopped trying, by the classes of its failed recipients' Status codes: a
#: 4.x.x is a temporary problem that outlived the queue's patience (RFC 3463 §3.1).
_GAVE_UP = {
    frozenset("5"): "The problem is permanent, so the mail system has stopped trying.",
    frozenset("4"): "The problem was temporary, but it lasted longer than the mail system "
    "keeps trying, so it has stopped trying.",
    frozenset("45"): "For some recipients the problem is permanent; for the others a "
    "temporary problem lasted longer than the mail system keeps trying. It has stopped trying.",
}
_LABELS: dict[Kind, str] = {
    "failed": "Undelivered",
    "delayed": "Delayed",
    "delivered": "Delivered",
    "relayed": "Relayed",
}
#: Text the lab cannot write as UTF-8 (a lone surrogate from an undecodable byte in an
#: address) is written as an escape: a report is always built (RFC 5321 §6.1).
_UNWRITABLE = "backslashreplace"


def must_not_notify(original_sender: str) -> bool:
    """True for the null reverse-path: never send a DSN about a DSN (RFC 5321 §4.5.5)."""
    return original_sender.strip() in ("", "<>")


@dataclass(frozen=True)
class RecipientStatus:
    """What happened to one recipient. ``diagnostic`` is the remote reply, e.g. ``550 5.1.1 ...``.

    ``status`` is used only when the reply carries no enhanced code of its own (``5.4.7``).
    """

    address: str
    action: Action
    status: str | None = None
    diagnostic: str | None = None
    remote_mta: str | None = None
    orcpt: str | None = None
    last_attempt: str | None = None
    will_retry_until: str | None = None

    @property
    def status_code(self) -> str:
        """The enhanced code for ``Status:``: the reply's, else the one given, else the class's."""
        reply = parse_reply_line(self.diagnostic) if self.diagnostic else None
        if reply is not None and (enhanced := split_enhanced(reply.text)[0]):
            return enhanced
        if self.status:
            return self.status
        if reply is not None:
            return f"{reply.code // 100}.0.0"
        return {"failed": "5.0.0", "delayed": "4.0.0"}.get(self.action, "2.0.0")


@dataclass(frozen=True, kw_only=True)
class Report:
    """Everything a DSN says. Dates are RFC 5322 strings from the lab clock."""

    reporting_mta: str
    mailer_daemon: str
    original_sender: str
    arrival_date: str
    recipients: tuple[RecipientStatus, ...]
    original_message: bytes
    date: str
    message_id: str
    ret: Ret | None = None
    envid: str | None = None

    @property
    def kind(self) -> Kind:
        """The report's headline: any failure makes it a bounce, else any delay a warning,
        else any delivery a delivery report; relays only: a relay report."""
        actions = {r.action for r in self.recipients}
        return next((k for k in ("failed", "delayed", "delivered") if k in actions), "relayed")


def _fields(fields: list[tuple[str, str | None]]) -> bytes:
    """Header fields in order; a field whose value is None or empty is left out."""
    return b"".join(_field(name, value) for name, value in fields if value)


def _field(name: str, value: str) -> bytes:
    """One header field folded at spaces, so no line passes 998 octets (RFC 5322 §2.1.1)."""
    words = " ".join(value.splitlines()).split(" ")  # a CR or LF must never start a new field
    pieces = [w[i : i + _CHUNK] for w in words for i in range(0, max(len(w), 1), _CHUNK)]
    lines, line, fresh = [], f"{name}:", True
    for word in pieces:
        if word and not fresh and len(line) + 1 + len(word) > _FOLD_AT:
            lines.append(line)
            line = ""
        line, fresh = f"{line} {word}", False
    return "\r\n".join([*lines, line]).encode("utf-8", _UNWRITABLE) + CRLF


def _part(description: str, content_type: str, body: bytes) -> bytes:
    """One MIME body part, declared 8bit when it is not plain ASCII (RFC 6152)."""
    cte = None if body.isascii() else "8bit"
    fields = [("Content-Description", description), ("Content-Type", content_type)]
    return _fields([*fields, ("Content-Transfer-Encoding", cte)]) + CRLF + body


def _explain(r: RecipientStatus) -> str:
    """One recipient in words, in the spirit of Postfix's ``host ... said: ...`` lines."""
    detail = r.diagnostic or f"status {r.status_code}"
    if r.remote_mta and r.diagnostic and parse_reply_line(r.diagnostic):
        detail = f"host {r.remote_mta} said: {detail}"
    until = f", retrying until {r.will_retry_until}" if r.will_retry_until else ""
    return f"<{r.address}> ({r.action}{until}): {detail}"


def _why_stopped(report: Report) -> str:
    classes = frozenset(r.status_code[0] for r in report.recipients if r.action == "failed")
    return _GAVE_UP.get(classes & {"4", "5"} or frozenset("5"), _GAVE_UP[frozenset("5")])


def _human(report: Report, copy: str) -> bytes:
    """The note for people; its wording follows the report's kind."""
    domain = domain_of(report.mailer_daemon)
    paragraphs = [
        f"This is the mail system at host {report.reporting_mta}.",
        _INTROS[report.kind].format(copy=copy, why=_why_stopped(report)),
        f"If you need help, send this report to postmaster@{domain}.",
    ]
    explained = [_explain(r) for r in report.recipients]
    wrapped = [textwrap.wrap(p, 76, break_on_hyphens=False) for p in paragraphs]
    wrapped += [textwrap.wrap(e, 76, subsequent_indent="    ") for e in explained]
    text = "\r\n\r\n".join("\r\n".join(lines) for lines in wrapped)
    return text.encode("utf-8", _UNWRITABLE) + CRLF


def _delivery_status(report: Report) -> bytes:
    """The ``message/delivery-status`` body: per-message fields, then one block per recipient."""
    per_message = [
        ("Reporting-MTA", f"dns; {report.reporting_mta}"),
        ("Original-Envelope-Id", report.envid),
        ("Arrival-Date", report.arrival_date),
    ]
    blocks = [_fields(per_message)]
    for r in report.recipients:
        diagnostic_type = "smtp" if r.diagnostic and parse_reply_line(r.diagnostic) else "X-smtplab"
        fields = [
            ("Original-Recipient", r.orcpt),
            ("Final-Recipient", f"rfc822; {r.address}"),
            ("Action", r.action),
            ("Status", r.status_code),
            ("Remote-MTA", r.remote_mta and f"dns; {r.remote_mta}"),
            ("Diagnostic-Code", r.diagnostic and f"{diagnostic_type}; {r.diagnostic}"),
            ("Last-Attempt-Date", r.last_attempt),
            ("Will-Retry-Until", r.will_retry_until if r.action == "delayed" else None),
        ]
        blocks.append(_fields(fields))
    return CRLF.join(blocks)


def build_dsn(report: Report) -> bytes:
    """The complete report message (RFC 3464, RFC 6522), with CRLF line endings."""
    if must_not_notify(report.original_sender):
        raise ValueError("never send a DSN about a DSN: the original sender is <>")
    if not report.recipients:
        raise ValueError("a DSN reports on at least one recipient")
    original = normalize_newlines(report.original_message)
    if original and not original.endswith(CRLF):
        original += CRLF
    full = report.ret == "FULL" and report.kind == "failed"  # RET is about failures (§4.3)
    if not full:  # the header section ends at the first empty line
        end = original.find(b"\r\n\r\n")
        original = b"" if original.startswith(CRLF) else original[: end + 2 if end >= 0 else None]
    human = _human(report, "a copy of the message" if full else "a copy of its headers")
    charset = "us-ascii" if human.isascii() else "utf-8"
    returned = f"{_LABELS[report.kind]} Message{'' if full else ' Headers'}"
    parts = [
        _part("Notification", f"text/plain; charset={charset}", human),
        _part("Delivery report", "message/delivery-status", _delivery_status(report)),
        _part(returned, "message/rfc822" if full else "text/rfc822-headers", original),
    ]
    message_id = report.message_id.encode("utf-8", _UNWRITABLE)
    boundary = hashlib.sha256(message_id + b"".join(parts)).hexdigest()[:32]
    while any(boundary.encode() in p for p in parts):  # a hash of the parts: never in practice
        boundary = hashlib.sha256(boundary.encode()).hexdigest()[:32]
    delimiter = f"\r\n--{boundary}\r\n".encode()
    body = b"This is a MIME-encapsulated message.\r\n" + b"".join(delimiter + p for p in parts)
    body += f"\r\n--{boundary}--\r\n".encode()
    fields = [
        ("Date", report.date),
        ("From", f"Mail Delivery System <{report.mailer_daemon}>"),
        ("To", report.original_sender),
        ("Subject", _SUBJECTS[report.kind]),
        ("Message-ID", report.message_id),
        ("Auto-Submitted", "auto-replied"),  # RFC 3834: do not answer this automatically
        ("MIME-Version", "1.0"),
        ("Content-Type", f'multipart/report; report-type=delivery-status; boundary="{boundary}"'),
        ("Content-Transfer-Encoding", None if body.isascii() else "8bit"),
    ]
    return _fields(fields) + CRLF + body


def summarize(dsn: bytes) -> list[dict[str, str]]:
    """Each recipient's fields of a DSN (``Action``, ``Status``, ...), read by ``email``."""
    message = reader.parse(dsn)  # UnreadableMessage for hostile MIME, never RecursionError
    report_type = message.get_param("report-type", header="content-type")
    if message.get_content_type() != "multipart/report" or report_type != "delivery-status":
        raise ValueError("not a delivery status notification (RFC 3464)")
    for part in message.walk():
        if part.get_content_type() == "message/delivery-status":
            blocks = part.get_payload()  # the per-message block, then one per recipient
            if isinstance(blocks, list):
                fields = cast(list[Message], blocks)[1:]
                return [{name: str(v) for name, v in block.items()} for block in fields]
    raise ValueError("the report has no message/delivery-status part")
