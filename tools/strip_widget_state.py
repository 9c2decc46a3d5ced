"""Strip volatile metadata from executed notebooks before they are committed.

``jupyter nbconvert --execute`` and JupyterLab save two kinds of metadata that
change on every run without changing what a reader sees:

- ``metadata.widgets``: the saved state of every ipywidgets model, keyed by
  random model ids;
- ``metadata.execution`` on each cell (and ``ExecuteTime`` from older
  extensions): wall-clock timestamps.

Left in, they make every re-run a large diff, and they are not outputs that
strict nbval can check. This script removes them and writes the notebook back
in nbformat's canonical layout (indent 1, trailing newline), touching only the
files that change.

Usage: ``python tools/strip_widget_state.py notebooks/*.ipynb``
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

CELL_KEYS_TO_DROP = ("execution", "ExecuteTime")


def strip(nb: nbformat.NotebookNode) -> bool:
    """Remove widget state and cell timing metadata in place; return True if changed."""
    changed = nb.metadata.pop("widgets", None) is not None
    for cell in nb.cells:
        for key in CELL_KEYS_TO_DROP:
            if key in cell.metadata:
                del cell.metadata[key]
                changed = True
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
