"""One way to load a model for inference: `load_for_inference(path, backend, bf16, device)`.

What predict, evaluate, embed, fill-mask, export and serve all call. `path` is a checkpoint
directory, a hub name, or a training run's --out directory (io.hub finds its model/). The torch
backend builds the class the checkpoint holds (or the one asked for: `kind`), puts it on the
fastest device and casts it to bf16 once (the CRF stays fp32); the onnx backend runs an export of
`bertkit export onnx` through onnxruntime, called like the torch model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import find_config, read_pretrained
from ..config import BertConfig
from ..errors import BertkitError
from ..heads import MODEL_CLASSES, TASKS, BertForMaskedLM, task_of
from ..io.hub import locate
from ..model import BertModel
from ..tokenizer import Tokenizer

KINDS = ("task", "mlm", "encoder")  # what a caller needs: a model bertkit fine-tuned, an MLM head, the backbone


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
    if "bertkit" in config.extra:
        return "task"
    return "mlm" if any(k.startswith("mlm.") for k in names) else "encoder"


def load_for_inference(path, backend: str = "torch", bf16: bool = False, device=None, kind: str | None = None,
                       threads: int | None = None, tokenizer: bool = True):
    """(model, tokenizer) in eval mode. kind None: what the checkpoint holds (see kind_of); threads: torch's
    intra-op threads, or onnxruntime's (on a shared machine fewer spin less: OpenMP waits busily);
    tokenizer False: the model only (export, of a checkpoint that may have none), the tokenizer None."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if backend == "onnx":
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
    return model, Tokenizer.from_pretrained(d) if tokenizer else None


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
