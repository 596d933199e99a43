"""T5 v1.0 and v1.1 (Raffel et al. 2020), mT5 (Xue et al. 2021), UMT5: encoder-decoders on the backbone's parts
(bertkit/seq2seq.py, Seq2SeqLM): RMSNorm, no biases, a bucketed relative position bias, unscaled scores; v1.1/mT5 a
gated-GELU FFN and an untied head. Three records sharing one config.json layout."""

from .record import Member, Preset

NAMES = dict(d_model="hidden_size", num_layers="num_hidden_layers", num_heads="num_attention_heads", d_ff="intermediate_size",
             d_kv="head_dim", dropout_rate="hidden_dropout_prob", layer_norm_epsilon="layer_norm_eps", n_positions="max_position_embeddings")
DEFAULTS = dict(type_vocab_size=0, layer_norm_eps=1e-6, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, hidden_act="relu",
                hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, intermediate_size=2048, head_dim=64)
MULTILINGUAL = DEFAULTS | dict(vocab_size=250112, tie_word_embeddings=False, hidden_act="gelu_new", gated_ffn=True, intermediate_size=1024)
NOT_IN = dict(type_vocab_size=0, position_embedding_type="bucketed", hidden_act=None, gated_ffn=None, initializer_range=None,
              attention_probs_dropout_prob=None)
FIELDS = ("num_decoder_layers", "head_dim", "relative_attention_num_buckets", "relative_attention_max_distance", "eos_token_id",
          "decoder_start_token_id")


def reader(default_proj: str):
    def read(d: dict) -> dict:
        """feed_forward_proj ("relu", "gated-gelu", "gated-silu" ...) -> the activation and the gate."""
        proj = d.pop("feed_forward_proj", default_proj)
        act = proj.removeprefix("gated-")
        d.update(gated_ffn=proj.startswith("gated-"), hidden_act="gelu_new" if act == "gelu" else act)
        d.setdefault("attention_probs_dropout_prob", d["hidden_dropout_prob"])
        return d
    return read


def keys(c) -> str:
    """T5 v1.1's gated FFN (wi_0, wi_1) and UMT5's per-layer biases name their weights apart."""
    return ("umt5" if c.model_type == "umt5" else "t5") + ("-gated" if c.gated_ffn else "")


def write(d: dict, c) -> dict:
    act = "gelu" if d["hidden_act"] == "gelu_new" else d["hidden_act"]
    return d | dict(feed_forward_proj=f"gated-{act}" if d.get("gated_ffn") else act, is_encoder_decoder=True)


def record(model_type: str, title: str, hf_name: str, differs: str, defaults: dict, default_proj: str, presets: dict) -> Member:
    return Member(model_type=model_type, title=title, differs=differs, positions="bucketed", shape="encoder-decoder", pooler=False,
                  compute="seq2seq", hf_name=hf_name, keys=keys,
                  names=NAMES, defaults=defaults, not_in=NOT_IN, fields=FIELDS, read=reader(default_proj), write=write,
                  presets=presets)


MEMBERS = (
    record("t5", "T5", "T5", "an encoder-decoder (seq2seq.py): RMSNorm, no biases, bucketed relative bias", DEFAULTS, "relu", {
        "t5-small": Preset(dict(vocab_size=32128, hidden_size=512, num_hidden_layers=6, num_attention_heads=8, head_dim=64,
                                intermediate_size=2048, hidden_act="relu", layer_norm_eps=1e-6, type_vocab_size=0, pad_token_id=0,
                                eos_token_id=1, decoder_start_token_id=0), 60_506_624),
        # Not published: bertkit's small T5 (v1.1 layout) for seq2seq from scratch on a CPU (generative NER,
        # docs/results/seq2seq.md); its vocabulary is trained on the task's texts, so vocab_size and the special ids are replaced.
        "t5-tiny-zh": Preset(dict(vocab_size=8000, hidden_size=256, num_hidden_layers=3, num_decoder_layers=3, num_attention_heads=4,
                                  head_dim=64, intermediate_size=768, hidden_act="gelu_new", gated_ffn=True, tie_word_embeddings=False,
                                  layer_norm_eps=1e-6, type_vocab_size=0, pad_token_id=0, eos_token_id=3, decoder_start_token_id=2),
                             9_998_848, published=False),
    }),
    record("mt5", "mT5", "MT5", "T5 v1.1's layout (gated GELU, untied head) with a 250k vocabulary", MULTILINGUAL, "gated-gelu", {
        "mt5-small": Preset(dict(vocab_size=250112, hidden_size=512, num_hidden_layers=8, num_attention_heads=6, head_dim=64,
                                 intermediate_size=1024, hidden_act="gelu_new", gated_ffn=True, tie_word_embeddings=False,
                                 layer_norm_eps=1e-6, type_vocab_size=0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0),
                            300_176_768),
    }),
    record("umt5", "UMT5", "UMT5", "mT5 with a relative bias table in every layer, not only the first", MULTILINGUAL,
           "gated-gelu", {}),
)
