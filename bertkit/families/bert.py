"""BERT (Devlin et al. 2019): the member every other one is told against. Google's TF checkpoints read too."""

from .record import Member, Preset

MEMBER = Member(
    model_type="bert", title="BERT", differs="the reference: learnt absolute positions, post-LN blocks, pooler, MLM + NSP heads",
    positions="absolute", google=True, hf_name="Bert", classifier="bert",
    presets={
        "bert-base-uncased": Preset(dict(vocab_size=30522), 109_482_240),
        "bert-base-cased": Preset(dict(vocab_size=28996), 108_310_272),
        "bert-large-uncased": Preset(dict(vocab_size=30522, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                          intermediate_size=4096), 335_141_888),
        "bert-base-chinese": Preset(dict(vocab_size=21128), 102_267_648),
        "all-minilm-l6-v2": Preset(dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                        intermediate_size=1536), 22_713_216),
        # Google's small BERTs (Turc et al. 2019, "Well-Read Students Learn Better"): fine-tuning from scratch on a CPU
        # starts here. Trained with a vocabulary of its own, a preset's vocab_size is replaced.
        "bert-tiny": Preset(dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512), 4_385_920),
        "bert-mini": Preset(dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024), 11_170_560),
    },
)
