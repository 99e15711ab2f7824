"""Image-text retrieval: Recall@1/5/10 in both directions and their sum (Recall@SUM), as in the paper's tables."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..data import Pair
from ..errors import UserInputError
from ..images import load_images
from ..progress import bar as progress_bar


def _recalls(i2t_rank: Tensor, t2i_rank: Tensor, ks: Sequence[int]) -> dict[str, float]:
    """Recall@K (in %) in both directions from the 0-based rank of each query's true partner, and their sum."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"i2t_R@{k}"] = 100.0 * (i2t_rank < k).float().mean().item()
    for k in ks:
        out[f"t2i_R@{k}"] = 100.0 * (t2i_rank < k).float().mean().item()
    out["R@SUM"] = sum(out.values())
    return out


def recall_at_k(sim: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K (in %) of an [n, n] image x text similarity matrix whose pair i is image i with text i."""
    if sim.dim() != 2 or sim.shape[0] != sim.shape[1]:
        raise UserInputError(f"expected a square image x text similarity matrix, got {tuple(sim.shape)}")
    n = sim.shape[0]
    truth = torch.arange(n, device=sim.device)
    # Rank of the true partner: how many candidates score strictly higher.
    i2t_rank = (sim > sim[truth, truth][:, None]).sum(dim=1)
    t2i_rank = (sim.T > sim[truth, truth][:, None]).sum(dim=1)
    return _recalls(i2t_rank, t2i_rank, ks)


@torch.no_grad()
def embed_pairs(model, pairs: Sequence[Pair], batch_size: int = 32, progress: bool = False) -> tuple[Tensor, Tensor]:
    """Image and text embeddings [n, d] of image-text pairs, in batches."""
    imgs, txts = [], []
    for start in progress_bar(range(0, len(pairs), batch_size), progress=progress, desc="embedding", unit="batch"):
        chunk = pairs[start:start + batch_size]
        imgs.append(model.encode_image(load_images([p.image for p in chunk], model.image_size)))
        txts.append(model.encode_text([p.text for p in chunk]))
    return torch.cat(imgs), torch.cat(txts)


def retrieval_metrics(model, pairs: Sequence[Pair], batch_size: int = 32) -> dict[str, float]:
    """Recall@1/5/10 (image->text and text->image) and Recall@SUM of a model on held-out pairs."""
    img, txt = embed_pairs(model, pairs, batch_size)
    return recall_at_k(img @ txt.T)


def recall_at_k_multi(sim: Tensor, caption_image: Sequence[int] | Tensor,
                      ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K (in %) of an [n_images, n_captions] similarity matrix where images may have several captions.

    `caption_image[j]` is the image caption j describes. Image->text: an image is a hit at K when any of its captions
    ranks within the top K texts (its best caption's rank: the number of other images' captions scoring strictly
    higher). Text->image: each caption is a hit at K when its own image ranks within the top K images. With one
    caption per image in order this equals `recall_at_k`.
    """
    owner = torch.as_tensor(caption_image, device=sim.device, dtype=torch.long)
    if sim.dim() != 2 or owner.shape != (sim.shape[1],):
        raise UserInputError(f"expected an [images, captions] similarity matrix and one image index per caption, got "
                         f"{tuple(sim.shape)} and {tuple(owner.shape)}")
    n_img = sim.shape[0]
    if owner.numel() and (owner.min() < 0 or owner.max() >= n_img):
        raise UserInputError("caption_image holds an image index outside the similarity matrix")
    own = owner[None, :] == torch.arange(n_img, device=sim.device)[:, None]  # [images, captions]
    if not own.any(dim=1).all():
        raise UserInputError("every image needs at least one caption")
    best = sim.masked_fill(~own, float("-inf")).max(dim=1).values  # score of each image's best caption
    i2t_rank = ((sim > best[:, None]) & ~own).sum(dim=1)
    pos = sim[owner, torch.arange(sim.shape[1], device=sim.device)]  # each caption's score with its own image
    t2i_rank = (sim > pos[None, :]).sum(dim=0)
    return _recalls(i2t_rank, t2i_rank, ks)
