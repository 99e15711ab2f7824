"""Transformers CLIP-family folders behind TwoTower: tiny random CLIP, Chinese-CLIP, AltCLIP and SigLIP models written
here (no download) give the family's own features through the folder's own processor, gradients reach the pixels,
every viz objective and the eval suite run on them, and bad folders are named."""
import json
import re
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers as T
from hf_tiny import FAMILIES, IMAGE, make_folder  # tests/hf_tiny.py
from PIL import Image

import brivl
from brivl.backends.hf_clip import HFClip
from brivl.errors import CheckpointError, ModelNotFoundError, RemoteCodeError, TokenizerMissingError
from brivl.twotower import Described, HasPatches, TwoTower

# no_network: the folders are all there is.
pytestmark = pytest.mark.usefixtures("one_torch_thread", "no_network")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {family: make_folder(root, family) for family in FAMILIES}


@pytest.fixture(scope="module")
def models(folders):
    return {family: brivl.load(f"hf:{folder}") for family, folder in folders.items()}


def _image(seed: int, h: int, w: int) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILIES)
def test_embeddings_are_the_familys_own_through_its_own_processor(family, folders, models):
    """Loaded independently with the family's Auto classes: same texts -> same features to 1e-5; same images through
    the folder's processor (resize of the shorter side, crop; or SigLIP's squeeze) -> same features to 1e-5."""
    model, folder = models[family], folders[family]
    assert isinstance(model, HFClip) and isinstance(model, (TwoTower, HasPatches, Described))
    ref = T.AutoModel.from_pretrained(folder, local_files_only=True).eval()
    tok = T.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    proc = T.AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    texts = ["a photo of a cat", "夕阳下的大海"]
    enc = tok(texts, padding="max_length" if family == "siglip" else True, return_tensors="pt")
    images = [_image(1, 45, 70), _image(2, 70, 45), _image(3, IMAGE, IMAGE)]  # wide, tall, the model's own size
    with torch.no_grad():
        t_ref = ref.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).pooler_output
        t = model.encode_text(texts)
        for x in images:
            pixel_values = proc(images=[x[0] * 255], return_tensors="pt")["pixel_values"]  # float 0-255, as decoded
            i_ref = F.normalize(ref.get_image_features(pixel_values=pixel_values).pooler_output, dim=-1)
            assert (model.encode_image(x) - i_ref).abs().max() < 1e-5
        photo = Image.fromarray((images[2][0].permute(1, 2, 0).numpy() * 255).round().astype("uint8"))
        u8 = torch.from_numpy(np.array(photo)).permute(2, 0, 1)[None].float() / 255
        i_ref = ref.get_image_features(**proc(images=photo, return_tensors="pt")).pooler_output  # the PIL path
        assert (model.encode_image(u8) - F.normalize(i_ref, dim=-1)).abs().max() < 1e-5
    assert (t - F.normalize(t_ref, dim=-1)).abs().max() < 1e-5
    assert t.shape == (2, model.embed_dim) and torch.allclose(t.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(t[0], t[1], atol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_reach_the_pixels_and_patches_are_a_grid(family, models):
    model = models[family]
    x = _image(4, 50, 61).requires_grad_(True)
    z = model.encode_image(x)
    (z @ model.encode_text(["a red car"]).T.detach()).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with torch.no_grad():
        patches = model.patch_embeddings(x.detach())
    g = IMAGE // 8
    assert patches.shape == (1, g * g, model.embed_dim) and model.patch_boxes().shape == (g * g, 4)
    assert torch.allclose(model.patch_boxes()[1], torch.tensor([1 / g, 0, 2 / g, 1 / g]))  # row-major like tokens
    from brivl.viz import attribution

    heat = attribution.patch_heatmap(model, x.detach(), "a red car")
    assert heat.shape == (1, 50, 61) and torch.isfinite(heat).all() and heat.std() > 0
    layers = model.feature_layers()
    assert {"llp", "block0", "block1", "pooled"} <= set(layers) and ("proj" in layers) == (family != "siglip")


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_every_viz_objective_runs_and_reaches_the_pixels(family, models):
    from brivl import viz
    from brivl.viz import objectives as O

    model = models[family]
    target = model.encode_text(["a green forest"]).detach()
    objectives = [O.text_match("a cat"), O.image_match(_image(5, 32, 32)), O.channel("llp", 3), O.neuron("llp", 5),
                  O.channel("block0", 2), O.channel("pooled", 1), O.direction(target), O.direction(target[:, :32] if
                  target.shape[1] >= 32 else torch.ones(1, 32), "block1"), O.diversity(), O.diversity("llp"),
                  O.spherical_match(target, torch.ones(1)), -0.1 * O.l2(), -0.1 * O.total_variation()]
    x = torch.cat([_image(6, 40, 40), _image(7, 40, 40)]).requires_grad_(True)
    for objective in objectives:
        value = O.evaluate(objective, model, x)
        grad, = torch.autograd.grad(value.sum(), x)
        assert value.shape == (2,) and torch.isfinite(value).all() and grad.abs().sum() > 0, objective
    r = viz.imagine(model, "a red car", steps=4, size=32, progress=False)
    n = viz.neuron(model, "llp", 3, "a red car", steps=2, size=32, progress=False)
    assert r.images.shape == (1, 3, 32, 32) and n.images.shape == (1, 3, 32, 32) and r.history.shape[0] == 4


def test_eval_suite_and_cli_on_a_folder(folders, models, tmp_path, capsys):
    from brivl.cli import main
    from brivl.eval import read_class_folders, zero_shot_classification

    for name, colour in (("red", (255, 0, 0)), ("green", (0, 255, 0)), ("blue", (0, 0, 255))):
        (tmp_path / "c" / name).mkdir(parents=True)
        Image.new("RGB", (40, 24), colour).save(tmp_path / "c" / name / "0.png")
    res = zero_shot_classification(models["chinese_clip"], read_class_folders(tmp_path / "c"), ["3/0"])
    assert res["results"][0]["splits"] == 1 and 0 <= res["results"][0]["mean"] <= 100
    Image.new("RGB", (20, 20), (255, 0, 0)).save(tmp_path / "r.png")
    Image.new("RGB", (20, 20), (0, 0, 255)).save(tmp_path / "b.png")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"image": "r.png", "text": "red"}\n{"image": "b.png", "text": "blue"}\n')
    for spec in (f"hf:{folders['altclip']}", str(folders["siglip"])):  # the prefix, or the folder recognised alone
        code = main(["eval", "retrieval", spec, str(manifest), "-o", str(tmp_path / "r.json")])
        assert code == 0, capsys.readouterr().err
        assert json.loads((tmp_path / "r.json").read_text())["model"] == spec
    assert main(["neuron", f"hf:{folders['clip']}", "--layer", "llp", "--channel", "7", "--text", "a cat",
                 "--steps", "2", "--size", "32", "-o", str(tmp_path / "n.png")]) == 0
    assert json.loads((tmp_path / "n.json").read_text())["channel"] == 7
    assert main(["neuron", f"hf:{folders['clip']}", "--layer", "llp", "--channel", "32", "--steps", "1",
                 "-o", str(tmp_path / "n.png")]) == 2 and "32" in capsys.readouterr().err
    assert main(["info", str(folders["clip"])]) == 0
    out = capsys.readouterr().out
    assert "HFClip" in out and "llp, block0, block1, pooled, proj" in out and re.search(r"patches +yes", out)


def test_phrase_index_runs_on_a_folder(models, tmp_path):
    from brivl.viz import phrases as P

    model = models["siglip"]  # (random BERT/XLM-R towers put every word at cosine 0.9999: float16 ties)
    words = ["sea", "car", "cat", "forest", "sun"]
    index = P.build_index(model, tmp_path / "idx", words, progress=False)
    assert len(index) == 5 and index.search(model, "car", k=1)[0][0][0] == "car"


def test_long_texts_are_truncated_with_a_warning(models):
    model = models["clip"]
    long = "a red car over the sea and the sun " * 4
    with pytest.warns(UserWarning, match="context of 16 tokens were truncated"):
        z = model.encode_text([long])
    ids = model.tokenizer(long)["input_ids"]
    cut = model.tokenizer.decode(ids[1:15])  # the 14 words that fit between [CLS] and [SEP]
    with torch.no_grad():
        assert torch.allclose(z, model.encode_text([cut]), atol=1e-6)


def test_bad_folders_are_named(folders, tmp_path):
    def copy(family, name, drop=()):
        target = tmp_path / name
        shutil.copytree(folders[family], target, ignore=shutil.ignore_patterns(*drop))
        return target

    no_tok = copy("clip", "no-tok", ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"))
    with pytest.raises(TokenizerMissingError, match="no tokenizer .*tokenizer.json"):
        brivl.load(f"hf:{no_tok}")
    no_proc = copy("clip", "no-proc", ("preprocessor_config.json",))
    with pytest.raises(ModelNotFoundError, match="no preprocessor_config.json"):
        brivl.load(str(no_proc))
    hostile = copy("clip", "hostile")
    cfg = json.loads((hostile / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "evil.EvilModel"}
    (hostile / "config.json").write_text(json.dumps(cfg))
    (hostile / "evil.py").write_text("raise SystemExit('code from a model folder ran')\n")
    with pytest.raises(RemoteCodeError, match="evil.EvilModel"):
        brivl.load(f"hf:{hostile}")
    from safetensors.torch import load_file

    as_bin = copy("clip", "as-bin", ("model.safetensors",))  # an older release's pickle: scanned, then loaded
    torch.save(load_file(str(folders["clip"] / "model.safetensors")), as_bin / "pytorch_model.bin")
    with torch.no_grad():
        assert torch.allclose(brivl.load(str(as_bin)).encode_text(["a cat"]),
                              brivl.load(str(folders["clip"])).encode_text(["a cat"]))
    pickled = copy("clip", "pickled", ("model.safetensors",))
    torch.save({"x": torch.zeros(1), "y": bytearray(8)}, pickled / "pytorch_model.bin")  # not a state dict of tensors
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        brivl.load(str(pickled))
    other = copy("clip", "bert")
    T.BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                 intermediate_size=8).save_pretrained(other)
    with pytest.raises(ModelNotFoundError, match="model_type 'bert' is not a supported.*clip.*chinese_clip.*altclip"
                                                 ".*siglip"):
        brivl.load(str(other))
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        brivl.load(f"hf:{tmp_path / 'missing'}")
