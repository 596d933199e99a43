"""CamemBERT (Martin et al. 2020): RoBERTa's architecture and key names (transformers' CamembertModel keeps the
`roberta.` prefix) with a French SentencePiece vocabulary of 32,005 tokens, read from its tokenizer.json. The member
added as the proof that a member is one record and one test row (docs/architecture.md)."""

from .record import Member, Preset

MEMBER = Member(
    model_type="camembert", title="CamemBERT", differs="RoBERTa under its own model_type; a French SentencePiece vocabulary",
    positions="absolute", positions_after_padding=True, keys="roberta", hf_name="Camembert", classifier="roberta",
    presets={
        "camembert-base": Preset(dict(vocab_size=32005, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                                      layer_norm_eps=1e-5), 110_621_952),
    },
)
