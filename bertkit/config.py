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

# The shapes beyond the encoder (bertkit/seq2seq.py): a decoder alone (GPT-2) and encoder-decoders.
DECODERS = ("gpt2",)
ENCODER_DECODERS = ("t5", "mt5", "umt5", "bart", "mbart")
T5_TYPES = ("t5", "mt5", "umt5")  # RMSNorm, no biases, bucketed relative position bias, unscaled scores

# model_type -> how its positions enter the model. The key tables live in weights.py.
#   absolute: a learnt table added to the embeddings (BERT, RoBERTa, ALBERT, ELECTRA, DistilBERT)
#   rotary:   q and k rotated by position in every layer (RoFormer, Su et al. 2021)
#   relative: fixed sinusoids of clipped relative distances inside attention (NEZHA, Wei et al. 2019)
#   bucketed: a learnt bias per head and log-bucketed distance added to the scores (T5, Raffel et al. 2020)
#   disentangled: relative position embeddings projected into content-to-position and position-to-content scores
#       (DeBERTa-v2/v3, He et al. 2020: deberta.py), with or without an absolute table (position_biased_input)
#   (ModernBERT's rotary positions have no table in its checkpoints and rotate halves, not pairs: modern.py)
FAMILY_POSITIONS = dict(
    bert="absolute", roberta="absolute", albert="absolute", electra="absolute", distilbert="absolute",
    ernie="absolute", **{"xlm-roberta": "absolute", "deberta-v2": "disentangled"}, modernbert="rotary",
    roformer="rotary", nezha="relative", gpt2="absolute", bart="absolute", mbart="absolute", t5="bucketed", mt5="bucketed",
    umt5="bucketed",
)
MODEL_TYPES = tuple(sorted(FAMILY_POSITIONS))  # model_type values whose checkpoints bertkit reads
POSITION_TYPES = ("absolute", "rotary", "relative", "bucketed", "disentangled")
NO_POOLER = ("electra", "distilbert", "roformer", "modernbert", "deberta-v2", *DECODERS, *ENCODER_DECODERS)  # their transformers base models have no pooler
# DistilBERT's config.json names -> ours (it also has no segment embedding).
DISTILBERT_NAMES = dict(
    dim="hidden_size", n_layers="num_hidden_layers", n_heads="num_attention_heads", hidden_dim="intermediate_size",
    activation="hidden_act", dropout="hidden_dropout_prob", attention_dropout="attention_probs_dropout_prob",
)
# The decoders' config.json names -> ours; each family's defaults where its config may leave a field out.
GPT2_NAMES = dict(
    n_embd="hidden_size", n_layer="num_hidden_layers", n_head="num_attention_heads", n_inner="intermediate_size",
    activation_function="hidden_act", resid_pdrop="hidden_dropout_prob", attn_pdrop="attention_probs_dropout_prob",
    n_positions="max_position_embeddings", layer_norm_epsilon="layer_norm_eps",
)
T5_NAMES = dict(
    d_model="hidden_size", num_layers="num_hidden_layers", num_heads="num_attention_heads", d_ff="intermediate_size",
    d_kv="head_dim", dropout_rate="hidden_dropout_prob", layer_norm_epsilon="layer_norm_eps", n_positions="max_position_embeddings",
)
BART_NAMES = dict(
    d_model="hidden_size", encoder_layers="num_hidden_layers", decoder_layers="num_decoder_layers",
    encoder_attention_heads="num_attention_heads", encoder_ffn_dim="intermediate_size", activation_function="hidden_act",
    dropout="hidden_dropout_prob", attention_dropout="attention_probs_dropout_prob", init_std="initializer_range",
)
# ModernBERT: its dropout and norm names; its own position_embedding_type ("sans_pos") is kept aside for the round trip.
MODERNBERT_NAMES = dict(
    hidden_activation="hidden_act", norm_eps="layer_norm_eps", mlp_dropout="hidden_dropout_prob",
    attention_dropout="attention_probs_dropout_prob", position_embedding_type="modernbert_position_embedding_type",
)
NAMES = dict(**{"deberta-v2": {}}, modernbert=MODERNBERT_NAMES, distilbert=DISTILBERT_NAMES, gpt2=GPT2_NAMES, t5=T5_NAMES, mt5=T5_NAMES, umt5=T5_NAMES, bart=BART_NAMES, mbart=BART_NAMES)
_T5 = dict(type_vocab_size=0, layer_norm_eps=1e-6, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, hidden_act="relu",
           hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, intermediate_size=2048, head_dim=64)
_BART = dict(type_vocab_size=0, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
             max_position_embeddings=1024, intermediate_size=4096, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.0)
FAMILY_DEFAULTS = dict(
    distilbert=dict(type_vocab_size=0),
    **{"deberta-v2": dict(vocab_size=128100, hidden_size=1536, num_hidden_layers=24, num_attention_heads=24, intermediate_size=6144,
                          type_vocab_size=0, layer_norm_eps=1e-7, pad_token_id=0)},
    modernbert=dict(type_vocab_size=0, vocab_size=50368, hidden_size=768, intermediate_size=1152, num_hidden_layers=22,
                    num_attention_heads=12, hidden_act="gelu", max_position_embeddings=8192, layer_norm_eps=1e-5, pad_token_id=50283,
                    bos_token_id=50281, eos_token_id=50282, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
    gpt2=dict(type_vocab_size=0, layer_norm_eps=1e-5, pad_token_id=None, bos_token_id=50256, eos_token_id=50256,
              hidden_act="gelu_new", attention_mode="causal", max_position_embeddings=1024, vocab_size=50257),
    t5=_T5, mt5=_T5 | dict(vocab_size=250112, tie_word_embeddings=False, hidden_act="gelu_new", gated_ffn=True, intermediate_size=1024),
    umt5=_T5 | dict(vocab_size=250112, tie_word_embeddings=False, hidden_act="gelu_new", gated_ffn=True, intermediate_size=1024),
    bart=_BART, mbart=_BART | dict(scale_embedding=False, decoder_start_token_id=None),  # mBART starts with the language code
)
# Fields of ours a family's config.json does not have (written back only where they differ from these values).
NOT_IN = dict(
    **{"deberta-v2": dict(position_embedding_type=None)},
    modernbert=dict(type_vocab_size=0, position_embedding_type=None),
    gpt2=dict(type_vocab_size=0, attention_mode="causal", position_embedding_type="absolute", pad_token_id=None),
    t5=dict(type_vocab_size=0, position_embedding_type="bucketed", hidden_act=None, gated_ffn=None, initializer_range=None,
            attention_probs_dropout_prob=None),
    bart=dict(type_vocab_size=0, position_embedding_type="absolute", layer_norm_eps=None),
)
NOT_IN["mt5"], NOT_IN["umt5"], NOT_IN["mbart"] = NOT_IN["t5"], NOT_IN["t5"], NOT_IN["bart"]
DECODER_FIELDS = ("num_decoder_layers", "head_dim", "relative_attention_num_buckets", "relative_attention_max_distance",
                  "gated_ffn", "scale_embedding", "bos_token_id", "eos_token_id", "decoder_start_token_id")
_T5_FIELDS = ("num_decoder_layers", "head_dim", "relative_attention_num_buckets", "relative_attention_max_distance",
              "eos_token_id", "decoder_start_token_id")
_BART_FIELDS = ("num_decoder_layers", "scale_embedding", "bos_token_id", "eos_token_id", "decoder_start_token_id")
FAMILY_FIELDS = dict(modernbert=("bos_token_id", "eos_token_id"), gpt2=("bos_token_id", "eos_token_id"), t5=_T5_FIELDS, mt5=_T5_FIELDS, umt5=_T5_FIELDS, bart=_BART_FIELDS, mbart=_BART_FIELDS)

# Fields checked on construction: whole numbers with their minimum, and non-negative reals.
WHOLE_NUMBERS = dict(
    vocab_size=1, hidden_size=1, num_hidden_layers=1, num_attention_heads=1, intermediate_size=1,
    max_position_embeddings=1, type_vocab_size=0, bigram_buckets=0,
)
FRACTIONS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "layer_norm_eps")


@dataclass(frozen=True)
class ModernOptions:
    """ModernBERT's switches, read from its config.json keys (kept in BertConfig.extra, so they round-trip as written)."""

    norm_bias: bool  # LayerNorms with a bias (ModernBERT's have none)
    attention_bias: bool  # Wqkv and Wo with biases
    mlp_bias: bool  # Wi and Wo with biases
    decoder_bias: bool  # the MLM decoder's output bias
    classifier_bias: bool  # the prediction head's dense bias
    classifier_activation: str
    embedding_dropout: float
    local_attention: int  # the sliding window: a token sees keys within local_attention / 2 of it
    global_layers: tuple[bool, ...]  # per layer: full attention (True) or the sliding window
    global_theta: float  # rotary base of the global layers
    local_theta: float  # and of the local ones


def modern_options(c: BertConfig) -> ModernOptions:
    """ModernBERT's options from its config keys, in transformers 5's spelling (layer_types, rope_parameters) or the
    hub's older one (global_attn_every_n_layers, global_rope_theta, local_rope_theta); one sentence names a bad field."""
    x = c.extra
    flags = {}
    for name, default in (("norm_bias", False), ("attention_bias", False), ("mlp_bias", False), ("decoder_bias", True),
                          ("classifier_bias", False)):
        v = x.get(name, default)
        if not isinstance(v, bool):
            raise BertkitError(f"{name} must be true or false, not {v!r}.")
        flags[name] = v
    act = x.get("classifier_activation", c.hidden_act)
    if act not in HIDDEN_ACTS:
        raise BertkitError(f"classifier_activation {act!r} is not supported; use one of {', '.join(HIDDEN_ACTS)}.")
    drop = x.get("embedding_dropout", 0.0)
    if not isinstance(drop, int | float) or isinstance(drop, bool) or not 0 <= drop < 1:
        raise BertkitError(f"embedding_dropout must be a number from 0 to below 1, not {drop!r}.")
    window = x.get("local_attention", 128)
    if not isinstance(window, int) or isinstance(window, bool) or window < 2 or window % 2:
        raise BertkitError(f"local_attention must be an even whole number of at least 2 (a token sees local_attention / 2 "
                           f"tokens each side), not {window!r}.")
    if window > c.max_position_embeddings:
        raise BertkitError(f"local_attention {window} is larger than max_position_embeddings {c.max_position_embeddings}: "
                           "the window would never be reached.")
    kinds = x.get("layer_types")
    if kinds is None:
        every = x.get("global_attn_every_n_layers", 3)
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise BertkitError(f"global_attn_every_n_layers must be a whole number of at least 1, not {every!r}.")
        kinds = ["full_attention" if i % every == 0 else "sliding_attention" for i in range(c.num_hidden_layers)]
    if not isinstance(kinds, list) or len(kinds) != c.num_hidden_layers or not set(kinds) <= {"full_attention", "sliding_attention"}:
        raise BertkitError(f"layer_types must list 'full_attention' or 'sliding_attention' for each of the {c.num_hidden_layers} layers, not {kinds!r}.")
    if x.get("rope_scaling"):
        raise BertkitError(f"rope_scaling {x['rope_scaling']!r} is not supported; bertkit reads ModernBERT's plain rotary positions.")
    rope = x.get("rope_parameters") or {}
    if not isinstance(rope, dict):
        raise BertkitError(f"rope_parameters must be an object with full_attention and sliding_attention entries, not {rope!r}.")
    thetas = []
    for kind, old, default in (("full_attention", "global_rope_theta", 160_000.0), ("sliding_attention", "local_rope_theta", 10_000.0)):
        p = rope.get(kind) or {}
        if p.get("rope_type", "default") != "default":
            raise BertkitError(f"rope_parameters.{kind}.rope_type {p['rope_type']!r} is not supported; bertkit reads 'default' rotary positions.")
        theta = p.get("rope_theta", x.get(old, default))
        if not isinstance(theta, int | float) or isinstance(theta, bool) or theta <= 0:
            raise BertkitError(f"the rotary base of {kind} ({old}) must be a positive number, not {theta!r}.")
        thetas.append(float(theta))
    return ModernOptions(**flags, classifier_activation=act, embedding_dropout=float(drop), local_attention=window,
                         global_layers=tuple(k == "full_attention" for k in kinds), global_theta=thetas[0], local_theta=thetas[1])


@dataclass(frozen=True)
class DebertaOptions:
    """DeBERTa-v2/v3's switches, read from its config.json keys (kept in BertConfig.extra)."""

    relative_attention: bool  # the disentangled terms at all (v2/v3 checkpoints: true)
    pos_att_type: tuple[str, ...]  # which of "c2p" (content->position) and "p2c" (position->content)
    position_buckets: int  # > 0: distances log-bucketed into this many per side
    max_relative_positions: int  # the farthest distance the buckets reach (-1 in a config: max_position_embeddings)
    share_att_key: bool  # the table goes through the layer's own key/query projections (v3)
    norm_rel_ebd: bool  # LayerNorm on the table ("layer_norm")
    position_biased_input: bool  # an absolute position table added to the embeddings (v3: none)
    legacy: bool  # transformers' MLM head names: cls.predictions (legacy) or lm_predictions.lm_head

    @property
    def span(self) -> int:
        """Rows of the table on each side: position_buckets, else max_relative_positions."""
        return self.position_buckets if self.position_buckets > 0 else self.max_relative_positions


POS_ATT_TERMS = ("c2p", "p2c")


def deberta_options(c: BertConfig) -> DebertaOptions:
    x = c.extra
    flags = {}
    for name, default in (("relative_attention", False), ("share_att_key", False), ("position_biased_input", True), ("legacy", True)):
        v = x.get(name, default)
        if not isinstance(v, bool):
            raise BertkitError(f"{name} must be true or false, not {v!r}.")
        flags[name] = v
    terms = x.get("pos_att_type") or []
    if isinstance(terms, str):  # the hub's "p2c|c2p"; transformers 5 writes a list
        terms = [t.strip() for t in terms.lower().split("|") if t.strip()]
    if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
        raise BertkitError(f"pos_att_type must be terms joined by '|' (c2p, p2c) or a list of them, not {x.get('pos_att_type')!r}.")
    unknown = [t for t in terms if t not in POS_ATT_TERMS]
    if unknown:
        raise BertkitError(f"pos_att_type names {unknown[0]!r}, which is not a disentangled attention term bertkit computes "
                           f"({', '.join(POS_ATT_TERMS)}).")
    buckets, farthest = x.get("position_buckets", -1), x.get("max_relative_positions", -1)
    for name, v in (("position_buckets", buckets), ("max_relative_positions", farthest)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise BertkitError(f"{name} must be a whole number (-1 for the default), not {v!r}.")
    farthest = farthest if farthest >= 1 else c.max_position_embeddings
    if buckets > 0 and (buckets < 4 or buckets % 2 or farthest <= buckets // 2):
        raise BertkitError(f"position_buckets {buckets} must be even, at least 4 and below 2 * max_relative_positions ({farthest}).")
    norm = x.get("norm_rel_ebd", "none")
    if not isinstance(norm, str) or not {t.strip() for t in norm.lower().split("|")} <= {"none", "layer_norm"}:
        raise BertkitError(f"norm_rel_ebd must be 'none' or 'layer_norm', not {norm!r}.")
    if x.get("conv_kernel_size", 0):
        raise BertkitError(f"conv_kernel_size {x['conv_kernel_size']!r} (DeBERTa-v2-xlarge's convolution after the first layer) "
                           "is not supported; bertkit reads DeBERTa-v2/v3 without it.")
    if x.get("attention_head_size") not in (None, c.hidden_size // c.num_attention_heads):
        raise BertkitError(f"attention_head_size {x['attention_head_size']!r} unlike hidden_size / num_attention_heads is not supported.")
    return DebertaOptions(**flags, pos_att_type=tuple(terms), position_buckets=buckets, max_relative_positions=farthest,
                          norm_rel_ebd="layer_norm" in norm.lower())


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
    tie_word_embeddings: bool = True  # MLM decoder (an LM's output matrix) shares the word embedding matrix
    # Decoders and encoder-decoders (GPT-2, T5, BART: seq2seq.py). Encoders leave them at these defaults.
    num_decoder_layers: int | None = None  # T5/BART: decoder blocks; None: as many as the encoder's
    head_dim: int | None = None  # T5's d_kv: D when N * D != H; None: H / N
    relative_attention_num_buckets: int = 32  # T5: buckets of the relative position bias
    relative_attention_max_distance: int = 128  # T5: the distance from which all fall in the last bucket
    gated_ffn: bool = False  # T5 v1.1, mT5: FFN act(W0 x) * (W1 x) ("gated-gelu")
    scale_embedding: bool = False  # BART/mBART: word embeddings times sqrt(H)
    bos_token_id: int | None = None
    eos_token_id: int | None = None  # the token that ends a generated text
    decoder_start_token_id: int | None = None  # encoder-decoders: the decoder's first input
    architectures: list[str] | None = None  # HF's record of the head the checkpoint was saved with
    # bertkit's own: hashed character-bigram embeddings added to the word embeddings (0: none). Each token also looks
    # up the pair (its id, the next token's id) in a table of this many rows: what a CRF's bigram features know.
    bigram_buckets: int = 0
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
        for name in ("num_decoder_layers", "head_dim"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise BertkitError(f"{name} must be a whole number of at least 1 or null, not {v!r}.")
        for name in ("bos_token_id", "eos_token_id", "decoder_start_token_id"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):  # generation checks the vocabulary
                raise BertkitError(f"{name} must be a token id (a whole number) or null, not {v!r}.")
        if self.bigram_buckets and (self.model_type in DECODERS + ENCODER_DECODERS or self.attention_mode != "bidirectional"):
            raise BertkitError(f"bigram_buckets is for bidirectional encoders: a token's bigram holds the next token, which a "
                               f"{self.model_type if self.model_type in DECODERS + ENCODER_DECODERS else self.attention_mode} model does not see.")
        if self.model_type in DECODERS and self.attention_mode != "causal":
            raise BertkitError(f"a {self.model_type} decoder reads with attention_mode 'causal', not {self.attention_mode!r}.")
        if self.head_dim is None and self.hidden_size % self.num_attention_heads:
            raise BertkitError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}."
            )
        if self.hidden_act not in HIDDEN_ACTS:
            raise BertkitError(f"hidden_act {self.hidden_act!r} is not supported; use one of {', '.join(HIDDEN_ACTS)}.")
        if self.attention_mode not in ATTENTION_MODES:
            raise BertkitError(f"attention_mode {self.attention_mode!r} is not one of {', '.join(ATTENTION_MODES)}.")
        if self.model_type == "modernbert":
            if self.head_size % 2:
                raise BertkitError(f"ModernBERT rotates pairs of dimensions: the head size {self.head_size} must be even.")
            modern_options(self)  # its own fields, checked now rather than at the first forward
        if self.model_type == "deberta-v2":
            deberta_options(self)
        task_types = self.extra.get("task_type_vocab_size", 3)
        if self.model_type == "ernie" and self.extra.get("use_task_id") and (not isinstance(task_types, int) or task_types < 1):
            raise BertkitError(f"task_type_vocab_size must be a whole number of at least 1 when use_task_id is true, not {task_types!r}.")

    @property
    def modern(self) -> ModernOptions:
        """ModernBERT's switches (model_type "modernbert" only)."""
        return modern_options(self)

    @property
    def deberta(self) -> DebertaOptions:
        """DeBERTa-v2/v3's switches (model_type "deberta-v2" only)."""
        return deberta_options(self)

    @property
    def has_position_table(self) -> bool:
        """A learnt absolute position table in the embeddings (DeBERTa: only with position_biased_input)."""
        if self.model_type == "deberta-v2":
            return self.deberta.position_biased_input
        return self.position_embedding_type == "absolute"

    @property
    def task_types(self) -> int:
        """ERNIE: rows of its task-type embedding (0: none; transformers adds row 0 when no task ids are given)."""
        if self.model_type != "ernie" or not self.extra.get("use_task_id"):
            return 0
        return self.extra.get("task_type_vocab_size", 3)

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def is_decoder(self) -> bool:
        """A decoder alone (GPT-2): bertkit.CausalLM loads it."""
        return self.model_type in DECODERS

    @property
    def is_encoder_decoder(self) -> bool:
        """T5, mT5, BART, mBART: bertkit.Seq2SeqLM loads them (and BertModel their encoder)."""
        return self.model_type in ENCODER_DECODERS

    @property
    def decoder_layers(self) -> int:
        return self.num_decoder_layers or self.num_hidden_layers

    @property
    def embed_size(self) -> int:
        """E: width of the embedding tables (H unless factorised)."""
        return self.embedding_size or self.hidden_size

    @property
    def has_projection(self) -> bool:
        """E -> H after the embeddings: when factorised, and always in ALBERT's checkpoints (DeBERTa: before its norm)."""
        return self.embed_size != self.hidden_size or self.model_type == "albert"

    @property
    def has_pooler(self) -> bool:
        return self.model_type not in NO_POOLER

    @property
    def positions_after_padding(self) -> bool:
        """RoBERTa (and XLM-RoBERTa) number real tokens from pad_token_id + 1 and give padding pad_token_id."""
        return self.model_type in ("roberta", "xlm-roberta")

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
        kind = d.get("model_type")
        if kind == "distilbert" and d.get("sinusoidal_pos_embds"):
            raise BertkitError("DistilBERT with sinusoidal_pos_embds is not supported; bertkit reads learnt positions.")
        if kind in NAMES:
            d = _family_in(kind, d)
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
        for k in ("embedding_size", "attention_mode", "num_hidden_groups", "inner_group_num", "max_relative_position", "rotary_value", "bigram_buckets"):
            if d[k] == BertConfig.__dataclass_fields__[k].default and not (k in ("num_hidden_groups", "inner_group_num") and self.model_type == "albert"):
                del d[k]
        if d["model_type"] == "nezha":
            d.update(max_relative_position=self.max_relative_position, use_relative_position=True)
        if d["architectures"] is None:
            del d["architectures"]
        for k in DECODER_FIELDS:  # written where the family's config.json has the field, or where set
            if d[k] == BertConfig.__dataclass_fields__[k].default and k not in FAMILY_FIELDS.get(self.model_type, ()):
                del d[k]
        if d["model_type"] in ("distilbert", "roformer", "nezha"):  # implied by the type, not in their configs
            del d["position_embedding_type"]
        if d["model_type"] in NAMES:
            d = _family_out(d)
        out = {**extra, **d}
        if "modernbert_position_embedding_type" in out:  # the hub's own ModernBERT key, set aside on reading
            out["position_embedding_type"] = out.pop("modernbert_position_embedding_type")
        return out

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def from_preset(cls, name: str) -> BertConfig:
        if name not in PRESETS:
            raise BertkitError(f"unknown preset {name!r}; presets are: {', '.join(sorted(PRESETS))}.")
        return cls(**PRESETS[name])


def _family_in(kind: str, d: dict[str, Any]) -> dict[str, Any]:
    """A DistilBERT, GPT-2, T5 or BART config.json -> our field names, the family's defaults filling the gaps."""
    d = {NAMES[kind].get(k, k): v for k, v in d.items()}
    defaults = FAMILY_DEFAULTS[kind]
    d = defaults | {k: v for k, v in d.items() if v is not None or (k not in defaults and k != "intermediate_size")}
    if kind == "gpt2":
        d.setdefault("intermediate_size", 4 * d.get("hidden_size", 768))
        for k in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
            if d.get(k):
                raise BertkitError(f"GPT-2 with {k} is not supported; bertkit reads the original GPT-2 attention.")
    if kind in T5_TYPES:  # feed_forward_proj "relu" | "gated-gelu" | "gated-silu" ...: the activation and the gate
        proj = d.pop("feed_forward_proj", "relu" if kind == "t5" else "gated-gelu")
        act = proj.removeprefix("gated-")
        d.update(gated_ffn=proj.startswith("gated-"), hidden_act="gelu_new" if act == "gelu" else act)
        d.setdefault("attention_probs_dropout_prob", d["hidden_dropout_prob"])
    if kind in ("bart", "mbart"):
        for ours, theirs in (("num_attention_heads", "decoder_attention_heads"), ("intermediate_size", "decoder_ffn_dim")):
            if theirs in d and d[theirs] != d.get(ours, d[theirs]):
                raise BertkitError(f"{kind} with {theirs} {d[theirs]} unlike the encoder's {d[ours]} is not supported.")
            d.pop(theirs, None)
    return d


def _family_out(d: dict[str, Any]) -> dict[str, Any]:
    """Our fields -> the family's config.json names (the inverse of _family_in)."""
    kind = d["model_type"]
    if kind in T5_TYPES:
        act = "gelu" if d["hidden_act"] == "gelu_new" else d["hidden_act"]
        d["feed_forward_proj"] = f"gated-{act}" if d.get("gated_ffn") else act
        d["is_encoder_decoder"] = True
    if kind in ("bart", "mbart"):
        d.update(decoder_attention_heads=d["num_attention_heads"], decoder_ffn_dim=d["intermediate_size"], is_encoder_decoder=True)
    for k, implied in NOT_IN.get(kind, {}).items():
        if implied is None or d.get(k) == implied:
            d.pop(k, None)
    if kind == "distilbert":
        d.pop("type_vocab_size", None)
    back = {v: k for k, v in NAMES[kind].items()}
    return {back.get(k, k): v for k, v in d.items()}


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
    # Modern and multilingual encoders (their published config.json values; counts checked against transformers' models).
    "modernbert-base": dict(
        model_type="modernbert", vocab_size=50368, hidden_size=768, intermediate_size=1152, num_hidden_layers=22, num_attention_heads=12,
        max_position_embeddings=8192, hidden_act="gelu", layer_norm_eps=1e-5, type_vocab_size=0, pad_token_id=50283, bos_token_id=50281,
        eos_token_id=50282, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    ),  # 149,014,272
    "modernbert-large": dict(
        model_type="modernbert", vocab_size=50368, hidden_size=1024, intermediate_size=2624, num_hidden_layers=28, num_attention_heads=16,
        max_position_embeddings=8192, hidden_act="gelu", layer_norm_eps=1e-5, type_vocab_size=0, pad_token_id=50283, bos_token_id=50281,
        eos_token_id=50282, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    ),  # 394,781,696
    "xlm-roberta-base": dict(
        model_type="xlm-roberta", vocab_size=250002, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5,
    ),  # 278,043,648
    "deberta-v3-base": dict(
        model_type="deberta-v2", vocab_size=128100, max_position_embeddings=512, type_vocab_size=0, layer_norm_eps=1e-7,
        extra=dict(relative_attention=True, max_relative_positions=-1, position_buckets=256, norm_rel_ebd="layer_norm", share_att_key=True,
                   pos_att_type="p2c|c2p", position_biased_input=False),
    ),  # 183,831,552
    "ernie-3.0-base-zh": dict(
        model_type="ernie", vocab_size=40000, max_position_embeddings=2048, type_vocab_size=4, layer_norm_eps=1e-5,
        extra=dict(use_task_id=True, task_type_vocab_size=3),
    ),  # 117,944,832
    # Decoders and encoder-decoders (parameter counts of CausalLM / Seq2SeqLM, tied heads counted once).
    "gpt2": dict(model_type="gpt2", vocab_size=50257, max_position_embeddings=1024, hidden_act="gelu_new", layer_norm_eps=1e-5,
                 type_vocab_size=0, pad_token_id=None, attention_mode="causal", bos_token_id=50256, eos_token_id=50256),  # 124,439,808
    "t5-small": dict(model_type="t5", vocab_size=32128, hidden_size=512, num_hidden_layers=6, num_attention_heads=8, head_dim=64,
                     intermediate_size=2048, hidden_act="relu", layer_norm_eps=1e-6, type_vocab_size=0, pad_token_id=0,
                     eos_token_id=1, decoder_start_token_id=0),  # 60,506,624
    "mt5-small": dict(model_type="mt5", vocab_size=250112, hidden_size=512, num_hidden_layers=8, num_attention_heads=6, head_dim=64,
                      intermediate_size=1024, hidden_act="gelu_new", gated_ffn=True, tie_word_embeddings=False, layer_norm_eps=1e-6,
                      type_vocab_size=0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0),  # 300,176,768
    "bart-base": dict(model_type="bart", vocab_size=50265, hidden_size=768, num_hidden_layers=6, num_decoder_layers=6,
                      num_attention_heads=12, intermediate_size=3072, max_position_embeddings=1024, layer_norm_eps=1e-5,
                      type_vocab_size=0, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2),  # 139,420,416
    # Not published: bertkit's small T5 (v1.1 layout) for seq2seq from scratch on a CPU (generative NER, docs/results/seq2seq.md);
    # its vocabulary is trained on the task's texts, so vocab_size and the special ids are replaced.
    "t5-tiny-zh": dict(model_type="t5", vocab_size=8000, hidden_size=256, num_hidden_layers=3, num_decoder_layers=3, num_attention_heads=4,
                       head_dim=64, intermediate_size=768, hidden_act="gelu_new", gated_ffn=True, tie_word_embeddings=False,
                       layer_norm_eps=1e-6, type_vocab_size=0, pad_token_id=0, eos_token_id=3, decoder_start_token_id=2),
    # Not a published model: bertkit's recipe for pretraining a small model from scratch on a CPU. bert-tiny's
    # size, but rotary positions, init std 0.05 and no dropout: with bert-tiny's own settings (std 0.02 made for
    # 768-wide layers, learned positions) attention stays near uniform for thousands of steps and the model
    # never uses context (docs/results/pretrain-ablation.md). benchmarks/configs/roformer-tiny-zh.json is this.
    "roformer-tiny-zh": dict(
        model_type="roformer", position_embedding_type="rotary", num_hidden_layers=2, hidden_size=128, num_attention_heads=2,
        intermediate_size=512, initializer_range=0.05, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    ),  # 4,336,640
}
