"""The protocol decisions of the lab's SMTP sessions, as pure functions.

Theory of operation
-------------------
:class:`~smtplab.smtp.session.RecordingSMTP` runs the conversation; each time the RFCs
ask it to decide something (may this line run as a command? may this path be accepted?
which extensions does EHLO list? does this reply carry an enhanced code, and in which
charset?) it asks a function here, handing over plain values (the line, the address,
what the session has seen) and getting back a reply line, or a yes or no. Nothing here
holds state, reads a socket or knows aiosmtpd, so ``tests/test_policy.py`` checks each
decision as a table of inputs and expected outcomes.

* Command lines end with CRLF only (RFC 5321 §2.3.8) and carry no NUL (§4.1.1).
* HELO and EHLO name the client in ASCII (§4.1.1.1): it goes into ``Received:``.
* Only the reverse-path may be null; a non-ASCII path needs SMTPUTF8, and then must
  be UTF-8 (RFC 6531 §3.3, §3.5); a transaction has at most ``max_recipients``.
* Enhanced status codes (RFC 2034 §3) follow EHLO, never HELO, and never appear in the
  greeting or the EHLO response; replies are ASCII except in an SMTPUTF8 transaction.
* AUTH waits for TLS where the server says so (RFC 4954 §4, port 587), and a server
  may stop a client after repeated failures; PLAIN's authorization identity must be
  the user's own, as the lab has no proxy users (RFC 4616 §2).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from smtplab.protocol.replies import (
    BAD_HELO_NAME,
    BAD_LINE_END,
    BAD_RECIPIENT_SYNTAX,
    NON_ASCII_RECIPIENT,
    NON_ASCII_SENDER,
    NOT_UTF8_RECIPIENT,
    NOT_UTF8_SENDER,
    NUL_IN_COMMAND,
    TOO_MANY_RECIPIENTS,
)
from smtplab.protocol.rules import CRLF, with_enhanced_code, without_enhanced_code

#: Extensions smtplab adds to aiosmtpd's own (SIZE, 8BITMIME, SMTPUTF8, STARTTLS, AUTH).
LAB_EXTENSIONS = frozenset({"PIPELINING", "ENHANCEDSTATUSCODES", "DSN"})
#: Failed AUTH attempts before the server hangs up (brute-force protection).
AUTH_FAILURE_LIMIT = 3
#: The longest AUTH response line, CRLF included: RFC 4954 §4 calls 12288 octets enough.
AUTH_LINE_LIMIT = 12288
#: Recipients per transaction: RFC 5321 §4.5.3.1.8 asks for at least 100.
MAX_RECIPIENTS = 100
#: How much longer MAIL and RCPT lines may be for DSN's parameters (RFC 3461 §4);
#: aiosmtpd itself adds SIZE's 26 octets (RFC 1870) and SMTPUTF8's 10 to MAIL.
DSN_ALLOWANCE: Mapping[str, int] = {"MAIL": 100, "RCPT": 500}


def bad_line_end(line: bytes | None) -> bool:
    """Whether a command line ended with anything but one CRLF: aiosmtpd splits on LF
    and strips every CR before it, so ``\\n`` and ``\\r\\r\\n`` would pass."""
    return line is not None and (not line.endswith(CRLF) or line.endswith(b"\r" + CRLF))


def malformed_command(line: bytes | None, arg: str | None) -> str | None:
    """The reply refusing a command line as read (``line``, with its argument ``arg``),
    or None to run the command."""
    if bad_line_end(line):
        return BAD_LINE_END()
    if arg is not None and "\0" in arg:
        return NUL_IN_COMMAND()
    return None


def bad_client_name(hostname: str) -> str | None:
    """The reply refusing the name given with HELO or EHLO, or None (an empty name is
    aiosmtpd's to answer: it has its own syntax error)."""
    if hostname and not (hostname.isascii() and hostname.isprintable()):
        return BAD_HELO_NAME()
    return None


def not_utf8(text: str) -> bool:
    """Whether ``text`` came from bytes that are not UTF-8 (aiosmtpd decodes command
    arguments with ``surrogateescape``, so each such byte is a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def path_refusal(
    command: str, address: str, *, smtp_utf8: bool, recipients: int, max_recipients: int
) -> str | None:
    """The reply refusing the path of a MAIL or RCPT (``command``), or None to let the
    handler decide; ``recipients`` is how many the transaction already has."""
    mail = command == "MAIL"
    if not mail and address == "<>":  # only the reverse-path may be null
        return BAD_RECIPIENT_SYNTAX()
    if not address.isascii() and not smtp_utf8:  # RFC 6531 §3.5
        return NON_ASCII_SENDER() if mail else NON_ASCII_RECIPIENT()
    if not_utf8(address):  # RFC 6531 §3.3: a UTF-8 path is UTF-8
        return NOT_UTF8_SENDER() if mail else NOT_UTF8_RECIPIENT()
    if not mail and recipients >= max_recipients:
        return TOO_MANY_RECIPIENTS(limit=max_recipients)
    return None


def split_params(arg: str) -> tuple[str, list[str]]:
    """``FROM:<a@b> SIZE=10`` → (``FROM:<a@b>``, [``SIZE=10``])."""
    head, bracket, tail = arg.rpartition(">")
    if bracket:
        return head + bracket, tail.split()
    first, *rest = arg.split()
    return first, rest


def advertised(extensions: Collection[str]) -> list[str]:
    """The extension lines smtplab adds to the EHLO reply (see handlers.RoleHandler)."""
    return sorted(extensions)


def line_allowances(extensions: Collection[str]) -> Mapping[str, int]:
    """How much longer than a plain command line MAIL and RCPT may be after EHLO, for
    the lab's own extensions (DSN's parameters)."""
    return DSN_ALLOWANCE if "DSN" in extensions else {}


def enhanced_codes(*, said_ehlo: bool, extensions: Collection[str], in_ehlo: bool) -> bool:
    """Whether a reply carries an enhanced status code (RFC 2034 §3): on every reply after
    EHLO (also once STARTTLS has reset the session, until the client greets again),
    never after HELO, in the greeting or in the EHLO response (``in_ehlo``)."""
    return said_ehlo and "ENHANCEDSTATUSCODES" in extensions and not in_ehlo


def wire_reply(reply: str, *, enhanced: bool, utf8: bool) -> bytes:
    """A reply as it crosses the wire, without its CRLF: with or without its enhanced
    code, in ASCII (RFC 5321 §2.4) but in a transaction that declared SMTPUTF8
    (RFC 6531); a byte that is no character (a lone surrogate) becomes an escape."""
    reply = with_enhanced_code(reply) if enhanced else without_enhanced_code(reply)
    return reply.encode("utf-8" if utf8 else "ascii", "backslashreplace")


def hangs_up_after(reply: str | None) -> bool:
    """Whether a fault rule's answer ends the connection: no reply at all, or a 421."""
    return reply is None or reply.startswith("421")


def requires_tls_for_auth(*, auth_require_tls: bool, over_tls: bool) -> bool:
    """Whether AUTH waits for TLS on this connection (port 587 before STARTTLS)."""
    return auth_require_tls and not over_tls


def too_many_auth_failures(failures: int) -> bool:
    """Whether a client has failed to log in often enough to be hung up on (RFC 4954 §4)."""
    return failures >= AUTH_FAILURE_LIMIT


def acts_as_another(authzid: bytes, authcid: bytes) -> bool:
    """Whether PLAIN's authorization identity names someone other than the user who logs
    in (RFC 4616 §2): the lab has no proxy users, so that is refused."""
    return bool(authzid) and authzid.lower() != authcid.lower()
