"""Widgets for the lab: compose a message, read its transcripts, see its path, open mailboxes.

Each widget is a thin ipywidgets view over a model object (``models``, ``journey_model``)
that holds its state and calls only the lab's public API. Call a function and
let the widget be the cell's value::

    from smtplab.view.widgets import dashboard
    dashboard(lab)

The drawings the Path tab shows are plain functions in :mod:`smtplab.view.pictures`
(``journey_svg``, ``sequence_svg``), which need no ipywidgets.
"""

from smtplab.view.widgets.compose import ComposeView, compose
from smtplab.view.widgets.dashboard import Dashboard, dashboard
from smtplab.view.widgets.journey_model import JourneyModel, PathModel, journey_of
from smtplab.view.widgets.mailbox_view import MailboxView, mailbox_view
from smtplab.view.widgets.models import (
    SEND_OPTIONS,
    Attachment,
    ComposeModel,
    DashboardModel,
    MailboxModel,
    SendOption,
)
from smtplab.view.widgets.path import PathView, path_view
from smtplab.view.widgets.transcript_view import TranscriptView, transcript_view

__all__ = [
    "SEND_OPTIONS",
    "Attachment",
    "ComposeModel",
    "ComposeView",
    "Dashboard",
    "DashboardModel",
    "JourneyModel",
    "MailboxModel",
    "MailboxView",
    "PathModel",
    "PathView",
    "SendOption",
    "TranscriptView",
    "compose",
    "dashboard",
    "journey_of",
    "mailbox_view",
    "path_view",
    "transcript_view",
]
