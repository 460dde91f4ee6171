"""No import cycles in the package, counting imports inside functions (lazy imports) too.

Every module's ``import`` / ``from ... import`` statements are read with :mod:`ast` (top level and nested in
functions, classes, ``if TYPE_CHECKING`` blocks), resolved to the package's modules, and the graph's strongly
connected components are listed: any component with more than one module is a cycle. A package's implicit import
of its parent ``__init__`` is not an edge (Python runs it first, whatever the child imports).
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "musclelab"


def module_files(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``package``."""
    out = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(package: Path) -> dict[str, list[tuple[str, str | None]]]:
    """module -> ``(module named, name imported from it or None)`` for every import of the package's own modules
    anywhere in the file (relative imports resolved)."""
    out: dict[str, list[tuple[str, str | None]]] = {}
    root = package.name
    for mod, path in module_files(package).items():
        here = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        found: list[tuple[str, str | None]] = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(a.name, None) for a in node.names if a.name.split(".")[0] == root]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[:len(here.split(".")) - (node.level - 1)]
                    name = ".".join(base + ([node.module] if node.module else []))
                else:
                    name = node.module or ""
                if name.split(".")[0] == root:
                    found += [(name, a.name) for a in node.names]
        out[mod] = found
    return out


def import_graph(package: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere in its file."""
    mods = module_files(package)

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, found in imports(package).items():
        deps = {resolve(f"{name}.{attr}" if attr and f"{name}.{attr}" in mods else name)  # a submodule, or the module
                for name, attr in found}
        graph[mod] = {d for d in deps if d is not None and d != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return sorted(out)


def _describe(graph: dict[str, set[str]], comp: list[str]) -> str:
    edges = [f"{a} -> {b}" for a in comp for b in sorted(graph[a]) if b in comp]
    return " <-> ".join(comp) + " (" + "; ".join(edges) + ")"


def test_the_package_has_no_import_cycles_lazy_imports_included() -> None:
    graph = import_graph(PACKAGE)
    assert len(graph) > 100  # every module was read
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(_describe(graph, c) for c in found)


def test_a_cycle_through_a_lazy_import_is_found(tmp_path: Path) -> None:
    pkg = tmp_path / "musclelab"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("from musclelab.data.b import x\n")
    (pkg / "data" / "b.py").write_text("def f():\n    from . import c\n")
    (pkg / "data" / "c.py").write_text("def g():\n    import musclelab.data.a\n")
    (pkg / "cli.py").write_text("from musclelab.data import a\n")
    graph = import_graph(pkg)
    assert graph["musclelab.cli"] == {"musclelab.data.a"}
    assert cycles(graph) == [["musclelab.data.a", "musclelab.data.b", "musclelab.data.c"]]


def private_imports(package: Path) -> list[str]:
    """``module: from other import _name`` for every private name a module takes from a module of another
    package (modules of one package may share their helpers; callers elsewhere use the public functions)."""
    files = module_files(package)
    out = []
    for mod, found in imports(package).items():
        here = mod if files[mod].name == "__init__.py" else mod.rpartition(".")[0]
        for name, attr in found:
            private = bool(attr) and attr.startswith("_") and not attr.startswith("__")
            if private and here not in (name, name.rpartition(".")[0]):
                out.append(f"{mod}: from {name} import {attr}")
    return sorted(out)


def test_no_module_imports_private_helpers_of_another_package() -> None:
    """E.g. ``predict.py`` uses the readers' public decoding functions, not ``readers.base._short_reason``."""
    found = private_imports(PACKAGE)
    assert not found, "private helpers imported across packages:\n" + "\n".join(found)
