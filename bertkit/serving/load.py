"""One way to load a model for inference: `load_for_inference(path, backend, device=, precision=, kernels=)`.

What predict, evaluate, embed, fill-mask, export and serve all call. `path` is a checkpoint
directory, a hub name, or a training run's --out directory (io.hub finds its model/). The torch
backend builds the class the checkpoint holds (or the one asked for: `kind`) on the fastest device,
then picks its precision: by default ("auto") bf16 where the device multiplies bf16 in hardware,
the CPU at hand measures it faster, and the model's own pooled vectors of a few real sentences keep
cosine >= 0.9999 to fp32's; else fp32 (`--precision fp32|bf16|int8` overrides it; --bf16 and --int8
still work). On the CPU each linear layer then runs the kernel measured fastest for its dtype on this
CPU (kernels.measured_paths, cached: oneDNN's prepacked fp32 matmuls won 1.3-2.7x on AMD EPYCs, ~1.07x on
an Intel Xeon with AMX), or int8 (kernels.quantize_int8); the fast kernels are checked on their first
call against the plain ones (`check_kernels`) and dropped, with a warning, if they disagree; denormal
floats are then flushed to zero for the process. `model.precision_note` says what was chosen and why.
The onnx backend runs an export of `bertkit export onnx` through onnxruntime, called like the torch model.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

from ..checkpoint import find_config, read_pretrained
from ..config import BertConfig
from ..errors import BertkitError
from ..heads import MODEL_CLASSES, TASKS, BertForMaskedLM, hf_task, task_of
from ..io.hub import locate
from ..kernels import (Int8Linear, PackedLinear, bf16_matmuls, cpu_name, fastest, kernels_of, measured_paths, prepack, quantize_int8,
                       random_batch, read_cache, reference_kernels, write_cache)
from ..model import BertModel, mean_pool
from ..tokenizer import Tokenizer

KINDS = ("task", "mlm", "encoder")  # what a caller needs: a model bertkit fine-tuned, an MLM head, the backbone
KERNELS = ("auto", "onednn", "torch")  # auto: the one measured fastest on this CPU (checked on load); or force one
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


PRECISIONS = ("auto", "fp32", "bf16", "int8")  # auto: bf16 where the hardware has it, it measures faster, and it passes
AUTO_BF16_BOUND = 0.9999  # auto keeps bf16 when every check sentence's pooled vector keeps this cosine to fp32's
CHECK_TEXTS = (  # real sentences for the precision check: English and Chinese, short and long, as users send them
    "The cat sat on the mat.", "How do I reset my password?", "Paris is the capital and largest city of France.",
    "Stock markets fell sharply on Monday after the central bank raised interest rates for the third time this year.",
    "今天天气很好，我们去公园散步吧。", "这家酒店的服务态度非常差，房间也不干净，再也不会来了。", "北京是中华人民共和国的首都。",
    "新华社北京一月一日电国家主席江泽民发表了题为迈向充满希望的新世纪的新年讲话。",
)


def resolve_precision(precision: str | None, bf16: bool = False, int8: bool = False) -> str:
    """One of PRECISIONS from --precision and the older --bf16 / --int8 switches (which still work); None: auto."""
    if bf16 and int8:
        raise BertkitError("choose one of --int8 and --bf16.")
    legacy = "bf16" if bf16 else "int8" if int8 else None
    if precision is None:
        return legacy or "auto"
    if precision not in PRECISIONS:
        raise BertkitError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}.")
    if legacy and legacy != precision:
        raise BertkitError(f"--{legacy} contradicts --precision {precision}; give one of them.")
    return precision


def init_inference(threads: int | None = None) -> None:
    """The process-wide settings inference runs best with, set once by whoever owns the process (the CLI's inference
    commands and `bertkit serve` call it; a library user calls it or not), never by loading a model (nanochat's
    compute_init). threads: torch's intra-op threads (None: torch's default). Denormal floats are flushed to zero on
    the CPU, as ONNX Runtime and OpenVINO do in their threads: GELU's far negative tail makes them, and arithmetic on
    them is slow (int8 MiniLM 32 x 128 on real text: 350 -> 205 ms)."""
    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)


def load_for_inference(path, backend: str = "torch", bf16: bool = False, device=None, kind: str | None = None,
                       threads: int | None = None, tokenizer: bool = True, int8: bool = False, kernels: str = "auto",
                       precision: str | None = None):
    """(model, tokenizer) in eval mode. kind None: what the checkpoint holds (see kind_of); threads: torch's
    intra-op threads, or onnxruntime's (on a shared machine fewer spin less: OpenMP waits busily);
    tokenizer False: the model only (export, of a checkpoint that may have none), the tokenizer None.

    precision (None: auto, or what --bf16 / --int8 say): "fp32"; "bf16" (weights cast once); "int8" (int8 linear layers,
    CPU); "auto": bf16 where the device multiplies it in hardware (a bf16 GPU; AVX512-BF16 or AMX), it measures faster
    on the CPU at hand, and the model's own pooled vectors of CHECK_TEXTS keep cosine >= AUTO_BF16_BOUND to fp32's;
    else fp32. kernels: "auto" runs each linear layer on the kernel measured fastest on this CPU for its dtype (oneDNN
    prepacked or torch's own, kernels.measured_paths), "onednn" or "torch" force one. What was chosen and why is
    `model.precision` and `model.precision_note`."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if kernels not in KERNELS:
        raise BertkitError(f"--kernels must be one of {', '.join(KERNELS)}, not {kernels!r}.")
    want = resolve_precision(precision, bf16, int8)
    if want == "int8" and kernels == "torch":
        raise BertkitError("--int8 runs bertkit's int8 kernels; it cannot be combined with --kernels torch.")
    if backend in ("onnx", "openvino"):
        if want in ("int8", "bf16"):
            raise BertkitError(f"--{want} applies to the torch backend; an exported graph runs in the precision it was "
                               "exported in (`bertkit export onnx --int8`), and OpenVINO picks its own.")
        return _load_onnx(path, kind, threads, "openvino" if backend == "openvino" else "onnxruntime")
    if backend != "torch":
        raise BertkitError(f"--backend must be torch, onnx or openvino, not {backend!r}.")
    if threads:
        torch.set_num_threads(threads)
    d, config, conv = read_pretrained(path)
    kind = kind or kind_of(config, conv.state_dict)
    if kind == "task":
        model = MODEL_CLASSES[task_of(config).task].from_converted(d, config, conv, verbose=False)
    elif kind == "mlm":
        model = BertForMaskedLM.from_converted(d, config, conv, verbose=False)
    else:
        model = BertModel.from_converted(d, config, conv, new_heads=True, verbose=False)
    model = model.to(device or default_device()).eval()
    tok = Tokenizer.from_pretrained(d) if tokenizer else None
    on_cpu = next(model.parameters()).device.type == "cpu"
    if want == "int8" and not on_cpu:
        raise BertkitError(f"--int8 runs on the CPU; this model is on {next(model.parameters()).device}.")
    times = measured_paths(model, _dtypes(want, model)) if on_cpu and kernels == "auto" and want != "int8" else {}
    why = ""
    if want == "auto":
        model, want, why = _choose_precision(model, tok, times)
    elif want == "bf16":
        _cast(model, torch.bfloat16)
    if on_cpu and kernels != "torch":
        if want == "int8" and not quantize_int8(model):
            raise BertkitError("--int8 needs torch._int_mm on the CPU, which this torch lacks (torch >= 2.2).")
        dtype = torch.bfloat16 if want == "bf16" else torch.float32
        if want == "int8" or kernels == "onednn" or fastest(times, dtype) == "onednn":
            prepack(model)  # every linear layer int8 left (all of them without --int8)
        check_kernels(model)
    model.precision = want
    model.precision_note = _note(model, want, why, times)
    return model, tok


def _dtypes(want: str, model) -> tuple:
    """The dtypes worth timing: fp32 always, bf16 where asked or where auto may choose it."""
    bf16 = want == "bf16" or want == "auto" and bf16_is_fast(next(model.parameters()).device)
    return (torch.float32, torch.bfloat16) if bf16 else (torch.float32,)


def _cast(model, dtype) -> None:
    """Cast once (autocast would re-cast every weight at every call: slower, and RSS kept growing); the CRF stays fp32."""
    model.to(dtype)
    if getattr(model, "crf", None) is not None:
        model.crf.float()  # Viterbi on float emissions (predictions cast them)


def _choose_precision(model, tok, times: dict):
    """auto: (model, "bf16" or "fp32", why). bf16 needs hardware for it, a measured gain on the CPU, and the check."""
    device = next(model.parameters()).device
    if not bf16_is_fast(device):
        return model, "fp32", "no bf16 hardware here"
    if times:
        fp32, bf16 = (min(t for p, t in times.items() if p.startswith(name)) for name in ("fp32/", "bf16/"))
        if bf16 >= fp32:
            return model, "fp32", f"bf16 measured no faster here ({bf16 * 1e3:.1f} against {fp32 * 1e3:.1f} ms of matmuls)"
    key = _check_key(model, tok, device)
    checked = read_cache(CHECKS).get(key) if key else None
    if checked is None:
        batch = check_batch(model, tok, device)
        ref = _pooled(model, batch)
        trial = copy.deepcopy(model)
        mode = _to_bf16(trial)
        try:
            cosine = float(torch.nn.functional.cosine_similarity(_pooled(trial, batch), ref, dim=-1).min())
        except RuntimeError as e:  # a family whose compute does not take bf16 this way: fp32, and say why
            return model, "fp32", f"bf16 failed on the check batch ({str(e).splitlines()[0]})"
        checked = {"cosine": cosine, "sentences": len(batch["input_ids"]), "mode": mode}
        if key:
            write_cache(read_cache(CHECKS) | {key: checked}, CHECKS)
    else:
        trial = None  # checked before on these very weights: cast without a copy
    what = (f"{checked['mode']}; least pooled cosine to fp32 {checked['cosine']:.5f} on {checked['sentences']} check "
            "sentences")
    if checked["cosine"] < AUTO_BF16_BOUND:
        return model, "fp32", f"{what}, under {AUTO_BF16_BOUND}"
    if trial is None:
        _to_bf16(model)
        return model, "bf16", what + " (cached)"
    return trial, "bf16", what


def matmuls_only(config) -> bool:
    """Plain attention (BERT, RoBERTa, ALBERT, ELECTRA, ...: absolute positions, no compute module of its own): no
    position term computed in the hidden states' dtype that would meet bf16 queries (RoFormer, NEZHA, ModernBERT, DeBERTa)."""
    m = config.member
    return m.shape == "encoder" and m.positions == "absolute" and m.compute is None


def _to_bf16(model) -> str:
    """auto's bf16: the matmuls only (kernels.bf16_matmuls) where the family's attention is BERT's, else the whole
    model cast. Returns which, in words."""
    if matmuls_only(getattr(model, "bert", model).config) and bf16_matmuls(model):
        return "bf16 matmuls, fp32 between them"
    _cast(model, torch.bfloat16)
    return "bf16 throughout"


CHECKS = "precision.json"  # the auto check's cosines, per weights file and machine (kernels.cache_file)


def _check_key(model, tok, device) -> str | None:
    """What the check's answer depends on: the weights (their files' paths, sizes and times), the class, the
    tokenizer's presence, the device or CPU and torch. None where the weights came from no file."""
    d = getattr(model, "source_dir", None)
    files = sorted(p for p in Path(d).glob("*") if p.suffix in (".safetensors", ".bin") or p.name.endswith("config.json")) if d else []
    if not files:
        return None
    stamp = ",".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    where = cpu_name() if device.type == "cpu" else str(torch.cuda.get_device_name(device) if device.type == "cuda" else device)
    return " | ".join([str(Path(d).resolve()), stamp, type(model).__name__, f"tokenizer {tok is not None}", where,
                       f"torch {torch.__version__}", f"bound {AUTO_BF16_BOUND}", "bf16 matmuls in fp32 where plain"])


def check_batch(model, tok, device) -> dict:
    """CHECK_TEXTS through the model's tokenizer (random ids where it has none), on `device`."""
    if tok is None:
        return {k: v.to(device) for k, v in random_batch(model).items()}
    c = getattr(model, "bert", model).config
    enc = tok(list(CHECK_TEXTS), max_length=min(64, c.max_length))
    return {k: enc[k].to(device) for k in ("input_ids", "attention_mask")}


def _pooled(model, batch) -> torch.Tensor:
    with torch.inference_mode():
        h = getattr(model, "bert", model)(batch["input_ids"], batch["attention_mask"]).last_hidden_state.float()
    return mean_pool(h, batch["attention_mask"])


def _note(model, precision: str, why: str, times: dict) -> str:
    """One line saying what runs and why, e.g. "bf16 (auto: least pooled cosine ...), oneDNN kernels"."""
    kind = kernels_of(model) if next(model.parameters()).device.type == "cpu" else str(next(model.parameters()).device)
    line = f"{precision}" + (f" (auto: {why})" if why else "") + f", {KERNEL_NAMES.get(kind, kind)} kernels"
    dtype = "bf16" if precision == "bf16" else "fp32"
    paths = {p.split("/")[1]: t for p, t in times.items() if p.startswith(dtype + "/")}
    if kind in ("onednn", "torch") and len(paths) == 2:
        other = "torch" if kind == "onednn" else "onednn"
        line += f" (measured here: {paths[other] / paths[kind]:.2f}x as fast as {KERNEL_NAMES[other]})"
    return line


KERNEL_NAMES = {"onednn": "oneDNN prepacked", "torch": "torch's own", "int8": "int8"}


def say_precision(model) -> None:
    """The commands' last line on stderr: what precision and kernels ran (an ONNX runner says nothing)."""
    note = getattr(model, "precision_note", None)
    if note:
        print(f"note: ran {note}.", file=sys.stderr)


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
        fp32 = all(p.dtype == torch.float32 for p in model.parameters())  # (bf16 matmuls in an fp32 model: bf16's bound)
        bound = FP32_BOUND if fp32 else 0.1 * float(ref.abs().max())
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
                lin._forward_pre_hooks.update(child._forward_pre_hooks)  # bf16_matmuls' input cast
                setattr(module, name, lin)
                if isinstance(child, PackedLinear) and child.act is not None:
                    module.act = child.act


def _load_onnx(path, kind: str | None, threads: int | None, engine: str):
    from .onnx import load_onnx

    tasks = {"task": TASKS, "encoder": ("embed", "encoder"), None: ("embed", "encoder", *TASKS)}.get(kind)
    if tasks is None:
        raise BertkitError("an ONNX export has no MLM head; fill-mask needs --backend torch.")
    return load_onnx(path, tasks, threads, engine)


def load_finetuned(path, backend: str = "torch", bf16: bool = False, precision: str | None = None):
    """(model, tokenizer) of a model bertkit fine-tuned (a model directory or a run's --out)."""
    return load_for_inference(path, backend, bf16, kind="task", precision=precision)


def check_model(path) -> Path:
    """The quick checks before a server opens its port: the directory resolves and its config reads."""
    d, _ = locate(path)
    BertConfig.from_json_file(find_config(d))
    return d
