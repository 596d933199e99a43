"""Fine-tuning recipes for the NER tagger (and the reviews-zh classifier), one change at a time: more epochs (the best dev
checkpoint kept), a larger learning rate for the CRF's scores than for the encoder (bert4keras: 100-1000), and hashed
token bigrams as an input (what the CRF baseline's character-bigram features know). --model is a config.json (random
init) or a pretrained checkpoint (e.g. one of benchmarks/pretrain_report.py's, with --lr 5e-4).

    .venv/bin/python benchmarks/recipe_ablation.py                     # roformer-tiny-zh from random init, 1 seed
    .venv/bin/python benchmarks/recipe_ablation.py --seeds 1 2 3 --runs base epochs3 epochs3-crf100
    .venv/bin/python benchmarks/recipe_ablation.py --max-steps 30 --out /tmp/r.md     # a smoke run
    .venv/bin/python benchmarks/recipe_ablation.py --task classify --runs base epochs3 epochs5 --out docs/results/recipe-ablation-reviews.md

Every run fine-tunes the same config on peoples-daily-ner with sliding windows (--stride 32 at --max-length 128, the
default), a CRF, the BIO tags repaired, and is scored on dev after every epoch; the best dev checkpoint is scored on test
(whole sentences, as seqeval). `--task classify`: reviews-zh instead (accuracy; the CRF runs do not apply). Writes a
markdown table to --out and the numbers beside it as JSON.
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

from bertkit.train import TrainConfig, train

RUNS = {  # name -> (what changes, TrainConfig fields)
    "base": ("1 epoch (the NER windows report's setting)", dict(epochs=1)),
    "epochs3": ("3 epochs, best dev checkpoint", dict(epochs=3)),
    "epochs3-crf100": ("3 epochs, CRF learning rate x100 (--crf-lr 100)", dict(epochs=3, crf_lr=100.0)),
    "epochs3-crf1000": ("3 epochs, CRF learning rate x1000 (--crf-lr 1000)", dict(epochs=3, crf_lr=1000.0)),
    "epochs5": ("5 epochs, best dev checkpoint", dict(epochs=5)),
    "epochs3-bigrams": ("3 epochs, hashed token bigrams as an input (--bigram-buckets 65536)", dict(epochs=3, bigram_buckets=65536)),
    "epochs5-bigrams": ("5 epochs, hashed token bigrams as an input (--bigram-buckets 65536)", dict(epochs=5, bigram_buckets=65536)),
    "epochs7-bigrams": ("7 epochs, hashed token bigrams as an input (--bigram-buckets 65536)", dict(epochs=7, bigram_buckets=65536)),
    "epochs3-bigrams-mean": ("epochs3-bigrams, the mean of the tokens' states classified instead of [CLS] (--pooling mean)",
                             dict(epochs=3, bigram_buckets=65536, pooling="mean")),
    "epochs3-bigrams-fgm": ("epochs3-bigrams with FGM adversarial training on the word embeddings (--adv fgm)",
                            dict(epochs=3, bigram_buckets=65536, adv="fgm")),
    "epochs3-bigrams-dropout": ("epochs3-bigrams with dropout 0.1 (--dropout 0.1; roformer-tiny-zh has none)",
                                dict(epochs=3, bigram_buckets=65536, dropout=0.1)),
    "epochs3-bigrams-rdrop": ("epochs3-bigrams-dropout with R-Drop, weight 1 (--dropout 0.1 --rdrop 1)",
                              dict(epochs=3, bigram_buckets=65536, dropout=0.1, rdrop=1.0)),
}


REMARKS = "What the table says"  # where hand-written remarks below a table begin (kept by --keep and --render)


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info = f.read()
        name = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        flags = next(line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags"))
        extras = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
        name += f" ({', '.join(extras)})" if extras else ""
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} CPUs"


def mean_sd(xs: list[float]) -> str:
    return f"{100 * statistics.mean(xs):.2f}" + (f" ± {100 * statistics.stdev(xs):.2f}" if len(xs) > 1 else "")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", choices=["ner", "classify"], default="ner", help="ner: peoples-daily-ner; classify: reviews-zh")
    p.add_argument("--model", default="benchmarks/configs/roformer-tiny-zh.json")
    p.add_argument("--runs", nargs="+", default=["base", "epochs3", "epochs3-crf100"], choices=list(RUNS))
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--max-steps", type=int, default=None, help="cap every run (a smoke test)")
    p.add_argument("--out", default="docs/results/recipe-ablation.md")
    p.add_argument("--keep", action="store_true", help="keep the rows of --out's JSON for runs and seeds this invocation does not make")
    p.add_argument("--render", action="store_true", help="train nothing: write --out again from its JSON (with the same --task)")
    a = p.parse_args()
    if a.render:
        a.keep, a.runs = True, []
    if a.task == "classify" and any("crf_lr" in RUNS[r][1] for r in a.runs):
        p.error("the CRF runs apply to --task ner only")
    if a.task == "ner" and any("pooling" in RUNS[r][1] for r in a.runs):
        p.error("the pooling runs apply to --task classify only")
    ner = a.task == "ner"
    metric, columns = ("f1", ("precision", "recall")) if ner else ("accuracy", ("macro_f1",))
    data = "peoples-daily-ner" if ner else "reviews-zh"
    command = shlex.join(["python", "benchmarks/recipe_ablation.py", *sys.argv[1:]])
    results: dict[str, list[dict]] = {}
    earlier = json.loads(Path(a.out).with_suffix(".json").read_text(encoding="utf-8")) if a.keep else {}
    mine = dict(model=a.model, lr=a.lr, max_length=a.max_length)
    if a.keep and not a.render and earlier.get("settings", mine) != mine:
        p.error(f"--keep: {Path(a.out).with_suffix('.json')} holds rows trained with {earlier['settings']}; give the same --model, --lr and --max-length or another --out.")
    if a.render:  # the settings the rows were trained with, not this command line's defaults
        a.model, a.lr, a.max_length = (earlier.get("settings", {}).get(k, getattr(a, k)) for k in ("model", "lr", "max_length"))
    commands = [*earlier.get("commands", []), *([] if a.render else [command])]
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.runs:
            for seed in a.seeds:
                what, fields = RUNS[name]
                print(f"{name} seed {seed}: {what}", file=sys.stderr)
                start = time.perf_counter()
                r = train(TrainConfig(task=a.task, model=a.model, data=data, out=f"{tmp}/{name}-{seed}", lr=a.lr,
                                      batch_size=32, max_length=a.max_length, crf=ner, repair_bio=ner, seed=seed,
                                      max_steps=a.max_steps, quiet=True, **fields))
                minutes = (time.perf_counter() - start) / 60
                results.setdefault(name, []).append(dict(seed=seed, dev=r["dev"], test=r["test"], best_step=r.get("best_step"),
                                                         minutes=minutes))
                print(f"  dev {metric} {100 * r['dev'][metric]:.2f}, test {100 * r['test'][metric]:.2f}, {minutes:.1f} min", file=sys.stderr)
    for name, rows in earlier.get("results", {}).items():  # --keep: earlier rows of seeds this invocation did not run
        mine = {r["seed"] for r in results.get(name, [])}
        results[name] = sorted([r for r in rows if r["seed"] not in mine] + results.get(name, []), key=lambda r: r["seed"])
    results = {k: results[k] for k in RUNS if k in results}  # the table in RUNS' order
    load = earlier.get("load", os.getloadavg()[0]) if a.render else os.getloadavg()[0]  # the last training run's
    host = earlier.get("machine", machine()) if a.render else machine()
    how = (f"peoples-daily-ner (CRF, BIO repaired, windows of {a.max_length} tokens with the default stride)" if ner else
           f"reviews-zh (max length {a.max_length}, heads kept)")
    name_of = {"f1": "F1", "accuracy": "accuracy", "precision": "precision", "recall": "recall", "macro_f1": "macro-F1"}
    lines = [
        f"# {'NER' if ner else 'reviews-zh'} fine-tuning recipes, one change at a time", "",
        "Commands (in order; a later one with --keep added its rows): " + ", ".join(f"`{c}`" for c in commands), "",
        f"Machine: {host}, " + (f"load average {load:.1f} at the end." if load is not None else
                                     "load average at the end not recorded (2 threads of one run at a time, nothing beside it)."), "",
        f"Model: `{a.model}` " + ("from random init" if a.model.endswith(".json") else "(a checkpoint)") + f", fine-tuned on {how}, lr {a.lr:g}, batch 32, linear schedule with 10% warm-up; "
        "dev scored after every epoch, the best dev checkpoint scored on test; each row's seeds in its best-step column's order "
        "(mean ± standard deviation over them).", "",
        f"| run | what changes | dev {name_of[metric]} | test {name_of[metric]} | "
        + " | ".join(f"test {name_of[c]}" for c in columns) + " | best step | train time |",
        "|---|---|---|---|" + "---|" * len(columns) + "---|---|",
    ]
    def pick(rows: list[dict], split: str, k: str) -> list[float]:
        return [r[split][k] for r in rows]

    for name, rows in results.items():
        steps = ", ".join(f"{r['best_step']} (s{r['seed']})" for r in rows)
        extra = " | ".join(mean_sd(pick(rows, "test", c)) for c in columns)
        lines.append(f"| {name} | {RUNS[name][0]} | {mean_sd(pick(rows, 'dev', metric))} | {mean_sd(pick(rows, 'test', metric))} | "
                     f"{extra} | {steps} | {statistics.mean(r['minutes'] for r in rows):.1f} min |")
    old = Path(a.out).read_text(encoding="utf-8") if Path(a.out).is_file() and a.keep else ""
    remarks = old[old.index(REMARKS):] if REMARKS in old else ""  # hand-written remarks below the table survive a re-render
    Path(a.out).write_text("\n".join(lines) + "\n" + ("\n" + remarks if remarks else ""), encoding="utf-8")
    Path(a.out).with_suffix(".json").write_text(json.dumps(dict(commands=commands, machine=host, load=load, settings=dict(model=a.model, lr=a.lr, max_length=a.max_length), results=results),
                                                           indent=2) + "\n", encoding="utf-8")
    print(f"wrote {a.out} and {Path(a.out).with_suffix('.json')}", file=sys.stderr)


if __name__ == "__main__":
    main()
