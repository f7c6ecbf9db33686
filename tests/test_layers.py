"""Imports only go down: a subpackage of ``ssr`` or ``sweeps`` imports only the layers below it.

Each package is a stack of subpackages (docs/architecture.md §1), from the bottom up; its
top-level modules sit above them all. An import of a higher layer, anywhere in a module (at the
top, inside a function or under ``TYPE_CHECKING``), fails here with the module, the import and
both layers named.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = {
    "ssr": ["files", "config", "data", "train", "method", "deploy", "measure", "run", "commands"],
    "sweeps": ["contract", "runtime", "record", "tracking", "schedule", "define"],
}
TOP = {
    "ssr": ["__init__", "__main__", "cli"],
    "sweeps": ["__init__", "run", "driver", "trial", "progress"],
}


def rank(name: str) -> int:
    """Layer of module ``name`` (``ssr.method.search`` -> index of ``method``; top: above all)."""
    pkg, _, rest = name.partition(".")
    sub = rest.split(".")[0]
    return LAYERS[pkg].index(sub) if sub in LAYERS[pkg] else len(LAYERS[pkg])


def imports(name: str, source: str, is_package: bool) -> set[str]:
    """Modules (or ``pkg.name`` of ``from pkg import name``) that ``source`` imports."""
    package = name if is_package else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base in LAYERS:  # from ssr import method: the subpackage is what is imported
                out.update(f"{base}.{a.name}" for a in node.names)
            else:
                out.add(base)
    return out


def upward(name: str, source: str, is_package: bool = False) -> list[str]:
    """The imports of module ``name`` that go up a layer of its own package."""
    pkg = name.split(".")[0]
    return sorted(
        f"{name} (layer {rank(name)}) imports {m} (layer {rank(m)})"
        for m in imports(name, source, is_package)
        if m.split(".")[0] == pkg and rank(m) > rank(name)
    )


def modules(pkg: str) -> dict[str, Path]:
    out = {}
    for path in sorted((REPO / pkg).rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def test_an_upward_import_is_found() -> None:
    assert upward("ssr.config.errors", "from ssr.method.search import run_search")
    assert upward("ssr.train.loop", "def f():\n    import ssr.run.pipeline")
    assert upward("ssr.data", "from ssr import commands", is_package=True)
    assert upward("sweeps.contract.params", "from ..record import results")
    assert not upward("ssr.method.search", "from ssr.config import SearchConfig")
    assert not upward("ssr.cli", "from ssr.commands import Command")
    assert not upward("sweeps.define.spec", "from ssr.run.pipeline import run_pipeline")


@pytest.mark.parametrize("pkg", sorted(LAYERS))
def test_imports_only_go_down(pkg: str) -> None:
    bad = [
        line
        for name, path in modules(pkg).items()
        for line in upward(name, path.read_text(), path.name == "__init__.py")
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("pkg", sorted(LAYERS))
def test_every_module_sits_in_a_layer(pkg: str) -> None:
    loose = sorted(p.stem for p in (REPO / pkg).glob("*.py") if p.stem not in TOP[pkg])
    assert not loose, f"{pkg}/: {loose} belong in one of the subpackages {LAYERS[pkg]}"
    subs = sorted(p.name for p in (REPO / pkg).iterdir() if (p / "__init__.py").exists())
    assert set(subs) <= set(LAYERS[pkg]), f"{pkg}/: a subpackage outside the layers: {subs}"
