"""NEZHA (Wei et al. 2019): no position table; fixed sinusoids of relative distances clipped at
`max_relative_position`, added to keys and values inside attention (relative.py: RelativeAttention, relative_table).
Google-format checkpoints read too."""

from .record import Member, Preset


def write(d: dict, c) -> dict:
    """Its config.json always carries the clipping distance and the switch transformers' NezhaModel read."""
    return d | dict(max_relative_position=c.max_relative_position, use_relative_position=True)


MEMBER = Member(
    model_type="nezha", title="NEZHA", differs="no position table; sinusoids of clipped relative distances in attention",
    positions="relative", compute="relative", google=True, hf_name="Nezha", classifier="bert", not_in=dict(position_embedding_type=None), write=write,
    presets={"nezha-base": Preset(dict(vocab_size=21128), 101_874_432)},  # bert-base-chinese's vocabulary
)
