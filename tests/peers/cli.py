"""The ``smtplab`` command line as a peer: run as a subprocess, as a user would."""

from __future__ import annotations

import subprocess
import sys

import pytest


def up_refuses(*arguments: str) -> str:
    """Run ``smtplab up ARGUMENTS``: it must exit with status 2 before starting anything, with
    one line on stderr, which is returned."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "smtplab.cli", "up", "--no-pop-imap", *arguments],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"smtplab up {' '.join(arguments)} started a lab instead of refusing")
    assert done.returncode == 2 and done.stdout == "", done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    return line
