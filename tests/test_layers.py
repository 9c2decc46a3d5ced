"""The package's layers: dependencies point down, and no two modules import each other.

The order is the architecture (README, "How it works"; ``ORDER`` in tools/import_graph.py,
which prints the same graph for a reader): a layer may import only the layers below it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
assert _spec and _spec.loader
import_graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(import_graph)

RANK = import_graph.RANK


def test_every_layer_has_a_place_in_the_order() -> None:
    eager, _ = import_graph.graph()
    assert {import_graph.layer_of(module) for module in eager} <= RANK.keys()


def test_no_module_imports_one_that_imports_it() -> None:
    eager, _ = import_graph.graph()
    assert import_graph.cycles(eager) == []


def test_each_layer_imports_only_the_layers_below_it() -> None:
    eager, _ = import_graph.graph()
    assert import_graph.upward(eager) == []


def test_an_upward_import_is_found() -> None:
    edges = {"smtplab.protocol.rules": {"smtplab.lab"}, "smtplab.lab": {"smtplab.protocol.rules"}}
    assert import_graph.upward(edges) == ["smtplab.protocol.rules imports smtplab.lab"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert import_graph.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [
        ["a", "b", "c", "a"]
    ]

