"""Image parameterisations: a batch of learnable images, each rendered into RGB pixels in [0, 1].

Two bases (Olah et al., "Feature Visualization", Distill 2017, and Lucid): plain pixels, and a Fourier
spectrum scaled by 1/frequency. Either can live in decorrelated colour axes. A sigmoid squashes the result
into [0, 1], so pixels never leave the range `encode_image` accepts and never lose their gradient to a clamp.
"""
from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from brivl.errors import UserInputError

ParamKind = Literal["fft", "pixel"]

# Square root of the ImageNet colour covariance (Lucid's `color_correlation_svd_sqrt`): its columns are the
# principal colour axes scaled by the square root of their variance. Optimising in these axes lets one Adam
# step move luminance and the two chroma directions independently instead of pushing correlated R, G, B.
COLOR_CORRELATION_SVD_SQRT = torch.tensor([[0.26, 0.09, 0.02],
                                           [0.27, 0.00, -0.05],
                                           [0.27, -0.09, 0.03]])
# Lucid divides by the largest column norm so that no colour axis is amplified.
COLOR_CORRELATION = COLOR_CORRELATION_SVD_SQRT / COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()

# Initial scale of the learnable values: small, so the first image is a near-uniform grey (sigmoid(0) = 0.5)
# with faint noise, and the objective, not the initialisation, decides what appears.
INIT_STD = 0.01
# Lucid's FFT images divide by 4 before the colour transform: with the 1/f scaling the raw inverse transform
# has a spread of a few units, and the sigmoid would otherwise saturate within a few steps.
FFT_MAGIC = 4.0


@runtime_checkable
class Sampled(Protocol):
    """A parameterisation that draws fresh randomness each step (VQGAN logits' Gumbel noise): the render loop
    calls sample(g) with its seeded generator while optimising, and plain call() for the final image."""

    def sample(self, generator: torch.Generator) -> Tensor:
        """Images [n, 3, H, W] in [0, 1] for one optimisation step."""
        ...


@runtime_checkable
class Constrained(Protocol):
    """A parameterisation with a constraint to restore after each optimiser step (VQGAN z: the codebook's range)."""

    def after_step(self) -> None:
        """Project the parameters back into their allowed set."""
        ...


def _as_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    """Normalise an image size to (height, width), refusing non-positive sides."""
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise UserInputError(f"image size must be positive, got {size}")
    return h, w


def decorrelated_to_rgb(x: Tensor) -> Tensor:
    """Map [n, 3, H, W] values from the decorrelated colour axes to (unsquashed) RGB."""
    return torch.einsum("nchw,dc->ndhw", x, COLOR_CORRELATION.to(device=x.device, dtype=x.dtype))


def fft_scale(h: int, w: int, decay: float = 1.0) -> Tensor:
    """1/f^decay amplitude per rfft2 frequency [h, w//2+1], with the lowest frequency capped at 1/max(h, w)."""
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    freqs = (fy.square() + fx.square()).sqrt()
    # Natural images have a ~1/f amplitude spectrum; scaling the learnable spectrum by it lets Adam's
    # per-coordinate steps give every frequency equal footing, so coarse structure forms before pixel noise.
    return 1.0 / freqs.clamp_min(1.0 / max(h, w)) ** decay


class ImageParam(nn.Module):
    """A batch of learnable images; calling it returns RGB pixels [n, 3, H, W] in [0, 1] (differentiable)."""

    def __init__(self, n: int, size: int | tuple[int, int], decorrelate: bool = True):
        super().__init__()
        if n < 1:
            raise UserInputError(f"the batch needs at least one image, got n={n}")
        self.n = n
        self.height, self.width = _as_hw(size)
        self.decorrelate = decorrelate

    def raw(self) -> Tensor:
        """The unsquashed image [n, 3, H, W] in the parameterisation's colour axes."""
        raise NotImplementedError

    def forward(self) -> Tensor:
        """RGB pixels [n, 3, H, W] in [0, 1]."""
        x = self.raw()
        if self.decorrelate:
            x = decorrelated_to_rgb(x)
        return torch.sigmoid(x)


class PixelImage(ImageParam):
    """Each pixel value is learned directly (before the colour transform and sigmoid)."""

    def __init__(self, n: int, size: int | tuple[int, int], decorrelate: bool = True,
                 generator: torch.Generator | None = None, std: float = INIT_STD):
        super().__init__(n, size, decorrelate)
        init = torch.randn(n, 3, self.height, self.width, generator=generator) * std
        self.pixels = nn.Parameter(init)

    def raw(self) -> Tensor:
        """The learned pixel values."""
        return self.pixels


class FFTImage(ImageParam):
    """Images learned as a 1/f-scaled rfft2 spectrum, turned into pixels by an orthonormal inverse FFT."""

    def __init__(self, n: int, size: int | tuple[int, int], decorrelate: bool = True,
                 generator: torch.Generator | None = None, std: float = INIT_STD, decay: float = 1.0):
        super().__init__(n, size, decorrelate)
        h, w = self.height, self.width
        self.register_buffer("scale", fft_scale(h, w, decay), persistent=False)
        # Real and imaginary parts as a trailing axis of 2: optimisers and generators handle real tensors.
        init = torch.randn(n, 3, h, w // 2 + 1, 2, generator=generator) * std
        self.spectrum = nn.Parameter(init)

    def raw(self) -> Tensor:
        """Inverse FFT of the scaled spectrum, divided by Lucid's constant."""
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        # norm="ortho" equals Lucid's sqrt(h*w) factor with TF's 1/(h*w) inverse: same images, same step sizes.
        image = torch.fft.irfft2(spectrum, s=(self.height, self.width), norm="ortho")
        return image / FFT_MAGIC


def image(n: int = 1, size: int | tuple[int, int] = 128, param: ParamKind = "fft", decorrelate: bool = True,
          seed: int = 0, device: torch.device | str | None = None) -> ImageParam:
    """A seeded batch of n learnable images of the given size ("fft" or "pixel" basis)."""
    # The initial values come from a CPU generator, so a seed gives the same start on any device.
    g = torch.Generator().manual_seed(seed)
    if param == "fft":
        module: ImageParam = FFTImage(n, size, decorrelate, generator=g)
    elif param == "pixel":
        module = PixelImage(n, size, decorrelate, generator=g)
    else:
        raise UserInputError(f"unknown image parameterisation {param!r}; choose 'fft' or 'pixel'")
    return module.to(device) if device is not None else module
