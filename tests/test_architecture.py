"""The layering we keep (docs/design.md): each module imports only from the layers below it, in both packages.

The import graph is read from the source with ``ast`` -- module-level and function-level imports alike (a lazy import
is still a dependency), ``if TYPE_CHECKING:`` blocks excepted (annotations only) -- so the test sees what the
interpreter would, without importing anything.  It fails on an upward import, on a cycle, on a module no layer
names (a new module must be placed, and docs/design.md updated), on ``neuro_lpc`` importing ``circuits``, and on a
function of the core longer than ``MAX_FUNCTION_LINES``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 80

# lowest first; a module may import from its own layer (no cycles) and from those below.  A name ending in ".*"
# places a whole sub-package.
LAYERS = {
    "neuro_lpc": [
        ["errors"],
        ["validation", "likelihoods", "checkpoint"],
        ["distributed", "record", "data", "theory", "gain", "dynamics"],
        ["networks", "model", "models", "objectives"],
        ["chain"],
        ["fast"],
        ["langevin"],
        ["preconditioning", "config"],
        ["metrics.*"],
        ["train"],
        ["cli"],
        ["__init__"],
    ],
    "circuits": [
        ["_checks"],
        ["timescales"],
        ["noise.*"],
        ["config"],
        ["units"],
        ["theory", "diagnostics.*"],
        ["bound"],
        ["run_weights", "kernels_linear"],
        ["kernels_general", "run_records"],
        ["run"],
        ["stability"],
        ["_loop"],
        ["integrate"],
        ["fast"],
        ["circuit"],
        ["local_update"],
        ["modes"],
        ["learn"],
        ["analysis", "plots"],
        ["brian.*"],
        ["study.*"],
        ["sweep_dynamics"],
        ["sweep_devices"],
        ["sweep"],
        ["cli"],
        ["__init__"],
    ],
}


def _modules(package: str, root: Path = ROOT) -> dict[str, Path]:
    """{dotted name relative to the package: path} of every module of the package."""
    base = root / package
    out = {}
    for p in sorted(base.rglob("*.py")):
        rel = p.relative_to(base).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(path: Path, package: str, module: str) -> set[str]:
    """Absolute dotted names this module imports (``pkg.a.b``; ``from x import y`` gives x.y when x.y is a module)."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    here = [package] + ([] if module == "__init__" else module.split("."))
    if not is_pkg:
        here = here[:-1]           # the package a plain module lives in
    found: set[str] = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = here[:len(here) - (child.level - 1)]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module
                found.update(f"{mod}.{a.name}" for a in child.names)
            visit(child)

    visit(tree)
    return found


def _layer_of(package: str, name: str) -> int | None:
    """The layer index of module ``name`` (dotted, relative to the package)."""
    for i, layer in enumerate(LAYERS[package]):
        for entry in layer:
            if entry.endswith(".*"):
                stem = entry[:-2]
                if name == stem or name.startswith(stem + "."):
                    return i
            elif name == entry:
                return i
    return None


def _graph(package: str, root: Path = ROOT) -> dict[str, set[str]]:
    mods = _modules(package, root)
    graph = {}
    for name, path in mods.items():
        deps = set()
        for imp in _imports(path, package, name):
            if imp == package:
                deps.add("__init__")
            elif imp.startswith(package + "."):
                rel = imp[len(package) + 1:]
                while rel and rel not in mods:       # "noise.arrays.AnalogArray" -> "noise.arrays"
                    rel = rel.rpartition(".")[0]
                rel = rel or "__init__"              # "circuits.Circuit": the package's namespace
                if rel != name:
                    deps.add(rel)
        graph[name] = deps
    return graph


@pytest.mark.parametrize("package", ["neuro_lpc", "circuits"])
def test_every_module_is_placed_in_a_layer(package):
    unplaced = [m for m in _modules(package) if _layer_of(package, m) is None]
    assert not unplaced, f"place these {package} modules in tests/test_architecture.LAYERS and docs/design.md: {unplaced}"


@pytest.mark.parametrize("package", ["neuro_lpc", "circuits"])
def test_no_module_imports_from_a_layer_above_it(package):
    graph = _graph(package)
    upward = []
    for mod, deps in graph.items():
        for dep in deps:
            lm, ld = _layer_of(package, mod), _layer_of(package, dep)
            if lm is not None and ld is not None and ld > lm:
                upward.append(f"{mod} (layer {lm}) imports {dep} (layer {ld})")
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


@pytest.mark.parametrize("package", ["neuro_lpc", "circuits"])
def test_the_import_graph_has_no_cycle(package):
    graph = _graph(package)
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if state.get(d) is None:
                dfs(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m)


def test_neuro_lpc_never_imports_circuits():
    offenders = [name for name, path in _modules("neuro_lpc").items()
                 if any(i == "circuits" or i.startswith("circuits.") for i in _imports(path, "neuro_lpc", name))]
    assert not offenders, f"neuro_lpc is the lower package; these modules import circuits: {offenders}"


def test_the_architecture_test_sees_an_upward_import(tmp_path):
    """The checker itself: a lazy, function-level upward import is found (and a TYPE_CHECKING one is not)."""
    pkg = tmp_path / "circuits"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "units.py").write_text("def f():\n    from .circuit import Circuit\n")
    (pkg / "bound.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .circuit import C\n")
    (pkg / "circuit.py").write_text("from .units import f\n")
    graph = _graph("circuits", tmp_path)
    assert graph["units"] == {"circuit"}
    assert graph["bound"] == set()
    assert graph["circuit"] == {"units"}


@pytest.mark.parametrize("package", ["neuro_lpc", "circuits"])
def test_no_function_of_the_core_is_longer_than_80_lines(package):
    long = []
    for name, path in _modules(package).items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{package}/{path.relative_to(ROOT / package)}::{node.name} ({n} lines)")
    assert not long, "split these functions:\n" + "\n".join(long)
