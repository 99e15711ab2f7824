"""A taming-format checkpoint decodes identically on our modules and on taming-transformers' own VQModel.

taming-transformers (a test-only dependency) imports pytorch-lightning 1.x names; the alias that lets it import
under Lightning 2.x lives here and nowhere else.
"""
import sys
import types

import pytest
import torch
import yaml

from brivl.viz.vqgan import load_taming, load_vqgan, save_vqgan

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_DD = {"double_z": False, "z_channels": 8, "resolution": 32, "in_channels": 3, "out_ch": 3, "ch": 32,
           "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [16], "dropout": 0.0}


def _taming_vqmodel():
    """taming's VQModel class, importable under pytorch-lightning 2.x through a one-name alias."""
    pytest.importorskip("pytorch_lightning")
    pytest.importorskip("omegaconf")
    if "pytorch_lightning.utilities.distributed" not in sys.modules:
        from pytorch_lightning.utilities import rank_zero_only

        shim = types.ModuleType("pytorch_lightning.utilities.distributed")
        shim.rank_zero_only = rank_zero_only  # moved to pytorch_lightning.utilities in Lightning 1.x -> 2.x
        sys.modules["pytorch_lightning.utilities.distributed"] = shim
    vqgan = pytest.importorskip("taming.models.vqgan")
    return vqgan.VQModel


def _write_taming(tmp_path, seed=0):
    """A random-init tiny taming VQModel saved as taming does: .ckpt {"state_dict": ...} and .yaml."""
    VQModel = _taming_vqmodel()
    torch.manual_seed(seed)
    params = {"embed_dim": 8, "n_embed": 16, "ddconfig": TINY_DD,
              "lossconfig": {"target": "torch.nn.Identity"}}
    ref = VQModel(**params).eval()
    with torch.no_grad():  # spread the codebook and biases so the test is not dominated by near-zero values
        ref.quantize.embedding.weight.normal_()
        for m in ref.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    ckpt, cfg = tmp_path / "tiny.ckpt", tmp_path / "tiny.yaml"
    torch.save({"state_dict": ref.state_dict(), "global_step": 7}, ckpt)
    cfg.write_text(yaml.safe_dump({"model": {"target": "taming.models.vqgan.VQModel", "params": params}}))
    return ref, ckpt, cfg


def test_taming_checkpoint_decodes_like_taming(tmp_path):
    ref, ckpt, cfg = _write_taming(tmp_path)
    ours = load_taming(ckpt, cfg)
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 16, (2, 16, 16), generator=g)
    with torch.no_grad():
        zq = ours.codebook[codes].permute(0, 3, 1, 2)
        theirs = ref.decode(zq)
        mine = ours.decode_raw(zq)
        x = torch.rand(2, 3, 32, 32, generator=g)
        ref_quant, _, (_, _, ref_idx) = ref.encode(x * 2 - 1)
        my_zq, my_idx = ours.quantize_st(ours.encode(x))
    diff = (theirs - mine).abs().max().item()
    assert theirs.abs().max() > 0.1  # a real signal, not two near-zero outputs
    assert diff <= 1e-4, diff
    assert torch.equal(my_idx.flatten(), ref_idx.flatten())
    assert (ref_quant - my_zq).abs().max().item() <= 1e-5
    print(f"parity max abs diff: {diff:.2e}")


def test_converted_folder_round_trips(tmp_path):
    _, ckpt, cfg = _write_taming(tmp_path)
    ours = load_taming(ckpt, cfg)
    save_vqgan(ours, tmp_path / "folder")
    again = load_vqgan(tmp_path / "folder")
    codes = torch.randint(0, 16, (1, 8, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(ours.decode_indices(codes), again.decode_indices(codes))
