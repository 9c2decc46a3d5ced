"""``make test`` on every Python here that smtplab supports: ``make test-all``.

The supported minor versions are the ``Programming Language :: Python :: 3.x``
classifiers of pyproject.toml. Every interpreter found of those versions is
tested, each in a virtual environment of its own (``.venv-<version>``), so Debian's
own /usr/bin/python3 (3.11.2 on Debian 12) and pyenv's 3.11.7 both count. Each run
is the whole of ``make test``, strict nbval included: the committed outputs (made
with the Python environment.yml pins for Binder) reproduce on every supported
Python, because the lab's client writes its own commands (chapter 10's plain
smtplib lines are sanitized).

Interpreters come from PATH (``python3``, ``python3.X``), /usr/bin/python3 and
pyenv's versions folder, or, when ``PYTHONS`` is set, from that list of
interpreter paths only (the GitHub workflow tests one per job). Prints one line
per Python with its outcome and time; exits 1 if any failed.

Usage: ``python3 tools/test_matrix.py`` (from the repository root).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = "import sys, ensurepip, venv; print('%d.%d.%d' % sys.version_info[:3], sys.executable)"


def supported_minors() -> list[str]:
    """``["3.11", "3.12", "3.13"]``, from pyproject.toml's classifiers."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    prefix = "Programming Language :: Python :: "
    versions = [c.removeprefix(prefix) for c in project["classifiers"]]
    return [version for version in versions if re.fullmatch(r"3\.\d+", version)]


def candidates(minors: list[str]) -> list[str]:
    if os.environ.get("PYTHONS"):
        return os.environ["PYTHONS"].split()
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    on_path = [shutil.which(name) for name in ["python3", *(f"python{m}" for m in minors)]]
    # pyenv's shims run only the version pyenv has selected: take its versions instead
    found = [p for p in on_path if p and not Path(p).is_relative_to(pyenv / "shims")]
    found.append("/usr/bin/python3")
    return found + sorted(str(p) for p in (pyenv / "versions").glob("*/bin/python3"))


def interpreters(minors: list[str]) -> dict[str, str]:
    """Version (``3.11.2``) → interpreter, one per version, only supported minors
    with venv and ensurepip (Debian ships them in python3-venv, which .ci/run installs)."""
    versions: dict[str, str] = {}
    for path in candidates(minors):
        probe = subprocess.run([path, "-c", PROBE], capture_output=True, text=True, check=False)
        if probe.returncode != 0:
            print(f"test-all: skipping {path}: no venv/ensurepip, or not a Python", flush=True)
            continue
        version, executable = probe.stdout.split(maxsplit=1)
        if version.rpartition(".")[0] in minors:
            versions.setdefault(version, executable.strip())
    return dict(sorted(versions.items(), key=lambda item: [int(n) for n in item[0].split(".")]))


def main() -> int:
    minors = supported_minors()
    found = interpreters(minors)
    if not found:
        print(f"test-all: no Python {', '.join(minors)} found", flush=True)
        return 1
    results = []
    for version, python in found.items():
        print(f"\n=== test-all: Python {version} ({python})", flush=True)
        started = time.monotonic()
        done = subprocess.run(
            ["make", "test", f"PYTHON={python}", f"VENV=.venv-{version}"],
            cwd=ROOT,
            check=False,
        )
        results.append((version, done.returncode, time.monotonic() - started))
    print("\n=== test-all: summary")
    for version, code, seconds in results:
        outcome = "passed" if code == 0 else f"FAILED (exit {code})"
        print(f"Python {version:<8} {outcome:<18} {seconds / 60:5.1f} min")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
