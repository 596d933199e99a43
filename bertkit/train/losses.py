"""The fine-tuning losses, summed over a batch: the trainer divides by the count over the whole
global batch (examples, or words for NER), so accumulation and several processes give exactly
the mean of one big batch."""

from __future__ import annotations

import torch

from ..data.features import forward
from ..errors import BertkitError
from .tricks import focal_loss, label_smoothing_loss, rdrop_loss


def loss_of_batch(model, batch, loss, rdrop: float = 0.0) -> tuple[torch.Tensor, int]:
    """(summed loss, the count it sums over: examples, or words for ner).

    The trainer divides by the count over the whole global batch, so gradient accumulation and
    several processes give exactly the mean of one big batch. rdrop > 0: R-Drop, the batch twice
    in one forward (two dropout masks), their mean loss plus rdrop * the symmetric KL.
    """

    count = len(batch["labels"]) if "labels" in batch else int(batch["word_mask"].sum())
    if rdrop:
        batch = {k: torch.cat([v, v]) for k, v in batch.items()}
    logits = forward(model, batch)
    total = task_loss(model, batch, logits, loss)
    if rdrop:
        half, mask = len(logits) // 2, batch.get("word_mask")
        kl = rdrop_loss(logits[:half], logits[half:], None if mask is None else mask[:half])
        total = total / 2 + rdrop * kl * count
    return total, count


def task_loss(model, batch, logits, loss) -> torch.Tensor:
    """The summed hard-label loss of a batch's logits: the loss function, or the CRF's likelihood."""
    core = getattr(model, "module", model)  # under DistributedDataParallel
    if "labels" in batch:
        return loss(logits, batch["labels"])
    if getattr(core, "crf", None) is not None:
        return core.crf.nll(logits, batch["word_labels"], batch["word_mask"]).sum()
    return loss(logits, batch["word_labels"])  # padding words carry IGNORE_INDEX


def sum_loss(kind: str, class_weight=None, gamma: float = 2.0, smoothing: float = 0.1):
    """(logits, target, reduction) -> loss, for the trainer's summed losses."""

    def fn(logits, target, reduction="sum"):
        if kind == "focal":
            return focal_loss(logits, target, gamma, class_weight, reduction=reduction)
        return label_smoothing_loss(logits, target, smoothing if kind == "smooth" else 0.0, class_weight, reduction=reduction)

    if kind not in ("ce", "focal", "smooth"):
        raise BertkitError(f"loss {kind!r} is not one of ce, focal, smooth.")
    return fn
