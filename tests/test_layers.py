"""The package's layers: dependencies point down, and no two modules import each other.

The order is the architecture (README, "Architecture"): a layer may import only the layers
listed before it. tools/import_graph.py prints the same graph for a reader.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
assert _spec and _spec.loader
import_graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(import_graph)

#: Lowest first. Layers on one line know nothing of each other.
ORDER = [
    {"errors", "moved"},
    {"protocol"},
    {"paths", "world"},
    {"record"},
    {"dns", "tls"},
    {"smtp"},
    {"mailstore", "senderauth"},
    {"queue"},
    {"roles"},
    {"view"},
    {"lab"},
    {"cli", "smtplab"},
]
RANK = {layer: rank for rank, layers in enumerate(ORDER) for layer in layers}


def test_every_layer_has_a_place_in_the_order() -> None:
    eager, _ = import_graph.graph()
    assert {import_graph.layer_of(module) for module in eager} <= RANK.keys()


def test_no_module_imports_one_that_imports_it() -> None:
    eager, _ = import_graph.graph()
    assert import_graph.cycles(eager) == []


def test_each_layer_imports_only_the_layers_below_it() -> None:
    eager, _ = import_graph.graph()
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in eager.items()
        for target in targets
        if RANK[import_graph.layer_of(target)] >= RANK[import_graph.layer_of(module)]
        and import_graph.layer_of(target) != import_graph.layer_of(module)
    )
    assert upward == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert import_graph.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [
        ["a", "b", "c", "a"]
    ]

