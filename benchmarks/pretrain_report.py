"""The pretraining report: a small Chinese model pretrained on zh-corpus under a wall-clock budget per
objective (MLM, MLM with whole-word masking, ELECTRA), then fine-tuned on reviews-zh and
peoples-daily-ner over several seeds beside random init, a distilled smaller student and the TF-IDF
baseline.

    .venv/bin/python benchmarks/pretrain_report.py                 # the full protocol (hours on 2 cores)
    .venv/bin/python benchmarks/pretrain_report.py --model bert-tiny --minutes 6 --epochs 1 \\
        --ner-seeds 1 --ner-train-limit 4000 --student-seeds 1 --distill-tasks classify   # a reduced run

Full protocol (the defaults): roformer-tiny-zh (bert-tiny's size with rotary positions, init std 0.05, no
dropout: docs/results/pretrain-ablation.md says why), bf16 where the hardware makes it fast, an 8000-token WordPiece vocabulary built on zh-corpus (shared
by every row, random init included), 60 minutes of pretraining per objective, fine-tuning 3 epochs
(NER: 5) at max length 128 (NER: sliding windows) with a 65536-row token-bigram table added and FGM adversarial training,
seeds 1 2 3 on both tasks, the student (half the teacher's layers, initialised
from the teacher) distilled on both tasks from the best pretrained model's seed-1 fine-tuned model.

Every finished step (vocabulary, corpus, each pretraining, each fine-tuning run) is recorded in the
JSON beside --out as soon as it ends, and the markdown is rewritten from it, so an interrupted run
still leaves numbers; run the same command again with --resume to continue where it stopped.
Work files (checkpoints) go to --work.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_report import tfidf_baseline  # noqa: E402  (the same baseline as docs/results/finetune.md)

from bertkit.config import BertConfig
from bertkit.data.corpus import Corpus, build_vocab, prepare
from bertkit.data.datasets import load_dataset, write_task_file
from bertkit.serving.load import bf16_is_fast
from bertkit.tokenizer import Tokenizer
from bertkit.train import TrainConfig, train
from bertkit.train.pretrain import PretrainConfig, pretrain

DATA = {"classify": "reviews-zh", "ner": "peoples-daily-ner"}
METRIC = {"classify": "accuracy", "ner": "f1"}
PRETRAINED = ("mlm", "wwm", "electra")
ROWS = ("random",) + PRETRAINED
CRF_BASELINE = 0.943  # peoples-daily-ner test entity F1 of a linear-chain CRF on character windows (../shared/FIELD-NOTES.md)
NAMES = {"random": "random init (no pretraining)", "mlm": "MLM", "wwm": "MLM + whole-word masking", "electra": "ELECTRA (discriminator)"}


# ---- the results file: every finished step is written at once -------------------------------------


class Results:
    def __init__(self, path: Path, args: argparse.Namespace, resume: bool):
        self.path = path
        if resume and path.exists():
            self.data = json.loads(path.read_text(encoding="utf-8"))
            old = {k: self.data["args"].get(k, PROTOCOL_DEFAULTS.get(k)) for k in PROTOCOL_KEYS}
            new = {k: getattr(args, k) for k in PROTOCOL_KEYS}
            if old != new:
                diff = [k for k in new if old.get(k) != new[k]]
                raise SystemExit(f"--resume: {path} was made with other settings ({', '.join(diff)}); use them or drop --resume.")
            for key, r in self.data["runs"].items():  # runs recorded before settings were stored: the args they ran with
                r.setdefault("settings", run_settings(self.data["args"], r["task"], student="/student/" in key))
            self.data["args"] = vars(args) | {"resumed": True}
        else:
            self.data = {"args": vars(args), "environment": environment(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                         "steps": {}, "pretrain": {}, "runs": {}}
        self.data.setdefault("commands", []).append(command_line())
        self.data.setdefault("invocations", []).append({"command": command_line(), "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "git": git_state()})

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
        os.replace(tmp, self.path)


# Settings a resumed run must share (the pretrained models depend on them). Fine-tuning settings may change on
# --resume: a finished run made with other settings (or, for a student, another teacher) is then moved to
# "superseded_runs" and run again.
PROTOCOL_KEYS = ("model", "vocab_size", "minutes", "budget", "pretrain_lr", "pretrain_batch", "pretrain_max_length", "warmup", "bf16",
                 "pretrain_bigram_buckets")
PROTOCOL_DEFAULTS = {"pretrain_bigram_buckets": 0}  # what runs made before these options existed used
FINETUNE_KEYS = ("epochs", "lr", "max_length", "bigram_buckets", "pooling", "adv")
FINETUNE_DEFAULTS = {"bigram_buckets": 0, "windows": False, "pooling": "cls", "adv": None, "adv_tasks": ["classify"]}  # what runs made before these options existed used
DISTILL_KEYS = ("temperature", "alpha", "student_init", "soft_targets")  # students only
DISTILL_DEFAULTS = {"student_init": "spread", "soft_targets": "logits"}  # what runs made before these options existed used


def run_settings(args: dict, task: str, student: bool = False) -> dict:
    s = {k: args.get(k, FINETUNE_DEFAULTS.get(k)) for k in FINETUNE_KEYS} | {"train_limit": args["train_limit" if task == "classify" else "ner_train_limit"]}
    if task == "ner":
        s["epochs"] = args.get("ner_epochs") or args["epochs"]
        s["pooling"] = "cls"  # a tagger pools nothing
        s["windows"] = True  # the library reads long sentences as windows (runs recorded before it did were cut at max length)
    if task not in (args.get("adv_tasks") or FINETUNE_DEFAULTS["adv_tasks"]) or student:
        s["adv"] = None  # adversarial training where asked, never for a student (its loss is the teacher's)
    if student:
        s |= {k: args.get(k, DISTILL_DEFAULTS.get(k)) for k in DISTILL_KEYS}
        if task != "ner":
            s["soft_targets"] = "logits"  # CRF marginals are for a CRF tagger
    return s


def same_settings(old: dict, new: dict) -> bool:
    """Keys a run recorded that no longer matter (a teacher's temperature) are ignored; missing ones take their old default."""
    return all(old.get(k, (DISTILL_DEFAULTS | FINETUNE_DEFAULTS).get(k)) == v for k, v in new.items())


def environment() -> dict:
    from recipe_ablation import machine

    return {"cpu": machine(), "torch": torch.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "machine": platform.machine()}


def git_state() -> str | None:
    """The library's commit, and whether the working tree differed from it (the code that ran)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "bertkit"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + (" with uncommitted changes under bertkit/" if dirty else "")


def command_line() -> str:
    return "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- steps -------------------------------------------------------------------------------------


def shared_vocab_and_corpus(a, res: Results, work: Path) -> tuple[Path, Path]:
    vocab, corpus = work / "vocab", work / "corpus"
    if "vocab" not in res.data["steps"] or not vocab.is_dir():
        shutil.rmtree(vocab, ignore_errors=True)
        t = time.perf_counter()
        tok = build_vocab("zh-corpus", a.vocab_size, vocab)
        res.data["steps"]["vocab"] = {"seconds": time.perf_counter() - t, "vocab_size": tok.vocab_size}
        res.save()
    if "corpus" not in res.data["steps"] or not (corpus / "meta.json").is_file():
        shutil.rmtree(corpus, ignore_errors=True)
        t = time.perf_counter()
        prepare("zh-corpus", Tokenizer.from_pretrained(vocab), corpus, wwm=True)
        c = Corpus(corpus)
        res.data["steps"]["corpus"] = {"seconds": time.perf_counter() - t, "tokens": c.tokens, "shards": len(c.shards)}
        res.save()
    return vocab, corpus


def step_seconds(log_path: Path, skip: int = 3) -> float:
    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line]
    times = [r["tokens"] / r["tokens_per_s"] for r in rows if "tokens_per_s" in r][skip:]
    return statistics.median(times)


def run_pretraining(obj: str, a, res: Results, work: Path, vocab: Path, corpus: Path) -> None:
    if obj in res.data["pretrain"] and (work / f"pre-{obj}" / "model").is_dir():
        return
    objective, wwm = ("electra", False) if obj == "electra" else ("mlm", obj == "wwm")
    base = dict(model=a.model, tokenizer=str(vocab), corpus=str(corpus), objective=objective, wwm=wwm, batch_size=a.pretrain_batch,
                max_length=a.pretrain_max_length, lr=a.pretrain_lr, warmup=a.warmup, bf16=a.bf16, quiet=True, save_every=500,
                bigram_buckets=a.pretrain_bigram_buckets)
    info: dict = {"objective": objective, "wwm": wwm}
    if a.budget == "calibrate":  # measure the step time over a short run, then fix the number of steps
        cal = work / f"cal-{obj}"
        shutil.rmtree(cal, ignore_errors=True)
        t = time.perf_counter()
        pretrain(PretrainConfig(**base, max_steps=a.calibration_steps, out=str(cal)))
        info["calibration_seconds"] = time.perf_counter() - t
        info["calibrated_step_seconds"] = step_seconds(cal / "log.jsonl")
        shutil.rmtree(cal, ignore_errors=True)
        budget = dict(max_steps=max(int(a.minutes * 60 / info["calibrated_step_seconds"]), 1))
    else:  # the library's own --minutes (it times one cold step)
        budget = dict(minutes=a.minutes)
    out = work / f"pre-{obj}"
    shutil.rmtree(out, ignore_errors=True)
    log(f"pretraining {obj}: {budget}")
    t = time.perf_counter()
    r = pretrain(PretrainConfig(**base, **budget, out=str(out)))
    info |= {"seconds": time.perf_counter() - t, "budget": budget, **r}
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line]
    keys = [k for k in ("loss", "mlm_acc", "mlm_loss", "disc_loss", "disc_acc") if k in rows[0]]
    n = len(rows)
    window = max(n // 20, 1)
    info["curve"] = [{"step": rows[min(i + window, n) - 1]["step"], **{k: statistics.mean(r[k] for r in rows[i:i + window]) for k in keys}}
                     for i in range(0, n, max(n // 10, 1))]
    info["final"] = {k: statistics.mean(r[k] for r in rows[-window:]) for k in keys}
    info["train_seconds_logged"] = sum(r["tokens"] / r["tokens_per_s"] for r in rows)
    res.data["pretrain"][obj] = info
    res.save()
    log(f"pretraining {obj}: {r['steps']} steps in {info['seconds'] / 60:.1f} min, final {info['final']}")


def train_file(task: str, limit: int | None, work: Path) -> str | None:
    """The first `limit` training examples of a fixed shuffle (seed 0), written once."""
    if not limit:
        return None
    path = work / "subsets" / f"{DATA[task]}-{limit}.jsonl"
    if not path.is_file():
        ex = list(load_dataset(DATA[task])["train"])
        random.Random(0).shuffle(ex)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_task_file(path, task, ex[:limit])
    return str(path)


def supersede(res: Results, key: str) -> None:
    """Move run `key` out of the table into the JSON's superseded runs (kept, not reported)."""
    res.data.setdefault("superseded_runs", {})[f"{key}@{len(res.data.get('superseded_runs', {}))}"] = res.data["runs"].pop(key)
    res.save()


def finetune(key: str, task: str, model: str, seed: int, a, res: Results, work: Path, vocab: Path, **extra) -> dict | None:
    settings = run_settings(vars(a), task, student="teacher" in extra)
    if key in res.data["runs"]:
        same_teacher = res.data["runs"][key].get("distill", {}).get("teacher") == extra.get("teacher")
        if same_settings(res.data["runs"][key].get("settings", settings), settings) and same_teacher:
            return res.data["runs"][key]
        supersede(res, key)
    out = work / "ft" / key.replace("/", "-")
    shutil.rmtree(out, ignore_errors=True)  # an unfinished run starts afresh
    limit = a.train_limit if task == "classify" else a.ner_train_limit
    random_init = not Path(model).is_dir()
    cfg = TrainConfig(task=task, model=model, data=DATA[task], train=train_file(task, limit, work), out=str(out),
                      epochs=a.ner_epochs if task == "ner" else a.epochs,
                      batch_size=32, lr=a.lr, max_length=a.max_length, bf16=a.bf16, seed=seed, crf=task == "ner", repair_bio=True,
                      tokenizer=str(vocab) if random_init and "teacher" not in extra else None, quiet=True,
                      pooling=a.pooling if task == "classify" else "cls", adv=settings["adv"],
                      bigram_buckets=0 if "teacher" in extra else a.bigram_buckets or a.pretrain_bigram_buckets, **extra)  # a student: its teacher's
    log(f"fine-tuning {key}")
    t = time.perf_counter()
    r = train(cfg)
    m = METRIC[task]
    run = {"task": task, "data": DATA[task], "model": model, "seed": seed, "seconds": time.perf_counter() - t, "steps": r["steps"],
           "best_step": r["best_step"], "test": r["test"][m], "dev": r["dev"][m], "train_examples": limit or len(load_dataset(DATA[task])["train"]),
           "test_metrics": {k: v for k, v in r["test"].items() if not isinstance(v, dict)}, "dir": str(out), "settings": settings}
    if extra:
        run["distill"] = {k: v for k, v in extra.items()}
    res.data["runs"][key] = run
    res.save()
    log(f"  {key}: test {m} {100 * run['test']:.2f} ({run['seconds'] / 60:.1f} min)")
    return run


def student_config(teacher_dir: Path, work: Path, task: str) -> tuple[str, int, int]:
    t = BertConfig.from_json_file(teacher_dir / "config.json")
    layers = max(t.num_hidden_layers // 2, 1)
    path = work / f"student-{task}.json"
    dataclasses.replace(t, num_hidden_layers=layers, extra={}).save(path)
    return str(path), layers, t.num_hidden_layers


# ---- the report ---------------------------------------------------------------------------------


def scores(res: dict, task: str, row: str) -> list[tuple[int, float]]:
    return sorted((r["seed"], r["test"]) for k, r in res["runs"].items() if k.startswith(f"{task}/{row}/"))


def fmt(xs: list[float]) -> str:
    if not xs:
        return "not run"
    sd = f"{100 * statistics.stdev(xs):.2f}" if len(xs) > 1 else "n/a"
    return f"{100 * statistics.mean(xs):.2f} ± {sd} (n={len(xs)})"


def per_seed(pairs) -> str:
    return ", ".join(f"s{s}: {100 * v:.2f}" for s, v in pairs) or "-"


def best_pretrained(res: dict, task: str) -> str | None:
    done = {o: [v for _, v in scores(res, task, o)] for o in PRETRAINED}
    done = {o: v for o, v in done.items() if v}
    return max(done, key=lambda o: statistics.mean(done[o])) if done else None


def windowed(res: dict) -> bool:
    """Whether the NER runs read long sentences as windows (every one recorded so)."""
    runs = [r for r in res["runs"].values() if r["task"] == "ner"]
    return bool(runs) and all(r.get("settings", {}).get("windows") for r in runs)


def render(res: dict, parser: argparse.ArgumentParser, out: Path, finished: bool) -> None:
    a = argparse.Namespace(**(DISTILL_DEFAULTS | FINETUNE_DEFAULTS | PROTOCOL_DEFAULTS | res["args"]))
    a.ner_epochs = getattr(a, "ner_epochs", None) or a.epochs  # runs recorded before --ner-epochs existed
    env = res["environment"]
    L = ["# Pretraining a small Chinese model on 2 CPU cores: does it pay?", ""]
    if not finished:
        L += ["**Partial results: the run had not finished when this was written.**", ""]
    L += [f"Command: `{res['commands'][-1]}`" + (f" (earlier invocations of the same run: {', '.join('`' + c + '`' for c in res['commands'][:-1])})" if len(res["commands"]) > 1 else ""),
          "",
          f"Machine: {env.get('cpu') or str(env['cpu_count']) + ' CPU cores'} (shared with other work while this ran), torch {env['torch']}, "
          f"{env['torch_threads']} torch threads, Python {env['python']}. Started {res['started']}"
          + (f", finished {res.get('finished')}" if res.get("finished") else "") + ".", ""]
    if res.get("seeded_from"):  # a run that fine-tuned a kept checkpoint: its pretraining was measured by another run
        L += [f"Pretrained model and its pretraining figures: from {res['seeded_from']}; this run pretrained nothing.", ""]

    L += ["## Setup", "",
          f"- Model: `{a.model}` for every row; vocabulary: one {res['steps'].get('vocab', {}).get('vocab_size', '?')}-token WordPiece "
          f"(`--vocab-size {a.vocab_size}`) built on zh-corpus and used by every row, random init included.",
          f"- Pretraining corpus: zh-corpus ({res['steps'].get('corpus', {}).get('tokens', 0):,} tokens; People's Daily 1998-01 without "
          "peoples-daily-ner's dev/test sentences, and the reviews-zh train split only), prepared once with word starts (jieba) and "
          "reused by all objectives.",
          f"- Pretraining: batch {a.pretrain_batch} sequences of {a.pretrain_max_length} tokens, lr {a.pretrain_lr}, warm-up {a.warmup}, "
          f"linear decay, {'bf16 autocast' if a.bf16 else 'fp32'}"
          + (f", a hashed token-bigram table of {a.pretrain_bigram_buckets} rows in the embeddings" if getattr(a, "pretrain_bigram_buckets", 0) else "")
          + f"; budget {a.minutes:g} minutes per objective, "
          + ("turned into a step count from the median step time of a "
             f"{a.calibration_steps}-step calibration run (the library's `--minutes` times one cold step and so stops early)."
             if a.budget == "calibrate" else "through the library's `--minutes`."),
          "  ELECTRA: generator of half the width, discriminator weight 50; the discriminator is fine-tuned.",
          f"- Fine-tuning: {a.epochs} epoch(s)" + (f" (NER: {a.ner_epochs})" if a.ner_epochs != a.epochs else "") + f", batch 32, lr {a.lr}, warm-up 10%, max length {a.max_length}, "
          f"{'bf16 autocast' if a.bf16 else 'fp32'}; NER with the CRF head"
          + (", long sentences read as windows (the library's default stride)" if windowed(res) else "")
          + ((", the pretrained bigram table kept" if getattr(a, "pretrain_bigram_buckets", 0) else
              f", a hashed token-bigram table of {a.bigram_buckets} rows added to the embeddings (zeros at the start)")
             if getattr(a, "bigram_buckets", 0) else "")
          + (", reviews classified from the mean of the tokens' states (`--pooling mean`)" if a.pooling == "mean" else "")
          + (f", {a.adv.upper()} adversarial training on the word embeddings for {' and '.join(DATA[t] for t in a.adv_tasks)} (not for students)"
             if a.adv else "")
          + "; best dev checkpoint scored on the test split. "
          f"reviews-zh train examples: {a.train_limit or 'all'}; peoples-daily-ner train examples: {a.ner_train_limit or 'all'} "
          "(a subset is the first N of a fixed shuffle, seed 0). Dev and test are always complete.",
          f"- Distillation: student = the teacher's config with half its layers, initialised from the teacher (embeddings, "
          f"{'its bottom layers' if a.student_init == 'bottom' else 'evenly spaced layers ending at the top'}, head and CRF), "
          f"temperature {a.temperature}, alpha {a.alpha}, soft targets: softmax of the logits"
          f"{' (NER: the CRF per-word marginals)' if a.soft_targets == 'crf' else ''}, same fine-tuning settings; teacher = the best pretrained "
          "model's seed-1 fine-tuned model on that task.",
          "- TF-IDF baseline: `tfidf_baseline()` of benchmarks/finetune_report.py (char 1-3-gram + logistic regression, full train split).",]
    notes = res.get("notes", {})
    if windowed(res):
        L += ["- NER windows: sentences longer than the window are read as overlapping windows in training, evaluation and prediction, "
              "so every test entity is seen (docs/results/windows-ner.md); the CRF baseline's 94.3 test F1 is quoted from "
              "../shared/FIELD-NOTES.md (sklearn-crfsuite on character-window features), not measured by this script."]
    elif "ner_entities_within" in notes:
        n = notes["ner_entities_within"]
        L += [f"- At max length {a.max_length}, {n['truncated_sentences']} of {n['sentences']} peoples-daily-ner test sentences are "
              f"truncated (words past the cut are predicted O): only {n['within']} of {n['entities']} test entities "
              f"({100 * n['within'] / n['entities']:.1f}%) are reachable, which caps entity recall for every row, random init included."]
    L += [""]

    defaults = {k: parser.get_default(k) for k in vars(a) if parser.get_default(k) is not None or k in ("bf16", "train_limit", "ner_train_limit", "ner_seeds", "student_seeds", "ner_epochs")}
    changed = [k for k in defaults if k not in ("out", "work", "resume", "render_only") and getattr(a, k, None) != defaults[k]
               and not (k in ("ner_seeds", "student_seeds") and defaults[k] is None and getattr(a, k, None) == a.seeds)
               and not (k == "ner_epochs" and defaults[k] is None and a.ner_epochs == a.epochs)]
    L += ["## Differences from the full protocol (the defaults of this script)", ""]
    if changed:
        L += ["- `--no-random`: the random-init row is not run (see docs/results/recipe-ablation.md for random init)" if k == "random" else
              f"- `--{k.replace('_', '-')}`: {getattr(a, k)} instead of {defaults[k] if defaults[k] is not None else 'the default (' + _default_note(k) + ')'}" for k in changed]
    else:
        L += ["- none: this is the full protocol."]
    L += [""]

    base = res["steps"].get("tfidf", {}).get("accuracy")
    L += ["## Results (test split; mean ± sample standard deviation over fine-tuning seeds)", "",
          "| row | pretraining | reviews-zh accuracy (%) | per seed | peoples-daily-ner entity F1 (%) | per seed |",
          "|---|---|---|---|---|---|"]
    for row in ROWS:
        p = res["pretrain"].get(row)
        if not p and not scores(res, "classify", row) + scores(res, "ner", row) and (row != "random" or not getattr(a, "random", True)):
            continue  # an objective this run did not pretrain, or the random row it skipped (--no-random)
        pre = "none" if row == "random" else (f"{p['steps']} steps, {p['seconds'] / 60:.1f} min, final MLM loss {p['final'].get('mlm_loss', p['final']['loss']):.2f}, "
                                              f"masked acc {100 * p['final']['mlm_acc']:.1f}%" + (f", disc acc {100 * p['final']['disc_acc']:.1f}%" if "disc_acc" in p["final"] else "")
                                              if p else "not run")
        c, n = scores(res, "classify", row), scores(res, "ner", row)
        L.append(f"| {NAMES[row]} | {pre} | {fmt([v for _, v in c])} | {per_seed(c)} | {fmt([v for _, v in n])} | {per_seed(n)} |")
    for task in ("classify", "ner"):
        st = scores(res, task, "student")
        if st:
            info = next(r for k, r in res["runs"].items() if k.startswith(f"{task}/student/"))["distill"]
            desc = f"distilled student, {info['student_layers']} of {info['teacher_layers']} layers, from {NAMES[info['teacher_row']]}"
            cells = [fmt([v for _, v in st]), per_seed(st), "not run", "-"] if task == "classify" else ["not run", "-", fmt([v for _, v in st]), per_seed(st)]
            L.append(f"| {desc} ({DATA[task]}) | teacher's | " + " | ".join(cells) + " |")
    L.append(f"| TF-IDF char 1-3-gram + logistic regression | - | {100 * base:.2f} | - | - | - |" if base is not None else "| TF-IDF | - | not run | - | - | - |")
    L += [""]

    sup = res.get("superseded_runs", {})
    if sup:
        L += ["Superseded runs (made earlier in this run with other fine-tuning settings, then run again with the settings above; "
              "kept for the record, not used in the table or the targets):", ""]
        for k, r in sup.items():
            L.append(f"- {k.split('@')[0]}: test {METRIC[r['task']]} {100 * r['test']:.2f} with {r['settings']} "
                     f"({r['train_examples']} train examples, {r['steps']} steps, {r['seconds'] / 60:.1f} min)")
        L += [""]

    # pretraining curves
    if res["pretrain"]:
        L += ["Pretraining curves (mean over a window of steps; loss is the objective's total, for ELECTRA generator MLM + 50 x discriminator):", ""]
        for obj, p in res["pretrain"].items():
            pts = "; ".join(f"{c['step']}: loss {c['loss']:.2f}, masked acc {100 * c['mlm_acc']:.1f}%" for c in p["curve"])
            L.append(f"- {NAMES[obj]}: {pts}")
        L += [""]

    # targets
    L += ["## Targets", ""]
    rand_c, rand_n = [v for _, v in scores(res, "classify", "random")], [v for _, v in scores(res, "ner", "random")]
    bc, bn = best_pretrained(res, "classify"), best_pretrained(res, "ner")
    if bc and base is not None:
        m = statistics.mean(v for _, v in scores(res, "classify", bc))
        L.append(f"- Best pretrained model beats the TF-IDF baseline on reviews-zh: **{'met' if m > base else 'missed'}** — "
                 f"{NAMES[bc]} {100 * m:.2f} vs TF-IDF {100 * base:.2f} ({100 * (m - base):+.2f} points).")
    if bc and rand_c:
        m, r = statistics.mean(v for _, v in scores(res, "classify", bc)), statistics.mean(rand_c)
        L.append(f"- Best pretrained beats random init by ≥ 3 accuracy points on reviews-zh: **{'met' if m - r >= 0.03 else 'missed'}** — "
                 f"{NAMES[bc]} {100 * m:.2f} vs random {100 * r:.2f} ({100 * (m - r):+.2f} points).")
    if bn and rand_n:
        m, r = statistics.mean(v for _, v in scores(res, "ner", bn)), statistics.mean(rand_n)
        L.append(f"- Best pretrained beats random init by ≥ 5 F1 points on peoples-daily-ner: **{'met' if m - r >= 0.05 else 'missed'}** — "
                 f"{NAMES[bn]} {100 * m:.2f} vs random {100 * r:.2f} ({100 * (m - r):+.2f} points)"
                 + (f"; seeds: {len(scores(res, 'ner', bn))} pretrained, {len(rand_n)} random." if True else ""))
    if bn and windowed(res):
        m = statistics.mean(v for _, v in scores(res, "ner", bn))
        L.append(f"- Best pretrained model beats the CRF baseline on peoples-daily-ner: **{'met' if m > CRF_BASELINE else 'missed'}** — "
                 f"{NAMES[bn]} {100 * m:.2f} vs CRF {100 * CRF_BASELINE:.2f} ({100 * (m - CRF_BASELINE):+.2f} points).")
    if bc and bn and bc != bn:
        L.append(f"- (The best pretrained model differs by task: {NAMES[bc]} on reviews-zh, {NAMES[bn]} on peoples-daily-ner.)")
    for task in ("classify", "ner"):
        st = scores(res, task, "student")
        if not st:
            continue
        info = next(r for k, r in res["runs"].items() if k.startswith(f"{task}/student/"))["distill"]
        t_score = res["runs"][info["teacher_key"]]["test"]
        s = statistics.mean(v for _, v in st)
        ratio = s / t_score if t_score else None  # a teacher that scored 0 (a smoke run) has no share to keep
        half = info["student_layers"] * 2 <= info["teacher_layers"]
        kept = f"{100 * ratio:.1f}%" if ratio is not None else "n/a (the teacher scored 0)"
        L.append(f"- Distilled student keeps ≥ 97% of its teacher's {METRIC[task]} ({DATA[task]}) at ≤ half the layers: "
                 f"**{'met' if ratio is not None and ratio >= 0.97 and half else 'missed'}** — student {100 * s:.2f} (mean of {len(st)} seed(s)) / "
                 f"teacher {100 * t_score:.2f} (seed 1) = {kept}, {info['student_layers']} of {info['teacher_layers']} layers.")
    L += ["", "Targets are judged on what this (reduced) run measured; see the differences from the full protocol above.", ""]

    # timings
    L += ["## Timings (wall clock)", ""]
    for k, v in res["steps"].items():
        L.append(f"- {k}: {v['seconds'] / 60:.1f} min")
    for obj, p in res["pretrain"].items():
        extra = (f" (+ {p['calibration_seconds'] / 60:.1f} min calibration, {p['calibrated_step_seconds']:.3f} s/step)" if "calibration_seconds" in p else "")
        L.append(f"- pretraining {obj}: {p['seconds'] / 60:.1f} min for {p['steps']} steps{extra}")
    by = {}
    for k, r in res["runs"].items():
        by.setdefault(k.rsplit("/", 1)[0], []).append(r["seconds"])
    for k, v in by.items():
        L.append(f"- fine-tuning {k}: {statistics.mean(v) / 60:.1f} min per run × {len(v)}")
    if res.get("total_seconds"):
        L.append(f"- total: {res['total_seconds'] / 60:.1f} min")
    L += ["", "Raw numbers (every run, dev and test metrics, pretraining curves): the JSON file beside this one.", ""]
    remarks = res.get("notes", {}).get("remarks")
    if remarks:
        L += ["## Notes", ""] + [f"- {r}" for r in remarks] + [""]
    out.write_text("\n".join(L), encoding="utf-8")


def ner_reach(max_length: int) -> dict:
    """How many peoples-daily-ner test entities lie wholly inside the first max_length - 2 characters."""
    room = max_length - 2
    test = load_dataset("peoples-daily-ner")["test"]
    entities = within = 0
    for e in test:
        for i, t in enumerate(e.tags):
            if t.startswith("B-"):
                j = i + 1
                while j < len(e.tags) and e.tags[j].startswith("I-"):
                    j += 1
                entities += 1
                within += j <= room
    return {"max_length": max_length, "sentences": len(test), "truncated_sentences": sum(len(e.tokens) > room for e in test),
            "entities": entities, "within": within}


def _default_note(k: str) -> str:
    return {"bf16": "auto: on where the hardware makes bf16 fast", "train_limit": "the whole train split", "ner_train_limit": "the whole train split", "ner_seeds": "--seeds", "student_seeds": "--seeds",
            "ner_epochs": "--epochs"}.get(k, "none")


# ---- main ---------------------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="roformer-tiny-zh",
                   help="preset or config.json for every row (the student has half its layers); see docs/results/pretrain-ablation.md")
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--minutes", type=float, default=60.0, help="pretraining budget per objective")
    p.add_argument("--budget", choices=["calibrate", "library"], default="calibrate",
                   help="calibrate: steps from a short timed run; library: PretrainConfig.minutes")
    p.add_argument("--calibration-steps", type=int, default=25)
    p.add_argument("--objectives", nargs="+", choices=PRETRAINED, default=list(PRETRAINED))
    p.add_argument("--pretrain-lr", type=float, default=1e-3)
    p.add_argument("--pretrain-batch", type=int, default=64)
    p.add_argument("--pretrain-max-length", type=int, default=128)
    p.add_argument("--warmup", type=float, default=0.06)
    p.add_argument("--pretrain-bigram-buckets", type=int, default=0, help="pretrain with a hashed token-bigram table of this many rows (0: none)")
    p.add_argument("--tasks", nargs="+", choices=["classify", "ner"], default=["classify", "ner"])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--ner-seeds", type=int, nargs="+", default=None, help="default: --seeds")
    p.add_argument("--student-seeds", type=int, nargs="+", default=None, help="default: --seeds")
    p.add_argument("--distill-tasks", nargs="*", choices=["classify", "ner"], default=["classify", "ner"])
    p.add_argument("--epochs", type=int, default=3,
                   help="fine-tuning epochs, reviews-zh (the best dev epoch kept; docs/results/recipe-ablation-reviews.md)")
    p.add_argument("--ner-epochs", type=int, default=5,
                   help="peoples-daily-ner fine-tuning epochs (docs/results/recipe-ablation.md; 0: --epochs)")
    p.add_argument("--lr", type=float, default=5e-4, help="fine-tuning learning rate (all rows)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--adv", choices=["fgm", "pgd", "none"], default="fgm",
                   help="adversarial training on the word embeddings for --adv-tasks (docs/results/recipe-pretrained-bigrams-reviews.md)")
    p.add_argument("--adv-tasks", choices=["classify", "ner"], nargs="+", default=["classify", "ner"],
                   help="the tasks --adv applies to (NER: docs/results/pretrain-60min-kept-ner-nofgm.md)")
    p.add_argument("--pooling", choices=["cls", "mean"], default="cls", help="reviews-zh: classify the [CLS] state or the mean of the tokens")
    p.add_argument("--bigram-buckets", type=int, default=65536,
                   help="fine-tuning: add a hashed token-bigram table of this many rows (0: none; docs/results/recipe-pretrained.md)")
    p.add_argument("--no-random", dest="random", action="store_false", help="skip the random-init row (its runs are reported as not run)")
    p.add_argument("--train-limit", type=int, default=None, help="reviews-zh training examples (default: all)")
    p.add_argument("--ner-train-limit", type=int, default=None, help="peoples-daily-ner training examples (default: all)")
    p.add_argument("--temperature", type=float, default=2.0)
    # Student defaults: the best distillation setting on dev in docs/results/distill-ablation.md (variant M).
    p.add_argument("--alpha", type=float, default=0.5, help="students: weight of the soft targets (1 - alpha on the labels)")
    p.add_argument("--student-init", choices=["spread", "bottom"], default="bottom",
                   help="the teacher layers a student starts from: evenly spaced ending at the top, or the bottom ones (DistilBERT)")
    p.add_argument("--soft-targets", choices=["logits", "crf"], default="crf", help="NER students: softmax(emissions) or CRF marginals")
    p.add_argument("--bf16", dest="bf16", action="store_true", default=None, help="bf16 autocast (default: where the hardware makes it fast)")
    p.add_argument("--no-bf16", dest="bf16", action="store_false")
    p.set_defaults(bf16=None)
    p.add_argument("--work", default="/tmp/bertkit-pretrain-report", help="checkpoints and intermediate files")
    p.add_argument("--out", default="docs/results/pretrain.md")
    p.add_argument("--resume", action="store_true", help="continue a run from its JSON and work directory")
    p.add_argument("--render-only", action="store_true", help="rewrite the markdown from the JSON beside --out, run nothing")
    return p


def main() -> None:
    parser = make_parser()
    a = parser.parse_args()
    if a.bf16 is None:
        a.bf16 = bf16_is_fast()
    a.ner_seeds = a.ner_seeds or a.seeds
    a.ner_epochs = a.ner_epochs or a.epochs
    a.adv = None if a.adv == "none" else a.adv
    if a.calibration_steps < 5:
        parser.error(f"--calibration-steps {a.calibration_steps}: give at least 5 (the first 3 steps, cold, are not timed).")
    if a.pretrain_bigram_buckets and a.bigram_buckets not in (0, a.pretrain_bigram_buckets):
        parser.error(f"--bigram-buckets {a.bigram_buckets} differs from --pretrain-bigram-buckets {a.pretrain_bigram_buckets}: the pretrained "
                     "models keep their table; give the same size (or 0).")
    a.student_seeds = a.student_seeds or a.seeds
    out, work = Path(a.out), Path(a.work)
    if a.render_only:
        data = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
        want = data["args"]["max_length"]
        if "ner" in data["args"]["tasks"] and data.setdefault("notes", {}).get("ner_entities_within", {}).get("max_length") != want:
            data["notes"]["ner_entities_within"] = ner_reach(want)
            out.with_suffix(".json").write_text(json.dumps(data, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
        render(data, parser, out, bool(data.get("finished")))
        print(out.read_text(encoding="utf-8"))
        return
    work.mkdir(parents=True, exist_ok=True)
    res = Results(out.with_suffix(".json"), a, a.resume)
    t0 = time.perf_counter() - res.data.get("total_seconds", 0.0)

    def save(finished: bool = False) -> None:
        res.data["total_seconds"] = time.perf_counter() - t0
        res.save()
        render(res.data, parser, out, finished)

    if "ner" in a.tasks and res.data.setdefault("notes", {}).get("ner_entities_within", {}).get("max_length") != a.max_length:
        res.data["notes"]["ner_entities_within"] = ner_reach(a.max_length)
    if "tfidf" not in res.data["steps"]:
        t = time.perf_counter()
        acc = tfidf_baseline()
        res.data["steps"]["tfidf"] = {"seconds": time.perf_counter() - t, "accuracy": acc}
        log(f"TF-IDF baseline: {100 * acc:.2f}")
        save()
    vocab, corpus = shared_vocab_and_corpus(a, res, work)
    for obj in a.objectives:
        run_pretraining(obj, a, res, work, vocab, corpus)
        save()
    rows = ["random"] * a.random + a.objectives
    model_of = {"random": a.model} | {o: str(work / f"pre-{o}" / "model") for o in a.objectives}
    for task in a.tasks:
        for seed in (a.seeds if task == "classify" else a.ner_seeds):  # seeds outermost: an interruption still leaves every row
            for row in rows:
                finetune(f"{task}/{row}/s{seed}", task, model_of[row], seed, a, res, work, vocab)
                save()
        if task in a.distill_tasks:
            best = best_pretrained(res.data, task)
            teacher_key = f"{task}/{best}/s1"
            if best is None or teacher_key not in res.data["runs"]:
                log(f"no seed-1 fine-tuned pretrained model for {task}: no distillation")
                continue
            teacher = Path(res.data["runs"][teacher_key]["dir"]) / "model"
            if not teacher.is_dir() and all(f"{task}/student/s{seed}" in res.data["runs"] for seed in a.student_seeds):
                continue  # resumed in a fresh work directory with every student done: nothing to teach
            if not teacher.is_dir():  # resumed in a fresh work directory (benchmarks/checkpoints): the teacher is trained again
                log(f"{teacher} is gone: fine-tuning {teacher_key} again to teach the students (the earlier run is kept as superseded)")
                supersede(res, teacher_key)
                finetune(teacher_key, task, model_of[best], 1, a, res, work, vocab)
                save()
            config, s_layers, t_layers = student_config(teacher, work, task)
            for seed in a.student_seeds:
                key = f"{task}/student/s{seed}"
                layer_map = ",".join(str(i + 1) for i in range(s_layers)) if a.student_init == "bottom" else None
                finetune(key, task, config, seed, a, res, work, vocab, teacher=str(teacher), temperature=a.temperature, alpha=a.alpha,
                         init_from_teacher=True, layer_map=layer_map, soft_targets=a.soft_targets if task == "ner" else "logits")
                r = res.data["runs"][key]
                r["distill"] |= {"teacher_row": best, "teacher_key": teacher_key, "student_layers": s_layers, "teacher_layers": t_layers}
                save()
    res.data["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    save(finished=True)
    print(out.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
