"""One way to load a model for inference: `load_for_inference(path, backend, bf16, device, int8=, kernels=)`.

What predict, evaluate, embed, fill-mask, export and serve all call. `path` is a checkpoint
directory, a hub name, or a training run's --out directory (io.hub finds its model/). The torch
backend builds the class the checkpoint holds (or the one asked for: `kind`), puts it on the
fastest device and casts it to bf16 once (the CRF stays fp32); on the CPU it then runs its linear
layers through oneDNN on weights prepacked once (kernels.prepack: 1.7-2.7x faster fp32 than torch's
own matmuls on an AMD EPYC), or in int8 (`int8=True`, kernels.quantize_int8). Either is checked on
its first call against the plain kernels (`check_kernels`) and dropped, with a warning, if it
disagrees; denormal floats are then flushed to zero for the process. The onnx backend runs an
export of `bertkit export onnx` through onnxruntime, called like the torch model.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..checkpoint import find_config, read_pretrained
from ..config import BertConfig
from ..errors import BertkitError
from ..heads import MODEL_CLASSES, TASKS, BertForMaskedLM, hf_task, task_of
from ..io.hub import locate
from ..kernels import Int8Linear, PackedLinear, kernels_of, prepack, quantize_int8, reference_kernels
from ..model import BertModel, mean_pool
from ..tokenizer import Tokenizer

KINDS = ("task", "mlm", "encoder")  # what a caller needs: a model bertkit fine-tuned, an MLM head, the backbone
KERNELS = ("auto", "torch")  # auto: oneDNN prepacked (or int8) on the CPU where it passes its check; torch: plain
FP32_BOUND = 1e-4  # oneDNN vs torch's matmuls in fp32: max |difference| of last_hidden_state (measured 5e-6 on MiniLM)
INT8_BOUND = 0.99  # int8 vs fp32: least cosine of the check batch's pooled vectors (0.996 on MiniLM, real text)


def default_device() -> torch.device:
    """The fastest device present: a CUDA GPU, Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def bf16_is_fast(device=None, cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether bf16 runs faster than fp32 on `device` (default: `default_device()`): a CUDA GPU with bf16
    support, or a CPU that multiplies bf16 in hardware (AVX512-BF16 or AMX, read from /proc/cpuinfo).
    Elsewhere torch emulates bf16 through fp32 and it is several times slower: keep fp32 there."""
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def kind_of(config: BertConfig, names) -> str:
    """What a checkpoint holds: a task bertkit fine-tuned, else an MLM head (weights named mlm.*), else an encoder."""
    if isinstance(config.extra.get("bertkit"), dict) and config.extra["bertkit"].get("task") != "seq2seq":
        return "task"  # a tagger or classifier (a seq2seq model's encoder embeds like any encoder)
    if hf_task(config) is not None:
        return "task"  # a transformers sequence classifier (a cross-encoder reranker with one label)
    return "mlm" if any(k.startswith("mlm.") for k in names) else "encoder"


def load_for_inference(path, backend: str = "torch", bf16: bool = False, device=None, kind: str | None = None,
                       threads: int | None = None, tokenizer: bool = True, int8: bool = False, kernels: str = "auto"):
    """(model, tokenizer) in eval mode. kind None: what the checkpoint holds (see kind_of); threads: torch's
    intra-op threads, or onnxruntime's (on a shared machine fewer spin less: OpenMP waits busily);
    tokenizer False: the model only (export, of a checkpoint that may have none), the tokenizer None;
    int8: int8 linear layers (CPU); kernels "torch": torch's plain matmuls (the reference), not oneDNN's."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if kernels not in KERNELS:
        raise BertkitError(f"--kernels must be one of {', '.join(KERNELS)}, not {kernels!r}.")
    if int8 and bf16:
        raise BertkitError("choose one of --int8 and --bf16.")
    if int8 and kernels == "torch":
        raise BertkitError("--int8 runs bertkit's int8 kernels; it cannot be combined with --kernels torch.")
    if backend == "onnx":
        if int8:
            raise BertkitError("--int8 applies to the torch backend; quantise an ONNX graph at export (`bertkit export onnx --int8`).")
        return _load_onnx(path, bf16, kind, threads)
    if backend != "torch":
        raise BertkitError(f"--backend must be torch or onnx, not {backend!r}.")
    if threads:
        torch.set_num_threads(threads)
    d, config, conv = read_pretrained(path)
    kind = kind or kind_of(config, conv.state_dict)
    if kind == "task":
        model = MODEL_CLASSES[task_of(config)["task"]].from_converted(d, config, conv, verbose=False)
    elif kind == "mlm":
        model = BertForMaskedLM.from_converted(d, config, conv, verbose=False)
    else:
        model = BertModel.from_converted(d, config, conv, new_heads=True, verbose=False)
    model = model.to(device or default_device()).eval()
    if bf16:  # cast once: autocast would re-cast every weight at every call (slower, and RSS kept growing)
        model.to(torch.bfloat16)
        if getattr(model, "crf", None) is not None:
            model.crf.float()  # Viterbi on float emissions (predictions cast them)
    if next(model.parameters()).device.type == "cpu" and kernels == "auto":
        if int8 and not quantize_int8(model):
            raise BertkitError("--int8 needs torch._int_mm on the CPU, which this torch lacks (torch >= 2.2).")
        prepack(model)  # every linear layer int8 left (all of them without --int8)
        # Denormal floats flushed to zero in this process, as ONNX Runtime and OpenVINO do in their threads: GELU's far
        # negative tail makes them, and arithmetic on them is slow (int8 MiniLM 32 x 128 on real text: 350 -> 205 ms).
        torch.set_flush_denormal(True)
        check_kernels(model)
    elif int8:
        raise BertkitError(f"--int8 runs on the CPU; this model is on {next(model.parameters()).device}.")
    return model, Tokenizer.from_pretrained(d) if tokenizer else None


def check_kernels(model, seed: int = 0) -> str:
    """Run a small padded batch through the model's fast kernels and through the plain ones; keep the fast
    kernels if they agree (fp32/bf16: max |difference| of the hidden states within FP32_BOUND, or within what bf16
    itself allows; int8: pooled cosine >= INT8_BOUND), else put the plain nn.Linear back and say so. Returns what runs."""
    kind = kernels_of(model)
    if kind == "torch":
        return kind
    encoder = getattr(model, "bert", model)
    c = encoder.config
    g = torch.Generator().manual_seed(seed)
    T = min(24, c.max_length)
    ids = torch.randint(min(5, c.vocab_size - 1), c.vocab_size, (2, T), generator=g)
    mask = torch.ones_like(ids)
    mask[1, T // 2:] = 0
    with torch.inference_mode():
        fast = encoder(ids, mask).last_hidden_state.float()
        with reference_kernels():
            ref = encoder(ids, mask).last_hidden_state.float()
    real = mask.bool()
    if kind == "int8":
        agree = float(torch.nn.functional.cosine_similarity(mean_pool(fast, mask), mean_pool(ref, mask), dim=-1).min())
        ok, what = agree >= INT8_BOUND, f"pooled cosine {agree:.4f} (needs >= {INT8_BOUND})"
    else:
        bound = FP32_BOUND if fast.dtype == next(model.parameters()).dtype == torch.float32 else 0.1 * float(ref.abs().max())
        agree = float((fast - ref)[real].abs().max())
        ok, what = agree <= bound, f"max difference {agree:.1e} (bound {bound:.1e})"
    if ok:
        return kind
    unpack(model)
    print(f"bertkit: warning: the {kind} kernels disagree with torch's on a check batch ({what}); running torch's "
          "plain kernels instead.", file=sys.stderr)
    return "torch"


def unpack(model) -> None:
    """Put plain nn.Linear layers back in place of PackedLinear/Int8Linear (the same weights)."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, (PackedLinear, Int8Linear)):
                lin = torch.nn.Linear(1, 1, bias=child.bias is not None)
                lin.weight, lin.bias = child.weight, child.bias
                setattr(module, name, lin)
                if isinstance(child, PackedLinear) and child.act is not None:
                    module.act = child.act


def _load_onnx(path, bf16: bool, kind: str | None, threads: int | None):
    from .onnx import load_onnx

    if bf16:
        raise BertkitError("--bf16 applies to the torch backend; an ONNX graph keeps the precision it was exported in.")
    tasks = {"task": TASKS, "encoder": ("embed", "encoder"), None: ("embed", "encoder", *TASKS)}.get(kind)
    if tasks is None:
        raise BertkitError("an ONNX export has no MLM head; fill-mask needs --backend torch.")
    return load_onnx(path, tasks, threads)


def load_finetuned(path, backend: str = "torch", bf16: bool = False):
    """(model, tokenizer) of a model bertkit fine-tuned (a model directory or a run's --out)."""
    return load_for_inference(path, backend, bf16, kind="task")


def check_model(path) -> Path:
    """The quick checks before a server opens its port: the directory resolves and its config reads."""
    d, _ = locate(path)
    BertConfig.from_json_file(find_config(d))
    return d
