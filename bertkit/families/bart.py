"""BART (Lewis et al. 2020) and mBART (Liu et al. 2020): encoder-decoders on the backbone's parts (bertkit/seq2seq.py):
post-norm (mBART pre-norm with final norms), learnt positions offset by 2, an embedding norm, `final_logits_bias`."""

from ..errors import BertkitError
from .record import Member, Preset

NAMES = dict(d_model="hidden_size", encoder_layers="num_hidden_layers", decoder_layers="num_decoder_layers",
             encoder_attention_heads="num_attention_heads", encoder_ffn_dim="intermediate_size", activation_function="hidden_act",
             dropout="hidden_dropout_prob", attention_dropout="attention_probs_dropout_prob", init_std="initializer_range")
DEFAULTS = dict(type_vocab_size=0, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
                max_position_embeddings=1024, intermediate_size=4096, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.0)
NOT_IN = dict(type_vocab_size=0, position_embedding_type="absolute", layer_norm_eps=None)
FIELDS = ("num_decoder_layers", "scale_embedding", "bos_token_id", "eos_token_id", "decoder_start_token_id")


def reader(kind: str):
    def read(d: dict) -> dict:
        """The decoder's heads and FFN width must equal the encoder's (one width for both stacks here)."""
        for ours, theirs in (("num_attention_heads", "decoder_attention_heads"), ("intermediate_size", "decoder_ffn_dim")):
            if theirs in d and d[theirs] != d.get(ours, d[theirs]):
                raise BertkitError(f"{kind} with {theirs} {d[theirs]} unlike the encoder's {d[ours]} is not supported.")
            d.pop(theirs, None)
        return d
    return read


def write(d: dict, c) -> dict:
    return d | dict(decoder_attention_heads=d["num_attention_heads"], decoder_ffn_dim=d["intermediate_size"], is_encoder_decoder=True)


MEMBERS = (
    Member(model_type="bart", title="BART", differs="an encoder-decoder (seq2seq.py): post-norm, positions offset by 2, embedding norm",
           positions="absolute", shape="encoder-decoder", pooler=False, compute="seq2seq", hf_name="Bart", names=NAMES,
           defaults=DEFAULTS, not_in=NOT_IN, fields=FIELDS, read=reader("bart"), write=write,
           presets={"bart-base": Preset(dict(vocab_size=50265, hidden_size=768, num_hidden_layers=6, num_decoder_layers=6,
                                             num_attention_heads=12, intermediate_size=3072, max_position_embeddings=1024,
                                             layer_norm_eps=1e-5, type_vocab_size=0, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                                             decoder_start_token_id=2), 139_420_416)}),
    # mBART starts each target with its language code, not a fixed token
    Member(model_type="mbart", title="mBART", differs="BART with pre-norm, final norms, scaled embeddings, language-code starts",
           positions="absolute", shape="encoder-decoder", pooler=False, compute="seq2seq", hf_name="MBart", names=NAMES,
           defaults=DEFAULTS | dict(scale_embedding=False, decoder_start_token_id=None), not_in=NOT_IN, fields=FIELDS,
           read=reader("mbart"), write=write),
)
