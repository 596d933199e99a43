"""Fine-tuning (and distillation, with --teacher): the recipe the training loop (loop.py) runs.

What the recipe supplies: the task's examples as features, a global batch of them per step, the
summed loss with its count (examples, or words for NER), the tricks (FGM/PGD around the backward,
R-Drop in the loss, EMA after the step), evaluation on dev (with the EMA weights) keeping the best
model and stopping early, and the final scores. The loop owns the rest (see loop.py).

Several processes: `torchrun --nproc_per_node N bertkit train ...`; each rank takes every N-th
example of each global batch. Every rank evaluates the (small) dev set, so early stopping agrees
without messages.

Output directory: model/ (the best model: a checkpoint with its tokenizer), checkpoint/ (the
last training state), log.jsonl (every step), curves.png, metrics.json, train_config.json.

Why ~430 lines: the recipe (~100 lines) plus building its data, labels and models (~170) and its run settings with their flag help.
"""

from __future__ import annotations

import dataclasses
import json
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import read_pretrained
from ..config import PRESETS, BertConfig
from ..data.datasets import SPLITS, load_dataset, read_task_file
from ..data.features import TRUNCATIONS, check_stride, collate, default_stride, encode
from ..data.metrics import bio_problems, repair_bio
from ..errors import BertkitError
from ..heads import MODEL_CLASSES, POOLINGS, TASKS, labels_of, own_entry, set_task, task_of
from ..io.files import existing_dir, replace_dir
from ..serving.load import load_finetuned
from ..serving.predict import MERGES, evaluate_examples, main_metric
from ..tokenizer import Tokenizer, train_wordpiece
from ..weights import add_bigrams
from .distill import distill_loss, init_student, parse_layer_map, resolve_soft_targets
from .loop import (
    Dist,
    Loop,
    Schedule,
    check_out,
    evaluation_due,
    examples_speed,
    in_processes,
    messages,
    set_checkpointing,
)
from .losses import loss_of_batch, sum_loss
from .tricks import EMA, FGM, PGD, adversarial_step, class_weights


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
    crf_lr: float = 1.0  # the CRF's scores learn at lr times this (bert4keras: 100-1000)
    layer_decay: float = 1.0  # layer-wise learning-rate decay: the top layer at lr * this, each one below times this again
    weight_decay: float = 0.01
    warmup: float = 0.1  # a fraction of the steps (< 1) or a number of steps
    schedule: str = "linear"  # linear | cosine | constant
    clip: float = 1.0  # max gradient norm; 0 = off
    max_length: int = 128
    stride: int | None = None  # ner: a longer sentence is read as windows of max_length sharing this many tokens
    # (default: 32, or half a window if less); -1: cut at max_length instead
    merge: str = "edge"  # ner: a word's tag from the window where it is farthest from a cut (edge), or mean emissions (mean)
    truncation: str = "head"  # classify: a longer text keeps its head, or its head and tail ("head+tail")
    pooling: str = "cls"  # classify, pair: the [CLS] state (through the family's pooler) or the mean of the tokens ("mean")
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
    bigram_buckets: int = 0  # add a hashed character-bigram table of this many rows (a checkpoint's starts at zero)
    seed: int = 42
    eval_every: int = 0  # steps; 0 = at the end of each epoch
    save_every: int = 100  # steps between checkpoints
    patience: int = 0  # stop after this many evaluations without improvement; 0 = never
    resume: bool = False
    auto_resume: bool = False  # resume when --out holds a checkpoint of this run, else start afresh (torchrun --max-restarts)
    save_minutes: float | None = None  # also checkpoint once this many minutes have passed since the last checkpoint
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
    source = cfg.train or cfg.data
    if cfg.task != "ner":
        labels = sorted({e.label for e in splits["train"]})
        if len(labels) == 1:
            raise BertkitError(f"every training example in {source} has the label {labels[0]!r}; a classifier needs at least two classes.")
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
    if tags <= {"O"}:
        raise BertkitError(f"every training word in {source} is tagged {next(iter(tags), 'O')!r}: there is no entity to learn.")
    types = sorted({t[2:] for t in tags if t != "O"})
    prefixes = "BIES" if any(t[0] in "ES" for t in tags if t != "O") else "BI"
    labels = ["O"] + [f"{p}-{t}" for t in types for p in prefixes]
    for name in ("dev", "test"):
        unseen = sorted({t for e in splits.get(name, []) for t in e.tags} - set(labels))
        if unseen:
            raise BertkitError(f"tag {unseen[0]!r} appears in {name} but its type never in train; the model cannot learn it.")
    return labels


def ner_stride(cfg: TrainConfig) -> int | None:
    """The stride of a tagger's windows, or None when long sentences are cut (--stride -1)."""
    if cfg.task != "ner" or cfg.stride == -1:
        return None
    return default_stride(cfg.max_length) if cfg.stride is None else cfg.stride


def _random_init_tokenizer(cfg: TrainConfig, splits: dict) -> Tokenizer:
    if cfg.resume:  # the vocabulary the run started with (the saved one: the data files may have changed since)
        return Tokenizer.from_pretrained(existing_dir(Path(cfg.out) / "checkpoint") / "model")
    if cfg.tokenizer:
        return Tokenizer.from_pretrained(cfg.tokenizer)
    return train_wordpiece(_texts(splits["train"], cfg.task), cfg.vocab_size, lowercase=True, min_frequency=2)


def build_model(cfg: TrainConfig, labels: list[str], splits: dict, log, tokenizer: Tokenizer | None = None):
    """(model, tokenizer): a checkpoint with a new classifier, or a random model from a preset/config."""
    info = dict(crf=cfg.crf, max_length=cfg.max_length)
    if cfg.task == "ner":
        info |= dict(stride=ner_stride(cfg) if ner_stride(cfg) is not None else -1, merge=cfg.merge)
    if cfg.task == "classify":
        info["truncation"] = cfg.truncation
    if cfg.pooling != "cls":
        info["pooling"] = cfg.pooling  # config.json names it only where it is not transformers' [CLS]
    if cfg.task == "ner":
        info["tokens"] = "chars" if all(len(w) == 1 for e in splits["train"][:1000] for w in e.tokens) else "words"
    random_init = cfg.model in PRESETS or cfg.model.endswith(".json")
    if random_init:
        config = BertConfig.from_preset(cfg.model) if cfg.model in PRESETS else BertConfig.from_json_file(cfg.model)
        if tokenizer is None:  # given: the teacher's, when distilling
            tokenizer = _random_init_tokenizer(cfg, splits)
            if torch.distributed.is_initialized():  # every process uses rank 0's (on several machines, its files)
                vocab = [tokenizer.vocab()]
                torch.distributed.broadcast_object_list(vocab, src=0)
                tokenizer = Tokenizer.from_vocab(vocab[0])
            if not (cfg.resume or cfg.tokenizer):
                log(f"trained a {tokenizer.vocab_size}-token WordPiece vocabulary on the training texts (saved with the model)")
        config = dataclasses.replace(config, vocab_size=tokenizer.vocab_size, extra=dict(config.extra))
        d, conv = None, None
    else:
        d, config, conv = read_pretrained(cfg.model)
        tokenizer = tokenizer or Tokenizer.from_pretrained(cfg.tokenizer or d)
        old = config.extra.get("id2label")
        pooled = own.pooling if (own := own_entry(config)) is not None else "cls"
        if old and [old[k] for k in sorted(old, key=int)] != labels or pooled != cfg.pooling:
            # a classifier for other labels, or of another sentence vector: its head starts afresh
            for k in [k for k in conv.state_dict if k.startswith(("classifier.", "cls_head.", "crf."))]:
                del conv.state_dict[k]
    if tokenizer.vocab_size > config.vocab_size:
        raise BertkitError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model's embedding only {config.vocab_size} rows: they do not belong together.")
    if cfg.max_length > config.max_length:
        raise BertkitError(f"--max-length {cfg.max_length} exceeds the model's maximum of {config.max_length} tokens.")
    config = add_bigrams(config, conv, cfg.bigram_buckets, cfg.model)
    if cfg.dropout is not None:
        config = dataclasses.replace(config, hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout, extra=dict(config.extra))
    set_task(config, cfg.task, labels, **info)
    cls = MODEL_CLASSES[cfg.task]
    torch.manual_seed(cfg.seed)  # the same fresh weights on every rank and every run
    try:
        model = cls(config) if random_init else cls.from_converted(d, config, conv, new_heads=True, verbose=False)
    except BertkitError as e:
        raise BertkitError(f"{cfg.model}: {e}") from None
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
    teacher, tok = load_finetuned(cfg.teacher, precision="fp32")  # soft targets in full precision (--bf16 autocasts)
    if task_of(teacher.config).task != cfg.task:
        raise BertkitError(f"the teacher {cfg.teacher} was fine-tuned for {task_of(teacher.config).task}, not {cfg.task}.")
    labels = labels_of(teacher.config)
    unknown = sorted(set(data_labels) - set(labels))
    if unknown:
        raise BertkitError(f"label {unknown[0]!r} of the data is not one the teacher knows ({', '.join(labels)}).")
    return teacher, tok, labels


# ---- the recipe -------------------------------------------------------------------------------


class Finetune:
    """The fine-tuning recipe: a task model on features, with the tricks; a teacher makes it distillation."""

    name = "train"

    def __init__(self, cfg: TrainConfig, dist: Dist, model, tokenizer, splits: dict, feats: dict, labels: list[str],
                 teacher=None, layer_map: list[int] | None = None, soft_targets: str = "logits"):
        self.cfg, self.dist, self.model, self.tokenizer, self.splits = cfg, dist, model, tokenizer, splits
        self.train_f, self.teacher, self.layer_map, self.soft_targets = feats["train"], teacher, layer_map or [], soft_targets
        self.weights = {"loss": 1.0}
        self.curves = (main_metric(cfg.task), ())
        self.pad = model.config.pad_token_id or 0
        self.ema = EMA(model, cfg.ema) if cfg.ema else None
        self.adv = {"fgm": lambda: FGM(model, cfg.adv_eps), "pgd": lambda: PGD(model, cfg.adv_eps)}.get(cfg.adv, lambda: None)()
        weight = None
        if cfg.class_weights:
            f = self.train_f
            ys = f.labels if cfg.task != "ner" else [y for row in f.word_labels for y in row]
            weight = class_weights(torch.bincount(torch.tensor(ys), minlength=len(labels)), cfg.class_weights)
        self.loss_fn = sum_loss(cfg.loss, weight, cfg.focal_gamma, cfg.smoothing)
        self.evaluate_at: set[int] = set()  # steps (0-based) that end an epoch, when --eval-every is 0

    def collate(self, idx: list[int], g) -> dict:
        return collate(self.train_f, idx, self.pad, self.dist.device)

    def counts(self, batch: dict) -> dict[str, float]:
        """The loss is a mean over examples, or (ner) over words."""
        return {"loss": len(batch["labels"]) if "labels" in batch else float(batch["word_mask"].sum())}

    def loss(self, net, batch: dict, g) -> tuple[dict, dict]:
        cfg = self.cfg
        if self.teacher is not None:
            summed, _ = distill_loss(net, self.teacher, batch, self.loss_fn, cfg.temperature, cfg.alpha, cfg.hidden_weight,
                                     self.layer_map, self.soft_targets)
        else:
            summed, _ = loss_of_batch(net, batch, self.loss_fn, cfg.rdrop)
        return {"loss": summed}, {}

    def backward(self, net, loss_of, batch: dict) -> torch.Tensor:
        return adversarial_step(net, loss_of, batch, self.adv)

    def after_step(self) -> None:
        if self.ema is not None:
            self.ema.update()

    def speed(self, batches: list[dict], seconds: float, world: int) -> dict[str, float]:
        return examples_speed(batches, seconds, world)

    def evaluate_due(self, step: int) -> bool:
        return evaluation_due(self.cfg.eval_every, step, self.evaluate_at)

    def evaluate(self, loop: Loop) -> bool:
        """Score dev (with the EMA weights if on), keep the best model; True when early stopping says stop."""
        if not self.splits.get("dev"):
            return False
        with self.ema.applied() if self.ema else nullcontext():  # the best model is saved with the averaged weights
            metrics = evaluate_examples(self.model, self.tokenizer, self.splits["dev"])
            return loop.keep_best(metrics, main_metric(self.cfg.task), self.cfg.patience,
                                  lambda tmp: self.model.save_pretrained(tmp, tokenizer=self.tokenizer))

    def saved(self) -> dict:
        return {"model": self.model}

    def extra_state(self) -> dict:
        return {"ema": self.ema.state_dict() if self.ema else None}

    def load_extra_state(self, saved: dict) -> None:
        if self.ema is not None:
            if saved.get("ema") is None:
                raise BertkitError("--resume: the checkpoint was trained without --ema; resume with the same settings.")
            self.ema.load_state_dict(saved["ema"])

    def finish(self, loop: Loop) -> dict:
        """Save the model when there was no dev split, score dev and test with the best weights, plot."""
        if not self.dist.main:
            return {}
        out, state, cfg = loop.out, loop.state, self.cfg
        if not self.splits.get("dev"):
            with self.ema.applied() if self.ema else nullcontext():
                replace_dir(out / "model", lambda tmp: self.model.save_pretrained(tmp, tokenizer=self.tokenizer))
        best = type(self.model).from_pretrained(out / "model", verbose=False).to(self.dist.device)
        result = {"best_step": state.best_step, "steps": state.step, "labels": labels_of(best.config)}
        for name in ("dev", "test"):
            if self.splits.get(name):
                result[name] = evaluate_examples(best, self.tokenizer, self.splits[name])
        (out / "metrics.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        loop.plot()
        summary = {k: round(v[main_metric(cfg.task)], 4) for k, v in result.items() if k in ("dev", "test")}
        loop.log(f"done: {state.step} steps; {main_metric(cfg.task)} {summary}; model in {out / 'model'}")
        return result


# ---- the command ------------------------------------------------------------------------------


def train(cfg: TrainConfig) -> dict:
    """Fine-tune (or distil), evaluate, and write the output directory; returns the final metrics."""
    if cfg.task not in TASKS:
        raise BertkitError(f"task {cfg.task!r} is not one of {', '.join(TASKS)}.")
    if cfg.adv not in (None, "fgm", "pgd"):
        raise BertkitError(f"--adv {cfg.adv!r} is not fgm or pgd.")
    if cfg.task == "ner" and cfg.stride not in (None, -1):
        check_stride(cfg.stride, cfg.max_length)
    if cfg.merge not in MERGES:
        raise BertkitError(f"--merge {cfg.merge!r} is not one of {', '.join(MERGES)}.")
    if cfg.truncation not in TRUNCATIONS:
        raise BertkitError(f"--truncation {cfg.truncation!r} is not one of {', '.join(TRUNCATIONS)}.")
    if cfg.pooling not in POOLINGS:
        raise BertkitError(f"--pooling {cfg.pooling!r} is not one of {', '.join(POOLINGS)}.")
    if cfg.pooling != "cls" and cfg.task == "ner":
        raise BertkitError("--pooling chooses the sentence vector of classify and pair; ner tags every word.")
    if not cfg.crf_lr > 0:
        raise BertkitError(f"--crf-lr must be a positive multiple of --lr, not {cfg.crf_lr}.")
    if cfg.crf_lr != 1.0 and not cfg.crf:
        raise BertkitError("--crf-lr sets the learning rate of the CRF's scores; the run has no CRF (add --crf).")
    if not 0 < cfg.layer_decay <= 1:
        raise BertkitError(f"--layer-decay must be above 0 and at most 1 (1: every layer at --lr), not {cfg.layer_decay}.")
    if cfg.teacher and cfg.rdrop:
        raise BertkitError("--rdrop cannot be combined with distillation (--teacher): the student's two dropout passes would each need the teacher's targets; use one of them.")
    return in_processes(_train, cfg)


def _train(cfg: TrainConfig, dist: Dist) -> dict:
    log = messages(dist, cfg.quiet)
    out = check_out(cfg, "train_config.json", dist)
    splits = load_splits(cfg)
    labels = make_labels(cfg, splits, log)
    teacher, teacher_tok, layer_map, soft_targets = None, None, [], "logits"
    if cfg.teacher:
        teacher, teacher_tok, labels = load_teacher(cfg, labels)
    model, tokenizer = build_model(cfg, labels, splits, log, teacher_tok)
    set_checkpointing(model, cfg.checkpointing)
    if teacher is not None:
        layer_map = parse_layer_map(cfg.layer_map, model.config.num_hidden_layers, teacher.config.num_hidden_layers)
        soft_targets = resolve_soft_targets(cfg.soft_targets, model, teacher)
        log(f"distillation soft targets: {'the CRF per-word marginals' if soft_targets == 'crf' else 'softmax of the logits'}")
        if cfg.hidden_weight and model.config.hidden_size != teacher.config.hidden_size:
            raise BertkitError(f"--hidden-weight needs the student's hidden size ({model.config.hidden_size}) to equal the teacher's ({teacher.config.hidden_size}).")
        if cfg.init_from_teacher and not cfg.resume:
            init_student(model, teacher, layer_map)
            log(f"student initialised from teacher layers {layer_map}")
        teacher.to(dist.device).eval().requires_grad_(False)
    stride = ner_stride(cfg)
    feats = {name: encode(tokenizer, ex, cfg.task, labels, cfg.max_length, stride, cfg.truncation) for name, ex in splits.items()}
    for name, f in feats.items():
        if f.example_of is not None and len(f) > len(splits[name]):
            log(f"{name}: {len(f) - len(splits[name])} more windows than sentences: the longer sentences are read as windows "
                f"of {cfg.max_length} tokens sharing {stride}")
        if f.truncated:
            log(f"{name}: {len(f.truncated)} of {len(f)} examples truncated to {cfg.max_length} tokens")
        if f.lost_words:
            log(f"{name}: {f.lost_words} words beyond the truncation (or without word pieces) are predicted O")
    try:
        schedule = Schedule(len(feats["train"]), cfg.batch_size, cfg.accum, cfg.seed, dist.rank, dist.world, shared=True)
    except BertkitError:
        raise BertkitError(f"{len(feats['train'])} training examples do not fill one batch over {dist.world} processes x {cfg.accum} accumulation steps.") from None
    total = cfg.max_steps or cfg.epochs * schedule.per_epoch
    model.to(dist.device)
    recipe = Finetune(cfg, dist, model, tokenizer, splits, feats, labels, teacher, layer_map, soft_targets)
    if not cfg.eval_every:
        recipe.evaluate_at = {e * schedule.per_epoch - 1 for e in range(1, cfg.epochs + 1)}
    loop = Loop(cfg, dist, recipe, schedule, tokenizer, out, "train_config.json")
    loop.run(total, cfg.warmup, cfg.schedule)
    return recipe.finish(loop)
