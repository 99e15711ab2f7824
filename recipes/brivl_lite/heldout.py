"""The held-out real photos that packages ship, and the teacher-agreement test of zero-shot classification.

These photos are never used for training: they measure whether a model built from synthetic data
generalises to real images.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from brivl.eval.zeroshot import DEFAULT_TEMPLATES, class_embeddings, topk_hits, zero_shot_logits
from brivl.lite.efficientnet_lite import load_efficientnet_lite, preprocess_efficientnet_lite, short_class_names

# Natural photos in scikit-image's bundled data (no download needed).
MATPLOTLIB_PHOTOS = ("grace_hopper.jpg",)
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "camera", "clock", "coins",
                  "moon", "grass", "gravel", "brick", "hubble_deep_field", "immunohistochemistry", "retina", "page")


def _to_tensor(array: np.ndarray) -> Tensor:
    a = np.asarray(array)
    if a.dtype != np.uint8:
        a = (a / max(float(a.max()), 1e-8) * 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return torch.from_numpy(a[..., :3].copy()).permute(2, 0, 1).float() / 255


def heldout_photos() -> dict[str, Tensor]:
    """Real photos shipped with scikit-image (and scikit-learn / matplotlib when installed): name -> [3, H, W]."""
    photos: dict[str, Tensor] = {}
    try:
        import skimage.data as data  # deferred: scikit-image is a test-only dependency
    except ImportError:
        raise ImportError("the held-out photos come from scikit-image: pip install scikit-image==0.26.0") from None
    for name in SKIMAGE_PHOTOS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img = getattr(data, name)()
        except Exception:  # noqa: BLE001 - a photo that needs a download is left out, offline
            continue
        photos[f"skimage:{name}"] = _to_tensor(img[0] if isinstance(img, tuple) else img)
    try:
        from sklearn.datasets import load_sample_images  # deferred: scikit-learn is a test-only dependency

        samples = load_sample_images()
        for fname, img in zip(samples.filenames, samples.images):
            photos[f"sklearn:{fname.rsplit('/', 1)[-1]}"] = _to_tensor(img)
    except ImportError:
        pass
    try:
        from matplotlib import cbook  # deferred: matplotlib loads only to draw

        for fname in MATPLOTLIB_PHOTOS:
            with Image.open(cbook.get_sample_data(fname, asfileobj=False)) as im:
                photos[f"matplotlib:{fname}"] = _to_tensor(np.asarray(im.convert("RGB")))
    except (ImportError, OSError):
        pass
    return photos


def square_view(img: Tensor, size: int = 224) -> Tensor:
    """The centred square of a [3, H, W] photo resized whole to [1, 3, size, size] (no further crop)."""
    _, h, w = img.shape
    side = min(h, w)
    view = img[None, :, (h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    return F.interpolate(view, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def heldout_views(crops_per_photo: int = 8, seed: int = 0) -> Tensor:
    """Every held-out photo and `crops_per_photo` random crops of it, as square views [N, 3, 224, 224]."""
    views = []
    for i, photo in enumerate(heldout_photos().values()):
        views += [square_view(v) for v in [photo] + random_crops(photo, crops_per_photo, seed + i)]
    return torch.cat(views)


def random_crops(img: Tensor, n: int, seed: int, min_scale: float = 0.3) -> list[Tensor]:
    """n random square-ish crops covering min_scale..1 of the shorter side, from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    _, h, w = img.shape
    out = []
    for _ in range(n):
        side = int(min(h, w) * (min_scale + (1 - min_scale) * float(torch.rand((), generator=g))))
        top = int(torch.randint(0, h - side + 1, (), generator=g))
        left = int(torch.randint(0, w - side + 1, (), generator=g))
        out.append(img[:, top:top + side, left:left + side])
    return out


@torch.no_grad()
def teacher_top1(views: Tensor) -> Tensor:
    """The EfficientNet-Lite0 classifier's top-1 ImageNet class of each square view [N, 3, 224, 224] (no crop)."""
    teacher = load_efficientnet_lite(0).eval()
    return torch.cat([teacher(preprocess_efficientnet_lite(views[i:i + 32], crop_pct=1.0)).argmax(1)
                      for i in range(0, len(views), 32)])


@torch.no_grad()
def teacher_agreement(model, crops_per_photo: int = 8, seed: int = 0, templates=None) -> dict[str, float]:
    """Zero-shot over the 1000 ImageNet class names vs the EfficientNet-Lite0 classifier's top-1 on held-out photos.

    Returns top1/top5 (% of images whose student top-k contains the teacher's top-1) and the image count.
    Teacher and student see the same views: the centred square (or crop), resized whole.
    """
    classes = class_embeddings(model, short_class_names(), templates or DEFAULT_TEMPLATES)
    views = heldout_views(crops_per_photo, seed)
    hits = topk_hits(zero_shot_logits(model, views, classes), teacher_top1(views), ks=(1, 5))
    return {**hits, "images": len(views)}
