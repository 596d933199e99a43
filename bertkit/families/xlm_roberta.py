"""XLM-RoBERTa (Conneau et al. 2020): RoBERTa's layout and names (`roberta.*`) under its own model_type; its
250k-token Unigram vocabulary is any tokenizer.json. The bge rerankers are XLM-RoBERTa sequence classifiers."""

from .record import Member, Preset

MEMBER = Member(
    model_type="xlm-roberta", title="XLM-RoBERTa", differs="RoBERTa's layout; a 250k-token Unigram vocabulary",
    positions="absolute", positions_after_padding=True, hf_name="XLMRoberta", classifier="roberta",
    presets={
        "xlm-roberta-base": Preset(dict(vocab_size=250002, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                                        layer_norm_eps=1e-5), 278_043_648),
    },
)
