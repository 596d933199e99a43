"""The commands: published preset sizes, fill-mask and convert against transformers, and bad
input answered with one sentence and a non-zero exit, leaving nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import bertkit
from bertkit.cli import build_parser, main
from conftest import padded_batch, randomise, save_hf, tiny_hf_config

WORDS = "the a cat dog sat on mat paris is capital of france city big small ran".split()


def run(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()  # only what the command prints
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def mlm_dir(tmp_path) -> Path:
    """A tiny transformers BertForMaskedLM with a real vocab and tokenizer files."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + WORDS + [f"##{w}" for w in WORDS]
    tok = bertkit.Tokenizer.from_vocab({t: i for i, t in enumerate(vocab)})
    model = randomise(transformers.BertForMaskedLM(tiny_hf_config(vocab_size=len(vocab))))
    d = save_hf(model, tmp_path / "mlm", "safetensors")
    tok.save_pretrained(d)
    return d


@pytest.mark.parametrize(
    "preset,size",
    [("bert-base-uncased", "109,482,240"), ("bert-large-uncased", "335,141,888"), ("bert-base-chinese", "102,267,648")],
)
def test_summary_presets_give_published_sizes(capsys, preset, size):
    rc, out, _ = run(capsys, "summary", preset)
    assert rc == 0 and out.strip().splitlines()[-1] == f"Total params: {size}"
    assert "layers[0] (Layer)" in out and "[1, 128, " in out


def test_summary_of_a_directory(capsys, minilm_dir):
    rc, out, _ = run(capsys, "summary", minilm_dir)
    assert rc == 0 and out.strip().endswith("Total params: 22,713,216")


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "bertkit.cli", "--help"], capture_output=True, text=True).stdout
    for cmd in ("summary", "fill-mask", "embed", "convert"):
        assert cmd in out
        sub = subprocess.run([sys.executable, "-m", "bertkit.cli", cmd, "--help"], capture_output=True, text=True)
        assert sub.returncode == 0 and "usage: bertkit" in sub.stdout


def test_fill_mask_matches_transformers(capsys, mlm_dir):
    rc, out, _ = run(capsys, "fill-mask", mlm_dir, "the cat [MASK] on the [MASK] .", "--top-k", "3", "--precision", "fp32")
    assert rc == 0
    ref = transformers.BertForMaskedLM.from_pretrained(mlm_dir).eval()
    tok = transformers.AutoTokenizer.from_pretrained(mlm_dir)
    batch = tok("the cat [MASK] on the [MASK] .", return_tensors="pt")
    with torch.no_grad():
        logits = ref(**batch).logits[0]
    where = (batch["input_ids"][0] == tok.mask_token_id).nonzero().flatten()
    blocks = out.split("[MASK] #")[1:]
    assert len(blocks) == 2
    for block, pos in zip(blocks, where):
        probs, top = logits[pos].softmax(-1).topk(3)
        rows = [line.split() for line in block.strip().splitlines()[1:]]
        assert [r[0] for r in rows] == tok.convert_ids_to_tokens(top)
        assert np.allclose([float(r[1]) for r in rows], probs.numpy(), atol=1e-4)


def test_fill_mask_bad_input(capsys, mlm_dir, minilm_dir):
    rc, _, err = run(capsys, "fill-mask", mlm_dir, "no mask here")
    assert rc == 1 and "no [MASK]" in one_error_line(err)
    rc, _, err = run(capsys, "fill-mask", minilm_dir, "the [MASK] sat")
    assert rc == 1 and "mlm" in one_error_line(err)  # MiniLM was saved without its MLM head
    rc, _, err = run(capsys, "fill-mask", mlm_dir, "the " * 60 + "[MASK]")
    assert rc == 1 and "at most 40" in one_error_line(err)


def test_convert_bin_to_safetensors_round_trip(capsys, tmp_path):
    ref = randomise(transformers.BertForPreTraining(tiny_hf_config()))
    src = save_hf(ref, tmp_path / "src", "bin")
    rc, out, _ = run(capsys, "convert", src, tmp_path / "dst")
    assert rc == 0 and "BertForPreTraining" in out
    back = transformers.BertForPreTraining.from_pretrained(tmp_path / "dst").eval()
    batch = padded_batch()
    with torch.no_grad():
        a, b = ref(**batch), back(**batch)
    assert (a.prediction_logits - b.prediction_logits).abs().max() <= 1e-5
    rc, _, err = run(capsys, "convert", src, tmp_path / "dst")  # never overwrite
    assert rc == 1 and "already exists" in one_error_line(err)


# ---- bad checkpoints --------------------------------------------------------------------


@pytest.fixture
def good_dir(tmp_path) -> Path:
    return save_hf(randomise(transformers.BertModel(tiny_hf_config())), tmp_path / "good", "safetensors")


def convert_error(capsys, src, dst) -> str:
    rc, _, err = run(capsys, "convert", src, dst)
    assert rc == 1
    assert not Path(dst).exists() and not list(Path(dst).parent.glob(f".{Path(dst).name}.*")), "half-written output"
    return one_error_line(err)


def test_missing_directory(capsys, tmp_path):
    assert "does not exist" in convert_error(capsys, tmp_path / "nope" / "model", tmp_path / "out")


def test_directory_without_weights_or_config(capsys, tmp_path, good_dir):
    (good_dir / "model.safetensors").unlink()
    assert "has no weights" in convert_error(capsys, good_dir, tmp_path / "out")
    (good_dir / "config.json").unlink()
    assert "no config.json" in convert_error(capsys, good_dir, tmp_path / "out")


def test_truncated_safetensors(capsys, tmp_path, good_dir):
    f = good_dir / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    assert "truncated or corrupted" in convert_error(capsys, good_dir, tmp_path / "out")


def test_corrupted_bin(capsys, tmp_path):
    d = save_hf(randomise(transformers.BertModel(tiny_hf_config())), tmp_path / "bin", "bin")
    raw = bytearray((d / "pytorch_model.bin").read_bytes())
    raw[len(raw) // 3 : len(raw) // 3 + 64] = b"\x00" * 64
    (d / "pytorch_model.bin").write_bytes(bytes(raw[: len(raw) - 100]))
    assert "pytorch_model.bin" in convert_error(capsys, d, tmp_path / "out")


def test_config_that_does_not_fit_the_weights(capsys, tmp_path, good_dir):
    cfg = json.loads((good_dir / "config.json").read_text())
    cfg["intermediate_size"] = 64
    (good_dir / "config.json").write_text(json.dumps(cfg))
    msg = convert_error(capsys, good_dir, tmp_path / "out")
    assert "encoder.layer.0.intermediate.dense." in msg and "(52" in msg and "(64" in msg


def test_missing_backbone_weight_is_an_error(capsys, tmp_path, good_dir):
    sd = load_file(good_dir / "model.safetensors")
    del sd["encoder.layer.1.output.LayerNorm.weight"]
    save_file(sd, good_dir / "model.safetensors")
    assert "encoder.layer.1.output.LayerNorm.weight" in convert_error(capsys, good_dir, tmp_path / "out")


def test_unknown_weights_are_listed(capsys, tmp_path, good_dir):
    sd = load_file(good_dir / "model.safetensors")
    sd["encoder.layer.0.adapter.weight"] = torch.zeros(3)
    save_file(sd, good_dir / "model.safetensors")
    assert "encoder.layer.0.adapter.weight" in convert_error(capsys, good_dir, tmp_path / "out")


def test_unknown_model_type(capsys, tmp_path, good_dir):
    cfg = json.loads((good_dir / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (good_dir / "config.json").write_text(json.dumps(cfg))
    msg = convert_error(capsys, good_dir, tmp_path / "out")
    assert "gpt2" in msg and "bert" in msg


def test_malformed_config(capsys, tmp_path, good_dir):
    (good_dir / "config.json").write_text("{not json")
    assert "not valid JSON" in convert_error(capsys, good_dir, tmp_path / "out")


def test_debug_shows_the_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bertkit.cli", "--debug", "convert", str(tmp_path / "x"), str(tmp_path / "y")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" in r.stderr


# ---- bad input to embed -----------------------------------------------------------------


def embed_error(capsys, model, text: bytes, tmp_path, *flags) -> str:
    (tmp_path / "in.txt").write_bytes(text)
    out = tmp_path / "out.npy"
    rc, _, err = run(capsys, "embed", model, "--input", tmp_path / "in.txt", "--output", out, "--quiet", *flags)
    assert rc == 1 and not out.exists() and not list(tmp_path.glob(".out.npy*"))
    return one_error_line(err)


def test_embed_bad_input(capsys, minilm_dir, tmp_path):
    assert "line 2 is not valid UTF-8" in embed_error(capsys, minilm_dir, b"fine\nbad \xff byte\n", tmp_path)
    assert "line 3 is empty" in embed_error(capsys, minilm_dir, b"one\ntwo\n\nfour\n", tmp_path)
    assert "is empty" in embed_error(capsys, minilm_dir, b"", tmp_path)
    long = b"ok\n" + b"word " * 400 + b"\n"
    assert "line 2 is" in embed_error(capsys, minilm_dir, long, tmp_path, "--long", "error")
    rc, _, err = run(capsys, "embed", minilm_dir, "--input", tmp_path / "missing.txt", "--output", tmp_path / "o.npy")
    assert rc == 1 and "missing.txt does not exist" in one_error_line(err)
    rc, _, err = run(capsys, "embed", minilm_dir, "--input", tmp_path / "in.txt", "--output", tmp_path / "no" / "o.npy")
    assert rc == 1 and "does not exist" in one_error_line(err)


def test_embed_truncates_long_lines_and_says_so_once(capsys, minilm_dir, tmp_path):
    (tmp_path / "in.txt").write_text("ok\n" + "word " * 400 + "\n" + "more " * 300 + "\n", encoding="utf-8")
    rc, _, err = run(capsys, "embed", minilm_dir, "--input", tmp_path / "in.txt", "--output", tmp_path / "o.npy", "--quiet")
    assert rc == 0 and err.count("truncated") == 1 and "2 of 3 lines" in err
    assert np.load(tmp_path / "o.npy").shape == (3, 384)


def test_bf16_is_fast_reads_the_cpu_flags(tmp_path):
    """bf16 counts as fast on a CPU only with AVX512-BF16 or AMX; without them (or without /proc/cpuinfo)
    the answer is no, and the CLI says so when --bf16 is asked for."""
    from bertkit.serving.load import bf16_is_fast

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert bf16_is_fast("cpu", str(info))
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n")
    assert bf16_is_fast("cpu", str(info))
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert not bf16_is_fast("cpu", str(info))
    assert not bf16_is_fast("cpu", str(tmp_path / "missing"))
    assert not bf16_is_fast("meta")


def test_bf16_note_on_slow_hardware(capsys, monkeypatch, minilm_dir, tmp_path):
    import bertkit.serving.load

    monkeypatch.setattr(bertkit.serving.load, "bf16_is_fast", lambda *a, **k: False)
    (tmp_path / "in.txt").write_text("one sentence\n")
    assert main(["embed", str(minilm_dir), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "v.npy"),
                 "--bf16", "--quiet"]) == 0
    assert "no bf16 hardware" in capsys.readouterr().err
    assert np.load(tmp_path / "v.npy").shape == (1, 384)


def test_flags_take_their_defaults_from_the_run_dataclasses():
    """A default is written once, in the dataclass: every generated flag parses to the field's default,
    and a switch in the dataclass is a switch on the command line."""
    import dataclasses

    from bertkit.cli import DISTILL_FLAGS, PRETRAIN_FLAGS, TRAIN_FLAGS
    from bertkit.serving.app import SERVE_FLAGS, ServeConfig
    from bertkit.train import PretrainConfig, TrainConfig

    p = build_parser()
    parsed = {
        "train": vars(p.parse_args(["train", "classify", "--model", "m", "--out", "o"])),
        "distill": vars(p.parse_args(["distill", "--teacher", "t", "--student", "s", "--task", "ner", "--out", "o"])),
        "pretrain": vars(p.parse_args(["pretrain", "--model", "m", "--out", "o", "--max-steps", "1"])),
        "serve": vars(p.parse_args(["serve", "d"])),
    }
    for command, cls, table in (("train", TrainConfig, TRAIN_FLAGS), ("distill", TrainConfig, DISTILL_FLAGS | TRAIN_FLAGS),
                                ("pretrain", PretrainConfig, PRETRAIN_FLAGS), ("serve", ServeConfig, SERVE_FLAGS)):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert set(table) <= set(fields), command
        for name in table:
            assert parsed[command][name] == fields[name].default, (command, name)
    switched = vars(p.parse_args(["pretrain", "--model", "m", "--out", "o", "--max-steps", "1", "--wwm", "--bf16", "--resume"]))
    assert switched["wwm"] and switched["bf16"] and switched["resume"]


def test_a_lost_peer_is_one_sentence(monkeypatch, capsys):
    """A collective that fails because another process of the run stopped (gloo's words) is named as that, with what
    to do, not reported as an internal error."""
    import torch.distributed as dist

    import bertkit.cli

    def lost(args):
        raise dist.DistBackendError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:29411\nmore")

    monkeypatch.setattr(bertkit.cli, "cmd_summary", lost)
    assert bertkit.cli.main(["summary", "bert-tiny"]) == 2  # one process alone has no peer: a bug
    assert "internal error" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert bertkit.cli.main(["summary", "bert-tiny"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("bertkit summary: error: another process of this run went away ([../third_party/gloo/gloo/transport/tcp/pair.cc:534] "
                   "Connection closed by peer [127.0.0.1]:29411); under torchrun --max-restarts the group starts again, and "
                   "--auto-resume continues from the last checkpoint.")

    def bug(args):
        raise RuntimeError("shapes do not match")

    monkeypatch.setattr(bertkit.cli, "cmd_summary", bug)
    assert bertkit.cli.main(["summary", "bert-tiny"]) == 2
    assert "internal error: RuntimeError: shapes do not match" in capsys.readouterr().err
