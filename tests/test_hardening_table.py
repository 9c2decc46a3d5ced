"""docs/hardening.md cannot drift from the tests it cites.

Each row of its tables names tests by id (``tests/test_x.py::test_y``). Every id must
name a test that exists, and every test marked ``hardening`` (``@pytest.mark.hardening``
on the test, or in its module's ``pytestmark``) must be named in a row. The marks, not
the files, say which tests are hardening cases: they sit beside the module each tests.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).parent
TABLE = TESTS.parent / "docs" / "hardening.md"
#: A test id in a row: ``tests/test_session.py::test_name`` with an optional ``[params]``.
TEST_ID = re.compile(r"`(tests/test_\w+\.py)::(test_\w+)(?:\[[^\]`]*\])?`")
HARDENING = "pytest.mark.hardening"


def defined_tests(tree: ast.Module) -> list[ast.FunctionDef]:
    return [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]


def module_marks(tree: ast.Module) -> list[str]:
    """The marks in ``pytestmark = ...`` (one mark or a list of them), as source text."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "pytestmark" for target in node.targets
        ):
            value = node.value
            marks = value.elts if isinstance(value, ast.List | ast.Tuple) else [value]
            return [ast.unparse(mark) for mark in marks]
    return []


def hardening_tests(tree: ast.Module) -> set[str]:
    whole_module = HARDENING in module_marks(tree)
    return {
        test.name
        for test in defined_tests(tree)
        if whole_module or HARDENING in map(ast.unparse, test.decorator_list)
    }


def test_every_test_named_in_the_hardening_table_exists():
    """Each row's test ids name tests that exist; each hardening test is in a row."""
    rows = [
        line for line in TABLE.read_text().splitlines() if line.startswith("|") and "::" in line
    ]
    assert len(rows) >= 30
    trees = {f"tests/{path.name}": ast.parse(path.read_text()) for path in TESTS.glob("test_*.py")}
    named: set[tuple[str, str]] = set()
    for row in rows:
        ids = TEST_ID.findall(row)
        assert ids, f"a row without a test id: {row}"
        for path, name in ids:
            assert path in trees, f"{path} is in the table but is not a test module"
            defined = {test.name for test in defined_tests(trees[path])}
            assert name in defined, f"{path}::{name} is in the table but not in the tests"
        named.update(ids)
    marked = {(path, name) for path, tree in trees.items() for name in hardening_tests(tree)}
    assert len(marked) >= 60, f"only {len(marked)} tests are marked hardening"
    missing = sorted(f"{path}::{name}" for path, name in marked - named)
    assert missing == [], f"marked hardening but not in {TABLE.name}: {missing}"
