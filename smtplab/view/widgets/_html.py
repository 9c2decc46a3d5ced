"""Small HTML fragments the views share: an error beside a field, a send's outcomes."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import ipywidgets as ipw

if TYPE_CHECKING:
    from smtplab.lab.sendresult import SendResult

ERROR_COLOUR = "#c62828"
#: How a widget output's text ends where no live widget can be shown (GitHub, an
#: export, JupyterLab after a reload or a kernel restart). tools/strip_widget_state.py
#: ends other widgets' text with it too.
LIVE_WIDGET_HINT = "re-run this cell to show the live widget"


def error_html(message: str | None) -> str:
    """A red message for beside a field; empty when there is nothing wrong."""
    if not message:
        return ""
    return (
        f'<span class="smtplab-error-text" role="alert" style="color:{ERROR_COLOUR}">'
        f"{html.escape(message)}</span>"
    )


def outcomes_html(result: SendResult | None) -> str:
    """One line per recipient: accepted or refused, with the server's reply."""
    if result is None:
        return ""
    rows = "".join(
        f'<li style="color:{"#2e7d32" if o.accepted else ERROR_COLOUR}">'
        f"{'✓' if o.accepted else '✗'} {html.escape(str(o))}</li>"
        for o in result.outcomes
    )
    return f'<ul class="smtplab-outcomes" style="margin:0;padding-left:1.2em">{rows}</ul>'


# Plain ipywidgets cannot style their parts, but an HTML widget may hold a
# <style>: these rules are scoped to smtplab's own classes. They undo the
# 28 px line height of HTML widgets (meant for one-line labels) and let tab
# titles be as wide as a hop's name.
STYLE = """<style>
.smtplab-compose .widget-html-content, .smtplab-transcripts .widget-html-content,
.smtplab-mailbox .widget-html-content, .smtplab-path .widget-html-content {
  line-height: 1.4;
}
.smtplab-compose .smtplab-field-error .widget-html-content { white-space: normal; }
.smtplab-transcript-tabs { --jp-widgets-horizontal-tab-width: 320px; }
.smtplab-dashboard-tabs { --jp-widgets-horizontal-tab-width: 120px; }
</style>"""


def style_widget() -> ipw.HTML:
    """An invisible HTML widget carrying :data:`STYLE`; each view includes one."""
    widget = ipw.HTML(STYLE, layout=ipw.Layout(display="none"))
    widget.add_class("smtplab-style")
    return widget


class ShortRepr:
    """Mixin for views: a one-line text form instead of ipywidgets' repr of the whole tree.

    That text is what GitHub and strict nbval see of a widget output, and what
    JupyterLab shows in its place after a page reload, when the widget's state
    is gone from the page though the kernel may still hold it; the full repr
    would be hundreds of kilobytes of HTML.
    """

    kind = "smtplab widget"

    def __repr__(self) -> str:
        return f"<{self.kind}: {LIVE_WIDGET_HINT}>"
