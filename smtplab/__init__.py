"""smtplab: a miniature, real mail world on loopback, for learning how SMTP works.

The public API is what this module exports; notebooks import nothing else. It includes the
types that a :class:`Lab`'s attributes and methods return (``lab.dns`` is a
:class:`RecordStore`, ``lab.journeys`` a :class:`JourneyBook`, ``lab.eavesdrop(...)`` yields an
:class:`Eavesdropper`, ...), so code that keeps them can name their types. One module is
exported whole, as a namespace: ``pipelining`` (chapter 10's ways of sending bulk mail).
Everything else is internal and may move. The module paths of smtplab 0.1 still import,
with a DeprecationWarning, for one release (:mod:`smtplab.moved`).
"""

import sys

from smtplab import moved
from smtplab.dns.records import DNSQuery, RecordStore
from smtplab.dns.route import PermanentRouteError, Route, RouteError, TemporaryRouteError
from smtplab.dns.server import LabDNSServer
from smtplab.errors import SmtplabError
from smtplab.lab import Lab
from smtplab.lab.routing import Router
from smtplab.lab.sendresult import SendResult
from smtplab.lab.server import LabServer
from smtplab.mailstore.dovecot import Dovecot
from smtplab.mailstore.maildir import Mailbox, Maildir, StoredMessage
from smtplab.mailstore.retrieval import FetchResult
from smtplab.protocol.clock import LabClock
from smtplab.protocol.message import InvalidInput
from smtplab.protocol.reader import UnreadableMessage
from smtplab.protocol.replies import SMTPReply
from smtplab.protocol.rules import (
    EXTENSIONS,
    REPLY_CLASSES,
    REPLY_MEANINGS,
    dot_stuff,
    reply_meaning,
)
from smtplab.queue.delivery import DeliveryQueue, RetryPolicy
from smtplab.record.journey import Journey, JourneyBook, Step
from smtplab.record.recordings import Recordings
from smtplab.record.transcript import Transcript
from smtplab.senderauth.checks import Authentication
from smtplab.senderauth.wiring import LabAuthenticity, Verdict
from smtplab.smtp import pipelining
from smtplab.smtp.client import LabSMTP, Outcome
from smtplab.smtp.conversation import Conversation
from smtplab.tls.ca import LabCA
from smtplab.tls.eavesdrop import Eavesdropper
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

moved.install()
# The one module exported whole is also importable by its public name, as in 0.1.
sys.modules["smtplab.pipelining"] = pipelining

__all__ = [
    "EXTENSIONS",
    "REPLY_CLASSES",
    "REPLY_MEANINGS",
    "Authentication",
    "Conversation",
    "DNSQuery",
    "DeliveryQueue",
    "Domain",
    "Dovecot",
    "Eavesdropper",
    "FetchResult",
    "InvalidInput",
    "Journey",
    "JourneyBook",
    "Lab",
    "LabAuthenticity",
    "LabCA",
    "LabClock",
    "LabDNSServer",
    "LabSMTP",
    "LabServer",
    "Mailbox",
    "Maildir",
    "Outcome",
    "PermanentRouteError",
    "Picture",
    "RecordStore",
    "Recordings",
    "RetryPolicy",
    "Route",
    "RouteError",
    "Router",
    "SMTPReply",
    "SendResult",
    "ServerSpec",
    "SmtplabError",
    "Step",
    "StoredMessage",
    "TemporaryRouteError",
    "Transcript",
    "UnreadableMessage",
    "User",
    "Verdict",
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
