"""Checkpoints that do not fit their config, odd configs and odd paths: each is one clear
BertkitError naming the problem (regressions from review), never a silently different model."""

from __future__ import annotations

import json
import os
import shutil
import stat

import numpy as np
import pytest
import torch
import transformers

import bertkit
from bertkit import BertkitError
from bertkit.cli import main
from conftest import FIXTURES, padded_batch, randomise, save_hf, tiny_hf_config


@pytest.fixture
def good_dir(tmp_path):
    return save_hf(randomise(transformers.BertModel(tiny_hf_config())), tmp_path / "good", "safetensors")


def set_config(d, **changes):
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


def test_config_with_fewer_layers_than_the_weights(good_dir):
    set_config(good_dir, num_hidden_layers=1)
    with pytest.raises(BertkitError, match=r"encoder\.layer\.1\..*does not fit its config"):
        bertkit.BertModel.from_pretrained(good_dir)


@pytest.mark.parametrize(
    "changes,words",
    [
        ({"position_embedding_type": "relative_key"}, "position_embedding_type 'relative_key'"),
        ({"layer_norm_eps": None}, "layer_norm_eps"),
        ({"num_attention_heads": 0}, "num_attention_heads"),
        ({"hidden_size": "36"}, "hidden_size"),
        ({"max_position_embeddings": 40.0}, "max_position_embeddings"),
        ({"num_hidden_layers": -1}, "num_hidden_layers"),
        ({"hidden_act": "mish"}, "hidden_act 'mish'"),
        ({"pad_token_id": 500}, "pad_token_id"),
    ],
)
def test_bad_config_values_are_named(good_dir, changes, words):
    set_config(good_dir, **changes)
    with pytest.raises(BertkitError) as e:
        bertkit.BertModel.from_pretrained(good_dir)
    assert words in str(e.value) and "config.json" in str(e.value)


def test_null_position_type_means_absolute(good_dir):
    set_config(good_dir, position_embedding_type=None)
    model = bertkit.BertModel.from_pretrained(good_dir)
    assert model.embed.position is not None
    ref = transformers.BertModel.from_pretrained(good_dir).eval()  # transformers reads null as absolute too
    m = padded_batch()["attention_mask"].bool()
    with torch.no_grad():
        assert (model(**padded_batch()).last_hidden_state[m] - ref(**padded_batch()).last_hidden_state[m]).abs().max() <= 1e-5


def test_sequence_classification_checkpoint_loads_as_encoder(tmp_path, capsys):
    ref = randomise(transformers.BertForSequenceClassification(tiny_hf_config(num_labels=3)))
    model = bertkit.BertModel.from_pretrained(save_hf(ref, tmp_path / "cls", "safetensors"))
    assert "classifier" in capsys.readouterr().err
    with torch.no_grad():
        a = model(**padded_batch()).last_hidden_state
        b = ref.bert(**padded_batch()).last_hidden_state
    m = padded_batch()["attention_mask"].bool()  # real tokens: padding positions mean nothing
    assert (a[m] - b[m]).abs().max() <= 1e-5


def test_integer_weights_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    d = save_hf(randomise(transformers.BertModel(tiny_hf_config())), tmp_path / "int", "safetensors")
    sd = load_file(d / "model.safetensors")
    sd["pooler.dense.bias"] = sd["pooler.dense.bias"].to(torch.int32)
    save_file(sd, d / "model.safetensors")
    with pytest.raises(BertkitError, match="pooler.dense.bias.*floating point"):
        bertkit.BertModel.from_pretrained(d)


def test_a_named_tf_prefix_is_the_one_loaded(tmp_path):
    d = tmp_path / "two"
    shutil.copytree(FIXTURES / "tf_bert_tiny", d)
    for f in list(d.glob("bert_model.ckpt.*")):
        shutil.copy(f, d / f.name.replace("bert_model.ckpt", "other.ckpt"))
    with pytest.raises(BertkitError, match="several TF checkpoints"):
        bertkit.BertModel.from_pretrained(d)  # two checkpoints, no choice made
    for path in (d / "other.ckpt", d / "other.ckpt.index"):
        assert bertkit.BertModel.from_pretrained(path, verbose=False).config.hidden_size == 24


def test_a_named_weights_file_is_the_one_loaded(tmp_path):
    ref = randomise(transformers.BertModel(tiny_hf_config()))
    d = save_hf(ref, tmp_path / "both", "safetensors")
    other = randomise(transformers.BertModel(tiny_hf_config()), seed=9)
    torch.save(other.state_dict(), d / "pytorch_model.bin")
    from_bin = bertkit.BertModel.from_pretrained(d / "pytorch_model.bin")
    assert torch.equal(from_bin.embed.word.weight, other.embeddings.word_embeddings.weight)


def test_fp16_checkpoint_converts_to_fp32_config(tmp_path):
    ref = randomise(transformers.BertModel(tiny_hf_config())).half()
    src = save_hf(ref, tmp_path / "fp16", "safetensors")
    assert main(["convert", str(src), str(tmp_path / "out")]) == 0
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "dtype" not in cfg and "torch_dtype" not in cfg
    assert transformers.BertModel.from_pretrained(tmp_path / "out").dtype == torch.float32


def test_outputs_are_not_private(tmp_path, minilm_dir):
    old = os.umask(0o022)
    try:
        src = save_hf(randomise(transformers.BertModel(tiny_hf_config())), tmp_path / "src", "safetensors")
        assert main(["convert", str(src), str(tmp_path / "out")]) == 0
        (tmp_path / "in.txt").write_text("hello\n")
        assert main(["embed", str(minilm_dir), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "v.npy"), "--quiet"]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "v.npy").stat().st_mode) == 0o644


def test_embed_argument_errors(tmp_path, minilm_dir, capsys):
    (tmp_path / "in.txt").write_text("hello\n")
    (tmp_path / "dir.npy").mkdir()
    for argv, words in [
        (["--output", str(tmp_path / "dir.npy")], "is a directory"),
        (["--output", str(tmp_path / "v.npy"), "--max-length", "1000"], "exceeds the model's limit of 512"),
    ]:
        capsys.readouterr()
        assert main(["embed", str(minilm_dir), "--input", str(tmp_path / "in.txt"), "--quiet", *argv]) == 1
        assert words in capsys.readouterr().err


def test_bad_sentence_bert_config(tmp_path, minilm_dir, capsys):
    d = tmp_path / "m"
    shutil.copytree(minilm_dir, d)
    (d / "sentence_bert_config.json").write_text('{"max_seq_length": null}')
    (tmp_path / "in.txt").write_text("hello\n")
    assert main(["embed", str(d), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "v.npy"), "--quiet"]) == 1
    assert "max_seq_length" in capsys.readouterr().err


def test_non_utf8_text_on_the_command_line(capsys, minilm_dir):
    assert main(["fill-mask", str(minilm_dir), "a \udcff [MASK]"]) == 1
    assert "not valid UTF-8" in capsys.readouterr().err


def test_tokenizer_config_with_wrong_types(tmp_path, minilm_dir):
    for f in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(minilm_dir / f, tmp_path / f)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    cfg["do_lower_case"] = "yes"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(BertkitError, match="do_lower_case"):
        bertkit.Tokenizer.from_pretrained(tmp_path)


def test_empty_pair_and_tiny_max_length_match_transformers(minilm_dir):
    ours = bertkit.Tokenizer.from_pretrained(minilm_dir)
    ref = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    assert ours.encode("hello", "") == ref("hello", "")["input_ids"]
    with pytest.raises(BertkitError, match="max_length 1"):
        ours("hello world", max_length=1)
    assert np.array_equal(ours("hello world", max_length=3)["input_ids"], ref("hello world", max_length=3, truncation=True, return_tensors="np")["input_ids"])


def test_qkv_are_stacked_at_the_border_and_a_missing_one_is_named(good_dir):
    """Checkpoints hold query, key and value apart; bertkit stacks them into attn.qkv on the way in, splits
    them on the way out (the round trip is exact), and names the one a checkpoint lacks."""
    from safetensors.torch import load_file, save_file

    model = bertkit.BertModel.from_pretrained(good_dir)
    sd = load_file(good_dir / "model.safetensors")
    qkv = model.layers[1].attn.qkv.weight
    assert torch.equal(qkv, torch.cat([sd[f"encoder.layer.1.attention.self.{p}.weight"] for p in ("query", "key", "value")]))
    back = bertkit.weights.to_hf({f"bert.{k}": v for k, v in model.state_dict().items()}, model.config, base_model=True)
    assert all(torch.equal(back[k], sd[k]) for k in sd if k in back) and "encoder.layer.1.attention.self.key.weight" in back
    del sd["encoder.layer.1.attention.self.key.weight"]
    save_file(sd, good_dir / "model.safetensors")
    with pytest.raises(BertkitError, match=r"lacks 1 weight its config needs, e.g. '(bert\.)?encoder\.layer\.1\.attention\.self\.key\.weight'"):
        bertkit.BertModel.from_pretrained(good_dir)


def test_the_task_entry_is_read_once_into_typed_fields():
    """config.json's "bertkit" object becomes a TaskEntry; a field this bertkit does not know is named, not ignored."""
    from bertkit.heads import TaskEntry, set_task, task_of

    config = bertkit.BertConfig(vocab_size=99, hidden_size=36, num_hidden_layers=1, num_attention_heads=3, intermediate_size=52)
    set_task(config, "ner", ["O", "B-PER", "I-PER"], crf=True, max_length=64, stride=16, merge="mean", tokens="chars")
    assert task_of(config) == TaskEntry("ner", max_length=64, crf=True, stride=16, merge="mean", tokens="chars")
    assert bertkit.BertConfig.from_dict(config.to_dict()).extra["bertkit"] == config.extra["bertkit"]  # written as read
    config.extra["bertkit"]["colour"] = "red"
    with pytest.raises(bertkit.BertkitError, match="fields this bertkit does not read: colour"):
        task_of(config)
    with pytest.raises(TypeError):
        set_task(config, "classify", ["a", "b"], colour="red")
