"""SMTP rules as data, with no I/O.

Theory of operation
-------------------
Everything here is a pure function or a table. The servers, the client and the
transcript all lean on it, so that a rule (what 354 means, how a lone dot ends
DATA, where an enhanced status code sits in a reply) is written exactly once.

* Replies (RFC 5321 §4.2): ``NNN-text`` continues a multi-line reply and
  ``NNN text`` ends it. An enhanced status code (RFC 3463, RFC 2034) may open
  the text: ``250 2.1.0 Ok``.
* The message body travels "dot-stuffed" (RFC 5321 §4.5.2): a line that starts
  with ``.`` gets one more ``.`` on the wire, and the data ends with
  ``CRLF . CRLF``.
* Paths (RFC 5321 §4.1.2, widened for UTF-8 by RFC 6531 §3.3): ``MAIL FROM``
  and ``RCPT TO`` carry ``<local-part@domain>``, where the local part is a
  dot-string or a quoted string and the domain is host names or an address
  literal. An old source route (``<@relay:user@domain>``) is read and dropped.
* Line limits (RFC 5321 §4.5.3.1.4): a command line is at most 512 octets,
  counting the CRLF.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CRLF = b"\r\n"
#: What ends the message data on the wire (§4.5.2): the CRLF that ends its last line,
#: then a line holding one dot.
DATA_TERMINATOR = b"\r\n.\r\n"
COMMAND_LINE_LIMIT = 512

# A header value may be folded onto continuation lines (RFC 5322 §2.2.3).
_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(?:\r?\n[ \t]+)?(<[^>\r\n]*>)", re.I | re.M)
_REPLY_LINE = re.compile(r"^(?P<code>[2-5][0-9][0-9])(?P<sep>[ -]|$)(?P<text>.*)$", re.DOTALL)
_ENHANCED = re.compile(r"^(?P<status>[245]\.\d{1,3}\.\d{1,3})(?: |$)")

# The path grammar of RFC 5321 §4.1.2; "[^\x00-\x7f]" is RFC 6531's UTF8-non-ascii.
_ATOM = r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f])+"
_QUOTED = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e]|[^\x00-\x7f])*"'
_LET_DIG = r"(?:[A-Za-z0-9]|[^\x00-\x7f])"
_SUB_DOMAIN = rf"{_LET_DIG}(?:(?:{_LET_DIG}|-)*{_LET_DIG})?"
_DOMAIN = rf"{_SUB_DOMAIN}(?:\.{_SUB_DOMAIN})*"
_MAILBOX = (
    rf"(?:{_ATOM}(?:\.{_ATOM})*|{_QUOTED})"
    rf"@(?:{_DOMAIN}|\[[\x21-\x5a\x5e-\x7e]+\])"  # Domain / address-literal
)
_PATH = re.compile(
    rf"<(?:@{_DOMAIN}(?:,@{_DOMAIN})*:)?(?P<path>{_MAILBOX}|postmaster)>"  # §4.1.1.3
    rf"|(?P<bare>{_MAILBOX})(?=\s|$)",  # without <>, as many servers still accept
    re.IGNORECASE,
)
#: What a reader may type as an address: a path's Mailbox with an unquoted local part, in
#: which dots may stand anywhere (``a..b@example.org`` goes to the server, whose path
#: grammar above refuses it), and a domain name, not an address literal.
_TYPED_ADDRESS = re.compile(rf"(?:{_ATOM}|\.)+@{_DOMAIN}")

#: What each reply code means, from RFC 5321 §4.2.2 and §4.2.3 (plus 538 from
#: RFC 4954 and 556 from RFC 7504). The transcript shows these on hover.
REPLY_MEANINGS: dict[int, str] = {
    211: "System status, or system help reply",
    214: "Help message",
    220: "Service ready",
    221: "Service closing transmission channel",
    235: "Authentication succeeded",
    250: "Requested mail action okay, completed",
    251: "User not local; will forward",
    252: "Cannot VRFY user, but will accept message and attempt delivery",
    334: "Server challenge (AUTH continues)",
    354: "Start mail input; end with <CRLF>.<CRLF>",
    421: "Service not available, closing transmission channel",
    432: "A password transition is needed",
    450: "Requested mail action not taken: mailbox unavailable (try again later)",
    451: "Requested action aborted: local error in processing",
    452: "Requested action not taken: insufficient system storage",
    454: "Temporary authentication failure",
    455: "Server unable to accommodate parameters",
    500: "Syntax error, command unrecognized",
    501: "Syntax error in parameters or arguments",
    502: "Command not implemented",
    503: "Bad sequence of commands",
    504: "Command parameter not implemented",
    530: "Authentication required",
    534: "Authentication mechanism is too weak",
    535: "Authentication credentials invalid",
    538: "Encryption required for requested authentication mechanism",
    550: "Requested action not taken: mailbox unavailable",
    551: "User not local",
    552: "Requested mail action aborted: exceeded storage allocation",
    553: "Requested action not taken: mailbox name not allowed",
    554: "Transaction failed",
    555: "MAIL FROM/RCPT TO parameters not recognized or not implemented",
    556: "Domain does not accept mail",
}

#: ESMTP extension keywords a server lists after EHLO (RFC 5321 §4.1.1.1), with
#: the RFC that defines each and what it lets a client do.
EXTENSIONS: dict[str, tuple[str, str]] = {
    "SIZE": ("RFC 1870", "declare the message size up front; the server names its limit"),
    "8BITMIME": ("RFC 6152", "send 8-bit text (BODY=8BITMIME) without re-encoding it"),
    "SMTPUTF8": ("RFC 6531", "use UTF-8 in addresses and headers"),
    "STARTTLS": ("RFC 3207", "turn this connection into an encrypted one"),
    "AUTH": ("RFC 4954", "log in; the words after it are the mechanisms offered"),
    "DSN": ("RFC 3461", "ask for delivery status notifications (NOTIFY=, RET=)"),
    "ENHANCEDSTATUSCODES": ("RFC 2034", "replies carry a detailed code such as 5.1.1"),
    "PIPELINING": ("RFC 2920", "send several commands without waiting for each reply"),
    "CHUNKING": ("RFC 3030", "send the message in BDAT chunks instead of DATA"),
    "HELP": ("RFC 5321 §4.1.1.8", "the HELP command answers"),
}

#: The first digit of a reply code, RFC 5321 §4.2.1.
REPLY_CLASSES: dict[int, str] = {
    2: "Positive Completion: the action succeeded",
    3: "Positive Intermediate: send more information",
    4: "Transient Negative Completion: try again later",
    5: "Permanent Negative Completion: do not repeat as is",
}


#: RFC 3463 codes for replies that carry none (aiosmtpd's stock replies). The
#: text rules come first: "command not recognized" is 5.5.1, other 500s 5.5.2;
#: "555 ... parameters not recognized" stays 5.5.4 (invalid command arguments).
_ENHANCED_BY_TEXT = ((500, "not recognized", "5.5.1"), (554, "lack of security", "5.7.0"))
_ENHANCED_BY_CODE = {
    421: "4.3.0",
    450: "4.2.0",
    451: "4.3.0",
    452: "4.3.1",
    454: "4.7.0",
    500: "5.5.2",
    501: "5.5.4",
    502: "5.5.1",
    503: "5.5.1",
    504: "5.5.4",
    530: "5.7.0",
    552: "5.3.4",
    553: "5.1.3",
    555: "5.5.4",
}
_HAS_ENHANCED = re.compile(r"[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3}(?: |$)")
#: Replies that never carry an enhanced code: AUTH challenges and the DATA go-ahead.
_NOT_ENHANCED = {334, 354}


def with_enhanced_code(reply: str) -> str:
    """Add an RFC 3463 status code to a reply that lacks one (RFC 2034 §3).

    Once a server advertises ENHANCEDSTATUSCODES, every reply except the
    greeting, the EHLO response, 334 and 354 starts its text with one.
    """
    if _HAS_ENHANCED.match(reply):  # the lab's own replies: nothing to add, no parsing
        return reply
    parsed = parse_reply_line(reply)
    if parsed is None or parsed.code in _NOT_ENHANCED or split_enhanced(parsed.text)[0]:
        return reply
    if parsed.code // 100 == 3:  # RFC 3463 §3.1: a status code's class is 2, 4 or 5
        return reply
    status = next(
        (s for code, text, s in _ENHANCED_BY_TEXT if code == parsed.code and text in parsed.text),
        None,
    )
    status = status or _ENHANCED_BY_CODE.get(parsed.code, f"{parsed.code // 100}.0.0")
    return f"{parsed.code}{' ' if parsed.last else '-'}{status} {parsed.text}".rstrip()


def reply_meaning(code: int) -> str:
    """The RFC text for ``code``, falling back to the meaning of its class."""
    return REPLY_MEANINGS.get(code) or REPLY_CLASSES.get(code // 100, "Unknown reply code")


@dataclass(frozen=True)
class ReplyLine:
    """One line of a reply: its code, whether it is the last line, and its text."""

    code: int
    last: bool
    text: str


def parse_reply_line(line: str) -> ReplyLine | None:
    """Parse ``250-SIZE 1000`` or ``250 Ok``; ``None`` when it is not a reply line."""
    match = _REPLY_LINE.match(line)
    if match is None:
        return None
    return ReplyLine(int(match["code"]), match["sep"] != "-", match["text"])


def split_enhanced(text: str) -> tuple[str | None, str]:
    """Split ``2.0.0 Ok`` into ``("2.0.0", "Ok")`` (RFC 3463); text without one is kept."""
    match = _ENHANCED.match(text)
    if match is None:
        return None, text
    return match["status"], text[match.end() :]


def parse_path(text: str) -> tuple[str, str, str] | None:
    """``<alice@example.com> SIZE=300`` → (address, local part, parameters).

    The null path ``<>`` gives ``("<>", "", ...)``; ``Postmaster`` alone needs no
    domain (RFC 5321 §4.1.1.3). ``None`` if ``text`` does not start with a path.
    """
    if text.startswith("<>"):
        return "<>", "", text[2:].lstrip()
    match = _PATH.match(text)
    if match is None:
        return None
    address = match["path"] or match["bare"]
    local, _, _ = address.rpartition("@")  # a domain has no "@"; a quoted local part may
    return address, local or address, text[match.end() :].lstrip()


def is_typed_address(text: str) -> bool:
    """Whether ``text`` is an address a reader may give (``name@example.org``), with no
    white space anywhere, quoting or address literal, before a server judges its path."""
    return _TYPED_ADDRESS.fullmatch(text) is not None and not any(c.isspace() for c in text)


def domain_of(address: str) -> str:
    """The domain of ``local@domain`` as the lab compares domains: in lower case
    (RFC 5321 §2.4) and without the root's trailing dot (``example.org.``)."""
    return address.rpartition("@")[2].strip().rstrip(".").lower()


def command_verb(line: str) -> str:
    """The verb of a command line, upper-cased: ``mail FROM:<a@b>`` gives ``MAIL``."""
    return line.split(" ", 1)[0].upper()


def dot_stuff(body: bytes) -> bytes:
    """Make ``body`` safe to send after DATA (RFC 5321 §4.5.2), terminator included.

    ``body`` uses CRLF line endings. A leading dot on any line is doubled, a
    missing final CRLF is added, and the lone-dot line ends the data.
    """
    if body and not body.endswith(CRLF):
        body += CRLF
    stuffed = body.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


def dot_unstuff(wire: bytes) -> bytes:
    """Undo :func:`dot_stuff`: strip the terminator and one leading dot per line."""
    if wire.endswith(b".\r\n"):
        wire = wire[:-3]
    unstuffed = wire.replace(b"\r\n..", b"\r\n.")
    if unstuffed.startswith(b".."):
        unstuffed = unstuffed[1:]
    return unstuffed


def normalize_newlines(text: bytes) -> bytes:
    """Turn bare LF and bare CR into CRLF, the only line ending SMTP knows (§2.3.8)."""
    return re.sub(rb"\r\n|\r|\n", CRLF, text)


def header_block(message: bytes) -> bytes:
    """The header section of a message (CRLF or LF endings), without the blank line."""
    return re.split(rb"\r?\n\r?\n", message, maxsplit=1)[0]


def message_id_of(message: bytes) -> str | None:
    """The Message-ID header's value (``<...>``), which ties a message's hops together."""
    match = _MESSAGE_ID.search(header_block(message))
    return match[1].decode("ascii", "replace") if match else None


def count_received(message: bytes) -> int:
    """How many Received: trace headers a message carries: its hop count (§6.3)."""
    return len(re.findall(rb"^Received:", header_block(message), re.IGNORECASE | re.MULTILINE))


def without_enhanced_code(reply: str) -> str:
    """Take the RFC 3463 status code out of a reply: for a client that did not say EHLO
    (RFC 2034 §3), ``250 2.1.0 Sender ok`` is ``250 Sender ok``."""
    parsed = parse_reply_line(reply)
    if parsed is None:
        return reply
    status, text = split_enhanced(parsed.text)
    if status is None:
        return reply
    return f"{parsed.code}{' ' if parsed.last else '-'}{text}".rstrip()
