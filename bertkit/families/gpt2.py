"""GPT-2 (Radford et al. 2019): a decoder alone on the backbone's parts (bertkit/seq2seq.py, CausalLM): learnt positions,
pre-norm, a final norm; Conv1D weights transposed at the key-table border. BERT-tokenizer Chinese GPT-2s load the same way."""

from ..errors import BertkitError
from .record import Member, Preset


def read(d: dict) -> dict:
    d.setdefault("intermediate_size", 4 * d.get("hidden_size", 768))
    for k in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if d.get(k):
            raise BertkitError(f"GPT-2 with {k} is not supported; bertkit reads the original GPT-2 attention.")
    return d


MEMBER = Member(
    model_type="gpt2", title="GPT-2", differs="a decoder alone (seq2seq.py): pre-norm, causal, Conv1D weights",
    positions="absolute", shape="decoder", pooler=False, compute="seq2seq", hf_name="GPT2", read=read,
    names=dict(n_embd="hidden_size", n_layer="num_hidden_layers", n_head="num_attention_heads", n_inner="intermediate_size",
               activation_function="hidden_act", resid_pdrop="hidden_dropout_prob", attn_pdrop="attention_probs_dropout_prob",
               n_positions="max_position_embeddings", layer_norm_epsilon="layer_norm_eps"),
    defaults=dict(type_vocab_size=0, layer_norm_eps=1e-5, pad_token_id=None, bos_token_id=50256, eos_token_id=50256,
                  hidden_act="gelu_new", attention_mode="causal", max_position_embeddings=1024, vocab_size=50257),
    not_in=dict(type_vocab_size=0, attention_mode="causal", position_embedding_type="absolute", pad_token_id=None),
    fields=("bos_token_id", "eos_token_id"),
    presets={
        "gpt2": Preset(dict(vocab_size=50257, max_position_embeddings=1024, hidden_act="gelu_new", layer_norm_eps=1e-5, type_vocab_size=0,
                            pad_token_id=None, attention_mode="causal", bos_token_id=50256, eos_token_id=50256), 124_439_808),
    },
)
