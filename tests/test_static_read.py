"""The committed chapters read well without a kernel: on GitHub, nbviewer, or exported to HTML.

Checked on the committed files (no kernel, no browser): a picture of the dashboard
above every ``lab.ui()`` cell, made from the widget's current code; no widget
output that is an opaque or stale repr; no line split across stream outputs; and
``jupyter nbconvert --to html`` of every chapter shows its transcripts, tables and
pictures without running a script.
"""

from __future__ import annotations

import base64
import importlib.util
import itertools
import re
from html.parser import HTMLParser

import nbformat
import pytest
from peers.jupyter import (
    PICTURE_LIMIT,
    ROOT,
    SHOTS,
    UI_CELL,
    DashboardShot,
    screenshot_inputs,
)

from smtplab.view.widgets._html import LIVE_WIDGET_HINT

NOTEBOOKS = ROOT / "notebooks"
ALL = sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
#: What a widget output may say as text: smtplab's views, or a widget described by
#: tools/strip_widget_state.py; both end by saying how to see it live.
READABLE_WIDGET = re.compile(rf"\A<[\w ]+: (.*; )?{re.escape(LIVE_WIDGET_HINT)}>\Z")
SVG_DATA = "data:image/svg+xml;base64,"
MAKE_SCREENSHOTS = "run `make screenshots` (it drives JupyterLab) and commit notebooks/images/"


def notebook(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def outputs(name: str) -> list[nbformat.NotebookNode]:
    return [o for cell in notebook(name).cells for o in cell.get("outputs", [])]


def shot_of(name: str) -> DashboardShot | None:
    return next((shot for shot in SHOTS if shot.chapter == name), None)


# -- the dashboard, as a picture --------------------------------------------------------------
def test_every_chapter_with_a_dashboard_has_its_picture():
    with_ui = [
        name
        for name in ALL
        if any(c.cell_type == "code" and c.source.strip() == UI_CELL for c in notebook(name).cells)
    ]
    assert with_ui == [shot.chapter for shot in SHOTS]


@pytest.mark.parametrize("shot", SHOTS, ids=[shot.chapter for shot in SHOTS])
def test_the_picture_is_above_the_cell_and_made_from_the_current_widget(shot: DashboardShot):
    cells = notebook(shot.chapter).cells
    ui = next(i for i, c in enumerate(cells) if c.cell_type == "code" and c.source == UI_CELL)
    above = cells[ui - 1]
    link = f"]({shot.png.relative_to(NOTEBOOKS).as_posix()})"
    assert above.cell_type == "markdown" and link in above.source, f"no {link} above {UI_CELL}"
    assert shot.png.exists() and shot.stamp.exists(), f"no picture yet: {MAKE_SCREENSHOTS}"
    assert shot.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.png.stat().st_size <= PICTURE_LIMIT, f"{shot.png.name} is too big"
    made_from = shot.stamp.read_text(encoding="utf-8").strip()
    assert made_from == screenshot_inputs(shot), (
        f"{shot.png.name} shows an older dashboard: the view's code (smtplab/view/), "
        f"the chapter's lab or {UI_CELL} cell, or the shot changed since. {MAKE_SCREENSHOTS}"
    )


def test_no_picture_is_left_over():
    made = {shot.png.name for shot in SHOTS} | {shot.stamp.name for shot in SHOTS}
    on_disk = {p.name for p in (NOTEBOOKS / "images").glob("dashboard-*")}
    assert on_disk == made


# -- outputs a static reader can make sense of ------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_widget_outputs_say_what_they_are_not_an_opaque_or_stale_repr(name: str):
    assert "widgets" not in notebook(name).metadata, "run tools/strip_widget_state.py"
    for output in outputs(name):
        if WIDGET_VIEW in output.get("data", {}):
            text = output.data.get("text/plain", "")
            assert READABLE_WIDGET.match(text), f"{name}: {text!r}: run make notebooks"


@pytest.mark.parametrize("name", ALL)
def test_no_line_is_split_across_stream_outputs(name: str):
    for cell in notebook(name).cells:
        streams = cell.get("outputs", [])
        for before, after in itertools.pairwise(streams):
            same = before.output_type == after.output_type == "stream"
            assert not (same and before.name == after.name), (
                f"{name} {cell.get('id')}: two {before.name} outputs in a row: "
                "run tools/strip_widget_state.py"
            )


# -- jupyter nbconvert --to html --------------------------------------------------------------
class ScriptlessPage(HTMLParser):
    """An exported page as a reader without JavaScript gets it: its text and its images."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.images: list[str] = []
        self.svg_images: list[str] = []  # <img src="data:image/svg+xml;base64,…">, decoded
        self._script = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._script += 1
        elif tag == "img":
            for key, value in attrs:
                if key == "src" and value:
                    self.images.append(value)
                    if value.startswith(SVG_DATA):
                        self.svg_images.append(base64.b64decode(value[len(SVG_DATA) :]).decode())

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._script -= 1

    def handle_data(self, data: str) -> None:
        if not self._script:
            self.text.append(data)


def visible_lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def exported() -> dict[str, ScriptlessPage]:
    from nbconvert import HTMLExporter

    exporter = HTMLExporter()
    pages = {}
    for name in ALL:
        body, _resources = exporter.from_notebook_node(notebook(name))
        page = ScriptlessPage()
        page.feed(body)
        pages[name] = page
    return pages


@pytest.mark.parametrize("name", ALL)
def test_the_html_export_shows_transcripts_tables_and_pictures_without_scripts(
    name: str, exported: dict[str, ScriptlessPage]
):
    page = exported[name]
    shown = "\n".join(visible_lines("".join(page.text)))
    for output in outputs(name):
        data = output.get("data", {})
        if output.output_type == "stream":
            expected = visible_lines(output.text)
        elif "image/svg+xml" in data:  # nbconvert writes it as an <img>: no script needed
            picture = data["image/svg+xml"].strip()
            assert picture in page.svg_images, f"{name}: a picture is not in the export"
            continue
        elif any(kind.startswith("image/") for kind in data):
            continue  # a PNG (matplotlib): nbconvert always embeds those
        elif "text/html" in data:
            expected = visible_lines("".join(text_of(data["text/html"])))
        elif "text/plain" in data:
            expected = visible_lines(data["text/plain"])
            if WIDGET_VIEW in data:  # no state is saved: the export shows the text
                assert READABLE_WIDGET.match(data["text/plain"]), f"{name}: {expected}"
        else:
            continue
        for line in expected:
            assert line in shown, f"{name}: {line!r} is not in the exported page"
    for source in page.images:
        if not source.startswith("data:"):
            assert (NOTEBOOKS / source).is_file(), f"{name}: the picture {source} is missing"


def text_of(markup: str) -> list[str]:
    """The text of an HTML output, as a browser shows it without scripts."""
    page = ScriptlessPage()
    page.feed(markup)
    return page.text


def test_the_export_check_reads_what_a_reader_sees():
    page = ScriptlessPage()
    svg = base64.b64encode(b"<svg>b</svg>").decode()
    page.feed(f'<pre>250 2.0.0 &lt;ok&gt;</pre><script>hide()</script><img src="{SVG_DATA}{svg}">')
    page.feed('<img src="a.png">')
    assert "".join(page.text) == "250 2.0.0 <ok>" and page.svg_images == ["<svg>b</svg>"]
    assert page.images == [f"{SVG_DATA}{svg}", "a.png"]


# -- tools/strip_widget_state.py, which `make notebooks` runs ---------------------------------
def load_tool():
    spec = importlib.util.spec_from_file_location("strip_widget_state", ROOT / "tools" / TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOL = "strip_widget_state.py"


def executed_with_a_progress_bar(saved_state: bool) -> nbformat.NotebookNode:
    """A notebook as ``nbconvert --execute`` saves it: a progress bar, prints in pieces."""
    bar = nbformat.v4.new_output(
        "display_data",
        data={
            WIDGET_VIEW: {"model_id": "m1", "version_major": 2, "version_minor": 0},
            "text/plain": "IntProgress(value=0, description='sending', max=1210)",
        },
    )
    pieces = [
        nbformat.v4.new_output("stream", name="stdout", text=text)
        for text in ("Exercise 1:", " ok\n")
    ]
    cell = nbformat.v4.new_code_cell("...", outputs=[bar, *pieces])
    notebook = nbformat.v4.new_notebook(cells=[cell])
    if saved_state:
        state = {"value": 1210, "max": 1210, "description": "sending"}
        notebook.metadata["widgets"] = {
            "application/vnd.jupyter.widget-state+json": {"state": {"m1": {"state": state}}}
        }
    return notebook


def test_the_tool_says_what_a_foreign_widget_showed_at_the_end_and_joins_streams():
    tool = load_tool()
    notebook = executed_with_a_progress_bar(saved_state=True)
    assert tool.strip(notebook)
    bar, text = notebook.cells[0].outputs
    assert bar.data["text/plain"] == (
        "<IntProgress widget: 'sending', 1210 of 1210; re-run this cell to show the live widget>"
    )
    assert READABLE_WIDGET.match(bar.data["text/plain"])
    assert text.text == "Exercise 1: ok\n" and "widgets" not in notebook.metadata
    assert not tool.strip(notebook)  # done once: nothing more to do


def test_without_saved_state_the_tool_drops_only_the_stale_value():
    tool = load_tool()
    notebook = executed_with_a_progress_bar(saved_state=False)
    tool.strip(notebook)
    assert notebook.cells[0].outputs[0].data["text/plain"] == (
        "<IntProgress widget: 'sending', up to 1210; re-run this cell to show the live widget>"
    )


def test_the_index_names_the_command_that_make_lab_installs():
    """`make lab` puts `smtplab` in .venv/bin, not on the PATH: a bare `$ smtplab up` fails."""
    cells = notebook("00-index.ipynb").cells
    text = "\n".join(cell.source for cell in cells if cell.cell_type == "markdown")
    assert "$ .venv/bin/smtplab up" in text and "source .venv/bin/activate" in text
    assert not re.search(r"^\$ smtplab\b", text, re.M)
