"""The chapters' shared layout, checked on the committed files (no kernel needed).

A reader moves through the series by the navigation line at the top and the bottom
of every chapter (Index · previous · next), so it must be the same line in both
places and point at chapters that exist, with their real titles.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
INDEX = "00-index.ipynb"
CHAPTERS = sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]-*.ipynb") if p.name != INDEX)


def cells(name: str) -> list[dict]:
    return json.loads((NOTEBOOKS / name).read_text(encoding="utf-8"))["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def title(name: str) -> str:
    """``01 · The first conversation``: the chapter's H1."""
    heading = re.match(r"# (.+)", source(cells(name)[0]))
    assert heading, f"{name} does not begin with a # title"
    return heading.group(1).strip()


def navigation(name: str) -> str:
    """The line a chapter must carry: ← previous · Index · next →."""
    at = CHAPTERS.index(name)
    parts = []
    if at == 0:
        parts.append(f"[← Index]({INDEX})")
    else:
        before = CHAPTERS[at - 1]
        parts += [f"[← {title(before)}]({before})", f"[Index]({INDEX})"]
    if at + 1 < len(CHAPTERS):
        after = CHAPTERS[at + 1]
        parts.append(f"[Next: {title(after)} →]({after})")
    return " · ".join(parts)


def test_the_series_has_its_chapters():
    assert len(CHAPTERS) == 11
    assert [name[:2] for name in CHAPTERS] == [f"{n:02d}" for n in range(1, 12)]


@pytest.mark.parametrize("name", CHAPTERS)
def test_navigation_at_top_and_bottom(name):
    expected = navigation(name)
    top = source(cells(name)[0]).split("\n\n")
    assert top[1].strip() == expected, f"top of {name}"
    last = cells(name)[-1]
    assert last["cell_type"] == "markdown" and source(last).strip() == expected, f"end of {name}"


def test_the_index_links_every_chapter():
    text = "\n".join(source(cell) for cell in cells(INDEX) if cell["cell_type"] == "markdown")
    for name in CHAPTERS:
        assert f"]({name})" in text, f"the index does not link {name}"
