"""Every connection a message made, one tab per hop, as the lab recorded it.

A view over a :class:`~smtplab.view.widgets.journey_model.JourneyModel`: each hop's
:class:`~smtplab.record.transcript.Transcript` is rendered with its own HTML (a colour
per side, reply meanings on hover, message data folded away) in a tab titled
with the hop (``client.example.com → mx1.example.org``). When the lab reports
a new step from its queue threads, the model's ``hops`` change and a tab is
added; the view only ever updates widget values.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import ipywidgets as ipw

from smtplab.view.widgets._html import ShortRepr, outcomes_html, style_widget
from smtplab.view.widgets.journey_model import JourneyModel

if TYPE_CHECKING:
    from smtplab.lab.sendresult import SendResult
    from smtplab.record.journey import Journey
    from smtplab.record.transcript import Transcript

EMPTY = '<i style="color:#757575">No message yet: send one and its conversation appears here.</i>'


def hop_titles(hops: list[Transcript]) -> list[str]:
    """Tab titles: the hop's name, numbered when the same hop was made again (a retry)."""
    seen: dict[str, int] = {}
    titles = []
    for transcript in hops:
        seen[transcript.hop] = seen.get(transcript.hop, 0) + 1
        count = seen[transcript.hop]
        titles.append(transcript.hop if count == 1 else f"{transcript.hop} ({count})")
    return titles


class TranscriptView(ShortRepr, ipw.VBox):  # type: ignore[misc]  # ipywidgets has no types
    """Outcomes and progress above a Tab with one transcript per hop."""

    kind = "smtplab transcript view"

    def __init__(self, model: JourneyModel, **kwargs: Any):
        self.model = model
        self.summary = ipw.HTML()
        self.tabs = ipw.Tab()
        self.tabs.add_class("smtplab-transcript-tabs")
        super().__init__(children=[style_widget(), self.summary, self.tabs], **kwargs)
        self.add_class("smtplab-transcripts")
        model.observe(self._render, names=["hops", "steps", "done", "result"])
        self._render()

    def _render(self, change: dict[str, Any] | None = None) -> None:
        hops = list(self.model.hops)
        pages = list(self.tabs.children)
        for page, transcript in zip(pages, hops, strict=False):
            page.value = transcript._repr_html_()
        grew = len(hops) > len(pages)
        if len(hops) != len(pages):
            pages = pages[: len(hops)] + [
                ipw.HTML(transcript._repr_html_(), layout=ipw.Layout(overflow="auto", width="100%"))
                for transcript in hops[len(pages) :]
            ]
            self.tabs.children = pages
        self.tabs.titles = tuple(hop_titles(hops))
        if grew:
            self.tabs.selected_index = len(hops) - 1
        self.tabs.layout.display = "" if hops else "none"
        self.summary.value = self._summary()

    def _summary(self) -> str:
        journey = self.model.journey
        if journey is None:
            return EMPTY
        count = len(self.model.hops)
        head = (
            f"<b>{html.escape(journey.message_id or 'The message')}</b>: {count} "
            f"connection{'s' if count != 1 else ''}"
        )
        head += "; every recipient has a final outcome" if self.model.done else "; on its way…"
        return f'<div class="smtplab-journey-summary">{head}</div>' + outcomes_html(
            self.model.result
        )


def transcript_view(item: SendResult | Journey | None = None) -> TranscriptView:
    """A tabbed view of a SendResult's (or Journey's) connections."""
    return TranscriptView(JourneyModel(item))
