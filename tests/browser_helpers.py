"""A Jupyter server for browser tests, and waits on the real state of the app in the page.

Theory of operation
-------------------
:class:`JupyterServer` starts ``jupyter lab`` (or Notebook 7) from this
Python, on 127.0.0.1, port 0 (the OS picks a free port, so there is no race
with other tests), with a random token and throw-away config, runtime and
settings folders. It reads the server's log on a thread and is ready when the
log says where it listens: no polling, no sleeps. :meth:`JupyterServer.stop`
asks the server to shut down (which stops its kernels) and waits for it.

In the page, the app is exposed as ``window.jupyterapp``
(``expose_app_in_browser``); the helpers wait on its real state: the
notebook's session is ready and its kernel connected and idle before Run All,
then on the promise Run All returns. A Run All sent before the kernel is ready
can be dropped silently, which is why there is no fixed sleep anywhere.
"""

from __future__ import annotations

import json
import os
import queue
import re
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nbformat

START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
LISTENING = re.compile(r"http://127\.0\.0\.1:(\d+)/")

# The kernel status, read from the app: the notebook shown, its session ready,
# its kernel connected and idle.
KERNEL_IDLE_JS = """() => {
  const app = window.jupyterapp;
  const panel = app && app.shell.currentWidget;
  const context = panel && panel.sessionContext;
  const kernel = context && context.session && context.session.kernel;
  return Boolean(kernel && context.isReady && kernel.connectionStatus === 'connected'
                 && kernel.status === 'idle');
}"""
RUN_ALL_JS = """async () => {
  const app = window.jupyterapp;
  return await app.commands.execute('notebook:run-all-cells');
}"""


def write_notebook(path: Path, cells: list[str]) -> Path:
    """A notebook of code cells, for the Python 3 kernel of the server's environment."""
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(source) for source in cells],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
    )
    nbformat.write(notebook, path)
    return path


class JupyterServer:
    """``jupyter lab`` (``frontend="lab"``) or Notebook 7 (``"notebook"``) serving ``root``."""

    def __init__(self, root: Path, state: Path, frontend: str = "lab"):
        self.root = root
        self.frontend = frontend
        self.token = secrets.token_hex(16)
        self.port = 0
        self.log: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        app = "JupyterNotebookApp" if frontend == "notebook" else "LabApp"
        settings = state / "settings"
        (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True, exist_ok=True)
        # No "would you like news?" prompt covering the page.
        (
            settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        ).write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        self.command = [
            sys.executable,
            "-m",
            "notebook" if frontend == "notebook" else "jupyterlab",
            "--no-browser",
            "--ServerApp.open_browser=False",
            "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port=0",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={root}",
            "--ServerApp.terminals_enabled=False",
            f"--{app}.expose_app_in_browser=True",
            f"--{app}.user_settings_dir={settings}",
            f"--{app}.workspaces_dir={state / 'workspaces'}",
        ]
        if frontend == "lab":  # nothing from the Internet: no extension index, updates, news
            self.command += [
                "--LabApp.extension_manager=readonly",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                "--LabApp.news_url=",
            ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            self.command.append("--allow-root")
        self.env = {
            **os.environ,
            "JUPYTER_PLATFORM_DIRS": "1",
            "JUPYTER_CONFIG_DIR": str(state / "config"),
            "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
            "IPYTHONDIR": str(state / "ipython"),
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def notebook_url(self, name: str) -> str:
        where = "notebooks" if self.frontend == "notebook" else "lab/tree"
        return f"{self.url}/{where}/{name}?token={self.token}"

    def start(self) -> JupyterServer:
        self.process = subprocess.Popen(
            self.command,
            cwd=self.root,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        threading.Thread(target=self._read_log, name="jupyter-log", daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise TimeoutError(f"jupyter did not start in {START_TIMEOUT} s:\n{self.tail()}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"jupyter exited before listening:\n{self.tail()}")
            found = LISTENING.search(line)
            if found:
                self.port = int(found.group(1))
                return self

    def _read_log(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.log.append(line.rstrip("\n"))
            self._lines.put(line)
        self._lines.put(None)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log[-lines:])

    def stop(self) -> None:
        """Ask the server to shut down (it stops its kernels); wait; terminate if it hangs."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        if self.port:
            request = urllib.request.Request(
                f"{self.url}/api/shutdown",
                method="POST",
                headers={"Authorization": f"token {self.token}"},
            )
            try:
                with urllib.request.urlopen(request, timeout=5):
                    pass
            except OSError:
                pass  # already going away; terminate below if need be
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)
        if process.stdout is not None:
            process.stdout.close()


@contextmanager
def jupyter_server(root: Path, state: Path, frontend: str = "lab") -> Iterator[JupyterServer]:
    server = JupyterServer(root, state, frontend)
    try:
        yield server.start()
    finally:
        server.stop()


def run_notebook(page: Any, server: JupyterServer, name: str, timeout_ms: int = 60_000) -> None:
    """Open ``name``, wait until its kernel is idle, run every cell, wait until they ran."""
    page.goto(server.notebook_url(name))
    page.wait_for_function(KERNEL_IDLE_JS, timeout=timeout_ms)
    page.evaluate(RUN_ALL_JS)
    page.wait_for_function(KERNEL_IDLE_JS, timeout=timeout_ms)
