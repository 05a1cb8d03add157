"""The package's import graph has no cycle (docs/architecture.md draws its layers).

The graph is built from the source's AST, not by importing it: every `import` and `from … import`
anywhere in a module (module level, inside functions, relative or absolute) is an edge, and so is
the implicit import of each package `__init__` on the way to a submodule (importing
`hf_negmerge.merging.base` runs `hf_negmerge/merging/__init__.py` first). Imports under
`if TYPE_CHECKING:` never run and are left out, and so are the lazy `__init__`s' `importlib` look-ups,
which run when a name is first used, never during an import. A late import that only hides a cycle
is therefore still reported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import hf_negmerge

PACKAGE = "hf_negmerge"
SOURCE = Path(hf_negmerge.__file__).resolve().parent


def package_modules(root: Path = SOURCE, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> source file, for every .py file under `root`."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(tree: ast.Module, module: str, is_package: bool) -> set[str]:
    """Absolute dotted names a module imports (a `from x import y` yields both x and x.y)."""
    names: set[str] = set()
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names)
        pending.extend(ast.iter_child_nodes(node))
    return names


def import_graph(modules: dict[str, Path] | None = None) -> dict[str, set[str]]:
    """module -> the package modules that importing it runs (directly)."""
    modules = package_modules() if modules is None else modules
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        own_ancestors = {module.rsplit(".", depth)[0] for depth in range(1, module.count(".") + 1)}
        targets: set[str] = set()
        for name in _imported_names(tree, module, path.name == "__init__.py"):
            parts = name.split(".")
            for end in range(2, len(parts) + 1):  # the package __init__s on the way, then the module
                prefix = ".".join(parts[:end])
                if prefix in modules and prefix not in own_ancestors:
                    targets.add(prefix)
        targets.discard(module)
        graph[module] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, …, a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(graph):
        if start in state:
            continue
        path, iterators = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while path:
            following = next(iterators[-1], None)
            if following is None:
                state[path.pop()] = 2
                iterators.pop()
            elif state.get(following) == 1:
                return [*path[path.index(following) :], following]
            elif following not in state:
                state[following] = 1
                path.append(following)
                iterators.append(iter(sorted(graph.get(following, ()))))
    return None


def layers(graph: dict[str, set[str]]) -> list[list[str]]:
    """Modules by layer: layer 0 imports no package module, layer k only modules of layers < k."""
    placed: dict[str, int] = {}
    while len(placed) < len(graph):
        ready = [m for m in graph if m not in placed and all(d in placed for d in graph[m])]
        assert ready, "layers() needs an acyclic graph"
        for module in ready:
            placed[module] = 1 + max((placed[d] for d in graph[module]), default=-1)
    return [sorted(m for m, level in placed.items() if level == k) for k in range(max(placed.values()) + 1)]


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 40 and "hf_negmerge.merging.accumulate" in graph  # the whole package was read
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_reports_late_relative_and_package_init_cycles(tmp_path: Path) -> None:
    """The checker itself, on a package written here with three kinds of cycle, then none."""
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "def f():\n    from .b import g  # late import\n",
        "b.py": "from pkg import a\n",
        "sub/__init__.py": "from . import inner\n",
        "sub/inner.py": "from ..c import x\n",
        "c.py": "import pkg.sub.other\n",  # runs pkg/sub/__init__ -> inner -> c
        "sub/other.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    graph = import_graph(package_modules(root, "pkg"))
    assert graph["pkg.sub.other"] == set()  # TYPE_CHECKING imports never run
    assert graph["pkg.c"] == {"pkg.sub", "pkg.sub.other"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]
    (root / "b.py").write_text("x = 1\n")
    graph = import_graph(package_modules(root, "pkg"))
    assert find_cycle(graph) == ["pkg.c", "pkg.sub", "pkg.sub.inner", "pkg.c"]
    (root / "c.py").write_text("x = 1\n")
    graph = import_graph(package_modules(root, "pkg"))
    assert find_cycle(graph) is None
    assert layers(graph)[0] == ["pkg", "pkg.b", "pkg.c", "pkg.sub.other"]
