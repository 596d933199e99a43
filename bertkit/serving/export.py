"""ONNX export, and onnxruntime as a second backend: `bertkit export onnx`, `--backend onnx`.

What an export writes. `--out DIR/NAME.onnx` writes the graph to that file and, beside it in
DIR, everything bertkit needs to run it without the checkpoint: config.json (labels and task
included), the tokenizer files, sentence_bert_config.json when the source has one, and
crf.safetensors for a CRF tagger (the Viterbi decoder runs in Python, on the emissions). One
export per directory: an existing file of those names is an error, never overwritten.

The graphs (inputs input_ids, attention_mask, token_type_ids, all int64 [batch, sequence]):
    embed     -> last_hidden_state [B, T, H], sentence_embedding [B, H] (mean over real tokens)
    encoder   -> last_hidden_state [B, T, H]
    classify, pair -> logits [B, C]
    ner       -> emissions [B, W, C], with a fourth input word_index [B, W] (each word's first piece)
The task is also in the graph's metadata (`bertkit_task`), with the precision (`bertkit_precision`).

Every export is checked before it is written: the ONNX graph and the PyTorch model run two
padded batches of different shapes (so a size baked into the graph shows up), and every
output must agree within 1e-4 (padding positions of last_hidden_state excluded: their values
mean nothing). `int8` then quantises the weight MatMuls with onnxruntime's dynamic
quantisation, per output channel: per-tensor scales cost all-MiniLM-L6-v2 a mean sentence
cosine of 0.965 to fp32, per-channel keeps it at 0.993 (docs/results/onnx.md). `bf16` is
refused while onnxruntime's CPU provider has no bfloat16 MatMul (probed, not assumed).

The graph comes from the TorchScript exporter (`dynamo=False`), whose graphs the parity checks and
the int8 quantisation here were proven on. The model has no data-dependent branch (the mask is
built the same way whatever it holds), so the dynamo exporter takes it too: tests/test_fastpath.py
exports with `dynamo=True` and checks onnxruntime's outputs against eager.

The fast path's packing (model.BertModel.unpad) is off while tracing: it reads the lengths on the
host, so the graph is the padded reference path. Causal and unilm masks export too (the tests trace
every family member and both masks). The graph runs in onnxruntime through serving/onnx.py's
`OnnxRunner`, which the export's own check uses. Needs the `onnx` extra: onnx and onnxruntime.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..checkpoint import find_config
from ..config import BertConfig
from ..errors import BertkitError
from ..io.files import staging
from ..model import mean_pool
from ..version import __version__
from .load import check_model, load_for_inference
from .onnx import EXPORT_TASKS, OUTPUTS, OnnxRunner, _require_onnx

TOLERANCE = 1e-4  # max abs difference, ONNX fp32 vs PyTorch fp32
OPSET = 17  # LayerNormalization as one op
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
SIDECARS = ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
            "sentence_bert_config.json", "crf.safetensors")


# ---- the graphs -------------------------------------------------------------------------------


class EncoderGraph(nn.Module):
    """The backbone with the outputs an export names: hidden states, and their mean when pooled."""

    def __init__(self, bert: nn.Module, pooled: bool):
        super().__init__()
        self.bert, self.pooled, self.config = bert, pooled, bert.config
        bert.pooler = None  # no work for a pooler nobody reads

    def forward(self, input_ids, attention_mask, token_type_ids):
        h = self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state  # [B, T, H]
        return (h, mean_pool(h, attention_mask)) if self.pooled else h


def load_for_export(model_dir, task: str | None) -> tuple[nn.Module, str, Path]:
    """(the module to trace, its task, the checkpoint directory). task None: the model's own."""
    if task is not None and task not in EXPORT_TASKS:
        raise BertkitError(f"task {task!r} is not one of {', '.join(EXPORT_TASKS)}.")
    config = BertConfig.from_json_file(find_config(check_model(model_dir)))
    info = config.extra.get("bertkit")
    own = info.get("task") if isinstance(info, dict) and info.get("task") != "seq2seq" else None  # seq2seq: its encoder exports
    task = task or own or "embed"
    if task in ("embed", "encoder"):
        bert, _ = load_for_inference(model_dir, device="cpu", kind="encoder", tokenizer=False, kernels="torch", precision="fp32")
        return EncoderGraph(bert, pooled=task == "embed").eval(), task, bert.source_dir
    if own != task:
        what = f"was fine-tuned for {own}" if own else "is not a model bertkit fine-tuned"
        raise BertkitError(f"{check_model(model_dir)} {what}; it cannot be exported as a {task} model.")
    model, _ = load_for_inference(model_dir, device="cpu", kind="task", tokenizer=False, kernels="torch", precision="fp32")
    return model, task, model.source_dir


def example_batches(config: BertConfig, task: str, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Two padded batches of random ids, [3, 16] and [5, up to 40]: the first is traced, both are checked.

    Every batch has a full row and a short one, so the traced graph keeps the padding mask.
    """
    g = torch.Generator().manual_seed(seed)
    longest = min(40, config.max_length)
    shapes = ([16, 9, 3], [longest, 2, longest // 2, 7, 1])
    return [_batch([min(n, config.max_length) for n in lengths], config, task, g) for lengths in shapes]


def _batch(lengths: list[int], config: BertConfig, task: str, g: torch.Generator) -> dict[str, torch.Tensor]:
    B, T, pad = len(lengths), max(lengths), config.pad_token_id or 0
    ids = torch.randint(min(5, config.vocab_size - 1), config.vocab_size, (B, T), generator=g)
    ids[ids == pad] = (pad + 1) % config.vocab_size  # real tokens are never the pad id (RoBERTa counts them)
    mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()  # [B, T]
    ids = ids.masked_fill(mask == 0, pad)
    types = torch.zeros_like(ids)
    if task == "pair" and config.type_vocab_size > 1:
        for r, n in enumerate(lengths):
            types[r, n // 2 : n] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    if task == "ner":  # each row's words start at sorted random positions among its real tokens
        words = [torch.randperm(max(n - 2, 1), generator=g)[: max(n // 2, 1)].sort().values + min(1, n - 1) for n in lengths]
        batch["word_index"] = torch.zeros(B, max(len(w) for w in words), dtype=torch.long)
        for r, w in enumerate(words):
            batch["word_index"][r, : len(w)] = w
    return batch


def input_names(task: str) -> tuple[str, ...]:
    return INPUTS + (("word_index",) if task == "ner" else ())


def _dynamic_axes(task: str) -> dict[str, dict[int, str]]:
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS}
    axes |= {"last_hidden_state": {0: "batch", 1: "sequence"}, "sentence_embedding": {0: "batch"},
             "logits": {0: "batch"}, "word_index": {0: "batch", 1: "words"}, "emissions": {0: "batch", 1: "words"}}
    return {k: v for k, v in axes.items() if k in input_names(task) + OUTPUTS[task]}


# ---- export -------------------------------------------------------------------------------------


@dataclass
class ExportResult:
    path: Path
    task: str
    precision: str  # fp32 | int8
    max_diff: float  # ONNX fp32 vs PyTorch on the check batches
    int8_cosine: float | None  # int8: lowest cosine of the main output to fp32 on the check batches
    written: list[str]  # the files, beside the .onnx
    seconds: float
    fused: dict | None = None  # onnxruntime's fusions applied: op type -> count (None: a plain graph)

    def describe(self) -> str:
        size = self.path.stat().st_size / 2**20
        fused = f", fused: {', '.join(f'{k} {v}' for k, v in self.fused.items())}" if self.fused else ""
        line = (f"wrote {self.path} ({self.task}, {self.precision}{fused}, {size:.1f} MiB) and {', '.join(self.written)} beside it; "
                f"fp32 graph matches PyTorch within {self.max_diff:.1e}")
        if self.int8_cosine is not None:
            line += f"; int8 {OUTPUTS[self.task][-1]} cosine to fp32 >= {self.int8_cosine:.4f} on random inputs"
        return line + f" ({self.seconds:.1f} s)."


def export_onnx(model_dir, out_file, task: str | None = None, bf16: bool = False, int8: bool = False,
                fuse: bool = True) -> ExportResult:
    """Export a bertkit model to `out_file` (.onnx) with its config and tokenizer beside it; see the module docstring.
    fuse: apply onnxruntime's transformer fusions (a graph only onnxruntime runs); False: standard ONNX ops only."""
    start = time.perf_counter()
    out = _check_out(Path(out_file).expanduser())
    if bf16 and int8:
        raise BertkitError("choose one of bf16 and int8.")
    onnx, _ = _require_onnx()
    if bf16:
        _refuse_bf16()
    model, task, src = load_for_export(model_dir, task)
    batches = example_batches(model.config, task)
    with staging(out) as tmp:
        written = _write_sidecars(model, src, tmp)  # first: the runner that checks the graph reads config.json
        graph = tmp / "model.onnx"
        _trace(model, batches[0], task, graph)
        _tag(onnx, graph, task, "fp32")
        max_diff = check_parity(model, graph, batches, task)
        fused = _fuse(graph, model.config) if fuse else None
        if fused:
            _tag(onnx, graph, task, "fp32")
            max_diff = max(max_diff, check_parity(model, graph, batches, task))
        cosine = None
        if int8:
            cosine = _quantize(graph, batches, task)
            _tag(onnx, graph, task, "int8")
        for name in written:
            os.replace(tmp / name, out.parent / name)
        os.replace(graph, out)  # the graph last: its presence means the export is complete
    return ExportResult(out, task, "int8" if int8 else "fp32", max_diff, cosine, written, time.perf_counter() - start, fused)


def _check_out(out: Path) -> Path:
    if out.suffix != ".onnx":
        raise BertkitError(f"{out}: the output must be a .onnx file.")
    if not out.parent.is_dir():
        raise BertkitError(f"the output directory {out.parent} does not exist.")
    taken = [p.name for p in [out, *(out.parent / n for n in SIDECARS)] if p.exists()]
    if taken:
        raise BertkitError(f"{out.parent} already holds {', '.join(taken)}; export into a new or empty directory "
                           "(the config and tokenizer are written beside the .onnx file).")
    return out


def _refuse_bf16() -> None:
    """Raise unless onnxruntime's CPU provider runs a bfloat16 MatMul (it did not, up to 1.31)."""
    reason = bf16_unsupported()
    if reason:
        raise BertkitError(f"onnxruntime's CPU provider cannot run bfloat16 graphs ({reason}); a bf16 ONNX model would "
                           "not run, so none is written. Use --int8 for a smaller, faster ONNX model, or bertkit's own "
                           "bf16 path in PyTorch.")
    raise BertkitError("this onnxruntime runs bfloat16 MatMul, but bertkit does not write bf16 ONNX graphs yet.")


def bf16_unsupported() -> str | None:
    """Why onnxruntime's CPU provider cannot run a one-node bfloat16 MatMul, or None if it can."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    x, w = (helper.make_tensor_value_info(n, TensorProto.BFLOAT16, [2, 2]) for n in ("x", "w"))
    y = helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [2, 2])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "bf16_probe", [x, w], [y])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    try:
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        session.run(None, {"x": np.zeros((2, 2), np.uint16), "w": np.zeros((2, 2), np.uint16)})
    except Exception as e:  # onnxruntime raises its own exception types: NOT_IMPLEMENTED, type errors
        return f"onnxruntime {ort.__version__}: {str(e).strip().splitlines()[0]}"
    return None


def _trace(model: nn.Module, batch: dict, task: str, path: Path) -> None:
    names = input_names(task)
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns at every Python-level branch on a size (length checks, the mask
        # shortcut): expected, see the module docstring. The exporter warns it is the legacy one.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, tuple(batch[n] for n in names), str(path), dynamo=False, opset_version=OPSET,
                          input_names=list(names), output_names=list(OUTPUTS[task]), dynamic_axes=_dynamic_axes(task))


def _tag(onnx, path: Path, task: str, precision: str) -> None:
    """Record the task and precision in the graph's metadata, where OnnxRunner reads them."""

    proto = onnx.load(str(path))
    tags = {"bertkit_task": task, "bertkit_precision": precision, "bertkit_version": __version__}
    kept = [p for p in proto.metadata_props if p.key not in tags]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept + [onnx.StringStringEntryProto(key=k, value=v) for k, v in tags.items()])
    onnx.save(proto, str(path))


def _reference(model: nn.Module, batch: dict, task: str) -> list[np.ndarray]:
    with torch.no_grad():
        out = model(*(batch[n] for n in input_names(task)))
    return [t.float().numpy() for t in (out if isinstance(out, tuple) else (out,))]


def check_parity(model: nn.Module, path: Path, batches: list[dict], task: str) -> float:
    """Largest |ONNX - PyTorch| over the outputs and batches; a BertkitError past TOLERANCE."""
    try:
        runner = OnnxRunner(path, task=task)
    except BertkitError as e:
        raise BertkitError(f"onnxruntime cannot run the exported graph ({e.__cause__ or e}): nothing was written.") from None
    worst = 0.0
    for batch in batches:
        for name, ours, theirs in zip(OUTPUTS[task], runner.run(batch), _reference(model, batch, task)):
            if ours.shape != theirs.shape:
                raise BertkitError(f"the ONNX graph's {name} has shape {ours.shape}, PyTorch's {theirs.shape}: export failed.")
            diff = np.abs(ours - theirs)
            if name == "last_hidden_state":
                diff = diff[batch["attention_mask"].numpy() == 1]  # padding positions' values mean nothing
            worst = max(worst, float(diff.max()))
            if not worst <= TOLERANCE:  # also catches NaN
                raise BertkitError(f"the ONNX graph's {name} differs from PyTorch's by {worst:.2e} (tolerance "
                                   f"{TOLERANCE:.0e}) on a [{len(batch['input_ids'])}, {batch['input_ids'].shape[1]}] batch: "
                                   "export failed, nothing was written.")
    return worst


def _fuse(path: Path, config: BertConfig) -> dict | None:
    """onnxruntime's transformer optimizer on the graph, in place: LayerNorm after a residual add as one
    SkipLayerNormalization, bias + GELU as one BiasGelu (what it finds in bertkit's graph; its attention
    fusion wants three q/k/v MatMuls, bertkit stores one). Returns the fusions it made, None if none."""
    try:
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError:  # an onnxruntime without its transformers tools: the plain graph
        return None
    logging.disable(logging.WARNING)
    try:
        model = optimize_model(str(path), model_type="bert", num_heads=config.num_attention_heads,
                               hidden_size=config.hidden_size)
    finally:
        logging.disable(logging.NOTSET)
    found = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
    if not found:
        return None
    model.save_model_to_file(str(path))
    return found


def _quantize(path: Path, batches: list[dict], task: str) -> float:
    """Quantise the weight MatMuls to int8 in place; the lowest cosine of the main output to fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = OnnxRunner(path, task=task)
    ref = [fp32.run(b)[-1] for b in batches]
    q = path.with_name("model.int8.onnx")
    # per_channel: a scale per output column. Per-tensor scales lose too much on real weights
    # (all-MiniLM-L6-v2: mean sentence cosine 0.965). MatMuls of two activations (q.k, p.v) stay fp32.
    logging.disable(logging.WARNING)  # it advises pre-processing the graph; on MiniLM that changed no cosine
    try:
        import onnx

        # DefaultTensorType: shape inference cannot type the outputs of fused (com.microsoft) ops
        quantize_dynamic(str(path), str(q), op_types_to_quantize=["MatMul"], per_channel=True, weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        logging.disable(logging.NOTSET)
    os.replace(q, path)
    int8 = OnnxRunner(path, task=task)
    cosines = []
    for b, r in zip(batches, ref):
        x = int8.run(b)[-1]
        keep = b["attention_mask"].numpy() == 1 if OUTPUTS[task][-1] == "last_hidden_state" else slice(None)
        cosines.append(cosine(x, r)[keep].min())
    return float(min(cosines))


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity along the last axis."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)


def _write_sidecars(model: nn.Module, src: Path, tmp: Path) -> list[str]:
    """config.json, the tokenizer, sentence_bert_config.json and crf.safetensors into tmp; their names."""
    from ..tokenizer import Tokenizer

    config = model.config
    # the dtype a source config recorded no longer describes the graph
    extra = {k: v for k, v in config.extra.items() if k not in ("dtype", "torch_dtype")}
    dataclasses.replace(config, extra=extra).save(tmp / "config.json")
    if Tokenizer.can_load(src):
        Tokenizer.from_pretrained(src).save_pretrained(tmp)
    else:
        print(f"note: {src} has no tokenizer; the export has none either (texts cannot be encoded for it).", file=sys.stderr)
    if (src / "sentence_bert_config.json").is_file():  # its max_seq_length is the embedding length limit
        shutil.copyfile(src / "sentence_bert_config.json", tmp / "sentence_bert_config.json")
    if getattr(model, "crf", None) is not None:
        from ..io.files import save_safetensors

        save_safetensors({k: v.detach().cpu().contiguous() for k, v in model.crf.state_dict().items()}, tmp / "crf.safetensors")
    return [n for n in SIDECARS if (tmp / n).exists()]


# ---- command line --------------------------------------------------------------------------------


def cmd_export_onnx(a) -> None:
    print(export_onnx(a.model, a.out, task=a.task, bf16=a.bf16, int8=a.int8, fuse=not a.no_fuse).describe())


def add_export_parser(subparsers) -> None:
    """`bertkit export onnx MODEL --out FILE [--task ...] [--bf16 | --int8]`."""
    export_arguments(subparsers.add_parser("export", help="export a model for another runtime (ONNX)"))


def export_arguments(s) -> None:
    """The arguments of `bertkit export` on its parser `s`."""
    formats = s.add_subparsers(dest="format", required=True, metavar="FORMAT")
    e = formats.add_parser("onnx", help="an ONNX graph with dynamic batch and length, checked against PyTorch")
    e.add_argument("model", help="a checkpoint directory, a fine-tuned model directory, or a hub name")
    e.add_argument("--out", required=True, help="the .onnx file to write; config.json and the tokenizer go beside it")
    e.add_argument("--task", choices=EXPORT_TASKS, default=None,
                   help="what the graph outputs (default: the fine-tuned task, else embed)")
    precision = e.add_mutually_exclusive_group()
    precision.add_argument("--int8", action="store_true", help="int8 weight MatMuls (onnxruntime dynamic quantisation)")
    precision.add_argument("--bf16", action="store_true", help="bfloat16 (refused: onnxruntime's CPU provider cannot run it)")
    e.add_argument("--no-fuse", action="store_true", help="standard ONNX ops only (for runtimes other than onnxruntime); "
                                                         "default: onnxruntime's fused SkipLayerNorm and BiasGelu")
    e.set_defaults(run=cmd_export_onnx)
