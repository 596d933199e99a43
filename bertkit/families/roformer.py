"""RoFormer (Su et al. 2021): no position table; q and k (optionally v: `rotary_value`) rotated by position in every
layer (rotary.py: RotaryAttention, RotaryTable, a frozen weight as in its checkpoints); no pooler."""

from .record import Member, Preset

MEMBER = Member(
    model_type="roformer", title="RoFormer", differs="no position table; rotary q/k (and optionally v) in attention",
    positions="rotary", pooler=False, compute="rotary", hf_name="RoFormer", not_in=dict(position_embedding_type=None),
    presets={
        "roformer-chinese-base": Preset(dict(vocab_size=50000, max_position_embeddings=1536), 123_555_840),
        # Not a published model: bertkit's recipe for pretraining a small model from scratch on a CPU. bert-tiny's size,
        # but rotary positions, init std 0.05 and no dropout: with bert-tiny's own settings (std 0.02 made for 768-wide
        # layers, learned positions) attention stays near uniform for thousands of steps and the model never uses
        # context (docs/results/pretrain-ablation.md). benchmarks/configs/roformer-tiny-zh.json is this.
        "roformer-tiny-zh": Preset(dict(position_embedding_type="rotary", num_hidden_layers=2, hidden_size=128, num_attention_heads=2,
                                        intermediate_size=512, initializer_range=0.05, hidden_dropout_prob=0.0,
                                        attention_probs_dropout_prob=0.0), 4_336_640, published=False),
    },
)
