"""`bertkit serve DIR`: an HTTP server for a model directory, with dynamic micro-batching.

    POST /v1/embed      {"texts": [...], "normalize": false}   any encoder: mean-pooled vectors
    POST /v1/fill-mask  {"texts": [...], "top_k": 5}           a checkpoint with an MLM head
    POST /v1/classify   {"texts": [...]} or {"pairs": [[a, b], ...]}   a fine-tuned classify / pair model
    POST /v1/ner        {"texts": [...]}                       a fine-tuned ner model
    GET  /healthz (alive)  /readyz (model loaded, not draining)  /metrics (Prometheus text)  /docs

What a model serves comes from its checkpoint: a `bertkit` task entry in config.json, else embed,
plus fill-mask when the weights hold an MLM head. Every /v1 answer is {"results": [...]}, one row per
input, each row what `bertkit predict` prints for it (embed: {"text", "embedding", "truncated"};
fill-mask: {"text", "masks": [[{"token", "probability"}, ...] per [MASK]], "truncated"}).

Batching: each endpoint has a bounded queue of requests and one worker. The worker takes the oldest
request, then more until it holds --max-batch texts or the oldest has waited --max-wait-ms; it sorts
the texts by token length, cuts them into forward passes of similar lengths (`length_groups`) and runs
them in one inference thread, off the event loop, so /healthz answers while a batch runs. Results go
back to their requests by position. --max-batch 1 turns batching off (one forward per request).

Limits: a full queue answers 503 with Retry-After (memory stays bounded); a body over --max-body or
more than --max-texts inputs answers 413; malformed JSON or a wrong schema 422 with the field and
the expected form; an empty (or all-whitespace) text, or an unencodable one, 422 naming its index;
fill-mask without [MASK] 422. Texts over the model's length are truncated and flagged
"truncated": true. SIGTERM / Ctrl-C stops accepting, finishes every request in flight, then exits.

The model loads in the background after the port opens: /healthz is 200 at once, /readyz and /v1
answer 503 until it is loaded. A backend is any object with the `Backend` methods below; `torch`
is ours, `onnx` comes from bertkit.export when that module provides `serve_backend(path, bf16)`.

Why one file of this size: the app, its batcher and its metrics only make sense together, and
each part is a few short functions; FastAPI and uvicorn (the `serve` extra) are imported inside
the functions that need them, so `import bertkit.serve` works without them.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import socket
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .errors import BertkitError

ENDPOINTS = ("embed", "fill-mask", "classify", "ner")
MAX_TOP_K = 50  # fill-mask computes this many candidates per mask; a request asks for top_k <= it
GROUP_SLACK = 16  # tokens of padding a forward may always absorb (below it, one more forward costs more)
GRACE_SECONDS = 30  # how long a shutdown waits for requests in flight


@dataclass
class ServeConfig:
    path: str  # a model directory (or a training run's --out), or a hub name
    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port (printed)
    backend: str = "torch"  # torch | onnx
    bf16: bool = False  # bf16 autocast for the forward passes
    max_batch: int = 32  # texts per forward; 1 = batching off
    max_wait_ms: float = 5.0  # how long the oldest request may wait for others to join its batch
    max_queue: int = 256  # requests waiting per endpoint; beyond it 503
    max_texts: int = 256  # inputs per request; beyond it 413
    max_body: int = 1 << 20  # bytes per request body; beyond it 413
    log_level: str = "info"  # uvicorn's


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


class TorchBackend:
    """bertkit's own models, through the same functions `bertkit predict` / `embed` / `fill-mask` use."""

    def __init__(self, path, bf16: bool = False):
        from .checkpoint import read_pretrained
        from .finetune import MODEL_CLASSES, task_of
        from .heads import BertForMaskedLM
        from .model import BertModel
        from .tasks import default_device, sentence_max_length
        from .tokenizer import Tokenizer

        d, config, conv = read_pretrained(model_dir(path))
        self.tok = Tokenizer.from_pretrained(d)
        self.source, self.bf16, self.pairs, self.model = str(d), bf16, False, None
        if "bertkit" in config.extra:  # fine-tuned by bertkit (what load_finetuned builds)
            info = task_of(config)
            self.task, self.max_length = info["task"], info["max_length"]
            self.pairs = self.task == "pair"
            self.endpoints = ("ner",) if self.task == "ner" else ("classify",)
            model = MODEL_CLASSES[self.task].from_converted(d, config, conv, verbose=False)
        elif any(k.startswith("mlm.") for k in conv.state_dict):
            self.task, self.endpoints = "mlm", ("embed", "fill-mask")
            model = BertForMaskedLM.from_converted(d, config, conv, verbose=False)
        else:
            self.task, self.endpoints = "encoder", ("embed",)
            model = BertModel.from_converted(d, config, conv, new_heads=True, verbose=False)
        self.model = model.to(default_device()).eval()
        self.device = next(self.model.parameters()).device
        self.encoder = getattr(self.model, "bert", self.model)  # the backbone, for embed
        if self.task in ("mlm", "encoder"):
            self.max_length = sentence_max_length(d, self.tok, config)

    def describe(self) -> dict:
        return {"model": self.source, "task": self.task, "backend": "torch", "bf16": self.bf16,
                "device": str(self.device), "max_length": self.max_length, "endpoints": list(self.endpoints)}

    def lengths(self, endpoint: str, items: list) -> list[int]:
        inputs = [tuple(x) for x in items] if self.pairs else items
        return [len(e.ids) for e in self.tok.backend.encode_batch(inputs)]

    def run(self, endpoint: str, items: list, lengths: list[int]) -> list[dict]:
        import torch

        from .finetune import predict_texts

        bf16 = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()
        with bf16:
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


def backend_factory(path, kind: str = "torch", bf16: bool = False):
    """A function that loads the backend (called in a thread once the server listens)."""
    if kind == "torch":
        return lambda: TorchBackend(path, bf16)
    if kind != "onnx":
        raise BertkitError(f"--backend must be torch or onnx, not {kind!r}.")
    try:
        from . import export
    except ImportError as e:
        raise BertkitError(f"--backend onnx needs bertkit.export, which is not available here ({e}).") from None
    make = getattr(export, "serve_backend", None)
    if make is None:
        raise BertkitError("--backend onnx: bertkit.export has no ONNX runner for serving (serve_backend) yet; use --backend torch.")
    return lambda: make(path, bf16=bf16)


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


def run_grouped(backend, endpoint: str, items: list, max_batch: int) -> tuple[list[dict], list[int], float]:
    """(rows in item order, texts per forward, seconds): the whole job of the inference thread."""
    t0 = time.perf_counter()
    lengths = backend.lengths(endpoint, items)
    out: list = [None] * len(items)
    groups = length_groups(lengths, max_batch, backend.max_length)
    for g in groups:
        for i, row in zip(g, backend.run(endpoint, [items[i] for i in g], [lengths[i] for i in g])):
            out[i] = row
    return out, [len(g) for g in groups], time.perf_counter() - t0


# ---- batching ----------------------------------------------------------------------------------


@dataclass
class Pending:
    items: list
    future: asyncio.Future
    t0: float  # loop time of arrival


class Batcher:
    """One endpoint's bounded queue and the worker that turns its requests into forward passes."""

    def __init__(self, endpoint: str, backend, executor, cfg: ServeConfig, metrics: Metrics):
        self.endpoint, self.backend, self.executor, self.cfg, self.metrics = endpoint, backend, executor, cfg, metrics
        self.queue: asyncio.Queue[Pending] = asyncio.Queue(cfg.max_queue)
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
        deadline = first.t0 + self.cfg.max_wait_ms / 1000
        while n < self.cfg.max_batch:
            if self.queue.empty():
                try:
                    nxt = await asyncio.wait_for(self.queue.get(), deadline - loop.time())
                except asyncio.TimeoutError:
                    break
            else:
                nxt = self.queue.get_nowait()
            if n + len(nxt.items) > self.cfg.max_batch:
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
                    self.executor, run_grouped, self.backend, self.endpoint, items, self.cfg.max_batch)
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


# ---- the app -----------------------------------------------------------------------------------


@dataclass
class State:
    cfg: ServeConfig
    metrics: Metrics = field(default_factory=Metrics)
    backend: object | None = None
    batchers: dict[str, Batcher] = field(default_factory=dict)
    tasks: list = field(default_factory=list)  # the batchers' workers
    load_error: str | None = None
    draining: bool = False

    @property
    def ready(self) -> bool:
        return self.backend is not None and not self.draining


def _json(status: int, body: dict, headers: dict | None = None):
    from starlette.responses import Response

    return Response(json.dumps(body, ensure_ascii=False), status, headers, media_type="application/json")


class Guard:
    """The outermost ASGI layer: counts and times every request, refuses bodies over --max-body
    (reading at most that much), and answers /v1 with 503 until the model is loaded."""

    def __init__(self, app, state: State):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        st, t0, code = self.state, time.perf_counter(), 500
        path = scope["path"] if scope["path"] in self._known() else "other"

        async def send_counted(message):
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        st.metrics.inflight += 1
        try:
            early = None
            if scope["path"].startswith("/v1/") and st.backend is None:
                why = st.load_error or "the model is still loading"
                early = _json(503, {"error": why}, {"Retry-After": "1"})
            else:
                body, early = await self._read_body(scope, receive)
            if early is not None:
                return await early(scope, receive, send_counted)
            await self.app(scope, self._replay(body, receive), send_counted)
        finally:
            st.metrics.inflight -= 1
            st.metrics.request(path, code, time.perf_counter() - t0)

    def _known(self) -> set[str]:
        return {"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", *(f"/v1/{e}" for e in self.state.batchers)}

    async def _read_body(self, scope, receive):
        limit = self.state.cfg.max_body
        declared = dict(scope["headers"]).get(b"content-length")
        too_big = _json(413, {"error": f"the request body is over the limit of {limit} bytes (--max-body)."})
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return b"", too_big
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return b"", _json(400, {"error": "the client disconnected."})
            chunks.append(message.get("body", b""))
            size, more = size + len(chunks[-1]), message.get("more_body", False)
            if size > limit:
                return b"", too_big
        return b"".join(chunks), None

    @staticmethod
    def _replay(body: bytes, receive):
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()  # later reads wait for the disconnect, as a server's would
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay


def _request_models():
    """The request bodies as pydantic models (for validation and the OpenAPI schema)."""
    from typing import Annotated

    from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

    Texts = Annotated[list[str], Field(min_length=1, description="the inputs, one text each")]

    class TextsIn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        texts: Texts

    class EmbedIn(TextsIn):
        normalize: StrictBool = Field(False, description="scale each vector to unit length")

    class FillMaskIn(TextsIn):
        top_k: StrictInt = Field(5, ge=1, le=MAX_TOP_K, description="candidates per [MASK]")

    class PairsIn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        pairs: list[Annotated[list[str], Field(min_length=2, max_length=2)]] = Field(min_length=1, description="[text_a, text_b] pairs")

    return {"embed": EmbedIn, "fill-mask": FillMaskIn, "classify": TextsIn, "ner": TextsIn, "pairs": PairsIn}


EXAMPLES = {"embed": '{"texts": ["a text", ...], "normalize": false}', "fill-mask": '{"texts": ["Paris is the [MASK] of France."], "top_k": 5}',
            "classify": '{"texts": ["a text", ...]}', "ner": '{"texts": ["a text", ...]}', "pairs": '{"pairs": [["text a", "text b"], ...]}'}


def check_inputs(endpoint: str, items: list, max_texts: int):
    """None, or the (code, message) that refuses the request before it is queued."""
    if len(items) > max_texts:
        return 413, f"{len(items)} inputs in one request; the limit is {max_texts} (--max-texts)."
    for i, x in enumerate(items):
        for j, t in enumerate([x] if isinstance(x, str) else x):
            where = f"texts[{i}]" if isinstance(x, str) else f"pairs[{i}][{j}]"
            if not t.strip():
                return 422, f"{where} is empty."
            try:
                t.encode("utf-8")
            except UnicodeEncodeError:
                return 422, f"{where} is not valid Unicode (it holds a lone surrogate)."
            if endpoint == "fill-mask" and "[MASK]" not in t:
                return 422, f"{where} has no [MASK] to fill."
    return None


def build_app(load, cfg: ServeConfig):
    """The FastAPI app. load(): the backend, called in a thread once the server runs."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    state = State(cfg)

    @asynccontextmanager
    async def lifespan(app):
        executor = ThreadPoolExecutor(1, thread_name_prefix="bertkit-infer")  # one forward at a time
        loading = asyncio.create_task(_load(app, state, load, executor))
        try:
            yield
        finally:  # uvicorn has already waited for the requests in flight
            state.draining = True
            loading.cancel()
            for task in state.tasks:
                task.cancel()
            executor.shutdown(wait=True)

    app = FastAPI(title="bertkit serve", lifespan=lifespan, description=__doc__.split("\n\n")[0])
    app.state.bertkit = state

    @app.get("/healthz")
    async def healthz():
        return {"alive": True}

    @app.get("/readyz")
    async def readyz():
        if state.ready:
            return _json(200, {"ready": True, **state.backend.describe()})
        why = "draining" if state.draining else state.load_error or "loading"
        return _json(503, {"ready": False, "reason": why})

    @app.get("/metrics")
    async def metrics():
        from starlette.responses import PlainTextResponse

        depths = {e: b.depth() for e, b in state.batchers.items()}
        return PlainTextResponse(state.metrics.render(depths, cfg.max_queue, state.ready), media_type="text/plain; version=0.0.4")

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc):
        return _json(422, {"error": describe_errors(exc.errors(), _expected(state, request.url.path))})

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        if exc.status_code == 404 and request.url.path.startswith("/v1/"):
            served = ", ".join(f"/v1/{e}" for e in state.batchers) or "nothing yet"
            return _json(404, {"error": f"{request.url.path} is not an endpoint of this model; it serves {served}."})
        return _json(exc.status_code, {"error": str(exc.detail)}, getattr(exc, "headers", None))

    return Guard(app, state)


async def _load(app, state: State, load, executor) -> None:
    """Load the backend off the event loop, then open its endpoints (or record why it failed)."""
    loop = asyncio.get_running_loop()
    try:
        backend = await loop.run_in_executor(executor, load)
    except Exception as e:
        state.load_error = f"loading the model failed: {e}" if isinstance(e, BertkitError) else f"loading the model failed: {type(e).__name__}: {e}"
        print(f"bertkit serve: {state.load_error}", file=sys.stderr)
        server = getattr(app.state, "server", None)
        if server is not None:
            server.should_exit = True
        return
    state.batchers = {e: Batcher(e, backend, executor, state.cfg, state.metrics) for e in backend.endpoints}
    state.tasks = [asyncio.create_task(b.work()) for b in state.batchers.values()]
    models = _request_models()
    for e in backend.endpoints:
        model = models["pairs" if e == "classify" and backend.pairs else e]
        app.add_api_route(f"/v1/{e}", _handler(state, e, model), methods=["POST"], summary=f"{e}: {EXAMPLES[e]}")
    app.openapi_schema = None  # rebuilt with the new routes on the next /openapi.json
    state.backend = backend
    print(f"bertkit serve: ready: {json.dumps(backend.describe(), ensure_ascii=False)}", file=sys.stderr)


def _handler(state: State, endpoint: str, model):
    async def handle(body):
        items = body.pairs if hasattr(body, "pairs") else body.texts
        refused = check_inputs(endpoint, items, state.cfg.max_texts)
        if refused is not None:
            return _json(refused[0], {"error": refused[1]})
        try:
            future = state.batchers[endpoint].submit(items)
        except asyncio.QueueFull:
            return _json(503, {"error": f"the {endpoint} queue is full ({state.cfg.max_queue} requests); retry shortly."}, {"Retry-After": "1"})
        try:
            rows = await asyncio.shield(future)  # a client going away does not cancel a batch
        except Exception as e:
            return _json(500, {"error": f"internal error: {type(e).__name__}: {e}"})
        return _json(200, {"results": [_finish(endpoint, row, body) for row in rows]})

    handle.__annotations__ = {"body": model}  # FastAPI reads the body's schema from here
    return handle


def _finish(endpoint: str, row: dict, body) -> dict:
    """Per-request options applied to a row: unit-length embeddings, fill-mask's top_k."""
    import numpy as np

    if endpoint == "embed":
        v = row["embedding"]
        if body.normalize:
            v = v / max(float(np.linalg.norm(v)), 1e-12)
        return {**row, "embedding": v.tolist()}
    if endpoint == "fill-mask":
        return {**row, "masks": [m[: body.top_k] for m in row["masks"]]}
    return row


def _expected(state: State, path: str) -> str:
    e = path.removeprefix("/v1/")
    if e not in state.batchers:
        return ""
    return EXAMPLES["pairs" if e == "classify" and state.backend.pairs else e]


def describe_errors(errors, expected: str) -> str:
    """pydantic's errors as one sentence: where, what, and the form the endpoint expects."""
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        what = f"the body is not valid JSON ({first.get('ctx', {}).get('error', 'decode error')})"
    else:
        parts = []
        for err in errors[:5]:
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "the body"
            parts.append(f"{loc}: {err.get('msg', 'invalid')}")
        what = "; ".join(parts) + (f" (and {len(errors) - 5} more)" if len(errors) > 5 else "")
    return what + (f"; expected {expected}" if expected else "") + "."


# ---- running it --------------------------------------------------------------------------------


def require_server_libs():
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise BertkitError("bertkit serve needs FastAPI and uvicorn: pip install 'bertkit[serve]'.") from None
    return uvicorn


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, so a busy port is a one-line error and port 0 picks a free one."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        raise BertkitError(f"cannot listen on {host}:{port} ({e.strerror or e}).") from None
    sock.set_inheritable(True)
    return sock


def make_server(cfg: ServeConfig, load=None):
    """(uvicorn server, its listening socket, our state); run with server.run(sockets=[sock])."""
    uvicorn = require_server_libs()
    for name in ("max_batch", "max_queue", "max_texts", "max_body"):
        if getattr(cfg, name) < 1:
            raise BertkitError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(cfg, name)}.")
    if cfg.max_wait_ms < 0:
        raise BertkitError(f"--max-wait-ms must be 0 or more, not {cfg.max_wait_ms}.")
    if load is None:
        load = backend_factory(cfg.path, cfg.backend, cfg.bf16)  # an unusable backend fails here, before loading
        check_model(cfg.path)
    app = build_app(load, cfg)
    sock = listen(cfg.host, cfg.port)
    config = uvicorn.Config(app, log_level=cfg.log_level, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=GRACE_SECONDS)
    server = uvicorn.Server(config)
    app.app.state.server = server  # app is the Guard around FastAPI's app
    return server, sock, app.state


def serve(cfg: ServeConfig) -> None:
    """Run until SIGINT/SIGTERM; a model that fails to load stops the server with its error."""
    server, sock, state = make_server(cfg)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"bertkit serve: listening on http://{shown}:{port} (loading {cfg.path})", file=sys.stderr, flush=True)
    server.run(sockets=[sock])
    if state.load_error:
        raise BertkitError(state.load_error)


def add_serve_parser(subparsers) -> None:
    """Register `bertkit serve` on the CLI's subparsers."""
    from .cli import positive_int

    s = subparsers.add_parser("serve", help="an HTTP server with dynamic batching for a model directory")
    s.add_argument("dir", help="a model directory (fine-tuned, MLM or any encoder) or a training run's --out")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all interfaces)")
    s.add_argument("--port", type=int, default=8000, help="port (0: any free one, printed)")
    s.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    s.add_argument("--bf16", action="store_true", help="bf16 autocast for the forward passes")
    s.add_argument("--max-batch", type=positive_int, default=32, help="texts per forward (1: batching off)")
    s.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request may wait for others to batch with")
    s.add_argument("--max-queue", type=positive_int, default=256, help="waiting requests per endpoint before 503")
    s.add_argument("--max-texts", type=positive_int, default=256, help="inputs per request before 413")
    s.add_argument("--max-body", type=positive_int, default=1 << 20, help="bytes per request body before 413")
    s.set_defaults(run=cmd_serve)


def cmd_serve(a) -> None:
    serve(ServeConfig(path=a.dir, host=a.host, port=a.port, backend=a.backend, bf16=a.bf16, max_batch=a.max_batch,
                      max_wait_ms=a.max_wait_ms, max_queue=a.max_queue, max_texts=a.max_texts, max_body=a.max_body))


def main(argv: list[str] | None = None) -> int:
    """`python -m bertkit.serve DIR ...`: the same command without the CLI around it."""
    import argparse

    p = argparse.ArgumentParser(prog="bertkit")
    add_serve_parser(p.add_subparsers(dest="command", required=True))
    a = p.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    try:
        a.run(a)
    except BertkitError as e:
        print(f"bertkit serve: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
