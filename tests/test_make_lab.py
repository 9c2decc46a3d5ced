"""``make lab``'s own command line starts JupyterLab, as root too, with the shipped settings.

The command is the one ``make -n lab`` prints for this environment, run as it
is plus ``--no-browser``, a free port and a token; the test waits until the
server listens, asks it over HTTP, and shuts it down. Run as root (containers,
CI), it proves ``--allow-root`` is there: without it Jupyter exits with
"Running as root is not recommended".
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator

import pytest
from peers.jupyter import ROOT, JupyterServer, make_lab_command, running

NOTIFICATION_PLUGIN = "@jupyterlab/apputils-extension:notification"


def get_json(server: JupyterServer, path: str) -> dict:
    request = urllib.request.Request(
        f"{server.url}{path}", headers={"Authorization": f"token {server.token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def make_lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """The server of ``make lab``'s command line, answering."""
    command = make_lab_command()
    assert command[1:2] == ["lab"] and "notebooks/00-index.ipynb" in command, command
    state = tmp_path_factory.mktemp("jupyter-state")
    with running(JupyterServer(command, ROOT, state)) as server:
        yield server


def test_make_lab_starts_jupyterlab_for_this_user_and_root_too(make_lab_server: JupyterServer):
    assert get_json(make_lab_server, "/api/status")["started"]
    assert "Running as root is not recommended" not in "\n".join(make_lab_server.log)
    if os.geteuid() == 0:
        assert "--allow-root" in make_lab_server.command


def test_make_lab_serves_the_shipped_settings_no_news_and_no_update_check(
    make_lab_server: JupyterServer,
):
    """jupyter/settings/overrides.json: JupyterLab neither asks about news nor checks updates."""
    schema = get_json(make_lab_server, f"/lab/api/settings/{NOTIFICATION_PLUGIN}")["schema"]
    defaults = {name: spec["default"] for name, spec in schema["properties"].items()}
    assert defaults["fetchNews"] == "false", "JupyterLab would ask about Jupyter news"
    assert defaults["checkForUpdates"] is False, "JupyterLab would check for updates online"
