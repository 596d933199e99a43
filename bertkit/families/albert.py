"""ALBERT (Lan et al. 2020): factorised embeddings E -> H (its checkpoints always hold the projection), layers sharing
`num_hidden_groups` groups of `inner_group_num` blocks (config.layer_schedule), SOP as the `nsp` head. Its key table
names blocks by (group, inner) (weights._albert_flat)."""

from .record import Member, Preset


def write(d: dict, c) -> dict:
    """Its config.json always says how the layers share blocks, even at BERT's defaults, and its embedding width
    (transformers reads a config.json without embedding_size as 128, not as hidden_size)."""
    return d | dict(num_hidden_groups=c.num_hidden_groups, inner_group_num=c.inner_group_num, embedding_size=c.embed_size)


MEMBER = Member(
    model_type="albert", title="ALBERT", differs="factorised embeddings E -> H; layers share groups of blocks; SOP head",
    positions="absolute", always_projects=True, hf_name="Albert", write=write,
    presets={
        "albert-base-v2": Preset(dict(vocab_size=30000, embedding_size=128, hidden_act="gelu_new", num_hidden_groups=1,
                                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0), 11_683_584),  # one block, 12 layers
    },
)
