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
_CLAUSE = re.compile(r"(>=|<=|==|!=|~=|<|>)\s*([^,\s]+)")
# What Binder adds from the `test` extra, so a Binder terminal can validate the notebooks.
BINDER_VALIDATION = {"pytest", "nbval"}


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _bounds(requirements: list[str]) -> dict[str, dict[str, str]]:
    """Map each normalised name to its version bounds, e.g. {">=": "1.4.6", "<": "1.5"}."""
    bounds: dict[str, dict[str, str]] = {}
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement.split(";")[0])
        assert match, f"cannot parse requirement {requirement!r}"
        name, spec = match.groups()
        clauses = [clause.strip() for clause in spec.split(",") if clause.strip()]
        parsed = [_CLAUSE.fullmatch(clause) for clause in clauses]
        assert all(parsed), f"cannot parse the version bounds of {requirement!r}"
        bounds[_normalise(name)] = {m.group(1): m.group(2) for m in parsed if m}
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


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _binder_bounds() -> dict[str, dict[str, str]]:
    items = _conda_dependencies((ROOT / "environment.yml").read_text(encoding="utf-8"))
    # Conda's own pins (python=3.11) are not pip requirements.
    return _bounds([item for item in items if re.split(r"[=<>!~\s]", item)[0] not in CONDA_ONLY])


def test_binder_environment_has_the_runtime_dependencies_with_the_same_bounds() -> None:
    project = _pyproject()["project"]
    runtime = _bounds(project["dependencies"])
    assert runtime, "pyproject.toml lists no runtime dependencies"
    extras = project["optional-dependencies"]
    lab_extra = _bounds(extras["lab"])
    test_extra = _bounds(extras["test"])
    validation = {name: test_extra[name] for name in BINDER_VALIDATION}
    assert _binder_bounds() == runtime | lab_extra | validation


def test_the_notebooks_own_libraries_are_an_extra_that_lab_and_test_install() -> None:
    """``pip install smtplab`` in an application's venv must not pull in JupyterLab."""
    project = _pyproject()["project"]
    runtime = _bounds(project["dependencies"])
    lab_extra = _bounds(project["optional-dependencies"]["lab"])
    assert {"jupyterlab", "matplotlib", "aiosmtplib"} <= lab_extra.keys()
    assert not lab_extra.keys() & runtime.keys()
    assert "smtplab[lab]" in project["optional-dependencies"]["test"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "install -q -e '.[lab]'" in makefile


def test_aiosmtpd_is_held_to_the_tested_minor_series() -> None:
    """smtplab/smtp/_aiosmtpd.py uses aiosmtpd's private names (tests/test_aiosmtpd_canary.py)."""
    assert _bounds(_pyproject()["project"]["dependencies"])["aiosmtpd"] == {
        ">=": "1.4.6",
        "<": "1.5",
    }


def test_bounds_are_read_with_their_upper_limits() -> None:
    assert _bounds(["a>=1.4.6,<1.5", "b >= 2", "c[x]", "d==1.0; python_version < '3.12'"]) == {
        "a": {">=": "1.4.6", "<": "1.5"},
        "b": {">=": "2"},
        "c": {},
        "d": {"==": "1.0"},
    }


def test_environment_pins_python_311() -> None:
    items = _conda_dependencies((ROOT / "environment.yml").read_text(encoding="utf-8"))
    assert "python=3.11" in items


def _lines(name: str) -> list[list[str]]:
    """A shell file's lines as words, comments dropped."""
    text = (ROOT / name).read_text(encoding="utf-8")
    return [shlex.split(line, comments=True) for line in text.splitlines()]


def test_postbuild_installs_package_without_dependencies() -> None:
    assert any({"pip", "install", "--no-deps", "."} <= set(cmd) for cmd in _lines("postBuild"))


def test_binder_installs_the_jupyterlab_settings_make_lab_uses() -> None:
    """The same overrides.json, where Binder's JupyterLab reads its defaults."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    found = re.search(r"^LAB_SETTINGS\s*:?=\s*\$\(CURDIR\)/(\S+)\s*$", makefile, re.MULTILINE)
    assert found, "the Makefile names no LAB_SETTINGS folder"
    overrides = f"{found.group(1)}/overrides.json"
    assert (ROOT / overrides).is_file()
    target = "${NB_PYTHON_PREFIX}/share/jupyter/lab/settings/"
    assert ["cp", overrides, target] in _lines("postBuild")


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
