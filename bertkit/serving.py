"""What `bertkit serve` runs, apart from HTTP: the model backends, the micro-batcher, the metrics.

A backend is a loaded model behind a few methods (`Backend`): which endpoints it serves, the token
length of each input, and `run`, one synchronous call over a list of inputs that returns what
`bertkit predict` prints for each. `ModelBackend` runs a model through the very functions the
commands use (finetune.predict_texts, tasks.encode_sentences, tasks.fill_mask's head): one of
bertkit's torch models (`load_torch`), or an ONNX export in onnxruntime (`load_onnx`: export.py's
OnnxRunner is called like the torch model, so the same functions run it).

A `Batcher` owns one endpoint's bounded queue of requests and the worker that gathers them (up to
max_batch texts, or until the oldest has waited max_wait_ms), runs them in the inference thread as
forward passes of similar lengths (`length_groups`), and hands each request its own rows back.
`Metrics` writes Prometheus' text format by hand; everything here is updated on the event loop only.
"""

from __future__ import annotations

import asyncio
import bisect
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .errors import BertkitError

ENDPOINTS = ("embed", "fill-mask", "classify", "ner")
MAX_TOP_K = 50  # fill-mask computes this many candidates per mask; a request asks for top_k <= it
GROUP_SLACK = 16  # tokens of padding a forward may always absorb (below it, one more forward costs more)


# ---- backends: what runs the model ---------------------------------------------------------------


class Backend(Protocol):
    """A loaded model as the server sees it. `run` is called from one inference thread at a time."""

    endpoints: tuple[str, ...]  # which of ENDPOINTS it serves
    pairs: bool  # classify takes pairs [a, b]
    max_length: int  # tokens; longer inputs are truncated and flagged

    def describe(self) -> dict: ...

    def lengths(self, endpoint: str, items: list) -> list[int]:
        """Untruncated token counts (with [CLS]/[SEP]), for grouping by length."""

    def run(self, endpoint: str, items: list, lengths: list[int]) -> list[dict]:
        """One result row per item, in order (embed rows carry a float32 numpy vector)."""


ENDPOINTS_OF = {"classify": ("classify",), "pair": ("classify",), "ner": ("ner",), "mlm": ("embed", "fill-mask"),
                "encoder": ("embed",)}


class ModelBackend:
    """A model and its tokenizer behind the functions the commands use (finetune.predict_texts,
    tasks.encode_sentences, tasks.fill_mask's head at the masks). The model is one of bertkit's torch
    models or bertkit.export's OnnxRunner, which is called like one."""

    def __init__(self, model, tok, task: str, max_length: int, source, kind: str, bf16: bool = False):
        self.model, self.tok, self.task, self.max_length, self.kind, self.bf16 = model, tok, task, max_length, kind, bf16
        self.source, self.endpoints, self.pairs = str(source), ENDPOINTS_OF[task], task == "pair"
        self.encoder = getattr(model, "bert", model)  # the backbone, for embed
        self.device = next(model.parameters()).device

    def describe(self) -> dict:
        import torch

        return {"model": self.source, "task": self.task, "backend": self.kind, "bf16": self.bf16, "device": str(self.device),
                "threads": torch.get_num_threads(), "max_length": self.max_length, "endpoints": list(self.endpoints)}

    def lengths(self, endpoint: str, items: list) -> list[int]:
        inputs = [tuple(x) for x in items] if self.pairs else items
        return [len(e.ids) for e in self.tok.backend.encode_batch(inputs)]

    def run(self, endpoint: str, items: list, lengths: list[int]) -> list[dict]:
        from .finetune import predict_texts

        if endpoint == "embed":
            return self._embed(items, lengths)
        if endpoint == "fill-mask":
            return self._fill_mask(items, lengths)
        return predict_texts(self.model, self.tok, items, batch_size=len(items))

    def _embed(self, texts: list[str], lengths: list[int]) -> list[dict]:
        from .tasks import encode_sentences

        vectors = encode_sentences(self.encoder, self.tok, texts, batch_size=len(texts), max_length=self.max_length)
        return [{"text": t, "embedding": v, "truncated": n > self.max_length} for t, v, n in zip(texts, vectors, lengths)]

    def _fill_mask(self, texts: list[str], lengths: list[int]) -> list[dict]:
        """tasks.fill_mask for a batch: the MLM head only at the [MASK] positions (M of them)."""
        import torch

        batch = {k: v.to(self.device) for k, v in self.tok(texts, max_length=self.max_length).items()}
        with torch.inference_mode():
            h = self.encoder(**batch).last_hidden_state  # [B, T, H]
            where = batch["input_ids"] == self.tok.mask_token_id  # [B, T]
            logits = self.model.mlm(h[where], self.encoder.embed.word.weight)  # [M, V]
            probs, top = logits.float().softmax(-1).topk(min(MAX_TOP_K, logits.shape[-1]), dim=-1)  # [M, K]
        rows, m = [], 0
        for text, n, count in zip(texts, lengths, where.sum(1).tolist()):
            masks = [[{"token": t, "probability": round(p, 6)} for t, p in zip(self.tok.convert_ids_to_tokens(ids), ps)]
                     for ids, ps in zip(top[m:m + count].tolist(), probs[m:m + count].tolist())]
            rows.append({"text": text, "masks": masks, "truncated": n > self.max_length})
            m += count
        return rows


def model_dir(path) -> Path:
    """A training run's --out directory serves its model/ (as finetune.load_finetuned does)."""
    p = Path(path)
    if p.is_dir() and not (p / "config.json").exists() and (p / "model" / "config.json").exists():
        return p / "model"
    return p


def check_model(path) -> None:
    """The quick checks before the port opens: the directory resolves and its config reads."""
    from .checkpoint import find_config
    from .config import BertConfig
    from .hub import locate

    d, _ = locate(model_dir(path))
    BertConfig.from_json_file(find_config(d))


def load_torch(path, bf16: bool = False, threads: int | None = None) -> ModelBackend:
    """The task from the checkpoint: bertkit's task entry in config.json, else an MLM head, else an encoder."""
    import torch

    from .checkpoint import read_pretrained
    from .finetune import MODEL_CLASSES, task_of
    from .heads import BertForMaskedLM
    from .model import BertModel
    from .tasks import default_device, sentence_max_length
    from .tokenizer import Tokenizer

    if threads:  # torch's intra-op threads; on a shared machine fewer spin less (OpenMP waits busily)
        torch.set_num_threads(threads)
    d, config, conv = read_pretrained(model_dir(path))
    tok = Tokenizer.from_pretrained(d)
    if "bertkit" in config.extra:  # fine-tuned by bertkit: what finetune.load_finetuned builds
        task = task_of(config)["task"]
        model = MODEL_CLASSES[task].from_converted(d, config, conv, verbose=False)
        max_length = task_of(config)["max_length"]
    else:
        task = "mlm" if any(k.startswith("mlm.") for k in conv.state_dict) else "encoder"
        cls = BertForMaskedLM if task == "mlm" else BertModel
        model = cls.from_converted(d, config, conv, new_heads=task == "encoder", verbose=False)
        max_length = sentence_max_length(d, tok, config)
    model = model.to(default_device()).eval()
    if bf16:  # cast once: autocast would re-cast every weight at every call (slower, and RSS kept growing)
        model.to(torch.bfloat16)
        if getattr(model, "crf", None) is not None:
            model.crf.float()  # Viterbi on float emissions (predict_features casts them)
    return ModelBackend(model, tok, task, max_length, d, "torch", bf16)


def load_onnx(path, bf16: bool = False, threads: int | None = None) -> ModelBackend:
    """An export of `bertkit export onnx` (the .onnx file or its directory) in onnxruntime."""
    from .export import OnnxRunner
    from .finetune import TASKS, task_of
    from .tasks import sentence_max_length
    from .tokenizer import Tokenizer

    runner = OnnxRunner(path, threads=threads)
    tok = Tokenizer.from_pretrained(runner.source_dir)
    if runner.task in TASKS:
        return ModelBackend(runner, tok, runner.task, task_of(runner.config)["max_length"], runner.path, "onnx")
    return ModelBackend(runner, tok, "encoder", sentence_max_length(runner.source_dir, tok, runner.config), runner.path, "onnx")


def backend_factory(path, kind: str = "torch", bf16: bool = False, threads: int | None = None):
    """A function that loads the backend (called in a thread once the server listens); what cannot
    work (a missing extra, bf16 on ONNX, no .onnx file) fails here, before the port opens."""
    if kind == "torch":
        check_model(path)
        return lambda: load_torch(path, bf16, threads)
    if kind != "onnx":
        raise BertkitError(f"--backend must be torch or onnx, not {kind!r}.")
    import importlib.util

    try:
        from .export import OnnxRunner, onnx_file  # noqa: F401
    except ImportError:
        raise BertkitError("--backend onnx needs bertkit.export's OnnxRunner, which this version lacks.") from None
    if importlib.util.find_spec("onnxruntime") is None:
        raise BertkitError("--backend onnx needs onnxruntime: pip install 'bertkit[onnx]'.")
    if bf16:
        raise BertkitError("--bf16 applies to --backend torch; an ONNX graph runs in the precision it was exported in.")
    onnx_file(path)
    return lambda: load_onnx(path, threads=threads)


def length_groups(lengths: list[int], max_batch: int, cap: int) -> list[list[int]]:
    """Indices in forward passes: sorted by length (capped at the truncation limit), at most max_batch
    each, a new pass when a text is over twice the pass's shortest + GROUP_SLACK tokens, so padding
    at most doubles a pass's work."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and len(groups[-1]) < max_batch and min(lengths[i], cap) <= 2 * min(lengths[groups[-1][0]], cap) + GROUP_SLACK:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class MemoryTrim:
    """Hands freed heap memory back to the OS (glibc's malloc_trim), at most once per `every` seconds.

    glibc keeps what a thread frees in that thread's arena, and batches of ever-new shapes (batch size
    x length) then grow the RSS for thousands of batches: +28% over 400 random batches of
    all-MiniLM-L6-v2, +4% with a trim after each. A call takes ~2 ms; off glibc it does nothing.
    """

    def __init__(self, every: float = 1.0):
        import ctypes

        try:
            self.trim = ctypes.CDLL(None).malloc_trim
        except (AttributeError, OSError):
            self.trim = None
        self.every, self.last = every, 0.0

    def __call__(self) -> None:
        if self.trim is not None and time.monotonic() - self.last >= self.every:
            self.trim(0)
            self.last = time.monotonic()


def run_grouped(backend, endpoint: str, items: list, max_batch: int, trim=None) -> tuple[list[dict], list[int], float]:
    """(rows in item order, texts per forward, seconds): the whole job of the inference thread."""
    t0 = time.perf_counter()
    lengths = backend.lengths(endpoint, items)
    out: list = [None] * len(items)
    groups = length_groups(lengths, max_batch, backend.max_length)
    for g in groups:
        for i, row in zip(g, backend.run(endpoint, [items[i] for i in g], [lengths[i] for i in g])):
            out[i] = row
    if trim is not None:
        trim()
    return out, [len(g) for g in groups], time.perf_counter() - t0


# ---- batching ----------------------------------------------------------------------------------


@dataclass
class Pending:
    items: list
    future: asyncio.Future
    t0: float  # loop time of arrival


class Batcher:
    """One endpoint's bounded queue and the worker that turns its requests into forward passes."""

    def __init__(self, endpoint: str, backend, executor, metrics: Metrics, max_batch: int, max_wait_ms: float, max_queue: int,
                 trim: MemoryTrim | None = None):
        self.endpoint, self.backend, self.executor, self.metrics, self.trim = endpoint, backend, executor, metrics, trim
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.queue: asyncio.Queue[Pending] = asyncio.Queue(max_queue)
        self.carry: Pending | None = None  # taken from the queue but left for the next batch (too big)

    def submit(self, items: list) -> asyncio.Future:
        """Queue a request; asyncio.QueueFull when the queue is full."""
        loop = asyncio.get_running_loop()
        p = Pending(items, loop.create_future(), loop.time())
        self.queue.put_nowait(p)
        return p.future

    def depth(self) -> int:
        return self.queue.qsize() + (self.carry is not None)

    async def gather(self) -> list[Pending]:
        """The oldest request, then more until max_batch texts or the oldest has waited max_wait_ms."""
        loop = asyncio.get_running_loop()
        first = self.carry if self.carry is not None else await self.queue.get()
        self.carry = None
        batch, n = [first], len(first.items)
        deadline = first.t0 + self.max_wait
        while n < self.max_batch:
            if self.queue.empty():
                try:
                    nxt = await asyncio.wait_for(self.queue.get(), deadline - loop.time())
                except asyncio.TimeoutError:
                    break
            else:
                nxt = self.queue.get_nowait()
            if n + len(nxt.items) > self.max_batch:
                self.carry = nxt
                break
            batch.append(nxt)
            n += len(nxt.items)
        return batch

    async def work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self.gather()
            items = [x for p in batch for x in p.items]
            try:
                rows, sizes, seconds = await loop.run_in_executor(
                    self.executor, run_grouped, self.backend, self.endpoint, items, self.max_batch, self.trim)
            except Exception as e:  # a bug, not bad input (inputs are checked before queueing)
                print(f"bertkit serve: {self.endpoint}: internal error: {type(e).__name__}: {e}", file=sys.stderr)
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(e)
                continue
            self.metrics.forward(self.endpoint, sizes, seconds, sum(r.get("truncated", False) for r in rows))
            start = 0
            for p in batch:
                if not p.future.done():  # the client may have gone away
                    p.future.set_result(rows[start:start + len(p.items)])
                start += len(p.items)


# ---- metrics -----------------------------------------------------------------------------------


class Histogram:
    def __init__(self, buckets: tuple):
        self.buckets, self.counts, self.sum, self.count = buckets, [0] * len(buckets), 0.0, 0

    def observe(self, v: float) -> None:
        i = bisect.bisect_left(self.buckets, v)  # the first bucket with le >= v
        if i < len(self.buckets):
            self.counts[i] += 1
        self.sum, self.count = self.sum + v, self.count + 1

    def lines(self, name: str, labels: str) -> list[str]:
        out, total = [], 0
        for le, c in zip(self.buckets, self.counts):
            total += c
            out.append(f'{name}_bucket{{{labels},le="{le}"}} {total}')
        return out + [f'{name}_bucket{{{labels},le="+Inf"}} {self.count}',
                      f"{name}_sum{{{labels}}} {self.sum:.6f}", f"{name}_count{{{labels}}} {self.count}"]


class Metrics:
    """Counters, gauges and histograms in Prometheus' text format 0.0.4. Updated on the event loop only."""

    LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
    SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)

    def __init__(self):
        self.requests: Counter = Counter()  # (path, code) -> n
        self.latency: dict[str, Histogram] = {}  # path -> seconds
        self.batch: dict[str, Histogram] = {}  # endpoint -> texts per forward
        self.forward_seconds: dict[str, Histogram] = {}  # endpoint -> seconds per batch (all its forwards)
        self.texts: Counter = Counter()  # endpoint -> texts run
        self.truncated: Counter = Counter()
        self.inflight = 0

    def request(self, path: str, code: int, seconds: float) -> None:
        self.requests[path, code] += 1
        self.latency.setdefault(path, Histogram(self.LATENCY)).observe(seconds)

    def forward(self, endpoint: str, sizes: list[int], seconds: float, truncated: int) -> None:
        for n in sizes:
            self.batch.setdefault(endpoint, Histogram(self.SIZES)).observe(n)
        self.forward_seconds.setdefault(endpoint, Histogram(self.LATENCY)).observe(seconds)
        self.texts[endpoint] += sum(sizes)
        self.truncated[endpoint] += truncated

    def render(self, depths: dict[str, int], capacity: int, ready: bool) -> str:
        out: list[str] = []

        def family(name: str, kind: str, help_text: str, lines: list[str]) -> None:
            out.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *lines])

        family("bertkit_requests_total", "counter", "HTTP requests answered, by path and status code.",
               [f'bertkit_requests_total{{path="{p}",code="{c}"}} {n}' for (p, c), n in sorted(self.requests.items())])
        family("bertkit_errors_total", "counter", "HTTP requests answered with a 4xx or 5xx code.",
               [f'bertkit_errors_total{{path="{p}",code="{c}"}} {n}' for (p, c), n in sorted(self.requests.items()) if c >= 400])
        family("bertkit_request_duration_seconds", "histogram", "Time from the request's arrival to its response.",
               [x for p, h in sorted(self.latency.items()) for x in h.lines("bertkit_request_duration_seconds", f'path="{p}"')])
        family("bertkit_batch_size", "histogram", "Texts per forward pass.",
               [x for e, h in sorted(self.batch.items()) for x in h.lines("bertkit_batch_size", f'endpoint="{e}"')])
        family("bertkit_batch_seconds", "histogram", "Inference time of a gathered batch (tokenising and all its forward passes).",
               [x for e, h in sorted(self.forward_seconds.items()) for x in h.lines("bertkit_batch_seconds", f'endpoint="{e}"')])
        family("bertkit_texts_total", "counter", "Texts run through the model.",
               [f'bertkit_texts_total{{endpoint="{e}"}} {n}' for e, n in sorted(self.texts.items())])
        family("bertkit_truncated_texts_total", "counter", "Texts cut to the model's maximum length.",
               [f'bertkit_truncated_texts_total{{endpoint="{e}"}} {self.truncated[e]}' for e in sorted(self.texts)])
        family("bertkit_queue_depth", "gauge", "Requests waiting for a batch.",
               [f'bertkit_queue_depth{{endpoint="{e}"}} {n}' for e, n in sorted(depths.items())])
        family("bertkit_queue_capacity", "gauge", "Requests an endpoint's queue holds before answering 503.",
               [f"bertkit_queue_capacity {capacity}"])
        family("bertkit_inflight_requests", "gauge", "Requests received and not yet answered.", [f"bertkit_inflight_requests {self.inflight}"])
        family("bertkit_ready", "gauge", "1 when the model is loaded and the server is not draining.", [f"bertkit_ready {int(ready)}"])
        return "\n".join(out) + "\n"
