"""DeBERTa-v2/v3 (He et al. 2020, 2021): its compute is its own module, bertkit/deberta.py (disentangled attention over
log-bucketed relative positions, absolute positions only with position_biased_input, E -> H before the embedding
norm). Its switches are config.json keys kept in `extra`, read into config.DebertaOptions."""

from .record import Member, Preset


def check(c) -> None:
    c.deberta  # noqa: B018  (parsed for its checks) its own fields (config.DebertaOptions), checked on construction


def keys(c) -> str:
    """Checkpoints with `legacy: false` name the MLM head lm_predictions.lm_head."""
    return "deberta-v2" if c.deberta.legacy else "deberta-v2-lm"

MEMBER = Member(
    model_type="deberta-v2", title="DeBERTa-v2/v3", differs="its own module (deberta.py): disentangled attention, relative buckets",
    positions="disentangled", pooler=False, compute="deberta", hf_name="DebertaV2", check=check, keys=keys,
    defaults=dict(vocab_size=128100, hidden_size=1536, num_hidden_layers=24, num_attention_heads=24, intermediate_size=6144,
                  type_vocab_size=0, layer_norm_eps=1e-7, pad_token_id=0),
    not_in=dict(position_embedding_type=None),
    presets={
        "deberta-v3-base": Preset(dict(vocab_size=128100, max_position_embeddings=512, type_vocab_size=0, layer_norm_eps=1e-7,
                                       extra=dict(relative_attention=True, max_relative_positions=-1, position_buckets=256,
                                                  norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type="p2c|c2p",
                                                  position_biased_input=False)), 183_831_552),
    },
)
