"""ONNX export: the graph equals the PyTorch model (1e-4) for the real MiniLM, a fine-tuned classifier,
a CRF tagger and every family member, at any batch and length; int8 keeps MiniLM's sentence vectors;
the onnx backend returns what the torch functions return; bad input gets one clear sentence."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bertkit import BertkitError, BertModel, Tokenizer, train_wordpiece
from bertkit.data.datasets import load_dataset, write_table
from bertkit.heads import BertForTokenClassification, set_task
from bertkit.serving.load import load_finetuned
from bertkit.serving.predict import encode_sentences, predict_texts
from conftest import randomise, tiny_config

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from bertkit.serving.export import OnnxRunner, add_export_parser, cosine, export_onnx
from bertkit.serving.predict import onnx_embed, onnx_predict

ROOT = Path(__file__).parent.parent
SENTENCES = [
    "A man is eating food.",
    "The new movie is awesome and everybody should see it at least twice this year, with friends.",
    "Hi",
    "Return a new dictionary initialized from an optional positional argument and keyword arguments.",
    "The quick brown fox jumps over the lazy dog.",
    "Two padded batches of different shapes show whether a size was baked into the graph.",
    "The cat sat on the mat.",
    "Quantisation stores each weight in one byte instead of four.",
]


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return BertModel.from_pretrained(minilm_dir, new_heads=True, verbose=False), Tokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def minilm_onnx(minilm_dir, tmp_path_factory):
    return export_onnx(minilm_dir, tmp_path_factory.mktemp("minilm") / "minilm.onnx")


@pytest.fixture(scope="module")
def minilm_int8(minilm_dir, tmp_path_factory):
    return export_onnx(minilm_dir, tmp_path_factory.mktemp("minilm8") / "minilm.onnx", int8=True)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    """bert-tiny fine-tuned for 3 steps on 200 reviews: a real bertkit classifier directory."""
    from bertkit.train import TrainConfig, train

    d = tmp_path_factory.mktemp("cls")
    write_table(d / "train.tsv", "classify", load_dataset("reviews-zh")["train"][:200])
    train(TrainConfig(task="classify", model="bert-tiny", train=str(d / "train.tsv"), out=str(d / "run"), max_steps=3,
                      batch_size=16, vocab_size=1500, max_length=64, quiet=True))
    return d / "run" / "model"


@pytest.fixture(scope="module")
def tagger(tmp_path_factory) -> Path:
    """A tiny random CRF tagger with a character vocabulary, saved as a fine-tuned directory."""
    texts = [e.text for e in load_dataset("reviews-zh")["train"][:300]]
    tok = train_wordpiece(texts, 500, min_frequency=1)
    config = tiny_config(vocab_size=tok.vocab_size)
    set_task(config, "ner", ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"], crf=True, max_length=40, tokens="chars")
    model = randomise(BertForTokenClassification(config))
    d = tmp_path_factory.mktemp("ner") / "model"
    model.save_pretrained(d, tokenizer=tok)
    return d


@pytest.mark.heavy
def test_minilm_parity(minilm, minilm_onnx):
    """Sentence vectors through onnxruntime equal bertkit's within 1e-4; the export wrote its sidecars."""
    model, tok = minilm
    assert minilm_onnx.max_diff <= 1e-4 and minilm_onnx.task == "embed"
    for name in ("config.json", "vocab.txt", "tokenizer.json", "sentence_bert_config.json"):
        assert (minilm_onnx.path.parent / name).is_file()
    ours = onnx_embed(minilm_onnx.path, SENTENCES, batch_size=3)
    ref = encode_sentences(model, tok, SENTENCES, batch_size=3)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-4
    # cls pooling and normalisation go through the same code; the directory names the model too
    cls = onnx_embed(minilm_onnx.path.parent, SENTENCES, pooling="cls", normalize=True)
    assert np.abs(cls - encode_sentences(model, tok, SENTENCES, pooling="cls", normalize=True)).max() <= 1e-4


@pytest.mark.parametrize("batch,length", [(1, 3), (5, 3), (1, 40), (5, 40)])
def test_dynamic_axes(minilm, minilm_onnx, batch, length):
    """Any batch size and length runs, with padding, and matches on the real tokens."""
    model, _ = minilm
    g = torch.Generator().manual_seed(batch * 100 + length)
    ids = torch.randint(1000, 30000, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1:, length // 2 + 1:] = 0  # every row but the first padded
    ids = ids.masked_fill(mask == 0, 0)
    types = torch.zeros_like(ids)
    runner = OnnxRunner(minilm_onnx.path)
    h, e = runner.run({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    with torch.no_grad():
        ref = model(ids, mask, types).last_hidden_state.numpy()
    real = mask.numpy() == 1
    assert h.shape == (batch, length, 384) and e.shape == (batch, 384)
    assert np.abs(h - ref)[real].max() <= 1e-4


@pytest.mark.heavy
def test_int8_keeps_minilm(minilm_onnx, minilm_int8):
    """Per-channel int8 weights: sentence vectors at cosine >= 0.99 (mean) to fp32, and a smaller file."""
    fp32 = onnx_embed(minilm_onnx.path, SENTENCES)
    int8 = onnx_embed(minilm_int8.path, SENTENCES)
    c = cosine(int8, fp32)
    assert c.mean() >= 0.99 and c.min() >= 0.97, c
    assert OnnxRunner(minilm_int8.path).precision == "int8" and minilm_int8.int8_cosine > 0.9
    assert minilm_int8.path.stat().st_size < 0.7 * minilm_onnx.path.stat().st_size


def test_classifier_parity(classifier, tmp_path):
    """A fine-tuned classifier: logits within 1e-4, and predict through onnx equals predict_texts."""
    result = export_onnx(classifier, tmp_path / "cls.onnx")
    assert result.task == "classify" and result.max_diff <= 1e-4
    model, tok = load_finetuned(classifier, precision="fp32")
    texts = ["这本书很好看", "质量太差了,不推荐购买。", "还行"]
    ours, ref = onnx_predict(result.path, texts), predict_texts(model, tok, texts)
    assert [r["label"] for r in ours] == [r["label"] for r in ref]
    for a, b in zip(ours, ref):
        assert a.keys() == b.keys() and a["text"] == b["text"] and a["truncated"] == b["truncated"]
        assert max(abs(a["probabilities"][k] - b["probabilities"][k]) for k in b["probabilities"]) <= 1e-4


def test_crf_tagger_parity(tagger, tmp_path):
    """A CRF tagger: the emissions graph takes word_index, the CRF goes beside it, entities are equal."""
    result = export_onnx(tagger, tmp_path / "ner.onnx")
    assert result.task == "ner" and (tmp_path / "crf.safetensors").is_file()
    model, tok = load_finetuned(tagger, precision="fp32")
    texts = ["这本书很好看", "质量太差了不推荐购买这家店的东西", "好"]
    assert onnx_predict(result.path, texts) == predict_texts(model, tok, texts)


@pytest.mark.parametrize("kw", [dict(model_type="roberta", pad_token_id=1), dict(model_type="albert", embedding_size=16, num_hidden_groups=1),
                                dict(model_type="electra", embedding_size=16), dict(model_type="distilbert", type_vocab_size=0),
                                dict(model_type="roformer"), dict(model_type="nezha"), dict(attention_mode="causal"),
                                dict(attention_mode="unilm")], ids=lambda kw: kw.get("model_type", kw.get("attention_mode")))
@pytest.mark.heavy
def test_family_exports(kw, tmp_path):
    """Every family member's switches trace (export_onnx checks parity itself, at two shapes)."""
    model = randomise(BertModel(tiny_config(**kw))).eval()
    model.save_pretrained(tmp_path / "m")
    assert export_onnx(tmp_path / "m", tmp_path / "m.onnx", task="encoder").max_diff <= 1e-4
    # and checked here too, not only by the export's own check: a padded batch of a shape never traced
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(5, model.config.vocab_size, (3, 11), generator=g)
    mask = (torch.arange(11)[None] < torch.tensor([11, 4, 7])[:, None]).long()
    ids[mask == 0] = model.config.pad_token_id
    types = torch.zeros_like(ids)
    (h,) = OnnxRunner(tmp_path / "m.onnx").run({"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()})
    with torch.no_grad():
        want = model(ids, mask, types).last_hidden_state
    got = torch.from_numpy(h)
    assert (got[mask.bool()] - want[mask.bool()]).abs().max() <= 1e-4


def test_bad_input(minilm_dir, minilm_onnx, classifier, tmp_path):
    with pytest.raises(BertkitError, match="does not exist"):
        export_onnx(tmp_path / "missing", tmp_path / "x.onnx")
    with pytest.raises(BertkitError, match="output directory .* does not exist"):
        export_onnx(minilm_dir, tmp_path / "nowhere" / "x.onnx")
    with pytest.raises(BertkitError, match="already holds minilm.onnx"):
        export_onnx(minilm_dir, minilm_onnx.path)
    with pytest.raises(BertkitError, match="must be a .onnx file"):
        export_onnx(minilm_dir, tmp_path / "x.bin")
    with pytest.raises(BertkitError, match="cannot run bfloat16"):
        export_onnx(minilm_dir, tmp_path / "x.onnx", bf16=True)
    with pytest.raises(BertkitError, match="not a model bertkit fine-tuned"):
        export_onnx(minilm_dir, tmp_path / "x.onnx", task="classify")
    with pytest.raises(BertkitError, match="does not exist"):
        OnnxRunner(tmp_path / "missing.onnx")
    with pytest.raises(BertkitError, match="exported for embed; this needs a fine-tuned model"):
        onnx_predict(minilm_onnx.path, ["a"])
    assert not list(tmp_path.iterdir())  # nothing written, no temporary directory left behind
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(BertkitError, match="already holds config.json"):  # never overwrites a checkpoint's files
        export_onnx(minilm_dir, tmp_path / "x.onnx")
    (tmp_path / "cls").mkdir()
    cls = export_onnx(classifier, tmp_path / "cls" / "c.onnx")
    with pytest.raises(BertkitError, match="exported for classify; this needs an embed or encoder export"):
        onnx_embed(cls.path, ["a"])


def test_cli_parser(classifier, tmp_path, capsys):
    p = argparse.ArgumentParser()
    add_export_parser(p.add_subparsers(dest="command"))
    a = p.parse_args(["export", "onnx", str(classifier), "--out", str(tmp_path / "c.onnx"), "--int8"])
    a.run(a)
    assert "int8" in capsys.readouterr().out and OnnxRunner(tmp_path / "c.onnx").precision == "int8"
    with pytest.raises(SystemExit):
        p.parse_args(["export", "onnx", str(classifier), "--out", "x.onnx", "--int8", "--bf16"])


@pytest.mark.heavy
def test_benchmark_runs_tiny(classifier, tmp_path):
    """benchmarks/onnx_int8.py end to end on tiny settings (no timing assertions)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import onnx_int8
    finally:
        sys.path.pop(0)
    out = tmp_path / "results.md"
    onnx_int8.main(["--embedder", str(classifier), "--classifier", str(classifier), "--sentences", "12",
                    "--limit", "24", "--repeats", "1", "--out", str(out)])
    text = out.read_text()
    assert "cosine" in text and "accuracy" in text and "onnx_int8.py" in text


@pytest.mark.heavy
def test_fused_export_and_length_buckets(minilm_dir, minilm_onnx, tmp_path):
    """The export carries onnxruntime's fusions (and a --no-fuse export none); a padded batch run as length
    buckets equals the same batch run whole, zeros at padding included."""
    from bertkit.serving.onnx import OnnxRunner, length_buckets

    assert minilm_onnx.fused and minilm_onnx.fused.get("SkipLayerNormalization") == 12
    plain = export_onnx(minilm_dir, tmp_path / "plain.onnx", task="encoder", fuse=False)
    assert plain.fused is None
    g = np.random.default_rng(0)
    lengths = np.array([40, 3, 17, 1, 25, 9, 33])
    mask = (np.arange(40)[None] < lengths[:, None]).astype(np.int64)
    feeds = {"input_ids": g.integers(1000, 20000, mask.shape) * mask, "attention_mask": mask, "token_type_ids": 0 * mask}
    parts = length_buckets(mask, 4)
    assert sorted(np.concatenate([r for r, _ in parts]).tolist()) == list(range(7))
    assert all(n == lengths[r].max() for r, n in parts)
    assert length_buckets(np.ones((4, 8), np.int64), 4) is None  # no padding: as it comes
    assert length_buckets(mask[:, ::-1].copy(), 4) is None  # left padding: as it comes
    for path in (minilm_onnx.path, plain.path):
        runner = OnnxRunner(path)
        bucketed = runner.run(feeds)
        runner.buckets = 0
        whole = runner.run(feeds)
        for a, b in zip(bucketed, whole):
            if a.ndim == 3:
                assert np.abs(a[mask == 1] - b[mask == 1]).max() <= 1e-4 and not a[mask == 0].any()
            else:
                assert np.abs(a - b).max() <= 1e-4


@pytest.mark.heavy
def test_openvino_backend_runs_the_export(minilm_dir, minilm_onnx, classifier, tmp_path, capsys):
    """--backend openvino: the same export in OpenVINO (its own precision: bf16 where the CPU has it), behind the same
    calls: embed vectors within cosine 0.999 of torch fp32's, the classifier's labels equal, the choice said."""
    pytest.importorskip("openvino")
    from bertkit.cli import main
    from bertkit.serving.backend import backend_factory
    from bertkit.serving.onnx import OnnxRunner

    src = tmp_path / "in.txt"
    src.write_text("A man is playing a guitar.\nok\n一个男人在弹吉他。\n" + "a longer sentence that goes on " * 20 + "\n", encoding="utf-8")
    for backend, model in (("openvino", minilm_onnx.path.parent), ("torch", minilm_dir)):
        extra = ["--precision", "fp32"] if backend == "torch" else []
        assert main(["embed", str(model), "--input", str(src), "--output", str(tmp_path / f"{backend}.npy"), "--quiet",
                     "--backend", backend, *extra]) == 0
    assert "graph in OpenVINO, which runs it in" in capsys.readouterr().err
    a, b = np.load(tmp_path / "openvino.npy"), np.load(tmp_path / "torch.npy")
    assert ((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min() >= 0.999
    (tmp_path / "cls").mkdir()
    cls = export_onnx(classifier, tmp_path / "cls" / "cls.onnx")
    texts = ["这本书很好看", "质量太差了,不推荐购买。", "还行"]
    runner = OnnxRunner(cls.path, engine="openvino")
    model, tok = load_finetuned(classifier, precision="fp32")
    assert [r["label"] for r in predict_texts(runner, tok, texts)] == [r["label"] for r in predict_texts(model, tok, texts)]
    assert backend_factory(cls.path, "openvino")().describe()["kernels"] == "openvino"
    with pytest.raises(BertkitError, match="applies to --backend torch"):
        backend_factory(cls.path, "openvino", bf16=True)
