"""The one training loop: each loss part is its exact mean over the global batch, however the batch is
split into accumulation steps and processes, and the schedule hands every example out once an epoch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from bertkit.data.datasets import load_dataset, write_conll
from bertkit.train.loop import Dist, Loop, Schedule, plain_backward

BIN = Path(sys.executable).parent


class Tokens:
    """A toy recipe: examples of 1..9 tokens, a squared error summed over tokens (part "tok", a mean over
    tokens) and a per-example term (part "ex", a mean over examples, weight 0.5)."""

    name = "toy"
    curves = (None, ())
    weights = {"tok": 1.0, "ex": 0.5}

    def __init__(self, n: int = 24):
        g = torch.Generator().manual_seed(0)
        self.x = [torch.randn(int(torch.randint(1, 10, (1,), generator=g)), 4, generator=g) for _ in range(n)]
        self.model = nn.Linear(4, 1)

    def collate(self, idx, g):
        return {"x": [self.x[i] for i in idx]}

    def counts(self, b):
        return {"tok": float(sum(len(x) for x in b["x"])), "ex": float(len(b["x"]))}

    def loss(self, net, b, g):
        per = [net(x).squeeze(-1) for x in b["x"]]
        tok = sum(((y - 1) ** 2).sum() for y in per)
        ex = sum(y.mean() ** 2 for y in per)
        return {"tok": tok, "ex": ex}, {"first": (float(per[0][0].detach()), 1.0)}

    def backward(self, net, loss_of, batch):
        return plain_backward(net, loss_of, batch)

    def after_step(self):
        pass

    def speed(self, batches, seconds, world):
        return {}

    def reference(self, idx):
        """The global batch's loss as one mean per part, by hand."""
        ys = [self.model(self.x[i]).squeeze(-1) for i in idx]
        return sum(((y - 1) ** 2).sum() for y in ys) / sum(len(y) for y in ys) + 0.5 * sum(y.mean() ** 2 for y in ys) / len(ys)


def one_step(accum: int) -> tuple[dict, float, list[int]]:
    torch.manual_seed(0)
    recipe = Tokens()
    cfg = SimpleNamespace(lr=0.1, weight_decay=0.0, bf16=False, seed=1, clip=0.0, quiet=True)
    schedule = Schedule(len(recipe.x), batch_size=12, accum=accum, seed=1, rank=0, world=1)
    loop = Loop(cfg, Dist(0, 1, torch.device("cpu")), recipe, schedule, None, Path("."), "x.json")
    seen = {}
    step = loop.optimizer.step

    def record():
        seen.update({n: p.grad.clone() for n, p in recipe.model.named_parameters()})
        step()

    loop.optimizer.step = record
    idx = schedule.batch(0)
    want = torch.autograd.grad(recipe.reference(idx), list(recipe.model.parameters()))
    row = loop.step(0)
    for (n, _), w in zip(recipe.model.named_parameters(), want):
        torch.testing.assert_close(seen[n], w, atol=1e-6, rtol=1e-6)
    return seen, row["loss"], idx


def test_each_part_is_its_global_mean_under_accumulation():
    """1, 2, 3 and 4 micro-batches of unequal token counts: the gradient of the global per-part means."""
    grads, losses = [], []
    for accum in (1, 2, 3, 4):
        g, loss, idx = one_step(accum)
        grads.append(g)
        losses.append(loss)
    ref = Tokens()
    torch.manual_seed(0)
    ref.model = nn.Linear(4, 1)
    assert losses[0] == pytest.approx(float(ref.reference(idx).detach()), rel=1e-6)  # the logged loss is the same mean
    for g, loss in zip(grads[1:], losses[1:]):
        assert loss == pytest.approx(losses[0], rel=1e-6)
        for n in g:
            torch.testing.assert_close(g[n], grads[0][n], atol=1e-6, rtol=1e-6)


def test_schedule_hands_each_example_out_once_per_epoch():
    shared = [Schedule(50, 16, 2, seed=3, rank=r, world=2) for r in range(2)]
    assert shared[0].per_epoch == 3  # 50 = 3 x 16 + 2; a last batch of 2 < 2 processes x 2 accumulation steps is dropped
    seen = [i for s in range(3) for sch in shared for m in sch.micro_batches(s) for i in m]
    assert sorted(seen) == sorted(shared[0]._cache[0][:48]) and len(set(seen)) == 48
    own = [Schedule(30, 8, 1, seed=3, rank=r, world=2, shared=False) for r in range(2)]  # each rank its own 30
    assert own[0].local == 4 and own[0].per_epoch == 7
    assert sorted(i for s in range(7) for m in own[1].micro_batches(s) for i in m) == sorted(own[1]._cache[0][:28])


@pytest.mark.heavy
def test_two_processes_give_ner_the_weights_of_one(tmp_path):
    """NER's loss is a mean over words, which differ per example and per process: torchrun with 2 processes
    and 2 accumulation steps gives the weights of one process with none."""
    pd = load_dataset("peoples-daily-ner")
    write_conll(tmp_path / "train.conll", pd["train"][:64])
    common = ["train", "ner", "--model", "bert-tiny", "--train", str(tmp_path / "train.conll"), "--max-steps", "3",
              "--batch-size", "16", "--lr", "5e-4", "--max-length", "64", "--dropout", "0", "--crf", "--quiet"]
    one = subprocess.run([str(BIN / "bertkit"), *common, "--out", str(tmp_path / "one")], capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    tok = str(tmp_path / "one" / "model")  # the vocabulary the first run trained
    two = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(BIN / "bertkit"), *common,
                          "--accum", "2", "--tokenizer", tok, "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    three = subprocess.run([str(BIN / "bertkit"), *common, "--tokenizer", tok, "--out", str(tmp_path / "three")],
                           capture_output=True, text=True)
    assert three.returncode == 0, three.stderr
    a, b = load_file(tmp_path / "three" / "checkpoint/model/model.safetensors"), load_file(tmp_path / "two" / "checkpoint/model/model.safetensors")
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= 2e-6, worst


def test_keep_best_saves_each_new_best_and_stops_after_patience(tmp_path):
    """The loop's keep-best and early stopping, shared by fine-tuning, distillation and seq2seq: a better dev score
    replaces out/model whole; `patience` evaluations in a row without one stop the run; equal is not better."""
    from bertkit.train.loop import Loop, State

    rows, lines = [], []
    loop = SimpleNamespace(state=State(), dist=SimpleNamespace(main=True), out=tmp_path,
                           logger=SimpleNamespace(write=rows.append), log=lines.append)

    def evaluate(step, score, patience=2):
        loop.state.step = step
        save = lambda d: (Path(d) / "score.txt").write_text(str(score))  # noqa: E731
        return Loop.keep_best(loop, {"f1": score, "per_type": {}}, "f1", patience, save)

    assert not evaluate(10, 0.5) and not evaluate(20, 0.7)
    assert (tmp_path / "model" / "score.txt").read_text() == "0.7" and loop.state.best_step == 20
    assert not evaluate(30, 0.7)  # equal: no new best, one bad evaluation
    assert evaluate(40, 0.6)  # the second in a row: stop
    assert (tmp_path / "model" / "score.txt").read_text() == "0.7" and loop.state.best == 0.7
    assert rows[-1] == {"step": 40, "dev": {"f1": 0.6}} and "(best 0.7000 at step 20)" in lines[-1]
    loop.state = State()
    assert not any(evaluate(s, 1.0 - s / 100, patience=0) for s in range(1, 6))  # patience 0: never stops
