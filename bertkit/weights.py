"""The key table: our weight names <-> transformers' <-> Google's, and the pure conversions.

Inside bertkit every weight has our own short name (`bert.layers.3.attn.q.weight`); the table
below translates the names of Hugging Face checkpoints and of Google's original TensorFlow
checkpoints at the border, both ways. Conversion is a pure `state_dict -> state_dict` function,
testable without building a model (the idea of torchtune's converters). Reading files and
from_pretrained / save_pretrained live in checkpoint.py.

Why ~510 lines: the key tables of every member (about half the file, data) and the pure conversions that read them both ways.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass, field

import torch

from .config import BertConfig
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
# ---- The family: each member's rows, as differences from BERT's ----------------------------
# Google's column is BERT's only (Chinese RoBERTa-wwm and NEZHA ship BERT-format TF checkpoints).


def _hf_only(rows, drop=(), rename=()):
    """BERT's rows without Google's column, minus `drop` (our names), with HF substrings renamed."""
    out = []
    for ours, hf, _ in rows:
        if ours in drop:
            continue
        for old, new in rename:
            hf = hf.replace(old, new)
        out.append((ours, hf, None))
    return out


BERT_MLM = HEAD_KEYS[:6]
ROBERTA_HEADS = [
    ("mlm.transform.weight", "lm_head.dense.weight", None),
    ("mlm.transform.bias", "lm_head.dense.bias", None),
    ("mlm.norm.weight", "lm_head.layer_norm.weight", None),
    ("mlm.norm.bias", "lm_head.layer_norm.bias", None),
    ("mlm.bias", "lm_head.bias", None),
    ("mlm.decoder", "lm_head.decoder.weight", None),
]
_albert_block = [  # ALBERT's blocks: albert_layer_groups.{g}.albert_layers.{i}, flattened to one index (_albert_flat)
    ("attn.q", "attention.query"), ("attn.k", "attention.key"), ("attn.v", "attention.value"),
    ("attn.o", "attention.dense"), ("attn_norm", "attention.LayerNorm"), ("ffn.up", "ffn"),
    ("ffn.down", "ffn_output"), ("ffn_norm", "full_layer_layer_norm"),
]
ALBERT_BACKBONE = _hf_only(BACKBONE_KEYS[:5]) + [
    ("embed.project.weight", "encoder.embedding_hidden_mapping_in.weight", None),
    ("embed.project.bias", "encoder.embedding_hidden_mapping_in.bias", None),
    *[(f"layers.{{}}.{o}.{p}", f"encoder.albert_layer_groups.{{}}.{h}.{p}", None) for o, h in _albert_block for p in ("weight", "bias")],
    ("pooler.dense.weight", "pooler.weight", None),
    ("pooler.dense.bias", "pooler.bias", None),
]
ALBERT_HEADS = [
    ("mlm.transform.weight", "predictions.dense.weight", None),
    ("mlm.transform.bias", "predictions.dense.bias", None),
    ("mlm.norm.weight", "predictions.LayerNorm.weight", None),
    ("mlm.norm.bias", "predictions.LayerNorm.bias", None),
    ("mlm.bias", "predictions.bias", None),
    ("mlm.decoder", "predictions.decoder.weight", None),
    ("nsp.weight", "sop_classifier.classifier.weight", None),  # sentence-order prediction
    ("nsp.bias", "sop_classifier.classifier.bias", None),
]
ELECTRA_BACKBONE = _hf_only(BACKBONE_KEYS[:-2]) + [
    ("embed.project.weight", "embeddings_project.weight", None),
    ("embed.project.bias", "embeddings_project.bias", None),
]
ELECTRA_HEADS = [
    ("mlm.transform.weight", "generator_predictions.dense.weight", None),  # the generator (an MLM)
    ("mlm.transform.bias", "generator_predictions.dense.bias", None),
    ("mlm.norm.weight", "generator_predictions.LayerNorm.weight", None),
    ("mlm.norm.bias", "generator_predictions.LayerNorm.bias", None),
    ("mlm.bias", "generator_lm_head.bias", None),
    ("mlm.decoder", "generator_lm_head.weight", None),
    ("rtd.dense.weight", "discriminator_predictions.dense.weight", None),  # the discriminator
    ("rtd.dense.bias", "discriminator_predictions.dense.bias", None),
    ("rtd.out.weight", "discriminator_predictions.dense_prediction.weight", None),
    ("rtd.out.bias", "discriminator_predictions.dense_prediction.bias", None),
]
# ELECTRA-style pretraining of a RoFormer or NEZHA (rotary/relative positions): transformers has no discriminator
# class for them, so the replaced-token head keeps ELECTRA's names (transformers' RoFormerModel loads such a checkpoint and skips the head: tests/test_pretrain.py).
RTD_HEAD = ELECTRA_HEADS[-4:]
DISTILBERT_BACKBONE = [
    ("embed.word.weight", "embeddings.word_embeddings.weight", None),
    ("embed.position.weight", "embeddings.position_embeddings.weight", None),
    ("embed.norm.weight", "embeddings.LayerNorm.weight", None),
    ("embed.norm.bias", "embeddings.LayerNorm.bias", None),
    *[(f"layers.{{}}.{o}.{p}", f"transformer.layer.{{}}.{h}.{p}", None) for o, h in [
        ("attn.q", "attention.q_lin"), ("attn.k", "attention.k_lin"), ("attn.v", "attention.v_lin"),
        ("attn.o", "attention.out_lin"), ("attn_norm", "sa_layer_norm"), ("ffn.up", "ffn.lin1"),
        ("ffn.down", "ffn.lin2"), ("ffn_norm", "output_layer_norm")] for p in ("weight", "bias")],
]
DISTILBERT_HEADS = [
    ("mlm.transform.weight", "vocab_transform.weight", None),
    ("mlm.transform.bias", "vocab_transform.bias", None),
    ("mlm.norm.weight", "vocab_layer_norm.weight", None),
    ("mlm.norm.bias", "vocab_layer_norm.bias", None),
    ("mlm.bias", "vocab_projector.bias", None),
    ("mlm.decoder", "vocab_projector.weight", None),
]
NO_POSITION_TABLE = ("embed.position.weight",)
# ERNIE 3.0: BERT's rows plus its task-type embedding (present where the config has use_task_id).
ERNIE_BACKBONE = [*BACKBONE_KEYS[:3], ("embed.task.weight", "embeddings.task_type_embeddings.weight", None), *BACKBONE_KEYS[3:]]
# ModernBERT (modern.py): one stacked Wqkv as our attn.qkv, pre-norm blocks (block 0 without attn_norm), a final norm;
# bias rows are read where its config has biases (it has none by default).
MODERNBERT_BACKBONE = [
    ("embed.word.weight", "embeddings.tok_embeddings.weight", None),
    *[(f"embed.norm.{p}", f"embeddings.norm.{p}", None) for p in ("weight", "bias")],
    *[(f"layers.{{}}.{o}.{p}", f"layers.{{}}.{h}.{p}", None) for o, h in [
        ("attn_norm", "attn_norm"), ("attn.qkv", "attn.Wqkv"), ("attn.o", "attn.Wo"), ("ffn_norm", "mlp_norm"),
        ("ffn.up", "mlp.Wi"), ("ffn.down", "mlp.Wo")] for p in ("weight", "bias")],
    *[(f"final_norm.{p}", f"final_norm.{p}", None) for p in ("weight", "bias")],
]
MODERNBERT_HEADS = [
    *[(f"mlm.transform.{p}", f"head.dense.{p}", None) for p in ("weight", "bias")],
    *[(f"mlm.norm.{p}", f"head.norm.{p}", None) for p in ("weight", "bias")],
    ("mlm.bias", "decoder.bias", None),
    ("mlm.decoder", "decoder.weight", None),  # tied to the word embedding unless the config unties it
]
# transformers' ModernBertForSequenceClassification: its prediction head ("head", the MLM's name) feeds the classifier.
MODERNBERT_CLASSIFIER = [
    *[(f"cls_head.{o}.{p}", f"{h}.{p}", None) for o, h in (("dense", "head.dense"), ("norm", "head.norm"), ("out", "classifier"))
      for p in ("weight", "bias")],
]
# DeBERTa-v2/v3 (deberta.py): BERT's block names with its own attention projections, the shared relative table and its norm.
DEBERTA_BACKBONE = [
    ("embed.word.weight", "embeddings.word_embeddings.weight", None),
    ("embed.position.weight", "embeddings.position_embeddings.weight", None),
    ("embed.segment.weight", "embeddings.token_type_embeddings.weight", None),
    ("embed.project.weight", "embeddings.embed_proj.weight", None),
    *[(f"embed.norm.{p}", f"embeddings.LayerNorm.{p}", None) for p in ("weight", "bias")],
    *[(f"layers.{{}}.{o}.{p}", f"encoder.layer.{{}}.{h}.{p}", None) for o, h in [
        ("attn.q", "attention.self.query_proj"), ("attn.k", "attention.self.key_proj"), ("attn.v", "attention.self.value_proj"),
        ("attn.pos_k", "attention.self.pos_key_proj"), ("attn.pos_q", "attention.self.pos_query_proj"),
        ("attn.o", "attention.output.dense"), ("attn_norm", "attention.output.LayerNorm"), ("ffn.up", "intermediate.dense"),
        ("ffn.down", "output.dense"), ("ffn_norm", "output.LayerNorm")] for p in ("weight", "bias")],
    ("rel.weight", "encoder.rel_embeddings.weight", None),
    *[(f"rel_norm.{p}", f"encoder.LayerNorm.{p}", None) for p in ("weight", "bias")],
]
DEBERTA_LM_HEADS = [  # transformers' DebertaV2ForMaskedLM with legacy false (the legacy head is BERT's cls.predictions)
    *[(f"mlm.transform.{p}", f"lm_predictions.lm_head.dense.{p}", None) for p in ("weight", "bias")],
    *[(f"mlm.norm.{p}", f"lm_predictions.lm_head.LayerNorm.{p}", None) for p in ("weight", "bias")],
    ("mlm.bias", "lm_predictions.lm_head.bias", None),
]
STACKED_QKV = ("gpt2", "modernbert")  # families whose checkpoints already hold q, k and v as one matrix

# ---- Decoders and encoder-decoders (seq2seq.py): every row a full name on both sides --------------------
_WB = ("weight", "bias")
GPT2_KEYS = [  # GPT-2's Conv1D weights are [in, out]: transposed at this border (GPT2_CONV1D)
    ("word.weight", "transformer.wte.weight", None),
    ("decoder.position.weight", "transformer.wpe.weight", None),
    *[(f"decoder.layers.{{}}.{o}.{p}", f"transformer.h.{{}}.{h}.{p}", None) for o, h in [
        ("attn_norm", "ln_1"), ("attn.qkv", "attn.c_attn"), ("attn.o", "attn.c_proj"), ("ffn_norm", "ln_2"),
        ("ffn.up", "mlp.c_fc"), ("ffn.down", "mlp.c_proj")] for p in _WB],
    *[(f"decoder.final_norm.{p}", f"transformer.ln_f.{p}", None) for p in _WB],
    ("lm_head.weight", "lm_head.weight", None),
]
GPT2_CONV1D = re.compile(r"decoder\.layers\.\d+\.(attn\.qkv|attn\.o|ffn\.up|ffn\.down)\.weight")


def _t5_keys(gated: bool, every_layer_bias: bool = False) -> list:
    """T5's blocks: layer.0 self-attention, (decoder) layer.1 cross-attention, then the FFN; no biases.
    every_layer_bias: UMT5, a relative-bias table in every block's self-attention, not only block 0's."""
    ffn = [("ffn.up", "DenseReluDense.wi_0" if gated else "DenseReluDense.wi"), ("ffn.down", "DenseReluDense.wo")]
    ffn += [("ffn.gate", "DenseReluDense.wi_1")] if gated else []
    rows = [("word.weight", "shared.weight", None), ("lm_head.weight", "lm_head.weight", None)]
    for stack, sub in (("encoder", ["SelfAttention", "ffn"]), ("decoder", ["SelfAttention", "EncDecAttention", "ffn"])):
        if every_layer_bias:
            rows.append((f"{stack}.biases.{{}}.table.weight", f"{stack}.block.{{}}.layer.0.SelfAttention.relative_attention_bias.weight", None))
        else:
            rows.append((f"{stack}.bias.table.weight", f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight", None))
        rows.append((f"{stack}.final_norm.weight", f"{stack}.final_layer_norm.weight", None))
        for n, part in enumerate(sub):
            theirs = f"{stack}.block.{{}}.layer.{n}"
            ours = f"{stack}.layers.{{}}"
            if part == "ffn":
                rows += [(f"{ours}.{o}.weight", f"{theirs}.{h}.weight", None) for o, h in ffn]
                rows.append((f"{ours}.ffn_norm.weight", f"{theirs}.layer_norm.weight", None))
            else:
                mine = "attn" if part == "SelfAttention" else "cross"
                rows += [(f"{ours}.{mine}.{x}.weight", f"{theirs}.{part}.{x}.weight", None) for x in "qkvo"]
                rows.append((f"{ours}.{mine}_norm.weight", f"{theirs}.layer_norm.weight", None))
    return rows


def _bart_keys(final_norms: bool) -> list:
    """BART's (and with final norms, mBART's) layers under "model."; the output bias is a buffer."""
    rows = [("word.weight", "model.shared.weight", None), ("lm_head.weight", "lm_head.weight", None),
            ("logits_bias", "final_logits_bias", None)]
    parts = [("attn.q", "self_attn.q_proj"), ("attn.k", "self_attn.k_proj"), ("attn.v", "self_attn.v_proj"),
             ("attn.o", "self_attn.out_proj"), ("attn_norm", "self_attn_layer_norm"), ("ffn.up", "fc1"),
             ("ffn.down", "fc2"), ("ffn_norm", "final_layer_norm")]
    cross = [("cross.q", "encoder_attn.q_proj"), ("cross.k", "encoder_attn.k_proj"), ("cross.v", "encoder_attn.v_proj"),
             ("cross.o", "encoder_attn.out_proj"), ("cross_norm", "encoder_attn_layer_norm")]
    for stack in ("encoder", "decoder"):
        rows.append((f"{stack}.position.weight", f"model.{stack}.embed_positions.weight", None))
        rows += [(f"{stack}.embed_norm.{p}", f"model.{stack}.layernorm_embedding.{p}", None) for p in _WB]
        rows += [(f"{stack}.final_norm.{p}", f"model.{stack}.layer_norm.{p}", None) for p in _WB if final_norms]
        rows += [(f"{stack}.layers.{{}}.{o}.{p}", f"model.{stack}.layers.{{}}.{h}.{p}", None)
                 for o, h in parts + (cross if stack == "decoder" else []) for p in _WB]
    return rows


# bertkit's own hashed-bigram table (config.bigram_buckets), in any encoder; transformers has no such weight.
BIGRAM_ROW = ("embed.bigram.weight", "embeddings.bigram_embeddings.weight", None)


@dataclass(frozen=True)
class Family:
    prefix: str  # transformers' name of the backbone inside its task models
    backbone: list  # rows relative to the backbone
    heads: list  # rows of full names


FAMILIES = {
    "bert": Family("bert", BACKBONE_KEYS, HEAD_KEYS),
    "roberta": Family("roberta", _hf_only(BACKBONE_KEYS), ROBERTA_HEADS),
    "xlm-roberta": Family("roberta", _hf_only(BACKBONE_KEYS), ROBERTA_HEADS),  # RoBERTa's layout (its vocabulary is the difference)
    # the new members keep ELECTRA's names for a replaced-token head of bertkit's ELECTRA-style pretraining (as RoFormer does)
    "ernie": Family("ernie", _hf_only(ERNIE_BACKBONE), HEAD_KEYS + RTD_HEAD),
    "modernbert": Family("model", MODERNBERT_BACKBONE, MODERNBERT_HEADS + RTD_HEAD),
    "modernbert-classifier": Family("model", MODERNBERT_BACKBONE, MODERNBERT_CLASSIFIER),
    "deberta-v2": Family("deberta", DEBERTA_BACKBONE, BERT_MLM + RTD_HEAD),
    "deberta-v2-lm": Family("deberta", DEBERTA_BACKBONE, DEBERTA_LM_HEADS + RTD_HEAD),
    "albert": Family("albert", ALBERT_BACKBONE, ALBERT_HEADS),
    "electra": Family("electra", ELECTRA_BACKBONE, ELECTRA_HEADS),
    "distilbert": Family("distilbert", DISTILBERT_BACKBONE, DISTILBERT_HEADS),
    "roformer": Family(
        "roformer",
        _hf_only(BACKBONE_KEYS[:-2], drop=NO_POSITION_TABLE) + ELECTRA_BACKBONE[-2:]
        + [("rotary.weight", "encoder.embed_positions.weight", None)],
        BERT_MLM + RTD_HEAD,
    ),
    "nezha": Family("nezha", _hf_only(BACKBONE_KEYS, drop=NO_POSITION_TABLE), HEAD_KEYS + RTD_HEAD),
    # decoders and encoder-decoders: no backbone of BERT's shape, every row in `heads` with its full names;
    # prefix: transformers' name of the base model inside its LM class ("" where both name alike)
    "gpt2": Family("transformer", [], GPT2_KEYS),
    "t5": Family("", [], _t5_keys(gated=False)),
    "t5-gated": Family("", [], _t5_keys(gated=True)),  # T5 v1.1, mT5: wi_0 (activated) and wi_1 (linear)
    "umt5": Family("", [], _t5_keys(gated=False, every_layer_bias=True)),
    "umt5-gated": Family("", [], _t5_keys(gated=True, every_layer_bias=True)),
    "bart": Family("model", [], _bart_keys(final_norms=False)),
    "mbart": Family("model", [], _bart_keys(final_norms=True)),
}


def table_of(config: BertConfig | None) -> str:
    """The key table a config reads with: its record's (a name, or a function of the config where a member has
    several tables: ModernBERT's classifier, DeBERTa's lm_predictions head, T5's gated FFN), else its model_type."""
    if config is None:
        return "bert"
    keys = config.member.keys
    return (keys(config) if callable(keys) else keys) or config.model_type

# Checkpoint keys that carry nothing to load: buffers, duplicates of the MLM bias, optimizer state.
DROPPED = [
    r"(\w+\.)?embeddings\.(position_ids|token_type_ids)",
    r"(cls\.predictions|lm_head|predictions)\.decoder\.bias",  # the same tensor as the MLM bias
    r"(nezha\.)?encoder\.layer\.\d+\.attention\.self\.relative_positions_encoding\.positions_encoding",
    r"global_step",
    r"(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)",  # GPT-2's causal-mask buffers
    r"(model\.)?(encoder|decoder)\.embed_tokens\.weight",  # T5's and BART's copies of the shared embedding
    r".*/adam_[mv]",
    r"(bad_steps|good_steps|loss_scale)",
]
BACKBONE_PREFIX = "bert"  # what we put before backbone keys inside a task model
HEAD_PREFIXES = ("mlm.", "nsp.", "pooler.", "rtd.", "classifier.", "cls_head.", "crf.")  # may be absent from a checkpoint; see new_heads
# Fine-tuning heads (heads.py), the same in every family: transformers' BERT classifiers name theirs
# "classifier"; the CRF has no transformers counterpart and keeps our names.
TASK_HEADS = [
    ("classifier.weight", "classifier.weight", None),
    ("classifier.bias", "classifier.bias", None),
    ("crf.start", "crf.start", None),
    ("crf.end", "crf.end", None),
    ("crf.trans", "crf.trans", None),
    # transformers' RoBERTa/XLM-RoBERTa and ELECTRA classifier heads (ClassificationHead)
    *[(f"cls_head.{o}.{p}", f"classifier.{h}.{p}", None) for o, h in (("dense", "dense"), ("out", "out_proj")) for p in ("weight", "bias")],
]
# Task heads of other classes (sequence classification, QA): known, reported, not loaded.
OTHER_HEADS = r"(classifier|pre_classifier|qa_outputs)\.(.+\.)?(weight|bias)"


def _pattern(name: str) -> re.Pattern:
    return re.compile(re.escape(name).replace(r"\{\}", r"(\d+)") + "$")


@functools.cache
def _compiled(family: str, src: int, dst: int) -> list[tuple[re.Pattern, str]]:
    """(pattern of column src, template of column dst) for full names: backbone rows get their prefix."""
    f = FAMILIES[family]
    backbone = f.backbone + [BIGRAM_ROW] if f.backbone else []
    rows = [(f"{BACKBONE_PREFIX}.{o}", f"{f.prefix}.{h}", g) for o, h, g in backbone] + f.heads + TASK_HEADS
    return [(_pattern(row[src]), row[dst]) for row in rows if row[src] is not None and row[dst] is not None]


def rename(key: str, src: int, dst: int, family: str = "bert") -> str | None:
    """key in column src (0 ours, 1 transformers, 2 Google) -> its name in column dst, or None."""
    for pattern, template in _compiled(family, src, dst):
        m = pattern.match(key)
        if m:
            return template.format(*m.groups())
    return None


def _albert_flat(key: str, inner: int, to_flat: bool) -> str:
    """ALBERT names blocks by (group g, inner i); our table by one index g * inner + i."""
    if to_flat:
        return re.sub(r"albert_layer_groups\.(\d+)\.albert_layers\.(\d+)", lambda m: f"albert_layer_groups.{int(m[1]) * inner + int(m[2])}", key)
    return re.sub(r"albert_layer_groups\.(\d+)\.", lambda m: f"albert_layer_groups.{int(m[1]) // inner}.albert_layers.{int(m[1]) % inner}.", key)


def _normalise_hf_key(key: str, family: str) -> str:
    """Older HF checkpoints say LayerNorm.gamma/beta; base-model checkpoints lack the backbone prefix."""
    key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key))
    prefix = FAMILIES[family].prefix
    if prefix and not key.startswith(f"{prefix}.") and rename(key, 1, 0, family) is None and not re.fullmatch(OTHER_HEADS, key):
        key = f"{prefix}.{key}"
    return key


def _is_dropped(key: str) -> bool:
    return any(re.fullmatch(p, key) for p in DROPPED)


@dataclass
class Converted:
    state_dict: dict[str, torch.Tensor]  # our full names
    source_names: dict[str, str]  # our name -> the checkpoint's name, for error messages
    unknown: list[str] = field(default_factory=list)  # checkpoint keys no row matches
    other_heads: list[str] = field(default_factory=list)  # heads of other task classes, not loaded


QKV = re.compile(r"(.*\.attn\.)([qkv])\.(weight|bias)")  # the table's names of the three projections


def fuse_qkv(conv: Converted) -> Converted:
    """Stack each layer's q, k and v (the checkpoint's three weights) into our attn.qkv [3H, ...], in place.
    A layer missing one of the three keeps the others apart: strict loading then names the missing one."""
    for key in [k for k in conv.state_dict if QKV.fullmatch(k)]:
        base, part, kind = QKV.fullmatch(key).groups()
        names = [f"{base}{p}.{kind}" for p in "qkv"]
        if part != "q" or not all(n in conv.state_dict for n in names):
            continue
        conv.state_dict[f"{base}qkv.{kind}"] = torch.cat([conv.state_dict.pop(n) for n in names])
        conv.source_names[f"{base}qkv.{kind}"] = " + ".join(conv.source_names.pop(n) for n in names)
    return conv


def add_bigrams(config: BertConfig, conv: Converted | None, buckets: int, source: str) -> BertConfig:
    """--bigram-buckets on a model: the config with a bigram table of that many rows. A checkpoint without one gets a
    table of zeros (so it computes what it computed before, and learns the table); one with another size is refused."""
    if not buckets or config.bigram_buckets == buckets:
        return config
    if config.bigram_buckets:
        raise BertkitError(f"{source} has a bigram table of {config.bigram_buckets} rows; --bigram-buckets {buckets} asks for "
                           f"another size: leave the flag out (or give {config.bigram_buckets}).")
    config = dataclasses.replace(config, bigram_buckets=buckets, extra=dict(config.extra))  # checked: encoders only
    if conv is not None:
        name = f"{BACKBONE_PREFIX}.{BIGRAM_ROW[0]}"
        conv.state_dict[name], conv.source_names[name] = torch.zeros(buckets, config.embed_size), "(new: --bigram-buckets)"
    return config


def split_qkv(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our attn.qkv back into the three weights checkpoints hold (the inverse of fuse_qkv)."""
    out = {}
    for key, t in sd.items():
        if re.fullmatch(r".*\.attn\.qkv\.(weight|bias)", key):
            for part, piece in zip("qkv", t.chunk(3)):
                out[key.replace(".attn.qkv.", f".attn.{part}.")] = piece
        else:
            out[key] = t
    return out


def from_hf(sd: dict[str, torch.Tensor], config: BertConfig | None = None) -> Converted:
    """HF state dict (any task model or base model of config.model_type) -> our full names."""
    family = table_of(config)
    out = Converted({}, {})
    sd = _shared_embedding(sd)
    for key, t in sd.items():
        if _is_dropped(key):
            continue
        name = _normalise_hf_key(key, family)
        if family == "albert":
            name = _albert_flat(name, config.inner_group_num, to_flat=True)
        ours = rename(name, 1, 0, family)
        if ours is None and re.fullmatch(OTHER_HEADS, key) or _unused_by_config(name, config):
            out.other_heads.append(key)
        elif ours is None:
            out.unknown.append(key)
        else:
            out.state_dict[ours], out.source_names[ours] = t.t() if family == "gpt2" and GPT2_CONV1D.fullmatch(ours) else t, key
    return fuse_qkv(out)


DEBERTA_NOT_LOADED = r"deberta\.(mask_predictions|lm_predictions)\..*|mask_predictions\..*"  # v3's replaced-token head (and a
# base model's stray generator head): transformers' DeBERTa classes skip them too


def _unused_by_config(name: str, config: BertConfig | None) -> bool:
    """Weights a checkpoint holds that its own config does not use, reported and skipped as transformers skips them:
    DeBERTa-v3's absolute position table (kept for its enhanced mask decoder; position_biased_input is false) and its
    discriminator head (mask_predictions)."""
    if config is None or config.model_type != "deberta-v2":
        return False
    if re.fullmatch(DEBERTA_NOT_LOADED, name):
        return True
    return name == "deberta.embeddings.position_embeddings.weight" and not config.deberta.position_biased_input


def _shared_embedding(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A T5/BART checkpoint that stores its tied embedding only under the encoder's name: read it as the shared one."""
    for prefix in ("", "model."):
        alias = f"{prefix}encoder.embed_tokens.weight"
        if alias in sd and f"{prefix}shared.weight" not in sd:
            return {**{k: v for k, v in sd.items() if k != alias}, f"{prefix}shared.weight": sd[alias]}
    return sd


def hf_name(ours: str, config: BertConfig) -> str | None:
    """Our full name -> the transformers name this family's checkpoints use (attn.qkv: its query's)."""
    family = table_of(config)
    name = rename(ours, 0, 1, family) or rename(ours.replace(".attn.qkv.", ".attn.q."), 0, 1, family)
    if name is not None and config.model_type == "albert":
        name = _albert_flat(name, config.inner_group_num, to_flat=False)
    return name


def from_google(sd: dict[str, torch.Tensor], config: BertConfig | None = None) -> Converted:
    """Google TF checkpoint tensors -> our full names (kernels transposed to [out, in])."""
    if config is not None and not config.member.google:
        raise BertkitError(f"Google TF checkpoints are read for BERT-format models only, not model_type {config.model_type!r}; convert it with transformers first.")
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
    return fuse_qkv(out)


def to_hf(sd: dict[str, torch.Tensor], config: BertConfig, base_model: bool) -> dict[str, torch.Tensor]:
    """Our full names -> HF names; a base model (BertModel) is written without the backbone prefix."""
    out = {}
    gpt2 = config.model_type == "gpt2"  # its c_attn holds q, k and v stacked, as our attn.qkv (and ModernBERT's Wqkv)
    for key, t in (sd if config.model_type in STACKED_QKV else split_qkv(sd)).items():
        hf = hf_name(key, config)
        if hf is None:
            raise BertkitError(f"weight {key!r} has no Hugging Face name for model_type {config.model_type!r}.")
        if base_model:
            hf = hf.removeprefix(f"{FAMILIES[table_of(config)].prefix}.")
        out[hf] = (t.t() if gpt2 and GPT2_CONV1D.fullmatch(key) else t).contiguous()
    return out
