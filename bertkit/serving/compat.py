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

Why ~480 lines: two foreign APIs (OpenAI's, text-embeddings-inference's) with their request and error shapes, on the same batchers as app.py.
"""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np

from .batcher import BatchFailed
from .predict import relevance

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
    kind = {401: "invalid_request_error", 413: "invalid_request_error", 500: "server_error", 503: "server_error"}.get(e.status, "invalid_request_error")
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


# A blank text (refused as empty): only whitespace by Python's str.isspace or by JSON Schema's \s (ECMA-262's, which adds
# the BOM). The schemas' pattern says the same: at least one character outside both.
TEXT_PATTERN = "[^\\s\\u001c-\\u001f\\u0085\\ufeff]"


def blank(text: str) -> bool:
    return not text.replace("\ufeff", " ").strip()


def texts_of(value, name: str, max_texts: int, allow_pairs: bool = False) -> list:
    """A string or a non-empty list of strings (or [a, b] pairs), each non-empty."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise Refusal(422, f"{name} must be a string or a non-empty list of strings.", name)
    for i, x in enumerate(items):
        parts = x if allow_pairs and isinstance(x, list) else [x]
        if allow_pairs and isinstance(x, list) and len(x) != 2:
            raise Refusal(422, f"{name}[{i}] must be a text or a [text, text] pair.", name)
        for t in parts:
            if not isinstance(t, str):
                raise Refusal(422, f"{name}[{i}] must be a string, not {type(t).__name__}.", name)
            if blank(t):
                raise Refusal(422, f"{name}[{i}] is empty.", name)
            try:
                t.encode("utf-8")
            except UnicodeEncodeError:
                raise Refusal(422, f"{name}[{i}] is not valid Unicode (it holds a lone surrogate).", name) from None
    if len(items) > max_texts:  # after the types: a body both malformed and too long is malformed
        raise Refusal(413, f"{len(items)} inputs in one request; the limit is {max_texts} (--max-texts).", name)
    return items


def json_int(t) -> int | None:
    """A JSON integer (7 or 7.0, not true) as an int, else None."""
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        return None
    return int(t) if isinstance(t, int) or t.is_integer() else None


def options_of(body: dict) -> dict:
    """TEI's options, at the top or (as InferenceClient sends them) under "parameters"."""
    extra = body.get("parameters")
    if extra is None:
        return body
    if not isinstance(extra, dict):
        raise Refusal(422, f"parameters must be an object, not {json.dumps(extra)}.", "parameters")
    for k in FLAGS & set(extra):  # checked here too: a top-level value would hide them
        flag(extra, k, False)
    return {**extra, **body}


FLAGS = {"normalize", "truncate", "raw_scores", "return_text", "add_special_tokens"}


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
        try:
            return await asyncio.shield(future)
        except BatchFailed as e:
            raise Refusal(500, str(e)) from None

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
            if body.get("model") is not None and not isinstance(body["model"], str):
                raise Refusal(400, f"model must be a string, not {json.dumps(body['model'])}.", "model")
            fmt = "float" if body.get("encoding_format") is None else body["encoding_format"]
            if fmt not in ("float", "base64"):
                raise Refusal(400, f"encoding_format must be 'float' or 'base64', not {json.dumps(fmt)}.", "encoding_format")
            width = self.state.backend.width
            dims = body.get("dimensions")
            if dims is not None and (json_int(dims) is None or not 1 <= json_int(dims) <= width):
                raise Refusal(400, f"dimensions must be a whole number from 1 to the model's {width}, not {json.dumps(dims)}.", "dimensions")
            dims = None if dims is None else json_int(dims)
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
        """OpenAI's input forms: a string, strings, one token-id list, or token-id lists (JSON integers: 7.0 is 7)."""
        if isinstance(value, list) and value and all(json_int(t) is not None for t in value):
            value = [value]
        if isinstance(value, list) and value and all(isinstance(x, list) for x in value):
            V, tok = self.state.backend.encoder.config.vocab_size, self.state.backend.tok
            texts = []
            for i, ids in enumerate(value):
                ids = [json_int(t) for t in ids]
                if not ids or not all(t is not None and 0 <= t < V for t in ids):
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
            params = options_of(body)
            self.ready("embed")
            texts = texts_of(params.get("inputs"), "inputs", self.state.cfg.max_texts)
            self.with_prompt(texts, (body.get("parameters") or {}).get("prompt_name"))  # checked even where the top level's wins
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

    def with_prompt(self, texts: list[str], name) -> list:
        """prompt_name: a prefix from the sentence-transformers config beside the model (its "prompts"); the texts become
        (prompt, text) pairs, so that the backend leaves the prompt out of pooling where the model's config says so."""
        if name is None:
            return texts
        prompts = prompts_of(self.state.backend)
        if not isinstance(name, str) or name not in prompts:
            known = ", ".join(sorted(prompts)) or "none"
            raise Refusal(422, f"prompt_name {json.dumps(name)} is not one of the model's prompts ({known}).")
        return [(prompts[name], t) for t in texts]

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
            params = options_of(body)
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
            if not isinstance(query, str) or blank(query):
                raise Refusal(422, "query must be a non-empty string.")
            if not isinstance(body.get("texts"), list):
                raise Refusal(422, "texts must be a non-empty list of strings.", "texts")
            texts = texts_of(body["texts"], "texts", self.state.cfg.max_texts)
            items = [[query, t] for t in texts]
            self.refuse_long("classify", items, flag(body, "truncate", False))
            raw, with_text = flag(body, "raw_scores", False), flag(body, "return_text", False)
            rows = await self.run("classify", items)
        except Refusal as e:
            return tei_error(e)
        out = [{"index": i, "score": relevance(row, raw), **({"text": texts[i]} if with_text else {})} for i, row in enumerate(rows)]
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
                if "classify" in st.batchers else {"embedding": {"pooling": ",".join(b.pooling)}})
        return json_response(200, {"model_id": self.model_name(), "model_sha": None, "model_dtype": "bfloat16" if b.bf16 else "float32",
                           "model_type": kind, "max_concurrent_requests": st.cfg.max_queue, "max_input_length": b.max_length,
                           "max_batch_tokens": getattr(st.cfg, "max_batch_tokens", None), "max_batch_requests": None,
                           "max_client_batch_size": st.cfg.max_texts, "tokenization_workers": 1, "version": TEI_VERSION,
                           "backend": b.describe()})

    async def health(self, request):
        if self.state.ready:
            return json_response(200, {})
        return tei_error(Refusal(503, self.state.load_error or "the model is still loading."))


# ---- the OpenAPI document: each route's real body, answers and errors ----------------------------------------

TEXT = {"type": "string", "minLength": 1, "pattern": TEXT_PATTERN, "description": "a non-empty text"}
FLAG = {"type": ["boolean", "null"]}
OPENAI_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type"],
    "properties": {"message": {"type": "string"}, "type": {"type": "string"}, "param": {"type": ["string", "null"]},
                   "code": {"type": ["string", "null"]}}}}}
TEI_ERROR = {"type": "object", "required": ["error", "error_type"], "properties": {"error": {"type": "string"}, "error_type": {"type": "string"}}}
SCORES = {"type": "array", "items": {"type": "object", "required": ["label", "score"],
                                     "properties": {"label": {"type": "string"}, "score": {"type": "number"}}}}


def _json_schema(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


def _openapi(body: dict | None, ok: dict, errors: dict, error_schema: dict) -> dict:
    """FastAPI's openapi_extra for a route that reads its body itself."""
    out = {"responses": {"200": {"description": "OK", **_json_schema(ok)},
                         **{str(c): {"description": why, **_json_schema(error_schema)} for c, why in errors.items()}}}
    if body is not None:
        out["requestBody"] = {"required": True, **_json_schema(body)}
    return out


def document(app, state) -> None:
    """Describe the routes above for the model now loaded (its vocabulary, width, prompts, max texts) and hide the
    ones it does not serve (a pair classifier has no /embed, an encoder no /rerank); then /openapi.json is rebuilt."""
    b, cfg = state.backend, state.cfg
    texts = {"type": "array", "items": TEXT, "minItems": 1, "maxItems": cfg.max_texts}
    one_or_many = {"anyOf": [TEXT, texts]}
    key = {401: "a missing or wrong API key"} if state.cfg.api_key else {}
    tei = {**key, 413: "an input over the model's length with truncate false", 422: "a malformed body, a wrong type, an empty text",
           500: "the model failed on this request (the server goes on)", 503: "overloaded, or the model is loading"}
    docs = {"/info": _openapi(None, {"type": "object"}, {503: "the model is loading"}, TEI_ERROR),
            "/health": _openapi(None, {"type": "object"}, {503: "the model is loading"}, TEI_ERROR),
            "/v1/models": _openapi(None, {"type": "object", "required": ["object", "data"]}, {**key, 503: "the model is loading"}, OPENAI_ERROR),
            "/tokenize": _openapi({"type": "object", "required": ["inputs"], "properties": {"inputs": one_or_many, "add_special_tokens": FLAG}},
                                  {"type": "array", "items": {"type": "array", "items": {"type": "object", "properties": {
                                      "id": {"type": "integer"}, "text": {"type": "string"}, "special": {"type": "boolean"},
                                      "start": {"type": ["integer", "null"]}, "stop": {"type": ["integer", "null"]}}}}},
                                  {**tei, 413: "too many inputs"}, TEI_ERROR)}
    served = set(state.batchers)
    if "embed" in served:
        width, vocab = b.width, b.encoder.config.vocab_size
        ids = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0, "maximum": vocab - 1}}
        docs["/v1/embeddings"] = _openapi(
            {"type": "object", "required": ["input"], "properties": {
                "input": {"anyOf": [TEXT, texts, ids, {"type": "array", "items": ids, "minItems": 1, "maxItems": cfg.max_texts}]},
                "model": {"type": ["string", "null"]}, "encoding_format": {"enum": ["float", "base64", None]},
                "dimensions": {"type": ["integer", "null"], "minimum": 1, "maximum": width}}},
            {"type": "object", "required": ["object", "data", "model", "usage"], "properties": {
                "data": {"type": "array", "items": {"type": "object", "required": ["object", "index", "embedding"], "properties": {
                    "index": {"type": "integer"}, "embedding": {"anyOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}]}}}},
                "usage": {"type": "object", "required": ["prompt_tokens", "total_tokens"]}}},
            {400: "a malformed body, a wrong type, an empty text", **key, 413: "too many inputs or too large a body",
             500: "the model failed on this request (the server goes on)", 503: "overloaded, or loading"},
            OPENAI_ERROR)
        options = {"normalize": FLAG, "truncate": FLAG, "prompt_name": {"enum": [None, *sorted(prompts_of(b))]}}
        embed = {"type": "object", "required": ["inputs"], "properties": {
            "inputs": one_or_many, **options, "parameters": {"type": ["object", "null"], "properties": options}}}
        vectors = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
        docs["/embed"] = docs["/"] = _openapi(embed, vectors, tei, TEI_ERROR)
    if "classify" in served:
        pair = {"type": "array", "items": TEXT, "minItems": 2, "maxItems": 2}
        inputs = ({"anyOf": [pair, {"type": "array", "items": pair, "minItems": 1, "maxItems": cfg.max_texts}]} if b.pairs else one_or_many)
        options = {"raw_scores": FLAG, "truncate": FLAG}
        predict = {"type": "object", "required": ["inputs"], "properties": {
            "inputs": inputs, **options, "parameters": {"type": ["object", "null"], "properties": options}}}
        docs["/predict"] = docs["/"] = _openapi(predict, {"anyOf": [SCORES, {"type": "array", "items": SCORES}]}, tei, TEI_ERROR)
        if b.pairs:
            docs["/rerank"] = _openapi(
                {"type": "object", "required": ["query", "texts"], "properties": {
                    "query": TEXT, "texts": texts, "return_text": FLAG, "raw_scores": FLAG, "truncate": FLAG}},
                {"type": "array", "items": {"type": "object", "required": ["index", "score"], "properties": {
                    "index": {"type": "integer"}, "score": {"type": "number"}, "text": {"type": "string"}}}}, tei, TEI_ERROR)
    for route in app.routes:
        if getattr(route, "path", None) in ROUTES:
            route.include_in_schema = route.path in docs
            route.openapi_extra = docs.get(route.path)


def prompts_of(backend) -> dict[str, str]:
    """The prompts of the sentence-transformers config beside the model ({"query": "query: ", ...})."""
    from pathlib import Path

    path = Path(str(backend.source))
    path = path if path.is_dir() else path.parent
    if (path / "config_sentence_transformers.json").is_file():
        return json.loads((path / "config_sentence_transformers.json").read_text(encoding="utf-8")).get("prompts") or {}
    return {}


ROUTES = ("/v1/embeddings", "/v1/models", "/embed", "/predict", "/rerank", "/tokenize", "/", "/info", "/health")


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
