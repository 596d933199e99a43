"""Pretraining: MLM with dynamic (optionally whole-word) masking, MLM+NSP, MLM+SOP, and ELECTRA's
replaced-token detection, on a prepared corpus (corpus.py), with the fine-tuning trainer's
machinery (warm-up, bf16, accumulation, exact resume, progress, curves, torchrun DDP).

    for step in range(state.step, total):
        rows   = this rank's examples of the step (a permutation fixed by seed and epoch)
        batch  = [CLS] A [SEP] (B [SEP]) padded; masked afresh with a generator seeded by (seed, step, rank)
        loss   = MLM at the masked positions only (+ NSP/SOP, or ELECTRA's 50 x discriminator loss)

References: Devlin et al. 2018 (MLM 15% with 80/10/10, NSP); Liu et al. 2019 (dynamic masking);
Cui et al. 2019 (whole-word masking for Chinese); Lan et al. 2019 (SOP); Clark et al. 2020 (ELECTRA).
Shapes: B batch, T length, V vocabulary, M masked positions.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import PRESETS, BertConfig
from .corpus import ZH_CORPUS, Corpus, prepare
from .errors import BertkitError
from .heads import IGNORE_INDEX, BertForMaskedLM, BertForPreTraining, ElectraForPreTraining, masked_lm_loss
from .tokenizer import Tokenizer
from .train import Dist, StepLog, _progress, existing_dir, plot_curves, replace_dir, set_checkpointing
from .tricks import make_optimizer, warmup_schedule

OBJECTIVES = ("mlm", "mlm+nsp", "mlm+sop", "electra")


@dataclass
class PretrainConfig:
    model: str  # a preset, a config.json (random init) or a checkpoint directory (continued pretraining)
    out: str
    corpus: str = ZH_CORPUS  # zh-corpus, a text file, or a prepared corpus directory
    tokenizer: str | None = None  # default: the checkpoint's, or the prepared corpus's
    objective: str = "mlm"
    wwm: bool = False  # whole-word masking
    max_steps: int | None = None
    minutes: float | None = None  # a wall-clock budget instead of max_steps
    batch_size: int = 64  # global
    accum: int = 1
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup: float = 0.06
    schedule: str = "linear"
    clip: float = 1.0
    max_length: int = 128
    mask_rate: float = 0.15
    bf16: bool = False
    checkpointing: bool = False  # activation checkpointing: recompute each layer in backward (long sequences)
    electra_weight: float = 50.0  # discriminator loss weight (Clark et al.)
    generator_fraction: float = 0.5  # generator hidden size / discriminator's
    seed: int = 42
    save_every: int = 200
    resume: bool = False
    device: str | None = None
    log_every: int = 10
    quiet: bool = False


@dataclass
class PretrainState:
    step: int = 0
    total: int = 0  # fixed once: from max_steps, or from the time budget after a measured step


# ---- examples: packing sentences into sequences ---------------------------------------------


def pack(corpus: Corpus, shards: list[int], max_length: int, pairs: str | None, seed: int) -> np.ndarray:
    """Examples as rows (shard, a0, a1, b0, b1, label): token ranges in the shard's ids.

    pairs None: the shard's tokens cut into pieces of max_length - 2, running on across sentences and
    documents as RoBERTa's FULL-SENTENCES (no padding wasted; b0 = b1 = -1).
    pairs "nsp" / "sop": consecutive sentences of a document gathered up to max_length - 3 tokens and
    cut at a random sentence boundary into A and B. NSP: half the B's are replaced by a span of a random
    other document (label 1 = not next); SOP: half the pairs are swapped (label 1 = swapped).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for si in shards:
        shard = corpus.shards[si]
        if pairs is None:  # the shard's token stream cut into full sequences, across documents (RoBERTa)
            z = len(shard.ids)
            rows += [(si, s, min(s + max_length - 2, z), -1, -1, -1) for s in range(0, z, max_length - 2)]
            continue
        docs = list(shard.documents())
        for d, sents in enumerate(docs):
            chunk: list[tuple[int, int]] = []
            for k, sent in enumerate(sents):
                chunk.append(sent)
                if chunk[-1][1] - chunk[0][0] >= max_length - 3 or k == len(sents) - 1:
                    if chunk[-1][1] - chunk[0][0] >= 2:  # room for a token in A and in B
                        rows.append(_pair(chunk, docs, d, si, max_length - 3, pairs, rng))
                    chunk = []
    return np.asarray(rows, dtype=np.int64).reshape(-1, 6)


def _pair(chunk, docs, d, si, room, kind, rng) -> tuple:
    if len(chunk) == 1:  # one sentence: cut it in the middle
        a0, z = chunk[0]
        a1 = b0 = a0 + max((z - a0) // 2, 1)
        b1 = z
    else:
        k = int(rng.integers(1, len(chunk)))
        a0, a1, b0, b1 = chunk[0][0], chunk[k - 1][1], chunk[k][0], chunk[-1][1]
    label = 0
    if kind == "nsp" and len(docs) > 1 and rng.random() < 0.5:
        other = int(rng.integers(len(docs) - 1))
        other += other >= d  # any document but this one
        o_sents = docs[other]
        start = o_sents[int(rng.integers(len(o_sents)))][0]
        b0, b1, label = start, min(start + (b1 - b0), o_sents[-1][1]), 1
    while (a1 - a0) + (b1 - b0) > room:  # trim the longer segment from its end, as BERT does
        if a1 - a0 > b1 - b0:
            a1 -= 1
        else:
            b1 -= 1
    if kind == "sop" and rng.random() < 0.5:
        (a0, a1), (b0, b1), label = (b0, b1), (a0, a1), 1
    return si, a0, a1, b0, b1, label


def make_batch(corpus: Corpus, rows: np.ndarray, ids: dict) -> dict[str, torch.Tensor]:
    """[CLS] A [SEP] (B [SEP]) per row, right-padded: input_ids, token_type_ids, attention_mask,
    special (bool: [CLS]/[SEP]/padding, never masked), starts (word starts), nsp_labels."""
    seqs, types, starts = [], [], []
    for si, a0, a1, b0, b1, _ in rows:
        shard = corpus.shards[si]
        a = shard.ids[a0:a1].astype(np.int64)
        w = shard.starts[a0:a1] if shard.starts is not None else np.ones(len(a), np.uint8)
        seq, ty, st = [ids["cls"], *a, ids["sep"]], [0] * (len(a) + 2), [1, *w, 1]
        if b0 >= 0:
            b = shard.ids[b0:b1].astype(np.int64)
            wb = shard.starts[b0:b1] if shard.starts is not None else np.ones(len(b), np.uint8)
            seq, ty, st = seq + [*b, ids["sep"]], ty + [1] * (len(b) + 1), st + [*wb, 1]
        seqs.append(seq)
        types.append(ty)
        starts.append(st)
    T = max(len(s) for s in seqs)
    out = {k: torch.zeros(len(seqs), T, dtype=torch.long) for k in ("input_ids", "token_type_ids", "attention_mask", "starts")}
    out["input_ids"].fill_(ids["pad"])
    for r, (s, ty, st) in enumerate(zip(seqs, types, starts)):
        n = len(s)
        out["input_ids"][r, :n] = torch.tensor(s)
        out["token_type_ids"][r, :n] = torch.tensor(ty)
        out["attention_mask"][r, :n] = 1
        out["starts"][r, :n] = torch.tensor(st, dtype=torch.long)
    out["special"] = (out["attention_mask"] == 0) | (out["input_ids"] == ids["cls"]) | (out["input_ids"] == ids["sep"])
    out["starts"] = out["starts"].bool()
    out["nsp_labels"] = torch.as_tensor(rows[:, 5].copy())
    return out


# ---- masking -------------------------------------------------------------------------------------


def mask_tokens(input_ids, special, mask_id: int, random_ids: torch.Tensor, rate: float = 0.15,
                starts=None, generator: torch.Generator | None = None):
    """Dynamic MLM masking -> (masked input_ids, labels with IGNORE_INDEX where nothing is predicted).

    Each maskable token (not special, not padding) is chosen with probability `rate`; with `starts`
    (whole-word masking) each *word* is chosen with that probability and all its pieces go together.
    Of the chosen: 80% become [MASK], 10% a random token from `random_ids`, 10% stay.
    """
    g = generator
    maskable = ~special  # [B, T]
    if starts is None:
        chosen = (torch.rand(input_ids.shape, generator=g) < rate) & maskable
    else:
        word = torch.cumsum(starts & maskable, dim=1)  # [B, T] word number of each token (0 before the first)
        pick = torch.rand(input_ids.shape, generator=g) < rate  # a draw per position; a word uses its start's
        word_pick = torch.zeros(input_ids.shape[0], input_ids.shape[1] + 1, dtype=torch.long)
        word_pick.scatter_reduce_(1, word, (pick & starts & maskable).long(), reduce="amax")  # [B, T + 1]: chosen words
        chosen = word_pick.gather(1, word).bool() & maskable & (word > 0)
    labels = input_ids.masked_fill(~chosen, IGNORE_INDEX)
    roll = torch.rand(input_ids.shape, generator=g)
    to_mask = chosen & (roll < 0.8)
    to_random = chosen & (roll >= 0.8) & (roll < 0.9)
    out = input_ids.masked_fill(to_mask, mask_id)
    randoms = random_ids[torch.randint(len(random_ids), input_ids.shape, generator=g)]
    return torch.where(to_random, randoms, out), labels


# ---- models --------------------------------------------------------------------------------------


class ElectraPretrainer(nn.Module):
    """A small generator (an MLM) and the discriminator, sharing the embedding tables (Clark et al. 2020)."""

    def __init__(self, discriminator: ElectraForPreTraining, generator: BertForMaskedLM):
        super().__init__()
        self.discriminator, self.generator = discriminator, generator
        d, g = discriminator.bert.embed, generator.bert.embed
        g.word, g.segment, g.position = d.word, d.segment, d.position

    def forward(self, batch, labels, generator: torch.Generator | None, weight: float):
        gen = self.generator(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], labels=labels)
        picked = labels != IGNORE_INDEX
        with torch.no_grad():  # sample the replacements from the generator (no gradient through sampling)
            probs = gen.logits.float().softmax(-1)  # [M, V]
            sampled = torch.multinomial(probs, 1, generator=generator).squeeze(1) if len(probs) else labels[picked]
        original = batch["input_ids"].clone()
        original[picked] = labels[picked]  # the masked input with the true tokens back
        corrupted = original.clone()
        corrupted[picked] = sampled.to(corrupted.device)
        replaced = (corrupted != original).long()  # [B, T]: exactly the positions that changed
        disc = self.discriminator(corrupted, batch["attention_mask"], batch["token_type_ids"], labels=replaced)
        return gen, disc, replaced


def generator_config(c: BertConfig, fraction: float) -> BertConfig:
    H = max(int(c.hidden_size * fraction) // c.head_size, 1) * c.head_size
    return dataclasses.replace(c, hidden_size=H, num_attention_heads=H // c.head_size,
                               intermediate_size=max(int(c.intermediate_size * fraction), 1),
                               embedding_size=c.embed_size, extra={})


def small_model_note(c: BertConfig) -> str | None:
    """A note for a narrow model pretrained from scratch with BERT's init (std 0.02, set for 768-wide layers) and
    learned positions: its attention tends to stay uniform, so it never learns to use context
    (docs/results-pretrain-ablation.md)."""
    if c.hidden_size <= 256 and c.initializer_range <= 0.02 and c.position_embedding_type == "absolute":
        return (f"note: a {c.hidden_size}-wide model with init std {c.initializer_range} and learned positions often never learns to "
                "use context when pretrained from scratch; the roformer-tiny-zh preset (rotary positions, std 0.05) does "
                "(docs/results-pretrain-ablation.md).")
    return None


def build_model(cfg: PretrainConfig, tokenizer: Tokenizer, log):
    """The model to pretrain: random from a preset/config.json, or a checkpoint (its missing heads initialised)."""
    random_init = cfg.model in PRESETS or cfg.model.endswith(".json")
    if random_init:
        config = BertConfig.from_preset(cfg.model) if cfg.model in PRESETS else BertConfig.from_json_file(cfg.model)
        config = dataclasses.replace(config, vocab_size=tokenizer.vocab_size, extra=dict(config.extra))
        if cfg.objective == "electra" and config.model_type == "bert":
            config = dataclasses.replace(config, model_type="electra", extra=dict(config.extra))
        torch.manual_seed(cfg.seed)
        note = small_model_note(config)
        if note:
            log(note)
    else:
        from .checkpoint import read_pretrained

        d, config, conv = read_pretrained(cfg.model)
    if tokenizer.vocab_size > config.vocab_size:
        raise BertkitError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model's embedding only {config.vocab_size} rows: they do not belong together.")
    if cfg.max_length > config.max_length:
        raise BertkitError(f"--max-length {cfg.max_length} exceeds the model's maximum of {config.max_length} tokens.")
    cls = {"mlm": BertForMaskedLM, "mlm+nsp": BertForPreTraining, "mlm+sop": BertForPreTraining, "electra": ElectraForPreTraining}[cfg.objective]
    if random_init:
        model = cls(config)
    else:
        model = cls.from_converted(d, config, conv, new_heads=True, verbose=False)
        if model.load_report.initialised:
            log(model.load_report.describe())
    if cfg.objective == "electra":
        torch.manual_seed(cfg.seed + 1)
        model = ElectraPretrainer(model, BertForMaskedLM(generator_config(config, cfg.generator_fraction)))
    return model


# ---- the loop ------------------------------------------------------------------------------------


def resolve_corpus(cfg: PretrainConfig, tokenizer_dir: str | None, out: Path, log) -> tuple[Corpus, Tokenizer]:
    """A prepared corpus directory as is; a name or text file prepared into out/corpus with the tokenizer."""
    path = Path(cfg.corpus)
    if (path / "meta.json").is_file():
        corpus = Corpus(path)
        tokenizer = Tokenizer.from_pretrained(tokenizer_dir or path)
        if tokenizer.vocab() != Tokenizer.from_pretrained(path).vocab():
            raise BertkitError(f"{path} was prepared with another vocabulary than {tokenizer_dir}; prepare it again.")
        if cfg.wwm and not corpus.meta["wwm"]:
            raise BertkitError(f"{path} was prepared without word starts; prepare it with --wwm for whole-word masking.")
        return corpus, tokenizer
    if tokenizer_dir is None:
        raise BertkitError("--tokenizer is needed to prepare a text corpus (build one with `bertkit vocab build`).")
    tokenizer = Tokenizer.from_pretrained(tokenizer_dir)
    target = out / "corpus"
    if existing_dir(target) is None or not (target / "meta.json").is_file():
        log(f"preparing {cfg.corpus} into {target}")
        prepare(cfg.corpus, tokenizer, target, wwm=cfg.wwm)
    return Corpus(target), tokenizer


def pretrain(cfg: PretrainConfig) -> dict:
    if cfg.objective not in OBJECTIVES:
        raise BertkitError(f"objective {cfg.objective!r} is not one of {', '.join(OBJECTIVES)}.")
    if (cfg.max_steps is None) == (cfg.minutes is None):
        raise BertkitError("give exactly one of --max-steps and --minutes.")
    if cfg.minutes is not None and cfg.minutes <= 0:
        raise BertkitError(f"--minutes must be positive, not {cfg.minutes}.")
    dist = Dist.start(cfg.device)
    try:
        return _pretrain(cfg, dist)
    finally:
        dist.stop()


def _pretrain(cfg: PretrainConfig, dist: Dist) -> dict:
    out = Path(cfg.out)
    log = (lambda msg: print(msg, file=sys.stderr)) if dist.main and not cfg.quiet else (lambda msg: None)
    if not cfg.resume and out.exists() and any(out.iterdir()):
        raise BertkitError(f"{out} is not empty; choose a new --out, or pass --resume to continue the run in it.")
    if cfg.resume:
        _check_resume(cfg, out)
    tokenizer_dir = cfg.tokenizer or (cfg.model if not (cfg.model in PRESETS or cfg.model.endswith(".json")) else None)
    if dist.world > 1 and not (Path(cfg.corpus) / "meta.json").is_file():
        raise BertkitError("with several processes, prepare the corpus first (`bertkit corpus prepare`) and pass its directory: each process reads its own shards.")
    staging = out if cfg.resume or not dist.main else Path(_staging(out))  # the run's files gather here, then appear at once
    try:
        corpus, tokenizer = resolve_corpus(cfg, tokenizer_dir, staging, log)
        model = build_model(cfg, tokenizer, log)
        set_checkpointing(model, cfg.checkpointing)
        pairs = {"mlm+nsp": "nsp", "mlm+sop": "sop"}.get(cfg.objective)
        mine = list(range(len(corpus.shards)))[dist.rank::dist.world] if len(corpus.shards) >= dist.world else list(range(len(corpus.shards)))
        rows = pack(corpus, mine, cfg.max_length, pairs, cfg.seed)
        if len(corpus.shards) < dist.world:
            rows = rows[dist.rank::dist.world]
        local = cfg.batch_size // dist.world
        if local < cfg.accum or len(rows) < local:
            raise BertkitError(f"{len(rows)} sequences cannot fill a batch of {local} per process with {cfg.accum} accumulation steps.")
        log(f"{corpus.tokens:,} tokens in {len(corpus.shards)} shards -> {len(rows):,} sequences of up to {cfg.max_length} tokens on this process")
        run = Runner(cfg, dist, model, tokenizer, corpus, rows)
        if cfg.minutes is not None and not cfg.resume:
            run.state.total = run.budget_steps(cfg.minutes * 60)
            log(f"{cfg.minutes:g} minutes ~ {run.state.total} steps")
        elif cfg.max_steps is not None:
            run.state.total = cfg.max_steps
        if not cfg.resume and dist.main:  # everything checked and measured: the run's directory appears
            (staging / "pretrain_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
            if dist.world > 1:
                torch.distributed.barrier()
            _publish(staging, out)
        elif dist.world > 1 and not cfg.resume:
            torch.distributed.barrier()
    except BaseException:
        if not cfg.resume and dist.main:
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
        raise
    run.corpus = Corpus(out / "corpus") if (out / "corpus" / "meta.json").is_file() and Path(cfg.corpus) != out / "corpus" else corpus
    return run.loop(out)


def _staging(out: Path) -> str:
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent)


def _publish(staging: Path, out: Path) -> None:
    if out.exists():
        out.rmdir()
    staging.rename(out)


def _check_resume(cfg: PretrainConfig, out: Path) -> None:
    if existing_dir(out / "checkpoint") is None:
        raise BertkitError(f"--resume: {out} has no checkpoint to resume from.")
    saved = json.loads((out / "pretrain_config.json").read_text(encoding="utf-8"))
    now = dataclasses.asdict(cfg)
    changed = [k for k in now if k not in ("resume", "quiet", "device", "log_every", "save_every") and saved.get(k) != now[k]]
    if changed:
        k = changed[0]
        raise BertkitError(f"--resume: --{k.replace('_', '-')} was {saved.get(k)!r} when the run started, now {now[k]!r}; resume with the same settings.")


class Runner:
    """The step loop and its checkpoints."""

    def __init__(self, cfg: PretrainConfig, dist: Dist, model, tokenizer: Tokenizer, corpus: Corpus, rows: np.ndarray):
        self.cfg, self.dist, self.tokenizer, self.corpus, self.rows = cfg, dist, tokenizer, corpus, rows
        self.model = model.to(dist.device)
        self.net = model if dist.world == 1 else nn.parallel.DistributedDataParallel(model)
        self.optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
        self.state = PretrainState()
        vocab = tokenizer.vocab()
        self.ids = {k: vocab[t] for k, t in (("cls", "[CLS]"), ("sep", "[SEP]"), ("pad", "[PAD]"), ("mask", "[MASK]"))}
        specials = {vocab[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if t in vocab}
        self.random_ids = torch.tensor([i for i in range(tokenizer.vocab_size) if i not in specials])
        self.autocast = torch.autocast(dist.device.type, dtype=torch.bfloat16) if cfg.bf16 else nullcontext()

    def batch_rows(self, step: int) -> list[np.ndarray]:
        """This rank's micro-batches of the step: a permutation of its sequences fixed by (seed, epoch)."""
        local = self.cfg.batch_size // self.dist.world
        per_epoch = len(self.rows) // local
        epoch, i = divmod(step, per_epoch)
        if getattr(self, "_epoch", None) != epoch:
            self._order = torch.randperm(len(self.rows), generator=torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)).numpy()
            self._epoch = epoch
        picked = self.rows[self._order[i * local:(i + 1) * local]]
        return [picked[j::self.cfg.accum] for j in range(self.cfg.accum)]

    def step(self, step: int) -> dict:
        """One optimizer step; returns its metrics."""
        cfg, dev = self.cfg, self.dist.device
        g = torch.Generator().manual_seed(hash((cfg.seed, step, self.dist.rank)) % (2**63))
        torch.manual_seed(hash((cfg.seed, step, self.dist.rank, 1)) % (2**63))  # dropout
        self.model.train()
        micros = self.batch_rows(step)
        sums: dict[str, float] = {"tokens": 0.0}
        for j, rows in enumerate(micros):
            b = make_batch(self.corpus, rows, self.ids)
            input_ids, labels = mask_tokens(b["input_ids"], b["special"], self.ids["mask"], self.random_ids, cfg.mask_rate,
                                            b["starts"] if cfg.wwm else None, g)
            b = {k: v.to(dev) for k, v in b.items()} | {"input_ids": input_ids.to(dev)}
            sums["tokens"] += float(b["attention_mask"].sum()) * self.dist.world * len(micros)  # summed below / len
            sync = self.net.no_sync() if self.dist.world > 1 and j < len(micros) - 1 else nullcontext()
            with sync:
                with self.autocast:
                    loss, metrics = self.objective(b, labels.to(dev), g)
                (loss / len(micros)).backward()
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v / len(micros)
        sums["tokens"] /= len(micros)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip if cfg.clip > 0 else float("inf"))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return sums | {"grad_norm": float(norm)}

    def objective(self, b, labels, g) -> tuple[torch.Tensor, dict]:
        cfg = self.cfg
        picked = labels != IGNORE_INDEX
        if cfg.objective == "electra":
            gen, disc, replaced = self.net(b, labels, g, cfg.electra_weight)
            loss = gen.loss + cfg.electra_weight * disc.loss
            real = b["attention_mask"].bool()
            return loss, {"loss": loss.item(), "mlm_loss": gen.loss.item(),
                          "mlm_acc": _acc(gen.logits, labels[picked]), "disc_loss": disc.loss.item(),
                          "disc_acc": ((disc.logits > 0).long() == replaced)[real].float().mean().item(),
                          "replaced": replaced[real].float().mean().item()}
        if cfg.objective == "mlm":
            out = self.net(b["input_ids"], b["attention_mask"], b["token_type_ids"], labels=labels)
            return out.loss, {"loss": out.loss.item(), "mlm_acc": _acc(out.logits, labels[picked])}
        out = self.net(b["input_ids"], b["attention_mask"], b["token_type_ids"], mlm_labels=labels, nsp_labels=b["nsp_labels"])
        nsp_acc = (out.nsp_logits.argmax(-1) == b["nsp_labels"]).float().mean().item()
        return out.loss, {"loss": out.loss.item(), "mlm_acc": _acc(out.mlm_logits, labels[picked]), "nsp_acc": nsp_acc}

    def budget_steps(self, seconds: float) -> int:
        """Steps that fit a wall-clock budget, from trial steps (then undone): a first one (slower: memory
        and kernels warming up) and, if it fits the budget many times over, the median of three more."""
        self.scheduler = warmup_schedule(self.optimizer, 0, 1, "constant")
        saved = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        times = []
        for i in range(4):
            t = time.perf_counter()
            self.step(i)
            times.append(time.perf_counter() - t)
            if times[0] * 20 > seconds:  # a budget of a few steps: the first one is the measure
                break
        took = times[0] if len(times) == 1 else float(np.median(times[1:]))
        self.model.load_state_dict(saved)
        self.optimizer = make_optimizer(self.model, self.cfg.lr, self.cfg.weight_decay)  # forget the trial step
        if self.dist.world > 1:  # every process must agree on the number of steps
            t = torch.tensor(took)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            took = t.item()
        if took > seconds:
            raise BertkitError(f"--minutes {self.cfg.minutes:g} is too short: one step takes {took:.1f} s.")
        return max(int(seconds / took), 1)

    def loop(self, out: Path) -> dict:
        cfg, dist = self.cfg, self.dist
        total = self.state.total
        warmup = int(cfg.warmup * total) if cfg.warmup < 1 else int(cfg.warmup)
        self.scheduler = warmup_schedule(self.optimizer, min(warmup, total), total, cfg.schedule)
        if cfg.resume:
            self._load(out)
            total = self.state.total
        logger = StepLog(out / "log.jsonl", self.state.step, dist.main)
        bar = _progress(total, self.state.step, dist.main and not cfg.quiet)
        bar.set_description("pretrain")
        while self.state.step < total:
            t0 = time.perf_counter()
            metrics = self.step(self.state.step)
            self.state.step += 1
            logger.write({"step": self.state.step, **metrics, "lr": self.scheduler.get_last_lr()[0],
                          "tokens_per_s": metrics["tokens"] / (time.perf_counter() - t0)})
            bar.update(1)
            if self.state.step % cfg.log_every == 0 or self.state.step == total:
                bar.set_postfix(loss=f"{logger.running_loss():.3f}", mlm_acc=f"{metrics['mlm_acc']:.3f}")
            if dist.main and (self.state.step % cfg.save_every == 0 or self.state.step == total):
                self._save(out)
        bar.close()
        if not dist.main:
            return {}
        self._save_model(out)
        plot_curves(out / "log.jsonl", out / "curves.png", None, train_keys=("mlm_acc",))
        rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line]
        last = rows[-min(len(rows), 20):]
        return {"steps": self.state.step, "loss": float(np.mean([r["loss"] for r in last])),
                "mlm_acc": float(np.mean([r["mlm_acc"] for r in last])), "model": str(out / "model")}

    def _models(self) -> dict[str, nn.Module]:
        m = self.model
        return {"model": m.discriminator, "generator": m.generator} if isinstance(m, ElectraPretrainer) else {"model": m}

    def _save(self, out: Path) -> None:
        def write(tmp: Path) -> None:
            for name, m in self._models().items():
                torch.save(m.state_dict(), tmp / f"{name}.pt")
            torch.save({"state": dataclasses.asdict(self.state), "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict()}, tmp / "trainer_state.pt")

        replace_dir(out / "checkpoint", write)

    def _load(self, out: Path) -> None:
        d = existing_dir(out / "checkpoint")
        for name, m in self._models().items():
            m.load_state_dict(torch.load(d / f"{name}.pt", weights_only=True))
        saved = torch.load(d / "trainer_state.pt", weights_only=True)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.state = PretrainState(**saved["state"])

    def _save_model(self, out: Path) -> None:
        for name, m in self._models().items():
            replace_dir(out / name, lambda tmp, m=m: m.save_pretrained(tmp, tokenizer=self.tokenizer))


def _acc(logits, labels) -> float:
    return (logits.argmax(-1) == labels).float().mean().item() if len(labels) else 0.0


def dense_mlm_loss(model: BertForMaskedLM, input_ids, attention_mask, token_type_ids, labels) -> torch.Tensor:
    """The reference the sparse head is tested against: logits at every position, then the loss."""
    h = model.bert(input_ids, attention_mask, token_type_ids).last_hidden_state
    logits = model.mlm(h, model.bert.embed.word.weight)  # [B, T, V]
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)


__all__ = ["masked_lm_loss", "mask_tokens", "pack", "pretrain", "PretrainConfig"]
