"""How well an ELECTRA discriminator detects its generator's replacements on text it never saw.

    .venv/bin/python benchmarks/electra_probe.py RUN_DIR      # RUN_DIR: `bertkit pretrain --objective electra --out RUN_DIR`

The first 256 reviews-zh dev texts (never in zh-corpus), 64 tokens each, 15% masked (80/10/10, seed 0); the
generator (RUN_DIR/generator) samples a token at each masked position and the discriminator (RUN_DIR/model)
marks each token replaced or not. Prints the replaced fraction, accuracy, and the precision/recall of "replaced".
With --uniform the masked positions get uniformly random tokens instead of the generator's samples (an easy task:
a discriminator that reads its context at all finds most of them).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from bertkit.data.datasets import load_dataset
from bertkit.errors import BertkitError
from bertkit.heads import BertForMaskedLM, ElectraForPreTraining
from bertkit.tokenizer import Tokenizer
from bertkit.train.pretrain import ElectraPretrainer, mask_tokens


def probe(run_dir: str | Path, uniform: bool = False, texts: int = 256) -> dict:
    """Replaced-token detection on reviews-zh dev: replaced share, accuracy, precision and recall of 'replaced'."""
    d = Path(run_dir)
    tok = Tokenizer.from_pretrained(d / "model")
    disc = ElectraForPreTraining.from_pretrained(d / "model", verbose=False).eval()
    gen = BertForMaskedLM.from_pretrained(d / "generator", verbose=False).eval()
    net = ElectraPretrainer(disc, gen)
    docs = [e.text for e in load_dataset("reviews-zh")["dev"]][:texts]
    g = torch.Generator().manual_seed(0)
    V = tok.vocab()
    special_ids = torch.tensor(sorted({V[t] for t in ("[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]")}))
    ordinary = torch.arange(len(V))[~torch.isin(torch.arange(len(V)), special_ids)]
    tp = fp = fn = tn = 0
    with torch.no_grad():
        for i in range(0, len(docs), 32):
            enc = [tok.encode(t)[:64] for t in docs[i : i + 32]]
            L = max(map(len, enc))
            ids = torch.tensor([e + [0] * (L - len(e)) for e in enc])
            am = (ids != 0).long()
            masked, labels = mask_tokens(ids, torch.isin(ids, special_ids), V["[MASK]"], ordinary, 0.15, generator=g)
            if uniform:
                picked = labels != -100
                corrupted = ids.clone()
                corrupted[picked] = ordinary[torch.randint(len(ordinary), (int(picked.sum()),), generator=g)]
                rep = (corrupted != ids).long()
                logits = disc(corrupted, am, torch.zeros_like(ids)).logits
            else:
                _, out, rep = net({"input_ids": masked, "attention_mask": am, "token_type_ids": torch.zeros_like(ids)}, labels, g, 50.0)
                logits = out.logits
            p = (logits > 0).long()
            r = am.bool()
            tp += ((p == 1) & (rep == 1))[r].sum().item()
            fp += ((p == 1) & (rep == 0))[r].sum().item()
            fn += ((p == 0) & (rep == 1))[r].sum().item()
            tn += ((p == 0) & (rep == 0))[r].sum().item()
    n = tp + fp + fn + tn
    return {"tokens": n, "replaced": (tp + fn) / n, "accuracy": (tp + tn) / n, "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1)}


def main() -> None:
    torch.set_num_threads(1)
    args = [x for x in sys.argv[1:] if x != "--uniform"]
    if len(args) != 1 or not (Path(args[0]) / "generator" / "config.json").is_file():
        raise SystemExit("usage: electra_probe.py RUN_DIR [--uniform] (RUN_DIR: the --out of an ELECTRA pretraining run, with model/ and generator/)")
    try:
        r = probe(args[0], uniform="--uniform" in sys.argv)
    except BertkitError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"tokens {r['tokens']}, replaced {r['replaced']:.3f}, acc {r['accuracy']:.3f}, precision {r['precision']:.3f}, recall {r['recall']:.3f}")


if __name__ == "__main__":
    main()
