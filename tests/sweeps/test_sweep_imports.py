"""The shape of the sweeps package: no import cycle, a leaf protocol, imports without effects."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "sweeps"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path) -> set[str]:
    """Modules of the project that ``path`` imports anywhere (top level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
    return {m for m in out if m in MODULES and m != name}


GRAPH = {name: imported(name, path) for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (a list of modules, first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_graph_sees_every_import_form() -> None:
    # from sweeps.contract.protocol import ...
    assert "sweeps.contract.protocol" in GRAPH["sweeps.record.results"]
    assert "sweeps.tracking" in GRAPH["sweeps.driver"]  # from sweeps import tracking
    assert "sweeps.schedule.searchers" in GRAPH["sweeps.define.definition"]  # inside a method
    assert "sweeps.tracking.runs" in GRAPH["sweeps.tracking.records"]


def test_no_import_cycle_in_sweeps() -> None:
    cycle = find_cycle(GRAPH)
    assert cycle is None, " -> ".join(cycle or [])


def test_protocol_is_a_leaf() -> None:
    tree = ast.parse(MODULES["sweeps.contract.protocol"].read_text())
    ours = ("ssr", "sweeps", "analysis")
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if not node.level else ["(relative)"]
        for n in names:
            assert n.split(".")[0] not in (*ours, "(relative)"), n


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_are_small(name: str) -> None:
    lines = MODULES[name].read_text().count("\n")
    assert lines <= 420, f"{name}: {lines} lines; split it (one idea per module)"


def test_each_module_imports_first_and_run_has_no_import_effects() -> None:
    """In a fresh interpreter: every module imports when it is the first of ours to load, and
    importing sweeps.run sets no environment variable and adds no sys.path entry."""
    script = f"""
import importlib, json, os, sys
names = {sorted(MODULES)!r}
failed = {{}}
for name in names:
    for m in [m for m in sys.modules if m == "sweeps" or m.startswith("sweeps.")]:
        del sys.modules[m]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = repr(exc)
for m in [m for m in sys.modules if m == "sweeps" or m.startswith("sweeps.")]:
    del sys.modules[m]
env, path = dict(os.environ), list(sys.path)
importlib.import_module("sweeps.run")
effects = {{
    "env": sorted(set(os.environ.items()) ^ set(env.items())),
    "path": [p for p in sys.path if p not in path],
}}
print(json.dumps({{"failed": failed, "effects": effects}}))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["failed"] == {}
    assert out["effects"] == {"env": [], "path": []}
