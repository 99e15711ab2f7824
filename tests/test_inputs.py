"""Bad inputs get clear errors; odd but valid inputs (long texts, grey/alpha/16-bit images) are handled."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import brivl
from brivl.images import load_image, load_images
from brivl.inputs import InputError

LONG_SENTENCE = "the quick brown fox jumps over the lazy dog. "


@pytest.fixture(scope="module")
def model():
    return brivl.load("tiny")


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --- texts ----------------------------------------------------------------------------------------

def test_empty_text_list_is_refused(model):
    with pytest.raises(InputError, match="no texts"):
        model.encode_text([])


def test_bare_string_is_refused(model):
    with pytest.raises(InputError, match=r"not one string.*\[text\]"):
        model.encode_text("a cat")


@pytest.mark.parametrize("blank", ["", "  ", "\t\n"])
def test_empty_or_blank_text_is_refused_by_index(model, blank):
    with pytest.raises(InputError, match=r"text 1 is empty or only whitespace"):
        model.encode_text(["a cat", blank])


@pytest.mark.parametrize("item, type_name", [(5, "int"), (None, "NoneType"), (b"a cat", "bytes")])
def test_non_string_text_is_refused(model, item, type_name):
    with pytest.raises(InputError, match=rf"text 2 is a {type_name}, not a string"):
        model.encode_text(["a", "b", item])


def test_input_error_is_a_value_error():
    assert issubclass(InputError, ValueError)


def test_tokenize_validates_texts_too(model):
    with pytest.raises(InputError, match="text 0 is empty"):
        model.tokenize([""])


def test_valid_texts_encode_to_unit_rows(model):
    z = model.encode_text(["a cat", "a dog", "the sea"])
    assert z.shape == (3, 32)
    assert torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-5)
    # different texts give different embeddings
    assert not torch.allclose(z[0], z[1], atol=1e-3)


def test_long_text_is_truncated_with_a_warning(model):
    text = (LONG_SENTENCE * 300)[:10_000]
    assert len(text) == 10_000
    with pytest.warns(UserWarning, match="truncated") as record:
        z_long = model.encode_text([text])
    assert z_long.shape == (1, 32)
    message = str(record[0].message)
    assert "32 tokens" in message and "text 0" in message
    # The builtin tokenizer is character-level, so 200 characters are well over 32 tokens:
    # both texts are cut to the same first 32 tokens.
    with pytest.warns(UserWarning, match="truncated"):
        z_cut = model.encode_text([text[:200]])
    assert torch.allclose(z_long, z_cut, atol=1e-6)
    # ... while a text shorter than 32 tokens is not cut, and is embedded differently.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z_short = model.encode_text([text[:12]])
    assert not torch.allclose(z_long, z_short, atol=1e-3)


def test_short_text_gives_no_warning(model):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z = model.encode_text(["a short text"])
    assert z.shape == (1, 32)


# --- image files ----------------------------------------------------------------------------------

def test_text_file_named_jpg_is_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n" * 20)
    with pytest.raises(InputError, match="not an image") as info:
        load_image(path)
    assert "notes.jpg" in str(info.value)


def test_truncated_jpeg_is_reported(tmp_path):
    full = tmp_path / "full.jpg"
    Image.fromarray(_noise(64, 64)).save(full, quality=90)
    assert load_image(full).shape == (3, 64, 64)  # the whole file is fine
    data = full.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated|damaged") as info:
        load_image(cut)
    assert "cut.jpg" in str(info.value)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(InputError, match="no such file") as info:
        load_image(tmp_path / "nowhere.png")
    assert "nowhere.png" in str(info.value)


def test_directory_is_not_an_image_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_image(tmp_path)


def test_rgb_png_reads_exactly(tmp_path):
    array = _noise(20, 30, seed=1)
    path = tmp_path / "rgb.png"
    Image.fromarray(array).save(path)
    x = load_image(path)
    assert x.shape == (3, 20, 30)
    assert x.dtype == torch.float32
    expected = torch.from_numpy(array.astype(np.float32) / 255).permute(2, 0, 1)
    assert torch.allclose(x, expected, atol=1e-6)


def test_grayscale_png_becomes_three_equal_channels(tmp_path):
    grey = np.random.default_rng(2).integers(0, 256, (17, 23), dtype=np.uint8)
    path = tmp_path / "grey.png"
    Image.fromarray(grey, mode="L").save(path)
    x = load_image(path)
    assert x.shape == (3, 17, 23)
    assert x.dtype == torch.float32
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert torch.allclose(x[0], torch.from_numpy(grey.astype(np.float32) / 255), atol=1e-6)
    assert 0.0 <= x.min().item() and x.max().item() <= 1.0


def test_rgba_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[0, 0] = (0, 255, 0, 0)  # fully transparent green: shown as white
    rgba[0, 1] = (255, 0, 0, 255)  # opaque red stays red
    rgba[0, 2] = (0, 0, 255, 128)  # half-transparent blue over white
    rgba[1, :] = (10, 20, 30, 255)
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    x = load_image(path)
    assert x.shape == (3, 2, 3)
    assert x.dtype == torch.float32
    assert torch.allclose(x[:, 0, 0], torch.tensor([1.0, 1.0, 1.0]), atol=1e-6)
    assert torch.allclose(x[:, 0, 1], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)
    assert torch.allclose(x[:, 0, 2], torch.tensor([127 / 255, 127 / 255, 1.0]), atol=2 / 255)
    assert torch.allclose(x[:, 1, 1], torch.tensor([10, 20, 30]) / 255, atol=1e-6)
    assert 0.0 <= x.min().item() and x.max().item() <= 1.0


def test_palette_with_transparency_goes_on_white(tmp_path):
    im = Image.new("P", (4, 4), 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))  # index 0 red, index 1 blue
    im.putpixel((0, 0), 1)
    im.info["transparency"] = 1  # blue is the transparent colour
    path = tmp_path / "palette.png"
    im.save(path, transparency=1)
    x = load_image(path)
    assert x.shape == (3, 4, 4)
    assert torch.allclose(x[:, 0, 0], torch.ones(3), atol=1e-6)
    assert torch.allclose(x[:, 1, 1], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)


def test_16_bit_png_converts_to_rgb(tmp_path):
    deep = (np.arange(12 * 20, dtype=np.uint16).reshape(12, 20) * 200)
    im = Image.fromarray(deep)
    assert im.mode == "I;16"
    path = tmp_path / "deep.png"
    im.save(path)
    x = load_image(path)
    assert x.shape == (3, 12, 20)
    assert x.dtype == torch.float32
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert x.min().item() == 0.0 and abs(x.max().item() - deep.max() / 65535) <= 1 / 255
    # out of 65535, the format's white: not clipped at 255 (most pixels white), not by the brightest pixel
    expected = torch.from_numpy(deep.astype(np.float32) / 65535)
    assert torch.allclose(x[0], expected, atol=1.01 / 255)


def test_uniform_dark_16_bit_grey_stays_dark(tmp_path):
    path = tmp_path / "dark.png"
    Image.fromarray(np.full((8, 8), 1000, dtype=np.uint16)).save(path)
    x = load_image(path)
    assert torch.allclose(x, torch.full_like(x, 1000 / 65535), atol=0.6 / 255)  # not white


def test_load_images_makes_a_square_batch(tmp_path):
    paths = []
    for i, (h, w) in enumerate([(40, 60), (90, 30), (64, 64)]):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(_noise(h, w, seed=i)).save(p)
        paths.append(p)
    batch = load_images(paths, 48)
    assert batch.shape == (3, 3, 48, 48)
    assert batch.dtype == torch.float32
    assert 0.0 <= batch.min().item() and batch.max().item() <= 1.0
    one = load_images([paths[1]], 48)
    assert torch.allclose(batch[1:2], one, atol=1e-7)


def test_load_images_refuses_an_empty_list():
    with pytest.raises(InputError, match="no image files"):
        load_images([], 64)


def test_load_images_names_the_bad_file(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(_noise(8, 8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="bad.png: not an image"):
        load_images([good, bad], 32)


# --- pixel tensors --------------------------------------------------------------------------------

def test_unbatched_tensor_suggests_a_batch_dimension(model):
    with pytest.raises(InputError, match="add a batch dimension") as info:
        model.encode_image(torch.rand(3, 40, 50))
    assert "pixels[None]" in str(info.value) and "(1, 3, 40, 50)" in str(info.value)


@pytest.mark.parametrize("shape", [(2, 1, 40, 40), (2, 4, 40, 40), (40, 40), (1, 1, 3, 40, 40)])
def test_wrong_channel_count_or_rank_is_refused(model, shape):
    with pytest.raises(InputError, match=r"\(N, 3, H, W\)") as info:
        model.encode_image(torch.rand(*shape))
    assert str(shape) in str(info.value)


def test_empty_batch_is_refused(model):
    with pytest.raises(InputError, match="empty dimension"):
        model.encode_image(torch.rand(0, 3, 40, 40))


def test_uint8_pixels_are_refused(model):
    pixels = torch.randint(0, 256, (1, 3, 40, 40), dtype=torch.uint8)
    with pytest.raises(InputError, match="float") as info:
        model.encode_image(pixels)
    assert "255" in str(info.value) and "uint8" in str(info.value)


def test_pixels_in_0_255_are_told_to_divide(model):
    pixels = torch.rand(1, 3, 40, 40) * 255
    with pytest.raises(InputError, match="divide by 255") as info:
        model.encode_image(pixels)
    assert "[0, 1]" in str(info.value)


def test_slightly_out_of_range_pixels_are_refused_without_the_255_hint(model):
    pixels = torch.rand(1, 3, 40, 40) * 2 - 0.5  # in [-0.5, 1.5]
    with pytest.raises(InputError, match=r"must lie in \[0, 1\]") as info:
        model.encode_image(pixels)
    assert "255" not in str(info.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_pixels_are_refused(model, bad):
    pixels = torch.rand(1, 3, 40, 40)
    pixels[0, 1, 5, 7] = bad
    with pytest.raises(InputError, match="NaN or Inf"):
        model.encode_image(pixels)


def test_numpy_array_is_refused(model):
    with pytest.raises(InputError, match="torch.Tensor") as info:
        model.encode_image(np.random.rand(1, 3, 40, 40).astype(np.float32))
    assert "ndarray" in str(info.value)


def test_valid_pixels_of_any_size_give_unit_rows(model):
    pixels = torch.rand(2, 3, 50, 70, generator=torch.Generator().manual_seed(0))
    z = model.encode_image(pixels)
    assert z.shape == (2, 32)
    assert z.dtype == torch.float32
    assert torch.isfinite(z).all()
    assert torch.allclose(z.norm(dim=1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(z[0], z[1], atol=1e-4)


def test_patch_embeddings_refuse_an_unbatched_tensor(model):
    with pytest.raises(InputError, match="add a batch dimension"):
        model.patch_embeddings(torch.rand(3, 64, 64))


def test_patch_embeddings_refuse_wrong_shape_dtype_and_range(model):
    with pytest.raises(InputError, match=r"\(N, 3, H, W\)"):
        model.patch_embeddings(torch.rand(1, 1, 64, 64))
    with pytest.raises(InputError, match="float"):
        model.patch_embeddings(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(InputError, match="divide by 255"):
        model.patch_embeddings(torch.full((1, 3, 64, 64), 200.0))
    with pytest.raises(InputError, match="torch.Tensor"):
        model.patch_embeddings([[0.5]])


def test_patch_embeddings_of_valid_pixels(model):
    pixels = torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(1))
    p = model.patch_embeddings(pixels)
    assert p.shape == (2, 37, 32)
    assert torch.allclose(p.norm(dim=-1), torch.ones(2, 37), atol=1e-5)


def test_float_and_negative_high_depth_images_keep_their_values(tmp_path):
    from PIL import Image

    from brivl.images import load_image

    f = Image.fromarray(np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32), mode="F")
    f.save(tmp_path / "f.tiff")
    got = load_image(tmp_path / "f.tiff")[0]
    assert torch.allclose(got, torch.tensor([[0.0, 0.5], [1.0, 0.25]]), atol=1 / 255)
    i32 = Image.fromarray(np.array([[-100, 0], [1000, 500]], dtype=np.int32), mode="I")
    i32.save(tmp_path / "i.tiff")
    got = load_image(tmp_path / "i.tiff")[0]
    assert torch.allclose(got, torch.tensor([[0.0, 0.0], [1.0, 0.5]]), atol=1 / 255)


def test_loading_tiny_leaves_the_callers_rng_alone():
    torch.manual_seed(999)
    expected = torch.rand(3)
    torch.manual_seed(999)
    brivl.load("tiny")
    assert torch.equal(torch.rand(3), expected)


def test_only_texts_longer_than_max_len_count_as_truncated(model):
    tok = model.tokenizer
    n = next(k for k in range(1, 64) if len(tok(LONG_SENTENCE[:k])["input_ids"]) == 32)  # fills max_len exactly
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = model.tokenize([LONG_SENTENCE[:n], "short", LONG_SENTENCE[:n + 1], LONG_SENTENCE * 3], warn=False)
    assert int(out["truncated"]) == 2 and out["input_ids"].shape == (4, 32)
    assert out["attention_mask"].sum(1).tolist() == [32, len(tok("short")["input_ids"]), 32, 32]


@pytest.mark.parametrize("text", ["caf\udce9", "\ud800 alone"])
def test_lone_surrogates_are_refused_in_one_line(model, text):
    with pytest.raises(InputError, match="text 1 holds a lone surrogate") as info:
        model.encode_text(["fine", text])
    assert "\n" not in str(info.value)


def test_float64_pixels_encode_like_float32(model):
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model.encode_image(x.double()), model.encode_image(x), atol=1e-6)
