"""Pictures for the chapters: SVG drawn from the lab's own data, the same bytes on every run.

Theory of operation
-------------------
Each public function takes what the lab already has (a :class:`~smtplab.world.World`,
:class:`~smtplab.record.transcript.Transcript` s, a message, a :class:`~smtplab.dns.route.Route` or
:class:`~smtplab.dns.route.RouteError`, a :class:`~smtplab.record.journey.Journey`, a verdict of
chapter 09) and returns a :class:`Picture`. A notebook cell whose value is a Picture
gets an ``image/svg+xml`` output (IPython calls ``_repr_svg_``), which GitHub,
nbviewer and ``jupyter nbconvert`` show without JavaScript; ``str(picture)`` is the
SVG text. The dashboard's Path tab draws with :func:`journey_svg` and
:func:`sequence_svg`, which return the SVG text itself. Nothing here imports
ipywidgets: the drawings are plain functions.

The pictures share one small kit (:mod:`.kit`: escaping, cutting text, colours,
boxes, arrowheads, the canvas) and the grid diagrams of :mod:`.grid`; each other
module draws one subject:

=====================  ===================================================================
``overview``           a world: the journey of a message (00), ports (02), mail agents (11)
``conversation``       one connection: clear or encrypted (02, 08), the sequence diagram
``mime``               the MIME tree of a message (04)
``route``              RFC 5321 §5.1 routing as a flow chart (05)
``responsibility``     store and forward: who holds the message after each hop (06)
``retries``            reply classes and the retry time line (07)
``identities``         SPF, DKIM, From: and DMARC alignment (09)
``journey``            the hosts and hops a message went through (the Path tab)
=====================  ===================================================================
"""

from smtplab.view.pictures.conversation import sequence_svg, tls_timeline_picture
from smtplab.view.pictures.identities import identities_picture
from smtplab.view.pictures.journey import journey_svg
from smtplab.view.pictures.kit import Picture
from smtplab.view.pictures.mime import mime_tree_picture
from smtplab.view.pictures.overview import (
    journey_overview_picture,
    mail_agents_picture,
    ports_picture,
)
from smtplab.view.pictures.responsibility import store_and_forward_picture
from smtplab.view.pictures.retries import reply_classes_picture, retry_timeline_picture
from smtplab.view.pictures.route import route_picture

__all__ = [
    "Picture",
    "identities_picture",
    "journey_overview_picture",
    "journey_svg",
    "mail_agents_picture",
    "mime_tree_picture",
    "ports_picture",
    "reply_classes_picture",
    "retry_timeline_picture",
    "route_picture",
    "sequence_svg",
    "store_and_forward_picture",
    "tls_timeline_picture",
]
