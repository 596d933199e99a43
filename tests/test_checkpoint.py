"""The pretrained checkpoint kept in the repository (benchmarks/checkpoints/roformer-tiny-zh-wwm60, see its README):
intact, the preset's shape, read alike by bertkit and transformers, and answering as a pretrained model does."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import transformers

from bertkit.serving.load import load_for_inference
from bertkit.tasks import fill_mask

ROOT = Path(__file__).resolve().parent.parent
CKPT = ROOT / "benchmarks" / "checkpoints" / "roformer-tiny-zh-wwm60"


def test_checkpoint_is_intact_and_the_preset_shape():
    digest = hashlib.sha256((CKPT / "model.safetensors").read_bytes()).hexdigest()
    assert f"sha256 of model.safetensors: {digest}" in (CKPT / "README.md").read_text(encoding="utf-8")
    config = json.loads((CKPT / "config.json").read_text())
    preset = json.loads((ROOT / "benchmarks" / "configs" / "roformer-tiny-zh.json").read_text())
    for k in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "initializer_range"):
        assert config[k] == preset[k], k
    assert config["vocab_size"] == len((CKPT / "vocab.txt").read_text(encoding="utf-8").splitlines()) == 7612


def test_checkpoint_matches_transformers_and_fills_masks():
    model, tok = load_for_inference(str(CKPT), kind="mlm", kernels="torch", precision="fp32")
    hf, info = transformers.AutoModelForMaskedLM.from_pretrained(CKPT, output_loading_info=True)
    assert type(hf).__name__ == "RoFormerForMaskedLM" and not info["missing_keys"] and not info["unexpected_keys"]
    batch = tok(["今天天气很[MASK]，我们去公园散步。", "中国人民解放军"], padding=True)
    with torch.no_grad():
        ours, theirs = model(**batch).logits, hf.eval()(**batch).logits
    real = batch["attention_mask"].bool()
    assert (ours[real] - theirs[real]).abs().max() < 1e-4
    assert fill_mask(model, tok, "今天天气很[MASK]")[0][0][0] == "好"  # a random model of this vocabulary answers noise
    assert fill_mask(model, tok, "北[MASK]是中国的首都")[0][0][0] == "京"
    assert fill_mask(model, tok, "这家酒店的服务态度很[MASK]")[0][0][0] == "好"
