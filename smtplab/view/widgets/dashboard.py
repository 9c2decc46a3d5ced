"""The whole lab in one widget: compose on the left; transcripts, path and mailboxes on the right.

>>> from smtplab.view.widgets import dashboard
>>> dashboard(lab)          # the widget is the cell's value
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import ipywidgets as ipw

from smtplab.view.widgets._html import ShortRepr
from smtplab.view.widgets.compose import ComposeView
from smtplab.view.widgets.mailbox_view import MailboxView
from smtplab.view.widgets.models import DashboardModel
from smtplab.view.widgets.path import PathView
from smtplab.view.widgets.transcript_view import TranscriptView

if TYPE_CHECKING:
    from smtplab.lab import Lab

TAB_TITLES = ("Transcript", "Path", "Mailbox")


class Dashboard(ShortRepr, ipw.VBox):  # type: ignore[misc]  # ipywidgets has no types
    """Compose, transcript, path and mailbox views over one :class:`DashboardModel`."""

    kind = "smtplab dashboard"

    def __init__(self, model: DashboardModel, **kwargs: Any):
        self.model = model
        self.compose = ComposeView(model.compose, layout=ipw.Layout(width="580px"))
        self.transcripts = TranscriptView(model.journey)
        self.path = PathView(model.path)
        self.mailbox = MailboxView(model.mailbox)
        self.tabs = ipw.Tab(
            children=[self.transcripts, self.path, self.mailbox],
            titles=TAB_TITLES,
            layout=ipw.Layout(flex="1 1 440px", min_width="440px"),
        )
        self.tabs.add_class("smtplab-dashboard-tabs")
        title = ipw.HTML(
            f"<b>smtplab</b> — lab <code>{html.escape(model.lab.name)}</code>: "
            "write a message, send it, and follow it on the wire."
        )
        # Side by side when the notebook is wide enough; tabs below the form when not.
        body = ipw.HBox(
            [self.compose, self.tabs],
            layout=ipw.Layout(width="100%", align_items="flex-start", flex_flow="row wrap"),
        )
        super().__init__(children=[title, body], **kwargs)
        self.add_class("smtplab-dashboard")


def dashboard(lab: Lab) -> Dashboard:
    """Compose, transcript, path and mailbox views for ``lab``, working together."""
    return Dashboard(DashboardModel(lab))
