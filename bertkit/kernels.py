"""Inference kernels for the CPU: oneDNN's prepacked matmuls (fp32 and bf16) and an int8 path.

Why. torch runs `nn.Linear` in fp32 through MKL, which on AMD CPUs takes a slow code path: on an
AMD EPYC with AVX-512 it reached 225 GFLOP/s where oneDNN, which torch also ships, reached 470 with
plain weights and 510-540 with weights reordered once into its blocked layout
(benchmarks/speed.py measures the models; docs/results/ per CPU kind). The engines a user would pick
instead (ONNX Runtime, OpenVINO, CTranslate2) all use such kernels. So for inference on the CPU
bertkit reorders each weight once at load and calls oneDNN, with the FFN's GELU fused into its
first matmul:

    prepack(model)          # every nn.Linear -> PackedLinear (fp32 or bf16, the weights' dtype)
    quantize_int8(model)    # every encoder layer's nn.Linear -> Int8Linear (see below)
    reference_kernels()     # a context in which both run plain F.linear: the parity reference
    measured_paths(model)   # seconds of the model's matmuls per dtype and kernel, timed on this CPU (cached)

Which kernel wins is the CPU's business, not its vendor's: oneDNN's prepacked fp32 gave 1.7-2.7x on an AMD EPYC but
~1.07x on an Intel Xeon with AMX (FIELD-NOTES.md). So the loader times both on the model's own matmul shapes the first
time it meets a CPU (its model name and flags, the torch version and thread count) and keeps the answer in
$BERTKIT_CACHE (default ~/.cache/bertkit/kernels.json).

Both keep the module's parameter names and values (`up.weight`, `up.bias`), so state_dict and
save_pretrained see the model they saw before; the packed copy is an extra buffer, rebuilt if
the weight changes, and ignored while autograd records (training runs plain F.linear).

int8 (`Int8Linear`): weights quantised per output channel, activations per token (row) at each
call, the products in int32 by torch._int_mm (VNNI/AMX where the CPU has them), rescaled to fp32,
with the ~2% of input channels that carry outliers kept in fp32. Least pooled cosine to fp32 on
all-MiniLM-L6-v2 and real text: per-token scales alone 0.969 (a one-off probe), with the fp32
outlier channels 0.998-0.999, where the int8 ONNX export (onnxruntime's dynamic quantisation,
per-tensor activation scales) keeps 0.972-0.982 (docs/results/int8.md; tests/test_kernels.py holds
bertkit's path to >= 0.99).

Shapes: x [..., K] -> [..., N]; weights [N, K] as nn.Linear stores them.

Why ~470 lines: three kernel families (oneDNN fp32/bf16 prepacked, bf16 matmuls, int8 with outlier channels), their timing and cache, and the load-time checks; each is small, they share the layer swap.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .io.files import write_atomic
from .model import FeedForward

PACK_BATCH = 128  # the batch-size hint oneDNN chooses its weight layout for (any batch runs on it)
_REFERENCE = [False]  # inside reference_kernels(): every packed or int8 layer runs plain F.linear


@contextlib.contextmanager
def reference_kernels():
    """Run PackedLinear and Int8Linear as plain fp32 F.linear of their own weights (the parity reference)."""
    _REFERENCE[0] = True
    try:
        yield
    finally:
        _REFERENCE[0] = False


@functools.cache
def onednn_linear() -> bool:
    """Whether this torch has oneDNN's prepacked linear on the CPU and it agrees with F.linear (probed once)."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    try:
        g = torch.Generator().manual_seed(0)
        x, w, b = torch.randn(5, 24, generator=g), torch.randn(40, 24, generator=g), torch.randn(40, generator=g)
        packed = torch.ops.mkldnn._reorder_linear_weight(w, PACK_BATCH)
        got = torch.ops.mkldnn._linear_pointwise(x, packed, b, "gelu", [], "none")
        return bool(torch.allclose(got, F.gelu(F.linear(x, w, b)), atol=1e-4))
    except (RuntimeError, NotImplementedError):
        return False


@functools.cache
def onednn_dtype(dtype: torch.dtype) -> bool:
    """Whether oneDNN's prepacked linear runs in `dtype` on this CPU (bf16 needs AVX512-BW/VL/DQ or AVX-NE-CONVERT:
    an AVX2-only CPU refuses it at the reorder, so such layers fall back to F.linear)."""
    if not onednn_linear():
        return False
    if dtype == torch.float32:
        return True
    try:
        w = torch.ones(40, 24, dtype=dtype)
        got = torch.ops.mkldnn._linear_pointwise(torch.ones(5, 24, dtype=dtype), torch.ops.mkldnn._reorder_linear_weight(w, PACK_BATCH),
                                                 None, "none", [], "")
        return bool(float(got[0, 0]) == 24.0)
    except (RuntimeError, NotImplementedError):
        return False


def int8_matmul() -> bool:
    """Whether torch._int_mm runs on this CPU (torch >= 2.2)."""
    return _int_mm_works()


@functools.cache
def _int_mm_works() -> bool:
    try:
        a, b = torch.ones(17, 32, dtype=torch.int8), torch.ones(32, 8, dtype=torch.int8)
        return int(torch._int_mm(a, b)[0, 0]) == 32
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


FUSED_ACTS = (F.gelu,)  # the activation oneDNN applies inside the matmul (exact, erf GELU)


def _onednn_call(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, n: int, gelu: bool) -> torch.Tensor:
    """x [..., K] times the prepacked [N, K] weight (+ bias, then exact GELU if asked) -> [..., N]."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "gelu" if gelu else "none", [], "none" if gelu else "")


_onednn_linear = _onednn_call  # what a compiled graph calls: wrapped below as an op torch.compile sees as one


ROW_STEP = 16  # eager calls pad an input's rows up to a bucket: oneDNN keeps a primitive (and its memory) per distinct
ROW_BUCKETS = 8  # shape, and packed batches have a new row count almost every call (a served model's RSS grew 65% over
# 10,000 requests, benchmarks/serve_clients.py). Buckets: multiples of 16 up to 128, then 8 per doubling (at most 12.5%
# padding): a process sees ~8 shapes per layer per doubling of the rows, 24 up to 512 rows, whatever its traffic.


def padded_rows(rows: int) -> int:
    """The bucket `rows` is padded up to before a oneDNN call."""
    step = max(ROW_STEP, 1 << max(0, (rows - 1).bit_length() - ROW_BUCKETS.bit_length()))
    return -(-rows // step) * step


def _onednn_linear_rows(x, packed, bias, n: int, gelu: bool):
    """_onednn_linear on x's rows (all leading dims flattened) padded up to their bucket, cut back to x's shape."""
    lead = x.shape[:-1]
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    padded = padded_rows(rows) if rows else 0
    if padded == rows and x.dim() == 2:
        return _onednn_call(x, packed, bias, n, gelu)
    flat = torch.nn.functional.pad(x.reshape(rows, x.shape[-1]), (0, 0, 0, padded - rows))
    return _onednn_call(flat, packed, bias, n, gelu)[:rows].view(*lead, n)


_onednn_linear_eager = _onednn_linear_rows  # eager calls oneDNN directly (_onednn_call): the custom op's wrapper costs ~7 us
# a call, and its first call imports torch's compiler stack (~1 s of start-up)
if hasattr(torch.library, "custom_op"):  # an opaque op to torch.compile (inductor cannot lower oneDNN's own call)
    _onednn_linear = torch.library.custom_op("bertkit::onednn_linear", mutates_args=())(_onednn_call)

    @_onednn_linear.register_fake
    def _(x, packed, bias, n, gelu):
        return x.new_empty(*x.shape[:-1], n)


class PackedLinear(nn.Module):
    """nn.Linear whose inference runs oneDNN on a weight reordered once (plus an optional fused GELU)."""

    def __init__(self, linear: nn.Linear, act=None):
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias  # the same Parameters: names and values unchanged
        self.act = act  # None, or a key of FUSED_ACTS, applied after the matmul
        self._packed, self._version = None, None

    def packed(self) -> torch.Tensor:
        w = self.weight
        if self._packed is None or self._version != (w._version, w.dtype, w.data_ptr()):
            self._packed = torch.ops.mkldnn._reorder_linear_weight(w.detach(), PACK_BATCH)
            self._version = (w._version, w.dtype, w.data_ptr())
        return self._packed

    def forward(self, x):
        fast = (not _REFERENCE[0] and x.device.type == "cpu" and x.dtype == self.weight.dtype and not torch.jit.is_tracing()
                and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)) and onednn_dtype(x.dtype))
        if fast:
            op = _onednn_linear if torch.compiler.is_compiling() else _onednn_linear_eager
            return op(x, self.packed(), self.bias, self.weight.shape[0], self.act is not None)
        y = F.linear(x, self.weight, self.bias)
        return self.act(y) if self.act is not None else y

    def extra_repr(self) -> str:
        n, k = self.weight.shape
        return f"in_features={k}, out_features={n}, oneDNN prepacked" + (", GELU fused" if self.act else "")


class Int8Linear(nn.Module):
    """nn.Linear in int8: per-output-channel weight scales, per-token activation scales, int32 products,
    and a few outlier input channels kept in fp32.

    y = (round(x_r / s_x) @ round(W_r / s_w)^T) * s_x * s_w + x_o @ W_o^T + b, where x_o are the
    `outliers` input channels (those whose activations run largest: LLM.int8's decomposition, Dettmers
    et al. 2022) and x_r the rest; s_x = max|x_r row| / 127, s_w = max|W_r row| / 127. BERT's hidden
    states carry a few channels tens of times larger than the others, mostly at [CLS] and [SEP]; with
    them inside one per-token scale, every other channel of that token loses most of its bits.
    Keeps the fp32 weight (state_dict, the reference) beside its int8 copy.
    """

    def __init__(self, linear: nn.Linear, outliers: torch.Tensor | None = None):
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias
        w = linear.weight.detach().float()  # [N, K]
        outliers = torch.zeros(0, dtype=torch.long) if outliers is None else outliers.sort().values
        self.register_buffer("outliers", outliers, persistent=False)
        self.register_buffer("w_out", w[:, outliers].t().contiguous(), persistent=False)  # [k, N], fp32
        w = w.index_fill(1, outliers, 0.0)  # the outlier channels' int8 weights are 0: x_o saturates harmlessly
        scale = w.abs().amax(1).clamp(min=1e-12) / 127  # [N]
        self.register_buffer("w_int8", (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8).t().contiguous(),
                             persistent=False)  # [K, N]: _int_mm's layout
        self.register_buffer("w_scale", scale, persistent=False)

    def forward(self, x):
        if _REFERENCE[0] or x.device.type != "cpu" or torch.jit.is_tracing() or torch.is_grad_enabled() and x.requires_grad:
            return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))
        shape, dtype = x.shape, x.dtype
        y = int8_linear(x.reshape(-1, shape[-1]).float(), self.outliers, self.w_int8, self.w_scale, self.bias, self.w_out)
        return y.to(dtype).reshape(*shape[:-1], -1)

    def extra_repr(self) -> str:
        n, k = self.weight.shape
        return (f"in_features={k}, out_features={n}, int8 per-channel weights, per-token activations, "
                f"{len(self.outliers)} outlier channels in fp32")


def int8_linear(x, outliers, w_int8, w_scale, bias, w_out):  # x [M, K] fp32 -> [M, N] fp32; see Int8Linear
    """The int8 product with its scales, in place where it can be (eager: each step is a pass over memory)."""
    M, k = x.shape[0], outliers.shape[0]
    peak = x.abs()
    if k:
        peak.index_fill_(1, outliers, 0.0)  # the scale of the rest only
    s = peak.amax(1, keepdim=True).clamp_(min=1e-12) / 127  # [M, 1]
    q = (x * s.reciprocal()).round_().clamp_(-127, 127).to(torch.int8)
    if M <= 16:  # torch._int_mm wants more than 16 rows: pad the few-token case
        q = F.pad(q, (0, 0, 0, 17 - M))
    y = torch._int_mm(q, w_int8)[:M].float().mul_(s).mul_(w_scale)  # int32 [M, N] -> fp32: row and column scales
    if bias is not None:
        y.add_(bias)
    if k:
        y.addmm_(x.index_select(1, outliers), w_out)  # the outlier channels, in fp32
    return y


def prepack(model: nn.Module) -> int:
    """Turn every nn.Linear of `model` into a PackedLinear (GELU fused into each FFN's first matmul where its
    activation is exact GELU). Returns how many; 0 where oneDNN's linear is missing (the model is unchanged)."""
    if not onednn_linear():
        return 0
    return _replace(model, lambda lin, act: PackedLinear(lin, act))


OUTLIER_SHARE = 1 / 48  # input channels per layer kept in fp32 (8 of 384, 32 of 1536)


def quantize_int8(model: nn.Module, calibration: dict | None = None,
                  keep=("pooler", "mlm", "classifier", "cls_head", "nsp", "head")) -> int:
    """Turn the encoder layers' nn.Linear into Int8Linear (the embeddings, pooler and task heads stay as they
    are: small, and where an error would show most). The outlier channels of each layer are the inputs
    whose magnitude runs largest on `calibration` (model inputs by name; default: random ids of two
    lengths), found in one fp32 forward. Returns how many layers; 0 where torch._int_mm cannot run."""
    if not int8_matmul():
        return 0
    peaks = input_peaks(model, calibration or random_batch(model))
    def make(lin, act, name):
        k = round(lin.in_features * OUTLIER_SHARE)
        return Int8Linear(lin, peaks[name].topk(min(k, lin.in_features - 1)).indices if name in peaks and k else None)
    return _replace(model, make, skip=keep, named=True)


def input_peaks(model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    """Per nn.Linear (by module name): the largest |input| of each input channel over one forward of `batch`."""
    peaks, hooks = {}, []
    for name, m in model.named_modules():
        if type(m) is nn.Linear:
            def hook(module, inputs, output, name=name):
                x = inputs[0].detach().float().abs().reshape(-1, inputs[0].shape[-1]).amax(0)
                peaks[name] = torch.maximum(peaks[name], x) if name in peaks else x
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            encoder = getattr(model, "bert", model)
            encoder(**batch)
    finally:
        for h in hooks:
            h.remove()
    return peaks


def random_batch(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Calibration inputs when none are given: 8 random sequences of 32 ids and 8 of 6 (padded)."""
    c = getattr(model, "bert", model).config
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(min(5, c.vocab_size - 1), c.vocab_size, (16, min(32, c.max_length)), generator=g)
    mask = torch.ones_like(ids)
    mask[8:, 6:] = 0
    return {"input_ids": ids * mask + (c.pad_token_id or 0) * (1 - mask), "attention_mask": mask}


def _replace(model: nn.Module, make, skip=(), named: bool = False) -> int:
    count = 0
    for name, module in list(model.named_modules()):
        if any(part in skip for part in name.split(".")):
            continue
        if isinstance(module, FeedForward) and module.act in FUSED_ACTS and type(module.up) is nn.Linear and not named:
            module.up, module.act = _keep_hooks(module.up, make(module.up, module.act)), _identity  # GELU into the matmul
            count += 1
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if type(child) is nn.Linear and not any(part in skip for part in full.split(".")):
                setattr(module, child_name, _keep_hooks(child, make(child, None, full) if named else make(child, None)))
                count += 1
    return count


def _keep_hooks(old: nn.Module, new: nn.Module) -> nn.Module:
    """The replacement keeps the layer's forward pre-hooks (bf16_matmuls' input cast)."""
    new._forward_pre_hooks.update(old._forward_pre_hooks)
    return new


# ---- bf16 matmuls in an fp32 model ------------------------------------------------------------------------------


def bf16_matmuls(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """Cast the encoder layers' linear weights to `dtype`, each layer casting its input on the way in (a forward
    pre-hook): the matmuls, ~75% of the time, run in bf16 while embeddings, residual sums, LayerNorms, softmax and
    heads stay fp32. On the real MiniLM weights and 400 real texts the least pooled cosine to fp32 is 0.99993 this way
    against 0.99985 with the whole model cast (a one-word text: 0.99996 against 0.99986), for ~5% more time: the
    hidden states between layers keep fp32's 24 bits. Returns how many layers."""
    count = 0
    for name, m in model.named_modules():
        if "layers" in name.split(".") and isinstance(m, (nn.Linear, PackedLinear)):
            m.to(dtype)
            m.register_forward_pre_hook(_cast_input)
            count += 1
    return count


def _cast_input(module, args):
    x = args[0]
    return (x.to(module.weight.dtype), *args[1:]) if x.dtype != module.weight.dtype else None


def _identity(x):
    return x


def kernels_of(model: nn.Module) -> str:
    """Which kernels the model's linear layers run: "int8", "onednn", or "torch" (plain; also prepacked layers
    whose dtype this CPU's oneDNN refuses, as bf16 on an AVX2-only CPU: they run F.linear)."""
    kinds = {type(m) for m in model.modules()}
    if Int8Linear in kinds:
        return "int8"
    packed = any(isinstance(m, PackedLinear) and onednn_dtype(m.weight.dtype) for m in model.modules())
    return "onednn" if packed else "torch"


# ---- choosing kernels by measurement -------------------------------------------------------------------------------

PATHS = ("fp32/torch", "fp32/onednn", "bf16/torch", "bf16/onednn")  # dtype/kernel of every linear layer
TIMING_ROWS = (32, 1024)  # one short input and a batch's worth of tokens: the regimes whose best kernel can differ
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")


def cpu_name(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name and the flags that decide its kernels, e.g. "AMD EPYC [avx2 avx512f avx512_bf16]"."""
    name, flags = platform.processor() or platform.machine(), []
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = value.split()
                    break
    except OSError:
        pass  # no /proc/cpuinfo (not Linux): the platform's name, no flags
    return f"{name} [{' '.join(f for f in CPU_FLAGS if f in flags)}]"


def cache_file(name: str = "kernels.json") -> Path:
    """Where bertkit keeps what it measured on this machine: $BERTKIT_CACHE, else ~/.cache/bertkit ($XDG_CACHE_HOME)."""
    root = os.environ.get("BERTKIT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bertkit"
    return Path(root) / name


def linear_shapes(model: nn.Module) -> dict[tuple[int, int], int]:
    """(out, in) features of the model's linear layers -> how many layers have that shape."""
    shapes: dict[tuple[int, int], int] = {}
    for m in model.modules():
        if isinstance(m, (nn.Linear, PackedLinear, Int8Linear)):
            key = tuple(m.weight.shape)
            shapes[key] = shapes.get(key, 0) + 1
    return shapes


def measured_paths(model: nn.Module, dtypes=(torch.float32, torch.bfloat16)) -> dict[str, float]:
    """Seconds one pass of the model's linear layers takes on each path of PATHS this CPU runs (in `dtypes`): the
    geometric mean over TIMING_ROWS. Timed once per CPU, torch version, thread count and set of shapes, then cached."""
    shapes = linear_shapes(model)
    key = " | ".join([cpu_name(), f"torch {torch.__version__}", f"{torch.get_num_threads()} threads",
                      ",".join(f"{n}x{k}*{c}" for (n, k), c in sorted(shapes.items()))])
    cache = read_cache()
    wanted = [p for p in PATHS if _runs(p) and DTYPES[p.split("/")[0]] in dtypes]
    known = cache.get(key, {})
    if all(p in known for p in wanted):
        return {p: known[p] for p in wanted}
    times = known | {p: _time_path(p, shapes) for p in wanted if p not in known}
    cache[key] = times
    write_cache(cache)
    return {p: times[p] for p in wanted}


def fastest(times: dict[str, float], dtype: torch.dtype) -> str:
    """The kernel ("onednn" or "torch") of the fastest measured path in `dtype`."""
    name = {v: k for k, v in DTYPES.items()}[dtype]
    mine = {p: t for p, t in times.items() if p.startswith(name + "/")}
    return min(mine, key=mine.get).split("/")[1] if mine else "torch"


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _runs(path: str) -> bool:
    dtype, kernel = path.split("/")
    return kernel == "torch" or onednn_dtype(DTYPES[dtype])


def _time_path(path: str, shapes: dict[tuple[int, int], int], repeats: int = 3) -> float:
    dtype, kernel = DTYPES[path.split("/")[0]], path.split("/")[1]
    g = torch.Generator().manual_seed(0)
    per_rows = []
    with torch.inference_mode():
        for rows in TIMING_ROWS:
            total = 0.0
            for (n, k), count in shapes.items():
                x, w, b = (torch.randn(*s, generator=g).to(dtype) for s in ((rows, k), (n, k), (n,)))
                if kernel == "onednn":
                    packed = torch.ops.mkldnn._reorder_linear_weight(w, PACK_BATCH)
                    call = functools.partial(_onednn_call, x, packed, b, n, False)
                else:
                    call = functools.partial(F.linear, x, w, b)
                call()  # the first call builds oneDNN's primitive
                best = float("inf")
                for _ in range(repeats):
                    start = time.perf_counter()
                    call()
                    best = min(best, time.perf_counter() - start)
                total += count * best
            per_rows.append(total)
    return float(torch.tensor(per_rows).log().mean().exp())


def read_cache(name: str = "kernels.json") -> dict:
    try:
        data = json.loads(cache_file(name).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: measure again


def write_cache(cache: dict, name: str = "kernels.json") -> None:
    try:
        cache_file(name).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cache_file(name), lambda f: f.write(json.dumps(cache, indent=1).encode()))
    except OSError:
        pass  # a read-only home: measured again next time, nothing lost
