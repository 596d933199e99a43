"""The fine-tuning trainer: one readable loop with the tricks switched on by settings.

    for step in range(state.step, total):                  # one optimizer step per global batch
        for micro in this rank's share, in `accum` pieces:  # gradient accumulation
            loss = summed loss / count over the global batch # so N processes == 1 process, exactly
            backward (with FGM/PGD, R-Drop, bf16 autocast)
        clip, AdamW step, warmup schedule, EMA update
        log; evaluate on dev (with the EMA weights); keep the best; checkpoint

Exact resume: the data order is a function of (seed, epoch) and the random state of a step a
function of (seed, step, rank), so the checkpoint (model, optimizer, scheduler, EMA, step, best
score, early-stopping count) is all a run needs to continue bit for bit. Checkpoints are written
into a temporary directory and renamed into place.

Several processes: `torchrun --nproc_per_node N bertkit train ...` runs DistributedDataParallel
(gloo on CPU, nccl on GPU). Each rank takes every N-th example of each global batch; only rank 0
writes. Every rank evaluates the (small) dev set, so early stopping agrees without messages.

Output directory: model/ (the best model: a checkpoint with its tokenizer), checkpoint/ (the
last training state), log.jsonl (every step), curves.png, metrics.json, train_config.json.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import read_pretrained
from .config import PRESETS, BertConfig
from .datasets import SPLITS, load_dataset, read_task_file
from .distill import distill_loss
from .errors import BertkitError
from .finetune import (
    MODEL_CLASSES,
    TASKS,
    collate,
    encode,
    evaluate_examples,
    labels_of,
    loss_of_batch,
    main_metric,
    set_task,
    sum_loss,
)
from .metrics import bio_problems, repair_bio
from .model import BertModel
from .tokenizer import Tokenizer, train_wordpiece
from .tricks import EMA, FGM, PGD, adversarial_step, class_weights, make_optimizer, warmup_schedule


@dataclass
class TrainConfig:
    task: str  # classify | pair | ner
    model: str  # checkpoint directory or hub name, a preset name, or a config.json (random init)
    out: str
    data: str | None = None  # bundled dataset name or a directory of train/dev/test files
    train: str | None = None  # files overriding the data's splits
    dev: str | None = None
    test: str | None = None
    tokenizer: str | None = None  # default: the checkpoint's; for a preset, one trained on the train texts
    vocab_size: int = 8000  # size of that trained vocabulary
    epochs: int = 3
    max_steps: int | None = None  # overrides epochs
    batch_size: int = 32  # global: over all processes and accumulation steps
    accum: int = 1
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup: float = 0.1  # a fraction of the steps (< 1) or a number of steps
    schedule: str = "linear"  # linear | cosine | constant
    clip: float = 1.0  # max gradient norm; 0 = off
    max_length: int = 128
    bf16: bool = False  # bf16 autocast (fp32 master weights)
    checkpointing: bool = False  # activation checkpointing: recompute each layer in backward (long sequences)
    ema: float = 0.0  # EMA decay, e.g. 0.999; 0 = off
    adv: str | None = None  # fgm | pgd
    adv_eps: float = 1.0
    rdrop: float = 0.0  # R-Drop weight; 0 = off
    loss: str = "ce"  # ce | focal | smooth
    focal_gamma: float = 2.0
    smoothing: float = 0.1
    class_weights: str | None = None  # inverse | sqrt_inverse
    crf: bool = False
    repair_bio: bool = False  # turn an I-X after O into B-X instead of reporting it
    dropout: float | None = None  # override the model's dropout probabilities
    seed: int = 42
    eval_every: int = 0  # steps; 0 = at the end of each epoch
    save_every: int = 100  # steps between checkpoints
    patience: int = 0  # stop after this many evaluations without improvement; 0 = never
    resume: bool = False
    device: str | None = None  # default: cuda if available, else cpu
    log_every: int = 10  # steps between progress-bar updates
    quiet: bool = False
    # Distillation (distill.py): a fine-tuned teacher's soft targets (and hidden states) teach this model.
    teacher: str | None = None
    temperature: float = 2.0
    alpha: float = 0.9  # weight of the soft-target loss; 1 - alpha on the hard labels
    hidden_weight: float = 0.0  # hidden-state matching (needs equal widths)
    layer_map: str | None = None  # teacher layer per student layer, "2,4,6"; default evenly spaced
    init_from_teacher: bool = False  # copy embeddings and mapped layers from the teacher
    soft_targets: str = "auto"  # "logits": softmax of the logits; "crf": a CRF's per-word marginals; auto: crf if both have one


@dataclass
class State:
    """What a resumed run needs beyond the weights and the optimizer."""

    step: int = 0
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0


# ---- processes ------------------------------------------------------------------------------


@dataclass
class Dist:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls, device: str | None) -> Dist:
        """One process, or one of torchrun's (WORLD_SIZE, RANK, LOCAL_RANK set)."""
        world, rank, local = (int(os.environ.get(k, d)) for k, d in (("WORLD_SIZE", 1), ("RANK", 0), ("LOCAL_RANK", 0)))
        name = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dev = torch.device(f"cuda:{local}" if name == "cuda" and world > 1 else name)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        if world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        return cls(rank, world, dev)

    def stop(self) -> None:
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def global_batches(n: int, batch_size: int, seed: int, epoch: int, min_size: int) -> list[list[int]]:
    """The epoch's global batches: a permutation fixed by (seed, epoch), cut into batch_size pieces
    (a last piece smaller than min_size = processes x accumulation steps is dropped)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    return [b for b in batches if len(b) >= min_size]


# ---- data, labels, model --------------------------------------------------------------------


def load_splits(cfg: TrainConfig) -> dict[str, list]:
    splits = dict(load_dataset(cfg.data, cfg.task)) if cfg.data else {}
    for name in SPLITS:
        path = getattr(cfg, name)
        if path:
            splits[name] = read_task_file(path, cfg.task)
    if not splits.get("train"):
        raise BertkitError("no training data: give --data NAME_OR_DIR or --train FILE.")
    for name, examples in splits.items():
        if examples and (examples[0].tags if cfg.task == "ner" else examples[0].label) is None:
            raise BertkitError(f"the {name} split has no labels; training and evaluation need labelled data.")
    return splits


def make_labels(cfg: TrainConfig, splits: dict, log) -> list[str]:
    """Labels in a fixed order from the training split; a dev/test label never seen in train is an error."""
    if cfg.task != "ner":
        labels = sorted({e.label for e in splits["train"]})
        for name in ("dev", "test"):
            unseen = sorted({e.label for e in splits.get(name, [])} - set(labels))
            if unseen:
                raise BertkitError(f"label {unseen[0]!r} appears in {name} but never in train; the model cannot learn it.")
        return labels
    for name, examples in splits.items():
        broken = [i for i, e in enumerate(examples) if bio_problems(e.tags)]
        if broken and cfg.repair_bio:
            for i in broken:
                examples[i].tags = repair_bio(examples[i].tags)
            log(f"{name}: repaired {len(broken)} sentences with an I- tag after O or another type")
        elif broken and cfg.crf:
            raise BertkitError(f"{len(broken)} {name} sentences (the first is number {broken[0] + 1}) have an I- tag after O or another type, which the CRF's BIO constraints forbid; pass --repair-bio.")
        elif broken:
            log(f"{name}: {len(broken)} sentences have an I- tag after O or another type (kept; --repair-bio turns them into B-)")
    tags = {t for e in splits["train"] for t in e.tags}
    types = sorted({t[2:] for t in tags if t != "O"})
    prefixes = "BIES" if any(t[0] in "ES" for t in tags if t != "O") else "BI"
    labels = ["O"] + [f"{p}-{t}" for t in types for p in prefixes]
    for name in ("dev", "test"):
        unseen = sorted({t for e in splits.get(name, []) for t in e.tags} - set(labels))
        if unseen:
            raise BertkitError(f"tag {unseen[0]!r} appears in {name} but its type never in train; the model cannot learn it.")
    return labels


def set_checkpointing(model: nn.Module, on: bool) -> None:
    """Activation checkpointing in every encoder of the model: memory for long sequences, at ~1/3 more compute."""
    for m in model.modules():
        if isinstance(m, BertModel):
            m.checkpointing = on


def _random_init_tokenizer(cfg: TrainConfig, splits: dict) -> Tokenizer:
    if cfg.resume:  # the vocabulary the run started with (a new training may break ties differently)
        return Tokenizer.from_pretrained(existing_dir(Path(cfg.out) / "checkpoint") / "model")
    if cfg.tokenizer:
        return Tokenizer.from_pretrained(cfg.tokenizer)
    return train_wordpiece(_texts(splits["train"], cfg.task), cfg.vocab_size, lowercase=True, min_frequency=2)


def build_model(cfg: TrainConfig, labels: list[str], splits: dict, log, tokenizer: Tokenizer | None = None):
    """(model, tokenizer): a checkpoint with a new classifier, or a random model from a preset/config."""
    info = dict(crf=cfg.crf, max_length=cfg.max_length)
    if cfg.task == "ner":
        info["tokens"] = "chars" if all(len(w) == 1 for e in splits["train"][:1000] for w in e.tokens) else "words"
    random_init = cfg.model in PRESETS or cfg.model.endswith(".json")
    if random_init:
        config = BertConfig.from_preset(cfg.model) if cfg.model in PRESETS else BertConfig.from_json_file(cfg.model)
        if tokenizer is None:  # given: the teacher's, when distilling
            tokenizer = _random_init_tokenizer(cfg, splits)
            if torch.distributed.is_initialized():  # ties may break differently per process: use rank 0's
                vocab = [tokenizer.vocab()]
                torch.distributed.broadcast_object_list(vocab, src=0)
                tokenizer = Tokenizer.from_vocab(vocab[0])
            log(f"trained a {tokenizer.vocab_size}-token WordPiece vocabulary on the training texts (saved with the model)")
        config = dataclasses.replace(config, vocab_size=tokenizer.vocab_size, extra=dict(config.extra))
        d, conv = None, None
    else:
        d, config, conv = read_pretrained(cfg.model)
        tokenizer = tokenizer or Tokenizer.from_pretrained(cfg.tokenizer or d)
        old = config.extra.get("id2label")
        if old and [old[k] for k in sorted(old, key=int)] != labels:  # a classifier for other labels: start afresh
            for k in [k for k in conv.state_dict if k.startswith(("classifier.", "crf."))]:
                del conv.state_dict[k]
    if tokenizer.vocab_size > config.vocab_size:
        raise BertkitError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model's embedding only {config.vocab_size} rows: they do not belong together.")
    if cfg.max_length > config.max_length:
        raise BertkitError(f"--max-length {cfg.max_length} exceeds the model's maximum of {config.max_length} tokens.")
    if cfg.dropout is not None:
        config = dataclasses.replace(config, hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout, extra=dict(config.extra))
    set_task(config, cfg.task, labels, **info)
    cls = MODEL_CLASSES[cfg.task]
    torch.manual_seed(cfg.seed)  # the same fresh weights on every rank and every run
    model = cls(config) if random_init else cls.from_converted(d, config, conv, new_heads=True, verbose=False)
    if not random_init and model.load_report.initialised:
        log(model.load_report.describe())
    return model, tokenizer


def _texts(examples, task: str) -> list[str]:
    if task == "ner":
        return [" ".join(e.tokens) for e in examples]
    if task == "pair":
        return [t for e in examples for t in (e.text_a, e.text_b)]
    return [e.text for e in examples]


def load_teacher(cfg: TrainConfig, data_labels: list[str]):
    """The fine-tuned teacher, its tokenizer (the student reads the same ids) and its label order."""
    from .finetune import load_finetuned, task_of

    teacher, tok = load_finetuned(cfg.teacher)
    if task_of(teacher.config)["task"] != cfg.task:
        raise BertkitError(f"the teacher {cfg.teacher} was fine-tuned for {task_of(teacher.config)['task']}, not {cfg.task}.")
    labels = labels_of(teacher.config)
    unknown = sorted(set(data_labels) - set(labels))
    if unknown:
        raise BertkitError(f"label {unknown[0]!r} of the data is not one the teacher knows ({', '.join(labels)}).")
    return teacher, tok, labels


# ---- checkpoints ------------------------------------------------------------------------------


def replace_dir(dst: Path, write) -> None:
    """write(tmp) into dst.tmp, then swap it in: dst is always a complete old or new directory
    (between the two renames only dst.old exists; `existing_dir` finds it)."""
    tmp, old = dst.with_name(dst.name + ".tmp"), dst.with_name(dst.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    if dst.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(tmp, dst)
    shutil.rmtree(old, ignore_errors=True)


def existing_dir(dst: Path) -> Path | None:
    old = dst.with_name(dst.name + ".old")
    return dst if dst.is_dir() else old if old.is_dir() else None


def save_checkpoint(out: Path, model, tokenizer, optimizer, scheduler, ema, state: State) -> None:
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp / "model", tokenizer=tokenizer)
        torch.save({"state": dataclasses.asdict(state), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "ema": ema.state_dict() if ema else None},
                   tmp / "trainer_state.pt")

    replace_dir(out / "checkpoint", write)


FREE_ON_RESUME = ("resume", "quiet", "device", "log_every", "save_every")  # settings that do not change the result


def check_resume(cfg: TrainConfig, out: Path) -> None:
    """A resumed run must use the settings it started with, or it would not end where the run would have."""
    if existing_dir(out / "checkpoint") is None:
        raise BertkitError(f"--resume: {out} has no checkpoint to resume from.")
    saved = json.loads((out / "train_config.json").read_text(encoding="utf-8"))
    now = dataclasses.asdict(cfg)
    changed = [k for k in now if k not in FREE_ON_RESUME and saved.get(k) != now[k]]
    if changed:
        k = changed[0]
        raise BertkitError(f"--resume: --{k.replace('_', '-')} was {saved.get(k)!r} when the run started, now {now[k]!r}; resume with the same settings.")


def load_checkpoint(out: Path, model, optimizer, scheduler, ema) -> State:
    from safetensors.torch import load_file

    from .weights import from_hf

    d = existing_dir(out / "checkpoint")
    if d is None:
        raise BertkitError(f"--resume: {out} has no checkpoint to resume from.")
    conv = from_hf(load_file(d / "model" / "model.safetensors"), model.config)
    model.load_state_dict(conv.state_dict, strict=True)
    saved = torch.load(d / "trainer_state.pt", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    if ema is not None:
        if saved["ema"] is None:
            raise BertkitError("--resume: the checkpoint was trained without --ema; resume with the same settings.")
        ema.load_state_dict(saved["ema"])
    return State(**saved["state"])


# ---- the loop ---------------------------------------------------------------------------------


def train(cfg: TrainConfig) -> dict:
    """Fine-tune, evaluate, and write the output directory; returns the final metrics."""
    if cfg.task not in TASKS:
        raise BertkitError(f"task {cfg.task!r} is not one of {', '.join(TASKS)}.")
    if cfg.adv not in (None, "fgm", "pgd"):
        raise BertkitError(f"--adv {cfg.adv!r} is not fgm or pgd.")
    dist = Dist.start(cfg.device)
    try:
        return _train(cfg, dist)
    finally:
        dist.stop()


def _train(cfg: TrainConfig, dist: Dist) -> dict:
    out = Path(cfg.out)
    log = (lambda msg: print(msg, file=sys.stderr)) if dist.main and not cfg.quiet else (lambda msg: None)
    if not cfg.resume and out.exists() and any(out.iterdir()):
        raise BertkitError(f"{out} is not empty; choose a new --out, or pass --resume to continue the run in it.")
    if cfg.resume:
        check_resume(cfg, out)
    splits = load_splits(cfg)
    labels = make_labels(cfg, splits, log)
    teacher, teacher_tok, layer_map = None, None, []
    if cfg.teacher:
        teacher, teacher_tok, labels = load_teacher(cfg, labels)
    model, tokenizer = build_model(cfg, labels, splits, log, teacher_tok)
    set_checkpointing(model, cfg.checkpointing)
    if teacher is not None:
        from .distill import init_student, parse_layer_map, resolve_soft_targets

        layer_map = parse_layer_map(cfg.layer_map, model.config.num_hidden_layers, teacher.config.num_hidden_layers)
        soft_targets = resolve_soft_targets(cfg.soft_targets, model, teacher)
        log(f"distillation soft targets: {'the CRF per-word marginals' if soft_targets == 'crf' else 'softmax of the logits'}")
        if cfg.hidden_weight and model.config.hidden_size != teacher.config.hidden_size:
            raise BertkitError(f"--hidden-weight needs the student's hidden size ({model.config.hidden_size}) to equal the teacher's ({teacher.config.hidden_size}).")
        if cfg.init_from_teacher and not cfg.resume:
            init_student(model, teacher, layer_map)
            log(f"student initialised from teacher layers {layer_map}")
        teacher.to(dist.device).eval().requires_grad_(False)
    feats = {name: encode(tokenizer, ex, cfg.task, labels, cfg.max_length) for name, ex in splits.items()}
    for name, f in feats.items():
        if f.truncated:
            log(f"{name}: {len(f.truncated)} of {len(f)} examples truncated to {cfg.max_length} tokens")
        if f.lost_words:
            log(f"{name}: {f.lost_words} words beyond the truncation (or without word pieces) are predicted O")
    train_f = feats["train"]
    min_size = dist.world * cfg.accum
    batches_per_epoch = len(global_batches(len(train_f), cfg.batch_size, cfg.seed, 0, min_size))
    if batches_per_epoch == 0:
        raise BertkitError(f"{len(train_f)} training examples do not fill one batch over {dist.world} processes x {cfg.accum} accumulation steps.")
    total = cfg.max_steps or cfg.epochs * batches_per_epoch
    warmup = int(cfg.warmup * total) if cfg.warmup < 1 else int(cfg.warmup)

    model.to(dist.device)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    scheduler = warmup_schedule(optimizer, min(warmup, total), total, cfg.schedule)
    ema = EMA(model, cfg.ema) if cfg.ema else None
    adv = {"fgm": lambda: FGM(model, cfg.adv_eps), "pgd": lambda: PGD(model, cfg.adv_eps)}.get(cfg.adv, lambda: None)()
    weight = None
    if cfg.class_weights:
        ys = train_f.labels if cfg.task != "ner" else [y for row in train_f.word_labels for y in row]
        weight = class_weights(torch.bincount(torch.tensor(ys), minlength=len(labels)), cfg.class_weights)
    loss = sum_loss(cfg.loss, weight, cfg.focal_gamma, cfg.smoothing)
    net = model if dist.world == 1 else torch.nn.parallel.DistributedDataParallel(model)

    if dist.world > 1:  # every rank has checked the output directory before rank 0 writes into it
        torch.distributed.barrier()
    if cfg.resume:
        state = load_checkpoint(out, model, optimizer, scheduler, ema)
        log(f"resumed {out} at step {state.step} of {total}")
    else:
        state = State()
        if dist.main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    logger = StepLog(out / "log.jsonl", state.step, dist.main)
    evaluate_now = {e * batches_per_epoch - 1 for e in range(1, cfg.epochs + 1)} if not cfg.eval_every else set()
    bar = _progress(total, state.step, dist.main and not cfg.quiet)
    epoch_batches: dict[int, list[list[int]]] = {}
    autocast = torch.autocast(dist.device.type, dtype=torch.bfloat16) if cfg.bf16 else nullcontext()
    pad = model.config.pad_token_id or 0

    stopped = False
    while state.step < total and not stopped:
        step = state.step
        epoch, i = divmod(step, batches_per_epoch)
        if epoch not in epoch_batches:
            epoch_batches = {epoch: global_batches(len(train_f), cfg.batch_size, cfg.seed, epoch, min_size)}
        batch_idx = epoch_batches[epoch][i]
        torch.manual_seed(hash((cfg.seed, step, dist.rank)) % (2**63))  # dropout of this step, on this rank
        t0 = time.perf_counter()
        model.train()
        count = _count(train_f, batch_idx)
        mine = batch_idx[dist.rank::dist.world]
        micros = [mine[j::cfg.accum] for j in range(cfg.accum)]
        total_loss = torch.zeros((), device=dist.device)
        for j, micro in enumerate(micros):
            batch = collate(train_f, micro, pad, dist.device)

            def loss_of(m, b, scale=dist.world / count):  # DDP averages over ranks: this makes it the global mean
                with autocast:
                    if teacher is not None:
                        summed, _ = distill_loss(m, teacher, b, loss, cfg.temperature, cfg.alpha, cfg.hidden_weight, layer_map, soft_targets)
                    else:
                        summed, _ = loss_of_batch(m, b, loss, cfg.rdrop)
                return summed * scale

            sync = net.no_sync() if dist.world > 1 and j < len(micros) - 1 else nullcontext()
            with sync:
                total_loss += adversarial_step(net, loss_of, batch, adv).float() / dist.world
        if dist.world > 1:
            torch.distributed.all_reduce(total_loss)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip if cfg.clip > 0 else float("inf"))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update()
        state.step += 1
        row = {"step": state.step, "epoch": round(state.step / batches_per_epoch, 4), "loss": total_loss.item(),
               "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm), "examples_per_s": len(batch_idx) / (time.perf_counter() - t0)}
        logger.write(row)
        bar.update(1)
        if state.step % cfg.log_every == 0 or state.step == total:
            bar.set_postfix(loss=f"{logger.running_loss():.4f}", ex_s=f"{row['examples_per_s']:.0f}")
        if "dev" in splits and ((cfg.eval_every and state.step % cfg.eval_every == 0) or step in evaluate_now or state.step == total):
            stopped = _evaluate(cfg, model, tokenizer, splits["dev"], ema, state, out, dist, logger, log)
        if dist.main and (state.step % cfg.save_every == 0 or state.step == total or stopped):
            save_checkpoint(out, model, tokenizer, optimizer, scheduler, ema, state)
    bar.close()
    return _finish(cfg, model, tokenizer, splits, ema, state, out, dist, logger, log)


def _count(f, idx: list[int]) -> int:
    """What the loss of a global batch is a mean over: examples, or (ner) words."""
    return len(idx) if f.word_index is None else max(sum(len(f.word_index[i]) for i in idx), 1)


def _evaluate(cfg, model, tokenizer, dev, ema, state: State, out: Path, dist: Dist, logger, log) -> bool:
    """Score dev (with the EMA weights if on), keep the best model; True when early stopping says stop."""
    with ema.applied() if ema else nullcontext():
        metrics = evaluate_examples(model, tokenizer, dev)
        key = main_metric(cfg.task)
        better = state.best is None or metrics[key] > state.best
        if better:
            state.best, state.best_step, state.bad_evals = metrics[key], state.step, 0
            if dist.main:
                replace_dir(out / "model", lambda tmp: model.save_pretrained(tmp, tokenizer=tokenizer))
        else:
            state.bad_evals += 1
    logger.write({"step": state.step, "dev": {k: v for k, v in metrics.items() if not isinstance(v, dict)}})
    log(f"step {state.step}: dev {key} {metrics[key]:.4f} (best {state.best:.4f} at step {state.best_step})")
    return bool(cfg.patience and state.bad_evals >= cfg.patience)


def _finish(cfg, model, tokenizer, splits, ema, state, out, dist, logger, log) -> dict:
    """Save the model when there was no dev split, score dev and test with the best weights, plot."""
    if not dist.main:
        return {}
    if "dev" not in splits:
        with ema.applied() if ema else nullcontext():
            replace_dir(out / "model", lambda tmp: model.save_pretrained(tmp, tokenizer=tokenizer))
    best = type(model).from_pretrained(out / "model", verbose=False).to(dist.device)
    result = {"best_step": state.best_step, "steps": state.step, "labels": labels_of(best.config)}
    for name in ("dev", "test"):
        if splits.get(name):
            result[name] = evaluate_examples(best, tokenizer, splits[name])
    (out / "metrics.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if plot_curves(out / "log.jsonl", out / "curves.png", main_metric(cfg.task)):
        log(f"curves: {out / 'curves.png'}")
    summary = {k: round(v[main_metric(cfg.task)], 4) for k, v in result.items() if k in ("dev", "test")}
    log(f"done: {state.step} steps; {main_metric(cfg.task)} {summary}; model in {out / 'model'}")
    return result


# ---- logging, progress, curves ---------------------------------------------------------------


class StepLog:
    """log.jsonl: one JSON object per step and per evaluation. On resume, lines past the checkpoint's
    step are dropped, so the log reads as one uninterrupted run."""

    def __init__(self, path: Path, step: int, main: bool):
        self.path, self.main, self.recent = path, main, []
        if main and path.exists():
            kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line and json.loads(line)["step"] <= step]
            path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def write(self, row: dict) -> None:
        if "loss" in row:
            self.recent = (self.recent + [row["loss"]])[-50:]
        if self.main:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    def running_loss(self) -> float:
        return sum(self.recent) / max(len(self.recent), 1)


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="train", unit="step", dynamic_ncols=True)


def plot_curves(log_path: Path, png: Path, metric: str | None, train_keys: tuple[str, ...] = ()) -> bool:
    """Training loss (and its running mean), other logged training values (`train_keys`, e.g. masked-token
    accuracy) and the dev metric against the step; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines() if line]
    steps = [r["step"] for r in rows if "loss" in r]
    panels = [("loss", "training loss")] + [(k, k) for k in train_keys]
    evals = [(r["step"], r["dev"][metric]) for r in rows if "dev" in r] if metric else []
    n = len(panels) + bool(evals)
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        ys = [r.get(key, float("nan")) for r in rows if "loss" in r]
        k = max(1, len(ys) // 50)
        smooth = [float(np.nanmean(ys[max(0, i - k + 1):i + 1])) for i in range(len(ys))]
        ax.plot(steps, ys, alpha=0.3, label=key)
        ax.plot(steps, smooth, label=f"running mean ({k} steps)")
        ax.set(xlabel="step", ylabel=title, title=title)
        ax.legend()
    if evals:
        ax = axes[0][-1]
        ax.plot(*zip(*evals), marker="o")
        ax.set(xlabel="step", ylabel=f"dev {metric}", title=f"dev {metric}")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return True
