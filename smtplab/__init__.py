"""smtplab: a miniature, real mail world on loopback, for learning how SMTP works.

The public API is what this module exports; notebooks import nothing else.
"""

from smtplab.client import Outcome
from smtplab.compose import InvalidInput
from smtplab.lab import Lab, SendResult
from smtplab.maildir import Mailbox, StoredMessage
from smtplab.protocol import REPLY_CLASSES, REPLY_MEANINGS, reply_meaning
from smtplab.transcript import Transcript
from smtplab.world import Domain, ServerSpec, User, World, default_world

__all__ = [
    "REPLY_CLASSES",
    "REPLY_MEANINGS",
    "Domain",
    "InvalidInput",
    "Lab",
    "Mailbox",
    "Outcome",
    "SendResult",
    "ServerSpec",
    "StoredMessage",
    "Transcript",
    "User",
    "World",
    "default_world",
    "reply_meaning",
]
