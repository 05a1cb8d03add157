"""Packaging: every file the package needs at run time is declared, so a built wheel has it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "hf_negmerge"


def _package_data_patterns() -> list[str]:
    """`package_data["hf_negmerge"]` read from setup.py's source (not from the installed copy)."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "package_data":
            return list(ast.literal_eval(node.value)["hf_negmerge"])
    raise AssertionError("setup.py has no package_data")


def _extension_sources() -> set[str]:
    """The C sources of setup.py's `Extension(...)` calls, relative to the package folder."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    sources = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Extension":
            for source in ast.literal_eval(node.args[1]):
                sources.add(Path(source).relative_to("src/hf_negmerge").as_posix())
    return sources


def _needs_package_data(path: Path) -> bool:
    """Non-Python files, and Python files outside a package (find_packages skips those folders).

    C sources and the extensions built from them travel through `ext_modules` instead.
    """
    if "__pycache__" in path.parts or path.suffix in (".pyc", ".c", ".so", ".pyd"):
        return False
    return path.suffix != ".py" or not (path.parent / "__init__.py").is_file()


def test_every_c_source_is_built_by_setup_py():
    sources = {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.c")}
    assert sources, "the package has its compiled merge kernel"
    assert sources == _extension_sources()


def test_every_data_file_is_declared_in_package_data():
    needed = {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and _needs_package_data(path)
    }
    declared = {
        path.relative_to(PACKAGE).as_posix()
        for pattern in _package_data_patterns()
        for path in PACKAGE.glob(pattern)
        if path.is_file()
    }
    assert needed, "the package ships data files (recipes, templates, prompt lists)"
    assert needed <= declared, f"not in setup.py package_data: {sorted(needed - declared)}"
