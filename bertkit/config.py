"""BertConfig: the model's hyper-parameters, read and written as the JSON files BERT ships with.

Field names are those of BERT's `config.json` (Hugging Face) and Google's `bert_config.json`,
so a checkpoint's config reads into this dataclass unchanged. Keys we do not use are kept
in `extra` and written back, so a round trip loses nothing.

Presets are a plain table of published architectures: `BertConfig.from_preset("bert-base-uncased")`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BertkitError
from .io.files import read_json

# hidden_act spellings found in checkpoints -> the activation we run (see model.ACTIVATIONS)
HIDDEN_ACTS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "silu", "swish", "tanh")

ATTENTION_MODES = ("bidirectional", "causal", "unilm")

# model_type -> how its positions enter the model. The key tables live in weights.py.
#   absolute: a learnt table added to the embeddings (BERT, RoBERTa, ALBERT, ELECTRA, DistilBERT)
#   rotary:   q and k rotated by position in every layer (RoFormer, Su et al. 2021)
#   relative: fixed sinusoids of clipped relative distances inside attention (NEZHA, Wei et al. 2019)
FAMILY_POSITIONS = dict(
    bert="absolute", roberta="absolute", albert="absolute", electra="absolute", distilbert="absolute",
    roformer="rotary", nezha="relative",
)
MODEL_TYPES = tuple(sorted(FAMILY_POSITIONS))  # model_type values whose checkpoints bertkit reads
POSITION_TYPES = ("absolute", "rotary", "relative")
NO_POOLER = ("electra", "distilbert", "roformer")  # their transformers base models have no pooler
# DistilBERT's config.json names -> ours (it also has no segment embedding).
DISTILBERT_NAMES = dict(
    dim="hidden_size", n_layers="num_hidden_layers", n_heads="num_attention_heads", hidden_dim="intermediate_size",
    activation="hidden_act", dropout="hidden_dropout_prob", attention_dropout="attention_probs_dropout_prob",
)

# Fields checked on construction: whole numbers with their minimum, and non-negative reals.
WHOLE_NUMBERS = dict(
    vocab_size=1, hidden_size=1, num_hidden_layers=1, num_attention_heads=1, intermediate_size=1,
    max_position_embeddings=1, type_vocab_size=0,
)
FRACTIONS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "layer_norm_eps")


@dataclass
class BertConfig:
    vocab_size: int = 30522  # rows of the word embedding and of the MLM decoder
    hidden_size: int = 768  # H: width of every residual stream vector
    num_hidden_layers: int = 12  # L: transformer blocks
    num_attention_heads: int = 12  # N: heads; head size D = H / N
    intermediate_size: int = 3072  # F: FFN inner width
    hidden_act: str = "gelu"  # "gelu" is the exact erf form; "gelu_new"/"gelu_pytorch_tanh" the tanh one
    hidden_dropout_prob: float = 0.1  # dropout on embeddings and on each residual branch
    attention_probs_dropout_prob: float = 0.1  # dropout on attention probabilities
    max_position_embeddings: int = 512  # P: longest input the position table covers
    type_vocab_size: int = 2  # segment (token type) ids; 0 means no segment embedding
    initializer_range: float = 0.02  # std of the normal init for fresh weights
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    model_type: str = "bert"  # which family member; decides key tables and switches
    # Switches for family members. BERT leaves them at these defaults.
    embedding_size: int | None = None  # E != H: factorised embeddings with a projection (ALBERT, ELECTRA)
    position_embedding_type: str | None = None  # absolute | rotary | relative; None: the family's (FAMILY_POSITIONS)
    num_hidden_groups: int | None = None  # ALBERT: layers share the weights of this many groups; None: no sharing
    inner_group_num: int = 1  # ALBERT: blocks inside each shared group
    max_relative_position: int = 64  # NEZHA: relative distances are clipped to +-this
    rotary_value: bool = False  # RoFormer: rotate the values too
    attention_mode: str = "bidirectional"  # or "causal" (GPT) or "unilm" (segment 0 sees itself, 1 is causal)
    tie_word_embeddings: bool = True  # MLM decoder shares the word embedding matrix
    architectures: list[str] | None = None  # HF's record of the head the checkpoint was saved with
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, kept for the round trip

    def __post_init__(self) -> None:
        for name, low in WHOLE_NUMBERS.items():
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise BertkitError(f"{name} must be a whole number of at least {low}, not {v!r}.")
        for name in FRACTIONS:
            v = getattr(self, name)
            if not isinstance(v, int | float) or isinstance(v, bool) or v < 0:
                raise BertkitError(f"{name} must be a non-negative number, not {v!r}.")
        if self.embedding_size is not None and (not isinstance(self.embedding_size, int) or self.embedding_size < 1):
            raise BertkitError(f"embedding_size must be a whole number or null, not {self.embedding_size!r}.")
        if self.pad_token_id is not None and (not isinstance(self.pad_token_id, int) or not 0 <= self.pad_token_id < self.vocab_size):
            raise BertkitError(f"pad_token_id {self.pad_token_id!r} is not an id of the {self.vocab_size}-token vocabulary.")
        if self.model_type not in MODEL_TYPES:
            raise BertkitError(
                f"model_type {self.model_type!r} is not supported; bertkit reads {', '.join(MODEL_TYPES)}."
            )
        family_positions = FAMILY_POSITIONS[self.model_type]
        if self.position_embedding_type is None:  # most configs leave it out; some write null
            self.position_embedding_type = family_positions
        if self.position_embedding_type != family_positions:
            raise BertkitError(
                f"position_embedding_type {self.position_embedding_type!r} is not supported for model_type "
                f"{self.model_type!r}; its checkpoints use {family_positions!r}."
            )
        groups = self.num_hidden_groups
        if groups is not None and (not isinstance(groups, int) or not 1 <= groups <= self.num_hidden_layers):
            raise BertkitError(f"num_hidden_groups must be between 1 and num_hidden_layers ({self.num_hidden_layers}), not {groups!r}.")
        for name in ("inner_group_num", "max_relative_position"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise BertkitError(f"{name} must be a whole number of at least 1, not {getattr(self, name)!r}.")
        if self.hidden_size % self.num_attention_heads:
            raise BertkitError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}."
            )
        if self.hidden_act not in HIDDEN_ACTS:
            raise BertkitError(f"hidden_act {self.hidden_act!r} is not supported; use one of {', '.join(HIDDEN_ACTS)}.")
        if self.attention_mode not in ATTENTION_MODES:
            raise BertkitError(f"attention_mode {self.attention_mode!r} is not one of {', '.join(ATTENTION_MODES)}.")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def embed_size(self) -> int:
        """E: width of the embedding tables (H unless factorised)."""
        return self.embedding_size or self.hidden_size

    @property
    def has_projection(self) -> bool:
        """E -> H after the embeddings: when factorised, and always in ALBERT's checkpoints."""
        return self.embed_size != self.hidden_size or self.model_type == "albert"

    @property
    def has_pooler(self) -> bool:
        return self.model_type not in NO_POOLER

    @property
    def positions_after_padding(self) -> bool:
        """RoBERTa numbers real tokens from pad_token_id + 1 and gives padding pad_token_id."""
        return self.model_type == "roberta"

    @property
    def max_length(self) -> int:
        """The longest input the positions cover."""
        used = self.pad_token_id + 1 if self.positions_after_padding else 0
        return self.max_position_embeddings - used

    def layer_schedule(self) -> list[list[int]]:
        """For each of the L layers, the unique blocks it runs: [[0], [1], ...] for BERT.

        ALBERT shares: layer i runs group int(i / (L / G)), i.e. blocks g*inner .. g*inner+inner-1.
        """
        L, G, inner = self.num_hidden_layers, self.num_hidden_groups or self.num_hidden_layers, self.inner_group_num
        return [[int(i / (L / G)) * inner + j for j in range(inner)] for i in range(L)]

    @property
    def num_blocks(self) -> int:
        """Unique transformer blocks (weights) the model holds."""
        return (self.num_hidden_groups or self.num_hidden_layers) * self.inner_group_num

    # ---- JSON in and out ---------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BertConfig:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        if d.get("model_type") == "distilbert":
            if d.get("sinusoidal_pos_embds"):
                raise BertkitError("DistilBERT with sinusoidal_pos_embds is not supported; bertkit reads learnt positions.")
            d = {DISTILBERT_NAMES.get(k, k): v for k, v in d.items()} | {"type_vocab_size": 0}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        return cls(**known, extra=extra)

    @classmethod
    def from_json_file(cls, path: str | Path) -> BertConfig:
        d = read_json(path)
        try:
            return cls.from_dict(d)
        except BertkitError as e:
            raise BertkitError(f"{path}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        extra = d.pop("extra")
        # Write our switches only when they differ from BERT, so the file stays HF-shaped.
        for k in ("embedding_size", "attention_mode", "num_hidden_groups", "inner_group_num", "max_relative_position", "rotary_value"):
            if d[k] == BertConfig.__dataclass_fields__[k].default and not (k in ("num_hidden_groups", "inner_group_num") and self.model_type == "albert"):
                del d[k]
        if d["model_type"] == "nezha":
            d.update(max_relative_position=self.max_relative_position, use_relative_position=True)
        if d["architectures"] is None:
            del d["architectures"]
        if d["model_type"] in ("distilbert", "roformer", "nezha"):  # implied by the type, not in their configs
            del d["position_embedding_type"]
        if d["model_type"] == "distilbert":
            del d["type_vocab_size"]
            d = {({v: k for k, v in DISTILBERT_NAMES.items()}).get(k, k): v for k, v in d.items()}
        return {**extra, **d}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def from_preset(cls, name: str) -> BertConfig:
        if name not in PRESETS:
            raise BertkitError(f"unknown preset {name!r}; presets are: {', '.join(sorted(PRESETS))}.")
        return cls(**PRESETS[name])


# Published architectures. Parameter counts (BertModel with pooler) in the comments are
# checked by the tests.
PRESETS: dict[str, dict[str, Any]] = {
    "bert-base-uncased": dict(vocab_size=30522),  # 109,482,240
    "bert-base-cased": dict(vocab_size=28996),  # 108,310,272
    "bert-large-uncased": dict(
        vocab_size=30522, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
    ),  # 335,141,888
    "bert-base-chinese": dict(vocab_size=21128),  # 102,267,648
    "all-minilm-l6-v2": dict(
        vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536
    ),  # 22,713,216
    # Google's small BERTs (Turc et al. 2019, "Well-Read Students Learn Better"): fine-tuning from scratch
    # on a CPU starts here. Trained with a vocabulary of its own, a preset's vocab_size is replaced.
    "bert-tiny": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512),  # 4,385,920
    "bert-mini": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024),  # 11,170,560
    "roberta-base": dict(
        model_type="roberta", vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
        layer_norm_eps=1e-5,
    ),  # 124,645,632
    "albert-base-v2": dict(
        model_type="albert", vocab_size=30000, embedding_size=128, hidden_act="gelu_new", num_hidden_groups=1,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    ),  # 11,683,584: one block shared by all 12 layers
    "electra-small-discriminator": dict(
        model_type="electra", embedding_size=128, hidden_size=256, num_attention_heads=4, intermediate_size=1024
    ),  # 13,483,008
    "electra-base-discriminator": dict(model_type="electra"),  # 108,891,648
    "distilbert-base-uncased": dict(model_type="distilbert", num_hidden_layers=6, type_vocab_size=0),  # 66,362,880
    "roformer-chinese-base": dict(model_type="roformer", vocab_size=50000, max_position_embeddings=1536),  # 123,555,840
    "nezha-base": dict(model_type="nezha", vocab_size=21128),  # 101,874,432 (bert-base-chinese's vocabulary)
    # Not a published model: bertkit's recipe for pretraining a small model from scratch on a CPU. bert-tiny's
    # size, but rotary positions, init std 0.05 and no dropout: with bert-tiny's own settings (std 0.02 made for
    # 768-wide layers, learned positions) attention stays near uniform for thousands of steps and the model
    # never uses context (docs/results-pretrain-ablation.md). benchmarks/configs/roformer-tiny-zh.json is this.
    "roformer-tiny-zh": dict(
        model_type="roformer", position_embedding_type="rotary", num_hidden_layers=2, hidden_size=128, num_attention_heads=2,
        intermediate_size=512, initializer_range=0.05, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    ),  # 4,336,640
}
