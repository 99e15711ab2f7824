"""The OpenCLIP adapter: the TwoTower protocol on a tiny open_clip config, local checkpoints only, nothing
downloaded; the evaluation suite and the phrase index run on it unchanged."""
import json

import pytest
import torch

from brivl.backends.openclip import OpenCLIP, load_openclip
from brivl.checkpoint import CheckpointError
from brivl.hub import ModelNotFoundError
from brivl.twotower import TwoTower

# no_network: the adapter must build from the package alone.
pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture(scope="module")
def clip():
    return load_openclip("openclip:tiny")


def test_tiny_satisfies_the_protocol(clip):
    assert isinstance(clip, TwoTower) and isinstance(clip, OpenCLIP)
    assert clip.image_size == 32 and clip.embed_dim == 32
    with torch.no_grad():
        t = clip.encode_text(["a photo of a cat", "运动", "sports"])
    assert t.shape == (3, 32) and torch.allclose(t.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert not torch.allclose(t[0], t[2])
    layers = clip.feature_layers()
    assert {"llp", "block0", "block1"} <= set(layers) and layers["llp"] is layers["block1"]


def test_encode_image_any_size_differentiable(clip):
    x = torch.rand(2, 3, 45, 70, requires_grad=True)  # not square, not the model's size
    z = clip.encode_image(x)
    assert z.shape == (2, 32) and torch.allclose(z.norm(dim=-1), torch.ones(2), atol=1e-5)
    z[:, 0].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with torch.no_grad():  # a square input at the model's size passes unchanged through preprocessing
        y = torch.rand(1, 3, 32, 32)
        assert torch.allclose(clip.preprocess(y), (y - clip.mean) / clip.std)
    from brivl.inputs import InputError

    with pytest.raises(InputError, match="0, 1"):
        clip.encode_image(torch.full((1, 3, 8, 8), 2.0))


def test_tiny_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = load_openclip("openclip:tiny")
    after = torch.rand(1)
    b = load_openclip("tiny")
    assert torch.equal(before, after)
    with torch.no_grad():
        assert torch.equal(a.encode_text(["x"]), b.encode_text(["x"]))


def test_local_checkpoints_load_and_bad_ones_are_named(clip, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in clip.clip.state_dict().items()}
    save_file(state, str(tmp_path / "ck.safetensors"))
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, tmp_path / "ck.pt")
    with torch.no_grad():
        ref = clip.encode_text(["a cat"])
        for name in ("ck.safetensors", "ck.pt"):
            m = load_openclip(f"openclip:tiny:{tmp_path / name}")
            assert torch.allclose(m.encode_text(["a cat"]), ref) and m.checkpoint == str(tmp_path / name)
    bad = dict(state)
    bad.pop("ln_final.weight")
    bad["extra.weight"] = torch.zeros(1)
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match=r"ln_final\.weight[\s\S]*extra\.weight"):
        load_openclip(f"openclip:tiny:{tmp_path / 'bad.safetensors'}")
    with pytest.raises(ModelNotFoundError, match="no such OpenCLIP checkpoint"):
        load_openclip(f"openclip:tiny:{tmp_path / 'missing.pt'}")


def test_names_that_would_download_or_do_not_exist_are_refused():
    with pytest.raises(ModelNotFoundError, match="Hugging Face"):
        load_openclip("openclip:xlm-roberta-base-ViT-B-32")
    with pytest.raises(ModelNotFoundError, match="Hugging Face"):
        load_openclip("openclip:ViT-B-16-SigLIP")
    with pytest.raises(ModelNotFoundError, match="no OpenCLIP architecture"):
        load_openclip("openclip:ViT-Q-99")


def test_builtin_clip_tokenizer_is_offline():
    import open_clip

    tok = open_clip.get_tokenizer("ViT-B-32")  # the BPE vocabulary ships inside the package
    ids = tok(["a photo of a cat"])
    assert ids.shape == (1, 77) and ids[0, 0] == 49406


def test_eval_suite_and_phrase_index_run_on_openclip(clip, tmp_path):
    from PIL import Image

    from brivl.eval import read_class_folders, zero_shot_classification
    from brivl.viz import phrases as P

    for name, colour in (("red", (255, 0, 0)), ("green", (0, 255, 0)), ("blue", (0, 0, 255))):
        (tmp_path / "c" / name).mkdir(parents=True)
        Image.new("RGB", (40, 24), colour).save(tmp_path / "c" / name / "0.png")
    res = zero_shot_classification(clip, read_class_folders(tmp_path / "c"), ["3/0"],
                                   templates=("a photo of {}",))
    assert res["results"][0]["splits"] == 1 and 0 <= res["results"][0]["mean"] <= 100
    words = ["sports", "car", "apple", "river", "music"]
    index = P.build_index(clip, tmp_path / "idx", words, progress=False)
    assert index.meta["model"] == "tiny" and index.search(clip, "car", k=1)[0][0][0] == "car"
    other = load_openclip("openclip:tiny")
    with torch.no_grad():
        other.clip.token_embedding.weight.mul_(2)
    with pytest.raises(P.StaleIndexError):
        P.PhraseIndex.open(index.folder, other)


def test_cli_runs_an_openclip_spec(capsys, tmp_path):
    from PIL import Image

    from brivl.cli import main

    Image.new("RGB", (20, 20), (255, 0, 0)).save(tmp_path / "r.png")
    Image.new("RGB", (20, 20), (0, 0, 255)).save(tmp_path / "b.png")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"image": "r.png", "captions": ["red", "a red square"]}\n{"image": "b.png", "text": "blue"}\n')
    code = main(["eval", "retrieval", "openclip:tiny", str(manifest), "-o", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["model"] == "openclip:tiny"
    code = main(["eval", "retrieval", "openclip:ViT-Q-99", str(manifest)])
    assert code == 2 and "no OpenCLIP architecture" in capsys.readouterr().err


def test_vit_b_32_random_init():
    """The real ViT-B-32 layout, random init (~3 s)."""
    m = load_openclip("openclip:ViT-B-32")
    assert m.image_size == 224 and m.embed_dim == 512
    with torch.no_grad():
        z = m.encode_image(torch.rand(1, 3, 100, 150))
        t = m.encode_text(["a diagram"])
    assert torch.allclose(z.norm(dim=-1), torch.ones(1), atol=1e-5) and t.shape == (1, 512)
