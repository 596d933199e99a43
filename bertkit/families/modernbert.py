"""ModernBERT (Warner et al. 2024): its compute is its own module, bertkit/modern.py (pre-norm blocks, GeGLU, no biases,
rotary positions rotating halves with a global and a local base, a sliding window in all but every third layer). Its
switches are config.json keys kept in `extra` and read once into config.ModernOptions."""

from ..errors import BertkitError
from .record import Member, Preset


def check(c) -> None:
    if c.head_size % 2:
        raise BertkitError(f"ModernBERT rotates pairs of dimensions: the head size {c.head_size} must be even.")
    c.modern  # noqa: B018  (parsed for its checks) its own fields (config.ModernOptions), checked now rather than at the first forward


def keys(c) -> str:
    """A transformers ModernBERT sequence classifier's head is its classifier's, not the MLM's."""
    classifier = (c.architectures or [None])[0] == "ModernBertForSequenceClassification" and not isinstance(c.extra.get("bertkit"), dict)
    return "modernbert-classifier" if classifier else "modernbert"

_BASE = dict(vocab_size=50368, max_position_embeddings=8192, hidden_act="gelu", layer_norm_eps=1e-5, type_vocab_size=0,
             pad_token_id=50283, bos_token_id=50281, eos_token_id=50282, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)

MEMBER = Member(
    model_type="modernbert", title="ModernBERT", differs="its own module (modern.py): pre-norm, GeGLU, no biases, rotary, sliding window",
    positions="rotary", pooler=False, compute="modern", hf_name="ModernBert", classifier="modernbert",
    check=check, keys=keys,
    # its dropout and norm names; its own position_embedding_type ("sans_pos") is kept aside in extra for the round trip
    names=dict(hidden_activation="hidden_act", norm_eps="layer_norm_eps", mlp_dropout="hidden_dropout_prob",
               attention_dropout="attention_probs_dropout_prob", position_embedding_type="modernbert_position_embedding_type"),
    defaults=_BASE | dict(hidden_size=768, intermediate_size=1152, num_hidden_layers=22, num_attention_heads=12),
    not_in=dict(type_vocab_size=0, position_embedding_type=None),
    fields=("bos_token_id", "eos_token_id"),
    presets={
        "modernbert-base": Preset(_BASE | dict(hidden_size=768, intermediate_size=1152, num_hidden_layers=22, num_attention_heads=12),
                                  149_014_272),
        "modernbert-large": Preset(_BASE | dict(hidden_size=1024, intermediate_size=2624, num_hidden_layers=28, num_attention_heads=16),
                                   394_781_696),
    },
)
