"""The import contract (docs/ARCHITECTURE.md): one-way layers, no circles, no private names across modules.

Layers, bottom to top; a module may import its own package and the packages of lower layers only:

    errors < spec < distributed < data < quant < estimators < design < hw < flows < cli / bench

The check reads every ``import`` of every module under ``bnhw/`` (including imports inside functions, which
are still dependencies) with :mod:`ast`; ``make lint`` runs it too (``python -m tests.test_architecture``).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "bnhw"

#: rank of each top-level part of the package (a module's part: ``bnhw.<part>...``)
LAYERS: dict[str, float] = {
    "errors": 0,
    "spec": 1,
    "distributed": 2,
    "data": 3,
    "quant": 4,
    "estimators": 5,
    "design": 6,
    "hw": 7,
    "flows": 8,
    "cli": 9, "bench": 9, "__main__": 10,
    "": 1.5,                    # bnhw/__init__.py: the version and the spec and error types, re-exported
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """``(imported module, imported names, line)`` of every import in ``path``, relative ones resolved."""
    mod = module_name(path)
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            out.extend((a.name, [], node.lineno) for a in node.names)
    return out


def part(mod: str) -> str:
    bits = mod.split(".")
    return bits[1] if len(bits) > 1 else ""


def violations(root: Path = PKG) -> tuple[list[str], list[str], list[list[str]]]:
    """``(upward imports, private names imported from another module, circles between parts)``."""
    upward, private = [], []
    graph: dict[str, set[str]] = defaultdict(set)
    for path in sorted(root.rglob("*.py")):
        mod = module_name(path)
        src = part(mod)
        for target, names, line in imports(path):
            if not (target == "bnhw" or target.startswith("bnhw.")):
                continue
            where = f"{path.relative_to(ROOT)}:{line}"
            dst = part(target)
            if target == "bnhw" and names:          # ``from bnhw import distributed``
                dst = names[0] if names[0] in LAYERS else ""
            if src not in LAYERS:
                upward.append(f"{where}: bnhw.{src} is in no layer (add it to LAYERS in tests/test_architecture.py)")
                continue
            if dst not in LAYERS:
                upward.append(f"{where}: imports {target}, which is in no layer")
                continue
            if dst != src:
                graph[src].add(dst)
                if LAYERS[dst] > LAYERS[src] or (LAYERS[dst] == LAYERS[src] and dst):
                    upward.append(f"{where}: {mod} (layer {src}) imports {target} (layer {dst}): upward")
            for n in names:
                if n.startswith("_") and not n.startswith("__") and target != mod:
                    private.append(f"{where}: {mod} imports the private name {n} of {target}")
    return upward, private, _circles(graph)


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, seen = [], set()

    def visit(node: str, stack: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in stack:
                cycle = stack[stack.index(nxt):] + [nxt]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    found.append(cycle)
            elif len(stack) < len(LAYERS):
                visit(nxt, stack + [nxt])

    for n in sorted(graph):
        visit(n, [n])
    return found


def test_every_part_of_the_package_has_a_layer():
    parts = {part(module_name(p)) for p in PKG.rglob("*.py")}
    assert parts <= set(LAYERS), parts - set(LAYERS)


def test_no_upward_import_no_private_name_no_circle():
    upward, private, circles = violations()
    assert not upward, "\n".join(upward)
    assert not private, "\n".join(private)
    assert not circles, circles


def test_the_check_catches_an_upward_import_and_a_private_name(tmp_path):
    """A planted violation is found and named (the contract can fail)."""
    fake = tmp_path / "bnhw"
    (fake / "spec").mkdir(parents=True)
    (fake / "hw").mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "spec" / "__init__.py").write_text("from ..hw.folding import maximize_fps\n")
    (fake / "hw" / "__init__.py").write_text("from ..spec.arch import _check_keys\nfrom ..spec import x\n")
    global ROOT
    saved = ROOT
    ROOT = tmp_path
    try:
        upward, private, circles = violations(fake)
    finally:
        ROOT = saved
    assert upward == ["bnhw/spec/__init__.py:1: bnhw.spec (layer spec) imports bnhw.hw.folding (layer hw): upward"]
    assert private == ["bnhw/hw/__init__.py:1: bnhw.hw imports the private name _check_keys of bnhw.spec.arch"]
    assert circles == [["hw", "spec", "hw"]]


if __name__ == "__main__":          # `make lint`
    up, priv, circ = violations()
    for line in up + priv + [" -> ".join(c) + ": a circle" for c in circ]:
        print(line)
    print(f"import contract: {len(up)} upward, {len(priv)} private, {len(circ)} circles")
    sys.exit(1 if up or priv or circ else 0)


pytestmark = pytest.mark.filterwarnings("ignore")
