"""What an install holds: a core plus extras, exact pins in constraints.txt, and names that cannot collide."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# What only an extra installs, and the floors above the core: a core install has none of them.
EXTRAS_ONLY = ("viz", "app", "recipes", "brivl_studio", "brivl_recipes", "kornia", "matplotlib", "umap", "jieba",
               "gradio", "gradio_client", "deepspeed", "open_clip")


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_package_folder_is_installed_under_its_own_name():
    setuptools = PYPROJECT["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    folders = {v: k for k, v in setuptools["package-dir"].items()}  # folder -> installed name
    found = set()
    for init in ROOT.glob("*/**/__init__.py"):
        parts = init.parent.relative_to(ROOT).parts
        if parts[0] in ("brivl", "viz", "app", "recipes"):
            found.add(".".join((folders.get(parts[0], parts[0]),) + parts[1:]))
    assert found == listed, (found - listed, listed - found)
    tops = {p.split(".")[0] for p in listed}
    assert tops == {"brivl", "brivl_studio", "brivl_recipes"}  # no generic `viz`, `app` or `recipes`
    assert "brivl.viz" in listed
    assert "brivl.assets" in PYPROJECT["tool"]["setuptools"]["package-data"]


def test_core_dependencies_are_small_and_extras_hold_the_rest():
    core = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    assert not core & {"gradio", "deepspeed", "umap-learn", "open-clip-torch", "kornia", "matplotlib", "jieba"}
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"viz", "studio", "train", "openclip", "test"} <= set(extras)
    assert "deepspeed" in {_name(r) for r in extras["train"]}
    assert "open-clip-torch" in {_name(r) for r in extras["openclip"]}
    assert "gradio" in {_name(r) for r in extras["studio"]}


def test_constraints_pin_every_dependency_exactly_and_setup_uses_them():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version and re.fullmatch(r"[0-9][0-9a-z.+]*", version), line  # exact pins only
            pins[_name(name)] = version
    wanted = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    for reqs in PYPROJECT["project"]["optional-dependencies"].values():
        wanted |= {_name(r) for r in reqs if not r.startswith("brivl[")}
    assert wanted <= set(pins), wanted - set(pins)
    setup = (ROOT / "dev" / "setup.sh").read_text(encoding="utf-8")
    assert "-c constraints.txt" in setup and "constraints.txt" in setup.split("want=")[1].splitlines()[0]


BLOCKER = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in a core install)", name=name)
        return None
sys.meta_path.insert(0, Block())
"""


@pytest.mark.slow
def test_a_core_install_loads_brivl_lite_encodes_and_runs_its_commands(tmp_path):
    """Without any extra (modules only extras install are made unimportable), brivl-lite loads and encodes."""
    code = BLOCKER.format(blocked=EXTRAS_ONLY) + """
import brivl
from brivl.cli import build_parser, main
model = brivl.load("brivl-lite")
emb = model.encode_text(["a sunset over the sea", "夕阳下的大海"])
assert emb.shape[0] == 2 and abs(float(emb.norm(dim=1).min()) - 1) < 1e-4
sub = [a for a in build_parser(floors=True)._actions if a.dest == "command"][0]
assert "similarity" in sub.choices and "imagine" not in sub.choices and "studio" not in sub.choices
assert main(["similarity", "brivl-lite", "--text", "a sunset", "--image", "examples/sunset.png"]) == 0
print("ok", sorted(m for m in sys.modules if m.split(".")[0] in {blocked!r}))
""".format(blocked=EXTRAS_ONLY)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ok []" in out.stdout
