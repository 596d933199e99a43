"""Knowledge distillation of a fine-tuned teacher into a smaller student, inside the fine-tuning trainer.

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))    soft targets (Hinton et al. 2015)
         + (1 - alpha) * the task's hard-label loss
         + hidden_weight * MSE(student layer i, teacher layer layer_map[i])   hidden states (TinyBERT, Jiao et al. 2019)

With soft_targets="crf" ("auto", the default, picks it when teacher and student both have a CRF), the
distributions are not the softmax of the emissions but the CRF's per-word marginals p(y_t | x), by
forward-backward over emissions and transitions (all divided by T): what the teacher actually believes
once its transitions are counted, matched by the student's own CRF (posterior distillation, Wang et al.
2020, "Structure-Level Knowledge Distillation For Multilingual Sequence Labeling"). The measured
comparison is docs/results/distill-ablation.md.

Per example (classify, pair) or per word (ner); summed, so the trainer makes it the mean of the global
batch. The student reads the teacher's tokenizer and labels. `init_student` copies the teacher's
embeddings, the mapped layers and the task head (classifier, CRF) into the student (DistilBERT's
initialisation, Sanh et al. 2019).
Hidden-state matching needs equal widths (no learnt projection).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.features import forward
from ..errors import BertkitError
from .losses import task_loss


def default_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Student layer i (1-based) <- teacher layer round((i) * L_t / L_s): evenly spaced, ending at the top."""
    return [round((i + 1) * teacher_layers / student_layers) for i in range(student_layers)]


def parse_layer_map(text: str | None, student_layers: int, teacher_layers: int) -> list[int]:
    if not text:
        return default_layer_map(student_layers, teacher_layers)
    try:
        m = [int(x) for x in text.split(",")]
    except ValueError:
        raise BertkitError(f"--layer-map {text!r} is not a comma-separated list of teacher layers.") from None
    if len(m) != student_layers or not all(1 <= x <= teacher_layers for x in m):
        raise BertkitError(f"--layer-map needs {student_layers} teacher layers between 1 and {teacher_layers}, got {text!r}.")
    return m


@torch.no_grad()
def init_student(student, teacher, layer_map: list[int]) -> None:
    """Copy embeddings, mapped layers (and pooler, classifier, CRF) from teacher to student where shapes agree.

    The CRF matters for NER: the soft targets match the student's emissions to the teacher's, which were
    trained to be decoded with the teacher's transition scores, so the student starts with those too."""
    if student.config.hidden_size != teacher.config.hidden_size:
        raise BertkitError("initialising the student from the teacher needs the same hidden size.")
    own, theirs = student.bert.embed.state_dict(), teacher.bert.embed.state_dict()
    apart = sorted((own.keys() ^ theirs.keys()) - {"bigram.weight"})  # a bigram table on one side only is not copied
    if apart:
        raise BertkitError(f"initialising the student from the teacher needs the same embeddings; embed.{apart[0]} is in only one of them.")
    for k in own.keys() & theirs.keys():
        if own[k].shape != theirs[k].shape:
            raise BertkitError(f"initialising the student from the teacher needs embeddings of one shape; embed.{k} is "
                               f"{tuple(theirs[k].shape)} in the teacher and {tuple(own[k].shape)} in the student.")
    student.bert.embed.load_state_dict({k: v for k, v in theirs.items() if k in own}, strict=False)
    for i, t in enumerate(layer_map):
        own, theirs = student.bert.layers[i].state_dict(), teacher.bert.layers[t - 1].state_dict()
        # ModernBERT's first block has no attention norm: a block mapped to or from it keeps the other's norm as it is
        student.bert.layers[i].load_state_dict({k: v for k, v in theirs.items() if k in own}, strict=set(own) == set(theirs))
    same_vector = getattr(student, "pooling", "cls") == getattr(teacher, "pooling", "cls")
    for name in ("pooler", "final_norm", "classifier", "crf"):
        if name == "classifier" and not same_vector:  # trained on the teacher's other sentence vector (--pooling)
            continue
        in_bert = name in ("pooler", "final_norm")
        s_mod, t_mod = getattr(student.bert if in_bert else student, name, None), getattr(teacher.bert if in_bert else teacher, name, None)
        if s_mod is not None and t_mod is not None:
            s_mod.load_state_dict(t_mod.state_dict())


SOFT_TARGETS = ("auto", "logits", "crf")


def resolve_soft_targets(soft_targets: str, student, teacher) -> str:
    """"logits" or "crf"; "auto" is "crf" when teacher and student both have a CRF head."""
    if soft_targets not in SOFT_TARGETS:
        raise BertkitError(f"soft targets {soft_targets!r} are not one of {', '.join(SOFT_TARGETS)}.")
    both = getattr(student, "crf", None) is not None and getattr(teacher, "crf", None) is not None
    if soft_targets == "crf" and not both:
        raise BertkitError("--soft-targets crf needs a teacher and a student with a CRF head (NER trained with --crf).")
    if soft_targets == "auto":
        return "crf" if both else "logits"
    return soft_targets


def distill_loss(student, teacher, batch, hard_loss, temperature: float, alpha: float, hidden_weight: float,
                 layer_map: list[int], soft_targets: str = "logits") -> tuple[torch.Tensor, int]:
    """(summed loss, count), as finetune.loss_of_batch."""
    want_hidden = hidden_weight > 0
    s_out = forward(student, batch, hidden=want_hidden)
    s_logits, s_states = s_out if want_hidden else (s_out, None)
    with torch.no_grad():
        t_out = forward(teacher, batch, hidden=want_hidden)
        t_logits, t_states = t_out if want_hidden else (t_out, None)
    mask = batch.get("word_mask")  # [B, W] for ner; None for sentence tasks
    T = temperature
    if soft_targets == "crf":
        with torch.no_grad():
            t_logp = teacher.crf.log_marginals(t_logits, mask, T)  # [B, W, C]
        s_logp = getattr(student, "module", student).crf.log_marginals(s_logits, mask, T)
    else:
        t_logp, s_logp = F.log_softmax(t_logits.float() / T, -1), F.log_softmax(s_logits.float() / T, -1)
    kl = F.kl_div(s_logp, t_logp, log_target=True, reduction="none").sum(-1)  # [B] or [B, W]
    soft = (kl[mask] if mask is not None else kl).sum() * T * T
    count = int(mask.sum()) if mask is not None else len(s_logits)
    total = alpha * soft
    if alpha < 1:
        total = total + (1 - alpha) * task_loss(student, batch, s_logits, hard_loss)
    if want_hidden:
        real = batch["attention_mask"].bool()  # [B, T]
        mse = sum(F.mse_loss(s_states[i + 1][real].float(), t_states[t][real].float(), reduction="sum") / s_states[i + 1].shape[-1]
                  for i, t in enumerate(layer_map))
        total = total + hidden_weight * mse * count / max(int(real.sum()), 1)  # per real token, scaled to the count
    return total, count
