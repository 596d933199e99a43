"""The key table: our weight names <-> transformers' <-> Google's, and the pure conversions.

Inside bertkit every weight has our own short name (`bert.layers.3.attn.q.weight`); the table
below translates the names of Hugging Face checkpoints and of Google's original TensorFlow
checkpoints at the border, both ways. Conversion is a pure `state_dict -> state_dict` function,
testable without building a model (the idea of torchtune's converters). Reading files and
from_pretrained / save_pretrained live in checkpoint.py.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

import torch

from .errors import BertkitError

# ---- The table ------------------------------------------------------------------------
# One row per weight: our name | transformers' name | Google's TF name. "{}" is the layer
# index. Backbone rows are relative to the backbone (HF prefixes them with "bert." inside a
# task model, we with "bert."; Google always writes "bert/"). Google stores dense kernels as
# [in, out], so every ".../kernel" is transposed on the way in and out.
BACKBONE_KEYS = [
    ("embed.word.weight", "embeddings.word_embeddings.weight", "bert/embeddings/word_embeddings"),
    ("embed.segment.weight", "embeddings.token_type_embeddings.weight", "bert/embeddings/token_type_embeddings"),
    ("embed.position.weight", "embeddings.position_embeddings.weight", "bert/embeddings/position_embeddings"),
    ("embed.norm.weight", "embeddings.LayerNorm.weight", "bert/embeddings/LayerNorm/gamma"),
    ("embed.norm.bias", "embeddings.LayerNorm.bias", "bert/embeddings/LayerNorm/beta"),
    ("layers.{}.attn.q.weight", "encoder.layer.{}.attention.self.query.weight", "bert/encoder/layer_{}/attention/self/query/kernel"),
    ("layers.{}.attn.q.bias", "encoder.layer.{}.attention.self.query.bias", "bert/encoder/layer_{}/attention/self/query/bias"),
    ("layers.{}.attn.k.weight", "encoder.layer.{}.attention.self.key.weight", "bert/encoder/layer_{}/attention/self/key/kernel"),
    ("layers.{}.attn.k.bias", "encoder.layer.{}.attention.self.key.bias", "bert/encoder/layer_{}/attention/self/key/bias"),
    ("layers.{}.attn.v.weight", "encoder.layer.{}.attention.self.value.weight", "bert/encoder/layer_{}/attention/self/value/kernel"),
    ("layers.{}.attn.v.bias", "encoder.layer.{}.attention.self.value.bias", "bert/encoder/layer_{}/attention/self/value/bias"),
    ("layers.{}.attn.o.weight", "encoder.layer.{}.attention.output.dense.weight", "bert/encoder/layer_{}/attention/output/dense/kernel"),
    ("layers.{}.attn.o.bias", "encoder.layer.{}.attention.output.dense.bias", "bert/encoder/layer_{}/attention/output/dense/bias"),
    ("layers.{}.attn_norm.weight", "encoder.layer.{}.attention.output.LayerNorm.weight", "bert/encoder/layer_{}/attention/output/LayerNorm/gamma"),
    ("layers.{}.attn_norm.bias", "encoder.layer.{}.attention.output.LayerNorm.bias", "bert/encoder/layer_{}/attention/output/LayerNorm/beta"),
    ("layers.{}.ffn.up.weight", "encoder.layer.{}.intermediate.dense.weight", "bert/encoder/layer_{}/intermediate/dense/kernel"),
    ("layers.{}.ffn.up.bias", "encoder.layer.{}.intermediate.dense.bias", "bert/encoder/layer_{}/intermediate/dense/bias"),
    ("layers.{}.ffn.down.weight", "encoder.layer.{}.output.dense.weight", "bert/encoder/layer_{}/output/dense/kernel"),
    ("layers.{}.ffn.down.bias", "encoder.layer.{}.output.dense.bias", "bert/encoder/layer_{}/output/dense/bias"),
    ("layers.{}.ffn_norm.weight", "encoder.layer.{}.output.LayerNorm.weight", "bert/encoder/layer_{}/output/LayerNorm/gamma"),
    ("layers.{}.ffn_norm.bias", "encoder.layer.{}.output.LayerNorm.bias", "bert/encoder/layer_{}/output/LayerNorm/beta"),
    ("pooler.dense.weight", "pooler.dense.weight", "bert/pooler/dense/kernel"),
    ("pooler.dense.bias", "pooler.dense.bias", "bert/pooler/dense/bias"),
]
HEAD_KEYS = [
    ("mlm.transform.weight", "cls.predictions.transform.dense.weight", "cls/predictions/transform/dense/kernel"),
    ("mlm.transform.bias", "cls.predictions.transform.dense.bias", "cls/predictions/transform/dense/bias"),
    ("mlm.norm.weight", "cls.predictions.transform.LayerNorm.weight", "cls/predictions/transform/LayerNorm/gamma"),
    ("mlm.norm.bias", "cls.predictions.transform.LayerNorm.bias", "cls/predictions/transform/LayerNorm/beta"),
    ("mlm.bias", "cls.predictions.bias", "cls/predictions/output_bias"),
    ("mlm.decoder", "cls.predictions.decoder.weight", None),  # only in untied checkpoints
    ("nsp.weight", "cls.seq_relationship.weight", "cls/seq_relationship/output_weights"),  # [2, H] in both
    ("nsp.bias", "cls.seq_relationship.bias", "cls/seq_relationship/output_bias"),
]
# Checkpoint keys that carry nothing to load: buffers, a duplicate of mlm.bias, optimizer state.
DROPPED = [
    r"(bert\.)?embeddings\.position_ids",
    r"cls\.predictions\.decoder\.bias",  # the same tensor as cls.predictions.bias
    r"global_step",
    r".*/adam_[mv]",
    r"(bad_steps|good_steps|loss_scale)",
]
BACKBONE_PREFIX = "bert"  # what HF and we put before backbone keys inside a task model
HEAD_PREFIXES = ("mlm.", "nsp.", "pooler.")  # may be absent from a checkpoint; see new_heads
# Task heads of other classes (sequence classification, QA): known, reported, not loaded.
OTHER_HEADS = r"(classifier|qa_outputs)\.(weight|bias)"


def _pattern(name: str) -> re.Pattern:
    return re.compile(re.escape(name).replace(r"\{\}", r"(\d+)") + "$")


@functools.cache
def _compiled(src: int, dst: int) -> list[tuple[re.Pattern, str]]:
    """(pattern of column src, template of column dst) for full names: backbone rows get their prefix."""
    rows = [(f"{BACKBONE_PREFIX}.{o}", f"{BACKBONE_PREFIX}.{h}", g) for o, h, g in BACKBONE_KEYS] + HEAD_KEYS
    return [(_pattern(row[src]), row[dst]) for row in rows if row[src] is not None and row[dst] is not None]


def rename(key: str, src: int, dst: int) -> str | None:
    """key in column src (0 ours, 1 transformers, 2 Google) -> its name in column dst, or None."""
    for pattern, template in _compiled(src, dst):
        m = pattern.match(key)
        if m:
            return template.format(*m.groups())
    return None


def _normalise_hf_key(key: str) -> str:
    """Older HF checkpoints say LayerNorm.gamma/beta; base-model checkpoints lack the "bert." prefix."""
    key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key))
    if not key.startswith(("cls.", f"{BACKBONE_PREFIX}.")):
        key = f"{BACKBONE_PREFIX}.{key}"
    return key


def _is_dropped(key: str) -> bool:
    return any(re.fullmatch(p, key) for p in DROPPED)


@dataclass
class Converted:
    state_dict: dict[str, torch.Tensor]  # our full names
    source_names: dict[str, str]  # our name -> the checkpoint's name, for error messages
    unknown: list[str] = field(default_factory=list)  # checkpoint keys no row matches
    other_heads: list[str] = field(default_factory=list)  # heads of other task classes, not loaded


def from_hf(sd: dict[str, torch.Tensor]) -> Converted:
    """HF state dict (any task model or base model) -> our full names."""
    out = Converted({}, {})
    for key, t in sd.items():
        if _is_dropped(key):
            continue
        ours = rename(_normalise_hf_key(key), 1, 0)
        if ours is None and re.fullmatch(OTHER_HEADS, key):
            out.other_heads.append(key)
        elif ours is None:
            out.unknown.append(key)
        else:
            out.state_dict[ours], out.source_names[ours] = t, key
    return out


def from_google(sd: dict[str, torch.Tensor]) -> Converted:
    """Google TF checkpoint tensors -> our full names (kernels transposed to [out, in])."""
    out = Converted({}, {})
    for key, t in sd.items():
        if _is_dropped(key):
            continue
        ours = rename(key, 2, 0)
        if ours is None:
            out.unknown.append(key)
            continue
        out.state_dict[ours] = t.t().contiguous() if key.endswith("/kernel") else t
        out.source_names[ours] = key
    return out


def to_hf(sd: dict[str, torch.Tensor], base_model: bool) -> dict[str, torch.Tensor]:
    """Our full names -> HF names; a base model (BertModel) is written without the "bert." prefix."""
    out = {}
    for key, t in sd.items():
        hf = rename(key, 0, 1)
        if hf is None:
            raise BertkitError(f"weight {key!r} has no Hugging Face name in the key table.")
        if base_model:
            hf = hf.removeprefix(f"{BACKBONE_PREFIX}.")
        out[hf] = t.contiguous()
    return out
