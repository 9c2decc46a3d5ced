"""The compose form: write a message, pick where to submit it, send it.

The form is a view over a :class:`~smtplab.view.widgets.models.ComposeModel`: each
control is linked to one of the model's traits, the Send button calls
``model.send()`` (a background thread, so the notebook stays responsive), and
what the model reports comes back as a red message beside the field it is
about, or as the recipients' outcomes under the button.

>>> from smtplab.view.widgets import compose
>>> compose(lab)            # the widget is the cell's value
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ipywidgets as ipw

from smtplab.view.widgets._html import ShortRepr, error_html, outcomes_html, style_widget
from smtplab.view.widgets.models import FIELDS, SEND_OPTIONS, Attachment, ComposeModel

if TYPE_CHECKING:
    from smtplab.lab import Lab

LABEL_STYLE = {"description_width": "80px"}
FIELD_WIDTH = "380px"
AUTOMATIC = "automatic: the lab's default route"


class ComposeView(ShortRepr, ipw.VBox):  # type: ignore[misc]  # ipywidgets has no types
    """The form. Controls are attributes (``to``, ``subject``, ``send_button``…) for tests."""

    kind = "smtplab compose form"

    def __init__(self, model: ComposeModel, **kwargs: Any):
        self.model = model
        wide = {"style": LABEL_STYLE, "layout": ipw.Layout(width=FIELD_WIDTH)}
        self.sender = ipw.Dropdown(description="From", options=model.senders, **wide)
        self.to = ipw.Text(
            description="To", placeholder="bob@example.org, carol@example.org", **wide
        )
        self.cc = ipw.Text(description="Cc", placeholder="comma-separated addresses", **wide)
        self.bcc = ipw.Text(
            description="Bcc", placeholder="envelope only: not in the headers", **wide
        )
        self.subject = ipw.Text(description="Subject", **wide)
        self.body = ipw.Textarea(
            description="Body",
            style=LABEL_STYLE,
            layout=ipw.Layout(width=FIELD_WIDTH, height="120px"),
        )
        self.attachment = ipw.FileUpload(description="Attach a file", multiple=False)
        self.attachment_name = ipw.HTML()
        self.via = ipw.Dropdown(
            description="Submit to",
            options=[
                (AUTOMATIC, ""),
                *((f"{host} ({role})", host) for host, role in model.servers),
            ],
            **wide,
        )
        self.option_boxes = {
            option.name: ipw.Checkbox(
                description=option.label, tooltip=option.tooltip, indent=False
            )
            for option in SEND_OPTIONS
        }
        self.send_button = ipw.Button(
            description="Send", button_style="primary", icon="paper-plane", tooltip="lab.send(…)"
        )
        self.status = ipw.HTML()
        self.outcomes = ipw.HTML()
        self.errors = {
            name: ipw.HTML(layout=ipw.Layout(flex="1 1 auto", min_width="0"))
            for name in (*FIELDS, "send")
        }

        controls = {
            "from": self.sender,
            "to": self.to,
            "cc": self.cc,
            "bcc": self.bcc,
            "subject": self.subject,
            "body": self.body,
        }
        rows: list[ipw.Widget] = [style_widget()]
        for name, control in controls.items():
            control.add_class(f"smtplab-compose-{name}")
            rows.append(self._row(name, control))
        self.attachment.add_class("smtplab-compose-attachment")
        rows.append(self._row("attachment", self.attachment, self.attachment_name))
        self.via.add_class("smtplab-compose-via")
        rows.append(self._row("via", self.via))
        for name, box in self.option_boxes.items():
            box.add_class(f"smtplab-compose-option-{name}")
        label = ipw.Label("Options", layout=ipw.Layout(width="84px"))
        rows.append(ipw.HBox([label, *self.option_boxes.values()]))
        self.send_button.add_class("smtplab-compose-send")
        self.status.add_class("smtplab-compose-status")
        self.outcomes.add_class("smtplab-compose-outcomes")
        rows.append(self._row("send", self.send_button, self.status))
        rows.append(self.outcomes)
        super().__init__(children=rows, **kwargs)
        self.add_class("smtplab-compose")

        for trait, control in (
            ("sender", self.sender),
            ("to", self.to),
            ("cc", self.cc),
            ("bcc", self.bcc),
            ("subject", self.subject),
            ("body", self.body),
            ("via", self.via),
        ):
            ipw.link((model, trait), (control, "value"))
        for name, box in self.option_boxes.items():
            box.value = bool(model.options.get(name))
            box.observe(self._option_ticked, names="value")
        self.attachment.observe(self._uploaded, names="value")
        self.send_button.on_click(lambda _button: model.send())
        model.observe(self._sending_changed, names="sending")
        model.observe(self._errors_changed, names="errors")
        model.observe(self._status_changed, names=["status", "result", "sending"])
        model.observe(self._options_changed, names="options")
        model.observe(self._attachments_changed, names="attachments")

    def _row(self, name: str, *controls: ipw.Widget) -> ipw.HBox:
        """The field, what goes with it, and its error; the error wraps, the field keeps
        its width (a flex item would shrink), so every row's field stays aligned."""
        controls[0].layout.flex = "0 0 auto"
        error = self.errors[name]
        error.add_class(f"smtplab-error-{name}")
        error.add_class("smtplab-field-error")
        return ipw.HBox([*controls, error], layout=ipw.Layout(align_items="center"))

    # -- view -> model -------------------------------------------------------------
    def _option_ticked(self, change: dict[str, Any]) -> None:
        ticked = {name: box.value for name, box in self.option_boxes.items()}
        if ticked != self.model.options:
            self.model.options = ticked

    def _uploaded(self, change: dict[str, Any]) -> None:
        self.model.attachments = [
            Attachment(
                item["name"],
                bytes(item["content"]),
                item.get("type") or "application/octet-stream",
            )
            for item in change["new"]
        ]

    # -- model -> view -------------------------------------------------------------
    def _sending_changed(self, change: dict[str, Any]) -> None:
        self.send_button.disabled = change["new"]
        self.send_button.description = "Sending…" if change["new"] else "Send"

    def _errors_changed(self, change: dict[str, Any]) -> None:
        errors: dict[str, str] = dict(change["new"])
        others = [f"{field}: {text}" for field, text in errors.items() if field not in self.errors]
        if others:
            errors["send"] = "; ".join([*([errors["send"]] if "send" in errors else []), *others])
        for name, widget in self.errors.items():
            widget.value = error_html(errors.get(name))

    def _status_changed(self, change: dict[str, Any]) -> None:
        self.status.value = self.model.status
        quiet = self.model.sending or self.model.errors
        self.outcomes.value = "" if quiet else outcomes_html(self.model.result)

    def _options_changed(self, change: dict[str, Any]) -> None:
        for name, box in self.option_boxes.items():
            box.value = bool(change["new"].get(name))

    def _attachments_changed(self, change: dict[str, Any]) -> None:
        names = ", ".join(f"{a.name} ({len(a.content)} bytes)" for a in change["new"])
        self.attachment_name.value = names


def compose(lab: Lab) -> ComposeView:
    """A compose form for ``lab``: fill it in and press Send."""
    return ComposeView(ComposeModel(lab))
