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


def test_ci_script_runs_make_test_all() -> None:
    text = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^\s*(?:exec\s+)?make\s+test-all\s*$", text, re.MULTILINE)


def test_the_supported_pythons_agree_everywhere() -> None:
    """requires-python, the classifiers (what `make test-all` tests), the GitHub matrix and
    Binder's pin name the same Pythons."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    prefix = "Programming Language :: Python :: 3."
    minors = sorted(int(c.removeprefix(prefix)) for c in project["classifiers"] if prefix in c)
    low, high = re.fullmatch(r">=3\.(\d+),<3\.(\d+)", project["requires-python"]).groups()
    assert minors == list(range(int(low), int(high)))
    workflow = (ROOT / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8")
    matrix = re.search(r"^\s*python-version:\s*\[([^\]]*)\]", workflow, re.MULTILINE)
    assert matrix, "the workflow has no python-version matrix"
    assert [v.strip().strip("'\"") for v in matrix.group(1).split(",")] == [
        f"3.{m}" for m in minors
    ]
    items = _conda_dependencies((ROOT / "environment.yml").read_text(encoding="utf-8"))
    assert f"python=3.{minors[0]}" in items  # the primary: strict nbval, committed outputs


def test_makefile_has_lab_test_and_test_all_targets() -> None:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.MULTILINE))
    assert {"lab", "test", "test-all"} <= targets
