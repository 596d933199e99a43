"""The engines a user would pick instead of bertkit, each timed in its own process, beside bertkit's paths.

    .venv/bin/python benchmarks/speed.py                          # runs these as part of the whole report
    .venv/bin/python benchmarks/speed.py --engines bertkit,ort-fused --cases 1x32 --skip-inprocess --skip-train

Why processes: on 2 cores the OpenMP threads of one engine keep spinning after its call returns, and
the next engine in the same process runs beside them (bertkit 1 x 32 moved between 12 and 30 ms that
way). So every engine loads and runs in a fresh process (`worker`), the processes run one at a time
in a rotating order for several rounds, and each engine's time is its best over all of them.

Engines (`ENGINES`), all reading the same checkpoint directory:
    transformers       BertModel, SDPA attention, fp32
    bertkit-torch      bertkit fp32 with torch's own kernels (`--precision fp32 --kernels torch`): the reference path
    bertkit            bertkit's default: `--precision auto --kernels auto` (bf16 where the CPU has bf16 hardware, it
                       measures faster and passes the load-time cosine check, else fp32; the kernel measured fastest)
    bertkit-fp32       bertkit --precision fp32 (kernels auto): the default before precision was chosen per machine
    bertkit-bf16       bertkit --precision bf16 (listed only where bf16 is fast: AVX512-BF16/AMX)
    bertkit-int8       bertkit --int8 (per-token int8 with fp32 outlier channels)
    bertkit-compiled   torch.compile of bertkit's model (torch kernels; the first call's compile reported)
    bertkit-int8-compiled   torch.compile of the int8 model
    bertkit-onnx       bertkit's own export (`bertkit export onnx`) in onnxruntime (`--backend onnx`)
    ort-fused          transformers' graph through onnxruntime.transformers.optimizer (fused attention,
                       SkipLayerNorm, BiasGelu, EmbedLayerNorm), fp32
    openvino           OpenVINO on transformers' graph with INFERENCE_PRECISION_HINT f32
    openvino-default   OpenVINO with its own default precision (bf16 on CPUs that have it)
    ct2, ct2-int8      CTranslate2's Encoder, float32 and int8
Accuracy: each engine's mean-pooled vectors against transformers fp32's (the least cosine over the batch).
The inputs are real text (Chinese reviews and English sentences, tokenised by the model's tokenizer) cut to
each case's lengths; `var` is 32 sequences of 16..256 tokens, padded to the longest.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FP32 = ("transformers", "bertkit-torch", "bertkit-fp32", "bertkit-compiled", "bertkit-onnx", "ort-fused", "openvino", "ct2")
PEERS = ("ort-fused", "openvino", "openvino-default", "ct2", "ct2-int8")
ENGINES = ("transformers", "bertkit-torch", "bertkit", "bertkit-fp32", "bertkit-bf16", "bertkit-int8", "bertkit-compiled",
           "bertkit-int8-compiled", "bertkit-onnx", *PEERS)
NEEDS = {"ort-fused": ("onnxruntime", "onnx"), "bertkit-onnx": ("onnxruntime", "onnx"), "openvino": ("openvino", "onnx"),
         "openvino-default": ("openvino", "onnx"), "ct2": ("ctranslate2",), "ct2-int8": ("ctranslate2",),
         "transformers": ("transformers",)}
PRECISION = {"bertkit": "auto", "bertkit-bf16": "bf16", "bertkit-int8": "int8", "bertkit-int8-compiled": "int8", "ct2-int8": "int8",
             "openvino-default": "its default"}


def available(engine: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in NEEDS.get(engine, ()))


# ---- inputs: real text cut to each case's shape ---------------------------------------------------


def token_stream(tokenizer_dir: Path | None, vocab_size: int, n: int = 40000) -> list[int]:
    """n token ids of real text (reviews-zh test reviews and English sentences) in the model's tokenizer;
    random ids where the checkpoint has no tokenizer (the tiny model)."""
    if tokenizer_dir is None:
        return np.random.default_rng(0).integers(5, vocab_size, n).tolist()
    from bertkit import Tokenizer

    tok = Tokenizer.from_pretrained(tokenizer_dir)
    ids: list[int] = []
    for text in real_texts():
        ids += tok.backend.encode(text, add_special_tokens=False).ids
        if len(ids) >= n:
            break
    return ids


def real_texts(limit: int | None = None) -> list[str]:
    """The reviews-zh test texts (real Chinese reviews) after a few English sentences."""
    from bertkit.data.datasets import load_dataset

    english = ["A man is playing a guitar on a stage in front of a large crowd.", "How do I reset my password?",
               "Stocks fell sharply on Monday after the central bank raised interest rates again.",
               "The weather is lovely today, so we are going for a long walk by the river."]
    texts = english + [e.text for e in load_dataset("reviews-zh")["test"]]
    return texts[:limit] if limit else texts


def make_batches(cases: list[str], stream: list[int], cls: int, sep: int, pad: int, tiny: bool) -> dict:
    """name -> {"ids": [B, T] int64, "mask": [B, T] int64}: each row [CLS] + real tokens + [SEP], right-padded."""
    out, pos = {}, 0
    for name in cases:
        if name == "var":
            lengths = np.random.default_rng(0).integers(4 if tiny else 16, (16 if tiny else 256) + 1, 32)
        else:
            B, T = (int(x) for x in name.split("x"))
            lengths = np.full(B, T)
        T = int(lengths.max())
        ids, mask = np.full((len(lengths), T), pad, np.int64), np.zeros((len(lengths), T), np.int64)
        for r, n in enumerate(lengths):
            body = [stream[(pos + i) % len(stream)] for i in range(n - 2)]
            pos += n - 2
            ids[r, :n], mask[r, :n] = [cls, *body, sep], 1
        out[name] = {"ids": ids, "mask": mask}
    return out


# ---- preparing the peers' files (once, in the parent) ----------------------------------------------


def prepare(engines: list[str], model_dir: Path, work: Path) -> None:
    """The files each engine loads, written into `work`: ONNX graphs (plain and fused), CTranslate2's model,
    bertkit's own ONNX export."""
    work.mkdir(parents=True, exist_ok=True)
    if any(e in engines for e in ("ort-fused", "openvino", "openvino-default")):
        export_transformers_onnx(model_dir, work / "plain.onnx")
    if "ort-fused" in engines:
        from onnxruntime.transformers.optimizer import optimize_model

        config = json.loads((model_dir / "config.json").read_text())
        fused = optimize_model(str(work / "plain.onnx"), model_type="bert", num_heads=config["num_attention_heads"],
                               hidden_size=config["hidden_size"])
        fused.save_model_to_file(str(work / "fused.onnx"))
        stats = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
        (work / "fused.json").write_text(json.dumps(stats))
    if "ct2" in engines or "ct2-int8" in engines:
        import ctranslate2

        copy = work / "hf-for-ct2"
        shutil.copytree(model_dir, copy, dirs_exist_ok=True)
        config = json.loads((copy / "config.json").read_text())
        config.setdefault("position_embedding_type", "absolute")  # transformers 5 no longer writes it
        (copy / "config.json").write_text(json.dumps(config))
        ctranslate2.converters.TransformersConverter(str(copy)).convert(str(work / "ct2"), force=True)
    if "bertkit-onnx" in engines:
        from bertkit.serving.export import export_onnx

        (work / "bk-onnx").mkdir(exist_ok=True)
        if not (work / "bk-onnx" / "model.onnx").exists():
            export_onnx(model_dir, work / "bk-onnx" / "model.onnx", task="encoder")


def export_transformers_onnx(model_dir: Path, out: Path) -> None:
    """transformers' BertModel (eager attention: the pattern ORT's optimizer fuses) to ONNX, TorchScript exporter."""
    import torch
    import transformers

    hf = transformers.BertModel.from_pretrained(model_dir, attn_implementation="eager").eval()

    class Graph(torch.nn.Module):  # transformers 5 takes keyword arguments only
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    ids = torch.randint(5, 100, (2, 16))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {k: {0: "batch", 1: "sequence"} for k in [*names, "last_hidden_state"]}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Graph(hf), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(out), input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False)


# ---- the engines (in the worker process) -----------------------------------------------------------


def load_engine(engine: str, model_dir: Path, work: Path, threads: int):
    """A function batch -> last_hidden_state [B, T, H] (numpy) for one engine, loaded in this process."""
    def feeds(b):
        return {"input_ids": b["ids"], "attention_mask": b["mask"], "token_type_ids": np.zeros_like(b["ids"])}

    if engine.startswith("bertkit") or engine == "transformers":
        import torch

        torch.set_num_threads(threads)
        model = torch_model(engine, model_dir)

        def run(b):  # run.note: what bertkit's loader chose (precision, kernels) and why
            with torch.inference_mode():
                ids, mask = torch.from_numpy(b["ids"]), torch.from_numpy(b["mask"])
                if engine == "transformers":
                    h = model(input_ids=ids, attention_mask=mask).last_hidden_state
                else:
                    h = model(ids, mask).last_hidden_state
                return h.float().numpy()

        run.note = getattr(getattr(model, "_orig_mod", model), "precision_note", None)
        return run
    if engine == "bertkit-onnx":
        from bertkit.serving.onnx import OnnxRunner

        runner = OnnxRunner(work / "bk-onnx" / "model.onnx", threads=threads)
        return lambda b: runner.run(feeds(b))[0]
    if engine == "ort-fused":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(work / "fused.onnx"), options, providers=["CPUExecutionProvider"])
        return lambda b: session.run(["last_hidden_state"], feeds(b))[0]
    if engine.startswith("openvino"):
        import openvino as ov

        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        if engine == "openvino":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        compiled = ov.Core().compile_model(str(work / "plain.onnx"), "CPU", config)
        request = compiled.create_infer_request()
        return lambda b: np.asarray(request.infer(feeds(b))[compiled.output(0)])
    if engine.startswith("ct2"):
        import ctranslate2

        encoder = ctranslate2.Encoder(str(work / "ct2"), device="cpu", compute_type="int8" if engine == "ct2-int8" else "float32",
                                      intra_threads=threads)

        def run(b):
            rows = [list(r[:n]) for r, n in zip(b["ids"].tolist(), b["mask"].sum(1).tolist())]  # its own padding
            return np.asarray(encoder.forward_batch(rows).last_hidden_state)

        return run
    raise SystemExit(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")


def torch_model(engine: str, model_dir: Path):
    if engine == "transformers":
        import torch
        import transformers

        transformers.logging.set_verbosity_error()
        return transformers.BertModel.from_pretrained(model_dir, attn_implementation="sdpa", dtype=torch.float32).eval()
    import torch

    from bertkit.serving.load import init_inference, load_for_inference

    init_inference()  # what the commands set for the process (denormals flushed), as `bertkit embed` runs

    from bertkit.tokenizer import Tokenizer

    kernels = "torch" if engine in ("bertkit-torch", "bertkit-compiled") else "auto"
    precision = {"bertkit": None, "bertkit-bf16": "bf16"}.get(engine, "int8" if "int8" in engine else "fp32")
    model, _ = load_for_inference(model_dir, kind="encoder", tokenizer=Tokenizer.can_load(model_dir), kernels=kernels,
                                  device="cpu", precision=precision)  # the tokenizer: auto checks on real sentences
    model.pooler = None
    return torch.compile(model, dynamic=False) if engine.endswith("compiled") else model


def worker(a) -> dict:
    """Load one engine, then per case: one warm-up call (its time reported: a compiled path compiles there),
    then calls until --budget seconds or --max-calls; the best time and the pooled vectors come back."""
    start = time.perf_counter()
    run = load_engine(a.engine, Path(a.model), Path(a.work), a.threads)
    result = {"load_s": time.perf_counter() - start, "cases": {}, "note": getattr(run, "note", None)}
    batches = np.load(Path(a.work) / "batches.npz")
    for name in a.cases.split(","):
        b = {"ids": batches[f"{name}.ids"], "mask": batches[f"{name}.mask"]}
        t = time.perf_counter()
        h = run(b)
        first = time.perf_counter() - t
        best, calls, began = float("inf"), 0, time.perf_counter()
        while calls < a.max_calls and (calls < a.min_calls or time.perf_counter() - began < a.budget) and not (
                calls and time.perf_counter() - began >= a.budget):  # a slow case: one timed call per round
            t = time.perf_counter()
            run(b)
            best, calls = min(best, time.perf_counter() - t), calls + 1
        m = b["mask"][:, : h.shape[1], None].astype(np.float64)
        pooled = (h.astype(np.float64) * m).sum(1) / m.sum(1)
        result["cases"][name] = {"ms": 1e3 * best, "first_s": first, "calls": calls, "pooled": pooled.tolist()}
    return result


# ---- the race (in the parent) -----------------------------------------------------------------------


def race(engines: list[str], model_dir: Path, work: Path, cases: list[str], batches: dict, threads: int, rounds: int,
         budget: float, min_calls: int = 3, max_calls: int = 200, log=print) -> dict:
    """engine -> {"load_s", "cases": {name: {ms (best over rounds), first_s, calls, min_cosine}}}. Round r runs
    the engines in order rotated by r, each in a fresh process."""
    np.savez(work / "batches.npz", **{f"{k}.{part}": v[part] for k, v in batches.items() for part in ("ids", "mask")})
    best: dict[str, dict] = {}
    for r in range(rounds):
        for engine in engines[r % len(engines):] + engines[: r % len(engines)]:
            out = work / f"{engine}.json"
            cmd = [sys.executable, str(HERE / "engines.py"), "worker", engine, "--model", str(model_dir), "--work", str(work),
                   "--cases", ",".join(cases), "--threads", str(threads), "--budget", str(budget),
                   "--min-calls", str(min_calls), "--max-calls", str(max_calls), "--out", str(out)]
            env = os.environ | {"OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                log(f"{engine} failed (round {r + 1}): {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
                continue
            got = json.loads(out.read_text())
            mine = best.setdefault(engine, {"load_s": got["load_s"], "cases": {}, "note": got.get("note")})
            for name, c in got["cases"].items():
                if name not in mine["cases"] or c["ms"] < mine["cases"][name]["ms"]:
                    keep = mine["cases"].get(name, {})
                    mine["cases"][name] = c | {"first_s": keep.get("first_s", c["first_s"])}  # the first round's first call
            log(f"  round {r + 1}: {engine} " + ", ".join(f"{n} {c['ms']:.2f} ms" for n, c in got["cases"].items()))
    anchor = {name: np.asarray(c["pooled"]) for name, c in best.get("transformers", {"cases": {}})["cases"].items()}
    for res in best.values():
        for name, c in res["cases"].items():
            p = np.asarray(c.pop("pooled"))
            if name in anchor:
                ref = anchor[name]
                c["min_cosine"] = float(((p * ref).sum(1) / np.linalg.norm(p, axis=1) / np.linalg.norm(ref, axis=1)).min())
    return best


# ---- the end-to-end file race -------------------------------------------------------------------------


E2E = ("bertkit", "bertkit-fp32", "bertkit-int8", "sentence-transformers", "ort-fused", "openvino", "openvino-default", "ct2",
       "ct2-int8")


def embed_file(a) -> None:
    """A peer's whole pipeline over a file, as a user would write it: tokenize (the fast tokenizer), sort by
    length, batches of --batch-size padded to their longest, the engine, mean pooling, L2 normalisation, .npy."""
    texts = Path(a.input).read_text(encoding="utf-8").removesuffix("\n").split("\n")  # as bertkit reads: "\n" only
    if a.engine == "sentence-transformers":
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(a.threads)
        vectors = SentenceTransformer(a.model, device="cpu").encode(texts, batch_size=a.batch_size, normalize_embeddings=True)
        np.save(a.output, vectors.astype(np.float32))
        return
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(a.model) / "tokenizer.json"))
    limit = json.loads((Path(a.model) / "sentence_bert_config.json").read_text()).get("max_seq_length", 512)
    tok.enable_truncation(limit)
    tok.no_padding()  # MiniLM's tokenizer.json pads every text to the longest of the call: the batches pad here
    run = load_engine(a.engine, Path(a.model), Path(a.work), a.threads)
    encoded = tok.encode_batch(texts)
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i].ids))
    out = np.zeros((len(texts), 0), np.float32)
    for s in range(0, len(order), a.batch_size):
        idx = order[s:s + a.batch_size]
        T = max(len(encoded[i].ids) for i in idx)
        ids, mask = np.zeros((len(idx), T), np.int64), np.zeros((len(idx), T), np.int64)
        for r, i in enumerate(idx):
            n = len(encoded[i].ids)
            ids[r, :n], mask[r, :n] = encoded[i].ids, 1
        h = run({"ids": ids, "mask": mask})
        v = (h * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
        if out.shape[1] == 0:
            out = np.zeros((len(texts), v.shape[1]), np.float32)
        out[idx] = v / np.linalg.norm(v, axis=1, keepdims=True)
    np.save(a.output, out)


def file_race(model_dir: Path, work: Path, texts: list[str], threads: int, rounds: int, log=print) -> dict:
    """engine -> {"s": best whole-process seconds, "min_cosine" to sentence-transformers' vectors}. bertkit runs as
    `bertkit embed` (its defaults, and --int8); every peer as embed_file above."""
    src = work / "sentences.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    engines = [e for e in E2E if available(e) and (e != "sentence-transformers" or available("transformers"))]
    best: dict[str, dict] = {}
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    for r in range(rounds):
        for engine in engines[r % len(engines):] + engines[: r % len(engines)]:
            out = work / f"e2e-{engine}.npy"
            if engine.startswith("bertkit"):
                cmd = [sys.executable, "-m", "bertkit.cli", "embed", str(model_dir), "--input", str(src), "--output", str(out),
                       "--normalize", "--quiet", *{"bertkit-int8": ["--int8"], "bertkit-fp32": ["--precision", "fp32"]}.get(engine, [])]
            else:
                cmd = [sys.executable, str(HERE / "engines.py"), "e2e", engine, "--model", str(model_dir), "--work", str(work),
                       "--input", str(src), "--output", str(out), "--threads", str(threads)]
            t = time.perf_counter()
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - t
            if done.returncode != 0:
                log(f"{engine} (file) failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
                continue
            log(f"  round {r + 1}: {engine} {seconds:.2f} s")
            if engine not in best or seconds < best[engine]["s"]:
                best[engine] = {"s": seconds}
            best[engine]["vectors"] = str(out)
    ref = np.load(best["sentence-transformers"]["vectors"]) if "sentence-transformers" in best else None
    for res in best.values():
        v = np.load(res.pop("vectors"))
        if ref is not None:
            res["min_cosine"] = float(((v * ref).sum(1) / np.linalg.norm(v, axis=1) / np.linalg.norm(ref, axis=1)).min())
    return best


# ---- command line --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="(internal) time one engine in this process")
    w.add_argument("engine")
    w.add_argument("--model", required=True)
    w.add_argument("--work", required=True)
    w.add_argument("--cases", required=True)
    w.add_argument("--threads", type=int, default=2)
    w.add_argument("--budget", type=float, default=2.0)
    w.add_argument("--min-calls", type=int, default=3)
    w.add_argument("--max-calls", type=int, default=200)
    w.add_argument("--out", required=True)
    e = sub.add_parser("e2e", help="(internal) embed a file with one peer's whole pipeline")
    e.add_argument("engine")
    for flag in ("--model", "--work", "--input", "--output"):
        e.add_argument(flag, required=True)
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--batch-size", type=int, default=32)
    a = p.parse_args(argv)
    if a.command == "worker":
        Path(a.out).write_text(json.dumps(worker(a)))
    else:
        embed_file(a)


if __name__ == "__main__":
    main()
