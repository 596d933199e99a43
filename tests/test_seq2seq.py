"""Decoders and encoder-decoders (bertkit/seq2seq.py) against transformers: GPT-2, T5 v1.0 and v1.1, mT5, BART,
mBART, each a randomly initialised transformers model of odd sizes (hidden 36, 3 heads of 10 or 12, buckets and
distances small enough that the log buckets are used), saved and loaded by bertkit."""

from __future__ import annotations

import json

import pytest
import torch

import bertkit
from bertkit import BertkitError, BertModel, CausalLM, Seq2SeqLM
from bertkit.seq2seq import Cache, t5_buckets

tf = pytest.importorskip("transformers")
V = 99
TOL = 1e-5


def configs():
    t5 = dict(d_model=36, d_kv=10, d_ff=52, num_heads=3, num_layers=2, vocab_size=V, relative_attention_num_buckets=8,
              relative_attention_max_distance=12, dropout_rate=0.0, decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)
    bart = dict(d_model=36, encoder_layers=2, decoder_layers=3, encoder_attention_heads=3, decoder_attention_heads=3,
                encoder_ffn_dim=52, decoder_ffn_dim=52, vocab_size=V, max_position_embeddings=40, dropout=0.0,
                forced_eos_token_id=None, forced_bos_token_id=None)
    return {
        "gpt2": (tf.GPT2LMHeadModel, tf.GPT2Config(n_embd=36, n_layer=2, n_head=3, vocab_size=V, n_positions=40, bos_token_id=1,
                                                   eos_token_id=2, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)),
        "t5": (tf.T5ForConditionalGeneration, tf.T5Config(**t5, num_decoder_layers=3)),
        "t5-v1.1": (tf.T5ForConditionalGeneration, tf.T5Config(**t5, feed_forward_proj="gated-gelu", tie_word_embeddings=False)),
        "mt5": (tf.MT5ForConditionalGeneration, tf.MT5Config(**t5)),
        "umt5": (tf.UMT5ForConditionalGeneration, tf.UMT5Config(**t5, num_decoder_layers=3)),
        "bart": (tf.BartForConditionalGeneration, tf.BartConfig(**bart)),
        "mbart": (tf.MBartForConditionalGeneration, tf.MBartConfig(**bart, scale_embedding=True, decoder_start_token_id=2)),
    }


KINDS = list(configs())


@pytest.fixture(scope="module", params=KINDS)
def pair(request, tmp_path_factory):
    """(kind, the transformers model, its directory, bertkit's model loaded from it)."""
    cls, config = configs()[request.param]
    torch.manual_seed(KINDS.index(request.param))
    ref = cls(config).eval()
    with torch.no_grad():  # weights large enough that the outputs depend on the input; norms off 1, biases off 0
        for p in ref.parameters():
            p.normal_(0, 0.3) if p.dim() >= 2 else p.add_(torch.randn_like(p) * 0.1)
    d = tmp_path_factory.mktemp(request.param)
    ref.save_pretrained(d)
    ours = (CausalLM if request.param == "gpt2" else Seq2SeqLM).from_pretrained(d)
    return request.param, ref, d, ours


def batch(seed=1, T=11):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (3, T), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    return ids, mask


def logits_both(kind, ref, ours, ids, mask, dec):
    with torch.no_grad():
        if kind == "gpt2":
            return ref(ids, attention_mask=mask).logits, ours(ids, attention_mask=mask).logits
        return (ref(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits,
                ours(ids, mask, dec).logits)


def test_logits_match_transformers_on_a_padded_batch(pair):
    kind, ref, _, ours = pair
    ids, mask = batch()
    dec = torch.randint(3, V, (3, 7), generator=torch.Generator().manual_seed(2))
    a, b = logits_both(kind, ref, ours, ids, mask, dec)
    real = mask.bool() if kind == "gpt2" else torch.ones(dec.shape, dtype=torch.bool)  # padding's logits are nobody's
    assert a.abs().max() > 0.1  # not a degenerate model
    assert (a - b)[real].abs().max() < TOL * a.abs().max()


def test_cached_steps_equal_the_whole_sequence(pair):
    kind, _, _, ours = pair
    ids, mask = batch()
    with torch.no_grad():
        if kind == "gpt2":
            full = ours(ids).logits
            first = ours(ids[:, :5], use_cache=True)
            parts = [first.logits]
            for t in range(5, ids.shape[1]):  # one token at a time, as generation feeds them
                parts.append(ours(ids[:, t:t + 1], past_key_values=first.past_key_values).logits)
        else:
            dec = torch.randint(3, V, (3, 7), generator=torch.Generator().manual_seed(2))
            full = ours(ids, mask, dec).logits
            first = ours(ids, mask, dec[:, :3], use_cache=True)
            memory = first.encoder_last_hidden_state
            parts = [first.logits] + [ours(None, mask, dec[:, t:t + 1], past_key_values=first.past_key_values, encoder_outputs=memory).logits
                                      for t in range(3, 7)]
    assert isinstance(first.past_key_values, Cache)
    assert (torch.cat(parts, 1) - full).abs().max() < TOL * full.abs().max()


def test_a_decoder_position_never_sees_a_later_one(pair):
    kind, _, _, ours = pair
    ids, mask = batch()
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % V
    with torch.no_grad():
        if kind == "gpt2":
            a, b = ours(ids).logits, ours(changed).logits
        else:
            a, b = ours(ids, mask, ids[:, :9]).logits, ours(ids, mask, changed[:, :9]).logits
    assert (a[:, :6] - b[:, :6]).abs().max() == 0
    assert (a[:, 6:] - b[:, 6:]).abs().max() > 0


def test_a_padded_position_never_changes_any_output(pair):
    kind, _, _, ours = pair
    ids, mask = batch()
    other = ids.masked_fill(mask == 0, 5)  # different tokens at the padding
    with torch.no_grad():
        if kind == "gpt2":
            a, b = ours(ids, attention_mask=mask).logits, ours(other, attention_mask=mask).logits
            assert (a - b)[mask.bool()].abs().max() == 0
        else:
            dec = torch.randint(3, V, (3, 7), generator=torch.Generator().manual_seed(2))
            a, b = ours(ids, mask, dec).logits, ours(other, mask, dec).logits
            assert (a - b).abs().max() < 1e-6


def test_round_trip_through_transformers(pair, tmp_path):
    kind, ref, _, ours = pair
    ours.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == ref.config.model_type and config["architectures"] == [type(ref).__name__]
    back = type(ref).from_pretrained(tmp_path).eval()
    ids, mask = batch()
    dec = ids[:, :5]
    a, _ = logits_both(kind, ref, ours, ids, mask, dec)
    b, _ = logits_both(kind, back, ours, ids, mask, dec)
    assert (a - b).abs().max() == 0


def test_the_encoder_loads_as_bert_model(pair):
    kind, ref, d, _ = pair
    if kind == "gpt2":
        with pytest.raises(BertkitError, match="gpt2 decoder.*bertkit.CausalLM"):
            BertModel.from_pretrained(d)
        return
    enc = BertModel.from_pretrained(d)
    ids, mask = batch()
    with torch.no_grad():
        ours = enc(ids, attention_mask=mask, output_hidden_states=True)
        theirs = ref.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    assert (ours.last_hidden_state - theirs).abs().max() < TOL * theirs.abs().max()
    assert len(ours.hidden_states) == ref.config.num_layers + 1 if kind.startswith(("t5", "mt5")) else True
    pooled = bertkit.mean_pool(ours.last_hidden_state, mask)  # sentence-T5 style
    assert pooled.shape == (3, 36)


def test_wrong_class_names_the_right_one(pair):
    kind, _, d, _ = pair
    wrong = Seq2SeqLM if kind == "gpt2" else CausalLM
    right = "CausalLM" if kind == "gpt2" else "Seq2SeqLM"
    with pytest.raises(BertkitError, match=f"load it with bertkit.{right}"):
        wrong.from_pretrained(d)
    with pytest.raises(BertkitError, match=f"load it with bertkit.{right}"):
        bertkit.BertForMaskedLM.from_pretrained(d)


def test_an_encoder_checkpoint_is_refused_by_the_generative_classes(tmp_path):
    config = bertkit.BertConfig(vocab_size=V, hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=30)
    BertModel(config).save_pretrained(tmp_path)
    with pytest.raises(BertkitError, match="bert encoder, which CausalLM does not load"):
        CausalLM.from_pretrained(tmp_path)


def test_t5_buckets_against_transformers():
    rel = torch.arange(-40, 41)[None]
    for bidirectional in (True, False):
        theirs = tf.models.t5.modeling_t5.T5Attention._relative_position_bucket(rel, bidirectional, 8, 12)
        assert torch.equal(t5_buckets(rel, bidirectional, 8, 12), theirs)


def test_loss_is_the_shifted_cross_entropy(pair):
    kind, ref, _, ours = pair
    ids, _ = batch()
    with torch.no_grad():
        if kind == "gpt2":
            a, b = ref(ids, labels=ids).loss, ours(ids, labels=ids).loss
        else:
            labels = ids[:, :6].clone()
            labels[0, 4:] = -100
            a, b = ref(input_ids=ids, labels=labels).loss, ours(ids, labels=labels).loss
    assert abs(a.item() - b.item()) < TOL


def test_bad_inputs_are_one_sentence(pair):
    kind, _, _, ours = pair
    with pytest.raises(BertkitError, match="outside the 99-token vocabulary"):
        ours(torch.tensor([[1, 2, 500]])) if kind == "gpt2" else ours(torch.tensor([[1, 2, 500]]), decoder_input_ids=torch.tensor([[0]]))
    with pytest.raises(BertkitError, match=r"\[batch, length\]"):
        ours(torch.tensor([1, 2])) if kind == "gpt2" else ours(torch.tensor([1, 2]), decoder_input_ids=torch.tensor([[0]]))
    if kind == "gpt2":
        with pytest.raises(BertkitError, match="exceed the model's maximum of 40 positions"):
            ours(torch.ones(1, 41, dtype=torch.long))
    else:
        with pytest.raises(BertkitError, match="needs decoder_input_ids or labels"):
            ours(torch.tensor([[1, 2]]))


# ---- generation ------------------------------------------------------------------------------------------

PROMPTS = [[5, 17, 33, 8, 41], [60, 7], [12, 90, 4]]


def reference_generate(kind, ref, prompts, end_id, **kw) -> list[list[int]]:
    """transformers' generate on the same prompts (left-padded for a decoder), cut as bertkit returns them."""
    c = ref.config
    pad = c.pad_token_id if c.pad_token_id is not None else 0
    T = max(len(p) for p in prompts)
    if kind == "gpt2":
        ids = torch.tensor([[pad] * (T - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts])
    else:
        ids = torch.tensor([p + [pad] * (T - len(p)) for p in prompts])
        mask = torch.tensor([[1] * len(p) + [0] * (T - len(p)) for p in prompts])
    # transformers' T5 cache is sized by the encoder's layers: with more decoder layers it runs without one
    uneven = getattr(c, "num_decoder_layers", None) not in (None, getattr(c, "num_layers", None))
    with torch.no_grad():
        out = ref.generate(input_ids=ids, attention_mask=mask, eos_token_id=end_id, pad_token_id=pad, do_sample=False,
                           use_cache=not uneven, **kw)
    new = out[:, T:] if kind == "gpt2" else out[:, 1:]
    rows = []
    for row in new.tolist():
        rows.append(row[: row.index(end_id) + 1] if end_id in row else row)
    return rows


def common_token(ours, prompts, **kw):
    """A token the model often writes that, as the end token, stops some row early (so stopping is exercised)."""
    out = bertkit.generate(ours, prompts, max_new_tokens=8, end_id=ours.config.vocab_size - 1, **kw)
    flat = [t for row in out for t in row[1:]]
    candidates = sorted(set(flat), key=lambda t: (-flat.count(t), t))
    for t in candidates:
        if any(len(r) < 8 and r[-1] == t for r in bertkit.generate(ours, prompts, max_new_tokens=8, end_id=t, **kw)):
            return t
    return candidates[0]


@pytest.mark.heavy
@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_generation_is_token_identical_to_transformers(pair, strategy):
    kind, ref, _, ours = pair
    kw = dict(num_beams=3) if strategy == "beam" else {}
    end = common_token(ours, PROMPTS, strategy=strategy, **kw)
    for extra in ({}, dict(repetition_penalty=1.3, min_new_tokens=2)):
        # transformers' penalty also counts a decoder's left padding as said; bertkit does not: prompts of one length
        prompts = [p[:2] for p in PROMPTS] if extra and kind == "gpt2" else PROMPTS
        theirs = reference_generate(kind, ref, prompts, end, max_new_tokens=8, **kw, **extra)
        mine = bertkit.generate(ours, prompts, max_new_tokens=8, strategy=strategy, end_id=end, **kw, **extra)
        assert mine == theirs, (kind, strategy, extra)
        if not extra:
            assert any(row[-1] == end for row in mine) and any(len(row) < 8 for row in mine)  # the end token was used


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_cached_generation_equals_uncached(pair, strategy):
    _, _, _, ours = pair
    cached = bertkit.generate(ours, PROMPTS, max_new_tokens=10, strategy=strategy, num_beams=3)
    assert bertkit.generate(ours, PROMPTS, max_new_tokens=10, strategy=strategy, num_beams=3, use_cache=False) == cached


def test_a_single_prompt_gives_a_single_list(pair):
    _, _, _, ours = pair
    one = bertkit.generate(ours, PROMPTS[1], max_new_tokens=4, end_id=ours.config.vocab_size - 1)
    assert isinstance(one, list) and all(isinstance(t, int) for t in one) and len(one) == 4
    assert one == bertkit.generate(ours, PROMPTS, max_new_tokens=4, end_id=ours.config.vocab_size - 1)[1]


def test_sampling_keeps_to_top_k_and_top_p(pair):
    kind, _, _, ours = pair
    g = torch.Generator().manual_seed(0)
    a = bertkit.generate(ours, PROMPTS, max_new_tokens=6, strategy="sample", top_k=0, top_p=0.9, temperature=0.7, generator=g)
    g = torch.Generator().manual_seed(0)
    assert bertkit.generate(ours, PROMPTS, max_new_tokens=6, strategy="sample", top_k=0, top_p=0.9, temperature=0.7, generator=g) == a
    greedy = bertkit.generate(ours, PROMPTS, max_new_tokens=6)
    assert bertkit.generate(ours, PROMPTS, max_new_tokens=6, strategy="sample", top_k=1, generator=g) == greedy
    assert bertkit.generate(ours, PROMPTS, max_new_tokens=6, strategy="sample", top_p=1e-6, top_k=0, generator=g) == greedy


def test_generation_refuses_bad_requests(pair):
    _, _, _, ours = pair
    for kw, message in ((dict(max_new_tokens=0), "max_new_tokens must be at least 1"),
                        (dict(end_id=500), "end token 500 is outside"),
                        (dict(strategy="nucleus"), "strategy 'nucleus'")):
        with pytest.raises(BertkitError, match=message):
            bertkit.generate(ours, PROMPTS, **kw)
    with pytest.raises(BertkitError, match="prompt is empty"):
        bertkit.generate(ours, [[1, 2], []])
    with pytest.raises(BertkitError, match="leaving no room under the model's maximum of"):
        bertkit.generate(ours, [3] * 2000)


# ---- the command ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def talking_dirs(tmp_path_factory):
    """A GPT-2 with a byte-level BPE and a T5 with a Unigram tokenizer, both trained here, saved by transformers."""
    from test_tokenizer_any import byte_bpe, texts, unigram

    out = {}
    for kind, build, specials in (("gpt2", lambda c: byte_bpe(c, roberta=False), dict(eos_token="<|endoftext|>")),
                                  ("t5", unigram, dict(eos_token="</s>", pad_token="<pad>", unk_token="<unk>"))):
        d = tmp_path_factory.mktemp(f"talk-{kind}")
        tok = tf.PreTrainedTokenizerFast(tokenizer_object=build(texts()), **specials)
        tok.save_pretrained(str(d))
        torch.manual_seed(0)
        if kind == "gpt2":
            ref = tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=36, n_layer=2, n_head=3, vocab_size=len(tok), n_positions=64,
                                                   bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id))
        else:
            ref = tf.T5ForConditionalGeneration(tf.T5Config(d_model=36, d_kv=12, d_ff=52, num_heads=3, num_layers=2, vocab_size=len(tok),
                                                            decoder_start_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                                            pad_token_id=tok.pad_token_id))
        with torch.no_grad():  # away from init's near-uniform outputs, where float noise decides near ties
            for p in ref.parameters():
                p.normal_(0, 0.3) if p.dim() >= 2 else p.add_(torch.randn_like(p) * 0.1)
        ref.eval().save_pretrained(d)
        out[kind] = (d, ref, tok)
    return out


@pytest.mark.parametrize("kind", ["gpt2", "t5"])
def test_generate_command_prints_what_transformers_writes(talking_dirs, kind, capsys):
    from bertkit.cli import main

    d, ref, tok = talking_dirs[kind]
    text = "The quick brown fox"
    assert main(["generate", str(d), text, "--max-new-tokens", "6", "--strategy", "beam", "--num-beams", "2"]) == 0
    printed = capsys.readouterr().out.rstrip("\n")
    ids = tok(text, return_tensors="pt")
    with torch.no_grad():
        out = ref.generate(**ids, max_new_tokens=6, num_beams=2, do_sample=False, pad_token_id=tok.eos_token_id)
    new = out[0, ids["input_ids"].shape[1]:] if kind == "gpt2" else out[0, 1:]
    assert printed == tok.decode(new, skip_special_tokens=True)
    assert main(["generate", str(d), text, "--strategy", "sample", "--seed", "3", "--top-p", "0.8", "--max-new-tokens", "5"]) == 0
    first = capsys.readouterr().out
    assert main(["generate", str(d), text, "--strategy", "sample", "--seed", "3", "--top-p", "0.8", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out == first  # a seed repeats the draw


def test_generate_command_bad_input(talking_dirs, capsys, tmp_path):
    from bertkit.cli import main

    d = str(talking_dirs["gpt2"][0])
    for args, message in ((["--max-new-tokens", "0"], "max_new_tokens must be at least 1"),
                          (["--top-p", "0"], "top_p must be in"),
                          (["--num-beams", "0", "--strategy", "beam"], "num_beams must be a whole number of at least 1")):
        assert main(["generate", d, "hello", *args]) == 1
        assert message in capsys.readouterr().err
    assert main(["generate", d, "   "]) == 1 and "the text is empty" in capsys.readouterr().err
    assert main(["generate", d, "word " * 200]) == 1 and "leaving no room under the model's maximum of 64" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "none"), "hello"]) == 1 and "does not exist" in capsys.readouterr().err
    config = bertkit.BertConfig(vocab_size=V, hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=30)
    bertkit.BertForMaskedLM(config).save_pretrained(tmp_path / "bert")
    bertkit.Tokenizer.from_vocab({t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefgh"])}).save_pretrained(tmp_path / "bert")
    assert main(["generate", str(tmp_path / "bert"), "abc"]) == 1
    assert "needs attention_mode 'causal' or 'unilm'" in capsys.readouterr().err


def test_a_t5_encoder_embeds_and_exports(talking_dirs, tmp_path, capsys):
    """`bertkit embed` on a T5 directory mean-pools its encoder (sentence-T5 style), as transformers' encoder does;
    `bertkit export onnx` writes the encoder, checked against PyTorch; a seq2seq model is no classifier."""
    import numpy as np

    from bertkit.cli import main

    d, ref, tok = talking_dirs["t5"]
    texts = ["The quick brown fox", "中文句子也可以", "a b c d e f g"]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    assert main(["embed", str(d), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "v.npy"), "--quiet"]) == 0
    ours = torch.from_numpy(np.load(tmp_path / "v.npy"))
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = ref.get_encoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    theirs = bertkit.mean_pool(h, batch["attention_mask"])
    assert torch.nn.functional.cosine_similarity(ours, theirs).min() > 0.99999
    assert main(["export", "onnx", str(d), "--out", str(tmp_path / "t5.onnx"), "--no-fuse"]) == 0
    capsys.readouterr()
    assert main(["predict", str(d), "hello"]) == 1
    assert "not fine-tuned by bertkit" in capsys.readouterr().err


def test_checkpoints_as_the_hub_holds_them(pair, tmp_path):
    """Older files carry what transformers 5 no longer writes: GPT-2's attention-mask buffers, copies of the tied
    embedding (lm_head, T5's and BART's embed_tokens), a .bin instead of safetensors. They load with the same logits."""
    kind, ref, d, ours = pair
    from safetensors.torch import load_file

    sd = load_file(str(d / "model.safetensors"))
    shared = next(v for k, v in sd.items() if k.endswith(("shared.weight", "wte.weight")))
    if kind == "gpt2":
        for i in range(ref.config.n_layer):
            sd[f"transformer.h.{i}.attn.bias"] = torch.ones(1, 1, 40, 40).tril()
            sd[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    else:
        prefix = "model." if "bart" in kind else ""
        sd[f"{prefix}encoder.embed_tokens.weight"] = shared
        sd[f"{prefix}decoder.embed_tokens.weight"] = shared
    if "lm_head.weight" not in sd and ours.lm_head is None:
        sd["lm_head.weight"] = shared  # a tied head stored as a copy
    (tmp_path / "config.json").write_text((d / "config.json").read_text())
    torch.save(sd, tmp_path / "pytorch_model.bin")
    again = type(ours).from_pretrained(tmp_path)
    ids, mask = batch()
    a, b = logits_both(kind, ref, again, ids, mask, ids[:, :4])
    real = mask.bool() if kind == "gpt2" else torch.ones(3, 4, dtype=torch.bool)
    assert (a - b)[real].abs().max() < TOL * a.abs().max()


def test_a_t5_v1_1_with_its_own_untied_head(tmp_path):
    """The hub's T5 v1.1 / mT5 files: tie_word_embeddings false and an lm_head of their own, not scaled by H^-0.5
    (transformers 5 ties every T5 on load; bertkit keeps the file's head)."""
    import json

    from safetensors.torch import load_file, save_file

    cls, config = configs()["t5-v1.1"]
    torch.manual_seed(7)
    ref = cls(config).eval()
    ref.save_pretrained(tmp_path)
    c = json.loads((tmp_path / "config.json").read_text())
    c["tie_word_embeddings"] = False
    c.pop("scale_decoder_outputs", None)
    (tmp_path / "config.json").write_text(json.dumps(c))
    sd = load_file(str(tmp_path / "model.safetensors"))
    head = torch.randn(V, 36) * 0.3
    save_file({**sd, "lm_head.weight": head}, str(tmp_path / "model.safetensors"))
    ours = Seq2SeqLM.from_pretrained(tmp_path)
    assert ours.lm_head is not None
    ids, mask = batch()
    dec = ids[:, :5]
    with torch.no_grad():
        h = ref.decoder(input_ids=dec, encoder_hidden_states=ref.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state,
                        encoder_attention_mask=mask).last_hidden_state
        want = h @ head.T
        got = ours(ids, mask, dec).logits
    assert (got - want).abs().max() < TOL * want.abs().max()
