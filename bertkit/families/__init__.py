"""The family, one record per member: what a member *is*, as data, in one file each.

A record says what a member's checkpoints look like and how bertkit reads them: its config.json names and defaults,
its position scheme, its switches, the key table it loads with (weights.FAMILIES), transformers' classifier it reads,
its presets with their published parameter counts, and the small module holding its compute where that differs
from BERT's (modern.py, deberta.py, seq2seq.py). config.py, model.py, weights.py and heads.py look a member up here
by its `model_type` rather than keeping tables of their own, so adding a member is one record (plus one test row:
tests/test_records.py refuses a half-landed one).

Records are data below config: they import nothing of bertkit but errors. A member's config.json quirks that are
not a rename or a default (T5's `feed_forward_proj`, ALBERT's always-written groups) are two small functions in its
record: `read` (its config.json, renamed and defaulted -> our fields) and `write` (our fields -> its config.json,
before renaming back).
"""

from __future__ import annotations

from typing import Any

from . import (
    albert,
    bart,
    bert,
    camembert,
    deberta_v2,
    distilbert,
    electra,
    ernie,
    gpt2,
    modernbert,
    nezha,
    roberta,
    roformer,
    t5,
    xlm_roberta,
)
from .record import POSITION_TYPES, SHAPES, Member, Preset

__all__ = ["MEMBERS", "MODEL_TYPES", "PRESETS", "COUNTS", "POSITION_TYPES", "SHAPES", "Member", "Preset", "member", "of_shape"]

# The members, in the order the README lists them. A new member is a module here and one entry in this table.
MEMBERS: dict[str, Member] = {m.model_type: m for m in (
    bert.MEMBER, roberta.MEMBER, xlm_roberta.MEMBER, camembert.MEMBER, albert.MEMBER, electra.MEMBER, distilbert.MEMBER,
    ernie.MEMBER, roformer.MEMBER, nezha.MEMBER, modernbert.MEMBER, deberta_v2.MEMBER, gpt2.MEMBER, *t5.MEMBERS, *bart.MEMBERS,
)}
MODEL_TYPES = tuple(sorted(MEMBERS))  # model_type values whose checkpoints bertkit reads
PRESETS: dict[str, dict[str, Any]] = {  # preset name -> BertConfig fields, model_type included
    name: ({"model_type": m.model_type} if m.model_type != "bert" else {}) | p.config
    for m in MEMBERS.values() for name, p in m.presets.items()
}
COUNTS: dict[str, int] = {name: p.params for m in MEMBERS.values() for name, p in m.presets.items()}


def member(model_type: str) -> Member:
    """The record of a model_type (config.py checks it is one before anything asks)."""
    return MEMBERS[model_type]


def of_shape(shape: str) -> tuple[str, ...]:
    return tuple(t for t, m in MEMBERS.items() if m.shape == shape)
