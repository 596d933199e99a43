"""BertConfig: the model's hyper-parameters, read and written as the JSON files BERT ships with.

Field names are those of BERT's `config.json` (Hugging Face) and Google's `bert_config.json`,
so a checkpoint's config reads into this dataclass unchanged. Keys we do not use are kept
in `extra` and written back, so a round trip loses nothing.

Presets are a plain table of published architectures: `BertConfig.from_preset("bert-base-uncased")`.

Why ~430 lines: the dataclass with a comment per field, its checks, the JSON both ways, and ModernBERT's and DeBERTa's option parsers (82 lines); the members' own names and defaults live in families/.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import families
from .errors import BertkitError
from .io.files import read_json

# hidden_act spellings found in checkpoints -> the activation we run (see model.ACTIVATIONS)
HIDDEN_ACTS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "silu", "swish", "tanh")

ATTENTION_MODES = ("bidirectional", "causal", "unilm")

# The members (bertkit/families/, one record each) name their positions, pooler, config.json names and defaults;
# these are the views of that table the code below and seq2seq.py read.
MODEL_TYPES = families.MODEL_TYPES  # model_type values whose checkpoints bertkit reads
POSITION_TYPES = families.POSITION_TYPES
DECODERS = families.of_shape("decoder")  # GPT-2: a decoder alone (bertkit/seq2seq.py)
ENCODER_DECODERS = families.of_shape("encoder-decoder")
T5_TYPES = ("t5", "mt5", "umt5")  # RMSNorm, no biases, bucketed relative position bias, unscaled scores (seq2seq.py's switch)
# Our decoder-shape fields: written back where the member's config.json has the field (Member.fields), or where set.
DECODER_FIELDS = ("num_decoder_layers", "head_dim", "relative_attention_num_buckets", "relative_attention_max_distance",
                  "gated_ffn", "scale_embedding", "bos_token_id", "eos_token_id", "decoder_start_token_id")

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
    position_embedding_type: str | None = None  # absolute | rotary | relative | ...; None: the member's (families: Member.positions)
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
        family_positions = self.member.positions
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
        if self.bigram_buckets and (self.member.shape != "encoder" or self.attention_mode != "bidirectional"):
            raise BertkitError(f"bigram_buckets is for bidirectional encoders: a token's bigram holds the next token, which a "
                               f"{self.model_type if self.member.shape != 'encoder' else self.attention_mode} model does not see.")
        if self.member.shape == "decoder" and self.attention_mode != "causal":
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
        if self.member.check:  # the member's own fields (ModernBERT's, DeBERTa's options; ERNIE's task types)
            self.member.check(self)

    @property
    def member(self) -> families.Member:
        """This model_type's record (bertkit/families/)."""
        return families.member(self.model_type)

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
        return self.member.shape == "decoder"

    @property
    def is_encoder_decoder(self) -> bool:
        """T5, mT5, BART, mBART: bertkit.Seq2SeqLM loads them (and BertModel their encoder)."""
        return self.member.shape == "encoder-decoder"

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
        return self.embed_size != self.hidden_size or self.member.always_projects

    @property
    def has_pooler(self) -> bool:
        return self.member.pooler

    @property
    def positions_after_padding(self) -> bool:
        """RoBERTa (and XLM-RoBERTa) number real tokens from pad_token_id + 1 and give padding pad_token_id."""
        return self.member.positions_after_padding

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
        if kind in families.MEMBERS and families.member(kind).translates:
            d = _family_in(families.member(kind), d)
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
        m = self.member
        # Write our switches only when they differ from BERT, so the file stays HF-shaped.
        for k in ("embedding_size", "attention_mode", "num_hidden_groups", "inner_group_num", "max_relative_position", "rotary_value", "bigram_buckets"):
            if d[k] == BertConfig.__dataclass_fields__[k].default:
                del d[k]
        if d["architectures"] is None:
            del d["architectures"]
        for k in DECODER_FIELDS:  # written where the member's config.json has the field, or where set
            if d[k] == BertConfig.__dataclass_fields__[k].default and k not in m.fields:
                del d[k]
        if m.write:
            d = m.write(d, self)
        out = {**extra, **_family_out(m, d)}
        for theirs, ours in m.names.items():  # a name of theirs that is not one of our fields was kept in extra as ours
            if ours in out and ours not in BertConfig.__dataclass_fields__:
                out[theirs] = out.pop(ours)
        return out

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def from_preset(cls, name: str) -> BertConfig:
        if name not in PRESETS:
            raise BertkitError(f"unknown preset {name!r}; presets are: {', '.join(sorted(PRESETS))}.")
        return cls(**PRESETS[name])


def _family_in(m: families.Member, d: dict[str, Any]) -> dict[str, Any]:
    """A member's config.json -> our field names, the member's defaults filling the gaps, then its own quirks (m.read)."""
    d = {m.names.get(k, k): v for k, v in d.items()}
    d = m.defaults | {k: v for k, v in d.items() if v is not None or (k not in m.defaults and k != "intermediate_size")}
    return m.read(d) if m.read else d


def _family_out(m: families.Member, d: dict[str, Any]) -> dict[str, Any]:
    """Our fields -> the member's config.json names (the inverse of _family_in): fields its file lacks dropped."""
    for k, implied in m.not_in.items():
        if implied is None or d.get(k) == implied:
            d.pop(k, None)
    back = {v: k for k, v in m.names.items()}
    return {back.get(k, k): v for k, v in d.items()}


# Published architectures and bertkit's own small recipes: each member's record holds its presets with their
# parameter counts (tests/test_records.py checks them); this is the table of all of them, by name.
PRESETS: dict[str, dict[str, Any]] = families.PRESETS
