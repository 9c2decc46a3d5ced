"""The packaging files agree with each other.

pyproject.toml (pip), environment.yml (Binder) and the CI/Makefile entry points
are edited by hand in different places; these tests catch them drifting apart.
They only read files: no network, no installs.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Packages conda brings along that are not runtime dependencies of smtplab.
CONDA_ONLY = {"python", "pip"}

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$")


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _lower_bounds(requirements: list[str]) -> dict[str, str | None]:
    """Map each normalised name to its `>=` lower bound (None when unbounded)."""
    bounds: dict[str, str | None] = {}
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement.split(";")[0])
        assert match, f"cannot parse requirement {requirement!r}"
        name, spec = match.groups()
        lower = re.search(r">=\s*([^,\s]+)", spec)
        bounds[_normalise(name)] = lower.group(1) if lower else None
    return bounds


def _conda_dependencies(text: str) -> list[str]:
    """The string items of the top-level `dependencies:` list of a conda env file."""
    items: list[str] = []
    in_dependencies = False
    for line in text.splitlines():
        stripped = line.split("#", 1)[0].rstrip()
        if not stripped:
            continue
        if not line[0].isspace() and not stripped.startswith("-"):
            in_dependencies = stripped == "dependencies:"
            continue
        if in_dependencies and stripped.lstrip().startswith("- "):
            item = stripped.lstrip()[2:].strip().strip("'\"")
            if not item.endswith(":"):  # skip a nested `- pip:` block header
                items.append(item)
    return items


def test_runtime_dependencies_match_binder_environment() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    pip_bounds = _lower_bounds(pyproject["project"]["dependencies"])
    conda_items = _conda_dependencies((ROOT / "environment.yml").read_text(encoding="utf-8"))
    conda_bounds = {
        name: bound for name, bound in _lower_bounds(conda_items).items() if name not in CONDA_ONLY
    }
    assert pip_bounds, "pyproject.toml lists no runtime dependencies"
    assert conda_bounds == pip_bounds


def test_environment_pins_python_311() -> None:
    items = _conda_dependencies((ROOT / "environment.yml").read_text(encoding="utf-8"))
    assert "python=3.11" in items


def test_postbuild_installs_package_without_dependencies() -> None:
    commands = [
        shlex.split(line, comments=True)
        for line in (ROOT / "postBuild").read_text(encoding="utf-8").splitlines()
    ]
    assert any({"pip", "install", "--no-deps", "."} <= set(cmd) for cmd in commands)


def _ci_packages() -> set[str]:
    """The Debian packages .ci/run names in its `needs` table."""
    text = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    table = re.search(r"^needs=\((.*?)^\)", text, re.MULTILINE | re.DOTALL)
    assert table, ".ci/run has no needs=( ... ) table"
    return set(re.findall(r'^\s*"([a-z0-9][a-z0-9.+-]*)\s', table.group(1), re.MULTILINE))


def test_ci_installs_every_package_binder_installs() -> None:
    """CI tests with what Binder users get (apt.txt), and more."""
    apt = {line.partition("#")[0].strip() for line in (ROOT / "apt.txt").read_text().splitlines()}
    assert {"swaks", "libnet-ssleay-perl", "chromium"} <= _ci_packages()
    assert apt - {""} <= _ci_packages()


def test_github_workflow_runs_the_ci_script() -> None:
    workflow = (ROOT / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8")
    assert re.search(r"^\s*run:\s*bash \.ci/run\s*$", workflow, re.MULTILINE)


def test_ci_script_runs_make_test() -> None:
    text = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^\s*(?:exec\s+)?make\s+test\s*$", text, re.MULTILINE)


def test_makefile_has_lab_and_test_targets() -> None:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.MULTILINE))
    assert {"lab", "test"} <= targets
