"""Pretraining: masking statistics, whole words, NSP/SOP pairs, ELECTRA labels, the sparse MLM head,
sharded corpora, zh-corpus hygiene, short runs that learn, distillation, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import bertkit
import bertkit.data.corpus
from bertkit.cli import main
from bertkit.data.corpus import Corpus, prepare, write_corpus, zh_corpus_documents
from bertkit.heads import IGNORE_INDEX
from bertkit.train.pretrain import (
    ElectraPretrainer,
    PretrainConfig,
    dense_mlm_loss,
    make_batch,
    mask_tokens,
    pack,
    pretrain,
    small_model_note,
)
from conftest import randomise


@pytest.fixture(scope="module")
def zh_docs():
    return zh_corpus_documents()


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory, zh_docs) -> tuple[Path, Path]:
    """(text file of 400 documents, a 2,000-token vocabulary trained on it)."""
    d = tmp_path_factory.mktemp("corpus")
    write_corpus(zh_docs[:400], d / "corpus.txt")
    tok = bertkit.train_wordpiece([s for doc in zh_docs[:400] for s in doc], 2000)
    tok.save_pretrained(d / "tok")
    return d / "corpus.txt", d / "tok"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, small_corpus) -> Corpus:
    text, tok = small_corpus
    out = tmp_path_factory.mktemp("prep") / "c"
    return Corpus(prepare(text, bertkit.Tokenizer.from_pretrained(tok), out, shard_tokens=5000, wwm=True))


@pytest.mark.heavy
def test_zh_corpus_never_holds_dev_or_test_text(zh_docs):
    from bertkit.data.datasets import load_dataset

    ner = load_dataset("peoples-daily-ner")
    text = "\n".join("".join(d) for d in zh_docs)  # a document's lines, back to back
    for split in ("train", "dev", "test"):
        lines = ["".join(e.tokens) for e in ner[split] if len(e.tokens) >= 8]
        found = sum(t in text for t in lines)
        if split == "train":
            assert found > 0.95 * len(lines), (found, len(lines))  # the NER train sentences are raw text here
        else:
            # never as lines; a handful are also phrases inside other lines (photo credits such as
            # "（新华社记者刘宇摄）", a book title, a headline the article repeats): those stay
            assert found < 0.01 * len(lines), (split, found)
    reviews = load_dataset("reviews-zh")
    text = "\n".join(s for d in zh_docs for s in d)
    documents = {"".join(d) for d in zh_docs}
    held_out = [e.text for e in reviews["dev"] + reviews["test"]]
    # No dev/test review is a document, and none of 8 characters or more appears anywhere (shorter ones,
    # such as "谢谢!", are everyday sentences that other texts contain too).
    leaked = [t for t in held_out if t in documents or (len(t) >= 8 and t in text)]
    assert not leaked, leaked[:3]
    documents = {d.replace(" ", "") for d in documents}
    kept = sum(e.text.replace(" ", "") in documents for e in reviews["train"])
    assert 0.9 * len(reviews["train"]) < kept < len(reviews["train"])  # the train split is in, less what repeats dev/test


def test_prepare_streams_every_token_once(small_corpus, prepared):
    text, tok_dir = small_corpus
    tok = bertkit.Tokenizer.from_pretrained(tok_dir)
    assert len(prepared.shards) > 3  # more than one shard
    expected = [tok.backend.encode(s, add_special_tokens=False).ids for doc in bertkit.data.corpus.read_documents(text) for s in doc]
    streamed = [list(x) for x in prepared.stream()]
    assert streamed == expected
    assert prepared.tokens == sum(map(len, expected))
    by_rank = [list(prepared.stream(list(range(len(prepared.shards)))[r::2])) for r in range(2)]
    assert sum(len(x) for x in by_rank) == len(expected)  # two processes split the shards


MASK, IDS = 4, {"cls": 2, "sep": 3, "pad": 0, "mask": 4}


def test_masking_statistics():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (200, 128), generator=g)
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = special[:, 100:] = True
    ids[:, 0], ids[:, -1] = 2, 3
    random_ids = torch.arange(5, 1000)
    out, labels = mask_tokens(ids, special, MASK, random_ids, 0.15, generator=g)
    chosen = labels != IGNORE_INDEX
    assert not chosen[special].any() and torch.equal(out[special], ids[special])  # specials and padding untouched
    assert abs(chosen.float().sum() / (~special).sum() - 0.15) < 0.01
    assert torch.equal(labels[chosen], ids[chosen])
    n = chosen.sum().item()
    as_mask = (out[chosen] == MASK).sum().item() / n
    unchanged = (out[chosen] == ids[chosen]).sum().item() / n
    random = 1 - as_mask - unchanged
    assert abs(as_mask - 0.8) < 0.02 and abs(unchanged - 0.1) < 0.02 and abs(random - 0.1) < 0.02


def test_whole_word_masking_masks_words_together(prepared):
    rows = pack(prepared, list(range(len(prepared.shards))), 64, None, seed=0)[:64]
    b = make_batch(prepared, rows, IDS)
    g = torch.Generator().manual_seed(1)
    random_ids = torch.arange(5, 2000)
    _, labels = mask_tokens(b["input_ids"], b["special"], MASK, random_ids, 0.15, b["starts"], g)
    chosen = labels != IGNORE_INDEX
    word = torch.cumsum(b["starts"] & ~b["special"], 1)
    multi = 0
    for r in range(len(rows)):
        for w in word[r].unique().tolist():
            at = (word[r] == w) & ~b["special"][r]
            if at.sum() > 1:
                multi += 1
                assert chosen[r][at].all() or not chosen[r][at].any()  # all pieces of a word, or none
    assert multi > 50 and chosen.any()
    assert abs(chosen.float().sum() / (~b["special"]).sum() - 0.15) < 0.06


@pytest.mark.parametrize("kind", ["nsp", "sop"])
def test_sentence_pairs(prepared, kind):
    rows = pack(prepared, list(range(len(prepared.shards))), 64, kind, seed=0)
    assert 0.3 < rows[:, 5].mean() < 0.7
    for si, a0, a1, b0, b1, label in rows:
        assert a1 > a0 and b1 > b0 and (a1 - a0) + (b1 - b0) <= 61
        doc_starts = prepared.shards[si].sent[np.asarray(prepared.shards[si].doc)]  # token offset of each document

        def doc_of(t, doc_starts=doc_starts):
            return int(np.searchsorted(doc_starts, t, side="right")) - 1
        if kind == "nsp":
            assert (doc_of(a0) == doc_of(b0)) == (label == 0)
            if label == 0:
                assert b0 >= a1  # B follows A
        else:
            assert doc_of(a0) == doc_of(b0)
            assert (b0 >= a1) == (label == 0)  # label 1: B is the earlier text
    b = make_batch(prepared, rows[:8], IDS)
    for r, (_, a0, a1, b0, b1, _) in enumerate(rows[:8]):
        n = (a1 - a0) + (b1 - b0) + 3
        assert b["token_type_ids"][r, : a1 - a0 + 2].eq(0).all() and b["token_type_ids"][r, a1 - a0 + 2:n].eq(1).all()


def test_sparse_mlm_head_equals_dense():
    c = bertkit.BertConfig(vocab_size=99, hidden_size=36, num_hidden_layers=2, num_attention_heads=3, intermediate_size=52, max_position_embeddings=40)
    m = randomise(bertkit.BertForMaskedLM(c))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 99, (4, 20), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 12:] = 0
    special = mask == 0
    masked, labels = mask_tokens(ids, special, 4, torch.arange(5, 99), 0.3, generator=g)
    with torch.no_grad():
        sparse = m(masked, mask, labels=labels).loss
        dense = dense_mlm_loss(m, masked, mask, None, labels)
    assert abs(sparse - dense) < 1e-5


def test_training_steps_equal_transformers(tmp_path):
    """Ten AdamW steps of masked-LM training (dropout off, padded batches, fresh masks each step): bertkit's
    BertForMaskedLM (sparse head, packed fast path) and transformers' from the same weights give the same
    losses and end with the same weights. So a pretraining curve of bertkit is transformers' curve."""
    transformers = pytest.importorskip("transformers")
    c = bertkit.BertConfig(vocab_size=99, hidden_size=36, num_hidden_layers=2, num_attention_heads=3, intermediate_size=52,
                           max_position_embeddings=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ours = randomise(bertkit.BertForMaskedLM(c)).train()
    ours.save_pretrained(tmp_path / "init")
    ref = transformers.BertForMaskedLM.from_pretrained(tmp_path / "init", attn_implementation="sdpa").train()
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.01) for m in (ours, ref)]
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        ids = torch.randint(5, 99, (6, 24), generator=g)
        mask = torch.ones_like(ids)
        mask[1, 10:], mask[4, 3:] = 0, 0  # heavy padding: the packed path runs in bertkit
        masked, labels = mask_tokens(ids, mask == 0, 4, torch.arange(5, 99), 0.3, generator=g)
        types = torch.zeros_like(ids)
        a = ours(masked, mask, types, labels=labels).loss
        b = ref(input_ids=masked, attention_mask=mask, token_type_ids=types, labels=labels).loss
        assert abs(a.item() - b.item()) < 1e-5
        for loss, opt in zip((a, b), opts):
            loss.backward()
            opt.step()
            opt.zero_grad()
    ours.save_pretrained(tmp_path / "after")
    after = dict(transformers.BertForMaskedLM.from_pretrained(tmp_path / "after").named_parameters())
    theirs = dict(ref.named_parameters())
    assert after.keys() == theirs.keys()
    for name, value in theirs.items():
        if name.endswith("attention.self.key.bias"):
            # its true gradient is 0 (q.b is the same for every key: softmax ignores it), so both libraries'
            # Adam turn float rounding noise into lr-sized random steps: not comparable, and harmless
            continue
        torch.testing.assert_close(after[name], value, atol=1e-5, rtol=0, msg=name)


def test_small_model_note_names_the_recipe():
    """bert-tiny from scratch gets the note (its attention stays uniform); roformer-tiny-zh and bert-base do not."""
    assert "roformer-tiny-zh" in small_model_note(bertkit.BertConfig.from_preset("bert-tiny"))
    assert small_model_note(bertkit.BertConfig.from_preset("roformer-tiny-zh")) is None
    assert small_model_note(bertkit.BertConfig.from_preset("bert-base-chinese")) is None


def test_electra_labels_mark_exactly_the_replaced_tokens():
    c = bertkit.BertConfig(vocab_size=30, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=40,
                           max_position_embeddings=40, model_type="electra", embedding_size=16)
    from bertkit.train.pretrain import generator_config

    torch.manual_seed(0)
    model = ElectraPretrainer(bertkit.ElectraForPreTraining(c), bertkit.BertForMaskedLM(generator_config(c, 0.5)))
    assert model.generator.bert.embed.word is model.discriminator.bert.embed.word  # shared tables
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 30, (8, 16), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    masked, labels = mask_tokens(ids, torch.zeros_like(ids, dtype=torch.bool), 4, torch.arange(5, 30), 0.5, generator=g)
    seen = []  # what the discriminator reads: the original text with the generator's samples at the masks
    model.discriminator.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    _, _, replaced = model({**batch, "input_ids": masked}, labels, g, 50.0)
    picked = labels != IGNORE_INDEX
    assert torch.equal(seen[0][~picked], ids[~picked])  # the true tokens back where nothing was masked (not [MASK])
    assert torch.equal(replaced.bool(), seen[0] != ids)  # a label exactly where the input differs from the original
    assert not replaced[~picked].any()  # unmasked positions never count as replaced
    assert replaced.sum() > 0 and replaced[picked].float().mean() < 1  # the generator sometimes guesses right


@pytest.mark.heavy
@pytest.mark.parametrize("objective,wwm", [("mlm", False), ("mlm", True), ("mlm+nsp", False), ("mlm+sop", False), ("electra", False)])
def test_short_pretraining_lowers_the_loss(tmp_path, prepared, objective, wwm):
    result = pretrain(PretrainConfig(model="bert-tiny", out=str(tmp_path / "run"), corpus=str(prepared.dir), objective=objective,
                                     wwm=wwm, max_steps=30, batch_size=16, max_length=64, lr=1e-3, warmup=3, quiet=True))
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    first, last = np.mean([r["loss"] for r in rows[:5]]), np.mean([r["loss"] for r in rows[-5:]])
    assert last < first - 0.3, (first, last)
    model_dir = tmp_path / "run" / "model"
    assert (model_dir / "config.json").is_file() and (model_dir / "vocab.txt").is_file() and (tmp_path / "run" / "curves.png").is_file()
    if objective == "electra":
        assert json.loads((model_dir / "config.json").read_text())["model_type"] == "electra"
        assert (tmp_path / "run" / "generator" / "model.safetensors").is_file()
    else:
        assert result["mlm_acc"] > 0


def test_electra_pretraining_of_a_rotary_model_saves_and_reloads(tmp_path, prepared):
    """roformer-tiny-zh pretrained as an ELECTRA discriminator: transformers has no RoFormer discriminator, so the
    head keeps ELECTRA's names; RoFormerModel loads the backbone from it with our outputs, and bertkit reloads the head."""
    transformers = pytest.importorskip("transformers")
    pretrain(PretrainConfig(model="roformer-tiny-zh", out=str(tmp_path / "run"), corpus=str(prepared.dir), objective="electra",
                            max_steps=3, batch_size=8, max_length=32, quiet=True))
    model_dir = tmp_path / "run" / "model"
    assert json.loads((model_dir / "config.json").read_text())["model_type"] == "roformer"
    ours = bertkit.ElectraForPreTraining.from_pretrained(model_dir).eval()
    assert not ours.load_report.initialised  # the replaced-token head came back from the file
    theirs = transformers.RoFormerModel.from_pretrained(model_dir).eval()
    ids = torch.randint(5, 100, (2, 12))
    with torch.no_grad():
        a = ours.bert(ids, torch.ones_like(ids), torch.zeros_like(ids)).last_hidden_state
        b = theirs(input_ids=ids).last_hidden_state
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.heavy
def test_pretrained_model_fills_masks_and_fine_tunes(tmp_path, prepared):
    pretrain(PretrainConfig(model="bert-tiny", out=str(tmp_path / "pt"), corpus=str(prepared.dir), max_steps=5, batch_size=8,
                            max_length=64, quiet=True))
    assert main(["fill-mask", str(tmp_path / "pt" / "model"), "中国[MASK]民"]) == 0
    from bertkit.train import TrainConfig, train

    rows = zh_corpus_documents  # noqa: F841  (the reviews come from the bundled dataset)
    r = train(TrainConfig(task="classify", model=str(tmp_path / "pt" / "model"), data="reviews-zh", out=str(tmp_path / "ft"),
                          max_steps=3, batch_size=8, max_length=32, quiet=True))
    assert 0 <= r["test"]["accuracy"] <= 1


@pytest.mark.heavy
def test_torchrun_pretraining_gives_each_rank_its_own_shards(tmp_path, prepared, small_corpus):
    """2 processes (gloo): each reads half the shards, the run trains and saves one model; unprepared text is refused."""
    import re
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    common = ["pretrain", "--model", "bert-tiny", "--max-steps", "3", "--batch-size", "8", "--max-length", "64"]
    runs = {}
    for n in (1, 2):
        cmd = [str(bin_dir / "bertkit")] if n == 1 else [str(bin_dir / "torchrun"), "--standalone", "--nproc_per_node", "2", str(bin_dir / "bertkit")]
        r = subprocess.run([*cmd, *common, "--corpus", str(prepared.dir), "--out", str(tmp_path / f"p{n}")], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        runs[n] = int(re.search(r"-> ([\d,]+) sequences .* on this process", r.stderr).group(1).replace(",", ""))
        rows = [json.loads(line) for line in (tmp_path / f"p{n}" / "log.jsonl").read_text().splitlines() if '"loss"' in line]
        assert len(rows) == 3 and all(np.isfinite(x["loss"]) for x in rows)
        assert (tmp_path / f"p{n}" / "model" / "config.json").is_file()
    S = len(prepared.shards)
    assert S >= 4 and runs[1] == len(pack(prepared, list(range(S)), 64, None, seed=42)), runs
    assert runs[2] == len(pack(prepared, list(range(S))[0::2], 64, None, seed=42)), runs  # rank 0: shards 0, 2, 4, ...
    text, _ = small_corpus
    r = subprocess.run([str(bin_dir / "torchrun"), "--standalone", "--nproc_per_node", "2", str(bin_dir / "bertkit"), *common,
                        "--corpus", str(text), "--out", str(tmp_path / "t")], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "prepare the corpus first" in r.stderr and not (tmp_path / "t").exists()


def test_pretrain_resumes_exactly(tmp_path, prepared, monkeypatch):
    kw = dict(model="bert-tiny", corpus=str(prepared.dir), max_steps=8, batch_size=8, max_length=64, save_every=3, quiet=True)
    pretrain(PretrainConfig(out=str(tmp_path / "full"), **kw))
    import bertkit.train.loop as L

    real = L.Loop.step

    def crash(self, step):
        if step == 5:
            raise KeyboardInterrupt
        return real(self, step)

    monkeypatch.setattr(L.Loop, "step", crash)
    with pytest.raises(KeyboardInterrupt):
        pretrain(PretrainConfig(out=str(tmp_path / "cut"), **kw))
    monkeypatch.setattr(L.Loop, "step", real)
    pretrain(PretrainConfig(out=str(tmp_path / "cut"), resume=True, **kw))
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "full" / "model" / "model.safetensors"), load_file(tmp_path / "cut" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.heavy
def test_distillation_lowers_the_kl_to_the_teacher(tmp_path):
    from bertkit.data.datasets import load_dataset, write_table
    from bertkit.train import TrainConfig, train

    reviews = load_dataset("reviews-zh")
    write_table(tmp_path / "train.tsv", "classify", reviews["train"][:300])
    write_table(tmp_path / "dev.tsv", "classify", reviews["dev"][:64])
    common = dict(task="classify", train=str(tmp_path / "train.tsv"), dev=str(tmp_path / "dev.tsv"), batch_size=16,
                  max_length=32, vocab_size=1500, quiet=True, lr=1e-3)
    train(TrainConfig(model="bert-tiny", out=str(tmp_path / "teacher"), max_steps=25, **common))
    (tmp_path / "student.json").write_text(json.dumps(dict(num_hidden_layers=1, hidden_size=128, num_attention_heads=2, intermediate_size=256)))
    # alpha 1 and no hidden term: the logged loss is exactly the KL to the teacher's soft targets (times T^2)
    train(TrainConfig(model=str(tmp_path / "student.json"), out=str(tmp_path / "student"), max_steps=30, teacher=str(tmp_path / "teacher"),
                      alpha=1.0, hidden_weight=0.0, temperature=2.0, **common))
    rows = [json.loads(line) for line in (tmp_path / "student" / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    first, last = np.mean([r["loss"] for r in rows[:5]]), np.mean([r["loss"] for r in rows[-5:]])
    assert last < 0.7 * first, (first, last)


def test_student_initialised_from_an_ner_teacher_takes_its_crf(tmp_path):
    """Emissions distilled from a CRF tagger are only right with the teacher's transition scores: init copies them."""
    from bertkit.heads import BertForTokenClassification, set_task
    from bertkit.train.distill import init_student

    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    models = []
    for layers in (2, 1):
        cfg = bertkit.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64)
        set_task(cfg, "ner", labels, crf=True)
        torch.manual_seed(layers)
        models.append(BertForTokenClassification(cfg))
    teacher, student = models
    with torch.no_grad():
        for p in teacher.crf.parameters():
            p.normal_()
    init_student(student, teacher, [2])
    for name, t in teacher.crf.state_dict().items():
        assert torch.equal(student.crf.state_dict()[name], t), name
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    assert all(torch.equal(a, b) for a, b in zip(student.bert.layers[0].parameters(), teacher.bert.layers[1].parameters()))


def test_crf_soft_targets_match_the_teachers_marginals():
    """--soft-targets crf: the KL is between CRF marginals (0 for a copy of the teacher), and it trains the student's CRF."""
    from bertkit.errors import BertkitError
    from bertkit.heads import BertForTokenClassification, set_task
    from bertkit.train.distill import distill_loss, init_student, resolve_soft_targets

    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]

    def tagger(layers, crf=True, seed=0):
        cfg = bertkit.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64)
        set_task(cfg, "ner", labels, crf=crf)
        torch.manual_seed(seed)
        return BertForTokenClassification(cfg)

    teacher = tagger(2)
    with torch.no_grad():
        for p in teacher.crf.parameters():
            p.normal_(std=2.0)
    teacher.eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (3, 9), generator=g)
    n_words = torch.tensor([7, 4, 1])
    word_mask = torch.arange(7)[None] < n_words[:, None]
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
             "word_index": (torch.arange(7)[None] + 1) * word_mask, "word_mask": word_mask}
    args = dict(hard_loss=None, temperature=2.0, alpha=1.0, hidden_weight=0.0, layer_map=[2])
    copy = tagger(2, seed=1)
    copy.load_state_dict(teacher.state_dict())
    copy.eval()
    for mode in ("logits", "crf"):
        loss, count = distill_loss(copy, teacher, batch, soft_targets=mode, **args)
        assert count == 12 and abs(loss.item()) < 1e-5, (mode, loss.item())

    student = tagger(1, seed=2)
    init_student(student, teacher, [2])
    with torch.no_grad():
        student.crf.trans.add_(torch.randn(5, 5, generator=g))  # so the two kinds of soft targets differ
    losses = {}
    for mode in ("logits", "crf"):
        student.zero_grad()
        losses[mode], _ = distill_loss(student, teacher, batch, soft_targets=mode, **args)
        losses[mode].backward()
        trans_grad = student.crf.trans.grad
        assert (trans_grad is not None and trans_grad.abs().sum() > 0) == (mode == "crf"), mode
    assert losses["crf"].item() > 0 and abs(losses["crf"].item() - losses["logits"].item()) > 1e-3
    with pytest.raises(BertkitError, match="needs a teacher and a student with a CRF head"):
        resolve_soft_targets("crf", tagger(1, crf=False), teacher)
    assert resolve_soft_targets("auto", student, teacher) == "crf" and resolve_soft_targets("auto", tagger(1, crf=False), teacher) == "logits"


# ---- bad input ------------------------------------------------------------------------------------


def test_bad_corpus_input(tmp_path, small_corpus, capsys):
    _, tok = small_corpus
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    assert main(["vocab", "build", "--corpus", str(tmp_path / "empty.txt"), "--size", "100", "--out", str(tmp_path / "v")]) == 1
    assert "the corpus is empty" in capsys.readouterr().err and not (tmp_path / "v").exists()
    (tmp_path / "gbk.txt").write_bytes("第一句\n".encode() + "中文".encode("gbk") + b"\n")
    assert main(["corpus", "prepare", "--corpus", str(tmp_path / "gbk.txt"), "--tokenizer", str(tok), "--out", str(tmp_path / "p")]) == 1
    err = capsys.readouterr().err
    assert "gbk.txt is not UTF-8: byte 0xd6 at offset 10" in err and not (tmp_path / "p").exists()
    assert not list(tmp_path.glob(".p.*"))  # no temporary left behind


def test_bad_pretrain_input(tmp_path, small_corpus, prepared, capsys, minilm_dir):
    text, tok = small_corpus
    args = ["pretrain", "--corpus", str(prepared.dir), "--quiet"]
    assert main([*args, "--model", str(minilm_dir), "--max-steps", "1", "--out", str(tmp_path / "a")]) == 1  # its own vocabulary
    assert "was prepared with another vocabulary" in capsys.readouterr().err
    big = bertkit.Tokenizer.from_vocab({t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"t{i}" for i in range(40000)])})
    big.save_pretrained(tmp_path / "big")
    assert main(["pretrain", "--corpus", str(text), "--tokenizer", str(tmp_path / "big"), "--model", str(minilm_dir), "--max-steps", "1",
                 "--out", str(tmp_path / "b"), "--quiet"]) == 1
    assert "the tokenizer has 40005 tokens but the model's embedding only 30522 rows" in capsys.readouterr().err
    assert main([*args, "--model", "bert-tiny", "--minutes", "0.00001", "--out", str(tmp_path / "c")]) == 1
    assert "is too short: one step takes" in capsys.readouterr().err
    for d in "abc":
        assert not (tmp_path / d).exists()
    assert not list(tmp_path.glob(".[abc].*"))


@pytest.mark.heavy
def test_continued_pretraining_reports_a_new_mlm_head(tmp_path, minilm_dir, capsys):
    docs = [["the battery lasts all day", "charge it overnight"], ["a quiet keyboard", "the screen is bright"]] * 30
    write_corpus(docs, tmp_path / "en.txt")
    assert main(["pretrain", "--model", str(minilm_dir), "--corpus", str(tmp_path / "en.txt"), "--max-steps", "2", "--batch-size", "4",
                 "--out", str(tmp_path / "run")]) == 0
    assert "initialised 5 weights the checkpoint lacks: mlm.* (5)" in capsys.readouterr().err


# ---- causal LM and span corruption ----------------------------------------------------------------------------


def test_span_corruption_statistics_on_a_fixed_seed():
    """T5's noise: 15% of the tokens in spans of mean length 3, kept and noise runs alternating from a kept run, every
    span non-empty; the sentinels in order; inputs and targets together hold every token exactly once."""
    from bertkit.train.pretrain import noise_spans, span_batch

    g = torch.Generator().manual_seed(0)
    noise, spans, lengths = 0, 0, []
    for _ in range(400):
        found = noise_spans(100, 0.15, 3.0, g)
        assert all(e > s for s, e in found) and all(b[0] > a[1] for a, b in zip(found, found[1:])) and found[0][0] > 0
        noise += sum(e - s for s, e in found)
        spans += len(found)
        lengths += [e - s for s, e in found]
    assert noise / (400 * 100) == 0.15  # round(100 * 0.15) each time
    assert abs(np.mean(lengths) - 3.0) < 0.05 and spans == 400 * 5

    class Shard:
        ids = np.arange(1000, 1060)

    class Corpus:
        shards = [Shard()]

    ids = {"pad": 0, "end": 1, "sentinels": list(range(900, 1000))[::-1][:100]}
    b = span_batch(Corpus(), np.array([[0, 0, 60, -1, -1, -1], [0, 10, 40, -1, -1, -1]]), ids, 0.15, 3.0, g)
    for r, (a0, a1) in enumerate(((0, 60), (10, 40))):
        src = [t for t in b["input_ids"][r].tolist() if t not in (0, 1)]
        tgt = [t for t in b["labels"][r].tolist() if t not in (-100, 1)]
        sent_src = [t for t in src if t in ids["sentinels"]]
        sent_tgt = [t for t in tgt if t in ids["sentinels"]]
        assert sent_src == sent_tgt == ids["sentinels"][: len(sent_src)]  # sentinel i for span i, in order
        assert sorted(t for t in src + tgt if t >= 1000) == list(range(1000 + a0, 1000 + a1))  # each token once
        assert b["labels"][r][(b["labels"][r] != -100)].tolist()[-1] == 1  # the target ends with the end token


@pytest.mark.heavy
@pytest.mark.parametrize("objective,model", [("clm", "gpt2-tiny"), ("clm", "bert-tiny"), ("span", "t5-tiny")])
def test_clm_and_span_pretraining_lower_the_loss(tmp_path, prepared, objective, model):
    """A decoder and an encoder (as GPT) with the causal LM, a T5 with span corruption, on the prepared corpus."""
    shapes = {"gpt2-tiny": dict(model_type="gpt2", hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                                max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
              "t5-tiny": dict(model_type="t5", hidden_size=64, num_hidden_layers=2, num_attention_heads=2, head_dim=32, intermediate_size=128,
                              gated_ffn=True, hidden_act="gelu_new", tie_word_embeddings=False, hidden_dropout_prob=0.0)}
    if model in shapes:
        (tmp_path / f"{model}.json").write_text(json.dumps(shapes[model]))
        model = str(tmp_path / f"{model}.json")
    result = pretrain(PretrainConfig(model=model, out=str(tmp_path / "run"), corpus=str(prepared.dir), objective=objective,
                                     max_steps=40, batch_size=16, max_length=64, lr=2e-3, warmup=3, quiet=True))
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    first, last = np.mean([r["loss"] for r in rows[:5]]), np.mean([r["loss"] for r in rows[-5:]])
    assert last < first - 0.5, (first, last)
    assert result["lm_acc"] > 0
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    loaded = {"gpt2": bertkit.CausalLM, "t5": bertkit.Seq2SeqLM, "bert": bertkit.BertForMaskedLM}[config["model_type"]]
    m = loaded.from_pretrained(tmp_path / "run" / "model")
    tok = bertkit.Tokenizer.from_pretrained(tmp_path / "run" / "model")
    if objective == "span":  # the BERT vocabulary has no <extra_id_i>: 100 sentinel rows after it
        assert m.config.vocab_size == tok.vocab_size + 100 and m.config.eos_token_id == tok.sep_token_id
    if config["model_type"] == "bert":
        assert config["attention_mode"] == "causal"  # an encoder pretrained as GPT generates
        assert len(bertkit.generate(m, [tok.cls_token_id], max_new_tokens=5)) == 5


def test_an_objective_for_another_shape_is_named(tmp_path, prepared):
    with pytest.raises(bertkit.BertkitError, match="--objective span trains an encoder-decoder"):
        pretrain(PretrainConfig(model="bert-tiny", out=str(tmp_path / "a"), corpus=str(prepared.dir), objective="span", max_steps=2, quiet=True))
    with pytest.raises(bertkit.BertkitError, match="a t5 model pretrains with --objective span"):
        pretrain(PretrainConfig(model="t5-tiny-zh", out=str(tmp_path / "b"), corpus=str(prepared.dir), objective="mlm", max_steps=2, quiet=True))


def test_pretraining_with_a_bigram_table_and_continuing_it(tmp_path, prepared, capsys):
    common = ["pretrain", "--corpus", str(prepared.dir), "--max-steps", "2", "--batch-size", "8", "--max-length", "64", "--quiet"]
    assert main([*common, "--model", "bert-tiny", "--bigram-buckets", "64", "--out", str(tmp_path / "a")]) == 0
    first = bertkit.BertForMaskedLM.from_pretrained(tmp_path / "a" / "model", verbose=False)
    assert first.config.bigram_buckets == 64 and first.bert.embed.bigram.weight.abs().sum() > 0  # learnt from its zeros
    assert main([*common, "--model", str(tmp_path / "a" / "model"), "--out", str(tmp_path / "b")]) == 0  # keeps its table
    assert bertkit.BertForMaskedLM.from_pretrained(tmp_path / "b" / "model", verbose=False).config.bigram_buckets == 64
    capsys.readouterr()
    assert main([*common, "--model", str(tmp_path / "a" / "model"), "--bigram-buckets", "32", "--out", str(tmp_path / "c")]) != 0
    assert "has a bigram table of 64 rows; --bigram-buckets 32 asks for another size" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_generator_config_scales_width_ffn_and_heads_as_electra_does():
    from bertkit.train.pretrain import generator_config

    def shape(c):
        return c.hidden_size, c.num_attention_heads, c.intermediate_size

    tiny = bertkit.BertConfig.from_preset("roformer-tiny-zh")  # 128 wide, 2 heads of 64, FFN 512
    assert shape(generator_config(tiny, 0.5)) == (64, 1, 256)
    assert shape(generator_config(tiny, 0.25)) == (32, 1, 128)  # below one head: one narrower head, not a 64-wide one
    small = bertkit.BertConfig(hidden_size=256, num_attention_heads=4, intermediate_size=1024)  # ELECTRA-Small's discriminator
    assert shape(generator_config(small, 0.25)) == (64, 1, 256)  # the paper's generator: 1/4 of width, FFN and heads
    base = bertkit.BertConfig.from_preset("bert-base-uncased")
    assert shape(generator_config(base, 1 / 3)) == (256, 4, 1024)
    torch.manual_seed(0)
    gen = bertkit.BertForMaskedLM(generator_config(tiny, 0.25))  # the one-head generator runs (rotary on 32 dimensions)
    ids = torch.randint(5, 100, (2, 9))
    assert gen(ids, torch.ones_like(ids), torch.zeros_like(ids)).logits.shape == (2, 9, tiny.vocab_size)
