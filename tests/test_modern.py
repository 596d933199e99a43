"""ModernBERT, DeBERTa-v3, XLM-RoBERTa and ERNIE through the training commands: a short real reviews-zh fine-tuning run on a small
random config of each type (the loss falls, dev accuracy clears the majority class, the saved model predicts and
reloads), NER with the CRF over sliding windows on ModernBERT, and distillation into a half-depth ModernBERT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import bertkit
import bertkit.serving.load
from bertkit.cli import main
from bertkit.data.datasets import load_dataset, write_conll, write_table
from bertkit.train import TrainConfig, train

SMALL = dict(hidden_size=64, num_attention_heads=4, intermediate_size=128, initializer_range=0.05)
CONFIGS = {  # config.json files as a user writes them (each family's own key names)
    "modernbert": dict(model_type="modernbert", **SMALL, num_hidden_layers=4, max_position_embeddings=128, local_attention=16,
                       global_attn_every_n_layers=3, pad_token_id=0, vocab_size=3000),
    "xlm-roberta": dict(model_type="xlm-roberta", **SMALL, num_hidden_layers=2, max_position_embeddings=130, type_vocab_size=1,
                        pad_token_id=0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, vocab_size=3000),
    "deberta-v2": dict(model_type="deberta-v2", **SMALL, num_hidden_layers=2, max_position_embeddings=128, type_vocab_size=0,
                       relative_attention=True, position_buckets=16, max_relative_positions=64, norm_rel_ebd="layer_norm",
                       share_att_key=True, pos_att_type="p2c|c2p", position_biased_input=False, pad_token_id=0,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, vocab_size=3000),
    "ernie": dict(model_type="ernie", **SMALL, num_hidden_layers=2, max_position_embeddings=128, type_vocab_size=4, use_task_id=True,
                  task_type_vocab_size=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, vocab_size=3000),
}


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> tuple[Path, float]:
    """1,200 train / 200 dev / 100 test reviews as TSV files, and the dev share of the majority class."""
    data = load_dataset("reviews-zh")
    d = tmp_path_factory.mktemp("reviews")
    for name, n in (("train", 1200), ("dev", 200), ("test", 100)):
        write_table(d / f"{name}.tsv", "classify", data[name][:n])
    dev = [e.label for e in data["dev"][:200]]
    return d, max(dev.count(x) for x in set(dev)) / len(dev)


def config_file(tmp_path: Path, kind: str, **change) -> str:
    path = tmp_path / f"{kind}.json"
    path.write_text(json.dumps(CONFIGS[kind] | change))
    return str(path)


@pytest.mark.heavy
@pytest.mark.parametrize("kind", CONFIGS)
def test_reviews_zh_fine_tuning_on_each_type(tmp_path, reviews, kind, capsys):
    reviews, majority = reviews
    out = tmp_path / "run"
    result = train(TrainConfig(task="classify", model=config_file(tmp_path, kind), data=str(reviews), out=str(out), max_steps=120,
                               batch_size=32, lr=2e-3, max_length=64, vocab_size=3000, eval_every=60, quiet=True))
    losses = [r["loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]
    assert sum(losses[-20:]) / 20 < 0.85 * sum(losses[:20]) / 20, losses
    assert result["dev"]["accuracy"] > majority + 0.1, (result["dev"]["accuracy"], majority)
    model, _ = bertkit.serving.load.load_finetuned(out)
    assert model.config.model_type == kind
    assert main(["predict", str(out), "质量很好，下次还来买"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("0", "1")


@pytest.fixture(scope="module")
def ner(tmp_path_factory) -> Path:
    """peoples-daily-ner: 600 train / 100 dev sentences (long ones among them: read as windows at max length 48)."""
    pd = load_dataset("peoples-daily-ner")
    d = tmp_path_factory.mktemp("ner")
    for name, n in (("train", 600), ("dev", 100)):
        write_conll(d / f"{name}.conll", pd[name][:n])
    return d


@pytest.mark.heavy
def test_modernbert_ner_with_crf_over_windows_and_a_distilled_student(tmp_path, ner, capsys):
    """The tagger's windows (48 tokens, stride 16) meet ModernBERT's 16-token local window; a 2-layer student is initialised
    from the 4-layer teacher (its first block has no attention norm) and distilled through the CRF marginals."""
    common = dict(task="ner", data=str(ner), batch_size=32, lr=3e-3, max_length=48, stride=16, vocab_size=3000, crf=True,
                  repair_bio=True, quiet=True)
    teacher = train(TrainConfig(model=config_file(tmp_path, "modernbert"), out=str(tmp_path / "teacher"), max_steps=80, eval_every=80, **common))
    assert teacher["dev"]["f1"] > 0.1, teacher["dev"]
    student = train(TrainConfig(model=config_file(tmp_path, "modernbert", num_hidden_layers=2, global_attn_every_n_layers=2),
                                out=str(tmp_path / "student"), max_steps=40, eval_every=40, teacher=str(tmp_path / "teacher"),
                                init_from_teacher=True, **common))
    assert student["dev"]["f1"] > 0.5 * teacher["dev"]["f1"], (student["dev"], teacher["dev"])
    long = "江泽民在北京会见克林顿。" * 8  # 96 characters: two windows
    assert main(["predict", str(tmp_path / "student"), long]) == 0
    row = json.loads(capsys.readouterr().out)
    assert not row["truncated"] and all(long[e["start"]:e["end"]] == e["text"] for e in row["entities"])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """zh-corpus's first 300 documents, prepared (with word starts) under a 2,000-token vocabulary trained on them."""
    from bertkit.data.corpus import Corpus, prepare, write_corpus, zh_corpus_documents

    docs = zh_corpus_documents()[:300]
    d = tmp_path_factory.mktemp("corpus")
    write_corpus(docs, d / "corpus.txt")
    tok = bertkit.train_wordpiece([s for doc in docs for s in doc], 2000)
    return Corpus(prepare(d / "corpus.txt", tok, d / "prepared", shard_tokens=5000, wwm=True))


@pytest.mark.heavy
@pytest.mark.parametrize("kind,objective", [("modernbert", "mlm"), ("deberta-v2", "mlm"), ("deberta-v2", "electra")])
def test_pretraining_the_new_encoders(tmp_path, corpus, kind, objective, capsys):
    """MLM pretraining of a small ModernBERT and DeBERTa-v3, and DeBERTa-v3 as an ELECTRA discriminator (as v3 was
    pretrained): the loss falls, transformers loads the saved backbone with bertkit's outputs, and fill-mask (MLM)
    reads the head back. ModernBERT as ELECTRA is refused in one sentence (no place for the generator's projection)."""
    import torch
    import transformers

    from bertkit.train.pretrain import PretrainConfig, pretrain

    out = tmp_path / "run"
    pretrain(PretrainConfig(model=config_file(tmp_path, kind, vocab_size=2000), out=str(out), corpus=str(corpus.dir), objective=objective,
                            max_steps=30, batch_size=16, max_length=64, lr=2e-3, quiet=True))
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert sum(losses[-5:]) < sum(losses[:5]), losses
    model_dir = out / "model"
    ours = (bertkit.BertForMaskedLM if objective == "mlm" else bertkit.ElectraForPreTraining).from_pretrained(model_dir).eval()
    assert not ours.load_report.initialised
    theirs = transformers.AutoModel.from_pretrained(model_dir).eval()
    ids = torch.randint(5, 2000, (2, 40))
    with torch.no_grad():
        a = ours.bert(ids, torch.ones_like(ids)).last_hidden_state
        b = theirs(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    if objective == "mlm":
        assert main(["fill-mask", str(model_dir), "中国[MASK]民"]) == 0
        printed = capsys.readouterr().out.splitlines()
        assert printed[0] == "[MASK] #1:" and len(printed) == 6  # the top 5 candidates with their probabilities


def test_electra_pretraining_of_a_modernbert_is_refused(tmp_path, corpus, capsys):
    args = ["pretrain", "--model", config_file(tmp_path, "modernbert", vocab_size=2000), "--corpus", str(corpus.dir), "--out",
            str(tmp_path / "run"), "--objective", "electra", "--max-steps", "2", "--quiet"]
    assert main(args) == 1
    assert "pretrain a ModernBERT with --objective mlm." in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
