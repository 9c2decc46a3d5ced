"""A Jupyter server for browser tests, and waits on the real state of the app in the page.

Theory of operation
-------------------
:class:`JupyterServer` runs the command line ``make lab`` runs (read with
``make -n lab`` for this Python's environment, so the tests see the project's
shipped JupyterLab settings and ``--allow-root`` exactly as a user does) on
port 0 (the OS picks a free port, so there is no race with other tests), with a
random token and throw-away config, runtime and settings folders.
:meth:`JupyterServer.for_browser` serves a test's folder instead of opening the
index chapter, in JupyterLab or Notebook 7. The server's log is read on a
thread; it is ready when the log says where it listens and the port accepts
connections (Jupyter Server logs its URL just before it binds).
:meth:`JupyterServer.stop` asks the server to shut down (which stops its
kernels) and waits for it.

In the page, the app is exposed as ``window.jupyterapp``
(``expose_app_in_browser``); the helpers wait on its real state: the
notebook's session is ready and its kernel connected and idle before Run All,
then on the promise Run All returns. A Run All sent before the kernel is ready
can be dropped silently, which is why there is no fixed sleep anywhere.

The pictures of the dashboard that the chapters show above their ``lab.ui()``
cells are described here (:data:`SHOTS`), made by tests/test_browser.py and
written to notebooks/images/ by ``make screenshots``, each beside the hash of
what it was made from (:func:`screenshot_inputs`): tests/test_static_read.py
compares that hash with the current one, so a picture cannot silently go stale.
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import re
import secrets
import shlex
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from smtplab.view.widgets.compose import AUTOMATIC

ROOT = Path(__file__).resolve().parents[2]
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


def make_lab_command() -> list[str]:
    """The command line ``make lab`` runs, for the environment of this Python (``make -n``)."""
    # Not a make inside `make test`: its MAKEFLAGS could say -j, -k or -n, and its
    # MAKELEVEL makes make print "Entering directory".
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    done = subprocess.run(
        ["make", "-n", "--no-print-directory", "lab", f"VENV={sys.prefix}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    # -n prints what would run; the set-up steps (if the venv is out of date) come first.
    return shlex.split(done.stdout.strip().splitlines()[-1])


class JupyterServer:
    """``command`` (a Jupyter server's command line) run in ``cwd``, on a free port of 127.0.0.1."""

    def __init__(self, command: list[str], cwd: Path, state: Path, frontend: str = "lab"):
        self.cwd = cwd
        self.frontend = frontend
        self.token = secrets.token_hex(16)
        self.port = 0
        self.log: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.command = [
            *command,
            "--no-browser",
            "--ServerApp.port=0",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
        ]
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

    @classmethod
    def for_browser(cls, root: Path, state: Path, frontend: str = "lab") -> JupyterServer:
        """``make lab``'s server in JupyterLab (``"lab"``) or Notebook 7 (``"notebook"``),
        serving ``root`` rather than opening the index chapter, with the app exposed to the
        page and throw-away user settings and workspaces."""
        jupyter, _lab, *rest = make_lab_command()
        options = [arg for arg in rest if arg.startswith("-")]  # not the chapter it opens
        app = "JupyterNotebookApp" if frontend == "notebook" else "LabApp"
        command = [
            jupyter,
            frontend,
            *options,
            f"--ServerApp.root_dir={root}",
            "--ServerApp.terminals_enabled=False",
            f"--{app}.expose_app_in_browser=True",
            f"--{app}.user_settings_dir={state / 'settings'}",
            f"--{app}.workspaces_dir={state / 'workspaces'}",
        ]
        if frontend == "lab":  # nothing from the Internet: no extension index, updates, news
            command += [
                "--LabApp.extension_manager=readonly",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                "--LabApp.news_url=",
            ]
        return cls(command, root, state, frontend)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def notebook_url(self, name: str, workspace: str | None = None) -> str:
        """Where ``name`` opens; in JupyterLab, in its own ``workspace`` (then no other
        notebook opened before comes back with it) if given."""
        where = "notebooks" if self.frontend == "notebook" else "lab/tree"
        if workspace is not None and self.frontend == "lab":
            where = f"lab/workspaces/{workspace}/tree"
        return f"{self.url}/{where}/{name}?token={self.token}"

    def start(self) -> JupyterServer:
        self.process = subprocess.Popen(
            self.command,
            cwd=self.cwd,
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
                self._wait_until_accepting(deadline)
                return self

    def _wait_until_accepting(self, deadline: float) -> None:
        """Jupyter Server logs its URL before its event loop binds the port: wait for that."""
        assert self.process is not None
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"jupyter exited before listening:\n{self.tail()}") from None
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(
                        f"jupyter did not listen in {START_TIMEOUT} s:\n{self.tail()}"
                    ) from None
                time.sleep(0.02)

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
def running(server: JupyterServer) -> Iterator[JupyterServer]:
    try:
        yield server.start()
    finally:
        server.stop()


def jupyter_server(
    root: Path, state: Path, frontend: str = "lab"
) -> AbstractContextManager[JupyterServer]:
    """A browser test's server (:meth:`JupyterServer.for_browser`), stopped at the end."""
    return running(JupyterServer.for_browser(root, state, frontend))


def run_notebook(
    page: Any,
    server: JupyterServer,
    name: str,
    timeout_ms: int = 60_000,
    workspace: str | None = None,
) -> None:
    """Open ``name`` (in ``workspace``), wait until its kernel is idle, run every cell, wait
    until they ran."""
    page.goto(server.notebook_url(name, workspace))
    page.wait_for_function(KERNEL_IDLE_JS, timeout=timeout_ms)
    page.evaluate(RUN_ALL_JS)
    page.wait_for_function(KERNEL_IDLE_JS, timeout=timeout_ms)


# -- pictures of the dashboard, for readers who do not run the cells -----------------------------
SCREENSHOTS = ROOT / "notebooks" / "images"
VIEW_CODE = ROOT / "smtplab" / "view"  # the widgets and the drawings the Path tab shows
UI_CELL = "lab.ui()"
PICTURE_LIMIT = 150_000  # bytes of one picture of the dashboard


@dataclass(frozen=True)
class DashboardShot:
    """How the picture above a chapter's ``lab.ui()`` cell is made.

    The browser tests run the chapter's cell that makes the lab and its ``lab.ui()``
    cell in JupyterLab, type this into the form, submit ``via``, open ``tab`` and wait
    until its pane shows ``ready`` (the message has arrived), then photograph the
    dashboard. ``attachment`` is a file's ``(name, content)`` to attach first.
    """

    chapter: str
    to: str
    subject: str
    body: str
    tab: str
    ready: str
    cc: str = ""
    bcc: str = ""
    attachment: tuple[str, bytes] | None = None
    via: str = AUTOMATIC  # a "Submit to" choice, as labelled

    @property
    def png(self) -> Path:
        return SCREENSHOTS / f"dashboard-{Path(self.chapter).stem}.png"

    @property
    def stamp(self) -> Path:
        """Beside the PNG: the hash of what it was made from (:func:`screenshot_inputs`)."""
        return self.png.with_suffix(".sha256")


def chapter_cells(chapter: str) -> tuple[str, str]:
    """The sources of ``chapter``'s cell that makes ``lab`` and of its ``lab.ui()`` cell."""
    notebook = nbformat.read(ROOT / "notebooks" / chapter, as_version=4)
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    ui = next(i for i, source in enumerate(code) if source.strip() == UI_CELL)
    setup = next(source for source in code[:ui] if re.search(r"^lab = Lab\(", source, re.M))
    return setup, code[ui]


def screenshot_inputs(shot: DashboardShot) -> str:
    """A hash of everything the picture shows: the view's code, the two cells, the shot."""
    digest = hashlib.sha256()
    for path in sorted(VIEW_CODE.rglob("*.py")):
        name = path.relative_to(VIEW_CODE).as_posix()
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    for source in chapter_cells(shot.chapter):
        digest.update(source.encode() + b"\0")
    digest.update(repr(shot).encode())
    return digest.hexdigest()


def small_png(png: bytes) -> bytes:
    """``png`` in at most 256 colours (a screenshot of a form has few), optimised."""
    from PIL import Image  # matplotlib's dependency: installed with the lab

    image = Image.open(io.BytesIO(png)).convert("RGB")
    reduced = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    reduced.save(out, format="PNG", optimize=True)
    return out.getvalue()


#: The picture above each chapter's lab.ui() cell; `make screenshots` writes them.
SHOTS = [
    DashboardShot(
        "00-index.ipynb",
        to="bob@example.org",
        subject="Hello from the dashboard",
        body="Hi Bob!\nSent with the Send button.",
        tab="Transcript",
        ready="221 2.0.0",
    ),
    DashboardShot(
        "03-envelope.ipynb",
        to="bob@example.org",
        cc="carol@example.org",
        bcc="postmaster@example.com",
        subject="Minutes",
        body="Bob and Carol see each other; nobody sees the Bcc.",
        tab="Path",
        ready="mailbox",
    ),
    DashboardShot(
        "04-message.ipynb",
        to="bob@example.org",
        subject="The notes, attached",
        body="Hi Bob,\n\nthe notes are attached.\n.a line that starts with a dot",
        tab="Mailbox",
        ready="The notes, attached",
        attachment=("notes.txt", b"Agenda\n1. SMTP\n2. MIME\n"),
        via="mx1.example.org (mx)",
    ),
]
