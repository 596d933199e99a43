"""`bertkit serve DIR`: an HTTP server for a model directory, with dynamic micro-batching.

    POST /v1/embed      {"texts": [...], "normalize": false}   any encoder: mean-pooled vectors
    POST /v1/fill-mask  {"texts": [...], "top_k": 5}           a checkpoint with an MLM head
    POST /v1/classify   {"texts": [...]} or {"pairs": [[a, b], ...]}   a fine-tuned classify / pair model
    POST /v1/ner        {"texts": [...]}                       a fine-tuned ner model
    GET  /healthz (alive)  /readyz (model loaded, not draining)  /metrics (Prometheus text)  /docs
    OpenAI's POST /v1/embeddings and GET /v1/models, TEI's /embed, /predict, /rerank, /tokenize, /info, /health:
    compat.py, on the same batchers. --api-key (or $BERTKIT_API_KEY): every route but /health and /healthz
    answers 401 without it.

What a model serves comes from its checkpoint: a `bertkit` task entry in config.json, else embed,
plus fill-mask when the weights hold an MLM head. Every /v1 answer is {"results": [...]}, one row per
input, each row what `bertkit predict` prints for it (embed: {"text", "embedding", "truncated"};
fill-mask: {"text", "masks": [[{"token", "probability"}, ...] per [MASK]], "truncated"}).

Batching: each endpoint has a bounded queue of requests and one worker. The worker takes the oldest
request, then more until it holds --max-batch texts or --max-batch-tokens real tokens, or the oldest has
waited --max-wait-ms (while the previous batch still runs, requests keep joining: the next batch forms
during the current one, as text-embeddings-inference does; a request whose client has gone is skipped); it sorts
the texts by token length, cuts them into forward passes of similar lengths (`length_groups`) and runs
them in one inference thread, off the event loop, so /healthz answers while a batch runs. Results go
back to their requests by position. --max-batch 1 turns batching off (one forward per request).

Limits: a full queue answers 503 with Retry-After (memory stays bounded); a body over --max-body or
more than --max-texts inputs answers 413; malformed JSON or a wrong schema 422 with the field and
the expected form; an empty (or all-whitespace) text, or an unencodable one, 422 naming its index;
fill-mask without [MASK] 422. Texts over the model's length are truncated and flagged
"truncated": true. SIGTERM / Ctrl-C stops accepting, finishes every request in flight, then exits
(uvicorn then re-raises the signal, so the exit status is the signal's). --threads sets torch's
threads: on a machine shared with other work fewer threads avoid OpenMP's busy waiting.

The model loads in the background after the port opens: /healthz is 200 at once, /readyz and /v1
answer 503 until it is loaded. --backend onnx serves an export of `bertkit export onnx` (its .onnx
file or directory) in onnxruntime. The backends live in backend.py, the batcher and the metrics in
batcher.py; this file is the HTTP side and the command. FastAPI and uvicorn (the `serve` extra) are imported inside
the functions that need them, so `import bertkit.serving.app` works without them.

Why ~520 lines: the FastAPI app, its request and response types, the lifecycle (ready, drain, shutdown) and the metrics; the model backends and batcher live apart (backend.py, batcher.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import BertkitError
from ..flags import add_flags, positive_int
from .backend import MAX_TOP_K, backend_factory
from .batcher import Batcher, BatchFailed, MemoryTrim, Metrics
from .compat import TEXT_PATTERN, add_routes, blank, document, json_response

GRACE_SECONDS = 30  # how long a shutdown waits for requests in flight


@dataclass
class ServeConfig:
    path: str  # a model directory (or a training run's --out), or a hub name
    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port (printed)
    backend: str = "torch"  # torch | onnx
    bf16: bool = False  # bf16 weights and activations (torch backend)
    int8: bool = False  # int8 linear layers on the CPU (torch backend)
    kernels: str = "auto"  # auto: the kernel measured fastest on this CPU; onednn or torch: that one
    precision: str | None = None  # auto (None): bf16 where it is fast and checked exact enough, else fp32; or fp32, bf16, int8
    max_batch: int = 32  # texts per forward; 1 = batching off
    max_batch_tokens: int = 512  # real tokens per batch: throughput is flat from 128 to 4096 here, 512 the smallest within 5% of the best (benchmarks/batch_tokens.py)
    max_wait_ms: float = 5.0  # how long the oldest request may wait for others to join its batch
    max_queue: int = 256  # requests waiting per endpoint; beyond it 503
    max_texts: int = 256  # inputs per request; beyond it 413
    max_body: int = 1 << 20  # bytes per request body; beyond it 413
    threads: int | None = None  # torch intra-op threads (default: torch's, one per core)
    log_level: str = "info"  # uvicorn's
    served_name: str | None = None  # the model's name in OpenAI's /v1/models and answers (default: the directory's name)
    api_key: str | None = None  # every route but /health and /healthz needs it (Bearer or x-api-key); default: $BERTKIT_API_KEY


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


_json = json_response  # the one JSON writer (compat.py)


OPEN_PATHS = ("/health", "/healthz")  # answered without the API key (load balancers' probes)
OPENAI_PATHS = ("/v1/embeddings", "/v1/models")  # errors in OpenAI's shape (compat.py)
TEI_PATHS = ("/embed", "/predict", "/rerank", "/tokenize", "/info", "/")


def key_of(headers: dict) -> str:
    """The key a client sent: `Authorization: Bearer KEY` (OpenAI's and huggingface_hub's clients) or `x-api-key`."""
    auth = headers.get(b"authorization", b"").decode("latin-1")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return headers.get(b"x-api-key", b"").decode("latin-1")


def unauthorised(path: str):
    message = "a valid API key is needed: send it as `Authorization: Bearer KEY`."
    if path in OPENAI_PATHS:
        body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
    elif path in TEI_PATHS:
        body = {"error": message, "error_type": "Unauthorized"}
    else:
        body = {"error": message}
    return _json(401, body, {"WWW-Authenticate": "Bearer"})


class Guard:
    """The outermost ASGI layer: counts and times every request, checks the API key (in constant time), refuses
    bodies over --max-body (reading at most that much), and answers /v1 with 503 until the model is loaded."""

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

        st.metrics.inflight.inc()
        try:
            body, early = await self._admit(scope, receive)
            if early is not None:
                return await early(scope, receive, send_counted)
            if scope["path"].startswith("/v1/") and scope["path"] not in OPENAI_PATHS:  # JSON whatever the client calls it (curl -d says a form)
                headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
            await self.app(scope, self._replay(body, receive), send_counted)
        finally:
            st.metrics.inflight.dec()
            st.metrics.request(path, code, time.perf_counter() - t0)

    def _known(self) -> set[str]:
        return {"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", *OPENAI_PATHS, *TEI_PATHS, "/health",
                *(f"/v1/{e}" for e in self.state.batchers)}

    async def _admit(self, scope, receive):
        """(the body, None) or (b"", the response that refuses the request: no key, model loading, body too big)."""
        import hmac

        key = self.state.cfg.api_key
        if key and scope["path"] not in OPEN_PATHS and not hmac.compare_digest(key_of(dict(scope["headers"])).encode(), key.encode()):
            return b"", unauthorised(scope["path"])
        if scope["path"].startswith("/v1/") and scope["path"] not in OPENAI_PATHS and self.state.backend is None:
            why = self.state.load_error or "the model is still loading"
            return b"", _json(503, {"error": why}, {"Retry-After": "1"})
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


def _request_models(max_texts: int):
    """The request bodies as pydantic models (for validation and the OpenAPI schema)."""
    from typing import Annotated

    from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, WithJsonSchema

    # the schema says non-empty, not all whitespace, at most --max-texts; the checks themselves are check_inputs' (its
    # answers: 422 naming the text, 413 for too many; it also refuses lone surrogates)
    Text = Annotated[str, WithJsonSchema({"type": "string", "minLength": 1, "pattern": TEXT_PATTERN, "description": "a non-empty text"})]
    Texts = Annotated[list[Text], Field(min_length=1, description="the inputs, one text each", json_schema_extra={"maxItems": max_texts})]

    class TextsIn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        texts: Texts

    class EmbedIn(TextsIn):
        normalize: StrictBool = Field(False, description="scale each vector to unit length")

    class FillMaskIn(TextsIn):
        top_k: StrictInt = Field(5, ge=1, le=MAX_TOP_K, description="candidates per [MASK]")

    class PairsIn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        pairs: list[Annotated[list[Text], Field(min_length=2, max_length=2)]] = Field(
            min_length=1, description="[text_a, text_b] pairs", json_schema_extra={"maxItems": max_texts})

    class ErrorOut(BaseModel):
        error: str = Field(description="one sentence: what is wrong")

    return {"embed": EmbedIn, "fill-mask": FillMaskIn, "classify": TextsIn, "ner": TextsIn, "pairs": PairsIn, "error": ErrorOut}


EXAMPLES = {"embed": '{"texts": ["a text", ...], "normalize": false}', "fill-mask": '{"texts": ["Paris is the [MASK] of France."], "top_k": 5}',
            "classify": '{"texts": ["a text", ...]}', "ner": '{"texts": ["a text", ...]}', "pairs": '{"pairs": [["text a", "text b"], ...]}'}


def check_inputs(endpoint: str, items: list, max_texts: int):
    """None, or the (code, message) that refuses the request before it is queued."""
    if len(items) > max_texts:
        return 413, f"{len(items)} inputs in one request; the limit is {max_texts} (--max-texts)."
    for i, x in enumerate(items):
        for j, t in enumerate([x] if isinstance(x, str) else x):
            where = f"texts[{i}]" if isinstance(x, str) else f"pairs[{i}][{j}]"
            if blank(t):
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
    state.metrics.watch(lambda: ({e: b.depth() for e, b in state.batchers.items()}, cfg.max_queue, state.ready))

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

    @app.get("/metrics", responses={200: {"description": "Prometheus' text format", "content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST
        from starlette.responses import Response

        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    add_routes(app, state)  # OpenAI's /v1/embeddings and /v1/models, TEI's /embed, /predict, /rerank, /tokenize, /info, /health

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc):
        return _json(422, {"error": describe_errors(exc.errors(), _expected(state, request.url.path))})

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        if exc.status_code == 400 and request.url.path.startswith("/v1/"):  # FastAPI's "error parsing the body": not UTF-8
            return _json(422, {"error": f"the body could not be read as JSON ({exc.detail}); send a UTF-8 JSON object."})
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
    cfg, trim = state.cfg, MemoryTrim()  # one for the one inference thread
    state.batchers = {e: Batcher(e, backend, executor, state.metrics, cfg.max_batch, cfg.max_wait_ms, cfg.max_queue, trim,
                                 cfg.max_batch_tokens) for e in backend.endpoints}
    state.tasks = [asyncio.create_task(b.work()) for b in state.batchers.values()]
    models = _request_models(cfg.max_texts)
    for e in backend.endpoints:
        model = models["pairs" if e == "classify" and backend.pairs else e]
        errors = {code: {"model": models["error"], "description": why} for code, why in (
            (413, "body or input count over the limit"), (422, "malformed JSON, wrong schema, empty text"),
            (500, "the model failed on this request (the server goes on)"), (503, "queue full, or loading"))}
        app.add_api_route(f"/v1/{e}", _handler(state, e, model), methods=["POST"], summary=f"{e}: {EXAMPLES[e]}", responses=errors)
    state.backend = backend
    document(app, state)  # the OpenAI and TEI routes this model serves, with their bodies
    app.openapi_schema = None  # rebuilt with the new routes on the next /openapi.json
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
        except asyncio.CancelledError:
            future.cancel()  # the client went away: its texts are skipped if their batch has not run yet
            raise
        except BatchFailed as e:
            return _json(500, {"error": str(e)})
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
    elif first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
        what = "the body is empty"
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
        import prometheus_client  # noqa: F401
        import uvicorn
    except ImportError:
        raise BertkitError("bertkit serve needs FastAPI, uvicorn and prometheus_client: pip install 'bertkit[serve]'.") from None
    return uvicorn


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, so a busy port is a one-line error and port 0 picks a free one."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        # proto TCP: asyncio sets TCP_NODELAY only then; without it keep-alive answers stall 40 ms (Nagle + delayed ACK)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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
    for name in ("max_batch", "max_batch_tokens", "max_queue", "max_texts", "max_body"):
        if getattr(cfg, name) < 1:
            raise BertkitError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(cfg, name)}.")
    if cfg.max_wait_ms < 0:
        raise BertkitError(f"--max-wait-ms must be 0 or more, not {cfg.max_wait_ms}.")
    if load is None:
        load = backend_factory(cfg.path, cfg.backend, cfg.bf16, cfg.threads, cfg.int8, cfg.kernels, cfg.precision)  # what cannot work fails here, before listening
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

    serve_arguments(subparsers.add_parser("serve", help="an HTTP server with dynamic batching for a model directory"))


def serve_arguments(s) -> None:
    """The arguments of `bertkit serve` on its parser `s`."""
    s.add_argument("dir", help="a model directory (fine-tuned, MLM or any encoder) or a training run's --out")
    add_flags(s, ServeConfig, SERVE_FLAGS, types={k: positive_int for k in ("max_batch", "max_batch_tokens", "max_queue", "max_texts", "max_body", "threads")})
    s.set_defaults(run=cmd_serve)


# ServeConfig fields as flags (`dir` is the positional path).
SERVE_FLAGS = {
    "host": "address to listen on (0.0.0.0: all interfaces)", "port": "port (0: any free one, printed)",
    "backend": ("what runs the model (onnx, openvino: an export of `bertkit export onnx`)", ["torch", "onnx", "openvino"]),
    "bf16": "bf16 weights and activations (faster on CPUs with AMX or AVX512-BF16)",
    "int8": "int8 linear layers on the CPU (per-channel weights, per-token activations; checked against fp32 on load)",
    "kernels": ("auto: the kernel measured fastest on this CPU (oneDNN prepacked or torch's own; checked on load); or force one",
                ["auto", "onednn", "torch"]),
    "precision": ("auto (default): bf16 where the device has bf16 hardware, it measures faster and the model's pooled vectors keep "
                  "cosine >= 0.9999 to fp32 on check sentences, else fp32", ["auto", "fp32", "bf16", "int8"]),
    "max_batch": "texts per forward (1: batching off)", "max_wait_ms": "how long a request may wait for others to batch with",
    "max_batch_tokens": "real tokens per batch (the next batch fills up to it while the current one runs)",
    "max_queue": "waiting requests per endpoint before 503", "max_texts": "inputs per request before 413",
    "max_body": "bytes per request body before 413", "threads": "torch threads (default: one per core; fewer on a shared machine)",
    "served_name": "the model's name in OpenAI's /v1/models (default: the directory's name)",
    "api_key": "require this key on every route but /health and /healthz (default: $BERTKIT_API_KEY; none: open)",
}


def cmd_serve(a) -> None:
    import os

    names = {f.name for f in dataclasses.fields(ServeConfig)}
    given = {k: v for k, v in vars(a).items() if k in names and k != "path"}
    given["api_key"] = given.get("api_key") or os.environ.get("BERTKIT_API_KEY") or None
    serve(ServeConfig(path=a.dir, **given))


def main(argv: list[str] | None = None) -> int:
    """`python -m bertkit.serving.app DIR ...`: the same command without the CLI around it."""
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
