"""Generative NER on peoples-daily-ner: a T5 from scratch and a UniLM RoFormer from scratch write each sentence's
entities as text (`PER:江泽民；LOC:北京`), scored with the token taggers' entity F1 beside a CRF tagger of the same
small size (windows over long sentences), each system a whole `bertkit train` process, one after another.

    .venv/bin/python benchmarks/generative_ner.py --seeds 1 --out docs/results/seq2seq.md
    .venv/bin/python benchmarks/generative_ner.py --seeds 1 --steps 10 --out /tmp/gner.md   # a quick look (minutes)

Every system sees the same training sentences once (--epochs), batch 32, lr 1e-3, no pretraining; the table gives
dev and test entity F1 (mean ± standard deviation over seeds where there are several), precision, recall, and the
training and whole-process times. The generated text is placed in the sentence as data/seq2seq.py describes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import load_average, machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def systems(a) -> dict[str, list[str]]:
    common = ["--data", "peoples-daily-ner", "--batch-size", "32", "--lr", "1e-3", "--quiet"]
    steps = ["--max-steps", str(a.steps)] if a.steps else ["--epochs", str(a.epochs)]
    seq2seq = ["--max-source-length", "256", "--max-target-length", "96", "--eval-limit", "300", *common, *steps]
    return {
        "T5 (t5-tiny-zh), seq2seq": ["train", "seq2seq", "--model", "t5-tiny-zh", *seq2seq],
        "UniLM RoFormer (roformer-tiny-zh), seq2seq": ["train", "seq2seq", "--model", "roformer-tiny-zh", *seq2seq],
        "CRF tagger (roformer-tiny-zh), windows": ["train", "ner", "--model", "roformer-tiny-zh", "--crf", "--repair-bio",
                                                   "--max-length", "128", *common, *steps],
    }


def run(name: str, args: list[str], out: Path, seed: int) -> dict:
    cmd = [sys.executable, "-m", "bertkit.cli", *args, "--out", str(out), "--seed", str(seed)]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=os.environ | {"TOKENIZERS_PARALLELISM": "false"})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name} (seed {seed}) failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    row = {"name": name, "seed": seed, "seconds": seconds, "steps": metrics.get("steps")}
    for split in ("dev", "test"):
        m = metrics[split]
        if "entity_f1" in m:
            row[split] = {"f1": m["entity_f1"], "precision": m["entity_precision"], "recall": m["entity_recall"]}
        else:
            row[split] = {k: m[k] for k in ("f1", "precision", "recall")}
    if "test_samples" in metrics:
        row["samples"] = metrics["test_samples"][:3]
    return row


def mean_sd(values: list[float]) -> str:
    values = [100 * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--steps", type=int, default=0, help="optimizer steps instead of --epochs (a quick look)")
    p.add_argument("--only", nargs="*", default=None, help="run only the systems whose name starts with one of these")
    p.add_argument("--work", default="/tmp/generative-ner")
    p.add_argument("--out", default="docs/results/seq2seq.md")
    a = p.parse_args(argv)
    rows = []
    for name, args in systems(a).items():
        if a.only and not any(name.startswith(o) for o in a.only):
            continue
        for seed in a.seeds:
            out = Path(a.work) / f"{name.split()[0].lower()}-s{seed}"
            if out.exists():
                subprocess.run(["rm", "-rf", str(out)], check=True)
            rows.append(run(name, args, out, seed))
            print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    Path(a.out).with_suffix(".json").write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    how = f"--steps {a.steps}" if a.steps else f"--epochs {a.epochs}"
    lines = ["# Generative NER: T5 and a UniLM encoder from scratch beside the CRF tagger", "",
             f"Command: `python benchmarks/generative_ner.py --seeds {' '.join(map(str, a.seeds))} {how} --out {a.out}`", "",
             f"Machine: {machine()}, {os.cpu_count()} CPUs, load average {load_average():.1f} at the end.", "",
             "Data: peoples-daily-ner (15,565 train, 1,935 dev, 1,984 test sentences). No pretraining: each model starts random "
             "with a vocabulary trained on the training text. Seq2seq targets are the entities as text "
             "(`PER:江泽民；LOC:北京`), decoded greedily, sources up to 256 tokens; the tagger reads 128-token windows "
             "sharing 32. All scored by the same entity F1 (type, start and end must match; generated entities are "
             "placed at their first unused occurrence in the sentence).", "",
             "| system | seeds | dev F1 | test F1 | test precision | test recall | steps | process time |", "|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["name"] for r in rows):
        mine = [r for r in rows if r["name"] == name]
        lines.append(f"| {name} | {len(mine)} | {mean_sd([r['dev']['f1'] for r in mine])} | {mean_sd([r['test']['f1'] for r in mine])} | "
                     f"{mean_sd([r['test']['precision'] for r in mine])} | {mean_sd([r['test']['recall'] for r in mine])} | "
                     f"{mine[0]['steps']} | {statistics.mean(r['seconds'] for r in mine) / 60:.1f} min |")
    samples = next((r["samples"] for r in rows if "samples" in r), [])
    if samples:
        lines += ["", "A few test sentences with their targets and what the first seq2seq model wrote:", ""]
        lines += [f"- `{s['source'][:60]}` -> target `{s['target']}`, generated `{s['generated']}`" for s in samples]
    lines.append("")
    Path(a.out).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
