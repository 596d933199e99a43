"""The trainer on real data: it learns, it resumes exactly (also after SIGKILL), two processes equal
one, and bad input stops it before anything is written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import bertkit
import bertkit.serving.load
import bertkit.train.loop
from bertkit.cli import main
from bertkit.data.datasets import load_dataset, read_task_file, write_conll, write_table
from bertkit.data.features import encode
from bertkit.data.metrics import classification_report, entity_scores, repair_bio
from bertkit.heads import labels_of
from bertkit.serving.predict import predict_features, predict_texts, word_tags
from bertkit.train import TrainConfig, train

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def reviews():
    return load_dataset("reviews-zh")


@pytest.fixture(scope="module")
def small(tmp_path_factory, reviews) -> Path:
    """400 train / 100 dev / 100 test reviews as TSV files."""
    d = tmp_path_factory.mktemp("small")
    for name, n in (("train", 400), ("dev", 100), ("test", 100)):
        write_table(d / f"{name}.tsv", "classify", reviews[name][:n])
    return d


@pytest.fixture(scope="module")
def small_tok(tmp_path_factory, small) -> str:
    """One vocabulary for the runs that are compared (trained once, so they need not each train their own)."""
    from bertkit.data.datasets import read_task_file

    d = tmp_path_factory.mktemp("tok")
    bertkit.train_wordpiece([e.text for e in read_task_file(small / "train.tsv", "classify")], 3000).save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def small_ner(tmp_path_factory) -> Path:
    pd = load_dataset("peoples-daily-ner")
    d = tmp_path_factory.mktemp("small_ner")
    for name, n in (("train", 300), ("dev", 60)):
        write_conll(d / f"{name}.conll", pd[name][:n])
    return d


def tiny(out: Path, data: Path, **kw) -> TrainConfig:
    base = dict(task="classify", model="bert-tiny", data=str(data), out=str(out), max_steps=12, batch_size=16,
                lr=5e-4, max_length=48, vocab_size=3000, save_every=4, eval_every=6, quiet=True)
    return TrainConfig(**(base | kw))


def weights(out: Path, sub: str = "checkpoint/model") -> dict[str, torch.Tensor]:
    return load_file(out / sub / "model.safetensors")


def assert_same_weights(a: dict, b: dict, tol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst <= tol, f"max weight difference {worst}"


@pytest.mark.heavy
def test_reviews_zh_learns(tmp_path, reviews):
    """A real run on the bundled reviews: the loss falls and dev accuracy beats the majority class."""
    result = train(TrainConfig(task="classify", model="bert-tiny", data="reviews-zh", out=str(tmp_path / "run"),
                               max_steps=150, batch_size=32, lr=5e-4, max_length=64, eval_every=75, quiet=True))
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert sum(losses[-20:]) / 20 < 0.9 * sum(losses[:20]) / 20
    dev_labels = [e.label for e in reviews["dev"]]
    majority = max(dev_labels.count(x) for x in set(dev_labels)) / len(dev_labels)
    assert result["dev"]["accuracy"] > majority + 0.1, (result["dev"]["accuracy"], majority)
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    assert set(json.loads((tmp_path / "run" / "metrics.json").read_text())) >= {"dev", "test", "best_step"}


class Interrupt(Exception):
    pass


@pytest.mark.heavy
def test_resume_is_exact(tmp_path, small, small_tok, monkeypatch):
    """Interrupted at step 7 (last checkpoint: step 4) and resumed, the run ends with the same weights,
    EMA and all, as the uninterrupted one."""
    kw = dict(ema=0.99, adv="fgm", max_steps=12, save_every=4, eval_every=6, tokenizer=small_tok)
    train(tiny(tmp_path / "full", small, **kw))
    write = bertkit.train.loop.StepLog.write

    def crash(self, row):
        if row.get("step") == 7 and "loss" in row:
            raise Interrupt
        write(self, row)

    monkeypatch.setattr(bertkit.train.loop.StepLog, "write", crash)
    with pytest.raises(Interrupt):
        train(tiny(tmp_path / "cut", small, **kw))
    monkeypatch.setattr(bertkit.train.loop.StepLog, "write", write)
    train(tiny(tmp_path / "cut", small, resume=True, **kw))
    assert_same_weights(weights(tmp_path / "full"), weights(tmp_path / "cut"))
    assert_same_weights(weights(tmp_path / "full", "model"), weights(tmp_path / "cut", "model"))


def _run_cli(args: list[str], **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([str(BIN / "bertkit"), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _cli_args(out: Path, data: Path, steps: int, tok: str) -> list[str]:
    return ["train", "classify", "--model", "bert-tiny", "--data", str(data), "--out", str(out), "--max-steps", str(steps), "--tokenizer", tok,
            "--batch-size", "16", "--lr", "5e-4", "--max-length", "48", "--vocab-size", "3000", "--save-every", "5",
            "--eval-every", "10", "--ema", "0.99", "--quiet"]


@pytest.mark.heavy
def test_sigkill_mid_run_resumes_to_the_same_weights(tmp_path, small, small_tok):
    steps = 40
    full = _run_cli(_cli_args(tmp_path / "full", small, steps, small_tok))
    victim = _run_cli(_cli_args(tmp_path / "cut", small, steps, small_tok))
    log = tmp_path / "cut" / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once a checkpoint exists and the run is past it, mid-way
        if log.exists() and sum(1 for line in log.read_text().splitlines() if '"loss"' in line) >= 13:
            break
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    state = torch.load(tmp_path / "cut" / "checkpoint" / "trainer_state.pt", weights_only=True)["state"]
    assert 0 < state["step"] < steps
    resumed = _run_cli(_cli_args(tmp_path / "cut", small, steps, small_tok) + ["--resume"])
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    assert full.wait(timeout=300) == 0, full.stderr.read().decode()
    assert_same_weights(weights(tmp_path / "full"), weights(tmp_path / "cut"))
    assert_same_weights(weights(tmp_path / "full", "model"), weights(tmp_path / "cut", "model"))
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, steps + 1))  # one clean log


@pytest.mark.heavy
def test_two_processes_equal_one(tmp_path, small, small_tok):
    """torchrun with 2 processes (gloo) and the same global batch: the same weights as 1 process."""
    common = ["train", "classify", "--model", "bert-tiny", "--data", str(small), "--max-steps", "8", "--batch-size", "16",
              "--lr", "5e-4", "--max-length", "48", "--tokenizer", small_tok, "--dropout", "0", "--accum", "2", "--quiet"]
    one = subprocess.run([str(BIN / "bertkit"), *common, "--out", str(tmp_path / "one")], capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(BIN / "bertkit"),
                          *common, "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert_same_weights(weights(tmp_path / "one"), weights(tmp_path / "two"), tol=2e-6)


@pytest.mark.parametrize("kw", [
    dict(bf16=True), dict(adv="pgd"), dict(rdrop=1.0), dict(loss="focal", class_weights="inverse"),
    dict(loss="smooth", schedule="cosine", accum=2),
], ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.heavy
def test_tricks_run(tmp_path, small, small_tok, plain_run, kw):
    """Each trick runs and changes what the plain run does: its weights, and where the trick is in the loss,
    the first step's loss (same initial weights, same first batch); bf16 stays near fp32's loss."""
    train(tiny(tmp_path / "run", small, max_steps=6, eval_every=6, tokenizer=small_tok, **kw))
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    base_rows, base_weights = plain_run
    assert len(rows) == 6 and all(r["loss"] == r["loss"] for r in rows)
    w = weights(tmp_path / "run")
    assert max((w[k] - base_weights[k]).abs().max().item() for k in w) > 1e-4
    if "loss" in kw or "rdrop" in kw:  # the loss itself differs from the first step on
        assert abs(rows[0]["loss"] - base_rows[0]["loss"]) > 1e-4  # smoothing 0.1 moves a loss near ln 2 by ~6e-4
    if "bf16" in kw:
        assert rows[0]["loss"] != base_rows[0]["loss"] and abs(rows[0]["loss"] - base_rows[0]["loss"]) < 0.05


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory, small, small_tok):
    out = tmp_path_factory.mktemp("plain") / "run"
    train(tiny(out, small, max_steps=6, eval_every=6, tokenizer=small_tok))
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    return rows, weights(out)


@pytest.mark.heavy
def test_ner_with_crf_and_predict(tmp_path, small_ner, capsys):
    result = train(tiny(tmp_path / "ner", small_ner, task="ner", crf=True, max_steps=30, eval_every=30, max_length=64, repair_bio=True))
    model, tok = bertkit.serving.load.load_finetuned(tmp_path / "ner")
    dev = read_task_file(small_ner / "dev.conll", "ner")
    for e in dev:  # the training run repaired I- after O in its copy; the scorer sees the same tags
        e.tags = repair_bio(e.tags)
    labels = labels_of(model.config)
    f = encode(tok, dev, "ner", labels, 64)
    preds = predict_features(model, f)
    pred_tags = [word_tags(f, i, p, labels, len(e.tokens)) for i, (e, p) in enumerate(zip(dev, preds))]
    assert result["dev"]["f1"] == pytest.approx(entity_scores([e.tags for e in dev], pred_tags)["f1"])  # scored as seqeval would
    for i, e in enumerate(dev):  # each kept word is read at its first piece, and the gold tags come back from word_tags
        pieces = [tok.backend.encode(w, add_special_tokens=False).ids[0] for w in e.tokens]
        assert [f.input_ids[i][p] for p in f.word_index[i]] == [pieces[w] for w in f.kept_words[i]]
        if i not in f.truncated:
            assert word_tags(f, i, f.word_labels[i], labels, len(e.tokens)) == e.tags
    assert main(["predict", str(tmp_path / "ner"), "江泽民在北京会见克林顿"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert set(row) == {"text", "entities", "truncated"}
    for ent in row["entities"]:
        assert row["text"][ent["start"]:ent["end"]] == ent["text"] and ent["type"] in ("PER", "LOC", "ORG")


@pytest.mark.heavy
def test_evaluate_and_predict_commands(tmp_path, small, capsys):
    train(tiny(tmp_path / "run", small))
    assert main(["evaluate", str(tmp_path / "run"), "--data", str(small / "test.tsv")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    test = read_task_file(small / "test.tsv", "classify")
    rows = predict_texts(*bertkit.serving.load.load_finetuned(tmp_path / "run", precision="fp32"), [e.text for e in test])
    want = classification_report([e.label for e in test], [r["label"] for r in rows])
    assert metrics["examples"] == 100 and metrics["accuracy"] == want["accuracy"] and metrics["macro_f1"] == want["macro"]["f1"]
    assert main(["predict", str(tmp_path / "run" / "model"), "很好", "好" * 500]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["truncated"] for r in rows] == [False, True]
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 and r["label"] in ("0", "1") for r in rows)


def test_bert_classifier_loads_in_transformers(tmp_path, small):
    """A BERT classifier bertkit fine-tunes is transformers' BertForSequenceClassification."""
    import transformers

    train(tiny(tmp_path / "run", small, max_steps=3, eval_every=3))
    ours, tok = bertkit.serving.load.load_finetuned(tmp_path / "run", precision="fp32")
    ref = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "run" / "model").eval()
    batch = tok(["很好用", "太差了，再也不买"])
    with torch.no_grad():
        a = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        b = ref(**batch).logits
    assert (a - b).abs().max() < 1e-5
    assert ref.config.id2label == {0: "0", 1: "1"}


@pytest.mark.heavy
def test_mean_pooled_classifier(tmp_path, small, capsys):
    """--pooling mean: the classifier reads the mean of the real tokens' states (no pooler is built), recorded in
    config.json, so that the reloaded model, predict and a padded batch all compute the same."""
    train(tiny(tmp_path / "run", small, max_steps=3, eval_every=3, pooling="mean"))
    ours, tok = bertkit.serving.load.load_finetuned(tmp_path / "run", precision="fp32")
    assert ours.bert.pooler is None and ours.config.extra["bertkit"]["pooling"] == "mean"
    batch = tok(["很好用", "太差了，再也不买"])
    with torch.no_grad():
        logits = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        h = ours.bert(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).last_hidden_state
        m = batch["attention_mask"][..., None].float()
        torch.testing.assert_close(logits, ours.classifier((h * m).sum(1) / m.sum(1)))
        alone = ours(*(tok(["很好用"])[k] for k in ("input_ids", "attention_mask", "token_type_ids")))
        torch.testing.assert_close(alone[0], logits[0], atol=1e-5, rtol=1e-5)  # padding does not enter the mean
    assert main(["predict", str(tmp_path / "run" / "model"), "很好用"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("0", "1")
    # fine-tuned again with the other sentence vector, the classifier starts afresh (the same labels keep it otherwise)
    for pooling, kept in (("mean", True), ("cls", False)):
        again = tmp_path / f"again-{pooling}"
        train(tiny(again, small, model=str(tmp_path / "run" / "model"), tokenizer=None, max_steps=1, eval_every=1, lr=1e-12, pooling=pooling))
        same = torch.equal(weights(again, "model")["classifier.weight"], weights(tmp_path / "run", "model")["classifier.weight"])
        assert same == kept
    args = ["train", "ner", "--model", "bert-tiny", "--data", "peoples-daily-ner", "--out", str(tmp_path / "ner"), "--quiet"]
    assert main([*args, "--pooling", "mean"]) == 1
    assert "--pooling chooses the sentence vector of classify and pair; ner tags every word." in capsys.readouterr().err
    assert not (tmp_path / "ner").exists()


# ---- bad input: one sentence, exit 1, nothing written ------------------------------------------


def bad(tmp_path, capsys, args) -> str:
    out = tmp_path / "out"
    code = main(["train", "classify", "--model", "bert-tiny", "--out", str(out), "--max-steps", "2", "--quiet", *args])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert not out.exists() or not any(out.iterdir()), "something was written"
    return err


def test_bad_input(tmp_path, capsys, small):
    (tmp_path / "dev.tsv").write_text("text\tlabel\n很好\t1\n一般\tmaybe\n", encoding="utf-8")
    assert "label 'maybe' appears in dev but never in train" in bad(tmp_path, capsys, ["--train", str(small / "train.tsv"), "--dev", str(tmp_path / "dev.tsv")])
    (tmp_path / "empty.tsv").write_text("", encoding="utf-8")
    assert "empty" in bad(tmp_path, capsys, ["--train", str(tmp_path / "empty.tsv")])
    (tmp_path / "broken.tsv").write_text("text\tlabel\n很好\t1\n一\t般\t0\n", encoding="utf-8")
    assert "line 3" in bad(tmp_path, capsys, ["--train", str(tmp_path / "broken.tsv")])
    assert "no training data" in bad(tmp_path, capsys, [])
    assert "does not exist" in bad(tmp_path, capsys, ["--train", str(tmp_path / "missing.tsv")])
    (tmp_path / "one.tsv").write_text("text\tlabel\n很好\t1\n不错\t1\n", encoding="utf-8")
    assert f"every training example in {tmp_path / 'one.tsv'} has the label '1'" in bad(tmp_path, capsys, ["--train", str(tmp_path / "one.tsv")])
    huge = tmp_path / "huge.json"  # ~1 TB of fp32 weights: refused before any tensor is built
    huge.write_text(json.dumps({"hidden_size": 8192, "num_hidden_layers": 200, "num_attention_heads": 64, "intermediate_size": 65536}))
    err = bad(tmp_path, capsys, ["--model", str(huge), "--train", str(small / "train.tsv")])
    assert err.startswith(f"bertkit train: error: {huge}: the bert config with 200 layers of 8192") and "GiB for its fp32 weights" in err
    (tmp_path / "o.conll").write_text("我 O\n们 O\n\n好 O\n", encoding="utf-8")
    assert main(["train", "ner", "--model", "bert-tiny", "--train", str(tmp_path / "o.conll"), "--out", str(tmp_path / "ner"), "--quiet"]) == 1
    assert "there is no entity to learn" in capsys.readouterr().err and not (tmp_path / "ner").exists()


def test_tokenizer_model_mismatch_and_busy_out(tmp_path, capsys, small, minilm_dir):
    zh = bertkit.train_wordpiece(["很好", "太差了"] * 50, vocab_size=40000)
    big = bertkit.Tokenizer.from_vocab({t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"t{i}" for i in range(40000)])})
    big.save_pretrained(tmp_path / "tok")
    assert zh.vocab_size < 40000
    err = bad(tmp_path, capsys, ["--data", str(small), "--model", str(minilm_dir), "--tokenizer", str(tmp_path / "tok")])
    assert "the tokenizer has 40005 tokens but the model's embedding only 30522 rows" in err
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    code = main(["train", "classify", "--model", "bert-tiny", "--data", str(small), "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 1 and "is not empty" in capsys.readouterr().err
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_resume_with_other_settings_is_refused(tmp_path, small, capsys):
    train(tiny(tmp_path / "run", small, max_steps=4))
    code = main(["train", "classify", "--model", "bert-tiny", "--data", str(small), "--out", str(tmp_path / "run"), "--max-steps", "4",
                 "--batch-size", "16", "--lr", "1e-3", "--max-length", "48", "--vocab-size", "3000", "--resume", "--quiet"])
    assert code == 1 and "--lr was 0.0005 when the run started" in capsys.readouterr().err


def test_predict_bad_input(tmp_path, small, capsys):
    train(tiny(tmp_path / "run", small, max_steps=2, eval_every=2))
    assert main(["predict", str(tmp_path / "run"), ""]) == 1
    assert "text 1 is empty" in capsys.readouterr().err
    (tmp_path / "labelled.tsv").write_text("text\tlabel\n很好\t7\n", encoding="utf-8")
    assert main(["evaluate", str(tmp_path / "run"), "--data", str(tmp_path / "labelled.tsv")]) == 1
    assert "label '7' is not one the model knows" in capsys.readouterr().err


@pytest.mark.heavy
def test_pair_task_jsonl(tmp_path, reviews, capsys):
    """Sentence pairs in LCQMC's JSON lines: label 1 when both reviews share a sentiment."""
    rows = reviews["train"][:300]
    with (tmp_path / "train.jsonl").open("w", encoding="utf-8") as f:
        for a, b in zip(rows[0::2], rows[1::2]):
            f.write(json.dumps({"sentence1": a.text, "sentence2": b.text, "label": int(a.label == b.label)}, ensure_ascii=False) + "\n")
    result = train(TrainConfig(task="pair", model="bert-tiny", train=str(tmp_path / "train.jsonl"), dev=str(tmp_path / "train.jsonl"),
                               out=str(tmp_path / "run"), max_steps=4, batch_size=16, max_length=64, vocab_size=3000, quiet=True))
    assert result["dev"]["examples"] == 150
    assert main(["predict", str(tmp_path / "run"), "很好", "不错", "很差"]) == 1
    assert "two at a time" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "run"), "很好", "不错"]) == 0
    assert json.loads(capsys.readouterr().out)["pair"] == ["很好", "不错"]


def test_bio_i_after_o_reported_repaired_or_refused(tmp_path, capsys):
    sentences = ["北 B-LOC\n京 I-LOC\n好 O\n", "上 O\n海 I-LOC\n很 O\n大 O\n"] * 20  # the second: I- after O
    (tmp_path / "train.conll").write_text("\n".join(sentences), encoding="utf-8")
    args = ["train", "ner", "--model", "bert-tiny", "--train", str(tmp_path / "train.conll"), "--max-steps", "1", "--batch-size", "8"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert "train: 20 sentences have an I- tag after O" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "b"), "--crf"]) == 1
    assert "pass --repair-bio" in capsys.readouterr().err and not (tmp_path / "b").exists()
    assert main([*args, "--out", str(tmp_path / "c"), "--crf", "--repair-bio"]) == 0
    assert "train: repaired 20 sentences" in capsys.readouterr().err


def test_rdrop_with_a_teacher_is_refused(tmp_path, small, capsys):
    """--rdrop doubles the student's batch for two dropout passes; with a teacher that is refused up front."""
    assert main(["distill", "--teacher", str(tmp_path / "any"), "--student", "bert-tiny", "--task", "classify", "--data", str(small),
                 "--rdrop", "1", "--out", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "--rdrop cannot be combined with distillation" in err and not (tmp_path / "out").exists()
