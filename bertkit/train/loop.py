"""The one training loop. Fine-tuning, pretraining and distillation are recipes run through it.

    for step in range(state.step, total):                 # one optimizer step per global batch
        micro = this rank's examples of the step, in `accum` pieces   (Schedule)
        for each piece: sums = recipe.loss(model, batch)  # summed losses, by part
                        backward(sum_k weight_k * sums_k / global count_k)
        clip, optimizer step, schedule, recipe.after_step (EMA)
        log; recipe.evaluate when due; checkpoint every save_every steps

What the loop owns: processes (DDP: gloo on CPU, nccl on GPU), the run directory and its resume
checks, epoch order and per-step seeding, micro-batches and accumulation, clipping, bf16 autocast,
the optimizer step, the step log, the progress bar, curves, checkpoints in one format and exact
resume. What a recipe supplies (`Recipe`): its examples and how to batch them, its losses as
summed parts with the count each part is a mean over, evaluation, and what to save.

The loss is normalised one way everywhere: each part is its exact mean over the global batch,
sum over every micro-batch and rank / the global count (examples, words, masked tokens, real
tokens), so any split into processes and accumulation steps gives the gradient of one big batch.
The counts of a step are known before its first backward (the recipe counts its batches), and
with several processes summed across them first.

Exact resume: the data order is a function of (seed, epoch), the random state of a step a function
of (seed, step, rank), and the checkpoint holds the models (Hugging Face directories), optimizer,
scheduler, the recipe's own state (EMA) and the loop state; written into checkpoint.tmp and swapped
in (io.files.replace_dir). Only rank 0 writes.

Why ~610 lines: the one loop owns everything every recipe shares (processes, schedule, accumulation, precision, logging, checkpoints, exact resume, budgets); splitting it would spread one step's invariants over files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ..errors import BertkitError
from ..io.files import WriteFailed, existing_dir, replace_dir, sha256_of
from ..model import BertModel
from .tricks import make_optimizer, warmup_schedule

FREE_ON_RESUME = ("resume", "auto_resume", "quiet", "device", "log_every", "save_every", "save_minutes")  # settings that do not change the result


@dataclass
class State:
    """What a resumed run needs beyond the weights, the optimizer and the recipe's own state."""

    step: int = 0
    total: int = 0  # fixed at the start: from max_steps or epochs, or from a time budget after measured steps
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
            backend = "nccl" if dev.type == "cuda" else "gloo"
            if "TORCHELASTIC_RESTART_COUNT" in os.environ and "MASTER_ADDR" in os.environ:
                torch.distributed.init_process_group(backend, store=attempt_store(rank, world), rank=rank, world_size=world)
            else:
                torch.distributed.init_process_group(backend)
        return cls(rank, world, dev)

    def stop(self) -> None:
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over all processes (float64, so counts stay exact)."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def broadcast(self, value):
        """Rank 0's `value` on every rank (any picklable object: machines need not share a disk)."""
        if self.world == 1:
            return value
        box = [value if self.main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def attempt_store(rank: int, world: int):
    """torchrun's store, under a prefix of its own per restart attempt. With the default env:// start, a group restarted
    by `torchrun --max-restarts` read the killed attempt's gloo addresses: its start failed ("connectFullMesh failed ...
    Connection refused") or hung: 3 of the first 7 restarts of a 20-line script here (the 8th ran past the time limit), 0 of
    8 with this."""
    from datetime import timedelta

    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"  # the agent hosts it; else rank 0 does
    store = torch.distributed.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                                       is_master=rank == 0 and not agent, timeout=timedelta(minutes=30))
    return torch.distributed.PrefixStore(f"/bertkit/attempt_{os.environ['TORCHELASTIC_RESTART_COUNT']}", store)


def in_processes(job, cfg):
    """job(cfg, dist) in this process's share of a torchrun group (or alone), leaving the group after."""
    dist = Dist.start(cfg.device)
    try:
        return job(cfg, dist)
    finally:
        dist.stop()


def messages(dist: Dist, quiet: bool):
    """print to stderr on rank 0 unless quiet."""
    return (lambda msg: print(msg, file=sys.stderr)) if dist.main and not quiet else (lambda msg: None)


# ---- the run directory ----------------------------------------------------------------------


def check_out(cfg, config_file: str, dist: Dist | None = None) -> Path:
    """--out must be new (or empty), or with --resume hold a checkpoint of a run with these settings. --auto-resume:
    resume when it holds one, else start afresh (clearing what this run wrote before its first checkpoint), so one
    command line serves every restart under `torchrun --max-restarts`. Rank 0 decides (its disk holds the checkpoints);
    every rank gets its verdict, and cfg.resume is set to it."""
    out = Path(cfg.out)
    minutes = getattr(cfg, "save_minutes", None)
    if minutes is not None and not minutes > 0:
        raise BertkitError(f"--save-minutes must be a positive number of minutes, not {minutes}.")
    verdict = _verdict(cfg, out, config_file) if dist is None or dist.main else None
    if dist is not None:
        verdict = dist.broadcast(verdict)
    if isinstance(verdict, str):
        raise BertkitError(verdict)
    cfg.resume, clear = verdict
    if clear and (dist is None or dist.main):
        for p in out.iterdir():  # all of it this run's own: it started in an empty directory
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    if dist is not None:
        dist.barrier()
    return out


def _verdict(cfg, out: Path, config_file: str) -> tuple[bool, bool] | str:
    """(resume, clear the directory first), or the sentence that refuses the run."""
    full = out.exists() and any(out.iterdir())
    has = existing_dir(out / "checkpoint") is not None and (existing_dir(out / "checkpoint") / "trainer_state.pt").is_file()
    if getattr(cfg, "auto_resume", False) and not has:
        if not full:
            return False, False
        if settings_changed(cfg, out / config_file) is None:
            return False, True  # this run's files from before its first checkpoint: start it again
        return (f"--auto-resume: {out} is not empty and holds no checkpoint of this run (no {config_file} with these settings); "
                "choose a new --out.")
    if not (cfg.resume or getattr(cfg, "auto_resume", False)):
        if full:
            return f"{out} is not empty; choose a new --out, or pass --resume (or --auto-resume) to continue the run in it."
        return False, False
    if not has:
        return f"--resume: {out} has no checkpoint to resume from."
    changed = settings_changed(cfg, out / config_file)
    if changed:  # a resumed run must use the settings it started with, or it would not end where the run would have
        return changed
    return True, False


def settings_changed(cfg, config_path: Path) -> str | None:
    """None when config_path holds cfg's settings (those that change the result), else what differs, in a sentence."""
    try:
        saved = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"--resume: cannot read the run's settings from {config_path} ({getattr(e, 'strerror', None) or e})."
    now = dataclasses.asdict(cfg)
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}  # a field newer than the saved run: it ran with the default
    was = {k: saved.get(k, defaults.get(k)) for k in now}
    changed = [k for k in now if k not in FREE_ON_RESUME and was[k] != now[k]]
    if changed:
        k = changed[0]
        return f"--resume: --{k.replace('_', '-')} was {was[k]!r} when the run started, now {now[k]!r}; resume with the same settings."
    return None


def write_config(cfg, out: Path, config_file: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / config_file).write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")


# ---- which examples each step reads ---------------------------------------------------------------


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The epoch's permutation of n examples, fixed by (seed, epoch)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()


@dataclass
class Schedule:
    """Which examples each step, rank and micro-batch read.

    shared: every rank holds the same n examples; a global batch of batch_size is cut from the
    epoch's order and rank r takes every world-th one (a last batch smaller than world x accum is
    dropped). Not shared: each rank holds its own n examples (its shards) and cuts batches of
    batch_size / world from its own order.
    """

    n: int
    batch_size: int
    accum: int
    seed: int
    rank: int
    world: int
    shared: bool = True
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.local = self.batch_size if self.shared else self.batch_size // self.world
        min_size = self.world * self.accum if self.shared else self.accum
        if self.local < min_size:
            raise BertkitError(f"a batch of {self.batch_size} cannot be split over {self.world} processes x {self.accum} accumulation steps.")
        full, rest = divmod(self.n, self.local)
        self.per_epoch = full + (self.shared and rest >= min_size)
        if self.per_epoch == 0:
            raise BertkitError(f"{self.n} examples do not fill one batch of {self.local} with {self.world} processes x {self.accum} accumulation steps.")

    def batch(self, step: int) -> list[int]:
        """The step's batch: global when shared, else this rank's."""
        epoch, i = divmod(step, self.per_epoch)
        if epoch not in self._cache:
            self._cache.clear()
            self._cache[epoch] = epoch_order(self.n, self.seed, epoch)
        return self._cache[epoch][i * self.local:(i + 1) * self.local]

    def micro_batches(self, step: int) -> list[list[int]]:
        mine = self.batch(step)[self.rank::self.world] if self.shared else self.batch(step)
        return [mine[j::self.accum] for j in range(self.accum)]

    def epoch(self, step: int) -> float:
        return round(step / self.per_epoch, 4)


# ---- recipes --------------------------------------------------------------------------------------


class Recipe(Protocol):
    """What a training job supplies to the loop (fine-tune, pretrain, distill)."""

    name: str  # the progress bar's label
    model: nn.Module  # what the optimizer trains
    weights: dict[str, float]  # loss part -> its weight in the total
    curves: tuple[str | None, tuple[str, ...]]  # (dev metric, other logged training values) for curves.png

    def collate(self, idx: list[int], g: torch.Generator) -> dict: ...

    def counts(self, batch: dict) -> dict[str, float]:
        """For each loss part, what its sum is over in this batch (examples, words, masked tokens)."""

    def loss(self, net: nn.Module, batch: dict, g: torch.Generator) -> tuple[dict[str, torch.Tensor], dict[str, tuple[float, float]]]:
        """(summed loss per part, logged ratios as (numerator, denominator) per name)."""

    def backward(self, net: nn.Module, loss_of, batch: dict) -> torch.Tensor:
        """Run loss_of(net, batch) (the normalised scalar) and its backward; FGM/PGD hook in here."""

    def after_step(self) -> None: ...

    def speed(self, batches: list[dict], seconds: float, world: int) -> dict[str, float]:
        """What the log records of the step's speed (examples or tokens per second)."""

    def evaluate_due(self, step: int) -> bool: ...

    def evaluate(self, loop: Loop) -> bool:
        """Score, keep the best; True when early stopping says stop."""

    def saved(self) -> dict[str, nn.Module]:
        """The models a checkpoint holds, by directory name (their tokenizer is the recipe's)."""

    def extra_state(self) -> dict: ...

    def load_extra_state(self, saved: dict) -> None: ...


def examples_speed(batches: list[dict], seconds: float, world: int) -> dict[str, float]:
    """The step log's throughput for recipes whose batches are examples (fine-tuning, seq2seq)."""
    return {"examples_per_s": sum(len(b["input_ids"]) for b in batches) * world / seconds}


def evaluation_due(every: int, step: int, epoch_ends: set[int]) -> bool:
    """Evaluate after every `every` steps, or (every 0) at the steps that end an epoch."""
    return bool(every and (step + 1) % every == 0) or step in epoch_ends


def plain_backward(net, loss_of, batch) -> torch.Tensor:
    loss = loss_of(net, batch)
    loss.backward()
    return loss.detach()


# ---- the loop ---------------------------------------------------------------------------------------


class Loop:
    """One run: the optimizer, the schedule and the checkpoints of a recipe's model."""

    def __init__(self, cfg, dist: Dist, recipe, schedule: Schedule, tokenizer, out: Path, config_file: str):
        self.cfg, self.dist, self.recipe, self.schedule, self.tokenizer = cfg, dist, recipe, schedule, tokenizer
        self.out, self.config_file = out, config_file
        self.model = recipe.model.to(dist.device)
        self.net = self.model if dist.world == 1 else nn.parallel.DistributedDataParallel(self.model)
        self.optimizer = self.new_optimizer()
        self.scheduler = warmup_schedule(self.optimizer, 0, 1, "constant")
        self.autocast = torch.autocast(dist.device.type, dtype=torch.bfloat16) if cfg.bf16 else nullcontext()
        self.state = State()
        self.log = messages(dist, cfg.quiet)
        self.saved_at = time.monotonic()

    def new_optimizer(self):
        """AdamW for the recipe's model; fine-tuning's --crf-lr and --layer-decay scale its groups' rates."""
        return make_optimizer(self.model, self.cfg.lr, self.cfg.weight_decay, crf_lr=getattr(self.cfg, "crf_lr", 1.0),
                              layer_decay=getattr(self.cfg, "layer_decay", 1.0))

    # ---- one step

    def step(self, step: int) -> dict:
        """One optimizer step over the step's global batch; returns what the log records."""
        cfg, dist, recipe = self.cfg, self.dist, self.recipe
        g = torch.Generator().manual_seed(hash((cfg.seed, step, dist.rank, 1)) % (2**63))  # the recipe's draws (masking)
        torch.manual_seed(hash((cfg.seed, step, dist.rank)) % (2**63))  # dropout of this step, on this rank
        t0 = time.perf_counter()
        self.model.train()
        batches = [recipe.collate(idx, g) for idx in self.schedule.micro_batches(step)]
        parts = list(recipe.weights)
        local = [sum(recipe.counts(b)[k] for b in batches) for k in parts]
        counts = dict(zip(parts, dist.sum(local)))
        sums = {k: 0.0 for k in parts}
        ratios: dict[str, list[float]] = {}
        seen: set[int] = set()  # micro-batches already logged: FGM/PGD call loss_of again on the same one

        def loss_of(net, batch):
            with self.autocast:
                part_sums, logged = recipe.loss(net, batch, g)
            if id(batch) not in seen:
                seen.add(id(batch))
                for k, v in part_sums.items():
                    sums[k] += float(v.detach())
                for k, (num, den) in logged.items():
                    r = ratios.setdefault(k, [0.0, 0.0])
                    r[0], r[1] = r[0] + num, r[1] + den
            # DDP averages gradients over ranks: world / count makes each part its global mean
            return sum(recipe.weights[k] * v.float() * (dist.world / max(counts[k], 1)) for k, v in part_sums.items())

        for j, batch in enumerate(batches):
            sync = self.net.no_sync() if dist.world > 1 and j < len(batches) - 1 else nullcontext()
            with sync:
                recipe.backward(self.net, loss_of, batch)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip if cfg.clip > 0 else float("inf"))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        recipe.after_step()
        totals = dist.sum([sums[k] for k in parts] + [x for r in ratios.values() for x in r])
        loss = sum(recipe.weights[k] * totals[i] / max(counts[k], 1) for i, k in enumerate(parts))
        flat = totals[len(parts):]
        row = {"loss": loss} | {k: flat[2 * i] / max(flat[2 * i + 1], 1) for i, k in enumerate(ratios)}
        return row | {"grad_norm": float(norm)} | recipe.speed(batches, time.perf_counter() - t0, dist.world)

    # ---- the run

    def measure(self, seconds: float) -> int:
        """Steps that fit a wall-clock budget, from trial steps (then undone): a first one (slower: memory
        and kernels warming up) and, if it fits the budget many times over, the median of three more."""
        saved = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        extra = self.recipe.extra_state()
        times = []
        for i in range(4):
            t = time.perf_counter()
            self.step(i)
            times.append(time.perf_counter() - t)
            if times[0] * 20 > seconds:  # a budget of a few steps: the first one is the measure
                break
        took = times[0] if len(times) == 1 else float(np.median(times[1:]))
        self.model.load_state_dict(saved)
        self.recipe.load_extra_state(extra)
        self.optimizer = self.new_optimizer()  # forget the trial steps
        if self.dist.world > 1:  # every process must agree on the number of steps
            took = max_over(self.dist, took)
        if took > seconds:
            raise BertkitError(f"--minutes {self.cfg.minutes:g} is too short: one step takes {took:.1f} s.")
        return max(int(seconds / took), 1)

    def run(self, total: int, warmup: float, schedule: str) -> State:
        """Train to `total` steps (or continue a resumed run to its own total); returns the final state."""
        cfg, dist = self.cfg, self.dist
        dist.barrier()  # every rank has checked the output directory before rank 0 writes into it
        saved = None
        if cfg.resume:  # rank 0 reads and checks the checkpoint; every rank gets its contents
            saved = dist.broadcast(read_checkpoint(self.out / "checkpoint", self.recipe.saved()) if dist.main else None)
            total = saved["state"]["total"]
        elif dist.main:
            write_config(cfg, self.out, self.config_file)
        steps = int(warmup * total) if warmup < 1 else int(warmup)
        self.scheduler = warmup_schedule(self.optimizer, min(steps, total), total, schedule)
        if saved is not None:  # after the scheduler is built: its first step would overwrite the restored learning rate
            self.load(saved)
            self.log(f"resumed {self.out} at step {self.state.step} of {total}")
        self.state.total = total
        self.logger = StepLog(self.out / "log.jsonl", self.state.step, dist.main)
        bar = progress(total, self.state.step, dist.main and not cfg.quiet, self.recipe.name)
        try:
            self._steps(total, bar)
        except WriteFailed as e:  # a checkpoint or the best model could not be written: the last checkpoint stays
            last = self.last_saved_step()
            kept = f"the checkpoint of step {last} is kept" if last is not None else "no checkpoint was written yet"
            raise BertkitError(f"{e} At step {self.state.step}, {kept}: free the space (or fix the directory) and rerun "
                               "with --auto-resume to continue.") from None
        bar.close()
        return self.state

    def _steps(self, total: int, bar) -> None:
        cfg, dist = self.cfg, self.dist
        stopped = False
        while self.state.step < total and not stopped:
            row = self.step(self.state.step)
            self.state.step += 1
            step = self.state.step
            self.logger.write({"step": step, "epoch": self.schedule.epoch(step), **row, "lr": self.scheduler.get_last_lr()[0]})
            bar.update(1)
            if step % cfg.log_every == 0 or step == total:
                bar.set_postfix(loss=f"{self.logger.running_loss():.4f}")
            if self.recipe.evaluate_due(step - 1) or step == total:
                stopped = self.recipe.evaluate(self)
            due = step % cfg.save_every == 0 or step == total or stopped
            if getattr(cfg, "save_minutes", None):  # by the clock too; rank 0's clock, so every rank agrees
                due = due or dist.broadcast(time.monotonic() - self.saved_at >= cfg.save_minutes * 60 if dist.main else None)
            if dist.main and due:
                self.save()

    def keep_best(self, metrics: dict, key: str, patience: int, save, detail: str = "") -> bool:
        """After a dev evaluation, what every recipe does: a new best score keeps its model (`save(dir)` on the main
        process, swapped in whole over out/model), anything else counts toward early stopping; the scores logged.
        True when `patience` evaluations in a row brought no improvement (0: never stop)."""
        s = self.state
        if s.best is None or metrics[key] > s.best:
            s.best, s.best_step, s.bad_evals = metrics[key], s.step, 0
            if self.dist.main:
                replace_dir(self.out / "model", save)
        else:
            s.bad_evals += 1
        self.logger.write({"step": s.step, "dev": {k: v for k, v in metrics.items() if not isinstance(v, dict)}})
        self.log(f"step {s.step}: dev {key} {metrics[key]:.4f}{detail} (best {s.best:.4f} at step {s.best_step})")
        return bool(patience and s.bad_evals >= patience)

    def plot(self) -> None:
        metric, keys = self.recipe.curves
        if self.dist.main and plot_curves(self.out / "log.jsonl", self.out / "curves.png", metric, keys):
            self.log(f"curves: {self.out / 'curves.png'}")

    # ---- checkpoints

    def save(self) -> None:
        """The checkpoint, swapped in whole with the checksums of its files; a failed write (a full disk, a read-only
        directory) keeps the last one and stops the run with one sentence."""
        def write(tmp: Path) -> None:
            for name, m in self.recipe.saved().items():
                m.save_pretrained(tmp / name, tokenizer=self.tokenizer)
            torch.save({"state": dataclasses.asdict(self.state), "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(), "recipe": self.recipe.extra_state()}, tmp / "trainer_state.pt")
            write_checksums(tmp)

        replace_dir(self.out / "checkpoint", write)
        self.saved_at = time.monotonic()

    def last_saved_step(self) -> int | None:
        d = existing_dir(self.out / "checkpoint")
        try:
            return int(torch.load(d / "trainer_state.pt", weights_only=True)["state"]["step"]) if d else None
        except Exception:  # noqa: BLE001 - only for the message
            return None

    def load(self, saved: dict) -> None:
        """Restore a checkpoint's contents (`read_checkpoint`) into the models, optimizer and scheduler."""
        for name, m in self.recipe.saved().items():
            m.load_state_dict(saved["models"][name])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.recipe.load_extra_state(saved["recipe"])
        self.state = State(**saved["state"])


CHECKSUMS = "checksums.json"


def write_checksums(d: Path) -> None:
    """checksums.json: the sha256 of every file under d, so a file damaged later is found before it is trusted."""
    sums = {str(p.relative_to(d)): sha256_of(p) for p in sorted(d.rglob("*")) if p.is_file()}
    (d / CHECKSUMS).write_text(json.dumps(sums, indent=1) + "\n", encoding="utf-8")


def read_checkpoint(d: Path, models: dict[str, nn.Module]) -> dict:
    """A run's checkpoint directory, checked against its checksums: trainer_state.pt's contents plus "models" (each
    saved model's state_dict). A file missing, truncated or overwritten is named, never loaded."""
    d = existing_dir(d)
    if (d / CHECKSUMS).is_file():
        sums = json.loads((d / CHECKSUMS).read_text(encoding="utf-8"))
        for name, want in sums.items():
            p = d / name
            if not p.is_file():
                raise BertkitError(f"the checkpoint is incomplete: {p} is missing; it cannot be resumed from.")
            if sha256_of(p) != want:
                raise BertkitError(f"the checkpoint file {p} is damaged (its contents differ from what the run wrote); "
                                   "restore it, or start the run again in a new --out.")
    try:
        saved = torch.load(d / "trainer_state.pt", weights_only=True)
        saved["models"] = {name: type(m).from_pretrained(d / name, verbose=False).state_dict() for name, m in models.items()}
    except BertkitError:
        raise
    except Exception as e:  # a checkpoint of an older bertkit (no checksums) that is damaged
        raise BertkitError(f"the checkpoint in {d} cannot be read ({type(e).__name__}: {e}); it cannot be resumed from.") from None
    return saved


def max_over(dist: Dist, value: float) -> float:
    t = torch.tensor(value)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return t.item()


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
            try:
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
            except OSError as e:
                raise BertkitError(f"writing {self.path} failed: {e.strerror or e}. The last checkpoint is kept: free the space "
                                   "and rerun with --auto-resume to continue.") from None

    def running_loss(self) -> float:
        return sum(self.recent) / max(len(self.recent), 1)


def progress(total: int, initial: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, unit="step", dynamic_ncols=True)


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


def set_checkpointing(model: nn.Module, on: bool) -> None:
    """Activation checkpointing in every encoder of the model: memory for long sequences, at ~1/3 more compute."""
    for m in model.modules():
        if isinstance(m, BertModel):
            m.checkpointing = on
