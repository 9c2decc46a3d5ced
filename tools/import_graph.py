"""The package's import graph: which layer imports which, read from the source.

    python tools/import_graph.py            # layer → the layers it imports, and the module count
    python tools/import_graph.py --modules  # every module → the smtplab modules it imports

Only imports at a module's top level count as dependencies. An import inside a function
(the lab's ``ui()`` reaching up to the widgets, say) is deferred on purpose, and one under
``if TYPE_CHECKING:`` is for the type checker: both are listed as ``(lazy)`` and never make
a cycle at import time. tests/test_layers.py checks the same
graph: no cycles between modules, and every layer imports only the layers below it
(:data:`ORDER`).
"""

from __future__ import annotations

import argparse
import ast
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "smtplab"

#: The architecture (README, "How it works"), lowest first: a layer may import only the
#: layers on the lines before its own; layers on one line know nothing of each other.
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


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    """``smtplab.smtp.client`` → ``smtp``; a top-level module is its own layer."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "smtplab"


def imports(path: Path) -> tuple[set[str], set[str]]:
    """The smtplab modules ``path`` imports at its top level, and those it imports lazily."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    eager: set[str] = set()
    lazy: set[str] = set()
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            base = node.module
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        found = {name for name in names if name.split(".")[0] == "smtplab"}
        if not found:
            continue
        # Inside a function, or under `if TYPE_CHECKING:`: not a dependency at import time.
        (eager if id(node) in top_level else lazy).update(found)
    return eager, lazy


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Module → the smtplab modules it imports (eagerly, lazily), resolved to real modules."""
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    eager: dict[str, set[str]] = {}
    lazy: dict[str, set[str]] = {}
    for module, path in paths.items():
        now, later = imports(path)
        eager[module] = {name for name in map(_resolve(paths), now) if name and name != module}
        lazy[module] = {name for name in map(_resolve(paths), later) if name and name != module}
    return eager, lazy


def _resolve(paths: dict[str, Path]) -> Callable[[str], str | None]:
    def resolve(name: str) -> str | None:
        """``smtplab.protocol.rules.parse_path`` → ``smtplab.protocol.rules``."""
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    return resolve


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first walk (each reported once, from its first module)."""
    found: list[list[str]] = []
    state: dict[str, int] = defaultdict(int)  # 0 new, 1 on the path, 2 done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state[nxt] == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif state[nxt] == 0:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if state[node] == 0:
            visit(node)
    return found


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Every import of a module from a layer not below its own (:data:`ORDER`)."""
    return sorted(
        f"{module} imports {target}"
        for module, targets in edges.items()
        for target in targets
        if layer_of(target) != layer_of(module)
        and RANK.get(layer_of(target), len(ORDER)) >= RANK.get(layer_of(module), -1)
    )


def layers(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """Layer → the other layers its modules import."""
    result: dict[str, set[str]] = defaultdict(set)
    for module, targets in edges.items():
        result[layer_of(module)] |= {layer_of(t) for t in targets} - {layer_of(module)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", action="store_true", help="module by module")
    args = parser.parse_args()
    eager, lazy = graph()
    if args.modules:
        for module in sorted(eager):
            later = sorted(lazy[module] - eager[module])
            print(module)
            for target in sorted(eager[module]):
                print(f"    {target}")
            for target in later:
                print(f"    {target} (lazy)")
    else:
        counts: dict[str, int] = defaultdict(int)
        for module in eager:
            counts[layer_of(module)] += 1
        eager_layers, lazy_layers = layers(eager), layers(lazy)
        for layer in sorted(counts, key=lambda name: (RANK.get(name, len(ORDER)), name)):
            below = ", ".join(sorted(eager_layers[layer])) or "-"
            up = sorted(lazy_layers[layer] - eager_layers[layer])
            later = f"   (lazy: {', '.join(up)})" if up else ""
            print(f"{layer:<11} {counts[layer]:>2} modules  imports {below}{later}")
    loops, up = cycles(eager), upward(eager)
    print(f"cycles between modules: {len(loops)}")
    for loop in loops:
        print("    " + " → ".join(loop))
    print(f"imports of a layer not below: {len(up)}")
    for edge in up:
        print(f"    {edge}")


if __name__ == "__main__":
    main()
