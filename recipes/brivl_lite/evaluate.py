"""The brivl-lite quality measures of issue 5: Chinese zero-shot and cross-lingual retrieval.

(Teacher agreement on the held-out photos is `recipes.brivl_lite.heldout.teacher_agreement`.)
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor
from brivl.progress import bar as progress_bar

from brivl.eval.backbone import TextBackboneModel
from brivl.eval.retrieval import recall_at_k
from brivl.eval.zeroshot import topk_hits, zero_shot_logits
from brivl.lite.efficientnet_lite import load_efficientnet_lite

from .heldout import heldout_views, teacher_top1
from .recipe import heldout_sentence_pairs, sentence_pair
from .synthesis import synthesize

ZH_PROMPT = "一张{}的照片。"
EVAL_SYNTH_SEED = 100_000  # far from the recipe's seeds (0 + batch index): these images are never trained on


@torch.no_grad()
def _zero_shot(model, views: Tensor, class_emb: Tensor, targets: Tensor) -> dict[str, float]:
    if len(views) == 0:
        return {"top1": float("nan"), "top5": float("nan"), "images": 0}
    logits = zero_shot_logits(model, views, class_emb)
    return {**topk_hits(logits, targets, ks=(1, 5)), "images": len(views)}


def synthesized_eval_images(classes: list[int], size: int = 128, steps: int = 120, seed: int = EVAL_SYNTH_SEED,
                            progress: bool = False) -> Tensor:
    """Fresh DeepInversion images of `classes` (other seeds than the recipe's), upsampled to 224 px."""
    teacher = load_efficientnet_lite(0)
    out = []
    chunks = [classes[i:i + 16] for i in range(0, len(classes), 16)]
    for b, chunk in enumerate(progress_bar(chunks, progress=progress, desc="synthesising eval images")):
        with torch.enable_grad():  # the synthesis optimises pixels, also when called under no_grad
            out.append(synthesize(teacher, chunk, size=size, steps=steps, seed=seed + b))
    images = torch.cat(out)
    return F.interpolate(images, size=(224, 224), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


@torch.no_grad()
def chinese_zero_shot(model, names: Mapping[int, str], synthesized: Tensor | None = None,
                      template: str = ZH_PROMPT, crops_per_photo: int = 8, seed: int = 0) -> dict[str, dict]:
    """Zero-shot over Chinese prompts for the classes in `names` (ImageNet index -> Chinese name).

    Two image sets: synthesized images of those classes (one per class, in `names` order; made when not
    given), and the held-out real photos and crops whose teacher top-1 is one of those classes.
    """
    classes = list(names)
    class_emb = model.encode_text([template.format(names[c]) for c in classes])
    if synthesized is None:
        synthesized = synthesized_eval_images(classes)
    result = {"synthesized": _zero_shot(model, synthesized, class_emb, torch.arange(len(classes)))}
    views = heldout_views(crops_per_photo, seed)
    top = teacher_top1(views)
    index = {c: i for i, c in enumerate(classes)}
    keep = [i for i, t in enumerate(top.tolist()) if t in index]
    targets = torch.tensor([index[int(top[i])] for i in keep], dtype=torch.long)
    result["heldout_photos"] = _zero_shot(model, views[keep], class_emb, targets)
    return result


@torch.no_grad()
def cross_lingual_retrieval(model, n: int = 200) -> dict[str, float]:
    """Recall@1 English->Chinese and Chinese->English over the recipe's held-out parallel sentences.

    The same numbers for the text backbone alone are returned as `backbone_*`, the reference the heads
    should keep close to.
    """
    pairs = [sentence_pair(t, c) for t, c in heldout_sentence_pairs(n)]
    en, zh = [p[0] for p in pairs], [p[1] for p in pairs]
    out = {}
    for prefix, embed in (("", model.encode_text), ("backbone_", TextBackboneModel(model).encode_text)):
        r = recall_at_k(embed(en) @ embed(zh).T, ks=(1, 5))
        out[f"{prefix}en2zh_R@1"], out[f"{prefix}zh2en_R@1"] = r["i2t_R@1"], r["t2i_R@1"]
        out[f"{prefix}en2zh_R@5"], out[f"{prefix}zh2en_R@5"] = r["i2t_R@5"], r["t2i_R@5"]
    out["pairs"] = len(pairs)
    return out
