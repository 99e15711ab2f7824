"""The house's floors hold: `import brivl` stays small, and brivl/'s import graph has no cycle.

The graph is read from the source (every import statement, at the top of a file or inside a function; imports
under `if TYPE_CHECKING:` are not run and do not count). Importing `a.b.c` also runs the package files `a/` and
`a/b/`, so those count as edges too.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Deferred on purpose inside brivl/ (each such import says so in a comment): optional extras, not the core install.
FRONT_ENDS = ("viz", "app", "recipes", "gradio", "deepspeed", "umap", "open_clip", "matplotlib", "kornia")


def top_name(module: str) -> str:
    """The floor or distribution a dotted module name belongs to: `brivl.viz...` is viz (installed under brivl)."""
    return "viz" if module == "brivl.viz" or module.startswith("brivl.viz.") else module.split(".")[0]


def _modules(package: str) -> dict[str, Path]:
    mods = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    return skip


def _imported_names(name: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Absolute dotted names an import statement may load (a module, or a name inside one)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        parts = parts[:len(parts) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
    return [base] + [f"{base}.{a.name}" for a in node.names]


def import_edges(package: str = "brivl") -> tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
    """({module: modules of `package` it imports}, [(module, line, target) for every import of another floor])."""
    mods = _modules(package)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    foreign: list[tuple[str, int, str]] = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in skip or not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _imported_names(name, path, node):
                if top_name(target) in FRONT_ENDS:
                    foreign.append((name, node.lineno, target))
                while target:  # the module itself and every package file above it
                    if target in mods and target != name and not name.startswith(target + "."):
                        edges[name].add(target)
                    target = target.rpartition(".")[0]
    return edges, foreign


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        state[m] = 2
        path.pop()
        return None

    for m in sorted(edges):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_import_brivl_loads_no_front_end_or_heavy_extra():
    code = ("import json, sys; import brivl; "
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = {top_name(m) for m in json.loads(out.stdout)}
    assert "brivl" in loaded
    assert not loaded & {"viz", "app", "recipes", "gradio", "deepspeed", "umap"}, loaded & set(FRONT_ENDS)
    assert not loaded & set(FRONT_ENDS), loaded & set(FRONT_ENDS)


def test_brivl_import_graph_has_no_cycle():
    edges, _ = import_edges("brivl")
    assert len(edges) > 40  # the walk found the package
    assert "brivl.config" in edges["brivl.hub"]
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


def test_brivl_imports_no_floor_above_it():
    """The core never imports viz, the recipes or the studio (the CLI finds their commands by module name)."""
    _, foreign = import_edges("brivl")
    assert not [f for f in foreign if top_name(f[2]) in ("viz", "app", "recipes")], foreign


def test_viz_imports_neither_the_studio_nor_the_recipes():
    _, foreign = import_edges("viz")
    assert not [f for f in foreign if top_name(f[2]) in ("app", "recipes")], foreign


def test_brivl_viz_is_the_only_name_of_viz():
    """Code imports viz as `brivl.viz` (what a wheel installs); a bare `import viz` would load a second copy."""
    bare = []
    for package in ("brivl", "viz", "app", "recipes", "tests", "bench"):
        for name, path in _modules(package).items():
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import) and any(top_name(a.name) == "viz" and a.name.split(".")[0] == "viz"
                                                        for a in node.names):
                    bare.append(f"{path.relative_to(ROOT)}:{node.lineno}")
                elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "viz":
                    bare.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bare, bare
    assert top_name("brivl.viz.render") == "viz" and top_name("brivl.vizzy") == "brivl"


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("package", ["brivl"])
def test_no_brivl_import_hidden_inside_a_function(package):
    """Imports of brivl's own modules sit at the top of the file (function-level ones hid the old cycles)."""
    hidden = []
    for name, path in _modules(package).items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("brivl")):
                    hidden.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not hidden, hidden



# Control flow, never shown to a user: the studio's Stop button and data.py's skip-this-row signal.
NOT_ERRORS = {"app.errors.Stopped", "brivl.data._Unusable"}


def test_every_error_class_is_in_the_one_family():
    import importlib

    from brivl.errors import BrivlError, UserInputError

    assert issubclass(BrivlError, ValueError) and issubclass(UserInputError, BrivlError)
    outside = []
    for package in ("brivl", "viz", "app", "recipes"):
        for name in _modules(package):
            if name.endswith("__main__"):
                continue
            module = importlib.import_module(name)
            for obj in vars(module).values():
                if (isinstance(obj, type) and issubclass(obj, Exception) and obj.__module__ == name
                        and f"{name}.{obj.__name__}" not in NOT_ERRORS and not issubclass(obj, BrivlError)):
                    outside.append(f"{name}.{obj.__name__}")
    assert not outside, outside


def test_no_function_reaches_80_lines():
    """Long functions hide several jobs; split them (the limit of issue 21's layout work)."""
    long = []
    for package in ("brivl", "viz", "app", "recipes"):
        for path in _modules(package).values():
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines >= 80:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def test_frozen_restores_mode_and_gradients_even_after_an_error():
    from torch import nn

    from brivl.frozen import frozen

    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).train()
    model[0].weight.requires_grad_(False)
    with pytest.raises(RuntimeError), frozen(model, grads=False):
        assert not model.training and not model[1].training
        assert not any(p.requires_grad for p in model.parameters())
        raise RuntimeError("inside")
    assert model.training and model[1].training
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, True]
    model.eval()
    with frozen(model):
        pass
    assert not model.training  # a model in eval mode stays there
    with frozen("not a module") as same:
        assert same == "not a module"
