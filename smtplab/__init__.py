"""smtplab: a miniature, real mail world on loopback, for learning how SMTP works.

The public API is what this module exports; notebooks import nothing else. One module is
exported whole, as a namespace: ``pipelining`` (chapter 10's ways of sending bulk mail).
"""

from smtplab.dns.route import PermanentRouteError, Route, RouteError, TemporaryRouteError
from smtplab.errors import SmtplabError
from smtplab.lab import Lab
from smtplab.lab.sendresult import SendResult
from smtplab.lab.server import LabServer
from smtplab.mailstore.maildir import Mailbox, StoredMessage
from smtplab.protocol.message import InvalidInput
from smtplab.protocol.reader import UnreadableMessage
from smtplab.protocol.rules import (
    EXTENSIONS,
    REPLY_CLASSES,
    REPLY_MEANINGS,
    dot_stuff,
    reply_meaning,
)
from smtplab.queue.delivery import RetryPolicy
from smtplab.record.journey import Journey, Step
from smtplab.record.transcript import Transcript
from smtplab.smtp import pipelining
from smtplab.smtp.client import Outcome
from smtplab.smtp.conversation import Conversation
from smtplab.view.pictures import (
    Picture,
    identities_picture,
    journey_overview_picture,
    mail_agents_picture,
    mime_tree_picture,
    ports_picture,
    reply_classes_picture,
    retry_timeline_picture,
    route_picture,
    store_and_forward_picture,
    tls_timeline_picture,
)
from smtplab.world import Domain, ServerSpec, User, World, default_world

__all__ = [
    "EXTENSIONS",
    "REPLY_CLASSES",
    "REPLY_MEANINGS",
    "Conversation",
    "Domain",
    "InvalidInput",
    "Journey",
    "Lab",
    "LabServer",
    "Mailbox",
    "Outcome",
    "PermanentRouteError",
    "Picture",
    "RetryPolicy",
    "Route",
    "RouteError",
    "SendResult",
    "ServerSpec",
    "SmtplabError",
    "Step",
    "StoredMessage",
    "TemporaryRouteError",
    "Transcript",
    "UnreadableMessage",
    "User",
    "World",
    "default_world",
    "dot_stuff",
    "identities_picture",
    "journey_overview_picture",
    "mail_agents_picture",
    "mime_tree_picture",
    "pipelining",
    "ports_picture",
    "reply_classes_picture",
    "reply_meaning",
    "retry_timeline_picture",
    "route_picture",
    "store_and_forward_picture",
    "tls_timeline_picture",
]
