"""A lab user's mailbox: the list of messages, and the headers and source of one.

A view over a :class:`~smtplab.view.widgets.models.MailboxModel`. The mailbox is
read from disk again only when asked (the Refresh button, or the dashboard
after a delivery), exactly like calling ``lab.mailbox(address)`` again.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import ipywidgets as ipw

from smtplab.view.widgets._html import ShortRepr, error_html, style_widget
from smtplab.view.widgets.models import MailboxModel

if TYPE_CHECKING:
    from smtplab.lab import Lab
    from smtplab.mailstore.maildir import StoredMessage

EMPTY = '<i style="color:#757575">No message selected.</i>'


#: Bytes of a message's source the view shows (the rest is in the message's ``raw``).
SOURCE_SHOWN = 256 * 1024


def message_label(index: int, message: StoredMessage) -> str:
    """How a message is listed: its number, sender and subject (or why it cannot be read)."""
    if message.notice:
        return f"{index + 1}. {message.notice}"
    return f"{index + 1}. {message.sender or '(no From)'} — {message.subject or '(no subject)'}"


def headers_html(message: StoredMessage) -> str:
    """A table of the message's header fields, in order (trace headers first)."""
    if message.notice:  # hostile MIME: never handed to the email package
        return f'<p class="smtplab-headers">{html.escape(message.notice)}</p>'
    rows = "".join(
        f'<tr><th style="text-align:left;vertical-align:top;padding-right:1em">'
        f"{html.escape(name)}</th><td>{html.escape(str(value))}</td></tr>"
        for name, value in message.message.items()
    )
    return f'<table class="smtplab-headers" style="font-size:12px">{rows}</table>'


def source_html(message: StoredMessage) -> str:
    """The message exactly as stored, in a scrollable block (its first 256 KiB)."""
    raw = message.raw
    text = html.escape(raw[:SOURCE_SHOWN].decode("utf-8", "replace"))
    if len(raw) > SOURCE_SHOWN:
        text += html.escape(f"\n[... {len(raw) - SOURCE_SHOWN} more bytes: see the message's raw]")
    return (
        f'<div class="smtplab-source"><b>Raw source</b> ({len(raw)} bytes, as stored)'
        '<pre style="max-height:320px;overflow:auto;white-space:pre;font-size:12px;margin:0;'
        f'border:1px solid #e0e0e0;padding:4px">{text}</pre></div>'
    )


class MailboxView(ShortRepr, ipw.VBox):  # type: ignore[misc]  # ipywidgets has no types
    """Pick a user, pick a message, read it; Refresh reads the mailbox again."""

    kind = "smtplab mailbox view"

    def __init__(self, model: MailboxModel, **kwargs: Any):
        self.model = model
        self.user = ipw.Dropdown(
            description="Mailbox", options=model.users, layout=ipw.Layout(width="300px")
        )
        self.refresh_button = ipw.Button(description="Refresh", icon="refresh")
        self.count = ipw.Label()
        self.error = ipw.HTML()
        self.messages = ipw.Select(options=[], rows=6, layout=ipw.Layout(width="100%"))
        self.headers = ipw.HTML()
        self.source = ipw.HTML()
        self.user.add_class("smtplab-mailbox-user")
        self.refresh_button.add_class("smtplab-mailbox-refresh")
        self.count.add_class("smtplab-mailbox-count")
        self.messages.add_class("smtplab-mailbox-list")
        self.headers.add_class("smtplab-mailbox-headers")
        self.source.add_class("smtplab-mailbox-source")
        top = ipw.HBox(
            [self.user, self.refresh_button, self.count, self.error],
            layout=ipw.Layout(flex_flow="row wrap", align_items="center"),
        )
        children = [style_widget(), top, self.messages, self.headers, self.source]
        super().__init__(children=children, **kwargs)
        self.add_class("smtplab-mailbox")
        self._updating = False

        ipw.link((model, "address"), (self.user, "value"))
        self.refresh_button.on_click(lambda _button: model.refresh())
        self.messages.observe(self._picked, names="value")
        model.observe(self._render_list, names=["messages", "error"])
        model.observe(self._render_message, names=["selected", "messages"])
        self._render_list()
        self._render_message()

    def _picked(self, change: dict[str, Any]) -> None:
        if not self._updating:
            self.model.selected = -1 if change["new"] is None else change["new"]

    def _render_list(self, change: dict[str, Any] | None = None) -> None:
        messages = self.model.messages
        options = [(message_label(i, m), i) for i, m in enumerate(messages)]
        self._updating = True
        try:
            if list(self.messages.options) != options:
                self.messages.options = options
            selected = self.model.selected
            self.messages.value = selected if 0 <= selected < len(options) else None
        finally:
            self._updating = False
        count = len(messages)
        self.count.value = f"{count} message{'s' if count != 1 else ''}"
        self.error.value = error_html(self.model.error)

    def _render_message(self, change: dict[str, Any] | None = None) -> None:
        message = self.model.message
        self._updating = True
        try:
            selected = self.model.selected
            if selected != (self.messages.value if self.messages.value is not None else -1):
                in_range = 0 <= selected < len(self.messages.options)
                self.messages.value = selected if in_range else None
        finally:
            self._updating = False
        self.headers.value = EMPTY if message is None else headers_html(message)
        self.source.value = "" if message is None else source_html(message)


def mailbox_view(lab: Lab, address: str | None = None) -> MailboxView:
    """A mailbox browser for ``lab``'s users (starting with ``address``)."""
    return MailboxView(MailboxModel(lab, address))
