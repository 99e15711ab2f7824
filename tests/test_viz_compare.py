"""Side by side: two models render the same texts at the same seed; every render is scored under both models (the
numbers are the cosines each model gives), on the grid, in the JSON, from the command line and in the studio."""
import json

import pytest
import torch
import torch.nn.functional as F
from hf_tiny import make_folder  # tests/hf_tiny.py
from PIL import Image

import brivl
from brivl.errors import UserInputError
from brivl.viz import compare

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("peer"), "clip")


def test_every_render_is_scored_under_both_models(tiny, peer, tmp_path):
    clip = brivl.load(f"hf:{peer}")
    texts = ["a red car", "夕阳下的大海"]
    result = compare.compare_imagine([tiny, clip], ["tiny", "tiny-clip"], texts, steps=2, size=32, seed=3)
    assert result.images.shape == (2, 2, 3, 32, 32) and result.scores.shape == (2, 2, 2)
    assert result.settings["size"] == 32 and result.settings["seed"] == 3
    with torch.no_grad():
        for m in range(2):
            for j, judge in enumerate([tiny, clip]):
                z = F.normalize(judge.encode_image(result.images[m]), dim=-1)
                t = F.normalize(judge.encode_text(texts), dim=-1)
                assert torch.allclose(result.scores[m, j], (z * t).sum(-1), atol=1e-5)
                sims = z @ t.T  # margin: own text against the grid's other text
                assert torch.allclose(result.margin[m, j], sims.diagonal() - sims.flip(-1).diagonal(), atol=1e-5)
    again = compare.compare_imagine([tiny, clip], ["tiny", "tiny-clip"], texts, steps=2, size=32, seed=3)
    assert torch.equal(again.images, result.images)  # same seed, same settings: the same renders
    png, meta = compare.write(result, tmp_path / "grid.png")
    data = json.loads(meta.read_text(encoding="utf-8"))
    assert data["models"] == ["tiny", "tiny-clip"] and len(data["renders"]) == 4 and data["image"] == "grid.png"
    first = data["renders"][1]
    assert first["rendered_by"] == "tiny" and first["text"] == texts[1]
    assert first["cosine"]["tiny-clip"] == round(float(result.scores[0, 1, 1]), 4)
    assert first["margin"]["tiny"] == round(float(result.margin[0, 0, 1]), 4)
    assert set(data["grey_baseline"]) == {"tiny", "tiny-clip"} and len(data["grey_baseline"]["tiny"]) == 2
    with Image.open(png) as im:
        assert im.format == "PNG" and min(im.size) > 4 * 32  # a 2 x 2 grid of 32 px renders, drawn at 2.2 in a cell
    with pytest.raises(UserInputError, match="2 to 8 models"):
        compare.compare_imagine([tiny], ["tiny"], texts, steps=1)


def test_the_compare_command_writes_the_grid_and_prints_the_scores(peer, tmp_path, capsys):
    from brivl.cli import main

    out = tmp_path / "c.png"
    code = main(["compare", "imagine", "tiny", f"hf:{peer}", "a cat", "--steps", "2", "--size", "32", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert data["models"] == ["tiny", f"hf:{peer}"] and data["steps"] == 2
    assert captured.out.count("cosine under tiny") == 2
    assert main(["compare", "imagine", "tiny", "hf:/no/such/folder", "a cat", "--steps", "2"]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_studio_model_b_is_not_tiny_by_default():
    from app.models import ModelPool
    from app.tabs.compare import _second_model

    class Studio:  # the one attribute _second_model reads
        def __init__(self, names):
            self.pool = ModelPool(names)

    assert _second_model(Studio(["brivl-lite", "tiny"])) is None
    assert _second_model(Studio(["brivl-lite"])) is None
    assert _second_model(Studio(["brivl-lite", "tiny", "hf:/models/clip"])) == "hf:/models/clip"
