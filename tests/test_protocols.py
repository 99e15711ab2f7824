"""What only some models have is a runtime-checkable protocol, and every command runs on every backend.

An `openclip:` model has no config, no patches and no separable text backbone: the commands that need one say
so in one line (exit 2), the others run as on BriVL.
"""
from __future__ import annotations

import json

import pytest
from PIL import Image

import brivl
from brivl.backends.openclip import load_openclip
from brivl.cli import main
from brivl.eval.backbone import TextBackboneModel
from brivl.twotower import Described, HasPatches, HasTextBackbone, TwoTower, model_name

CLIP = "openclip:tiny"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    Image.new("RGB", (40, 40), (200, 40, 30)).save(folder / "red.png")
    Image.new("RGB", (40, 40), (30, 40, 200)).save(folder / "blue.png")
    (folder / "phrases.txt").write_text("red\nblue\na red square\nthe sea\nmountains\n", encoding="utf-8")
    (folder / "texts.tsv").write_text("a red thing\tred\na blue thing\tblue\n", encoding="utf-8")
    return folder


def test_the_sub_protocols_tell_what_each_model_has():
    tiny, clip = brivl.load("tiny"), load_openclip(CLIP)
    assert isinstance(tiny, TwoTower) and isinstance(clip, TwoTower)
    assert isinstance(tiny, HasPatches) and isinstance(tiny, HasTextBackbone) and isinstance(tiny, Described)
    assert not isinstance(clip, HasPatches) and not isinstance(clip, HasTextBackbone)
    assert isinstance(clip, Described) and model_name(clip) == clip.name
    assert model_name(tiny) == tiny.config.name == "tiny"
    backbone = TextBackboneModel(tiny)
    assert isinstance(backbone, Described) and model_name(backbone) == "tiny text backbone"
    with pytest.raises(TypeError, match="no BriVL text tower"):  # NotSupportedError: a TypeError and a BrivlError
        TextBackboneModel(clip)


@pytest.mark.parametrize("argv", [
    ["info", CLIP],
    ["encode-text", CLIP, "a red square", "the sea"],
    ["encode-image", CLIP, "{d}/red.png", "{d}/blue.png"],
    ["similarity", CLIP, "--text", "red", "blue", "--image", "{d}/red.png"],
    ["imagine", CLIP, "a red square", "-o", "{d}/imagine.png", "--steps", "1", "--size", "32"],
    ["neuron", CLIP, "--layer", "llp", "--channel", "0", "-o", "{d}/neuron.png", "--steps", "1", "--size", "32"],
    ["phrases", "build", CLIP, "--phrases", "{d}/phrases.txt", "--index", "{d}/index"],
    ["eval", "textcls", CLIP, "{d}/texts.tsv"],
])
def test_every_command_runs_on_an_openclip_model(capsys, images, argv):
    code = main([a.format(d=images) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.strip()
    if argv[0] == "imagine":
        assert json.loads((images / "imagine.json").read_text())["model_name"] == "tiny"


@pytest.mark.parametrize("argv, message", [
    (["eval", "textcls", CLIP, "{d}/texts.tsv", "--backbone"], "no BriVL text tower"),
    (["phrases", "build", CLIP, "--phrases", "{d}/phrases.txt", "--backbone", "--index", "{d}/bb"],
     "no BriVL text tower"),
])
def test_what_an_openclip_model_lacks_is_one_line_exit_2(capsys, images, argv, message):
    assert main([a.format(d=images) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0
