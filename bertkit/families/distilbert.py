"""DistilBERT (Sanh et al. 2019): BERT's compute with no segment embedding and no pooler; its own config and key names."""

from ..errors import BertkitError
from .record import Member, Preset


def read(d: dict) -> dict:
    if d.get("sinusoidal_pos_embds"):
        raise BertkitError("DistilBERT with sinusoidal_pos_embds is not supported; bertkit reads learnt positions.")
    return d


MEMBER = Member(
    model_type="distilbert", title="DistilBERT", differs="no segment embedding, no pooler; its own key and config names",
    positions="absolute", pooler=False, hf_name="DistilBert", read=read,
    names=dict(dim="hidden_size", n_layers="num_hidden_layers", n_heads="num_attention_heads", hidden_dim="intermediate_size",
               activation="hidden_act", dropout="hidden_dropout_prob", attention_dropout="attention_probs_dropout_prob"),
    defaults=dict(type_vocab_size=0),
    not_in=dict(type_vocab_size=None, position_embedding_type=None),
    presets={"distilbert-base-uncased": Preset(dict(num_hidden_layers=6, type_vocab_size=0), 66_362_880)},
)
