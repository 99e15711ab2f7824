"""`brivl figures all`: every covered figure into its own folder plus an index page, on the tiny model with
small settings (the default model and full settings are the command's defaults)."""
import json

import pytest
from PIL import Image

from brivl.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _random_vqgan():
    """A small VQGAN with random weights: Fig. 3's machinery runs without the embedded one."""
    import torch

    from brivl.viz.vqgan import VQGAN, VQGANConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vq = VQGAN(VQGANConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), resolution=32,
                               z_channels=8, embed_dim=8, n_embed=64))
    return vq.eval().requires_grad_(False)


@pytest.mark.slow
def test_regenerate_all_writes_every_figure_and_an_index(tiny, tmp_path, monkeypatch):
    from brivl.viz.figures_all import ALL, regenerate_all

    monkeypatch.setenv("BRIVL_CACHE", str(tmp_path / "cache"))  # phrase indexes of this test stay here
    out = tmp_path / "figs"
    summary = regenerate_all(tiny, out, model_name="tiny", steps=2, size=48, phrase_limit=60, layout="pca",
                             s2a_pairs=24, vqgan=_random_vqgan(), log=lambda _: None)
    status = {f["figure"]: f for f in summary["figures"]}
    assert list(status) == list(ALL)
    for key in ALL:
        assert status[key]["ok"], status[key]
    for png in ["fig2/fig2.png", "fig3/fig3.png", "fig4c/fig4c.png", "fig5c/fig5c.png"]:
        with Image.open(out / png) as im:
            assert im.format == "PNG" and min(im.size) > 100
    assert json.loads((out / "fig3/fig3.json").read_text())["steps"] == 2
    fig2 = json.loads((out / "fig2/fig2.json").read_text())
    assert fig2["steps"] == 2 and fig2["seed"] == 0 and len(fig2["channels"]) == 3  # tiny's LLP: scaled channels
    table = (out / "s2a/s2a.md").read_text()
    assert "Recall@SUM" in table and "tiny (random weights: chance level)" in table
    page = (out / "index.html").read_text(encoding="utf-8")
    for key in ALL:
        assert f"id='{key}'" in page
    assert "<img src='fig2/fig2.png'" in page and "<table>" in page and "&quot;steps&quot;: 2" in page
    assert "![fig4c](fig4c/fig4c.png)" in (out / "index.md").read_text(encoding="utf-8")


def test_cli_all_runs_the_chosen_figures(capsys, tmp_path):
    code = main(["figures", "all", "--out", str(tmp_path), "--model", "tiny", "--steps", "2", "--size", "48",
                 "--only", "fig4c"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "index.html (1 of 1 figures" in out
    info = json.loads((tmp_path / "fig4c" / "fig4c.json").read_text())
    assert info["prompts"] == ["baseball field viewed from above", "从上方俯瞰的棒球场"] and info["steps"] == 2


@pytest.mark.parametrize("argv, message", [
    (["figures", "all"], "figures all needs --out DIR"),
    (["figures", "all", "--out", "x", "--only", "fig9"], "--only takes"),
    (["figures"], "name a figure"),
])
def test_cli_all_bad_arguments(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
