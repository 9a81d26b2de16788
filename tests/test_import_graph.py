"""The project's import graph: no circles, and data flows one way (dsr → studies → reports, never back).

Every import counts, the ones inside functions too: a lazy import hides a circle from Python, not from a reader.
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("dsr", "studies", "reports")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules `path` imports (a `from a.b import c` names a.b.c when that is a module, else a.b)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a non-module attribute: its module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    graph = {name: imported_modules(path, name, known) for name, path in modules.items()}
    # A package's __init__ importing its own sub-modules is how packages are built, not a circle
    return {name: {t for t in targets if not (modules[name].name == "__init__.py" and t.startswith(name + "."))}
            for name, targets in graph.items()}


def test_import_graph_has_no_circle() -> None:
    try:
        list(TopologicalSorter(import_graph()).static_order())
    except CycleError as error:
        pytest.fail(f"import circle: {' -> '.join(error.args[1])}")


@pytest.mark.parametrize("package, forbidden", [("dsr", ("studies", "reports", "ray")), ("reports", ("studies",))])
def test_layers_import_only_downstream(package: str, forbidden: tuple[str, ...]) -> None:
    """The core never imports the runner, the reports or Ray; the reports never import the runner."""
    offenders = []
    for path in sorted((REPO / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            offenders += [f"{path.relative_to(REPO)}:{node.lineno} imports {n}" for n in names
                          if n.split(".")[0] in forbidden]
    assert not offenders, "\n".join(offenders)


def test_checker_finds_a_circle(tmp_path: Path) -> None:
    """The checker itself: two modules importing each other (one lazily) form a circle."""
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from a import x\n")
    known = {"a", "b"}
    graph = {"a": imported_modules(tmp_path / "a.py", "a", known),
             "b": imported_modules(tmp_path / "b.py", "b", known)}
    with pytest.raises(CycleError):
        list(TopologicalSorter(graph).static_order())
