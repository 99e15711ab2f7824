"""VQGAN inversion: the text similarity rises, straight-through paths carry gradients, prompts parse and weigh,
seeds fix the result, sizes and init images work, and the frozen models are left untouched.

A tiny random-init VQGAN keeps these fast; the `tiny` TwoTower has random weights too, so the tests prove the
optimiser and its plumbing, not image quality (the cutout augmentations, made for trained models, are off where a
rise is measured: see tests/test_viz_render.py).
"""
import pytest
import torch

from brivl.viz.vqgan import VQGAN, VQGANConfig
from brivl.viz.vqgan_inversion import (
    MakeCutouts,
    parse_prompt,
    prompts,
    spherical_distance,
    tokens,
    vqgan_imagine,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = {"size": 64, "cutn": 2, "augment": False, "cut_size": 64, "progress": False}


@pytest.fixture(scope="module")
def vq():
    torch.manual_seed(0)
    model = VQGAN(VQGANConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), resolution=32,
                              z_channels=8, embed_dim=8, n_embed=64))
    with torch.no_grad():
        model.codebook.normal_()
    return model.eval().requires_grad_(False)


def _cos(model, images, text):
    with torch.no_grad():
        return (model.encode_image(images) @ model.encode_text([text]).T).item()


@pytest.mark.parametrize(("param", "lr"), [("z", 0.3), ("logits", 2.0)])
def test_text_similarity_of_the_decoded_image_rises(tiny, vq, param, lr):
    seen = {}
    out = vqgan_imagine(tiny, vq, "forest", steps=20, param=param, lr=lr, seed=0,
                        callback=lambda step, images: seen.setdefault(step, images), **FAST)
    before, after = _cos(tiny, seen[0], "forest"), _cos(tiny, out.images, "forest")
    # Random decodings sit within ~0.01 of each other on this model; 20 steps gain about 0.035.
    assert after > before + 0.02, (before, after)
    assert out.history.shape == (20, 1) and out.history[-1, 0] > out.history[0, 0] + 0.02
    assert out.indices.shape == (1, 32, 32) and out.images.shape == (1, 3, 64, 64)
    assert sorted(seen) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20]


@pytest.mark.parametrize("param", ["z", "logits"])
def test_straight_through_tokens_get_nonzero_gradients(vq, param):
    toks = tokens(vq, 1, 16, param, seed=0)
    images, idx = toks(torch.Generator().manual_seed(0) if param == "logits" else None)
    images.mean().backward()
    grad = toks.z.grad if param == "z" else toks.logits.grad
    assert grad is not None and grad.abs().sum() > 0
    assert idx.shape == (1, 8, 8) and not any(p.grad is not None for p in vq.parameters())


def test_same_seed_same_image_other_seed_other_image(tiny, vq):
    run = lambda seed: vqgan_imagine(tiny, vq, "forest", steps=2, seed=seed, size=32, cutn=2, progress=False)
    state = torch.random.get_rng_state()
    a, b, c = run(3), run(3), run(4)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert torch.equal(state, torch.random.get_rng_state())  # kornia's draws happen on a forked global RNG


def test_sizes_round_down_to_whole_cells(tiny, vq):
    out = vqgan_imagine(tiny, vq, "forest", steps=1, size=(33, 48), cutn=1, progress=False)
    assert out.images.shape == (1, 3, 32, 48)
    with pytest.raises(ValueError, match="smaller than one VQGAN cell"):
        vqgan_imagine(tiny, vq, "forest", steps=1, size=1, progress=False)


def test_init_image_is_where_the_run_starts(tiny, vq):
    init = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(0))
    seen = {}
    vqgan_imagine(tiny, vq, "forest", steps=1, size=32, cutn=1, init=init, progress=False,
                  callback=lambda step, images: seen.setdefault(step, images))
    resized = torch.nn.functional.interpolate(init[None], size=(32, 32), mode="bilinear", antialias=True)
    with torch.no_grad():
        assert torch.allclose(seen[0], vq.reconstruct(resized.clamp(0, 1)), atol=1e-5)


def test_prompts_parse_weights_and_negatives():
    assert parse_prompt("a red apple:2") == ("a red apple", 2.0)
    assert parse_prompt("time: 3 pm") == ("time: 3 pm", 1.0)
    assert prompts(["forest", "sea:0.5"], negative=["blurry"]) == [("forest", 1.0), ("sea", 0.5), ("blurry", -1.0)]
    assert prompts({"forest": 2.0}) == [("forest", 2.0)]
    with pytest.raises(ValueError, match="empty"):
        prompts(["  "])
    with pytest.raises(ValueError, match="positive weight"):
        prompts("forest:-1")


def test_negative_prompt_pushes_away(tiny, vq):
    toward = vqgan_imagine(tiny, vq, "forest", steps=8, lr=0.3, **FAST)
    away = vqgan_imagine(tiny, vq, {"sea": 1e-3}, negative=["forest"], steps=8, lr=0.3, **FAST)
    assert _cos(tiny, away.images, "forest") < _cos(tiny, toward.images, "forest")


def test_spherical_distance_and_cutouts():
    a = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    assert torch.allclose(spherical_distance(a, a), torch.zeros(4), atol=1e-6)
    e = torch.eye(8)
    assert torch.allclose(spherical_distance(e[0], e[1]), torch.tensor(torch.pi ** 2 / 8))  # 2 * (pi/4)^2
    cuts = MakeCutouts(16, cutn=3, cut_pow=2.0)(torch.rand(2, 3, 40, 30), torch.Generator().manual_seed(0))
    assert cuts.shape == (6, 3, 16, 16) and cuts.min() >= 0 and cuts.max() <= 1


def test_models_are_left_untouched(tiny, vq):
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    grads_before = [p.grad for p in tiny.parameters()]  # the session's model may carry other tests' gradients
    tiny.train()
    try:
        vqgan_imagine(tiny, vq, "forest", steps=2, size=32, cutn=1, progress=False)
        assert tiny.training
        assert all(p.grad is g for p, g in zip(tiny.parameters(), grads_before, strict=True))
    finally:
        tiny.eval()
    assert all(torch.equal(v, vq.state_dict()[k]) for k, v in before.items())


def _folder(vq, tmp_path):
    from brivl.viz.vqgan import save_vqgan

    return str(save_vqgan(vq, tmp_path / "vq"))


def test_cli_imagine_with_vqgan_writes_png_and_settings(tiny, vq, tmp_path, capsys):
    import json

    from brivl.cli import main

    out = tmp_path / "x.png"
    rc = main(["imagine", "tiny", "forest | sea:0.5", "--vqgan", _folder(vq, tmp_path), "--negative", "fire",
               "--steps", "2", "--size", "32", "--cutn", "1", "-o", str(out)])
    assert rc == 0 and out.is_file()
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["prompts"] == [["forest", 1.0], ["sea", 0.5], ["fire", -1.0]] and info["size"] == [32, 32]


def test_cli_imagine_with_a_missing_vqgan_is_a_clear_error(tmp_path, capsys):
    from brivl.cli import main

    rc = main(["imagine", "tiny", "forest", "--vqgan", str(tmp_path / "none"), "--steps", "1", "-o",
               str(tmp_path / "x.png")])
    assert rc == 2 and "no such VQGAN" in capsys.readouterr().err


def test_cli_fig3_draws_every_panel(tiny, vq, tmp_path, capsys):
    import json

    from brivl.cli import main

    out = tmp_path / "fig3"
    rc = main(["figures", "fig3", "--model", "tiny", "--vqgan", _folder(vq, tmp_path), "--steps", "1", "--size", "32",
               "--cutn", "1", "--out", str(out)])
    assert rc == 0 and (out / "fig3.png").is_file()
    info = json.loads((out / "fig3.json").read_text())
    assert list(info["prompts"]) == ["b", "c", "d"] and info["prompts"]["d"][0] == "blazing sea"
    assert info["stand_in_prompts"] == ["b", "c"] and len(list((out / "cells").glob("*.png"))) == 12


def test_cli_fig3_panel_a_takes_a_transformers_peer(tiny, vq, tmp_path, capsys):
    """Fig. 3a's 'CLIP' panel from a CLIP-family folder (hf:), each side's renders scored under the other model."""
    import json

    from hf_tiny import make_folder  # tests/hf_tiny.py

    from brivl.cli import main

    peer = make_folder(tmp_path, "clip")
    out = tmp_path / "fig3"
    rc = main(["figures", "fig3", "--model", "tiny", "--compare", f"hf:{peer}", "--vqgan", _folder(vq, tmp_path),
               "--steps", "1", "--size", "32", "--cutn", "1", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    info = json.loads((out / "fig3.json").read_text())
    assert list(info["prompts"]) == ["a", "b", "c", "d"] and info["compare"] == f"hf:{peer}"
    cross = info["cross_cosine"]
    assert list(cross) == ["a under tiny", f"b under hf:{peer}"] and all(len(v) == 4 for v in cross.values())
    assert all(-1 <= c <= 1 for v in cross.values() for c in v)
