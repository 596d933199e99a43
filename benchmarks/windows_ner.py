"""Long sentences in NER: cut at --max-length (the old behaviour) or read as sliding windows.

    .venv/bin/python benchmarks/windows_ner.py                       # roformer-tiny-zh, 1 epoch, both runs, 3 seeds
    .venv/bin/python benchmarks/windows_ner.py --max-steps 50 --out /tmp/w.md   # a smoke run

Fine-tunes the same model from random init on peoples-daily-ner twice with the same seed: once cutting
sentences at --max-length tokens (`--stride -1`: words past the cut are tagged O), once with windows
(`--stride`, windows as extra training examples). Both are scored on test as the scorer sees whole
sentences; for the windowed model both merges of overlapping windows are scored on dev and test
("edge": each word's tag from the window where it is farthest from a cut; "mean": emissions averaged
over windows, one Viterbi per sentence). Recall is split by where an entity starts: before or after
the first --max-length - 2 characters (what the cut model can see). Writes a markdown table to --out
and the numbers beside it as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bertkit.data.datasets import load_dataset
from bertkit.data.features import encode
from bertkit.data.metrics import entities, entity_scores, repair_bio
from bertkit.heads import labels_of
from bertkit.serving.load import load_finetuned
from bertkit.serving.predict import predict_features, word_tags
from bertkit.train import TrainConfig, train


def recall_by_position(gold: list[list[str]], pred: list[list[str]], split_at: int) -> dict:
    """Entity recall for entities starting before / at or after word `split_at`."""
    found = {"before": [0, 0], "after": [0, 0]}
    for g, p in zip(gold, pred):
        predicted = set(entities(p))
        for ent in entities(g):
            side = "before" if ent[1] < split_at else "after"
            found[side][1] += 1
            found[side][0] += ent in predicted
    return {k: {"recall": hit / max(n, 1), "entities": n} for k, (hit, n) in found.items()}


def score(model, tok, examples, stride, merge: str, split_at: int) -> dict:
    labels = labels_of(model.config)
    f = encode(tok, examples, "ner", labels, model.config.extra["bertkit"]["max_length"], stride)
    preds = predict_features(model, f, merge=merge)
    pred = [word_tags(f, i, p, labels, len(e.tokens)) for i, (e, p) in enumerate(zip(examples, preds))]
    gold = [e.tags for e in examples]
    s = entity_scores(gold, pred)
    return {"f1": s["f1"], "precision": s["precision"], "recall": s["recall"], "by_position": recall_by_position(gold, pred, split_at)}


def run_args(doc: str, out: str) -> argparse.ArgumentParser:
    """The flags this report and long_reviews.py share: the model and its fine-tuning run, the seeds, the report."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--model", default="benchmarks/configs/roformer-tiny-zh.json")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--out", default=out)
    return p


def main() -> None:
    p = run_args(__doc__, "docs/results/windows-ner.md")
    p.add_argument("--stride", type=int, default=32)
    a = p.parse_args()
    data = load_dataset("peoples-daily-ner")
    for split in data.values():
        for e in split:
            e.tags = repair_bio(e.tags)
    split_at = a.max_length - 2  # characters a cut model sees ([CLS] and [SEP] take two tokens)
    rows = {}  # run -> scored on -> list over seeds
    for seed in a.seeds:
        for name, runs in one_seed(a, data, seed, split_at).items():
            for key, value in runs.items():
                rows.setdefault(name, {}).setdefault(key, []).append(value)
    write(a, rows, split_at)


def one_seed(a, data, seed: int, split_at: int) -> dict:
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, stride in (("cut", -1), ("windows", a.stride)):
            t = time.perf_counter()
            out = Path(tmp) / name
            train(TrainConfig(task="ner", model=a.model, data="peoples-daily-ner", out=str(out), epochs=a.epochs, max_steps=a.max_steps,
                              batch_size=32, lr=a.lr, max_length=a.max_length, stride=stride, seed=seed, crf=True, repair_bio=True,
                              quiet=True))
            seconds = time.perf_counter() - t
            model, tok = load_finetuned(out)
            runs = {"train_seconds": round(seconds, 1)}
            if name == "cut":
                runs["test"] = score(model, tok, data["test"], None, "edge", split_at)
                runs["test, read as windows"] = score(model, tok, data["test"], a.stride, "edge", split_at)
            else:
                for merge in ("edge", "mean"):
                    runs[f"dev, {merge}"] = score(model, tok, data["dev"], a.stride, merge, split_at)
                    runs[f"test, {merge}"] = score(model, tok, data["test"], a.stride, merge, split_at)
            rows[name] = runs
            print(f"seed {seed}", name, json.dumps(runs), file=sys.stderr)
    return rows


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), [])
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return f"{cpu} ({', '.join(wanted)}), {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end"


def mean_spread(xs: list[float]) -> str:
    return f"{100 * statistics.mean(xs):.2f} ± {100 * (statistics.stdev(xs) if len(xs) > 1 else 0):.2f}"


def write(a, rows: dict, split_at: int) -> None:
    out = Path(a.out)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(a), "rows": rows}, indent=2) + "\n")
    command = " ".join(["python benchmarks/windows_ner.py", *map(shlex.quote, sys.argv[1:])])
    lines = ["# NER on long sentences: cut at the maximum length, or read as sliding windows", "",
             f"Command: `{command}`", "", f"Machine: {machine()}.", "",
             f"Model: `{a.model}` from random init, fine-tuned on peoples-daily-ner (CRF, BIO repaired) for "
             f"{a.max_steps or a.epochs} {'steps' if a.max_steps else 'epoch(s)'}, lr {a.lr}, batch 32, seeds "
             f"{', '.join(map(str, a.seeds))} (mean ± standard deviation), --max-length {a.max_length}; windows share --stride "
             f"{a.stride} tokens. Scored on whole sentences as seqeval does; recall split by whether an entity starts before "
             f"character {split_at} (what a cut model reads) or after (the count of such entities in brackets).", "",
             "| run | scored on | F1 | precision | recall | recall, entities before | recall, entities after | train time |",
             "|---|---|---|---|---|---|---|---|"]
    for name, runs in rows.items():
        for key, scores in runs.items():
            if key == "train_seconds":
                continue
            before = [s["by_position"]["before"] for s in scores]
            after = [s["by_position"]["after"] for s in scores]
            lines.append(f"| {name} | {key} | {mean_spread([s['f1'] for s in scores])} | {mean_spread([s['precision'] for s in scores])} | "
                         f"{mean_spread([s['recall'] for s in scores])} | {mean_spread([b['recall'] for b in before])} ({before[0]['entities']}) | "
                         f"{mean_spread([f['recall'] for f in after])} ({after[0]['entities']}) | "
                         f"{statistics.mean(runs['train_seconds']) / 60:.1f} min |")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
