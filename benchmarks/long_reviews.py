"""Long reviews in classification: keep the head of a text longer than --max-length, or its head and tail.

    .venv/bin/python benchmarks/long_reviews.py                 # roformer-tiny-zh, 1 epoch, 3 seeds
    .venv/bin/python benchmarks/long_reviews.py --max-steps 20 --seeds 1 --out /tmp/r.md   # a smoke run

Fine-tunes the same model from random init on reviews-zh with `--truncation head` and `--truncation head+tail`
(first quarter + last three quarters of the room, Sun et al. 2019) and scores test accuracy on all
reviews and on those longer than the window. Writes a markdown table to --out and JSON beside it.
"""

from __future__ import annotations

import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from windows_ner import machine, mean_spread, run_args

from bertkit.data.datasets import load_dataset
from bertkit.serving.load import load_finetuned
from bertkit.serving.predict import predict_texts
from bertkit.train import TrainConfig, train


def main() -> None:
    a = run_args(__doc__, "docs/results/long-reviews.md").parse_args()
    test = load_dataset("reviews-zh")["test"]
    rows: dict[str, dict[str, list]] = {}
    for seed in a.seeds:
        for truncation in ("head", "head+tail"):
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                train(TrainConfig(task="classify", model=a.model, data="reviews-zh", out=str(Path(tmp) / "run"), epochs=a.epochs,
                                  max_steps=a.max_steps, batch_size=32, lr=a.lr, max_length=a.max_length, truncation=truncation,
                                  seed=seed, quiet=True))
                seconds = time.perf_counter() - t
                model, tok = load_finetuned(Path(tmp) / "run")
                preds = predict_texts(model, tok, [e.text for e in test])
            right = [r["label"] == e.label for r, e in zip(preds, test)]
            long = [ok for ok, r in zip(right, preds) if r["truncated"]]
            row = rows.setdefault(truncation, {"all": [], "long": [], "n_long": [], "seconds": []})
            row["all"].append(sum(right) / len(right))
            row["long"].append(sum(long) / max(len(long), 1))
            row["n_long"].append(len(long))
            row["seconds"].append(seconds)
            print(seed, truncation, row["all"][-1], row["long"][-1], file=sys.stderr)
    out = Path(a.out)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(a), "rows": rows}, indent=2) + "\n")
    command = " ".join(["python benchmarks/long_reviews.py", *map(shlex.quote, sys.argv[1:])])
    lines = ["# Long reviews: the head of a text, or its head and tail", "", f"Command: `{command}`", "", f"Machine: {machine()}.", "",
             f"Model: `{a.model}` from random init, fine-tuned on reviews-zh for {a.max_steps or a.epochs} "
             f"{'steps' if a.max_steps else 'epoch(s)'}, lr {a.lr}, batch 32, --max-length {a.max_length}, seeds "
             f"{', '.join(map(str, a.seeds))} (mean ± standard deviation). Test accuracy on all {len(test)} reviews and on the "
             f"ones longer than the window.", "",
             "| --truncation | test accuracy | on long reviews | long reviews | train time |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {mean_spread(r['all'])} | {mean_spread(r['long'])} | {r['n_long'][0]} | "
                     f"{statistics.mean(r['seconds']) / 60:.1f} min |")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
