"""The "no pretraining" report: a small randomly initialised bertkit model fine-tuned on the bundled
reviews-zh and peoples-daily-ner, over several seeds, beside a TF-IDF baseline on the same split.

    .venv/bin/python benchmarks/finetune_report.py            # bert-mini, 2 epochs, seeds 1 2 3
    .venv/bin/python benchmarks/finetune_report.py --quick    # one seed, a few hundred steps (a smoke run)

Writes the table (markdown) to --out (default docs/results/finetune.md) and the raw numbers beside
it as JSON. Needs scikit-learn for the baseline (it comes with the test extras).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bertkit.data.datasets import load_dataset
from bertkit.train import TrainConfig, train


def tfidf_baseline() -> float:
    """Character 1-3-gram TF-IDF + logistic regression on reviews-zh: test accuracy."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    d = load_dataset("reviews-zh")
    vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
    x = vec.fit_transform([e.text for e in d["train"]])
    clf = LogisticRegression(C=4.0, max_iter=2000).fit(x, [e.label for e in d["train"]])
    pred = clf.predict(vec.transform([e.text for e in d["test"]]))
    return sum(p == e.label for p, e in zip(pred, d["test"])) / len(d["test"])


def run(task: str, data: str, seed: int, a) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        cfg = TrainConfig(task=task, model=a.model, data=data, out=str(Path(tmp) / "run"), epochs=a.epochs,
                          max_steps=a.max_steps, batch_size=32, lr=a.lr, max_length=a.max_length, bf16=a.bf16,
                          seed=seed, crf=task == "ner", repair_bio=True, vocab_size=a.vocab_size, quiet=a.quiet)
        result = train(cfg)
        result["seconds"] = time.perf_counter() - t
    return result


def mean_spread(xs: list[float]) -> str:
    return f"{100 * statistics.mean(xs):.2f} ± {100 * (statistics.stdev(xs) if len(xs) > 1 else 0):.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="bert-mini")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--no-bf16", dest="bf16", action="store_false")
    p.add_argument("--quick", action="store_true", help="one seed, 300 steps")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--out", default="docs/results/finetune.md")
    a = p.parse_args()
    if a.quick:
        a.seeds, a.max_steps = a.seeds[:1], 300
    rows = {"reviews-zh": [], "peoples-daily-ner": []}
    for seed in a.seeds:
        rows["reviews-zh"].append(run("classify", "reviews-zh", seed, a))
        rows["peoples-daily-ner"].append(run("ner", "peoples-daily-ner", seed, a))
    base = tfidf_baseline()
    acc = [r["test"]["accuracy"] for r in rows["reviews-zh"]]
    f1 = [r["test"]["f1"] for r in rows["peoples-daily-ner"]]
    minutes = {k: statistics.mean(r["seconds"] for r in v) / 60 for k, v in rows.items()}
    command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    lines = [
        "# Fine-tuning without pretraining: the baseline row",
        "",
        f"Command: `{command}` (torch {torch.__version__}, {os.cpu_count()} CPU cores).",
        f"Model: `{a.model}` randomly initialised, WordPiece vocabulary trained on each training split "
        f"(`--vocab-size {a.vocab_size}`), {a.epochs if not a.max_steps else str(a.max_steps) + ' steps'} "
        f"{'epochs' if not a.max_steps else ''}, batch 32, lr {a.lr}, max length {a.max_length}, "
        f"{'bf16 autocast' if a.bf16 else 'fp32'}; NER with the CRF head. Seeds {a.seeds}; test split; "
        "mean ± standard deviation over seeds.",
        "",
        "| task | metric | bertkit (no pretraining) | TF-IDF char 1-3-gram + logistic regression | minutes per run |",
        "|---|---|---|---|---|",
        f"| reviews-zh | test accuracy (%) | {mean_spread(acc)} | {100 * base:.2f} | {minutes['reviews-zh']:.1f} |",
        f"| peoples-daily-ner | test entity F1 (%) | {mean_spread(f1)} | - | {minutes['peoples-daily-ner']:.1f} |",
        "",
        "Per seed: accuracy " + ", ".join(f"{100 * x:.2f}" for x in acc) + "; F1 " + ", ".join(f"{100 * x:.2f}" for x in f1) + ".",
        "",
    ]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps({"args": vars(a), "baseline_accuracy": base, "runs": rows}, indent=1, ensure_ascii=False, default=str))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
