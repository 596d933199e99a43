"""RoBERTa (Liu et al. 2019): BERT's compute; positions count from pad_token_id + 1, one segment, `lm_head.*` names.
Chinese RoBERTa-wwm checkpoints are BERT-format and load as `bert`."""

from .record import Member, Preset

MEMBER = Member(
    model_type="roberta", title="RoBERTa", differs="positions count from pad_token_id + 1; one segment; lm_head.* names",
    positions="absolute", positions_after_padding=True, hf_name="Roberta", classifier="roberta",
    presets={
        "roberta-base": Preset(dict(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                                    layer_norm_eps=1e-5), 124_645_632),
    },
)
