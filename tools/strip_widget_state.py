"""Make executed notebooks ready to commit: nothing volatile, and a static read that makes sense.

``jupyter nbconvert --execute`` and JupyterLab save metadata that changes on
every run without changing what a reader sees, and outputs that read badly
where no kernel runs (GitHub, nbviewer, ``jupyter nbconvert --to html``):

- ``metadata.widgets``: the saved state of every ipywidgets model, keyed by
  random model ids; removed.
- ``metadata.execution`` on each cell (and ``ExecuteTime`` from older
  extensions): wall-clock timestamps; removed.
- the text of a widget output that is not smtplab's: ipywidgets' repr as the
  widget was when displayed (``IntProgress(value=0, description='sending',
  max=1210)``: stale, since the bar moved on, and opaque). It becomes one
  sentence saying what the widget showed when the cell ended, read from the
  saved state before that is removed (``<IntProgress widget: 'sending',
  1210 of 1210; re-run this cell to show the live widget>``). smtplab's own
  views already say so themselves (``smtplab.view.widgets._html.ShortRepr``).
  notebooks/sanitize.cfg lets strict nbval read the repr a re-run displays
  and this sentence as the same output.
- stream outputs written in pieces (a ``print(..., end="")`` then another
  print, or prints from threads): adjacent pieces of the same stream are
  joined, so no line is split across two outputs.

The notebook is written back in nbformat's canonical layout (indent 1,
trailing newline), touching only the files that change.

Usage: ``python tools/strip_widget_state.py notebooks/*.ipynb``
"""

from __future__ import annotations

import ast
import contextlib
import re
import sys
from pathlib import Path
from typing import Any

import nbformat

from smtplab.view.widgets._html import LIVE_WIDGET_HINT

CELL_KEYS_TO_DROP = ("execution", "ExecuteTime")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
#: ipywidgets' repr of a widget: its class, then its non-default traits as keywords.
IPYWIDGETS_REPR = re.compile(r"\A(\w+)\((.*)\)\Z", re.DOTALL)


def widget_states(nb: nbformat.NotebookNode) -> dict[str, dict[str, Any]]:
    """model id -> the traits saved for it when the notebook was executed (may be empty)."""
    saved = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    return {model_id: entry.get("state", {}) for model_id, entry in saved.items()}


def repr_traits(arguments: str) -> dict[str, Any]:
    """The traits an ipywidgets repr lists (``value=0, max=1210``), where they are literals."""
    try:
        call = ast.parse(f"f({arguments})", mode="eval").body
    except SyntaxError:
        return {}
    traits = {}
    for keyword in getattr(call, "keywords", []):
        with contextlib.suppress(ValueError, TypeError, SyntaxError, RecursionError):
            traits[keyword.arg] = ast.literal_eval(keyword.value)
    return traits


def describe_widget(name: str, state: dict[str, Any], displayed: dict[str, Any]) -> str:
    """One line for a widget output with no kernel behind it: what it showed at the end.

    ``state`` is what was saved when the cell ended; without it (the notebook was
    stripped before), ``displayed`` (the repr's traits) says all but the value,
    which is the one that was stale.
    """
    final = state or {k: v for k, v in displayed.items() if k != "value"}
    parts = [repr(final["description"])] if final.get("description") else []
    if "value" in final and "max" in final:
        parts.append(f"{final['value']} of {final['max']}")
    elif "max" in final:
        parts.append(f"up to {final['max']}")
    elif "value" in final:
        parts.append(f"value {final['value']!r}")
    shown = ", ".join(parts)
    return f"<{name} widget: {shown + '; ' if shown else ''}{LIVE_WIDGET_HINT}>"


def readable_widget_outputs(nb: nbformat.NotebookNode) -> bool:
    """Replace ipywidgets' repr in widget outputs by :func:`describe_widget`; True if changed."""
    states = widget_states(nb)
    changed = False
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            found = IPYWIDGETS_REPR.match(data.get("text/plain", ""))
            if WIDGET_VIEW not in data or found is None:
                continue  # not a widget, or already a sentence (smtplab's, or ours)
            state = states.get(data[WIDGET_VIEW].get("model_id", ""), {})
            data["text/plain"] = describe_widget(found[1], state, repr_traits(found[2]))
            changed = True
    return changed


def coalesce_streams(cell: nbformat.NotebookNode) -> bool:
    """Join adjacent outputs of the same stream into one; True if any were joined."""
    outputs = cell.get("outputs", [])
    joined: list[nbformat.NotebookNode] = []
    for output in outputs:
        before = joined[-1] if joined else None
        if (
            before is not None
            and output.output_type == "stream"
            and before.output_type == "stream"
            and before.name == output.name
        ):
            before.text += output.text
        else:
            joined.append(output)
    if len(joined) == len(outputs):
        return False
    cell.outputs = joined
    return True


def strip(nb: nbformat.NotebookNode) -> bool:
    """Make ``nb`` ready to commit (see the module's docstring) in place; True if changed."""
    changed = readable_widget_outputs(nb)  # reads the widget state: before it goes
    changed = (nb.metadata.pop("widgets", None) is not None) or changed
    for cell in nb.cells:
        for key in CELL_KEYS_TO_DROP:
            if key in cell.metadata:
                del cell.metadata[key]
                changed = True
        changed = coalesce_streams(cell) or changed
    return changed


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python tools/strip_widget_state.py NOTEBOOK.ipynb ...", file=sys.stderr)
        return 2
    for name in argv:
        path = Path(name)
        nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        if strip(nb):
            text = nbformat.writes(nb)  # indent=1, sorted keys
            path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
            print(f"stripped {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
