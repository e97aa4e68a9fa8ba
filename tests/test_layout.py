"""The import graph of the project, read from the source: packages in layers, no circles, public API only.

Every ``import`` statement counts, also those inside functions and under ``TYPE_CHECKING``: an import
moved into a function still ties two modules together.

Layers, bottom up: ``latency_models`` and ``spaces.compress`` import nothing of the project; ``spaces``
imports ``spaces.compress`` and, from ``latency_models``, only the kernel vocabulary and the segment
predictor; ``search`` uses all three; ``experiments`` use the packages' public names only.
"""

from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("latency_models", "spaces", "search")
#: What ``spaces`` may take from ``latency_models``: the kernel vocabulary, and the segment predictor that
#: ``spaces.CompiledLatency`` (``space.latency_evaluator(predictor)``) feeds with its segments' kernels.
SPACES_FROM_LATENCY = {"Kernel", "BITS", "QLINEAR_BITS", "kernels_from_onnx", "LatencyPredictor", "SegmentPredictor"}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for top in (*PACKAGES, "experiments"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if "results" not in path.parts:
                found[_module_name(path)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module ``name`` refers to (a module, or the package holding a name), or None."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> list[tuple[str, set[str]]]:
    """``(imported project module, names taken from it)`` for every import statement of ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name)
                if target:
                    out.append((target, set()))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in MODULES:  # ``from pkg import submodule``
                    out.append((sub, set()))
                    continue
                target = _resolve(base)
                if target:
                    out.append((target, {alias.name}))
    return out


def _package(module: str) -> str:
    return "spaces.compress" if module.startswith("spaces.compress") else module.split(".")[0]


GRAPH = {m: _imports(m) for m in MODULES}


def test_the_modules_were_found():
    assert {"latency_models._kernel", "spaces._base", "spaces.compress._prune", "search._run"} <= set(MODULES)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _package(m) in ("latency_models", "spaces.compress")))
def test_bottom_layers_import_nothing_else_of_the_project(module):
    own = _package(module)
    others = sorted({t for t, _ in GRAPH[module] if _package(t) != own})
    assert not others, f"{module} imports {others}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _package(m) == "spaces"))
def test_spaces_take_only_the_kernel_vocabulary_from_latency_models(module):
    for target, names in GRAPH[module]:
        assert _package(target) in ("spaces", "spaces.compress", "latency_models"), f"{module} imports {target}"
        if _package(target) == "latency_models":
            assert target == "latency_models" and names <= SPACES_FROM_LATENCY, \
                f"{module} takes {sorted(names)} from {target}; allowed: {sorted(SPACES_FROM_LATENCY)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _package(m) == "search"))
def test_search_imports_no_experiment(module):
    assert all(_package(t) != "experiments" for t, _ in GRAPH[module])


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("experiments")))
def test_experiments_use_public_names_only(module):
    for target, names in GRAPH[module]:
        if _package(target) == "experiments":
            continue
        private = [p for p in target.split(".") if p.startswith("_")] + [n for n in names if n.startswith("_")]
        assert not private, f"{module} imports the private {target} {sorted(names)}"


def test_no_import_cycles_between_modules():
    edges = {m: sorted({t for t, _ in GRAPH[m] if t != m}) for m in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in edges[m]:
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("package", [*PACKAGES, "spaces.compress"])
def test_public_names_exist(package):
    mod = importlib.import_module(package)
    missing = [name for name in mod.__all__ if not hasattr(mod, name)]
    assert not missing, f"{package}.__all__ names {missing}, which it does not define"
