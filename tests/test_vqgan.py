"""Loading VQGAN checkpoints safely: damaged files, mismatched configs and hostile pickles give clear errors, and
no code in a file ever runs; training objects that Lightning pickles beside the weights load as inert data."""
import os

import pytest
import torch
import yaml

from brivl.viz.vqgan import (
    VQGAN,
    VQGANConfig,
    VQGANError,
    clamp_with_grad,
    load_taming,
    load_vqgan,
    read_ckpt,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DD = {"double_z": False, "z_channels": 8, "resolution": 32, "in_channels": 3, "out_ch": 3, "ch": 32, "ch_mult": [1, 2],
      "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}


def _model(n_embed=16, quantizer="vq"):
    torch.manual_seed(0)
    cfg = VQGANConfig(**{k: v for k, v in DD.items()}, embed_dim=8, n_embed=n_embed, quantizer=quantizer)
    return VQGAN(cfg)


def _yaml(path, n_embed=16, target="taming.models.vqgan.VQModel"):
    path.write_text(yaml.safe_dump({"model": {"target": target, "params": {
        "embed_dim": 8, "n_embed": n_embed, "ddconfig": DD, "lossconfig": {"target": "torch.nn.Identity"}}}}))
    return path


def _ckpt(tmp_path, extra=None, model=None):
    model = model or _model()
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": model.state_dict(), **(extra or {})}, path)
    _yaml(tmp_path / "m.yaml")
    return path


class _Payload:
    """Pickles as a call to os.system: loading it unsafely would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_taming_checkpoint_loads_with_yaml_beside_it(tmp_path):
    path = _ckpt(tmp_path)
    model = load_vqgan(path)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        out = model.decode_indices(torch.zeros(1, 4, 4, dtype=torch.long))
    assert out.shape == (1, 3, 8, 8) and out.min() >= 0 and out.max() <= 1


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = _ckpt(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VQGANError, match="truncated or damaged|not a torch zip"):
        load_taming(path)


def test_yaml_that_does_not_match_the_weights_names_the_keys(tmp_path):
    path = _ckpt(tmp_path)
    _yaml(tmp_path / "m.yaml", n_embed=32)
    with pytest.raises(VQGANError) as e:
        load_taming(path)
    msg = str(e.value)
    assert "quantize.embedding.weight" in msg and "mis-shaped" in msg and "yaml" in msg


def test_missing_yaml_says_both_files_are_needed(tmp_path):
    path = _ckpt(tmp_path)
    (tmp_path / "m.yaml").unlink()
    with pytest.raises(VQGANError, match="no such config file"):
        load_taming(path)


def test_pickle_with_a_payload_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    path = _ckpt(tmp_path, {"callbacks": {"x": _Payload(marker)}})
    with pytest.raises(VQGANError, match="refused to load.*system"):
        load_taming(path)
    assert not marker.exists()


def test_payload_that_is_the_whole_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save(_Payload(marker), path)
    _yaml(tmp_path / "evil.yaml")
    with pytest.raises(VQGANError, match="refused"):
        read_ckpt(path)
    assert not marker.exists()


def test_lightning_training_objects_load_as_inert_data(tmp_path):
    callbacks = pytest.importorskip("pytorch_lightning.callbacks")
    model = _model()
    cb = callbacks.ModelCheckpoint(dirpath=str(tmp_path))
    extra = {"callbacks": {type(cb): {"best_model_score": torch.tensor(0.5), "dirpath": str(tmp_path)}},
             "epoch": 3, "hyper_parameters": {"lr": 1e-4}, "optimizer_states": [{"state": {}}]}
    path = _ckpt(tmp_path, extra, model)
    loaded = load_taming(path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


def test_gumbel_vq_checkpoint_loads(tmp_path):
    model = _model(quantizer="gumbel")
    path = tmp_path / "g.ckpt"
    torch.save({"state_dict": model.state_dict()}, path)
    _yaml(tmp_path / "g.yaml", target="taming.models.vqgan.GumbelVQ")
    loaded = load_taming(path)
    assert loaded.config.quantizer == "gumbel"
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = loaded.encode(x)
        zq, idx = loaded.quantize_st(z)
        assert torch.equal(idx, loaded.quantize.proj(loaded.quant_conv(loaded.encoder(x * 2 - 1))).argmax(1))
        assert loaded.decode(zq).shape == (1, 3, 16, 16)


def test_unknown_name_is_a_clear_error(tmp_path):
    with pytest.raises(VQGANError, match="no such VQGAN"):
        load_vqgan(tmp_path / "nope")


def test_straight_through_quantisation_passes_gradients_to_z():
    model = _model().requires_grad_(False)
    z = torch.randn(1, 8, 4, 4, requires_grad=True)
    zq, idx = model.quantize_st(z)
    assert torch.allclose(zq.detach(), model.codebook[idx].permute(0, 3, 1, 2), atol=1e-6)  # z + (q - z) rounds
    model.decode(zq).mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_clamp_with_grad_pulls_outside_values_back():
    x = torch.tensor([-0.5, 0.5, 1.5], requires_grad=True)
    clamp_with_grad(x, 0.0, 1.0).sum().backward()  # descent lowers every value: only the one above 1 may follow
    assert x.grad.tolist() == [0.0, 1.0, 1.0]


def test_embedded_vqgan_ships_small_and_reconstructs_held_out_photos():
    pytest.importorskip("skimage")
    from recipes.brivl_lite.heldout import heldout_photos, square_view
    from brivl.viz.vqgan import LITE_FOLDER, WEIGHTS_NAME, psnr

    assert (LITE_FOLDER / WEIGHTS_NAME).stat().st_size <= 25 * 2**20
    model = load_vqgan("lite")
    assert model.factor == 8 and model.config.extra["heldout_psnr_db"] > 20
    photos = heldout_photos()
    views = torch.cat([square_view(photos[k], 128) for k in ("skimage:astronaut", "skimage:chelsea",
                                                             "skimage:coffee", "skimage:camera")])
    with torch.no_grad():
        recon = model.reconstruct(views)
    # Measured 19.71 dB (never trained on these photos); uniform grey scores 11.0 dB, each photo's mean colour 12.2,
    # bicubic down and up by the model's factor 8 (what the latent grid alone keeps) 19.82.
    assert psnr(recon, views) > 19.2
