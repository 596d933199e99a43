"""Which distillation settings let a half-depth student keep most of its teacher: the same teacher, the
same student size, one setting changed per variant, each fine-tuned once (students vary little by seed).

    .venv/bin/python benchmarks/distill_ablation.py --teacher WORK/ft/ner-wwm-s1 --task ner \\
        --out docs/results/distill-ablation.md                                   # ~4 min per variant here
    .venv/bin/python benchmarks/distill_ablation.py --teacher DIR --task classify --variants A B --out /tmp/x.md

--teacher is a fine-tuned model directory (or a training run's --out), e.g. the seed-1 teacher of
benchmarks/pretrain_report.py. The student is the teacher's config with half its layers. Every variant
trains with the report's fine-tuning settings (batch 32, --epochs, --lr, --max-length, fp32 unless
--bf16) on the task's bundled data and is scored on its test split; the ratio is to the teacher's
test score, measured here with the same code. A variant whose run directory already holds a finished
model is read back, not trained again (delete the directory to rerun it), and a report already at --out
for the same teacher and settings keeps the variants this invocation does not run.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
from pretrain_report import DATA, METRIC, student_config  # noqa: I001  (benchmarks/ is on sys.path when run as a script)

from bertkit.errors import BertkitError
from bertkit.serving.predict import evaluate_command
from bertkit.train import TrainConfig, train

BASE = dict(temperature=2.0, alpha=0.9, hidden_weight=0.0, layer_map=None, init_from_teacher=True, soft_targets="logits")
# name: (what changes from the report's setting A, TrainConfig changes)
VARIANTS = {
    "A": ("the first pretraining reports' setting: T 2, alpha 0.9, softmax(logits), student starts from the teacher's embeddings, "
          "top layer(s), head and CRF", {}),
    "B": ("no soft targets (alpha 0): the teacher-initialised student fine-tuned on the labels alone", dict(alpha=0.0)),
    "C": ("alpha 0.5: half soft targets, half labels", dict(alpha=0.5)),
    "D": ("alpha 1.0: soft targets only", dict(alpha=1.0)),
    "E": ("temperature 1", dict(temperature=1.0)),
    "F": ("+ hidden-state matching (TinyBERT), weight 1", dict(hidden_weight=1.0)),
    "G": ("student starts from the teacher's bottom layer(s) instead of evenly spaced ones ending at the top (DistilBERT)", "bottom"),
    "H": ("random init (no copy from the teacher), same soft targets", dict(init_from_teacher=False)),
    "I": ("soft targets are the CRF's per-word marginals (forward-backward with transitions), not softmax(emissions)",
          dict(soft_targets="crf")),
    "J": ("I with alpha 1.0: CRF marginals only", dict(soft_targets="crf", alpha=1.0)),
    "K": ("I and G: CRF marginals, student starts from the teacher's bottom layer(s)", "bottom+crf"),
    "L": ("C and G: alpha 0.5, student starts from the teacher's bottom layer(s)", "bottom+alpha0.5"),
    "M": ("L with the CRF marginals as soft targets", "bottom+alpha0.5+crf"),
}


def teacher_model_dir(path: Path) -> Path:
    if (path / "model" / "config.json").is_file():
        return path / "model"
    if (path / "config.json").is_file():
        return path
    raise BertkitError(f"{path} is not a fine-tuned model directory (no config.json in it or in its model/).")


def teacher_score(model_dir: Path, task: str, bf16: bool) -> float:
    return evaluate_command(str(model_dir), DATA[task], "test", bf16=bf16)[METRIC[task]]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_variant(name: str, a, teacher: Path, student_cfg: Path, s_layers: int, work: Path) -> dict:
    out = work / f"{a.task}-{name}"
    changes = VARIANTS[name][1]
    if isinstance(changes, str):  # "bottom", optionally with "+alpha0.5" and "+crf"
        changes = (dict(layer_map=",".join(str(i + 1) for i in range(s_layers))) | (dict(soft_targets="crf") if "crf" in changes else {})
                   | (dict(alpha=0.5) if "alpha0.5" in changes else {}))
    settings = BASE | changes
    metrics = out / "metrics.json"
    if metrics.is_file() and (out / "model" / "config.json").is_file():
        log(f"{name}: read back from {out}")
        r = json.loads(metrics.read_text())
        seconds = None
    else:
        cfg = TrainConfig(task=a.task, model=str(student_cfg), data=DATA[a.task], out=str(out), epochs=a.epochs, batch_size=32, lr=a.lr,
                          max_length=a.max_length, bf16=a.bf16, seed=a.seed, crf=a.task == "ner", repair_bio=True, quiet=True,
                          teacher=str(teacher), **settings)
        log(f"{name}: {VARIANTS[name][0]}")
        t = time.perf_counter()
        r = train(cfg)
        seconds = time.perf_counter() - t
    m = METRIC[a.task]
    log(f"  {name}: test {m} {100 * r['test'][m]:.2f}")
    return {"variant": name, "what": VARIANTS[name][0], "settings": settings, "test": r["test"][m], "dev": r["dev"][m],
            "steps": r["steps"], "best_step": r["best_step"], "seconds": seconds, "dir": str(out)}


def render(res: dict) -> str:
    m, t = METRIC[res["task"]], res["teacher_score"]
    L = [f"# Distillation ablation: {res['task']} ({DATA[res['task']]}), a {res['student_layers']}-layer student of a "
         f"{res['teacher_layers']}-layer teacher", "",
         f"Made by `benchmarks/distill_ablation.py` on {res['started']}: "
         + ", then ".join(f"`{c}`" for c in [*res.get("commands", []), res["command"]]), "",
         f"- Teacher: `{res['teacher']}`, test {m} **{100 * t:.2f}** (measured here). Student: the teacher's config with "
         f"{res['student_layers']} of its {res['teacher_layers']} layers.",
         f"- Every variant: {res['epochs']} epoch(s), batch 32, lr {res['lr']}, max length {res['max_length']}, seed {res['seed']}, "
         f"{'bf16' if res['bf16'] else 'fp32'}, the whole train split; best dev checkpoint, scored on test. "
         f"Base settings (variant A): {json.dumps(BASE)}.",
         f"- Machine: {res['environment']}.", "",
         f"| variant | what changes from A | test {m} | % of teacher | dev {m} | minutes |", "|---|---|---:|---:|---:|---:|"]
    for r in res["runs"]:
        mins = f"{r['seconds'] / 60:.1f}" if r["seconds"] else "-"
        L.append(f"| {r['variant']} | {r['what']} | {100 * r['test']:.2f} | {100 * r['test'] / t:.1f}% | {100 * r['dev']:.2f} | {mins} |")
    L += [""] + [f"- {x}" for x in res.get("remarks", [])]
    return "\n".join(L).rstrip() + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, type=Path)
    p.add_argument("--task", choices=["classify", "ner"], required=True)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--work", type=Path, default=Path("/tmp/distill-ablation"))
    p.add_argument("--out", type=Path, required=True, help="the report (.md; a .json beside it)")
    p.add_argument("--remark", action="append", default=[], help="a line added under the table")
    a = p.parse_args(argv)
    try:
        teacher = teacher_model_dir(a.teacher)
        a.work.mkdir(parents=True, exist_ok=True)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        student_cfg, s_layers, t_layers = student_config(teacher, a.work, a.task)
        log(f"teacher {teacher}: scoring on test")
        res = {"task": a.task, "teacher": str(teacher), "teacher_score": teacher_score(teacher, a.task, a.bf16),
               "teacher_layers": t_layers, "student_layers": s_layers, "epochs": a.epochs, "lr": a.lr,
               "max_length": a.max_length, "seed": a.seed, "bf16": a.bf16, "started": time.strftime("%Y-%m-%d %H:%M %Z"),
               "command": "python benchmarks/distill_ablation.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
               "environment": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
               "runs": [], "remarks": a.remark}
        log(f"teacher test {METRIC[a.task]} {100 * res['teacher_score']:.2f}")
        old = json.loads(a.out.with_suffix(".json").read_text()) if a.out.with_suffix(".json").is_file() else None
        same = ("task", "teacher", "epochs", "lr", "max_length", "seed", "bf16")
        if old and all(old.get(k) == res[k] for k in same):
            res["runs"] = [r for r in old["runs"] if r["variant"] not in a.variants]
            res["commands"] = [*old.get("commands", []), old["command"]]
            res["remarks"] = res["remarks"] or old.get("remarks", [])
        for name in a.variants:
            res["runs"].append(run_variant(name, a, teacher, student_cfg, s_layers, a.work))
            res["runs"].sort(key=lambda r: r["variant"])
            a.out.with_suffix(".json").write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n")
            a.out.write_text(render(res))
    except BertkitError as e:
        sys.exit(f"distill_ablation: {e}")
    log(f"wrote {a.out}")


if __name__ == "__main__":
    main()
