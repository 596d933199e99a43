"""The family on one core, against randomly initialised transformers models of each type.

Odd sizes on purpose: hidden 36 (3 heads of 12), embedding size 20 != hidden for ALBERT,
ELECTRA and RoFormer, ALBERT with 3 layers over 2 shared groups of 2 blocks. Every output is
compared within 1e-5 (fp32) on a batch with padding, then written back by bertkit and read
by transformers. NEZHA has no transformers reference any more: it is checked against a slow,
loop-by-loop implementation of the paper's attention written here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import transformers as tf

import bertkit
from bertkit.relative import relative_table
from conftest import randomise
from test_parity import assert_close, outputs

SIZES = dict(vocab_size=99, hidden_size=36, num_hidden_layers=2, num_attention_heads=3, intermediate_size=52)


def roberta():
    return tf.RobertaConfig(**SIZES, max_position_embeddings=42, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5)


def albert():
    return tf.AlbertConfig(**(SIZES | dict(num_hidden_layers=3)), embedding_size=20, num_hidden_groups=2, inner_group_num=2,
                           max_position_embeddings=40, hidden_act="gelu_new")


def electra():
    return tf.ElectraConfig(**SIZES, embedding_size=20, max_position_embeddings=40)


def distilbert():
    return tf.DistilBertConfig(vocab_size=99, dim=36, n_layers=2, n_heads=3, hidden_dim=52, max_position_embeddings=40)


def roformer(**kw):
    return tf.RoFormerConfig(**SIZES, embedding_size=20, max_position_embeddings=40, **kw)


def xlm_roberta():
    return tf.XLMRobertaConfig(**SIZES, max_position_embeddings=42, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5)


def camembert():
    return tf.CamembertConfig(**SIZES, max_position_embeddings=42, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5)


def ernie(use_task_id=True):
    return tf.ErnieConfig(**SIZES, max_position_embeddings=40, type_vocab_size=4, use_task_id=use_task_id, task_type_vocab_size=3)


def modernbert(**kw):
    """4 layers: global, local, local, global; a window of 4 (2 keys each side) on sequences of up to 9 tokens."""
    sizes = SIZES | dict(num_hidden_layers=4)
    return tf.ModernBertConfig(**sizes, max_position_embeddings=40, local_attention=4, global_attn_every_n_layers=3, pad_token_id=0,
                               bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2, **kw)


def modernbert_biased():
    return modernbert(norm_bias=True, attention_bias=True, mlp_bias=True, classifier_bias=True, hidden_activation="gelu_new",
                      classifier_activation="silu", local_rope_theta=500.0)


def deberta_v3(**kw):
    """v3's layout: log buckets (8 per side up to 20, so distances from 4 on are bucketed on 9 tokens), the table
    LayerNorm'd and read through the layer's own projections, no absolute positions."""
    settings = dict(relative_attention=True, position_buckets=8, max_relative_positions=20, norm_rel_ebd="layer_norm", share_att_key=True,
                    pos_att_type="p2c|c2p", position_biased_input=False, type_vocab_size=0) | kw
    return tf.DebertaV2Config(**SIZES, max_position_embeddings=40, **settings)


def deberta_v2():
    """v2's layout: exact distances clipped at 4, projections of their own, absolute positions too, two segments."""
    return tf.DebertaV2Config(**SIZES, max_position_embeddings=40, relative_attention=True, max_relative_positions=4,
                              pos_att_type=["c2p", "p2c"], share_att_key=False, position_biased_input=True, type_vocab_size=2)


# (name, transformers config, transformers class, bertkit class)
CASES = [
    ("roberta", roberta, tf.RobertaModel, bertkit.BertModel),
    ("roberta", roberta, tf.RobertaForMaskedLM, bertkit.BertForMaskedLM),
    ("albert", albert, tf.AlbertModel, bertkit.BertModel),
    ("albert", albert, tf.AlbertForMaskedLM, bertkit.BertForMaskedLM),
    ("albert", albert, tf.AlbertForPreTraining, bertkit.BertForPreTraining),
    ("electra", electra, tf.ElectraModel, bertkit.BertModel),
    ("electra", electra, tf.ElectraForMaskedLM, bertkit.BertForMaskedLM),
    ("electra", electra, tf.ElectraForPreTraining, bertkit.ElectraForPreTraining),
    ("distilbert", distilbert, tf.DistilBertModel, bertkit.BertModel),
    ("distilbert", distilbert, tf.DistilBertForMaskedLM, bertkit.BertForMaskedLM),
    ("roformer", roformer, tf.RoFormerModel, bertkit.BertModel),
    ("roformer", roformer, tf.RoFormerForMaskedLM, bertkit.BertForMaskedLM),
    ("roformer-rotary-value", lambda: roformer(rotary_value=True), tf.RoFormerModel, bertkit.BertModel),
    ("xlm-roberta", xlm_roberta, tf.XLMRobertaModel, bertkit.BertModel),
    ("xlm-roberta", xlm_roberta, tf.XLMRobertaForMaskedLM, bertkit.BertForMaskedLM),
    ("camembert", camembert, tf.CamembertModel, bertkit.BertModel),
    ("camembert", camembert, tf.CamembertForMaskedLM, bertkit.BertForMaskedLM),
    ("ernie", ernie, tf.ErnieModel, bertkit.BertModel),
    ("ernie", ernie, tf.ErnieForMaskedLM, bertkit.BertForMaskedLM),
    ("ernie", ernie, tf.ErnieForPreTraining, bertkit.BertForPreTraining),
    ("ernie-no-task-id", lambda: ernie(use_task_id=False), tf.ErnieModel, bertkit.BertModel),
    ("modernbert", modernbert, tf.ModernBertModel, bertkit.BertModel),
    ("modernbert", modernbert, tf.ModernBertForMaskedLM, bertkit.BertForMaskedLM),
    ("deberta-v3", deberta_v3, tf.DebertaV2Model, bertkit.BertModel),
    ("deberta-v3", deberta_v3, tf.DebertaV2ForMaskedLM, bertkit.BertForMaskedLM),
    ("deberta-v3-lm-head", lambda: deberta_v3(legacy=False), tf.DebertaV2ForMaskedLM, bertkit.BertForMaskedLM),
    ("deberta-v2", deberta_v2, tf.DebertaV2Model, bertkit.BertModel),
    ("deberta-v2", deberta_v2, tf.DebertaV2ForMaskedLM, bertkit.BertForMaskedLM),
    ("deberta-c2p-factorised", lambda: deberta_v3(pos_att_type="c2p", share_att_key=False, embedding_size=20), tf.DebertaV2Model,
     bertkit.BertModel),
    ("modernbert-biases", modernbert_biased, tf.ModernBertModel, bertkit.BertModel),
    ("modernbert-biases", modernbert_biased, tf.ModernBertForMaskedLM, bertkit.BertForMaskedLM),
]
IDS = [f"{name}-{hf.__name__}" for name, _, hf, _ in CASES]


def family_batch(config, seed: int = 1) -> dict[str, torch.Tensor]:
    """3 sequences of lengths 9, 5 and 2, padded with the config's pad id; two segments where the type has them."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 99, (3, 9), generator=g)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    ids[mask == 0] = config.pad_token_id
    batch = {"input_ids": ids, "attention_mask": mask}
    if getattr(config, "type_vocab_size", 0) >= 2:
        types = torch.zeros_like(ids)
        types[0, 5:] = 1
        batch["token_type_ids"] = types
    return batch


def reference(make_config, hf_cls, seed=0):
    model = randomise(hf_cls(make_config()), seed)
    rotary = [m for n, m in model.named_modules() if n.endswith("embed_positions")]
    for m in rotary:  # keep RoFormer's table the real sinusoids, so the formula is what is tested
        m.weight.data.copy_(type(m)(*m.weight.shape).weight)
    return model


def outputs_all(model, batch):
    out = outputs(model, batch)
    with torch.no_grad():
        o = model(**batch)
    if getattr(o, "sop_logits", None) is not None:  # ALBERT's sentence-order head is our nsp head
        out["nsp_logits"] = o.sop_logits
    return out


@pytest.mark.parametrize("name,make_config,hf_cls,our_cls", CASES, ids=IDS)
def test_family_matches_transformers(tmp_path, name, make_config, hf_cls, our_cls):
    ref = reference(make_config, hf_cls)
    ref.save_pretrained(tmp_path / "ckpt")
    ours = our_cls.from_pretrained(tmp_path / "ckpt")
    assert ours.config.model_type == ref.config.model_type
    batch = family_batch(ref.config)
    assert_close(outputs_all(ours, batch), outputs_all(ref, batch))


@pytest.mark.parametrize("name,make_config,hf_cls,our_cls", CASES, ids=IDS)
def test_family_round_trip_through_transformers(tmp_path, name, make_config, hf_cls, our_cls):
    ref = reference(make_config, hf_cls, seed=3)
    ref.save_pretrained(tmp_path / "src")
    our_cls.from_pretrained(tmp_path / "src").save_pretrained(tmp_path / "out")
    back = hf_cls.from_pretrained(tmp_path / "out").eval()
    batch = family_batch(ref.config)
    assert_close(outputs_all(back, batch), outputs_all(ref, batch))
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["model_type"] == ref.config.model_type


@pytest.mark.parametrize("kw", [{}, dict(classifier_pooling="mean", classifier_bias=True, norm_bias=True, classifier_activation="silu",
                                          classifier_dropout=0.1)], ids=["cls", "mean-biased"])
def test_modernbert_sequence_classifier_matches_transformers(tmp_path, kw):
    """transformers' ModernBertForSequenceClassification: its prediction head ("head", which the MLM also names) and
    classifier load as its classifier head, pooled by [CLS] or the mean of the real tokens, and save back as that class."""
    ref = randomise(tf.ModernBertForSequenceClassification(modernbert(num_labels=3, **kw)), seed=4)
    ref.save_pretrained(tmp_path / "src")
    ours = bertkit.BertForSequenceClassification.from_pretrained(tmp_path / "src").eval()
    batch = family_batch(ref.config)
    with torch.no_grad():
        want = ref(**batch).logits
        torch.testing.assert_close(ours(**batch), want, atol=1e-5, rtol=1e-4)
    ours.save_pretrained(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == ["ModernBertForSequenceClassification"]
    back = tf.ModernBertForSequenceClassification.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(**batch).logits, want, atol=1e-5, rtol=1e-4)
    # read as an MLM (new head), it saves as one: its names are the MLM's again
    mlm = bertkit.BertForMaskedLM.from_pretrained(tmp_path / "src", new_heads=True, verbose=False)
    mlm.save_pretrained(tmp_path / "mlm")
    assert tf.ModernBertForMaskedLM.from_pretrained(tmp_path / "mlm").head.dense.weight.shape == mlm.mlm.transform.weight.shape


def test_roberta_positions_skip_padding():
    """RoBERTa numbers real tokens from pad + 1: a left-padded sequence gives the same vectors."""
    c = bertkit.BertConfig(**SIZES, model_type="roberta", max_position_embeddings=42, type_vocab_size=1, pad_token_id=1)
    m = randomise(bertkit.BertModel(c))
    ids = torch.tensor([[5, 6, 7, 8]])
    left = torch.tensor([[1, 1, 5, 6, 7, 8]])
    with torch.no_grad():
        a = m(ids).last_hidden_state
        b = m(left, attention_mask=(left != 1).long()).last_hidden_state[:, 2:]
    assert (a - b).abs().max() < 1e-5


def test_albert_shares_blocks():
    """3 layers over 2 groups of 2 blocks: 4 blocks of weights, layers run groups 0, 0, 1."""
    c = bertkit.BertConfig(**(SIZES | dict(num_hidden_layers=3)), model_type="albert", embedding_size=20,
                           num_hidden_groups=2, inner_group_num=2)
    assert c.layer_schedule() == [[0, 1], [0, 1], [2, 3]]
    assert len(bertkit.BertModel(c).layers) == 4
    one = bertkit.BertConfig(**(SIZES | dict(num_hidden_layers=12)), model_type="albert", num_hidden_groups=1)
    assert one.layer_schedule() == [[0]] * 12


# ---- NEZHA: against the paper's formula, written out slowly ----------------------------


def slow_nezha_attention(attn, x, real, max_distance):
    """Wei et al. 2019, section 3.2, one (batch, head, i, j) at a time, sinusoids from math.sin/cos.

    e_ij = q_i . (k_j + a_ij) / sqrt(D), softmax over real j, z_i = sum_j p_ij (v_j + a_ij),
    a_ij[2k] = sin(r / 10000^(2k/D)), a_ij[2k+1] = cos(r / 10000^(2k/D)), r = clip(j - i, -K, K) + K.
    """
    B, T, H = x.shape
    N = attn.n_heads
    D = H // N
    q, k, v = (t.view(B, T, N, D) for t in attn.qkv(x).chunk(3, dim=-1))
    out = torch.zeros(B, T, N, D, dtype=torch.float64)
    for b in range(B):
        for n in range(N):
            for i in range(T):
                a = {}
                for j in range(T):
                    r = min(max(j - i, -max_distance), max_distance) + max_distance
                    a[j] = torch.tensor([math.sin(r / 10000 ** (2 * (d // 2) / D)) if d % 2 == 0 else math.cos(r / 10000 ** (2 * (d // 2) / D))
                                         for d in range(D)], dtype=torch.float64)
                js = [j for j in range(T) if real[b, j]]
                e = torch.stack([q[b, i, n].double() @ (k[b, j, n].double() + a[j]) / math.sqrt(D) for j in js])
                p = e.softmax(0)
                out[b, i, n] = sum(p[t] * (v[b, j, n].double() + a[j]) for t, j in enumerate(js))
    return attn.o(out.reshape(B, T, H).float())


def test_nezha_attention_equals_the_formula():
    c = bertkit.BertConfig(**SIZES, model_type="nezha", max_relative_position=3)
    m = randomise(bertkit.BertModel(c))
    batch = family_batch(c)
    with torch.no_grad():
        x = m.embed(batch["input_ids"], batch["token_type_ids"], None)
        layer = m.layers[0]
        ours = layer.attn(x, batch["attention_mask"].bool()[:, None, None, :], relative_table(9, 12, 3, x.device))
        slow = slow_nezha_attention(layer.attn, x, batch["attention_mask"].bool(), 3)
    real = batch["attention_mask"].bool()
    assert (ours - slow)[real].abs().max() < 1e-5


def test_nezha_checkpoint_names_load_and_round_trip(tmp_path):
    """NEZHA checkpoints (Huawei's, converted by transformers' former port) use BERT's names under
    "nezha." plus a relative-position buffer per layer, which is dropped on loading."""
    c = bertkit.BertConfig(**SIZES, model_type="nezha", max_relative_position=4)
    m = randomise(bertkit.BertForPreTraining(c))
    m.save_pretrained(tmp_path / "a")
    from safetensors.torch import load_file, save_file

    sd = load_file(tmp_path / "a" / "model.safetensors")
    assert "nezha.encoder.layer.1.attention.self.query.weight" in sd and "cls.seq_relationship.weight" in sd
    assert not any("position_embeddings" in k for k in sd)
    sd["nezha.encoder.layer.0.attention.self.relative_positions_encoding.positions_encoding"] = torch.zeros(40, 40, 12)
    save_file(sd, str(tmp_path / "a" / "model.safetensors"))
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["max_relative_position"] == 4 and config["use_relative_position"] is True
    back = bertkit.BertForPreTraining.from_pretrained(tmp_path / "a")
    batch = family_batch(c)
    with torch.no_grad():
        assert torch.equal(back(**batch).mlm_logits, m(**batch).mlm_logits)


# ---- Masks on every attention kind -------------------------------------------------------

KINDS = [dict(), dict(model_type="roformer"), dict(model_type="nezha"), dict(model_type="albert", embedding_size=20)]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.get("model_type", "bert"))
def test_causal_mask_never_sees_the_future(kind):
    m = randomise(bertkit.BertModel(bertkit.BertConfig(**SIZES, attention_mode="causal", max_position_embeddings=40, **kind)))
    ids = torch.randint(5, 99, (2, 8), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[:, 5] = 4
    with torch.no_grad():
        a, b = m(ids).last_hidden_state, m(changed).last_hidden_state
    assert torch.equal(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.get("model_type", "bert"))
def test_unilm_mask_source_bidirectional_target_causal(kind):
    m = randomise(bertkit.BertModel(bertkit.BertConfig(**SIZES, attention_mode="unilm", max_position_embeddings=40, **kind)))
    ids = torch.randint(5, 99, (1, 8), generator=torch.Generator().manual_seed(0))
    types = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]])
    with torch.no_grad():
        base = m(ids, token_type_ids=types).last_hidden_state
        target = ids.clone()
        target[0, 6] = 4  # a later target token: source and earlier target positions unchanged
        t = m(target, token_type_ids=types).last_hidden_state
        source = ids.clone()
        source[0, 3] = 4  # the last source token: every position sees it
        s = m(source, token_type_ids=types).last_hidden_state
    assert torch.equal(base[:, :6], t[:, :6]) and not torch.allclose(base[:, 6:], t[:, 6:])
    assert not torch.allclose(base[:, :3], s[:, :3])


# ---- Presets and bad input --------------------------------------------------------------

PUBLISHED = {
    "gpt2": 124_439_808,
    "t5-small": 60_506_624,
    "mt5-small": 300_176_768,
    "bart-base": 139_420_416,
    "roberta-base": 124_645_632,
    "albert-base-v2": 11_683_584,
    "distilbert-base-uncased": 66_362_880,
    "electra-small-discriminator": 13_483_008,
    "electra-base-discriminator": 108_891_648,
    "roformer-chinese-base": 123_555_840,
    "nezha-base": 101_874_432,
}


@pytest.mark.parametrize("preset", PUBLISHED)
def test_preset_sizes(preset, capsys):
    from bertkit.cli import main

    assert main(["summary", preset]) == 0
    assert f"Total params: {PUBLISHED[preset]:,}" in capsys.readouterr().out


def test_small_pretraining_preset(capsys):
    """roformer-tiny-zh (bertkit's own recipe, not a published model) is the config the pretraining report ran."""
    from bertkit.cli import main

    root = Path(__file__).resolve().parent.parent
    preset = bertkit.BertConfig.from_preset("roformer-tiny-zh")
    assert bertkit.BertConfig.from_json_file(root / "benchmarks" / "configs" / "roformer-tiny-zh.json") == preset
    assert preset.position_embedding_type == "rotary" and preset.initializer_range == 0.05 and preset.hidden_dropout_prob == 0.0
    assert main(["summary", "roformer-tiny-zh"]) == 0
    assert "Total params: 4,336,640" in capsys.readouterr().out


def test_unsupported_type_names_it_and_the_supported(tmp_path):
    ref = tf.XLNetModel(tf.XLNetConfig(vocab_size=99, d_model=36, n_layer=1, n_head=3, d_inner=52))
    ref.save_pretrained(tmp_path)
    with pytest.raises(bertkit.BertkitError, match=r"model_type 'xlnet' is not supported; bertkit reads albert, bart, bert, camembert, deberta-v2, distilbert, electra, ernie, gpt2, mbart, modernbert, mt5, nezha, roberta, roformer, t5, umt5, xlm-roberta"):
        bertkit.BertModel.from_pretrained(tmp_path)


def test_config_and_weights_disagree(tmp_path):
    ref = reference(albert, tf.AlbertModel)
    ref.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    good = json.loads(path.read_text())
    path.write_text(json.dumps(good | {"embedding_size": 24}))
    with pytest.raises(bertkit.BertkitError, match=r"weight 'embeddings\.[\w.]+' has shape \((99, )?20,?\) but the config asks for \((99, )?24,?\)"):
        bertkit.BertModel.from_pretrained(tmp_path)
    path.write_text(json.dumps(good | {"num_hidden_groups": 3}))  # a third shared group (2 blocks of 12 weights: q, k, v stacked) the weights lack
    with pytest.raises(bertkit.BertkitError, match=r"lacks 24 weights .*'albert\.encoder\.albert_layer_groups\.2\.albert_layers\.0\.[\w.]+'"):
        bertkit.BertModel.from_pretrained(tmp_path)


# ---- Modern and multilingual encoders: presets against transformers, bad configs ------------------

MODERN_PRESETS = {  # bertkit preset -> the same published config built by transformers
    "modernbert-base": lambda: tf.ModernBertConfig(),
    "modernbert-large": lambda: tf.ModernBertConfig(hidden_size=1024, intermediate_size=2624, num_hidden_layers=28, num_attention_heads=16),
    "xlm-roberta-base": lambda: tf.XLMRobertaConfig(vocab_size=250002, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                                                    layer_norm_eps=1e-5),
    "deberta-v3-base": lambda: tf.DebertaV2Config(vocab_size=128100, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                                  intermediate_size=3072, max_position_embeddings=512, type_vocab_size=0, layer_norm_eps=1e-7,
                                                  relative_attention=True, max_relative_positions=-1, position_buckets=256,
                                                  norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type="p2c|c2p",
                                                  position_biased_input=False, pad_token_id=0),
    "ernie-3.0-base-zh": lambda: tf.ErnieConfig(vocab_size=40000, max_position_embeddings=2048, type_vocab_size=4, layer_norm_eps=1e-5,
                                                use_task_id=True, task_type_vocab_size=3),
}


@pytest.mark.parametrize("preset", MODERN_PRESETS)
def test_modern_preset_counts_equal_transformers(preset, capsys):
    """The parameter count `bertkit summary` prints equals transformers' base model built from the published config."""
    from bertkit.cli import main

    with torch.device("meta"):
        theirs = tf.AutoModel.from_config(MODERN_PRESETS[preset]()).num_parameters()
    assert main(["summary", preset]) == 0
    assert f"Total params: {theirs:,}" in capsys.readouterr().out


def test_hub_modernbert_config_reads(tmp_path):
    """The hub's ModernBERT config.json (older keys: global_rope_theta, position_embedding_type "sans_pos") reads and
    writes back what it said."""
    hub = dict(model_type="modernbert", architectures=["ModernBertForMaskedLM"], vocab_size=99, hidden_size=36, intermediate_size=52,
               num_hidden_layers=4, num_attention_heads=3, max_position_embeddings=40, local_attention=4, global_attn_every_n_layers=2,
               global_rope_theta=1000.0, local_rope_theta=100.0, norm_eps=1e-5, norm_bias=False, hidden_activation="gelu",
               position_embedding_type="sans_pos", pad_token_id=0, mlp_dropout=0.0, attention_dropout=0.0)
    (tmp_path / "config.json").write_text(json.dumps(hub))
    c = bertkit.BertConfig.from_json_file(tmp_path / "config.json")
    m = c.modern
    assert (m.global_layers, m.global_theta, m.local_theta, m.local_attention) == ((True, False, True, False), 1000.0, 100.0, 4)
    assert c.position_embedding_type == "rotary" and c.type_vocab_size == 0 and c.hidden_dropout_prob == 0.0
    back = c.to_dict()
    assert {k: back[k] for k in hub} == hub


@pytest.mark.parametrize("change,message", [
    (dict(local_attention=5), r"local_attention must be an even whole number of at least 2 .* not 5\."),
    (dict(local_attention=64), r"local_attention 64 is larger than max_position_embeddings 40"),
    (dict(layer_types=["full_attention"]), r"layer_types must list 'full_attention' or 'sliding_attention' for each of the 4 layers"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), r"rope_scaling .* is not supported"),
    (dict(global_rope_theta=-1), r"the rotary base of full_attention \(global_rope_theta\) must be a positive number, not -1\."),
    (dict(model_type="deberta-v2", pos_att_type="p2c|c2x"), r"pos_att_type names 'c2x', which is not a disentangled attention term"),
    (dict(model_type="deberta-v2", pos_att_type="p2p"), r"pos_att_type names 'p2p'"),
    (dict(model_type="deberta-v2", position_buckets=7), r"position_buckets 7 must be even, at least 4"),
    (dict(model_type="deberta-v2", conv_kernel_size=3), r"conv_kernel_size 3 .* is not supported"),
])
def test_bad_modernbert_config_names_the_field(tmp_path, change, message):
    good = modernbert().to_dict()
    good.pop("rope_parameters", None)
    good.pop("layer_types", None)
    (tmp_path / "config.json").write_text(json.dumps(good | change))
    with pytest.raises(bertkit.BertkitError, match=message):
        bertkit.BertConfig.from_json_file(tmp_path / "config.json")


def test_deberta_v3_checkpoint_extras_are_reported_not_loaded(tmp_path, capsys):
    """A DeBERTa-v3 discriminator as the hub ships it holds its absolute position table (position_biased_input false)
    and its replaced-token head (mask_predictions): transformers skips both, so does bertkit, and says so."""
    from safetensors.torch import load_file, save_file

    ref = reference(deberta_v3, tf.DebertaV2Model)
    ref.save_pretrained(tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    sd |= {"embeddings.position_embeddings.weight": torch.randn(40, 36), "mask_predictions.dense.weight": torch.randn(36, 36),
           "mask_predictions.classifier.weight": torch.randn(1, 36)}
    save_file(sd, tmp_path / "model.safetensors", metadata={"format": "pt"})
    ours = bertkit.BertModel.from_pretrained(tmp_path)
    assert len(ours.load_report.unused) == 3
    assert "ignored 3 checkpoint weights" in capsys.readouterr().err
    batch = family_batch(ref.config)
    assert_close(outputs_all(ours, batch), outputs_all(ref, batch))
