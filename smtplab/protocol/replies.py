"""Every reply the lab's SMTP servers give or its queues report, in one table, with its RFC.

Theory of operation
-------------------
An :class:`SMTPReply` is a reply code, an RFC 3463 enhanced status code and a text
(which may name fields, such as ``{address}``); the table's replies also name the RFC
sections that say so. (It is not :class:`smtplab.record.transcript.Reply`, the record of a
reply seen on the wire, at a time, in answer to a command: this is the value itself,
so that both can be used side by side without an alias.)
The sessions (:mod:`smtplab.smtp.session`), the role handlers (:mod:`smtplab.roles.handlers`)
and chapter 09's checks (:mod:`smtplab.senderauth.wiring`) answer with these and nothing
else; ``docs/hardening.md`` and the tests name them from here, as aiosmtpd keeps
its own status codes in ``aiosmtpd.smtp`` (``CODE_SUCCESS`` ...).

Replies are written with their enhanced code. The server takes it out again for
a client that greeted with HELO (RFC 2034 §3: only after EHLO), and adds one
to aiosmtpd's stock replies that lack it (:func:`smtplab.protocol.rules.with_enhanced_code`);
the stock replies the lab answers differently are in
:data:`smtplab.smtp._aiosmtpd.STOCK_REPLIES`.

A reply never echoes what a client sent unless it is printable ASCII, or UTF-8
the client negotiated with SMTPUTF8: a refusal of a non-ASCII address says what
is wrong without quoting it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SMTPReply:
    """One SMTP reply: ``550 5.7.1 <{address}>: Relay access denied``. ``rfc`` says where
    the RFCs ask for it (the table's replies) and takes no part in comparisons."""

    code: int
    enhanced: str | None
    text: str
    rfc: str = field(default="", compare=False)

    def __call__(self, **fields: object) -> str:
        """The reply line, its fields filled in."""
        status = f" {self.enhanced}" if self.enhanced else ""
        return f"{self.code}{status} {self.text.format(**fields)}"

    def __str__(self) -> str:
        return self()

    def matches(self, line: str) -> bool:
        """Whether ``line`` is this reply (any field values), with or without its enhanced code."""
        head, _, rest = self.text.partition("{")
        start = f"{self.code} {self.enhanced} " if self.enhanced else f"{self.code} "
        if not (line.startswith(start) or line.startswith(f"{self.code} ")):
            return False
        tail = self.text.rpartition("}")[2] if rest else ""
        return head in line and line.endswith(tail)


# -- greeting, session and command lines (RFC 5321 §3.1, §4.1, §4.5.3) --------------------
BYE = SMTPReply(221, "2.0.0", "Bye", "RFC 5321 §4.1.1.10")
TOO_MANY_CONNECTIONS = SMTPReply(
    421, "4.7.0", "{host} Too many connections, try later", "RFC 5321 §3.8, §4.2.2"
)
TIMEOUT = SMTPReply(421, "4.4.2", "{host} Error: timeout exceeded", "RFC 5321 §4.5.3.2.7, §3.8")
TOO_MANY_UNKNOWN = SMTPReply(
    421, "4.7.0", "Too many unrecognized commands, goodbye", "RFC 5321 §3.8, §4.2.4"
)
BAD_LINE_END = SMTPReply(
    500, "5.5.2", "Syntax error: a command line must end with CRLF", "RFC 5321 §2.3.8"
)
NUL_IN_COMMAND = SMTPReply(
    501, "5.5.2", "Syntax error: NUL character in command", "RFC 5321 §4.1.1"
)
BAD_HELO_NAME = SMTPReply(
    501,
    "5.5.4",
    "Syntax error: HELO and EHLO take an ASCII domain name",
    "RFC 5321 §4.1.1.1, §4.1.2",
)

# -- MAIL and RCPT (RFC 5321 §4.1.1.2, §4.1.1.3, §4.1.2) -----------------------------------
SENDER_OK = SMTPReply(250, "2.1.0", "Sender ok", "RFC 5321 §4.1.1.2; RFC 3463 §3.2")
RECIPIENT_OK = SMTPReply(250, "2.1.5", "Recipient ok", "RFC 5321 §4.1.1.3; RFC 3463 §3.2")
BAD_SENDER_SYNTAX = SMTPReply(
    553, "5.1.7", "Error: malformed address", "RFC 5321 §4.1.2, §4.2.2; RFC 3463 §3.2 (X.1.7)"
)
BAD_RECIPIENT_SYNTAX = SMTPReply(
    553, "5.1.3", "Error: malformed address", "RFC 5321 §4.1.2, §4.2.2; RFC 3463 §3.2 (X.1.3)"
)
NOT_UTF8_SENDER = SMTPReply(
    553, "5.1.7", "Error: the address is not valid UTF-8", "RFC 5321 §4.1.2; RFC 6531 §3.3"
)
NOT_UTF8_RECIPIENT = SMTPReply(
    553, "5.1.3", "Error: the address is not valid UTF-8", "RFC 5321 §4.1.2; RFC 6531 §3.3"
)
NON_ASCII_SENDER = SMTPReply(
    550, "5.6.7", "Non-ASCII addresses not permitted for that sender", "RFC 6531 §3.5"
)
NON_ASCII_RECIPIENT = SMTPReply(
    553, "5.6.7", "Non-ASCII addresses not permitted for that recipient", "RFC 6531 §3.5"
)
TOO_MANY_RECIPIENTS = SMTPReply(
    452,
    "4.5.3",
    "Too many recipients (at most {limit} per message)",
    "RFC 5321 §4.5.3.1.8, §4.5.3.1.10; RFC 3463 §3.6",
)
RELAY_DENIED = SMTPReply(
    550, "5.7.1", "<{address}>: Relay access denied", "RFC 5321 §3.6.2, §7.9; RFC 3463 §3.8"
)
USER_UNKNOWN = SMTPReply(
    550,
    "5.1.1",
    "<{address}>: Recipient address rejected: User unknown",
    "RFC 5321 §4.2.2; RFC 3463 §3.2",
)
STARTTLS_FIRST = SMTPReply(
    530, "5.7.0", "Must issue a STARTTLS command first", "RFC 3207 §4; RFC 4954 §6"
)
AUTH_REQUIRED = SMTPReply(530, "5.7.0", "Authentication required", "RFC 4954 §6; RFC 6409 §4.3")
SENDER_NOT_OWNED = SMTPReply(
    550,
    "5.7.1",
    "<{address}>: Sender address rejected: not owned by user {login}",
    "RFC 6409 §6.1, §3.2; RFC 3463 §3.8",
)

# -- DSN parameters on MAIL and RCPT (RFC 3461 §4) -----------------------------------------
#: ``{keyword}`` is NOTIFY, ORCPT, RET or ENVID; ``{why}`` says what is wrong with it.
BAD_DSN_PARAMETER = SMTPReply(
    501, "5.5.4", "Bad {keyword} parameter: {why}", "RFC 3461 §4.1-§4.4; RFC 3463 §3.6"
)

# -- after DATA (RFC 5321 §4.1.1.4, §6.1, §6.3) ----------------------------------------------
QUEUED = SMTPReply(250, "2.0.0", "Ok: queued as {queue_id}", "RFC 5321 §4.1.1.4, §6.1")
NOT_STORED = SMTPReply(
    451, "4.3.0", "Message not stored, try again later ({reason})", "RFC 5321 §6.1, §4.2.3"
)
NOT_QUEUED = SMTPReply(
    451, "4.3.0", "Message not queued, try again later ({reason})", "RFC 5321 §6.1, §4.2.3"
)
NUL_IN_BODY = SMTPReply(
    554, "5.6.0", "Message refused: it contains NUL characters", "RFC 5322 §2.3; RFC 2045 §2.7"
)
#: Permanent, with X.4.0 (other routing status): RFC 3463 §3.5 keeps X.4.6 (routing loop
#: detected) "useful only for persistent transient errors", so 5.4.6, which sendmail and
#: others send, is a class that code was not meant for. The text says it is a loop.
TOO_MANY_HOPS = SMTPReply(
    554,
    "5.4.0",
    "Too many hops ({hops} Received: headers): a mail loop?",
    "RFC 5321 §6.3; RFC 3463 §3.5",
)
DMARC_REJECT = SMTPReply(
    550,
    "5.7.1",
    "Email rejected per DMARC policy for {domain} (p={policy}: no aligned SPF or DKIM pass)",
    "RFC 7489 §10.3",
)
SPAM_REJECT = SMTPReply(
    550, "5.7.1", "Message rejected as spam (score {score}, limit {limit})", "RFC 3463 §3.8"
)

# -- STARTTLS and AUTH (RFC 3207, RFC 4954) ---------------------------------------------------
TLS_ACTIVE = SMTPReply(503, "5.5.1", "TLS already active", "RFC 3207 §4.2, §4.1; RFC 5321 §4.2.3")
AUTH_NOT_OFFERED = SMTPReply(
    503, "5.5.1", "Error: authentication not enabled on this server", "RFC 4954 §3"
)
AUTH_LINE_TOO_LONG = SMTPReply(
    500, "5.5.6", "Authentication Exchange line is too long", "RFC 4954 §6"
)
BAD_BASE64 = SMTPReply(501, "5.5.2", "Can't decode base64", "RFC 4954 §4")
CANNOT_SPLIT = SMTPReply(501, "5.5.2", "Can't split auth value", "RFC 4616 §2")
AUTH_CANCELLED = SMTPReply(501, "5.7.0", "Auth aborted", "RFC 4954 §4")
AUTHZID_REFUSED = SMTPReply(
    535,
    "5.7.8",
    "Authentication credentials invalid: you may not act as another user",
    "RFC 4616 §2; RFC 4954 §6",
)
TOO_MANY_AUTH_FAILURES = SMTPReply(
    421, "4.7.0", "Too many failed authentication attempts, goodbye", "RFC 4954 §4; RFC 5321 §3.8"
)
#: AUTH LOGIN's prompts, "Username:" and "Password:" in base64, as every major server sends
#: them (draft-murchison-sasl-login §2.1; LOGIN is no RFC). Without the 334, which aiosmtpd adds.
LOGIN_USERNAME_PROMPT = "Username:"
LOGIN_PASSWORD_PROMPT = "Password:"

# -- no route to a domain: what a queue reports (RFC 5321 §5.1; RFC 3463 §3.2, §3.5) -----------
NOT_A_DOMAIN = SMTPReply(
    553, "5.1.3", "{domain!r} is not a domain name ({why})", "RFC 5321 §4.1.2; RFC 3463 §3.2"
)
NO_SUCH_DOMAIN = SMTPReply(
    550, "5.1.2", "Domain {domain} does not exist", "RFC 5321 §5.1; RFC 3463 §3.2"
)
NO_MX_NO_ADDRESS = SMTPReply(
    550, "5.1.2", "Domain {domain} has no MX and no A/AAAA records", "RFC 5321 §5.1; RFC 3463 §3.2"
)
NULL_MX = SMTPReply(556, "5.1.10", "Recipient address has null MX", "RFC 7505 §4.1; RFC 7504 §3")
NO_CLOSER_MX = SMTPReply(
    550,
    "5.4.4",
    "No MX host of {domain} is closer than {local}: cannot route the message",
    "RFC 5321 §5.1; RFC 3463 §3.5",
)
MX_LOOKUP_FAILED = SMTPReply(
    451,
    "4.4.3",
    "DNS lookup of MX for {domain} failed ({outcome}); will retry",
    "RFC 5321 §5.1; RFC 3463 §3.5",
)
ADDRESS_LOOKUP_FAILED = SMTPReply(
    451,
    "4.4.3",
    "DNS lookup of A/AAAA for {domain} failed; will retry",
    "RFC 5321 §5.1; RFC 3463 §3.5",
)
NO_MX_ADDRESS = SMTPReply(
    451,
    "4.4.4",
    "No MX host of {domain} has an address; will retry",
    "RFC 5321 §5.1; RFC 3463 §3.5",
)

# -- anything unforeseen ------------------------------------------------------------------------
LOCAL_ERROR = SMTPReply(
    451, "4.3.0", "Requested action aborted: local error in processing", "RFC 5321 §4.2.2, §4.2.3"
)

#: Every reply in this module, for the documentation and the tests.
TABLE: tuple[SMTPReply, ...] = tuple(
    value for value in list(globals().values()) if isinstance(value, SMTPReply)
)
