"""Is ELECTRA's weak discriminator a bug or the budget? And does masking more words help whole-word MLM?
Short pretraining runs of roformer-tiny-zh on the same data, side by side, each probed and fine-tuned once.

    .venv/bin/python benchmarks/electra_ablation.py --vocab DIR --corpus DIR            # ~6 min per variant on 2 cores
    .venv/bin/python benchmarks/electra_ablation.py --vocab DIR --corpus DIR --variants E1 E3 --steps 300

--vocab and --corpus are a vocabulary and a corpus prepared with word starts, e.g. the work/vocab and work/corpus of
benchmarks/pretrain_report.py. A variant whose run directory already holds a finished model is probed, not trained again.

Every variant pretrains benchmarks/configs/roformer-tiny-zh.json for --steps steps (batch 64 x 128 tokens, fp32, linear
decay). ELECTRA variants are probed on the first 256 reviews-zh dev texts (never in zh-corpus, 15% masked, seed 0,
benchmarks/electra_probe.py): how well the discriminator finds (a) its own generator's replacements and (b) uniformly
random ones, an easy task that any discriminator reading its context learns (if it cannot, training is broken).
Every variant is then fine-tuned once on reviews-zh (--finetune-epochs, seed 1, lr 5e-4, best dev epoch kept) and its
test accuracy reported: at a few hundred steps the differences are indicative, one seed's spread is about ±0.4.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from electra_probe import probe as electra_probe  # noqa: E402
from recipe_ablation import machine  # noqa: E402

from bertkit.errors import BertkitError  # noqa: E402
from bertkit.train import TrainConfig, train  # noqa: E402
from bertkit.train.pretrain import PretrainConfig, pretrain  # noqa: E402

MODEL = "benchmarks/configs/roformer-tiny-zh.json"
# name: (what it is, PretrainConfig fields); lr and warm-up default to the report's (1e-3, 6%)
VARIANTS = {
    "M": ("whole-word-masked MLM, 15% of words (the report's winning objective)", dict(objective="mlm", wwm=True)),
    "M40": ("M with 40% of words masked (Wettig et al. 2023 found 40% better than 15% for BERT-large)",
            dict(objective="mlm", wwm=True, mask_rate=0.40)),
    "E1": ("ELECTRA as the 60-minute reports ran it: generator 1/2 the width (64, 1 head), discriminator weight 50",
           dict(objective="electra")),
    "E3": ("E1 with ELECTRA-Small's generator: 1/4 of the width and FFN (32 wide, one head; the paper's is 64 of 256)",
           dict(objective="electra", generator_fraction=0.25)),
    "E4": ("E3 with ELECTRA-Small's optimisation scaled to the run: lr 5e-4, warm-up 1% of steps (10k of its 1M)",
           dict(objective="electra", generator_fraction=0.25, lr=5e-4, warmup=0.01)),
}


def pretrain_variant(name: str, a, work: Path) -> tuple[Path, float | None]:
    out = work / name
    if (out / "model").is_dir() and (out / "log.jsonl").is_file():
        return out, None
    shutil.rmtree(out, ignore_errors=True)
    fields = dict(lr=a.lr, warmup=0.06) | VARIANTS[name][1]
    t = time.perf_counter()
    pretrain(PretrainConfig(model=MODEL, tokenizer=a.vocab, corpus=a.corpus, batch_size=64, max_length=128, max_steps=a.steps,
                            out=str(out), quiet=True, save_every=10**9, **fields))
    seconds = time.perf_counter() - t
    print(f"[{name}] {a.steps} steps in {seconds / 60:.1f} min", flush=True)
    return out, seconds


def final(out: Path) -> dict:
    """The training log's last 10% of steps, averaged."""
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line]
    tail = rows[-max(len(rows) // 10, 1):]
    keys = [k for k in ("mlm_loss", "loss", "mlm_acc", "disc_loss", "disc_acc") if k in rows[0]]
    return {k: statistics.mean(r[k] for r in tail) for k in keys}


def finetune(name: str, out: Path, a, work: Path) -> dict:
    done = work / f"ft-{name}.json"
    if done.is_file():
        return json.loads(done.read_text())
    t = time.perf_counter()
    r = train(TrainConfig(task="classify", model=str(out / "model"), data="reviews-zh", out=str(work / f"ft-{name}"),
                          epochs=a.finetune_epochs, batch_size=32, lr=5e-4, max_length=128, seed=1, quiet=True))
    res = {"test": r["test"]["accuracy"], "dev": r["dev"]["accuracy"], "seconds": time.perf_counter() - t}
    done.write_text(json.dumps(res))
    return res


def main() -> None:
    try:
        run_all()
    except BertkitError as e:  # a missing or wrong --vocab / --corpus: one sentence, exit 1
        raise SystemExit(f"error: {e}") from None


def run_all() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vocab", required=True)
    p.add_argument("--corpus", required=True, help="a corpus directory prepared with word starts")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=1e-3, help="pretraining lr of the variants that do not set their own")
    p.add_argument("--finetune-epochs", type=int, default=1, help="reviews-zh fine-tuning epochs per variant (0: none)")
    p.add_argument("--work", default="/tmp/bertkit-electra-ablation")
    p.add_argument("--out", default="docs/results/electra-ablation.md")
    a = p.parse_args()
    if a.steps < 20:
        p.error(f"--steps {a.steps}: give at least 20 (the log averages its last 10%).")
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    saved = Path(a.out).with_suffix(".json")
    old = json.loads(saved.read_text()).get("results", {}) if saved.is_file() else {}
    results = {}
    for name in a.variants:
        out, seconds = pretrain_variant(name, a, work)
        r = {"final": final(out), "pretrain_seconds": seconds if seconds is not None else old.get(name, {}).get("pretrain_seconds")}
        if VARIANTS[name][1]["objective"] == "electra":
            r["probe_generator"] = electra_probe(out)
            r["probe_uniform"] = electra_probe(out, uniform=True)
        if a.finetune_epochs:
            r["reviews"] = finetune(name, out, a, work)
        results[name] = r
        print(f"[{name}] {json.dumps(r)}", flush=True)
    render(a, results)


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def render(a, results: dict) -> None:
    L = ["# ELECTRA at this budget, and the masking rate", "",
         f"Command: `python {shlex.join(sys.argv)}`", "",
         f"Machine: {machine()}. Every variant pretrains `{MODEL}` (2 layers x 128) for {a.steps} steps, batch 64 x 128 tokens, "
         f"lr {a.lr} unless the variant sets its own, linear decay to 0, fp32, on zh-corpus with the same vocabulary, run one after "
         "another in one process. Probes: the first 256 reviews-zh dev texts, 15% of tokens masked (seed 0); `replaced` is the "
         "share of tokens that changed (a generator that guesses right leaves its token unchanged, not replaced); precision and "
         "recall are those of the discriminator's 'replaced'. "
         + (f"Fine-tuning: reviews-zh, {a.finetune_epochs} epoch(s), seed 1, lr 5e-4, the best dev epoch kept; one seed's "
            "spread is about ±0.4 points." if a.finetune_epochs else ""), "",
         "| variant | what | pretraining (min) | final training loss (last 10% of steps) | generator's replacements: replaced / precision / recall | uniform replacements: precision / recall | reviews-zh test (dev) |",
         "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        f = r["final"]
        loss = (f"MLM {f['mlm_loss']:.2f} (masked acc {pct(f['mlm_acc'])}), disc {f['disc_loss']:.3f} (acc {pct(f['disc_acc'])})"
                if "disc_loss" in f else f"{f.get('mlm_loss', f['loss']):.2f} (masked acc {pct(f['mlm_acc'])})")
        g, u = r.get("probe_generator"), r.get("probe_uniform")
        gen = f"{pct(g['replaced'])} / {pct(g['precision'])} / {pct(g['recall'])}" if g else "-"
        uni = f"{pct(u['precision'])} / {pct(u['recall'])}" if u else "-"
        ft = f"{100 * r['reviews']['test']:.2f} ({100 * r['reviews']['dev']:.2f})" if "reviews" in r else "-"
        mins = f"{r['pretrain_seconds'] / 60:.1f}" if r.get("pretrain_seconds") else "?"
        L.append(f"| {name} | {VARIANTS[name][0]} | {mins} | {loss} | {gen} | {uni} | {ft} |")
    L += ["", REMARKS_HEADING, "", "(written by hand after the run)", ""]
    out = Path(a.out)
    if out.is_file() and REMARKS_HEADING in out.read_text(encoding="utf-8"):  # keep the hand-written reading
        L = L[:-4] + [REMARKS_HEADING + out.read_text(encoding="utf-8").split(REMARKS_HEADING, 1)[1].rstrip("\n"), ""]
    out.write_text("\n".join(L), encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps({"args": vars(a), "machine": machine(), "results": results}, indent=1))
    print("\n".join(L))


REMARKS_HEADING = "## Reading"

if __name__ == "__main__":
    main()
