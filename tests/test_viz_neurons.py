"""viz.neurons: channel activations of real images, top-activating images of a folder, amplifying a channel."""
from pathlib import Path

import pytest
import torch
from PIL import Image

from brivl.viz import neurons as N

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def folder(tmp_path) -> Path:
    g = torch.Generator().manual_seed(0)
    for i in range(5):
        pixels = (torch.rand(24, 24, 3, generator=g) * (i + 1) / 5 * 255).byte().numpy()
        Image.fromarray(pixels).save(tmp_path / f"img{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_channel_activations_one_value_per_image_and_channel(tiny):
    acts = N.channel_activations(tiny, "llp", torch.rand(3, 3, 64, 64))
    assert acts.dim() == 2 and acts.shape[0] == 3
    with pytest.raises(KeyError, match="not one of the model's feature layers"):
        N.channel_activations(tiny, "nope", torch.rand(1, 3, 64, 64))


def test_top_activating_ranks_the_folder_best_first(tiny, folder):
    acts = N.channel_activations(tiny, "llp", torch.stack([N.load_images([p], tiny.image_size)[0]
                                                           for p in N.image_files(folder)]))
    channel = int(acts.std(0).argmax())  # a channel that tells the images apart
    told = []
    top = N.top_activating(tiny, "llp", channel, folder, k=3, batch_size=2, callback=lambda *a: told.append(a))
    assert told == [(2, 5), (4, 5), (5, 5)]  # after each batch: images scored, of how many
    assert len(top.paths) == 3 and len(top.all_paths) == 5  # the .txt is not an image
    assert top.scores == sorted(top.scores, reverse=True)
    assert top.scores[0] == pytest.approx(float(acts[:, channel].max()), rel=1e-4, abs=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        N.top_activating(tiny, "llp", 10**6, folder)
    empty = folder / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no image files"):
        N.top_activating(tiny, "llp", 0, empty)


def test_image_param_starts_at_the_pixels():
    pixels = torch.rand(2, 3, 8, 8) * 0.9 + 0.05
    assert torch.allclose(N.image_param(pixels)(), pixels, atol=1e-5)


def test_amplify_raises_the_channel_in_a_real_image(tiny, folder):
    pixels = N.load_images(N.image_files(folder)[-1:], 64)
    acts = N.channel_activations(tiny, "llp", pixels)[0]
    channel = int(acts.argmax())
    result = N.amplify(tiny, "llp", channel, pixels, steps=5, lr=0.05)
    assert result.history[-1, 0] > result.history[0, 0]
    assert result.images.shape == pixels.shape
