"""Why a tiny BERT pretrained on zh-corpus stalls, and what gets it moving: short pretraining runs of
bert-tiny variants on the same data, each probed for whether it uses context at all.

    .venv/bin/python benchmarks/pretrain_ablation.py --vocab DIR --corpus DIR        # ~5 min per variant
    .venv/bin/python benchmarks/pretrain_ablation.py --vocab DIR --corpus DIR --variants A F --steps 300

--vocab and --corpus are a vocabulary (`bertkit vocab build`) and a corpus prepared with word starts
(`bertkit corpus prepare --wwm`), e.g. the work/vocab and work/corpus of benchmarks/pretrain_report.py.
A variant whose run directory already holds a finished model is probed, not trained again.

Each variant is pretrained with whole-word-masked MLM for --steps steps (batch 64 x 128 tokens, lr 1e-3,
warm-up 6%, linear decay, fp32) and then probed on reviews-zh dev sentences (never in zh-corpus):
- single-mask accuracy: one CJK character in the middle of the sentence is replaced by [MASK]; how often
  the model's top answer is that character. A model that ignores context can only give one answer
  everywhere; the best such answer, the corpus's most frequent character among those masked, is shown;
- attention entropy: the entropy of each query's attention distribution over its sentence, divided by
  the entropy of a uniform one (1.0 = attention looks at every token alike, i.e. no positional or
  content-based selection).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import shutil
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from bertkit.config import BertConfig
from bertkit.data.corpus import Corpus
from bertkit.data.datasets import load_dataset
from bertkit.errors import BertkitError
from bertkit.heads import BertForMaskedLM
from bertkit.model import Attention
from bertkit.tokenizer import Tokenizer
from bertkit.train.pretrain import PretrainConfig, pretrain

ROTARY = dict(model_type="roformer", position_embedding_type="rotary")
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
# name: (what changes from bert-tiny as published, config changes, batch size, max length)
VARIANTS = {
    "A": ("bert-tiny as published (init std 0.02, dropout 0.1, learned absolute positions)", {}, 64, 128),
    "B": ("A without dropout", NO_DROPOUT, 64, 128),
    "C": ("A with rotary positions (RoFormer)", ROTARY, 64, 128),
    "D": ("B on sequences of 32 tokens (batch 256: the same tokens per step)", NO_DROPOUT, 256, 32),
    "E": ("B with init std 0.05", NO_DROPOUT | dict(initializer_range=0.05), 64, 128),
    "F": ("E with rotary positions (= benchmarks/configs/roformer-tiny-zh.json)", NO_DROPOUT | ROTARY | dict(initializer_range=0.05), 64, 128),
}


def variant_config(name: str, work: Path) -> str:
    path = work / f"{name}.json"
    c = dataclasses.replace(BertConfig.from_preset("bert-tiny"), **VARIANTS[name][1], extra={})
    c.save(path)
    return str(path)


def run(name: str, a, work: Path) -> Path:
    out = work / name
    if (out / "model").is_dir() and (out / "log.jsonl").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    _, _, batch, length = VARIANTS[name]
    t = time.perf_counter()
    pretrain(PretrainConfig(model=variant_config(name, work), tokenizer=a.vocab, corpus=a.corpus, objective="mlm", wwm=True,
                            batch_size=batch, max_length=length, lr=a.lr, warmup=0.06, max_steps=a.steps, out=str(out),
                            quiet=True, save_every=10**9))
    print(f"[{name}] {a.steps} steps in {(time.perf_counter() - t) / 60:.1f} min", flush=True)
    return out


def curve(out: Path, every: int) -> list[tuple[int, float, float]]:
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line]
    return [(w[-1]["step"], statistics.mean(r["loss"] for r in w), statistics.mean(r["mlm_acc"] for r in w))
            for w in (rows[i:i + every] for i in range(0, len(rows), every))]


def probe_sentences(tok: Tokenizer, n: int) -> list[tuple[list[int], int]]:
    """(ids, masked position) for the first n reviews-zh dev sentences with a CJK character mid-sentence."""
    out = []
    for ex in load_dataset("reviews-zh")["dev"]:
        ids = tok.encode(ex.text)[:128]
        if len(ids) < 8:
            continue
        p = len(ids) // 2
        ch = tok.convert_ids_to_tokens([ids[p]])[0]
        if len(ch) == 1 and "\u4e00" <= ch <= "\u9fff":
            out.append((ids, p))
        if len(out) == n:
            break
    return out


def probe(model_dir: Path, n_sentences: int) -> dict:
    """The probes of the module docstring, with the model's own vocabulary (builds differ by a few tokens)."""
    tok = Tokenizer.from_pretrained(model_dir)
    sentences = probe_sentences(tok, n_sentences)
    model = BertForMaskedLM.from_pretrained(model_dir, verbose=False).eval()
    mask_id = tok.vocab()["[MASK]"]
    entropies: list[float] = []
    original = Attention.attend

    def attend(self, q, k, v, mask, pos):  # records each query's attention entropy / uniform entropy
        s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        keys = torch.ones_like(s, dtype=torch.bool) if mask is None else mask.expand_as(s)
        p = s.masked_fill(~keys, float("-inf")).softmax(-1)
        h = -(p * p.clamp_min(1e-12).log()).sum(-1)
        n = keys.sum(-1).float()
        entropies.extend((h / n.log().clamp_min(1e-6)).flatten().tolist())
        return original(self, q, k, v, mask, pos)

    right = 0
    Attention.attend = attend
    try:
        with torch.no_grad():
            for ids, p in sentences:
                x = torch.tensor([ids])
                target = int(x[0, p])
                x[0, p] = mask_id
                logits = model(x, torch.ones_like(x)).logits[0, p]
                right += int(logits.argmax()) == target
    finally:
        Attention.attend = original
    return {"single_mask_acc": right / len(sentences), "attention_entropy": statistics.mean(entropies)}


def unigram_acc(corpus: Corpus, sentences) -> float:
    """Accuracy of one constant answer: the corpus's most frequent token among the masked characters."""
    counts: Counter = Counter()
    for shard in corpus.shards:
        counts.update(shard.ids[: 2_000_000].tolist())
    targets = [ids[p] for ids, p in sentences]
    best = max((t for t in counts if t in set(targets)), key=counts.__getitem__, default=None)
    return sum(t == best for t in targets) / len(targets)


def main() -> None:
    try:
        run_all()
    except BertkitError as e:  # a missing or wrong --vocab / --corpus: one sentence, exit 1
        raise SystemExit(f"error: {e}") from None


def run_all() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vocab", required=True)
    p.add_argument("--corpus", required=True, help="a corpus directory prepared with word starts")
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=sorted(VARIANTS))
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--probe-sentences", type=int, default=300)
    p.add_argument("--probe-models", nargs="*", default=[], metavar="LABEL=DIR",
                   help="also probe these pretrained models (e.g. the 60-minute ones of benchmarks/pretrain_report.py)")
    p.add_argument("--work", default="/tmp/bertkit-pretrain-ablation")
    p.add_argument("--out", default="docs/results/pretrain-ablation.md")
    a = p.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer.from_pretrained(a.vocab)
    sentences = probe_sentences(tok, a.probe_sentences)
    results = {}
    for name in a.variants:
        out = run(name, a, work)
        results[name] = {"curve": curve(out, max(a.steps // 5, 1)), **probe(out / "model", a.probe_sentences)}
        print(f"[{name}] {results[name]['curve'][-1]} probe {results[name]['single_mask_acc']:.3f} "
              f"entropy {results[name]['attention_entropy']:.3f}", flush=True)
    probed = {}
    for item in a.probe_models:
        label, _, path = item.partition("=")
        probed[label] = {"dir": path, **probe(Path(path), a.probe_sentences)}
        log = Path(path).parent / "log.jsonl"
        if log.is_file():  # the mean of the last 5% of steps
            rows = [json.loads(line) for line in log.read_text().splitlines() if line]
            tail = rows[-max(len(rows) // 20, 1):]
            probed[label]["final"] = (rows[-1]["step"], statistics.mean(r["loss"] for r in tail), statistics.mean(r["mlm_acc"] for r in tail))
    uni = unigram_acc(Corpus(a.corpus), sentences)
    L = ["# Pretraining a tiny model: what gets attention to work", "",
         f"Command: `python {shlex.join(sys.argv)}`", "",
         f"Every variant: whole-word-masked MLM on zh-corpus for {a.steps} steps, lr {a.lr}, warm-up 6%, linear decay to 0, fp32, "
         "2 CPU threads. Probes on "
         f"{len(sentences)} reviews-zh dev sentences (not in the pretraining corpus): single-mask accuracy (one CJK character "
         f"mid-sentence masked; one constant answer, the corpus's most frequent of the masked characters, scores {100 * uni:.1f}%) and attention "
         "entropy relative to uniform attention (1.00 = every token attended alike).", "",
         "| variant | change | loss / masked acc by step | final loss | single-mask acc | attention entropy / uniform |",
         "|---|---|---|---|---|---|"]
    for name, r in results.items():
        pts = "; ".join(f"{s}: {loss:.2f} / {100 * acc:.1f}%" for s, loss, acc in r["curve"])
        L.append(f"| {name} | {VARIANTS[name][0]} | {pts} | {r['curve'][-1][1]:.3f} | {100 * r['single_mask_acc']:.1f}% | "
                 f"{r['attention_entropy']:.3f} |")
    if probed:
        L += ["", "Longer runs probed the same way:", "", "| model | steps, final loss / masked acc (whole-word masking) | single-mask acc | attention entropy / uniform |",
              "|---|---|---|---|"]
        for label, r in probed.items():
            fin = f"{r['final'][0]}, {r['final'][1]:.2f} / {100 * r['final'][2]:.1f}% (last 5% of steps)" if "final" in r else "-"
            L.append(f"| {label} (`{r['dir']}`) | {fin} | {100 * r['single_mask_acc']:.1f}% | {r['attention_entropy']:.3f} |")
    L += [""]
    Path(a.out).write_text("\n".join(L), encoding="utf-8")
    Path(a.out).with_suffix(".json").write_text(json.dumps({"args": vars(a), "unigram_acc": uni, "results": results, "probed": probed}, indent=1))
    print("\n".join(L))


if __name__ == "__main__":
    main()
