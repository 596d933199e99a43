"""ELECTRA (Clark et al. 2020): BERT's encoder with an E -> H projection when E != H, no pooler; the discriminator
(`ElectraForPreTraining`) and generator (`BertForMaskedLM`) heads."""

from .record import Member, Preset


def write(d: dict, c) -> dict:
    """embedding_size always written: transformers reads a config.json without it as 128, not as hidden_size."""
    return d | dict(embedding_size=c.embed_size)

MEMBER = Member(
    model_type="electra", title="ELECTRA", differs="E -> H projection when E != H; no pooler; discriminator and generator heads",
    positions="absolute", pooler=False, hf_name="Electra", classifier="electra", write=write,
    presets={
        "electra-small-discriminator": Preset(dict(embedding_size=128, hidden_size=256, num_attention_heads=4, intermediate_size=1024),
                                              13_483_008),
        "electra-base-discriminator": Preset({}, 108_891_648),
    },
)
