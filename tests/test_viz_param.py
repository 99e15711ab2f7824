"""Image parameterisations: range, size, seeding, the 1/f spectrum and the colour decorrelation."""
import pytest
import torch

from brivl.viz import param as P


@pytest.mark.parametrize("kind", ["fft", "pixel"])
@pytest.mark.parametrize("size", [32, (24, 40), 33])
def test_images_lie_in_the_unit_range_at_the_requested_size(kind, size):
    img = P.image(3, size, kind, seed=0)
    # Push the parameters far out: the sigmoid must still keep every pixel inside [0, 1].
    with torch.no_grad():
        for p in img.parameters():
            p.mul_(1e4)
    x = img()
    h, w = (size, size) if isinstance(size, int) else size
    assert x.shape == (3, 3, h, w)
    assert x.min() >= 0 and x.max() <= 1


@pytest.mark.parametrize("kind", ["fft", "pixel"])
def test_initial_image_is_faint_noise_around_grey(kind):
    x = P.image(2, 32, kind, seed=0)()
    assert (x - 0.5).abs().max() < 0.05  # objectives, not the initialisation, decide what appears
    assert x.std() > 0  # but not exactly flat: symmetry must be broken


@pytest.mark.parametrize("kind", ["fft", "pixel"])
def test_same_seed_same_image_and_different_seeds_differ(kind):
    a, b, c = (P.image(2, 32, kind, seed=s)() for s in (7, 7, 8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("kind", ["fft", "pixel"])
def test_images_are_differentiable_in_their_parameters(kind):
    img = P.image(1, 16, kind)
    img()[0, 0, 3, 5].backward()
    grads = [p.grad for p in img.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_unknown_param_kind_is_refused():
    with pytest.raises(ValueError, match="fft"):
        P.image(1, 16, "wavelet")


def test_fft_scale_is_one_over_frequency_with_capped_dc():
    s = P.fft_scale(16, 16)
    assert s.shape == (16, 9)
    assert s[0, 0] == pytest.approx(16.0)  # DC capped at 1 / (1/16)
    assert s[0, 1] == pytest.approx(16.0)  # frequency 1/16
    assert s[0, 2] == pytest.approx(8.0)  # frequency 2/16: half the amplitude
    assert s[0, 8] == pytest.approx(2.0)  # Nyquist, 8/16


def test_fft_images_have_more_low_than_high_frequency_energy():
    # The point of the 1/f scaling: equal random spectrum values make a smooth, not a pixel-noise, image.
    img = P.FFTImage(4, 64, decorrelate=False, generator=torch.Generator().manual_seed(0), std=1.0)
    x = img.raw()
    power = torch.fft.rfft2(x).abs().square().mean(dim=(0, 1))
    assert power[:4, :4].mean() > 20 * power[16:, 16:].mean()


def test_colour_matrix_is_lucids_normalised_square_root():
    m = P.COLOR_CORRELATION
    assert m.norm(dim=0).max() == pytest.approx(1.0)
    assert torch.allclose(m * P.COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max(), P.COLOR_CORRELATION_SVD_SQRT)
    # First axis: luminance, an equal mix of R, G and B.
    assert torch.allclose(m[:, 0], m[:, 0].mean().expand(3), atol=0.02)


def test_decorrelated_axes_map_through_the_colour_matrix():
    x = torch.zeros(1, 3, 2, 2)
    x[0, 1] = 1.0  # one unit along the second decorrelated axis
    rgb = P.decorrelated_to_rgb(x)
    assert torch.allclose(rgb[0, :, 0, 0], P.COLOR_CORRELATION[:, 1])
    img = P.PixelImage(1, 2, decorrelate=True)
    with torch.no_grad():
        img.pixels.copy_(x)
    assert torch.allclose(img(), torch.sigmoid(rgb))
