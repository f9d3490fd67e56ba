"""The import graph of ``src/vidflow`` (module-level imports): no circles, and no layer imports
one above it (``config`` never imports the runtime, ``ops`` never imports ``sources``, the
parts never import ``serve``/``fleet``/``bench``/``cli``). Imports inside functions are lazy by
design and not counted."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "src" / "vidflow"


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = ["vidflow", *p.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    g: dict[str, set[str]] = {}
    for m, p in mods.items():
        pkg = m.split(".") if p.name == "__init__.py" else m.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.parse(p.read_text()).body:
            if isinstance(node, ast.ImportFrom):
                base = ".".join(pkg[:len(pkg) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else (node.module or "")
                deps.update(t for t in [base, *(f"{base}.{a.name}" for a in node.names)] if t in mods)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in mods)
        g[m] = deps - {m}
    return g


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    assert _cycles(_graph()) == []


def test_no_import_runs_back_up_a_layer():
    top = ("vidflow.serve", "vidflow.fleet", "vidflow.bench", "vidflow.cli")
    parts = ("vidflow.ops", "vidflow.engines", "vidflow.heads", "vidflow.sources", "vidflow.stages", "vidflow.sinks")
    bad = []
    for a, deps in _graph().items():
        for b in deps:
            if a.startswith("vidflow.config") and (b.startswith("vidflow.runtime") or b == "vidflow.pipeline"):
                bad.append((a, b))
            if a.startswith("vidflow.ops") and b.startswith("vidflow.sources"):
                bad.append((a, b))
            if a.startswith(parts) and (b.startswith(top) or b.startswith("vidflow.runtime")):
                bad.append((a, b))
    assert bad == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
