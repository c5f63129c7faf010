"""The house rules that keep the code livable, checked on the source itself.

- No import cycles between edgert's modules (a cycle hidden by a function-local import
  counts too).
- No function-local imports of edgert's own modules: an import inside a function hides a
  dependency (usually a cycle). Optional heavy dependencies may stay lazy; they are not
  edgert's modules.

The graph is read from the source with ``ast`` (nothing is imported), with ``cli/`` and
``converters/`` mapped into the ``edgert`` namespace as pyproject.toml installs them.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: edgert modules that need an optional extra at import time: the CLI imports them lazily, so
#: that every other command works without the extra (the import itself names the extra)
NEEDS_EXTRA = {"edgert.serve.app": "serve"}
PACKAGES = {"edgert": ROOT / "edgert", "edgert.cli": ROOT / "cli", "edgert.converters": ROOT / "converters"}


def _modules() -> Dict[str, Path]:
    out: Dict[str, Path] = {}
    for prefix, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([prefix, *parts])
            if prefix == "edgert" and parts and parts[0] in ("cli", "converters"):
                continue
            out[name] = path
    return out


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> List[str]:
    """The edgert modules an import statement in ``module`` names."""
    if node.level:
        base = module.split(".")
        is_package = MODULES[module].name == "__init__.py"
        base = base if is_package else base[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    names = []
    for alias in node.names:
        candidate = f"{target}.{alias.name}"
        names.append(candidate if candidate in MODULES else target)
    return [n for n in names if n in MODULES]


def _imports(module: str) -> Tuple[Set[str], List[Tuple[int, str]]]:
    """(every edgert module imported, [(line, name) of function-local ones])."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found: Set[str] = set()
    local: List[Tuple[int, str]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            targets: List[str] = []
            if isinstance(child, ast.ImportFrom):
                targets = _resolve(module, child)
            elif isinstance(child, ast.Import):
                targets = [a.name for a in child.names if a.name in MODULES]
            for target in targets:
                found.add(target)
                if in_function and target not in NEEDS_EXTRA:
                    local.append((child.lineno, target))
            visit(child, inside)

    visit(tree, False)
    return found - {module}, local


GRAPH = {name: _imports(name) for name in MODULES}


def _cycle_from(start: str) -> Optional[List[str]]:
    """A shortest import path from ``start`` back to itself, if one exists."""
    frontier: List[List[str]] = [[start]]
    seen = {start}
    while frontier:
        path = frontier.pop(0)
        for nxt in sorted(GRAPH[path[-1]][0]):
            if nxt == start:
                return path + [start]
            if nxt not in seen and _is_module_edge(path[-1], nxt):
                seen.add(nxt)
                frontier.append(path + [nxt])
    return None


def _is_module_edge(source: str, target: str) -> bool:
    # importing a package's submodule runs the package's __init__ first, which is an edge of
    # its own; a submodule importing its own package's __init__ is how Python works, not a cycle
    return not source.startswith(target + ".")


def test_the_graph_sees_the_package():
    assert "edgert.runtime" in MODULES and "edgert.cli.main" in MODULES and "edgert.converters.pipeline" in MODULES
    assert "edgert.request" in GRAPH["edgert.runtime"][0]  # the parser follows relative imports


def test_no_import_cycles():
    cycles = set()
    for name in MODULES:
        cycle = _cycle_from(name)
        if cycle is not None:
            cycles.add(" -> ".join(cycle))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_function_local_imports_of_edgert_modules(module):
    local = GRAPH[module][1]
    assert not local, f"{MODULES[module].relative_to(ROOT)} imports edgert modules inside functions: " + ", ".join(
        f"line {line}: {name}" for line, name in local)
