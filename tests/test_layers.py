"""The house's layering, kept true without any tool: each folder of `harness/` imports only
itself and the folders below it, along the data flow, and no module imports itself back
through a circle. Imports inside functions count too (a lazy import is still an arrow)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "harness"

#: Bottom to top. A module in one layer may import its own layer and any layer before it.
LAYERS = (
    "errors",     # the one usage exception and message helper
    "numerics",   # dtypes, cases, reference, metrics, tolerances, statuses, the judge
    "store",      # columns, run folder, case files, JSON
    "inputs",     # regimes, strategies, corpus, probe, replay, suite
    "adapters",   # the contract, the registry, workers
    "run",        # runner, search, summary, progress
    "bench",      # measure, bandwidth, runner, table
    "gate",       # check, baseline, checkreport
    "testing",    # comparison, outcomes, mismatch, known failures, pytest plugin
    "report",     # content -> figures/text -> markdown/html -> write
    "cli",        # the command line
    "__init__",   # the public API
)


def layer_of(module: str) -> str:
    """`harness.run.runner` -> "run"; `harness.errors` -> "errors"; `harness` -> "__init__"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def harness_imports(path: Path) -> set[str]:
    """Every harness module (or package) `path` imports, at any depth of its code."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "harness"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "harness":
                continue
            for alias in node.names:  # `from harness.run import runner` names a module
                sub = f"{base}.{alias.name}"
                found.add(sub if (HARNESS.parent / sub.replace(".", "/")).with_suffix(".py").exists() else base)
    return found


MODULES = {module_name(p): p for p in sorted(HARNESS.rglob("*.py"))}


def test_every_harness_module_lives_in_a_declared_layer():
    assert MODULES, "no harness modules found"
    assert {layer_of(m) for m in MODULES} <= set(LAYERS)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_imports_only_its_own_layer_and_the_layers_below(module):
    mine = LAYERS.index(layer_of(module))
    above = sorted(i for i in harness_imports(MODULES[module]) if i != "harness" and LAYERS.index(layer_of(i)) > mine)
    assert not above, f"{module} ({layer_of(module)}) imports from a layer above it: {above}"


def test_no_import_circle_between_harness_modules():
    graph = {m: {i for i in harness_imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}
    # A package's __init__ is imported with any of its modules; an edge into a package is an
    # edge into its __init__, which must not import back either: that is what this checks.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_layer_check_sees_a_planted_upward_import(tmp_path):
    # The check itself can fail: a numerics module importing the runner is caught.
    planted = HARNESS / "numerics" / "_planted_for_test.py"
    planted.write_text("def f():\n    from harness.run import runner\n")
    try:
        imports = harness_imports(planted)
    finally:
        planted.unlink()
    assert "harness.run.runner" in imports
    assert LAYERS.index(layer_of("harness.run.runner")) > LAYERS.index("numerics")


def test_implementations_import_only_the_contract_numerics_and_errors():
    allowed = ("harness.adapters", "harness.numerics", "harness.errors")
    for path in sorted((ROOT / "implementations").glob("*.py")):
        bad = sorted(i for i in harness_imports(path) if not i.startswith(allowed))
        assert not bad, f"{path.name} imports {bad}"
