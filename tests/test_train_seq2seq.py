"""`bertkit train seq2seq`: the data readers, generative NER's target text and its scoring, and training of the three
model shapes (T5, GPT-2, a UniLM BERT) on a toy task through the one loop, then `bertkit generate` on the result."""

from __future__ import annotations

import json
import random

import pytest

from bertkit import BertkitError
from bertkit.cli import main
from bertkit.data.datasets import load_dataset
from bertkit.data.metrics import entity_scores
from bertkit.data.seq2seq import entities_as_text, entity_tags, generative_ner, parse_entities, read_seq2seq_file


def test_generative_ner_targets_and_their_scoring():
    dev = load_dataset("peoples-daily-ner")["dev"]
    pairs = generative_ner(dev)
    assert pairs[0].source == "".join(dev[0].tokens) and pairs[0].tags == dev[0].tags
    tokens = list("江泽民在北京会见李鹏")
    tags = ["B-PER", "I-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "O", "B-PER", "I-PER"]
    assert entities_as_text(tokens, tags) == "PER:江泽民；LOC:北京；PER:李鹏"
    assert parse_entities("PER : 江 泽 民 ； LOC : 北 京 ； junk ； :x") == [("PER", "江泽民"), ("LOC", "北京")]  # a WordPiece decode
    assert entity_tags("".join(tokens), [("PER", "李鹏"), ("LOC", "上海")]) == ["O"] * 8 + ["B-PER", "I-PER"]
    # the gold targets, read back as predictions, score (almost) perfectly: the scoring loses nothing
    pred = [entity_tags(p.source, parse_entities(p.target)) for p in pairs]
    assert entity_scores([p.tags for p in pairs], pred)["f1"] > 0.995


def test_readers_name_the_file_and_line(tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_text('{"source": "a", "target": "b"}\n\n{"source": "c"}\n', encoding="utf-8")
    with pytest.raises(BertkitError, match=r'train.jsonl line 3 has no "target"'):
        read_seq2seq_file(f, labelled=True)
    f.write_text('{"source": "a", "target": "b"}\n{"source": 3, "target": "b"}\n', encoding="utf-8")
    with pytest.raises(BertkitError, match=r'line 2: "source" must be a string'):
        read_seq2seq_file(f)
    f.write_text('{"source": "a", "target": "b"}\nnot json\n', encoding="utf-8")
    with pytest.raises(BertkitError, match="line 2 is not valid JSON"):
        read_seq2seq_file(f)
    t = tmp_path / "train.tsv"
    t.write_text("source\ttarget\nab\tba\ncd\n", encoding="utf-8")
    with pytest.raises(BertkitError, match="train.tsv line 3 has no target"):
        read_seq2seq_file(t, labelled=True)
    t.write_text("a\tb\tc\n", encoding="utf-8")
    with pytest.raises(BertkitError, match="line 1 has 3 tab-separated columns"):
        read_seq2seq_file(t)
    t.write_text("source\ttarget\n \tx\n", encoding="utf-8")
    with pytest.raises(BertkitError, match='line 2 has an empty "source"'):
        read_seq2seq_file(t)
    assert [e.target for e in read_seq2seq_file(_write(tmp_path / "ok.tsv", "ab\tba\ncd\t\n"))] == ["ba", ""]


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def toy(tmp_path, n=600):
    """Reverse a short string of letters: learnable in a few hundred steps by a tiny model."""
    rng = random.Random(0)
    d = tmp_path / "toy"
    d.mkdir()
    for split, count in (("train", n), ("dev", 12), ("test", 12)):
        rows = []
        for _ in range(count):
            s = " ".join(rng.choice("abcdef") for _ in range(rng.randint(2, 4)))
            rows.append(json.dumps({"source": s, "target": " ".join(reversed(s.split()))}))
        (d / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return d


TINY = {
    "t5": dict(model_type="t5", hidden_size=48, num_hidden_layers=2, num_attention_heads=2, head_dim=24, intermediate_size=96,
               gated_ffn=True, hidden_act="gelu_new", tie_word_embeddings=False, hidden_dropout_prob=0.0,
               attention_probs_dropout_prob=0.0, relative_attention_num_buckets=8, relative_attention_max_distance=16),
    "gpt2": dict(model_type="gpt2", hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96,
                 max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
    "unilm": dict(model_type="bert", hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96,
                  max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
}


@pytest.mark.heavy
@pytest.mark.parametrize("shape", list(TINY))
def test_three_shapes_learn_a_toy_task_and_generate(shape, tmp_path, capsys):
    config = tmp_path / f"{shape}.json"
    config.write_text(json.dumps(TINY[shape]), encoding="utf-8")
    out = tmp_path / "run"
    args = ["train", "seq2seq", "--model", str(config), "--data", str(toy(tmp_path)), "--out", str(out), "--max-steps", "600",
            "--batch-size", "16", "--lr", "3e-3", "--warmup", "10", "--eval-every", "600", "--smoothing", "0", "--quiet",
            "--max-source-length", "16", "--max-target-length", "8"]
    assert main(args) == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])  # it learns
    assert metrics["metric"] == "exact_match" and metrics["test"]["exact_match"] >= 0.5, metrics
    capsys.readouterr()
    assert main(["generate", str(out / "model"), "a b c", "--max-new-tokens", "6"]) == 0
    assert capsys.readouterr().out.split() == ["c", "b", "a"]


def test_flags_of_the_other_recipe_are_refused(tmp_path, capsys):
    d = toy(tmp_path)
    assert main(["train", "seq2seq", "--model", "t5-tiny-zh", "--data", str(d), "--out", str(tmp_path / "a"), "--crf"]) == 1
    assert "--crf does not apply to seq2seq training" in capsys.readouterr().err
    assert main(["train", "classify", "--model", "bert-tiny", "--data", "reviews-zh", "--out", str(tmp_path / "b"), "--num-beams", "3"]) == 1
    assert "--num-beams does not apply to classify training" in capsys.readouterr().err
    for flag in (["--num-beams", "3"], ["--max-source-length", "64"], ["--max-target-length", "32"], ["--metric", "exact"], ["--eval-limit", "5"]):
        distill = ["distill", "--teacher", str(tmp_path / "none"), "--student", "bert-tiny", "--task", "classify", "--data", "reviews-zh",
                   "--out", str(tmp_path / "d")]
        assert main(distill + flag) == 1  # distillation used to ignore these silently
        assert f"{flag[0]} does not apply to distillation" in capsys.readouterr().err
    assert main(["train", "seq2seq", "--model", "t5-tiny-zh", "--data", str(d), "--out", str(tmp_path / "c"), "--metric", "entities"]) == 1
    assert "--metric entities scores generative NER" in capsys.readouterr().err
