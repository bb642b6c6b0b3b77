"""The package's modules import each other without a cycle, counting the imports made inside
functions too: each room can be read, and changed, from the bottom up. Only imports under
TYPE_CHECKING (annotations) are not counted."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "clawguard"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _nodes(body: list[ast.stmt]) -> list[ast.AST]:
    """Every node below ``body``, but not below an ``if TYPE_CHECKING:``."""
    found: list[ast.AST] = []
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            found += [n for child in node.orelse for n in ast.walk(child)]
            continue
        found += list(ast.walk(node))
    return found


def _imports(path: Path) -> set[str]:
    """The clawguard modules ``path`` imports, anywhere in it."""
    tree = ast.parse(path.read_text(), str(path))
    here = _module(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in _nodes(tree.body):
        for child in [node]:
            if isinstance(child, ast.Import):
                found |= {a.name for a in child.names if a.name.startswith("clawguard")}
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package
                    for _ in range(child.level - 1):
                        base = base.rpartition(".")[0]
                    target = f"{base}.{child.module}" if child.module else base
                else:
                    target = child.module or ""
                if not target.startswith("clawguard"):
                    continue
                found.add(target)
                for alias in child.names:  # "from . import hooks" imports a module
                    if (PACKAGE.parent / Path(*f"{target}.{alias.name}".split("."))).with_suffix(".py").exists():
                        found.add(f"{target}.{alias.name}")
    return found - {here}


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {t for t in _imports(path) if t in modules} for name, path in modules.items()}


def test_no_module_imports_itself_through_others() -> None:
    graph = _graph()
    # A package imports its own submodules (targets registers its kinds); a submodule importing
    # its package's __init__ for names it re-exports is not a cycle of rooms.
    edges = {m: {t for t in ts if not m.startswith(t + ".") and not t.startswith(m + ".")} for m, ts in graph.items()}
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            cycle = [*path[path.index(node) :], node]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if node in done:
            return
        for target in sorted(edges.get(node, ())):
            visit(target, [*path, node])
        done.add(node)

    for module in sorted(edges):
        visit(module, [])


def test_the_walk_sees_real_imports() -> None:
    graph = _graph()
    assert "clawguard.context" in graph["clawguard.daemon"]
    assert "clawguard.api" not in graph["clawguard.daemon"]
