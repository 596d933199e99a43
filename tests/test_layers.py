"""The layout's arrows point down: read every import in bertkit (function-level ones included: an import
inside a function to dodge a cycle is still a cycle) and fail on a cycle, on a module importing a layer
above its own, and on anything importing cli. The layers are docs/architecture.md's table."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bertkit import families

PKG = Path(__file__).resolve().parent.parent / "bertkit"

# lowest first; a module may import its own layer and the ones before it
LAYERS = [
    ("base", {"bertkit.errors", "bertkit.version", "bertkit.flags"}),
    ("io", {"bertkit.io"}),
    ("records", {"bertkit.families"}),  # one record per member: data, below config
    ("core", {"bertkit.config", "bertkit.model", "bertkit.heads", "bertkit.weights", "bertkit.checkpoint", "bertkit.crf",
              "bertkit.generate", "bertkit.tokenizer", "bertkit.kernels", "bertkit.packing", "bertkit.memory", "bertkit.seq2seq", "bertkit.modern", "bertkit.deberta", "bertkit.rotary", "bertkit.relative"}),
    ("data", {"bertkit.data"}),
    ("serving", {"bertkit.serving"}),
    ("train", {"bertkit.train"}),
    ("commands", {"bertkit", "bertkit.tasks", "bertkit.tricks"}),
    ("cli", {"bertkit.cli"}),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def layer(module: str) -> int:
    for rank, (_, members) in enumerate(LAYERS):
        if module in members:
            return rank
    for rank, (_, members) in enumerate(LAYERS):  # a package's modules belong to its layer
        if any(module.startswith(m + ".") for m in members if m != "bertkit"):
            return rank
    raise AssertionError(f"{module} is in no layer of docs/architecture.md's table; add it to LAYERS")


def imports(module: str) -> set[str]:
    """The bertkit modules `module` imports, anywhere in its file."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names]  # `from .train import tricks` names a module
            if not all(n in MODULES for n in names):  # names from the module itself (a package's __init__ runs either way,
                names.append(base)  # but `from . import families` asks nothing of bertkit/__init__.py)
        else:
            continue
        found |= {n for n in names if n in MODULES and n != module}
    return found


def named(module: str) -> set[str]:
    """The bertkit modules `module` names in a string to import on first use (`bertkit/__init__.py`'s public names,
    the members' compute modules, named in their records): they must point down the layers too. Not counted for cycles: such an import runs
    at first use, after both modules have loaded (modern.py imports model.py, which imports modern.py by name)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in MODULES and n.value != module
            and isinstance(n.value, str) and n.value.startswith("bertkit.")}


GRAPH = {m: imports(m) for m in MODULES}
NAMED = {m: named(m) for m in MODULES}
# model.parts_of imports a member's compute module by the name its record gives (families: Member.compute)
NAMED["bertkit.model"] |= {f"bertkit.{m.compute}" for m in families.MEMBERS.values() if m.compute}


def test_every_module_has_a_layer():
    for m in MODULES:
        layer(m)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    up = sorted(t for t in GRAPH[module] | NAMED[module] if layer(t) > layer(module))
    assert not up, f"{module} ({LAYERS[layer(module)][0]}) imports a layer above it: {up}"


def test_nothing_imports_cli():
    assert not [m for m, targets in GRAPH.items() if "bertkit.cli" in targets]


def test_no_import_cycles():
    """Depth-first search for a back edge; the message shows the cycle."""
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(GRAPH[m]):
            if state.get(t) == 1:
                cycle = path[path.index(t):] + [m, t] if t in path else [m, t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t, path + [m])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [])


def test_the_checks_catch_what_they_should():
    """The reader sees function-level and relative imports (so the tests above can fail)."""
    assert "bertkit.serving.load" in NAMED["bertkit"]  # imported by name in __getattr__
    assert "bertkit.modern" in NAMED["bertkit.model"]  # the records' compute modules
    assert "bertkit.train.tricks" in GRAPH["bertkit.tricks"]  # `from .train import tricks`
    assert "bertkit.io.files" in GRAPH["bertkit.train.loop"]  # `from ..io.files import ...`
    assert layer("bertkit.model") < layer("bertkit.data.features") < layer("bertkit.serving.load") < layer("bertkit.train.loop")
