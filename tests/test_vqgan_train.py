"""`brivl build-vqgan` at a tiny scale: it makes its images when absent, trains (an autoencoder warm-up, then VQ),
resumes where it stopped (same result as one uninterrupted run), exports safetensors + JSON that load back, and
measures held-out PSNR."""
import json

import pytest
import torch

from brivl.viz.vqgan import VQGANError, load_vqgan
from recipes.vqgan_lite.build import EMACodebook, VQGANBuildConfig, build_vqgan

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_MODEL = {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "resolution": 32,
              "z_channels": 8, "embed_dim": 4, "n_embed": 16, "norm_groups": 8}


def _cfg(tmp_path, steps, images=None, **kw):
    return VQGANBuildConfig(
        images=str(images or tmp_path / "lite"), work=str(tmp_path / "work"), out=str(tmp_path / "out"),
        make_images={"synth_per_class": 0, "mosaics": 0, "procedural": 12, "procedural_size": 32},
        model=TINY_MODEL, steps=steps, batch_size=4, crop=16, warmup_steps=2, perceptual_weight=0.0,
        save_every=2, log_every=1, eval_size=32, dtype="float32", ae_warmup_steps=1, **kw)


@pytest.mark.slow
def test_build_makes_images_trains_resumes_and_exports(tmp_path):
    first = build_vqgan(_cfg(tmp_path, steps=2), progress=False)
    assert first["steps"] == 2 and len(list((tmp_path / "lite" / "images").glob("proc-*.png"))) == 12
    report = build_vqgan(_cfg(tmp_path, steps=4), progress=False)  # resumes at step 2
    lines = [json.loads(x) for x in (tmp_path / "work" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4]
    assert lines[0]["codes_used"] == 0 and lines[1]["codes_used"] > 0  # step 1: plain autoencoder warm-up
    assert report["complete"] and report["heldout"]["photos"] >= 10 and report["heldout"]["psnr_db"] > 0

    # One uninterrupted run of 4 steps gives the same weights: the checkpoint holds the whole training state.
    again = build_vqgan(VQGANBuildConfig(**{**_cfg(tmp_path, steps=4).__dict__, "work": str(tmp_path / "w2"),
                                            "out": str(tmp_path / "o2")}), progress=False)
    a, b = load_vqgan(tmp_path / "out"), load_vqgan(tmp_path / "o2")
    assert again["steps"] == 4
    for k, v in a.state_dict().items():
        assert torch.allclose(v, b.state_dict()[k], atol=1e-6), k
    cfg = json.loads((tmp_path / "out" / "vqgan.json").read_text())
    assert cfg["extra"]["heldout_psnr_db"] == report["heldout"]["psnr_db"]


def test_ema_codebook_restarts_dead_codes():
    from brivl.viz.vqgan import VQGAN, VQGANConfig

    model = VQGAN(VQGANConfig(**TINY_MODEL))
    ema = EMACodebook(model, decay=0.5, dead_after=0.5)
    z = torch.randn(2, 4, 3, 3)
    idx = torch.zeros(2, 3, 3, dtype=torch.long)  # everything on code 0: the other codes die
    restarted = [ema.update(z, idx, torch.Generator().manual_seed(0)) for _ in range(2)]
    assert restarted[0] == 0 and restarted[1] == 15
    flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
    assert all(any(torch.equal(model.codebook[k], row) for row in flat) for k in range(1, 16))


def test_missing_lite_vqgan_says_how_to_build_it(monkeypatch, tmp_path):
    import brivl.viz.vqgan as V

    monkeypatch.setattr(V, "LITE_FOLDER", tmp_path)
    with pytest.raises(VQGANError, match="build-vqgan"):
        load_vqgan("lite")


def test_chroma_is_zero_on_grey_and_signed_on_colour():
    from recipes.vqgan_lite.build import chroma

    assert torch.allclose(chroma(torch.full((1, 3, 2, 2), 0.3)), torch.zeros(1, 2, 2, 2), atol=1e-6)
    red = torch.zeros(1, 3, 1, 1)
    red[:, 0] = 1
    blue_minus_y, red_minus_y = chroma(red).flatten().tolist()
    assert red_minus_y > 0.5 and blue_minus_y < 0


def _write_images(folder, names):
    from PIL import Image

    (folder / "images").mkdir(parents=True)
    for i, name in enumerate(names):
        Image.new("RGB", (16, 16), (10 * i, 0, 0)).save(folder / "images" / name)


def test_image_kinds_pick_the_recipe_images_by_prefix(tmp_path):
    from brivl.config import ConfigError
    from recipes.vqgan_lite.build import training_images

    _write_images(tmp_path, ["synth-0.png", "mosaic-0.png", "mosaic-1.png", "proc-000000.png"])
    every = training_images(VQGANBuildConfig(images=str(tmp_path)), progress=False)
    picked = training_images(VQGANBuildConfig(images=str(tmp_path), image_kinds=["synth", "mosaic"]), progress=False)
    assert len(every) == 4 and len(picked) == 3
    # red channel = 10 x the order written (synth 0, mosaic 10 and 20, proc 30); read in sorted name order, proc out
    assert [int(t[0, 0, 0]) for t in picked] == [10, 20, 0]
    with pytest.raises(ConfigError, match="image_kinds"):
        training_images(VQGANBuildConfig(images=str(tmp_path), image_kinds=["photo"]), progress=False)


def test_codes_start_at_encoder_outputs_without_a_warm_up(tmp_path):
    folder = tmp_path / "lite"
    _write_images(folder, [f"proc-{i:06d}.png" for i in range(6)])
    cfg = _cfg(tmp_path, steps=1, images=folder).__dict__ | {"ae_warmup_steps": 0, "log_every": 1}
    build_vqgan(VQGANBuildConfig(**cfg), progress=False)
    line = json.loads((tmp_path / "work" / "metrics.jsonl").read_text().splitlines()[0])
    # Seeded from 4 crops' latents (4 x 2 x 2 = 16 vectors for 16 codes), the first step uses all 16 (measured);
    # codes drawn from N(0, 1), far from the encoder's small outputs, left 3 in use.
    assert line["codes_used"] >= 12, line


def test_resuming_under_another_recipe_is_refused_and_the_checkpoint_kept(tmp_path):
    from brivl.config import ConfigError

    build_vqgan(_cfg(tmp_path, steps=2), progress=False)
    meta = (tmp_path / "work" / "train_state.json").read_text()
    with pytest.raises(ConfigError, match=r"lr: 0\.002 -> 0\.01"):
        build_vqgan(_cfg(tmp_path, steps=4, lr=1e-2), progress=False)
    assert (tmp_path / "work" / "train_state.json").read_text() == meta
    assert json.loads((tmp_path / "work" / "build_config.json").read_text())["lr"] == 2e-3
    # more steps (and the other run-length settings) may change: the run continues
    assert build_vqgan(_cfg(tmp_path, steps=3, max_minutes=5.0), progress=False)["steps"] == 3
