"""DSN parameters (RFC 3461): what a sender asks to be told, read and written, no I/O.

A sender asks for notifications with SMTP parameters: ``RET`` and ``ENVID`` on
MAIL FROM, ``NOTIFY`` and ``ORCPT`` on RCPT TO. aiosmtpd refuses parameters it
does not know, so the server splits the DSN ones off with :func:`split_mail_params`
and :func:`split_rcpt_params`, keeps them with the queued message and writes them
again for the next hop with :func:`mail_params` and :func:`rcpt_params`. ENVID
and ORCPT travel as xtext (RFC 3461 §4), where ``+XX`` stands for one byte, so
that they never contain a space or ``=``. :func:`wants` says from ``NOTIFY``
whether a sender asked to hear about what happened; the report itself is
:mod:`smtplab.protocol.dsn`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast

from smtplab.errors import SmtplabError
from smtplab.protocol.replies import BAD_DSN_PARAMETER

Ret = Literal["FULL", "HDRS"]
Action = Literal["failed", "delayed", "delivered", "relayed", "expanded"]
#: The NOTIFY keywords in the order they are written (RFC 3461 §4.1).
NOTIFY_KEYWORDS = ("SUCCESS", "FAILURE", "DELAY")
#: What the sender gets without NOTIFY: failures only (DELAY is the MTA's choice; the lab says no).
DEFAULT_NOTIFY = frozenset({"FAILURE"})
ENVID_LIMIT = 100  # octets of xtext, RFC 3461 §4.4
_ASKS_FOR = {"failed": "FAILURE", "delayed": "DELAY"} | dict.fromkeys(
    ("delivered", "relayed", "expanded"), "SUCCESS"
)
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-Fa-f]{2})*")
_ADDR_TYPE = re.compile(r"[A-Za-z0-9-]+")


class DSNParamError(SmtplabError, ValueError):
    """A malformed DSN parameter; ``reply`` is what the server answers the command with."""

    def __init__(self, keyword: str, why: str) -> None:
        self.reply = BAD_DSN_PARAMETER(keyword=keyword, why=why)
        super().__init__(self.reply)


@dataclass(frozen=True)
class MailDSN:
    """MAIL FROM's DSN parameters: how much of the message to return, and the sender's id."""

    ret: Ret | None = None
    envid: str | None = None


@dataclass(frozen=True)
class RcptDSN:
    """One RCPT TO's DSN parameters. An empty ``notify`` means NOTIFY was not given.

    ``orcpt`` is ``type;address`` with the address decoded, e.g. ``rfc822;bob@example.org``.
    """

    notify: frozenset[str] = frozenset()
    orcpt: str | None = None


def xtext_encode(text: str) -> str:
    """Write ``text`` as xtext: ``+``, ``=``, spaces, controls and non-ASCII become ``+XX``."""
    return "".join(
        c if "!" <= c <= "~" and c not in "+=" else "".join(f"+{b:02X}" for b in c.encode())
        for c in text
    )


def xtext_decode(text: str, what: str = "xtext") -> str:
    """Undo :func:`xtext_encode`; a malformed value is a 501 about ``what``."""
    if not _XTEXT.fullmatch(text):
        raise DSNParamError(what, "not xtext (RFC 3461 §4)")
    raw = re.sub(rb"\+([0-9A-Fa-f]{2})", lambda m: bytes([int(m[1], 16)]), text.encode())
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise DSNParamError(what, "not UTF-8") from None


def _take(params: list[str], keywords: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """Pull ``KEYWORD=value`` words out of ``params``; the other words pass through as they are."""
    rest: list[str] = []
    found: dict[str, str] = {}
    for word in params:
        key, eq, value = word.partition("=")
        key = key.upper()
        if key not in keywords:
            rest.append(word)
        elif key in found:
            raise DSNParamError(key, "given twice")
        elif not eq or not value:
            raise DSNParamError(key, "a value is required")
        else:
            found[key] = value
    return rest, found


def split_mail_params(params: list[str]) -> tuple[list[str], MailDSN]:
    """Split RET and ENVID off MAIL FROM's parameters, e.g. ``["SIZE=300", "RET=HDRS"]``."""
    rest, found = _take(params, ("RET", "ENVID"))
    ret = found.get("RET", "").upper() or None
    if ret not in (None, "FULL", "HDRS"):
        raise DSNParamError("RET", "use RET=FULL or RET=HDRS")
    envid = found.get("ENVID")
    if envid is not None:
        if len(envid) > ENVID_LIMIT:
            raise DSNParamError("ENVID", f"longer than {ENVID_LIMIT} characters")
        envid = xtext_decode(envid, "ENVID")
    return rest, MailDSN(cast("Ret | None", ret), envid)


def split_rcpt_params(params: list[str]) -> tuple[list[str], RcptDSN]:
    """Split NOTIFY and ORCPT off RCPT TO's parameters, e.g. ``["NOTIFY=SUCCESS,FAILURE"]``."""
    rest, found = _take(params, ("NOTIFY", "ORCPT"))
    notify = frozenset(found.get("NOTIFY", "").upper().split(",")) - {""}
    if "NOTIFY" in found:
        if "" in found["NOTIFY"].split(",") or not notify <= {*NOTIFY_KEYWORDS, "NEVER"}:
            raise DSNParamError("NOTIFY", "use NEVER, or SUCCESS, FAILURE, DELAY")
        if "NEVER" in notify and len(notify) > 1:
            raise DSNParamError("NOTIFY", "NEVER cannot be combined with other values")
    orcpt = found.get("ORCPT")
    if orcpt is not None:
        kind, semicolon, address = orcpt.partition(";")
        if not semicolon or not address or not _ADDR_TYPE.fullmatch(kind):
            raise DSNParamError("ORCPT", "use ORCPT=rfc822;address")
        orcpt = f"{kind};{xtext_decode(address, 'ORCPT')}"
    return rest, RcptDSN(notify, orcpt)


def wants(notify: frozenset[str], action: Action) -> bool:
    """Whether a sender who gave ``notify`` asked to hear about ``action`` (RFC 3461 §4.1)."""
    return _ASKS_FOR[action] in (notify or DEFAULT_NOTIFY)


def mail_params(dsn: MailDSN) -> list[str]:
    """MAIL FROM's DSN parameters for the next hop, which must see what the sender asked."""
    words = [f"RET={dsn.ret}"] if dsn.ret else []
    return words + ([f"ENVID={xtext_encode(dsn.envid)}"] if dsn.envid else [])


def rcpt_params(dsn: RcptDSN) -> list[str]:
    """RCPT TO's DSN parameters for the next hop, NOTIFY keywords in their usual order."""
    order = [k for k in ("NEVER", *NOTIFY_KEYWORDS) if k in dsn.notify]
    words = [f"NOTIFY={','.join(order)}"] if order else []
    if dsn.orcpt is not None:
        kind, _, address = dsn.orcpt.partition(";")
        words.append(f"ORCPT={kind};{xtext_encode(address)}")
    return words
