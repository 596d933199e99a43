"""What the key/value cache buys: 128 new tokens, greedy, on a GPT-2-small-shaped model (random weights: 12 layers of
768, 12 heads, 50,257 tokens), with bertkit's cache, without it (the whole prefix re-read each step), and with
transformers' generate (its cache) beside them, in one process, one after another.

    .venv/bin/python benchmarks/generate_cache.py --out docs/results/generate.md
    .venv/bin/python benchmarks/generate_cache.py --tiny --out /tmp/gen.md      # a 2-layer model, seconds (the test)

Every path must write the same tokens (checked); the table reports seconds and the ratio to the uncached path.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import load_average, machine, versions  # noqa: E402

import bertkit  # noqa: E402


def build(tiny: bool, d: Path):
    """A random GPT-2 saved by transformers and loaded by bertkit (the same weights in both)."""
    import transformers as tf

    shape = (dict(n_embd=64, n_layer=2, n_head=4, vocab_size=1000, bos_token_id=999, eos_token_id=999) if tiny
             else dict(n_embd=768, n_layer=12, n_head=12, vocab_size=50257))
    torch.manual_seed(0)
    ref = tf.GPT2LMHeadModel(tf.GPT2Config(**shape, n_positions=1024)).eval()
    ref.save_pretrained(d)
    return ref, bertkit.CausalLM.from_pretrained(d)


def timed(f):
    start = time.perf_counter()
    out = f()
    return time.perf_counter() - start, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--prompt", type=int, default=16, help="prompt tokens")
    p.add_argument("--tiny", action="store_true", help="a 2-layer model of 64 (a quick check)")
    p.add_argument("--out", default="docs/results/generate.md")
    a = p.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        ref, ours = build(a.tiny, Path(tmp))
    prompt = torch.randint(0, ours.config.vocab_size, (1, a.prompt), generator=torch.Generator().manual_seed(1))
    n = a.new_tokens
    # min_new_tokens = n: no path may end early, every path writes exactly n tokens
    bertkit.generate(ours, prompt[0].tolist(), max_new_tokens=4)  # warm-up
    rows = {}
    rows["bertkit, key/value cache"] = timed(lambda: bertkit.generate(ours, prompt[0].tolist(), max_new_tokens=n, min_new_tokens=n))
    rows["bertkit, no cache (prefix re-read)"] = timed(lambda: bertkit.generate(ours, prompt[0].tolist(), max_new_tokens=n, min_new_tokens=n, use_cache=False))
    with torch.no_grad():
        rows["transformers generate (its cache)"] = timed(lambda: ref.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                                                                               min_new_tokens=n, do_sample=False, pad_token_id=0)[0, a.prompt:].tolist())
    tokens = {k: v[1] for k, v in rows.items()}
    same = len({tuple(t) for t in tokens.values()}) == 1
    base = rows["bertkit, no cache (prefix re-read)"][0]
    shape = "2 layers of 64 (--tiny)" if a.tiny else "GPT-2 small's shape: 12 layers of 768, 12 heads, 50,257 tokens (random weights)"
    lines = [
        "# Generation with a key/value cache", "",
        f"Command: `python benchmarks/generate_cache.py{' --tiny' if a.tiny else ''} --out {a.out}`", "",
        f"Machine: {machine()}, {torch.get_num_threads()} threads, load average {load_average():.1f}; "
        + ", ".join(f"{k} {v}" for k, v in versions().items() if k in ("torch", "transformers")) + ".", "",
        f"Model: {shape}; prompt {a.prompt} tokens, {n} new tokens, greedy, batch 1, fp32, one run each in one process.", "",
        "| path | seconds | tokens/s | speed-up vs no cache |", "|---|---|---|---|",
    ]
    for k, (sec, _) in rows.items():
        lines.append(f"| {k} | {sec:.2f} | {n / sec:.1f} | {base / sec:.2f}x |")
    lines += ["", f"All paths wrote the same {n} tokens: {'yes' if same else 'NO'}.", ""]
    Path(a.out).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
