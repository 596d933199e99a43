"""How well an ELECTRA discriminator detects its generator's replacements on text it never saw.

    .venv/bin/python benchmarks/electra_probe.py RUN_DIR      # RUN_DIR: `bertkit pretrain --objective electra --out RUN_DIR`

The first 256 reviews-zh dev texts (never in zh-corpus), 64 tokens each, 15% masked (80/10/10, seed 0); the
generator (RUN_DIR/generator) samples a token at each masked position and the discriminator (RUN_DIR/model)
marks each token replaced or not. Prints the replaced fraction, accuracy, and the precision/recall of "replaced".
"""

import sys
from pathlib import Path

import torch

from bertkit.data.datasets import load_dataset
from bertkit.errors import BertkitError
from bertkit.heads import BertForMaskedLM, ElectraForPreTraining
from bertkit.tokenizer import Tokenizer
from bertkit.train.pretrain import ElectraPretrainer, mask_tokens

torch.set_num_threads(1)
if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "generator" / "config.json").is_file():
    raise SystemExit(
        "usage: electra_probe.py RUN_DIR (the --out of an ELECTRA pretraining run, with model/ and generator/)"
    )
d = sys.argv[1]
try:
    tok = Tokenizer.from_pretrained(d + "/model")
    disc = ElectraForPreTraining.from_pretrained(d + "/model", verbose=False).eval()
    gen = BertForMaskedLM.from_pretrained(d + "/generator", verbose=False).eval()
except BertkitError as e:
    raise SystemExit(f"error: {e}") from None
net = ElectraPretrainer(disc, gen)
texts = [e.text for e in load_dataset("reviews-zh")["dev"]][:256]
g = torch.Generator().manual_seed(0)
V = tok.vocab()
special_ids = {V[t] for t in ("[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]")}
tp = fp = fn = tn = 0
with torch.no_grad():
    for i in range(0, len(texts), 32):
        enc = [tok.encode(t)[:64] for t in texts[i : i + 32]]
        L = max(map(len, enc))
        ids = torch.tensor([e + [0] * (L - len(e)) for e in enc])
        am = (ids != 0).long()
        special = torch.isin(ids, torch.tensor(sorted(special_ids)))
        masked, labels = mask_tokens(
            ids,
            special,
            V["[MASK]"],
            torch.arange(len(V))[~torch.isin(torch.arange(len(V)), torch.tensor(sorted(special_ids)))],
            0.15,
            generator=g,
        )
        _, out, rep = net(
            {"input_ids": masked, "attention_mask": am, "token_type_ids": torch.zeros_like(ids)}, labels, g, 50.0
        )
        p = (out.logits > 0).long()
        r = am.bool()
        tp += ((p == 1) & (rep == 1))[r].sum().item()
        fp += ((p == 1) & (rep == 0))[r].sum().item()
        fn += ((p == 0) & (rep == 1))[r].sum().item()
        tn += ((p == 0) & (rep == 0))[r].sum().item()
n = tp + fp + fn + tn
print(
    f"tokens {n}, replaced {(tp + fn) / n:.3f}, acc {(tp + tn) / n:.3f}, precision {tp / max(tp + fp, 1):.3f}, recall {tp / max(tp + fn, 1):.3f}"
)
