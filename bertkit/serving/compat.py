"""The APIs clients already speak, served from the same batchers as bertkit's own /v1 routes (app.py).

OpenAI (the `openai` SDK, LangChain, LlamaIndex):
    POST /v1/embeddings  {"input": str | [str] | [int] | [[int]], "model", "encoding_format": "float" | "base64",
                          "dimensions": n}  -> {"object": "list", "data": [{"object": "embedding", "index", "embedding"}],
                          "model", "usage": {"prompt_tokens", "total_tokens"}}; vectors unit length, as OpenAI's;
                          `dimensions` keeps the first n components and rescales them to unit length (Matryoshka).
                          Token ids are read back to text with the model's tokenizer, then embedded.
    GET  /v1/models      the one model served
    errors               {"error": {"message", "type", "param", "code"}}: 400 bad request, 401 key, 413, 503
text-embeddings-inference (`huggingface_hub.InferenceClient(base_url)`, TEI's own clients):
    POST /embed          {"inputs": str | [str], "normalize": true, "truncate": false, "prompt_name": null} -> [[float]]
    POST /predict        {"inputs": str | [str] | [[a, b]], "raw_scores": false} -> [{"label", "score"}] per input
    POST /rerank         {"query", "texts": [str], "return_text": false, "raw_scores": false} -> [{"index", "score"(, "text")}],
                         best first (a pair classifier: the score is the probability of its last label)
    POST /tokenize       {"inputs": str | [str], "add_special_tokens": true} -> [[{"id", "text", "special", "start", "stop"}]]
    POST /               what InferenceClient posts: {"inputs", "parameters"}: /embed for an encoder, /predict for a classifier
    GET  /info, /health
    errors               {"error", "error_type"}: 413 (an input over the model's length with truncate false, or too many),
                         422 validation, 503 overloaded or loading
"""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np

TEI_VERSION = "1.8.0"  # the TEI API these routes follow


def json_response(status: int, body, headers: dict | None = None):
    """A JSON answer (UTF-8, non-ASCII kept): every route of the server writes through this."""
    from starlette.responses import Response

    return Response(json.dumps(body, ensure_ascii=False), status, headers, media_type="application/json")


class Refusal(Exception):
    """A request this API refuses: its status and its message (the route writes its API's error body)."""

    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


def openai_error(e: Refusal):
    """OpenAI's error body; its API answers every malformed request 400 (TEI's and bertkit's say 422)."""
    e.status = 400 if e.status == 422 else e.status
    kind = {401: "invalid_request_error", 413: "invalid_request_error", 503: "server_error"}.get(e.status, "invalid_request_error")
    code = {401: "invalid_api_key", 503: "overloaded"}.get(e.status)
    return json_response(e.status, {"error": {"message": e.message, "type": kind, "param": e.param, "code": code}},
                 {"Retry-After": "1"} if e.status == 503 else None)


def tei_error(e: Refusal):
    kind = {401: "Unauthorized", 413: "Validation", 422: "Validation", 503: "Overloaded"}.get(e.status, "Backend")
    return json_response(e.status, {"error": e.message, "error_type": kind}, {"Retry-After": "1"} if e.status == 503 else None)


async def body_of(request) -> dict:
    raw = await request.body()
    if not raw.strip():
        raise Refusal(422, "the body is empty; send a JSON object.")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Refusal(422, f"the body is not valid JSON ({e}).") from None
    if not isinstance(body, dict):
        raise Refusal(422, f"the body must be a JSON object, not {type(body).__name__}.")
    return body


def texts_of(value, name: str, max_texts: int, allow_pairs: bool = False) -> list:
    """A string or a non-empty list of strings (or [a, b] pairs), each non-empty."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise Refusal(422, f"{name} must be a string or a non-empty list of strings.", name)
    if len(items) > max_texts:
        raise Refusal(413, f"{len(items)} inputs in one request; the limit is {max_texts} (--max-texts).", name)
    for i, x in enumerate(items):
        parts = x if allow_pairs and isinstance(x, list) else [x]
        if allow_pairs and isinstance(x, list) and len(x) != 2:
            raise Refusal(422, f"{name}[{i}] must be a text or a [text, text] pair.", name)
        for t in parts:
            if not isinstance(t, str):
                raise Refusal(422, f"{name}[{i}] must be a string, not {type(t).__name__}.", name)
            if not t.strip():
                raise Refusal(422, f"{name}[{i}] is empty.", name)
    return items


def flag(body: dict, name: str, default: bool) -> bool:
    v = body.get(name, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise Refusal(422, f"{name} must be true or false, not {json.dumps(v)}.", name)
    return v


class Compat:
    """The routes above over app.State (its backend, batchers and limits)."""

    def __init__(self, state):
        self.state = state

    # ---- shared steps

    def ready(self, endpoint: str) -> None:
        st = self.state
        if st.backend is None:
            raise Refusal(503, st.load_error or "the model is still loading; retry shortly.")
        if endpoint not in st.batchers:
            served = "an encoder" if "embed" in st.batchers else f"a {st.backend.task} model"
            raise Refusal(422, f"this server runs {served}, which does not serve {endpoint}.")

    async def run(self, endpoint: str, items: list) -> list[dict]:
        try:
            future = self.state.batchers[endpoint].submit(items)
        except asyncio.QueueFull:
            raise Refusal(503, f"the {endpoint} queue is full ({self.state.cfg.max_queue} requests); retry shortly.") from None
        return await asyncio.shield(future)

    def model_name(self) -> str:
        return self.state.cfg.served_name or str(self.state.backend.source).rstrip("/").rsplit("/", 1)[-1]

    def check_length(self, endpoint: str, items: list) -> list[int]:
        """Token counts of the inputs; over the model's length with truncate false: 413, as TEI answers."""
        return self.state.backend.lengths(endpoint, items)

    # ---- OpenAI

    async def embeddings(self, request):
        try:
            body = await body_of(request)
            self.ready("embed")
            texts = self.openai_inputs(body.get("input"))
            fmt = body.get("encoding_format", "float") or "float"
            if fmt not in ("float", "base64"):
                raise Refusal(400, f"encoding_format must be 'float' or 'base64', not {json.dumps(fmt)}.", "encoding_format")
            width = self.state.backend.encoder.config.hidden_size
            dims = body.get("dimensions")
            if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= width):
                raise Refusal(400, f"dimensions must be a whole number from 1 to the model's {width}, not {json.dumps(dims)}.", "dimensions")
            tokens = sum(self.check_length("embed", texts))
            rows = await self.run("embed", texts)
        except Refusal as e:
            return openai_error(e)
        data = []
        for i, row in enumerate(rows):
            v = np.asarray(row["embedding"], dtype=np.float32)[: dims or None]
            v = v / max(float(np.linalg.norm(v)), 1e-12)
            out = base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") if fmt == "base64" else v.tolist()
            data.append({"object": "embedding", "index": i, "embedding": out})
        return json_response(200, {"object": "list", "data": data, "model": self.model_name(),
                           "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    def openai_inputs(self, value) -> list[str]:
        """OpenAI's input forms: a string, strings, one token-id list, or token-id lists."""
        if isinstance(value, list) and value and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
            value = [value]
        if isinstance(value, list) and value and all(isinstance(x, list) for x in value):
            V, tok = self.state.backend.encoder.config.vocab_size, self.state.backend.tok
            texts = []
            for i, ids in enumerate(value):
                if not ids or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < V for t in ids):
                    raise Refusal(400, f"input[{i}] must be a non-empty list of token ids from 0 to {V - 1}.", "input")
                texts.append(tok.decode(ids, skip_special_tokens=True) or tok.decode(ids, skip_special_tokens=False))
            value = texts
        return texts_of(value, "input", self.state.cfg.max_texts)

    async def models(self, request):
        if self.state.backend is None:
            return openai_error(Refusal(503, self.state.load_error or "the model is still loading; retry shortly."))
        return json_response(200, {"object": "list", "data": [{"id": self.model_name(), "object": "model", "created": 0, "owned_by": "bertkit"}]})

    # ---- TEI

    async def embed(self, request, body: dict | None = None):
        try:
            body = body if body is not None else await body_of(request)
            params = {**body.get("parameters", {}), **body} if isinstance(body.get("parameters"), dict) else body
            self.ready("embed")
            texts = texts_of(params.get("inputs"), "inputs", self.state.cfg.max_texts)
            texts = self.with_prompt(texts, params.get("prompt_name"))
            normalize, truncate = flag(params, "normalize", True), flag(params, "truncate", False)
            self.refuse_long("embed", texts, truncate)
            rows = await self.run("embed", texts)
        except Refusal as e:
            return tei_error(e)
        out = []
        for row in rows:
            v = np.asarray(row["embedding"], dtype=np.float32)
            out.append((v / max(float(np.linalg.norm(v)), 1e-12) if normalize else v).tolist())
        return json_response(200, out)

    def with_prompt(self, texts: list[str], name) -> list[str]:
        """prompt_name: a prefix from the sentence-transformers config beside the model (its "prompts")."""
        if name is None:
            return texts
        from pathlib import Path

        path = Path(str(self.state.backend.source))
        path = path if path.is_dir() else path.parent
        prompts = {}
        if (path / "config_sentence_transformers.json").is_file():
            prompts = json.loads((path / "config_sentence_transformers.json").read_text(encoding="utf-8")).get("prompts") or {}
        if not isinstance(name, str) or name not in prompts:
            known = ", ".join(sorted(prompts)) or "none"
            raise Refusal(422, f"prompt_name {json.dumps(name)} is not one of the model's prompts ({known}).")
        return [prompts[name] + t for t in texts]

    def refuse_long(self, endpoint: str, items: list, truncate: bool) -> None:
        if truncate:
            return
        limit = self.state.backend.max_length
        for i, n in enumerate(self.check_length(endpoint, items)):
            if n > limit:
                raise Refusal(413, f"input {i} has {n} tokens, more than the model's {limit}; send truncate: true to cut it.")

    async def predict(self, request, body: dict | None = None):
        try:
            body = body if body is not None else await body_of(request)
            params = {**body.get("parameters", {}), **body} if isinstance(body.get("parameters"), dict) else body
            self.ready("classify")
            pairs = self.state.backend.pairs
            single = isinstance(params.get("inputs"), str) or (pairs and isinstance(params.get("inputs"), list)
                                                                and len(params["inputs"]) == 2 and all(isinstance(x, str) for x in params["inputs"]))
            inputs = [params["inputs"]] if single and pairs else params.get("inputs")
            items = texts_of(inputs, "inputs", self.state.cfg.max_texts, allow_pairs=pairs)
            if pairs and any(isinstance(x, str) for x in items):
                raise Refusal(422, "this model classifies pairs: send inputs as [text_a, text_b] (or a list of them).")
            raw = flag(params, "raw_scores", False)
            self.refuse_long("classify", items, flag(params, "truncate", False))
            rows = await self.run("classify", items)
        except Refusal as e:
            return tei_error(e)
        scores = [self.scores(row, raw) for row in rows]
        return json_response(200, scores[0] if single and request.url.path == "/predict" else scores)

    @staticmethod
    def scores(row: dict, raw: bool) -> list[dict]:
        """Every label with its probability (raw_scores: its log-probability), best first."""
        probs = row["probabilities"]
        out = [{"label": k, "score": float(np.log(max(p, 1e-12))) if raw else p} for k, p in probs.items()]
        return sorted(out, key=lambda d: -d["score"])

    async def rerank(self, request):
        try:
            body = await body_of(request)
            self.ready("classify")
            if not self.state.backend.pairs:
                raise Refusal(422, "rerank needs a pair classifier (a cross-encoder); this model classifies single texts.")
            query = body.get("query")
            if not isinstance(query, str) or not query.strip():
                raise Refusal(422, "query must be a non-empty string.")
            texts = texts_of(body.get("texts"), "texts", self.state.cfg.max_texts)
            items = [[query, t] for t in texts]
            self.refuse_long("classify", items, flag(body, "truncate", False))
            raw, with_text = flag(body, "raw_scores", False), flag(body, "return_text", False)
            rows = await self.run("classify", items)
        except Refusal as e:
            return tei_error(e)
        last = list(rows[0]["probabilities"])[-1]  # the label that means "relevant" (e.g. "1")
        out = []
        for i, row in enumerate(rows):
            p = row["probabilities"][last]
            out.append({"index": i, "score": float(np.log(max(p, 1e-12)) - np.log(max(1 - p, 1e-12))) if raw else p,
                        **({"text": texts[i]} if with_text else {})})
        return json_response(200, sorted(out, key=lambda d: -d["score"]))

    async def tokenize(self, request):
        try:
            body = await body_of(request)
            if self.state.backend is None:
                raise Refusal(503, self.state.load_error or "the model is still loading; retry shortly.")
            texts = texts_of(body.get("inputs"), "inputs", self.state.cfg.max_texts)
            special = flag(body, "add_special_tokens", True)
        except Refusal as e:
            return tei_error(e)
        tok = self.state.backend.tok
        specials = {tok.backend.token_to_id(t) for t in tok.specials.values()}
        out = []
        for enc in tok.backend.encode_batch(texts, add_special_tokens=special):
            out.append([{"id": i, "text": t, "special": i in specials, "start": None if i in specials else s,
                         "stop": None if i in specials else e} for i, t, (s, e) in zip(enc.ids, enc.tokens, enc.offsets)])
        return json_response(200, out)

    async def root(self, request):
        """InferenceClient posts {"inputs", "parameters"} to the URL it was given: embed or predict, as the model does."""
        try:
            body = await body_of(request)
        except Refusal as e:
            return tei_error(e)
        if self.state.backend is not None and "classify" in self.state.batchers:
            return await self.predict(request, body)
        if self.state.backend is not None and "embed" not in self.state.batchers:
            return json_response(422, {"error": f"this server runs a {self.state.backend.task} model: POST /v1/{self.state.backend.task}.",
                               "error_type": "Validation"})
        return await self.embed(request, body)

    async def info(self, request):
        st = self.state
        if st.backend is None:
            return tei_error(Refusal(503, st.load_error or "the model is still loading; retry shortly."))
        b = st.backend
        config = b.encoder.config if hasattr(b, "encoder") else None
        kind = ({"classifier": {"id2label": config.extra.get("id2label"), "label2id": config.extra.get("label2id")}}
                if "classify" in st.batchers else {"embedding": {"pooling": "mean"}})
        return json_response(200, {"model_id": self.model_name(), "model_sha": None, "model_dtype": "bfloat16" if b.bf16 else "float32",
                           "model_type": kind, "max_concurrent_requests": st.cfg.max_queue, "max_input_length": b.max_length,
                           "max_batch_tokens": getattr(st.cfg, "max_batch_tokens", None), "max_batch_requests": None,
                           "max_client_batch_size": st.cfg.max_texts, "tokenization_workers": 1, "version": TEI_VERSION,
                           "backend": b.describe()})

    async def health(self, request):
        if self.state.ready:
            return json_response(200, {})
        return tei_error(Refusal(503, self.state.load_error or "the model is still loading."))


def add_routes(app, state) -> None:
    """Register the OpenAI and TEI routes on the FastAPI app."""
    from fastapi import Request

    c = Compat(state)

    def route(path, method, fn, summary):
        async def handler(request):
            return await fn(request)

        handler.__annotations__ = {"request": Request}  # FastAPI hands over the raw request (this file postpones annotations)
        app.add_api_route(path, handler, methods=[method], summary=summary)

    route("/v1/embeddings", "POST", c.embeddings, 'OpenAI embeddings: {"input": "text" | ["texts"], "model": "...", "encoding_format": "float", "dimensions": n}')
    route("/v1/models", "GET", c.models, "OpenAI: the model served")
    route("/embed", "POST", c.embed, 'TEI: {"inputs": "text" | ["texts"], "normalize": true, "truncate": false}')
    route("/predict", "POST", c.predict, 'TEI: {"inputs": "text" | ["texts"] | [["a", "b"]], "raw_scores": false}')
    route("/rerank", "POST", c.rerank, 'TEI: {"query": "...", "texts": ["..."], "return_text": false}')
    route("/tokenize", "POST", c.tokenize, 'TEI: {"inputs": "text" | ["texts"], "add_special_tokens": true}')
    route("/", "POST", c.root, "what huggingface_hub.InferenceClient posts: embed or predict")
    route("/info", "GET", c.info, "TEI: the model and the server's limits")
    route("/health", "GET", c.health, "TEI: 200 when ready")
