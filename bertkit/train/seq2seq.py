"""Sequence-to-sequence training (`bertkit train seq2seq`): the recipe the training loop (loop.py) runs.

Three shapes of model learn the same source -> target pairs by teacher forcing, with label smoothing:
  - an encoder-decoder (Seq2SeqLM: T5, BART): the encoder reads the source, the decoder the target shifted right;
  - a decoder (CausalLM: GPT-2): `source <end> target <end>`, the loss on the target part only;
  - an encoder with the UniLM mask (BertForMaskedLM, Dong et al. 2019): `[CLS] source [SEP]` as segment 0
    (bidirectional), `target [SEP]` as segment 1 (causal); position t predicts token t + 1 of the target.
    An encoder checkpoint or preset is switched to attention_mode "unilm" here.
The loss is summed over target tokens and normalised by their global count (loop.py). Evaluation generates
for the dev sources (greedy, or beam with --num-beams) and scores exact match, and for generative NER the
token taggers' entity F1 (data/seq2seq.py); the best model by that metric is kept, as fine-tuning does.

A model from a preset or a config.json starts random, with a WordPiece vocabulary trained on the training
sources and targets (Chinese characters one per token); its pad, end ([SEP]) and decoder start ([CLS]) tokens
are that vocabulary's.

Output directory: model/ (the best model with its tokenizer), checkpoint/, log.jsonl, curves.png,
metrics.json (dev and test scores of the best model, and a few of its test predictions), train_config.json.

Why ~400 lines: the recipe (82 lines) plus the three model shapes' encoding, batches and evaluation by generation, which belong to no other module.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoint import read_pretrained
from ..config import PRESETS, BertConfig
from ..data.metrics import entity_scores
from ..data.seq2seq import GENERATIVE, entity_tags, join_cjk, load_seq2seq, parse_entities, read_seq2seq_file
from ..errors import BertkitError
from ..generate import generate
from ..heads import BertForMaskedLM
from ..io.files import existing_dir, replace_dir
from ..seq2seq import IGNORE_INDEX, CausalLM, Seq2SeqLM
from ..tokenizer import Tokenizer, train_wordpiece
from .loop import (
    Dist,
    Loop,
    Schedule,
    check_out,
    evaluation_due,
    examples_speed,
    in_processes,
    messages,
    plain_backward,
)

METRICS = ("auto", "exact", "entities")


@dataclass
class Seq2SeqConfig:
    model: str  # checkpoint directory or hub name (T5, BART, GPT-2, or an encoder: UniLM), a preset, or a config.json
    out: str
    data: str | None = None  # peoples-daily-ner (generative NER) or a directory of train/dev/test .jsonl/.tsv
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    tokenizer: str | None = None  # default: the checkpoint's; for a preset, one trained on the training texts
    vocab_size: int = 8000
    epochs: int = 3
    max_steps: int | None = None
    batch_size: int = 32
    accum: int = 1
    lr: float = 5e-5  # fine-tuning's; a model from scratch wants more (docs/results/seq2seq.md: 1e-3)
    weight_decay: float = 0.01
    warmup: float = 0.1
    schedule: str = "linear"
    clip: float = 1.0
    max_source_length: int = 256  # source tokens; longer sources are cut (and counted in the log)
    max_target_length: int = 64  # target tokens with the end token; also the most a generation writes
    smoothing: float = 0.1  # label smoothing of the teacher-forced cross-entropy
    metric: str = "auto"  # exact | entities (entity F1 of generative NER); auto: entities for peoples-daily-ner
    num_beams: int = 1  # decoding for evaluation: 1 greedy, more: beam search
    eval_limit: int = 0  # dev examples generated at each evaluation during training (0: all); the final scores use all
    bf16: bool = False
    dropout: float | None = None
    seed: int = 42
    eval_every: int = 0  # steps; 0 = at the end of each epoch
    save_every: int = 100
    patience: int = 0
    resume: bool = False
    auto_resume: bool = False  # resume when --out holds a checkpoint of this run, else start afresh (torchrun --max-restarts)
    save_minutes: float | None = None  # also checkpoint once this many minutes have passed since the last checkpoint
    device: str | None = None
    log_every: int = 10
    quiet: bool = False


# ---- data, tokenizer, model ------------------------------------------------------------------------


def load_pairs(cfg: Seq2SeqConfig) -> dict[str, list]:
    splits = load_seq2seq(cfg.data, labelled=True) if cfg.data else {}
    for name in ("train", "dev", "test"):
        if getattr(cfg, name):
            splits[name] = read_seq2seq_file(getattr(cfg, name), labelled=True)
    if not splits.get("train"):
        raise BertkitError("no training data: give --data NAME_OR_DIR or --train FILE.")
    return splits


def metric_of(cfg: Seq2SeqConfig, splits: dict) -> str:
    if cfg.metric not in METRICS:
        raise BertkitError(f"--metric {cfg.metric!r} is not one of {', '.join(METRICS)}.")
    metric = cfg.metric if cfg.metric != "auto" else GENERATIVE.get(str(cfg.data), "exact")
    if metric == "entities" and any(e.tags is None for s in splits.values() for e in s[:1]):
        raise BertkitError("--metric entities scores generative NER (--data peoples-daily-ner), whose sentences carry gold tags.")
    return metric


def build(cfg: Seq2SeqConfig, splits: dict, log):
    """(model, tokenizer): a checkpoint, or a random model from a preset/config with a vocabulary trained here."""
    random_init = cfg.model in PRESETS or cfg.model.endswith(".json")
    if random_init:
        config = BertConfig.from_preset(cfg.model) if cfg.model in PRESETS else BertConfig.from_json_file(cfg.model)
        if cfg.resume:
            tok = Tokenizer.from_pretrained(existing_dir(Path(cfg.out) / "checkpoint") / "model")
        elif cfg.tokenizer:
            tok = Tokenizer.from_pretrained(cfg.tokenizer)
        else:
            tok = train_wordpiece([t for e in splits["train"] for t in (e.source, e.target)], cfg.vocab_size, lowercase=False)
            log(f"trained a {tok.vocab_size}-token WordPiece vocabulary on the training sources and targets (saved with the model)")
        ids = dict(vocab_size=tok.vocab_size, pad_token_id=tok.pad_token_id)
        if config.is_decoder or config.is_encoder_decoder:
            ids |= dict(eos_token_id=tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id,
                        decoder_start_token_id=tok.cls_token_id if tok.cls_token_id is not None else tok.pad_token_id)
        config = dataclasses.replace(config, **ids, extra=dict(config.extra))
        d, conv = None, None
    else:
        d, config, conv = read_pretrained(cfg.model)
        tok = Tokenizer.from_pretrained(cfg.tokenizer or d)
    if not (config.is_decoder or config.is_encoder_decoder):
        config = dataclasses.replace(config, attention_mode="unilm", extra=dict(config.extra))  # an encoder learns seq2seq as UniLM
        if not tok.is_bert:
            raise BertkitError("a UniLM encoder reads [CLS] source [SEP] target [SEP]: it needs a BERT tokenizer.")
    if cfg.dropout is not None:
        config = dataclasses.replace(config, hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout, extra=dict(config.extra))
    if tok.vocab_size > config.vocab_size:
        raise BertkitError(f"the tokenizer has {tok.vocab_size} tokens but the model's embedding only {config.vocab_size} rows: they do not belong together.")
    config.extra["bertkit"] = {**config.extra.get("bertkit", {}), "task": "seq2seq"}  # `generate` then reads a prompt as a source
    cls = CausalLM if config.is_decoder else Seq2SeqLM if config.is_encoder_decoder else BertForMaskedLM
    torch.manual_seed(cfg.seed)
    try:
        model = cls(config) if random_init else cls.from_converted(d, config, conv, new_heads=True, verbose=False)
    except BertkitError as e:
        raise BertkitError(f"{cfg.model}: {e}") from None
    if end_of(model, tok) is None:
        raise BertkitError(f"{cfg.model}: neither the config nor the tokenizer names an end token to end the targets with.")
    return model, tok


def end_of(model, tok: Tokenizer) -> int | None:
    """The token a target ends with: the model's eos, else the tokenizer's end or [SEP]."""
    c = model.config
    if c.is_decoder or c.is_encoder_decoder:
        return next((i for i in (c.eos_token_id, tok.eos_token_id, tok.sep_token_id) if i is not None), None)
    return tok.sep_token_id


@dataclass
class Encoded:
    sources: list[list[int]]  # source ids as each shape reads them (with the tokenizer's special tokens)
    targets: list[list[int]]  # target ids ending with the end token
    cut: int  # sources cut to max_source_length


def encode_pairs(model, tok: Tokenizer, examples: list, cfg: Seq2SeqConfig) -> Encoded:
    c = model.config
    end = end_of(model, tok)
    room = cfg.max_source_length
    if c.is_encoder_decoder:
        sources = tok([e.source for e in examples], max_length=room, padding=False, return_tensors=None)["input_ids"]
    elif c.is_decoder:  # source <end>: the end token separates the two
        raw = tok([e.source for e in examples], max_length=room, padding=False, truncation=True, return_tensors=None, add_special_tokens=False)
        sources = [s + [end] for s in raw["input_ids"]]
    else:  # [CLS] source [SEP]
        sources = tok([e.source for e in examples], max_length=room, padding=False, return_tensors=None)["input_ids"]
    cut = len(tok.last_truncated)
    pieces = tok([e.target or " " for e in examples], padding=False, truncation=False, return_tensors=None, add_special_tokens=False)
    targets = [(ids if e.target else [])[: cfg.max_target_length - 1] + [end] for ids, e in zip(pieces["input_ids"], examples)]
    return Encoded(sources, targets, cut)


def check_lengths(model, cfg: Seq2SeqConfig) -> None:
    c = model.config
    need = cfg.max_source_length + cfg.max_target_length if not c.is_encoder_decoder else max(cfg.max_source_length, cfg.max_target_length)
    if c.position_embedding_type != "bucketed" and need > c.max_length:
        what = "--max-source-length + --max-target-length" if not c.is_encoder_decoder else "--max-source-length and --max-target-length"
        raise BertkitError(f"{what} ({need}) exceed the model's maximum of {c.max_length} positions.")


# ---- batches and the loss -----------------------------------------------------------------------------


def collate(model, data: Encoded, idx: list[int], pad: int, device) -> dict[str, torch.Tensor]:
    """A padded batch of the pairs `idx` in the model's shape, with labels IGNORE_INDEX where nothing is learnt."""
    c = model.config
    if c.is_encoder_decoder:
        S, T = max(len(data.sources[i]) for i in idx), max(len(data.targets[i]) for i in idx)
        ids = torch.tensor([data.sources[i] + [pad] * (S - len(data.sources[i])) for i in idx])
        labels = torch.tensor([data.targets[i] + [IGNORE_INDEX] * (T - len(data.targets[i])) for i in idx])
        batch = {"input_ids": ids, "attention_mask": _mask([data.sources[i] for i in idx], S), "labels": labels}
    else:  # source and target in one row; the labels are the next tokens of the target part
        rows = [data.sources[i] + data.targets[i] for i in idx]
        L = max(len(r) for r in rows)
        ids = torch.tensor([r + [pad] * (L - len(r)) for r in rows])
        labels = torch.full_like(ids, IGNORE_INDEX)
        types = torch.zeros_like(ids)
        for r, i in enumerate(idx):
            s, t = len(data.sources[i]), len(data.targets[i])
            labels[r, s - 1:s + t - 1] = torch.tensor(data.targets[i])  # position p predicts token p + 1
            types[r, s:s + t] = 1
        batch = {"input_ids": ids, "attention_mask": _mask(rows, L), "labels": labels}
        if not c.is_decoder:
            batch["token_type_ids"] = types
    return {k: v.to(device) for k, v in batch.items()}


def _mask(rows: list[list[int]], L: int) -> torch.Tensor:
    return (torch.arange(L)[None] < torch.tensor([len(r) for r in rows])[:, None]).long()


def summed_loss(net, batch: dict, smoothing: float) -> torch.Tensor:
    """Cross-entropy summed over the labelled target tokens (the loop divides by their global count)."""
    labels = batch["labels"]
    module = getattr(net, "module", net)
    if isinstance(module, Seq2SeqLM):
        logits = net(batch["input_ids"], batch["attention_mask"], labels=None,
                     decoder_input_ids=module.shift_right(labels)).logits  # [B, T, V]
    elif isinstance(module, CausalLM):
        logits = net(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    else:  # UniLM: the MLM head only at the positions that predict a target token
        h = module.bert(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).last_hidden_state
        picked = labels != IGNORE_INDEX
        logits = module.mlm(h[picked], module.bert.embed.word.weight)
        return F.cross_entropy(logits.float(), labels[picked], reduction="sum", label_smoothing=smoothing)
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum",
                           label_smoothing=smoothing)


# ---- evaluation by generation ---------------------------------------------------------------------------


def predict(model, tok: Tokenizer, data: Encoded, cfg: Seq2SeqConfig, limit: int = 0, batch_size: int = 32) -> list[list[int]]:
    """Generated target ids (without the end token) for the first `limit` sources (0: all), sorted by length in batches."""
    n = len(data.sources) if not limit else min(limit, len(data.sources))
    order = sorted(range(n), key=lambda i: len(data.sources[i]))
    end = end_of(model, tok)
    out: dict[int, list[int]] = {}
    was = model.training
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        rows = generate(model, [data.sources[i] for i in idx], max_new_tokens=cfg.max_target_length,
                        strategy="beam" if cfg.num_beams > 1 else "greedy", num_beams=cfg.num_beams, end_id=end)
        for i, row in zip(idx, rows):
            out[i] = row[:-1] if row and row[-1] == end else row
    model.train(was)
    return [out[i] for i in range(n)]


def scores(examples: list, data: Encoded, predicted: list[list[int]], tok: Tokenizer, metric: str) -> dict:
    n = len(predicted)
    exact = sum(p == t[:-1] for p, t in zip(predicted, data.targets[:n])) / max(n, 1)
    result = {"exact_match": exact, "examples": n}
    if metric == "entities":
        texts = [tok.decode(p) for p in predicted]
        gold = [e.tags for e in examples[:n]]
        pred = [entity_tags(e.source, parse_entities(t)) for e, t in zip(examples[:n], texts)]
        ent = entity_scores(gold, pred)
        result |= {"entity_f1": ent["f1"], "entity_precision": ent["precision"], "entity_recall": ent["recall"], "per_type": ent["per_type"]}
    return result


def main_key(metric: str) -> str:
    return "entity_f1" if metric == "entities" else "exact_match"


# ---- the recipe ----------------------------------------------------------------------------------------------


class Seq2Seq:
    """Teacher-forced seq2seq on one of three model shapes; evaluation by generation."""

    name = "train seq2seq"

    def __init__(self, cfg: Seq2SeqConfig, dist: Dist, model, tok: Tokenizer, splits: dict, encoded: dict, metric: str):
        self.cfg, self.dist, self.model, self.tok, self.splits, self.encoded, self.metric = cfg, dist, model, tok, splits, encoded, metric
        self.weights = {"loss": 1.0}
        self.curves = (main_key(metric), ())
        self.pad = tok.fill_id
        self.evaluate_at: set[int] = set()

    def collate(self, idx: list[int], g) -> dict:
        return collate(self.model, self.encoded["train"], idx, self.pad, self.dist.device)

    def counts(self, batch: dict) -> dict[str, float]:
        return {"loss": float((batch["labels"] != IGNORE_INDEX).sum())}  # target tokens

    def loss(self, net, batch: dict, g) -> tuple[dict, dict]:
        return {"loss": summed_loss(net, batch, self.cfg.smoothing)}, {}

    def backward(self, net, loss_of, batch: dict) -> torch.Tensor:
        return plain_backward(net, loss_of, batch)

    def after_step(self) -> None:
        """Nothing: seq2seq training keeps no weight average."""

    def speed(self, batches: list[dict], seconds: float, world: int) -> dict[str, float]:
        return examples_speed(batches, seconds, world)

    def evaluate_due(self, step: int) -> bool:
        return evaluation_due(self.cfg.eval_every, step, self.evaluate_at)

    def evaluate(self, loop: Loop) -> bool:
        if not self.splits.get("dev"):
            return False
        self.model.eval()
        with torch.no_grad():
            predicted = predict(self.model, self.tok, self.encoded["dev"], self.cfg, self.cfg.eval_limit)
        metrics = scores(self.splits["dev"], self.encoded["dev"], predicted, self.tok, self.metric)
        return loop.keep_best(metrics, main_key(self.metric), self.cfg.patience,
                              lambda tmp: self.model.save_pretrained(tmp, tokenizer=self.tok), f" on {metrics['examples']}")

    def saved(self) -> dict:
        return {"model": self.model}

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, saved: dict) -> None:
        """Nothing to restore: extra_state holds nothing (the model and optimizer are the loop's)."""

    def finish(self, loop: Loop) -> dict:
        if not self.dist.main:
            return {}
        out, state = loop.out, loop.state
        if not self.splits.get("dev"):
            replace_dir(out / "model", lambda tmp: self.model.save_pretrained(tmp, tokenizer=self.tok))
        best = type(self.model).from_pretrained(out / "model", verbose=False).to(self.dist.device).eval()
        result: dict = {"best_step": state.best_step, "steps": state.step, "metric": main_key(self.metric)}
        for name in ("dev", "test"):
            if self.splits.get(name):
                with torch.no_grad():
                    predicted = predict(best, self.tok, self.encoded[name], self.cfg)
                result[name] = scores(self.splits[name], self.encoded[name], predicted, self.tok, self.metric)
                if name == "test":
                    shown = (lambda ids: join_cjk(self.tok.decode(ids))) if self.tok.is_bert else self.tok.decode
                    result["test_samples"] = [{"source": e.source, "target": e.target, "generated": shown(p)}
                                              for e, p in list(zip(self.splits[name], predicted))[:5]]
        (out / "metrics.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        loop.plot()
        summary = {k: round(v[main_key(self.metric)], 4) for k, v in result.items() if k in ("dev", "test")}
        loop.log(f"done: {state.step} steps; {main_key(self.metric)} {summary}; model in {out / 'model'}")
        return result


def train_seq2seq(cfg: Seq2SeqConfig) -> dict:
    """Train a seq2seq model, evaluate it by generation, and write the output directory; returns the final metrics."""
    for name in ("max_source_length", "max_target_length", "num_beams"):
        if getattr(cfg, name) < 1:
            raise BertkitError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(cfg, name)}.")
    if cfg.max_target_length < 2:
        raise BertkitError("--max-target-length must leave room for a token beside the end token (at least 2).")
    return in_processes(_train, cfg)


def _train(cfg: Seq2SeqConfig, dist: Dist) -> dict:
    log = messages(dist, cfg.quiet)
    out = check_out(cfg, "train_config.json", dist)
    splits = load_pairs(cfg)
    metric = metric_of(cfg, splits)
    model, tok = build(cfg, splits, log)
    check_lengths(model, cfg)
    encoded = {name: encode_pairs(model, tok, ex, cfg) for name, ex in splits.items()}
    for name, e in encoded.items():
        if e.cut:
            log(f"{name}: {e.cut} of {len(e.sources)} sources cut to {cfg.max_source_length} tokens")
        long = sum(len(t) == cfg.max_target_length for t in e.targets)
        if long:
            log(f"{name}: {long} targets cut to {cfg.max_target_length} tokens (with the end token)")
    try:
        schedule = Schedule(len(encoded["train"].sources), cfg.batch_size, cfg.accum, cfg.seed, dist.rank, dist.world, shared=True)
    except BertkitError:
        raise BertkitError(f"{len(splits['train'])} training examples do not fill one batch over {dist.world} processes x {cfg.accum} accumulation steps.") from None
    total = cfg.max_steps or cfg.epochs * schedule.per_epoch
    model.to(dist.device)
    recipe = Seq2Seq(cfg, dist, model, tok, splits, encoded, metric)
    if not cfg.eval_every:
        recipe.evaluate_at = {e * schedule.per_epoch - 1 for e in range(1, cfg.epochs + 1)}
    loop = Loop(cfg, dist, recipe, schedule, tok, out, "train_config.json")
    loop.run(total, cfg.warmup, cfg.schedule)
    return recipe.finish(loop)
