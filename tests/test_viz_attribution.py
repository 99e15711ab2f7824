"""Attribution: patch scores against hand computations, the MSPP box layout on the image plane, gradient
saliency (exact, localised, seeded), and the matplotlib overlay."""
import io

import pytest
import torch
import torch.nn.functional as F

from brivl.viz import attribution as A

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _images(n=2, size=128, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_patch_similarity_is_the_cosine_of_each_patch_to_the_text(tiny):
    x = _images()
    sim = A.patch_similarity(tiny, x, "forest")
    assert sim.shape == (2, 37)
    with torch.no_grad():
        expected = tiny.patch_embeddings(x) @ tiny.encode_text(["forest"])[0]
    assert torch.allclose(sim, expected, atol=1e-5)
    per_row = A.patch_similarity(tiny, x, ["forest", "sea"])
    assert torch.allclose(per_row[0], sim[0], atol=1e-6) and not torch.allclose(per_row[1], sim[1])


def test_fallback_layout_matches_brivls_own_boxes(tiny):
    class NoBoxes:  # a model that has patches but does not say where they are
        pass
    assert torch.allclose(A.patch_boxes(NoBoxes(), 37), tiny.patch_boxes())
    with pytest.raises(ValueError):
        A.patch_boxes(NoBoxes(), 20)


def test_heatmap_puts_each_grid_patch_where_its_box_is(tiny):
    # Score patch k with k: the painted map must show at each pixel the index of the grid box around it,
    # and BriVL's grid runs with the outer loop over x, so box k sits at column k // 6, row k % 6.
    boxes = tiny.patch_boxes()
    heat = A.paint_boxes(torch.arange(37.0)[None], boxes, (60, 60))[0]
    ys, xs = torch.meshgrid(torch.arange(60), torch.arange(60), indexing="ij")
    assert torch.equal(heat, ((xs // 10) * 6 + ys // 10).float())  # the whole-image box (36) is left out


def test_patch_heatmap_has_the_image_size(tiny):
    heat = A.patch_heatmap(tiny, _images(n=1, size=96), "forest")
    assert heat.shape == (1, 96, 96) and torch.isfinite(heat).all()
    sim = A.patch_similarity(tiny, _images(n=1, size=96), "forest")
    assert heat.min() >= sim[0, :36].min() - 1e-6 and heat.max() <= sim[0, :36].max() + 1e-6


def test_saliency_is_the_gradient_of_the_cosine(tiny):
    x = _images()
    grads_before = [p.grad for p in tiny.parameters()]
    sal = A.saliency(tiny, x, "forest")
    xg = x.clone().requires_grad_(True)
    cos = F.cosine_similarity(tiny.encode_image(xg), tiny.encode_text(["forest"]).detach())
    (grad,) = torch.autograd.grad(cos.sum(), xg)
    assert sal.shape == (2, 128, 128)
    assert torch.allclose(sal, grad.abs().amax(dim=1))
    assert all(p.grad is g for p, g in zip(tiny.parameters(), grads_before, strict=True))  # the weights got no gradient


class _TopLeft:
    """A toy TwoTower whose image embedding sees only the top-left quadrant."""

    image_size, embed_dim = 16, 4

    def __init__(self):
        self.proj = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))

    def encode_text(self, texts):
        return F.normalize(torch.ones(len(texts), 4), dim=-1)

    def encode_image(self, pixels):
        h, w = pixels.shape[-2:]
        return F.normalize(pixels[..., : h // 2, : w // 2].mean(dim=(-2, -1)) @ self.proj, dim=-1)

    def feature_layers(self):
        return {}


def test_saliency_is_zero_where_the_model_does_not_look():
    sal = A.saliency(_TopLeft(), _images(n=1, size=16), "anything")[0]
    assert (sal[:8, :8] > 0).all()
    assert sal[8:, :].abs().max() == 0 and sal[:, 8:].abs().max() == 0


def test_smoothgrad_is_seeded(tiny):
    x = _images(n=1)
    a, b = (A.saliency(tiny, x, "forest", smooth=2, seed=1) for _ in range(2))
    c = A.saliency(tiny, x, "forest", smooth=2, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_overlay_blends_image_and_colour_map():
    import matplotlib

    image = torch.full((3, 8, 8), 0.25)
    heat = torch.zeros(4, 4)
    heat[0, 0] = 1.0
    assert torch.allclose(A.overlay(image, heat, alpha=0.0), image)
    full = A.overlay(image, heat, alpha=1.0, cmap="viridis", )
    assert full.shape == (3, 8, 8) and full.min() >= 0 and full.max() <= 1
    lo = torch.tensor(matplotlib.colormaps["viridis"](0.0)[:3], dtype=torch.float32)
    assert torch.allclose(full[:, -1, -1], lo, atol=1e-6)  # far from the hot corner: the map's cold end
    assert not torch.allclose(full[:, 0, 0], lo)


def test_plot_draws_on_matplotlib_axes(tiny):
    x = _images(n=1, size=64)
    heat = A.patch_heatmap(tiny, x, "forest")[0]
    ax = A.plot(x[0], heat, title="forest")
    assert ax.get_title() == "forest" and len(ax.get_images()) == 1
    buf = io.BytesIO()
    ax.figure.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"


def test_models_without_patches_are_told_to_use_saliency():
    with pytest.raises(TypeError, match="saliency"):
        A.patch_similarity(_TopLeft(), _images(n=1, size=16), "x")


def test_overlay_saturates_the_hottest_pixels_so_the_rest_stays_visible():
    heat = torch.linspace(0, 1, 400).reshape(20, 20)
    heat[0, 0] = 1000.0  # one outlier, as gradient saliency has
    image = torch.zeros(3, 20, 20)
    clipped = A.overlay(image, heat, alpha=1.0, cmap="gray")
    plain = A.overlay(image, heat, alpha=1.0, cmap="gray", clip=1.0)
    assert clipped[0, 10, 10] > 0.3  # a mid value is mid-grey when clipped ...
    assert plain[0, 10, 10] < 0.01  # ... and black when the outlier sets the scale
