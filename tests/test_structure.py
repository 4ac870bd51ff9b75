"""The package's shape: no import cycle and no import from a layer above.

Every ``speech_hands`` import counts, including imports inside functions (only those under
``if TYPE_CHECKING:`` are left out): a cycle hidden in a function still ties two modules together.
The layers, lowest first, are :data:`LAYERS`; a module may import its own layer or one below.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "speech_hands"

#: Lowest first. A module belongs to the longest prefix listed.
LAYERS: list[tuple[str, ...]] = [
    (
        "speech_hands.errors",
        "speech_hands.types",
        "speech_hands.text",
        "speech_hands.jsonl",
        "speech_hands.progress",
        "speech_hands.formats",
    ),
    ("speech_hands.checkpointing",),
    (
        "speech_hands.audio",
        "speech_hands.cues",
        "speech_hands.prompts",
        "speech_hands.metrics",
        "speech_hands.config",
        "speech_hands.cli_options",
    ),
    ("speech_hands.reflection.base", "speech_hands.reflection.decision", "speech_hands.reflection.action_tokens"),
    ("speech_hands.backends",),
    ("speech_hands.reflection", "speech_hands.datasets"),
    ("speech_hands.graphs",),
    ("speech_hands.tracing",),
    ("speech_hands.assembly",),
    ("speech_hands.agent",),
    ("speech_hands.evals",),
    ("speech_hands.training",),
    ("speech_hands.service",),
    ("speech_hands.cli", "speech_hands"),
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(sub) for sub in ast.walk(node))
    return skipped


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports."""
    modules = _modules()
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("speech_hands"):
                # ``from pkg import sub`` imports the module ``pkg.sub``; ``from mod import name`` imports ``mod``
                targets = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                    for a in node.names
                ]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                if target in modules and target != name:
                    edges[name].add(target)
    return edges


def layer_of(module: str) -> int:
    best, depth = None, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and prefix.count(".") > depth:
                best, depth = index, prefix.count(".")
    assert best is not None, f"{module} is in no layer; add it to LAYERS"
    return best


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_function_level_imports():
    edges = import_graph()
    # cli imports the agent inside its command functions only
    assert (
        "speech_hands.agent" in edges["speech_hands.cli"]
        or "speech_hands.agent.speech_hands" in edges["speech_hands.cli"]
    )


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_no_module_imports_from_a_layer_above():
    upward = [
        f"{src} (layer {layer_of(src)}) imports {dst} (layer {layer_of(dst)})"
        for src, targets in sorted(import_graph().items())
        for dst in sorted(targets)
        if layer_of(dst) > layer_of(src)
    ]
    assert upward == []


def test_a_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", sorted(_modules()))
def test_every_module_has_a_layer_and_a_docstring(module):
    layer_of(module)
    tree = ast.parse(_modules()[module].read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"{module} has no module docstring saying what it is for"
