"""The dashboard in a real JupyterLab, driven by headless Chromium with Playwright.

One server and one browser serve the module: the notebook is opened and run
once, then each test uses the dashboard it shows. Every wait is on the page's
real state (kernel status, elements, text) with a deadline; screenshots go to
``test-artifacts/``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from peers.jupyter import (
    KERNEL_IDLE_JS,
    PICTURE_LIMIT,
    ROOT,
    SHOTS,
    DashboardShot,
    chapter_cells,
    jupyter_server,
    run_notebook,
    screenshot_inputs,
    small_png,
    write_notebook,
)

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
WAIT_MS = 30_000
NOTEBOOK_CELLS = [
    "from smtplab import Lab",
    'lab = Lab(name="browser")',
    "from smtplab.view.widgets import dashboard\ndashboard(lab)",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None,
        reason="playwright is not installed (pip install playwright; its browsers are not needed)",
    ),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (Debian: apt-get install chromium)"
    ),
]


@dataclass(frozen=True)
class Shown:
    """A browser page showing the dashboard, in one of the frontends."""

    page: Any
    frontend: str


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


FRONTENDS = [
    pytest.param("lab", id="jupyterlab"),
    pytest.param(
        "notebook",
        id="notebook7",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("notebook") is None,
            reason="Notebook 7 is not installed (pip install notebook)",
        ),
    ),
]


@pytest.fixture(scope="module", params=FRONTENDS)
def dashboard_page(
    request: pytest.FixtureRequest, browser: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shown]:
    """JupyterLab (or Notebook 7) showing the dashboard of a running lab."""
    frontend = request.param
    root = tmp_path_factory.mktemp("notebooks")
    write_notebook(root / "dashboard.ipynb", NOTEBOOK_CELLS)
    ARTIFACTS.mkdir(exist_ok=True)
    state = tmp_path_factory.mktemp("jupyter-state")
    with jupyter_server(root, state, frontend) as server:
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.set_default_timeout(WAIT_MS)
        try:
            try:
                run_notebook(page, server, "dashboard.ipynb")
                page.locator(".smtplab-dashboard").wait_for(state="visible")
            except BaseException:
                page.screenshot(path=ARTIFACTS / f"{frontend}-setup-failure.png")
                print(server.tail())  # shown by pytest with the failure
                raise
            yield Shown(page, frontend)
        finally:
            page.close()


def shoot(shown: Shown, name: str) -> None:
    """The dashboard, and the whole window, into test-artifacts/<frontend>-<name>-*.png."""
    page, name = shown.page, f"{shown.frontend}-{name}"
    page.locator(".smtplab-dashboard").screenshot(path=ARTIFACTS / f"{name}-dashboard.png")
    page.screenshot(path=ARTIFACTS / f"{name}-window.png")


def compose_and_send(page: Any, to: str, subject: str, body: str, via: str) -> None:
    page.locator(".smtplab-compose-to input").fill(to)
    page.locator(".smtplab-compose-subject input").fill(subject)
    page.locator(".smtplab-compose-body textarea").fill(body)
    # Dropdown options are labelled "host (role)"; their DOM values are indices.
    page.locator(".smtplab-compose-via select").select_option(label=via)
    page.locator("button.smtplab-compose-send").click()


def test_sending_from_the_dashboard_shows_250_and_the_message_in_the_mailbox(dashboard_page: Shown):
    from playwright.sync_api import expect

    page = dashboard_page.page
    subject = "Hello from Chromium"
    compose_and_send(page, "bob@example.org", subject, "Sent by a button.", "mx1.example.org (mx)")
    transcript = page.locator(".smtplab-transcripts .smtplab-transcript").first
    expect(transcript).to_contain_text("250 2.0.0")
    expect(transcript).to_contain_text("client.example.com → mx1.example.org")
    expect(page.locator(".smtplab-compose-outcomes")).to_contain_text("bob@example.org: 250")
    expect(page.locator("button.smtplab-compose-send")).to_be_enabled()
    shoot(dashboard_page, "send")

    page.locator(".smtplab-dashboard-tabs .lm-TabBar-tab", has_text="Path").first.click()
    expect(page.locator(".smtplab-path svg.smtplab-journey")).to_be_visible()
    expect(page.locator(".smtplab-path svg.smtplab-journey")).to_contain_text("mailbox")
    expect(page.locator(".smtplab-path svg.smtplab-sequence")).to_contain_text("250 2.0.0")
    pane = page.locator(".smtplab-dashboard-tabs > .widget-tab-contents").bounding_box()
    for drawing in ("journey", "sequence"):  # scaled to the pane (viewBox, width 100%), not cut
        box = page.locator(f".smtplab-path svg.smtplab-{drawing}").bounding_box()
        assert pane is not None and box is not None
        assert pane["x"] <= box["x"] and box["x"] + box["width"] <= pane["x"] + pane["width"]
    shoot(dashboard_page, "path")

    page.locator(".smtplab-dashboard-tabs .lm-TabBar-tab", has_text="Mailbox").first.click()
    page.locator(".smtplab-mailbox-user select").select_option(label="bob@example.org")
    page.locator("button.smtplab-mailbox-refresh").click()
    expect(page.locator(".smtplab-mailbox-list option", has_text=subject)).to_have_count(1)
    expect(page.locator(".smtplab-mailbox-headers")).to_contain_text(subject)
    shoot(dashboard_page, "mailbox")


def test_a_wrong_address_is_explained_beside_the_to_field(dashboard_page: Shown):
    from playwright.sync_api import expect

    page = dashboard_page.page
    compose_and_send(page, "bob@@example.org", "Oops", "never sent", "mx1.example.org (mx)")
    error = page.locator(".smtplab-error-to")
    expect(error).to_contain_text("'bob@@example.org' is not an address like name@example.org")
    expect(page.locator(".smtplab-compose-status")).to_contain_text("Not sent")
    to_box = page.locator(".smtplab-compose-to").bounding_box()
    subject_box = page.locator(".smtplab-compose-subject").bounding_box()
    error_box = error.bounding_box()
    assert to_box is not None and subject_box is not None and error_box is not None
    assert (to_box["x"], to_box["width"]) == (subject_box["x"], subject_box["width"])  # aligned
    assert error_box["x"] >= to_box["x"] + to_box["width"] - 1  # to its right…
    middle = error_box["y"] + error_box["height"] / 2
    assert to_box["y"] <= middle <= to_box["y"] + to_box["height"]  # …on the same row
    shoot(dashboard_page, "invalid-address")


def test_no_notification_covers_the_page_no_news_question_no_update(dashboard_page: Shown):
    """The shipped settings (jupyter/settings/overrides.json) keep JupyterLab's toasts away.

    Without them JupyterLab asks "Would you like to get notified about official
    Jupyter news?" in a toast that stays until answered, emitted as soon as the
    app is restored: long before this page's kernel started and ran the notebook.
    """
    toasts = dashboard_page.page.locator(".Toastify__toast")
    assert toasts.all_inner_texts() == []


# -- what a reader sees without running, and the pictures for those who never do ----------------
@pytest.fixture(scope="module")
def jupyterlab(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A JupyterLab page and its server, serving an empty folder for each test to fill."""
    root = tmp_path_factory.mktemp("chapters")
    state = tmp_path_factory.mktemp("jupyter-state")
    ARTIFACTS.mkdir(exist_ok=True)
    with jupyter_server(root, state) as server:
        # Tall enough that the notebook shows the whole dashboard, mailbox and all.
        page = browser.new_page(viewport={"width": 1500, "height": 1600})
        page.set_default_timeout(WAIT_MS)
        try:
            yield page, server, root
        finally:
            page.close()


def test_a_committed_dashboard_output_says_to_re_run_its_cell(jupyterlab: Any):
    """Opened but not run (or after the kernel restarted), JupyterLab shows the output's text."""
    from playwright.sync_api import expect

    page, server, root = jupyterlab
    shutil.copy(ROOT / "notebooks" / "00-index.ipynb", root / "00-index.ipynb")
    page.goto(server.notebook_url("00-index.ipynb", workspace="committed"))
    page.wait_for_function(KERNEL_IDLE_JS)
    placeholder = page.locator(".jp-OutputArea-output", has_text="smtplab dashboard")
    expect(placeholder).to_have_text(
        "<smtplab dashboard: re-run this cell to show the live widget>"
    )


PANES = {  # the pane of each of the dashboard's tabs
    "Transcript": ".smtplab-transcripts",
    "Path": ".smtplab-path",
    "Mailbox": ".smtplab-mailbox",
}
WRITE_SCREENSHOTS = os.environ.get("SMTPLAB_SCREENSHOTS") == "write"


@pytest.mark.parametrize("shot", SHOTS, ids=[shot.chapter for shot in SHOTS])
def test_a_picture_of_each_chapters_dashboard(jupyterlab: Any, shot: DashboardShot):
    """Made from the real widget; written to notebooks/images/ by `make screenshots`."""
    from playwright.sync_api import expect

    page, server, root = jupyterlab
    name = f"shot-{shot.chapter}"
    write_notebook(root / name, list(chapter_cells(shot.chapter)))
    run_notebook(page, server, name, workspace=Path(shot.chapter).stem)
    board = page.locator(".smtplab-dashboard")
    board.wait_for(state="attached")
    board.scroll_into_view_if_needed()  # below the setup cell's output: JupyterLab hides it
    board.wait_for(state="visible")
    if shot.attachment is not None:
        filename, content = shot.attachment
        files = {"name": filename, "mimeType": "text/plain", "buffer": content}
        with page.expect_file_chooser() as chooser:
            page.locator(".smtplab-compose-attachment").click()
        chooser.value.set_files(files)
        expect(page.locator(".smtplab-dashboard")).to_contain_text(f"{filename} (")
    for field, value in (("cc", shot.cc), ("bcc", shot.bcc)):
        page.locator(f".smtplab-compose-{field} input").fill(value)
    compose_and_send(page, shot.to, shot.subject, shot.body, shot.via)
    expect(page.locator(".smtplab-compose-outcomes")).to_contain_text(f"{shot.to}: 250")
    page.locator(".smtplab-dashboard-tabs .lm-TabBar-tab", has_text=shot.tab).first.click()
    expect(page.locator(PANES[shot.tab])).to_contain_text(shot.ready)
    png = small_png(board.screenshot(animations="disabled", caret="hide"))
    assert len(png) <= PICTURE_LIMIT, f"{len(png)} bytes: crop or simplify the picture"
    target = shot.png if WRITE_SCREENSHOTS else ARTIFACTS / shot.png.name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(png)
    if WRITE_SCREENSHOTS:
        shot.stamp.write_text(screenshot_inputs(shot) + "\n", encoding="utf-8")
