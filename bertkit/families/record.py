"""A member's record and its presets: the shape every file of bertkit/families/ fills in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    config: dict[str, Any]  # BertConfig fields (model_type set from the member)
    params: int  # parameter count bertkit builds (BertModel with its pooler; CausalLM / Seq2SeqLM for the rest), tested
    published: bool = True  # a published architecture (False: a bertkit recipe, e.g. roformer-tiny-zh)


@dataclass(frozen=True)
class Member:
    model_type: str  # config.json's model_type
    title: str  # the name people write ("RoBERTa")
    differs: str  # one line: what differs from BERT
    positions: str  # absolute | rotary | relative | bucketed | disentangled (POSITION_TYPES)
    shape: str = "encoder"  # encoder | decoder | encoder-decoder
    pooler: bool = True  # transformers' base model has a pooler
    positions_after_padding: bool = False  # real tokens numbered from pad_token_id + 1 (RoBERTa)
    always_projects: bool = False  # an E -> H projection even when E == H (ALBERT's checkpoints)
    names: dict[str, str] = field(default_factory=dict)  # its config.json name -> ours (a name not ours is kept in extra)
    defaults: dict[str, Any] = field(default_factory=dict)  # our fields' values where its config.json leaves them out
    not_in: dict[str, Any] = field(default_factory=dict)  # our fields its config.json lacks: dropped when equal (None: always)
    fields: tuple[str, ...] = ()  # decoder-shape fields its config.json always has (written even at their default)
    keys: str | Callable[[Any], str] = ""  # its key table in weights.FAMILIES ("": its model_type), or a function of the
    # BertConfig choosing among its tables (ModernBERT's classifier, DeBERTa's lm_predictions head, T5's gated FFN)
    hf_name: str = ""  # transformers' class prefix ("XLMRoberta"): its sequence classifier is f"{hf_name}ForSequenceClassification"
    classifier: str | None = None  # the style of that classifier's head bertkit reads (heads.hf_head), None: not read
    compute: str | None = None  # its own compute module in bertkit/, imported by name on first use ("modern" for modern.py)
    google: bool = False  # Google's TF checkpoints of this member are read (BERT's format)
    read: Callable[[dict], dict] | None = None  # its config.json (renamed, defaulted) -> our fields: the quirks
    write: Callable[[dict, Any], dict] | None = None  # our fields (and the BertConfig) -> its config.json's, before renaming
    check: Callable[[Any], None] | None = None  # the BertConfig's member-specific checks, run on construction
    presets: dict[str, Preset] = field(default_factory=dict)

    @property
    def translates(self) -> bool:
        """Its config.json needs renaming or defaults (DistilBERT, ModernBERT, DeBERTa, the decoders)."""
        return bool(self.names or self.defaults or self.read)


POSITION_TYPES = ("absolute", "rotary", "relative", "bucketed", "disentangled")
SHAPES = ("encoder", "decoder", "encoder-decoder")
