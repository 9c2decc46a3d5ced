"""The Path tab: the drawing of where a message went above the sequence diagram of one hop.

:class:`PathView` follows a :class:`~smtplab.view.widgets.journey_model.PathModel`: it draws
the journey with :func:`~smtplab.view.pictures.journey_svg` whenever a step arrives,
offers the journey's hops in a dropdown, and draws the chosen hop with
:func:`~smtplab.view.pictures.sequence_svg`. The drawings are plain SVG text from
:mod:`smtplab.view.pictures`; this module only lays them out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as ipw

from smtplab.record.transcript import Transcript
from smtplab.view.pictures import journey_svg, sequence_svg
from smtplab.view.widgets._html import ShortRepr, style_widget
from smtplab.view.widgets.journey_model import JourneyModel, PathModel

if TYPE_CHECKING:
    from smtplab.lab.sendresult import SendResult
    from smtplab.record.journey import Journey


class PathView(ShortRepr, ipw.VBox):  # type: ignore[misc]  # ipywidgets has no types
    """The journey drawing above the sequence diagram of one hop (chosen in a dropdown)."""

    kind = "smtplab path view"

    def __init__(self, model: PathModel, **kwargs: Any):
        self.model = model
        self.journey_html = ipw.HTML(layout=ipw.Layout(overflow="auto", width="100%"))
        self.hop_picker = ipw.Dropdown(
            description="Hop",
            options=[("newest", -1)],
            value=-1,
            layout=ipw.Layout(width="100%", max_width="480px"),
        )
        self.sequence_html = ipw.HTML(layout=ipw.Layout(overflow="auto", width="100%"))
        children = [style_widget(), self.journey_html, self.hop_picker, self.sequence_html]
        super().__init__(children=children, **kwargs)
        self.add_class("smtplab-path")
        ipw.link((model, "hop"), (self.hop_picker, "value"))
        model.journey.observe(self._render, names=["steps", "hops"])
        model.observe(self._render_sequence, names=["hop"])
        self._render()

    def _render(self, change: dict[str, Any] | None = None) -> None:
        journey_model: JourneyModel = self.model.journey
        journey = journey_model.journey
        self.journey_html.value = (
            journey_svg(journey, roles=journey_model.roles) if journey is not None else ""
        )
        hops: Sequence[Transcript] = journey_model.hops
        options = [("newest", -1), *((f"{i + 1}. {t.hop}", i) for i, t in enumerate(hops))]
        if list(self.hop_picker.options) != options:
            keep = self.model.hop if self.model.hop < len(hops) else -1
            self.hop_picker.options = options
            self.hop_picker.value = keep
        self._render_sequence()

    def _render_sequence(self, change: dict[str, Any] | None = None) -> None:
        transcript = self.model.transcript
        self.sequence_html.value = sequence_svg(transcript) if transcript is not None else ""


def path_view(
    item: SendResult | Journey | None = None, *, roles: dict[str, str] | None = None
) -> PathView:
    """A widget drawing a SendResult's (or Journey's) path and each hop's sequence diagram."""
    return PathView(PathModel(JourneyModel(item, roles=roles)))
