"""smtplab: a miniature, real mail world on loopback, for learning how SMTP works.

The public API is what this module exports; notebooks import nothing else.
"""

from smtplab.client import Outcome
from smtplab.compose import InvalidInput
from smtplab.journey import Journey, Step
from smtplab.lab import Lab, LabServer, SendResult
from smtplab.maildir import Mailbox, StoredMessage
from smtplab.outbound import RetryPolicy
from smtplab.protocol import REPLY_CLASSES, REPLY_MEANINGS, reply_meaning
from smtplab.transcript import Transcript
from smtplab.world import Domain, ServerSpec, User, World, default_world

__all__ = [
    "REPLY_CLASSES",
    "REPLY_MEANINGS",
    "Domain",
    "InvalidInput",
    "Journey",
    "Lab",
    "LabServer",
    "Mailbox",
    "Outcome",
    "RetryPolicy",
    "SendResult",
    "ServerSpec",
    "Step",
    "StoredMessage",
    "Transcript",
    "User",
    "World",
    "default_world",
    "reply_meaning",
]
