"""Distillation of a teacher classifier into image-to-label-prompt similarities: an extra loss term of brivl.train.

Not in the paper; brivl-lite's recipe version 1 adds it to MoCo (`Trainer(cfg, extra_losses=[Distill(...)])`).
The feature cache holds the teacher's logits for every view and the label prompts' hidden states
(brivl.feature_cache); each step draws `classes` label classes, one prompt each, and adds
weight x KL(teacher || softmax(z_img . z_label / temperature)).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from brivl.errors import ConfigError
from brivl.feature_cache import FeatureCacheDataset
from brivl.moco import CrossModalMoCo
from brivl.train import Trainer
from brivl.train_kinds import float_option, int_option


def distill_loss(z_img: Tensor, z_labels: Tensor, teacher_logits: Tensor, temperature: float,
                 teacher_temperature: float = 1.0) -> Tensor:
    """KL(teacher || student) over label prompts: the student's logits are z_img . z_label / temperature.

    z_img [B, d], z_labels [K, d] (one prompt per class), teacher_logits [B, K] for the same K classes.
    Zero exactly when the image-label similarities reproduce the teacher's distribution.
    """
    target = F.softmax(teacher_logits.float() / teacher_temperature, dim=-1)
    student = F.log_softmax((z_img @ z_labels.T).float() / temperature, dim=-1)
    return F.kl_div(student, target, reduction="batchmean")


def sample_label_classes(teacher_logits: torch.Tensor, k: int, top: int) -> torch.Tensor:
    """k distinct classes: every row's top-`top` teacher classes (most confident first), then random others."""
    n_classes = teacher_logits.shape[1]
    ranked = teacher_logits.topk(min(top, n_classes), dim=1).indices.T.reshape(-1).tolist()
    chosen = list(dict.fromkeys(ranked))[:k]
    if len(chosen) < k:
        taken = torch.zeros(n_classes, dtype=torch.bool)
        taken[chosen] = True
        rest = torch.nonzero(~taken).squeeze(1)
        chosen += rest[torch.randperm(len(rest))[:k - len(chosen)]].tolist()
    return torch.tensor(chosen)


@dataclass
class Distill:
    """The distillation term (a brivl.train.LossTerm): logged as `loss_distill`."""

    weight: float = 1.0  # the KD term's weight beside the contrastive loss
    classes: int = 256  # label classes per step: each row's top-`top` teacher classes, then random ones
    top: int = 3
    teacher_temperature: float = 1.0
    name: str = dataclasses.field(default="distill", init=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Distill":
        """From a mapping such as a YAML `distill:` section, refusing unknown options and ill-typed values."""
        data = dict(data or {})
        bad = sorted(set(data) - {f.name for f in dataclasses.fields(cls) if f.init})
        if bad:
            raise ConfigError(f"unknown distill option(s): {', '.join(bad)}")
        term = cls(**data)
        term.weight = float_option("distill.weight", term.weight, 0.0, False)
        term.teacher_temperature = float_option("distill.teacher_temperature", term.teacher_temperature, 0.0, True)
        int_option("distill.classes", term.classes, 1)
        int_option("distill.top", term.top, 1)
        return term

    def setup(self, trainer: Trainer) -> None:
        """Refuse a run whose data is not a feature cache with teacher logits and label prompts."""
        ds = trainer.dataset
        if not (isinstance(ds, FeatureCacheDataset) and ds.teacher_logits is not None and ds.label_shape):
            raise ConfigError(f"distill.weight > 0 needs a feature cache built with teacher logits and label "
                              f"prompts; {trainer.cfg.data} has none")

    def batch_inputs(self, trainer: Trainer, batch: Any, dtype: torch.dtype) -> dict[str, Any]:
        """This step's label classes (drawn from the RNG that checkpoints restore), their prompts and targets."""
        teacher_logits = batch["teacher_logits"]
        n_classes, per_class = trainer.dataset.label_shape
        classes = sample_label_classes(teacher_logits, min(self.classes, n_classes), self.top)
        prompts = torch.randint(per_class, (len(classes),))
        hidden, mask = trainer.dataset.labels(classes, prompts)
        return {"label_hidden": hidden.to(trainer.device, dtype), "label_mask": mask.to(trainer.device),
                "teacher_logits": teacher_logits[:, classes].to(trainer.device)}

    def loss(self, moco: CrossModalMoCo, z_img: Tensor, z_txt: Tensor, inputs: dict[str, Any]) -> Tensor:
        """KL between the teacher's distribution and the image-to-label-prompt similarities."""
        z_labels = moco.textencoder(None, inputs["label_mask"], inputs["label_hidden"])
        return distill_loss(z_img, z_labels, inputs["teacher_logits"], moco.temperature, self.teacher_temperature)
