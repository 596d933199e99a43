"""Will it fit? A model's fp32 weights against the memory this machine has free, checked before any tensor is built,
so an impossible config is one sentence rather than an out-of-memory kill (BertModel calls `check_fits`)."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn

from .config import BertConfig
from .errors import BertkitError


def check_fits(config: BertConfig, build: Callable[[], nn.Module]) -> None:
    """Refuse a config whose fp32 weights alone exceed the memory this machine has free (counted on the
    meta device, where `build()` costs nothing); the weights of a model built on the meta device or a GPU
    are not counted against the host's memory."""
    if torch.empty(()).device.type != "cpu":  # inside `with torch.device("meta")` (or cuda): nothing to check here
        return
    free = available_memory()
    if free is None or weight_bound(config) < free:
        return  # fits by a wide margin: no need to count exactly (building on meta imports torch's compiler: ~1 s)
    with torch.device("meta"):
        need = 4 * sum(p.numel() for p in build().parameters())
    if need > free:
        raise BertkitError(f"the {config.model_type} config with {config.num_hidden_layers} layers of {config.hidden_size} and a "
                           f"{config.vocab_size}-token vocabulary needs {need / 2**30:.1f} GiB for its fp32 weights alone, more than "
                           f"the {free / 2**30:.1f} GiB of memory this machine has free.")


def weight_bound(c: BertConfig) -> int:
    """Bytes that the fp32 weights of BertModel(c) never reach: twice a generous count of its tables and layers
    (attention 4 H x H, an FFN of up to 3 H x F as ModernBERT's gated one, one layer more for pooler and extras)."""
    H = c.hidden_size
    inner = c.num_attention_heads * (c.head_dim or H // max(1, c.num_attention_heads))
    rows = c.vocab_size + c.max_position_embeddings + c.type_vocab_size + (c.task_types or 0) + c.bigram_buckets
    layer = 4 * H * max(H, inner) + 3 * H * c.intermediate_size + 16 * H
    return 2 * 4 * (rows * max(c.embed_size, H) + (c.num_hidden_layers + 1) * layer + c.embed_size * H)


def available_memory() -> int | None:
    """Bytes of memory free for a new allocation: Linux's MemAvailable, else the physical size, else None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass  # not Linux: ask for the physical size instead
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
