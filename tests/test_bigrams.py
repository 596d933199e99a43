"""Hashed token-bigram embeddings (config.bigram_buckets, --bigram-buckets): what a CRF's bigram features know, as
an input of any encoder. Rows depend on a text only (not on its batch or the fast path), a checkpoint gains a zero
table that changes nothing until trained, and the table saves, loads strictly and trains."""

from __future__ import annotations

import json

import pytest
import torch

import bertkit
from bertkit.checkpoint import read_pretrained
from bertkit.data.datasets import TagExample, write_task_file
from bertkit.errors import BertkitError
from bertkit.model import bigram_ids
from bertkit.weights import add_bigrams
from conftest import padded_batch, randomise, tiny_config


def test_bigram_rows_pair_each_token_with_the_next_real_one():
    ids = torch.tensor([[5, 6, 7, 0], [5, 6, 0, 0]])
    mask = (ids != 0).long()
    rows = bigram_ids(ids, mask, vocab_size=10, buckets=1_000_003)
    alone = bigram_ids(ids[1:, :2], None, vocab_size=10, buckets=1_000_003)
    assert rows[0, 0] == rows[1, 0]  # (5, 6) in both texts
    assert rows[1, 1] == alone[0, 1] != rows[0, 1]  # (6, end) whether padded or not; (6, 7) differs
    assert rows[0, 2] == bigram_ids(torch.tensor([[7]]), None, 10, 1_000_003)[0, 0]  # (7, end): padding is no token
    assert rows.min() >= 0 and bigram_ids(ids, mask, 10, 7).max() < 7


def test_a_bigram_model_gives_one_answer_padded_packed_or_alone():
    torch.manual_seed(0)
    model = randomise(bertkit.BertModel(tiny_config(bigram_buckets=97)))
    b = padded_batch()
    with torch.no_grad():
        packed = model(**b).last_hidden_state
        model.unpad = False
        padded = model(**b).last_hidden_state
        n = int(b["attention_mask"][1].sum())
        alone = model(b["input_ids"][1:2, :n], token_type_ids=b["token_type_ids"][1:2, :n]).last_hidden_state
    real = b["attention_mask"].bool()
    torch.testing.assert_close(packed[real], padded[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[1, :n], alone[0], atol=1e-5, rtol=1e-5)
    model.embed.bigram.weight.data.zero_()
    with torch.no_grad():  # the table is an input: without it the outputs change
        assert (model(**b).last_hidden_state[real] - padded[real]).abs().max() > 1e-3


def test_bigram_config_round_trip_and_refusals():
    c = tiny_config(bigram_buckets=64)
    assert c.to_dict()["bigram_buckets"] == 64 and "bigram_buckets" not in tiny_config().to_dict()  # HF-shaped without
    assert bertkit.BertConfig.from_dict(c.to_dict()).bigram_buckets == 64
    with pytest.raises(BertkitError, match="bigram_buckets must be a whole number of at least 0"):
        tiny_config(bigram_buckets=-1)
    with pytest.raises(BertkitError, match="bigram_buckets is for bidirectional encoders.*causal"):
        tiny_config(bigram_buckets=64, attention_mode="causal")


def test_a_checkpoint_gains_a_zero_table_that_changes_nothing(tmp_path):
    torch.manual_seed(0)
    model = randomise(bertkit.BertModel(tiny_config()))
    model.save_pretrained(tmp_path / "plain")
    d, config, conv = read_pretrained(tmp_path / "plain")
    config = add_bigrams(config, conv, 50, str(d))
    grown = bertkit.BertModel.from_converted(d, config, conv, verbose=False)
    b = padded_batch()
    with torch.no_grad():
        torch.testing.assert_close(grown(**b).last_hidden_state, model(**b).last_hidden_state)
    assert grown.embed.bigram.weight.shape == (50, 36) and not grown.embed.bigram.weight.any()
    grown.embed.bigram.weight.data.normal_()
    grown.save_pretrained(tmp_path / "grown")  # saved under its own name and read back strictly
    back = bertkit.BertModel.from_pretrained(tmp_path / "grown", verbose=False)
    torch.testing.assert_close(back.embed.bigram.weight, grown.embed.bigram.weight)
    assert add_bigrams(back.config, None, 50, "x") is back.config
    with pytest.raises(BertkitError, match="has a bigram table of 50 rows; --bigram-buckets 60 asks for another size"):
        add_bigrams(back.config, None, 60, "grown")


def test_train_and_predict_a_tagger_with_bigrams_from_a_checkpoint(tmp_path):
    from bertkit.serving.load import load_finetuned
    from bertkit.train import TrainConfig, train

    tok = bertkit.train_wordpiece(["张三在北京工作", "李四去上海了"] * 20, 200, lowercase=True)
    torch.manual_seed(0)
    config = bertkit.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=48, max_position_embeddings=64)
    bertkit.BertModel(config).save_pretrained(tmp_path / "base", tokenizer=tok)
    ex = [TagExample(list("张三在北京工作"), ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "O"]),
          TagExample(list("李四去上海了"), ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"])] * 8
    for split in ("train", "dev", "test"):
        write_task_file(tmp_path / f"{split}.jsonl", "ner", ex)
    files = {s: str(tmp_path / f"{s}.jsonl") for s in ("train", "dev", "test")}
    r = train(TrainConfig(task="ner", model=str(tmp_path / "base"), out=str(tmp_path / "out"), max_steps=3, lr=1e-2, crf=True, max_length=32,
                          bigram_buckets=128, quiet=True, **files))
    assert r["steps"] == 3
    saved = json.loads((tmp_path / "out" / "model" / "config.json").read_text())
    assert saved["bigram_buckets"] == 128
    model, _ = load_finetuned(tmp_path / "out" / "model")
    assert model.bert.embed.bigram.weight.abs().sum() > 0  # trained away from its zeros
    with pytest.raises(BertkitError, match="bigram table of 128 rows; --bigram-buckets 64"):
        train(TrainConfig(task="ner", model=str(tmp_path / "out" / "model"), out=str(tmp_path / "again"), max_steps=1, crf=True, max_length=32,
                          bigram_buckets=64, quiet=True, **files))


def test_a_bigram_model_exports_to_onnx_and_matches(tmp_path):
    pytest.importorskip("onnxruntime")
    from bertkit.serving.export import export_onnx

    tok = bertkit.train_wordpiece(["张三在北京工作", "李四去上海了"] * 20, 200, lowercase=True)
    config = bertkit.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=48, max_position_embeddings=64, bigram_buckets=101)
    torch.manual_seed(0)
    model = bertkit.BertModel(config)
    model.embed.bigram.weight.data.normal_()
    model.save_pretrained(tmp_path / "m", tokenizer=tok)
    r = export_onnx(tmp_path / "m", tmp_path / "m.onnx")  # the export checks the graph against PyTorch on padded batches
    assert "matches PyTorch" in r.describe()


def test_electra_shares_the_table_and_students_refuse_other_embeddings():
    from bertkit.train.distill import init_student
    from bertkit.train.pretrain import ElectraPretrainer, generator_config

    c = tiny_config(model_type="electra", bigram_buckets=32)
    pair = ElectraPretrainer(bertkit.ElectraForPreTraining(c), bertkit.BertForMaskedLM(generator_config(c, 0.5)))
    assert pair.generator.bert.embed.bigram is pair.discriminator.bert.embed.bigram  # one table, as word and position
    teacher = randomise(bertkit.BertForMaskedLM(tiny_config(bigram_buckets=32)))
    student = bertkit.BertForMaskedLM(tiny_config(num_hidden_layers=1, bigram_buckets=32))
    init_student(student, teacher, [1])
    torch.testing.assert_close(student.bert.embed.bigram.weight, teacher.bert.embed.bigram.weight)
    plain = bertkit.BertForMaskedLM(tiny_config(num_hidden_layers=1))
    init_student(plain, teacher, [1])  # the student has no table: the rest is copied
    torch.testing.assert_close(plain.bert.embed.word.weight, teacher.bert.embed.word.weight)
    with pytest.raises(BertkitError, match="embed.segment.weight is in only one of them"):
        init_student(bertkit.BertForMaskedLM(tiny_config(num_hidden_layers=1, type_vocab_size=0)), teacher, [1])
    with pytest.raises(BertkitError, match="embed.bigram.weight is \\(32, 36\\) in the teacher and \\(16, 36\\)"):
        init_student(bertkit.BertForMaskedLM(tiny_config(num_hidden_layers=1, bigram_buckets=16)), teacher, [1])


def test_a_run_saved_before_the_flag_resumes_with_its_default(tmp_path):
    import dataclasses

    from bertkit.train import TrainConfig
    from bertkit.train.loop import settings_changed

    cfg = TrainConfig(task="ner", model="bert-tiny", out=str(tmp_path))
    older = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "bigram_buckets"}
    (tmp_path / "train_config.json").write_text(json.dumps(older))
    assert settings_changed(cfg, tmp_path / "train_config.json") is None
    assert "--bigram-buckets was 0 when the run started, now 64" in settings_changed(dataclasses.replace(cfg, bigram_buckets=64), tmp_path / "train_config.json")
