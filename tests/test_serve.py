"""`bertkit serve` on loopback: every endpoint equals the Python API, concurrent requests never get each
other's results, bad input gets 413/422/503 with a message, /metrics counts what was sent, and a
shutdown finishes the requests in flight. Servers run in a thread on a free port of 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from bertkit import BertModel, Tokenizer  # noqa: E402
from bertkit.cli import build_parser  # noqa: E402
from bertkit.data.datasets import load_dataset, write_conll, write_table  # noqa: E402
from bertkit.errors import BertkitError  # noqa: E402
from bertkit.serving.app import ServeConfig, add_serve_parser, make_server  # noqa: E402
from bertkit.serving.backend import backend_factory  # noqa: E402
from bertkit.serving.batcher import length_groups  # noqa: E402
from bertkit.serving.load import load_finetuned  # noqa: E402
from bertkit.serving.predict import encode_sentences, predict_texts  # noqa: E402
from bertkit.tasks import fill_mask  # noqa: E402
from bertkit.train import TrainConfig, train  # noqa: E402


class Running:
    """A server in a thread: `url`, `state` (its State), `stop()` (graceful, as on SIGTERM)."""

    def __init__(self, cfg: ServeConfig, load=None, wait_ready: bool = True):
        self.server, sock, self.state = make_server(cfg, load)
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, "the server to start")
        if wait_ready:
            wait_for(lambda: httpx.get(self.url + "/readyz").status_code == 200, "the model to load")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the server did not stop"


def wait_for(ok, what: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not ok():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def config(path, **kw) -> ServeConfig:
    """fp32 unless a test asks otherwise: these tests compare answers with the fp32 functions within 1e-5."""
    return ServeConfig(str(path), port=0, log_level="warning", **({"precision": "fp32"} | kw))


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    r = Running(config(minilm_dir))
    yield r
    r.stop()


@pytest.fixture(scope="module")
def reviews_dir(tmp_path_factory) -> Path:
    reviews, d = load_dataset("reviews-zh"), tmp_path_factory.mktemp("reviews")
    for name, n in (("train", 300), ("dev", 40), ("test", 40)):
        write_table(d / f"{name}.tsv", "classify", reviews[name][:n])
    return d


def quick_train(out: Path, **kw) -> Path:
    train(TrainConfig(model="bert-tiny", out=str(out), max_steps=3, batch_size=16, lr=5e-4, max_length=32, vocab_size=2000,
                      quiet=True, **kw))
    return out


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, reviews_dir) -> Path:
    return quick_train(tmp_path_factory.mktemp("cls") / "run", task="classify", data=str(reviews_dir))


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory, minilm_dir) -> Path:
    """A small random BertForMaskedLM (hidden 36, 2 layers) with MiniLM's vocabulary."""
    from bertkit import BertConfig, BertForMaskedLM

    tok = Tokenizer.from_pretrained(minilm_dir)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=36, num_hidden_layers=2, num_attention_heads=3,
                     intermediate_size=52, max_position_embeddings=64)
    torch.manual_seed(0)
    model = BertForMaskedLM(cfg).eval()
    d = tmp_path_factory.mktemp("mlm") / "model"
    tok.model_max_length = 64
    model.save_pretrained(d, tokenizer=tok)
    return d


def post(r: Running, endpoint: str, body, **kw) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body, ensure_ascii=False)
    return httpx.post(f"{r.url}/v1/{endpoint}", content=content, headers={"content-type": "application/json"}, timeout=60, **kw)


TEXTS = ["A man is eating food.", "Someone is playing the guitar loudly in the street tonight.", "ok",
         "The quick brown fox " * 80]  # the last is over MiniLM's 256 tokens


# ---- each endpoint equals the Python API ---------------------------------------------------------


@pytest.mark.heavy
def test_embed_equals_encode_sentences(minilm, minilm_dir):
    model, tok = BertModel.from_pretrained(minilm_dir, new_heads=True, verbose=False), Tokenizer.from_pretrained(minilm_dir)
    rows = post(minilm, "embed", {"texts": TEXTS}).json()["results"]
    want = encode_sentences(model, tok, TEXTS, max_length=256)
    assert [r["text"] for r in rows] == TEXTS
    assert [r["truncated"] for r in rows] == [False, False, False, True]
    assert np.abs(np.array([r["embedding"] for r in rows]) - want).max() < 1e-5
    unit = post(minilm, "embed", {"texts": TEXTS, "normalize": True}).json()["results"]
    assert np.abs(np.array([r["embedding"] for r in unit]) - encode_sentences(model, tok, TEXTS, normalize=True, max_length=256)).max() < 1e-5


@pytest.mark.heavy
def test_classify_equals_predict_texts(classifier):
    texts = ["质量很好，物流也快", "屏幕有坏点，很失望", "一般", "非常满意" * 40]  # the last is over max_length 32
    with_model = Running(config(classifier, max_batch=3))  # 4 texts: two forwards
    try:
        rows = post(with_model, "classify", {"texts": texts}).json()["results"]
        assert post(with_model, "classify", {"pairs": [["a", "b"]]}).status_code == 422  # not a pair model
    finally:
        with_model.stop()
    model, tok = load_finetuned(classifier, precision="fp32")
    want = predict_texts(model, tok, texts)
    assert [r["text"] for r in rows] == texts and [r["label"] for r in rows] == [w["label"] for w in want]
    assert [r["truncated"] for r in rows] == [w["truncated"] for w in want] == [False, False, False, True]
    for r, w in zip(rows, want):
        assert r.keys() == w.keys() and abs(r["probability"] - w["probability"]) < 1e-5
        assert all(abs(r["probabilities"][k] - w["probabilities"][k]) < 1e-5 for k in w["probabilities"])


@pytest.mark.heavy
def test_pair_and_ner_equal_predict_texts(tmp_path, reviews_dir):
    reviews = load_dataset("reviews-zh")["train"][:120]
    with (tmp_path / "pairs.jsonl").open("w", encoding="utf-8") as f:
        for a, b in zip(reviews[0::2], reviews[1::2]):
            f.write(json.dumps({"sentence1": a.text, "sentence2": b.text, "label": int(a.label == b.label)}, ensure_ascii=False) + "\n")
    pd = load_dataset("peoples-daily-ner")
    write_conll(tmp_path / "ner.conll", pd["train"][:120])
    cases = [("pair", dict(train=str(tmp_path / "pairs.jsonl"), dev=str(tmp_path / "pairs.jsonl")), "classify",
              {"pairs": [["很好", "不错"], ["很差", "质量很好"], ["一般", "一般般"]]}),
             ("ner", dict(train=str(tmp_path / "ner.conll"), dev=str(tmp_path / "ner.conll")), "ner",
              {"texts": ["江泽民在北京会见克林顿", "今天天气很好", "上海 浦东 开发"]})]
    for task, data, endpoint, body in cases:
        out = quick_train(tmp_path / task, task=task, **data)
        r = Running(config(out))
        try:
            rows = post(r, endpoint, body).json()["results"]
        finally:
            r.stop()
        model, tok = load_finetuned(out, precision="fp32")
        want = predict_texts(model, tok, body.get("pairs") or body["texts"])
        if task == "ner":
            assert rows == want
        else:
            assert [x["pair"] for x in rows] == [list(p) for p in body["pairs"]]
            assert [x["label"] for x in rows] == [w["label"] for w in want]
            assert all(abs(x["probability"] - w["probability"]) < 1e-5 for x, w in zip(rows, want))


def test_fill_mask_and_embed_on_an_mlm_checkpoint(mlm_dir):
    from bertkit import BertForMaskedLM

    texts = ["paris is the [MASK] of france.", "the [MASK] sat on the [MASK].", "[MASK] " + "word " * 80]
    r = Running(config(mlm_dir))
    try:
        assert httpx.get(r.url + "/readyz").json()["endpoints"] == ["embed", "fill-mask"]
        rows = post(r, "fill-mask", {"texts": texts[:2], "top_k": 3}).json()["results"]
        long = post(r, "fill-mask", {"texts": texts[2:]}).json()["results"][0]
        vectors = post(r, "embed", {"texts": texts}).json()["results"]
        assert post(r, "fill-mask", {"texts": ["no mask here"]}).json()["error"] == "texts[0] has no [MASK] to fill."
    finally:
        r.stop()
    model, tok = BertForMaskedLM.from_pretrained(mlm_dir, verbose=False), Tokenizer.from_pretrained(mlm_dir)
    for row, text in zip(rows, texts):
        want = fill_mask(model, tok, text, top_k=3)
        assert [[c["token"] for c in m] for m in row["masks"]] == [[t for t, _ in w] for w in want]
        assert max(abs(c["probability"] - p) for m, w in zip(row["masks"], want) for c, (_, p) in zip(m, w)) < 1e-5
    assert long["truncated"] and len(long["masks"]) == 1 and len(long["masks"][0]) == 5
    want = encode_sentences(model.bert, tok, texts, max_length=64)
    assert np.abs(np.array([v["embedding"] for v in vectors]) - want).max() < 1e-5
    assert [v["truncated"] for v in vectors] == [False, False, True]


def test_onnx_backend_equals_predict_texts(tmp_path, classifier):
    """--backend onnx serves an export of `bertkit export onnx` through the same functions."""
    from bertkit.serving.export import export_onnx

    export_onnx(classifier / "model", tmp_path / "cls.onnx")
    texts = ["质量很好，物流也快", "屏幕有坏点，很失望", "非常满意" * 40]
    r = Running(config(tmp_path / "cls.onnx", backend="onnx"))
    try:
        assert httpx.get(r.url + "/readyz").json()["backend"] == "onnx"
        rows = post(r, "classify", {"texts": texts}).json()["results"]
    finally:
        r.stop()
    want = predict_texts(*load_finetuned(classifier, precision="fp32"), texts)
    assert [x["label"] for x in rows] == [w["label"] for w in want] and [x["truncated"] for x in rows] == [False, False, True]
    assert all(abs(x["probability"] - w["probability"]) < 1e-4 for x, w in zip(rows, want))


# ---- batching: no mix-ups, and batches do form ------------------------------------------------------


@pytest.mark.heavy
def test_64_concurrent_requests_each_get_their_own_result(minilm, minilm_dir):
    texts = [[f"request {i} asks about topic number {i * 7 % 13} and colour {c}" for c in ("red", "blue")[: 1 + i % 2]] for i in range(64)]
    flat = [t for ts in texts for t in ts]
    before = _metric(minilm, 'bertkit_batch_size_count{endpoint="embed"}')

    async def all_at_once():
        async with httpx.AsyncClient(base_url=minilm.url, timeout=60, limits=httpx.Limits(max_connections=64)) as c:
            return await asyncio.gather(*(c.post("/v1/embed", json={"texts": ts}) for ts in texts))

    answers = asyncio.run(all_at_once())
    model, tok = BertModel.from_pretrained(minilm_dir, new_heads=True, verbose=False), Tokenizer.from_pretrained(minilm_dir)
    want = dict(zip(flat, encode_sentences(model, tok, flat, max_length=256)))
    for ts, a in zip(texts, answers):
        assert a.status_code == 200
        rows = a.json()["results"]
        assert [r["text"] for r in rows] == ts
        assert max(np.abs(np.array(r["embedding"]) - want[t]).max() for r, t in zip(rows, ts)) < 1e-5
    forwards = _metric(minilm, 'bertkit_batch_size_count{endpoint="embed"}') - before
    assert forwards < len(flat) / 2, f"{forwards} forward passes for {len(flat)} texts: requests were not batched"


def test_keep_alive_answers_do_not_stall(minilm):
    """Without TCP_NODELAY on the accepted sockets every answer on a reused connection waited 40 ms
    (Nagle's algorithm against the client's delayed ACK)."""
    with httpx.Client(base_url=minilm.url) as c:
        times = []
        for _ in range(15):
            t0 = time.perf_counter()
            assert c.get("/healthz").status_code == 200
            times.append(time.perf_counter() - t0)
    assert sorted(times)[len(times) // 2] < 0.02, times


def test_length_groups():
    assert length_groups([5, 100, 6, 7, 200, 90], max_batch=8, cap=512) == [[0, 2, 3], [5, 1], [4]]
    assert length_groups([10] * 5, max_batch=2, cap=512) == [[0, 1], [2, 3], [4]]
    assert length_groups([300, 900, 40], max_batch=8, cap=128) == [[2], [0, 1]]  # both cut to 128 tokens


# ---- limits and bad input -------------------------------------------------------------------


def test_bad_input_gets_422_and_413_with_a_message(minilm):
    def error(body, endpoint="embed", code=422):
        a = post(minilm, endpoint, body)
        assert a.status_code == code, a.text
        return a.json()["error"]

    assert error(b'{"texts": ["a",') .startswith("the body is not valid JSON")
    assert error(b"") == 'the body is empty; expected {"texts": ["a text", ...], "normalize": false}.'
    assert "texts: Field required; text: Extra inputs are not permitted" in error({"text": ["a"]})
    assert error({"texts": ["a", 3]}).startswith("texts.1: Input should be a valid string")
    assert error({"texts": "a"}).startswith("texts: Input should be a valid list")
    assert error({"texts": []}).startswith("texts: List should have at least 1 item")
    assert error({"texts": ["a"], "normalize": "yes"}).startswith("normalize: Input should be a valid boolean")
    assert error({"texts": ["fine", "  "]}) == "texts[1] is empty."
    assert error('{"texts": ["ok", "\\ud800"]}') == "texts[1] is not valid Unicode (it holds a lone surrogate)."
    assert error({"texts": ["a"] * 257}, code=413) == "257 inputs in one request; the limit is 256 (--max-texts)."
    assert "over the limit of 1048576 bytes" in error({"texts": ["x" * (1 << 20)]}, code=413)
    assert error({"texts": ["a"]}, endpoint="ner", code=404) == "/v1/ner is not an endpoint of this model; it serves /v1/embed."
    sent = httpx.post(f"{minilm.url}/v1/embed", content=b'{"texts": ["curl -d sends a form type"]}')  # no JSON content type
    assert sent.status_code == 200


def _metric(r: Running, name: str) -> float:
    text = httpx.get(r.url + "/metrics").text
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


class GatedBackend:
    """A stand-in model whose forward waits for the test: 2-d vectors of the text length."""

    endpoints, pairs, max_length = ("embed",), False, 512

    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()

    def describe(self):
        return {"task": "gated", "endpoints": list(self.endpoints)}

    def lengths(self, endpoint, items):
        return [len(t) + 2 for t in items]

    def run(self, endpoint, items, lengths):
        self.entered.set()
        assert self.release.wait(30)
        return [{"text": t, "embedding": np.array([len(t), 1.0], dtype=np.float32), "truncated": False} for t in items]


def test_queue_full_503_readiness_and_graceful_shutdown():
    backend, loaded = GatedBackend(), threading.Event()

    def load():
        assert loaded.wait(30)
        return backend

    r = Running(config("unused", max_batch=1, max_queue=2), load=load, wait_ready=False)
    assert httpx.get(r.url + "/healthz").status_code == 200  # alive while the model loads
    assert httpx.get(r.url + "/readyz").json() == {"ready": False, "reason": "loading"}
    early = post(r, "embed", {"texts": ["a"]})
    assert early.status_code == 503 and early.headers["retry-after"] == "1"
    loaded.set()
    wait_for(lambda: httpx.get(r.url + "/readyz").status_code == 200, "ready")

    results: dict[int, httpx.Response] = {}

    def send(i):
        results[i] = post(r, "embed", {"texts": ["x" * (i + 1)]})

    threads = [threading.Thread(target=send, args=(0,))]
    threads[0].start()
    assert backend.entered.wait(10)  # request 0 is in the forward pass; 1 and 2 fill the queue
    threads += [threading.Thread(target=send, args=(i,)) for i in (1, 2)]
    for t in threads[1:]:
        t.start()
    wait_for(lambda: r.state.batchers["embed"].depth() == 2, "two queued requests")
    full = post(r, "embed", {"texts": ["one too many"]})
    assert full.status_code == 503 and full.headers["retry-after"] == "1" and "queue is full" in full.json()["error"]
    assert httpx.get(r.url + "/healthz", timeout=2).status_code == 200  # the loop answers while a forward runs
    assert _metric(r, 'bertkit_queue_depth{endpoint="embed"}') == 2

    r.server.should_exit = True  # as on SIGTERM: stop accepting, finish what is in flight
    time.sleep(0.3)
    with pytest.raises(httpx.ConnectError):
        httpx.get(r.url + "/healthz", timeout=2)
    backend.release.set()
    for t in threads:
        t.join(30)
    r.thread.join(30)
    assert not r.thread.is_alive()
    assert [results[i].status_code for i in range(3)] == [200, 200, 200]
    assert [results[i].json()["results"][0]["embedding"] for i in range(3)] == [[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]]


def test_metrics_count_what_was_sent():
    backend = GatedBackend()
    backend.release.set()
    r = Running(config("unused", max_wait_ms=0), load=lambda: backend)
    try:
        for n in (1, 2, 3, 1, 2):
            assert post(r, "embed", {"texts": ["t"] * n}).status_code == 200
        for bad in (b"{", {"texts": [""]}):
            assert post(r, "embed", bad).status_code == 422
        text = httpx.get(r.url + "/metrics").text
    finally:
        r.stop()
    for line in [
                 'bertkit_requests_total{code="200",path="/v1/embed"} 5', 'bertkit_requests_total{code="422",path="/v1/embed"} 2',
                 'bertkit_errors_total{code="422",path="/v1/embed"} 2', 'bertkit_texts_total{endpoint="embed"} 9',
                 'bertkit_request_duration_seconds_count{path="/v1/embed"} 7', 'bertkit_batch_size_sum{endpoint="embed"} 9',
                 'bertkit_queue_depth{endpoint="embed"} 0', "bertkit_inflight_requests 1", "bertkit_ready 1",
                 "# TYPE bertkit_request_duration_seconds histogram"]:
        assert re.search(rf"^{re.escape(line)}(\.0+)?$", text, re.M), line
    buckets = [int(v) for v in re.findall(r'^bertkit_request_duration_seconds_bucket\{le="[^"]+",path="/v1/embed"\} (\d+)\.0$', text, re.M)]
    assert buckets == sorted(buckets) and buckets[-1] == 7  # cumulative, +Inf = count


# ---- start-up problems and the command -------------------------------------------------------------


def test_load_failure_stops_the_server_with_its_error():
    def load():
        raise BertkitError("model.safetensors is truncated.")

    r = Running(config("unused"), load=load, wait_ready=False)
    r.thread.join(30)
    assert not r.thread.is_alive() and r.state.load_error == "loading the model failed: model.safetensors is truncated."


def test_command_line(tmp_path, capsys):
    parser = build_parser()
    if "serve" not in parser._subparsers._group_actions[0].choices:  # until cli.py registers it
        add_serve_parser(parser._subparsers._group_actions[0])
    a = parser.parse_args(["serve", "some/dir"])
    assert (a.host, a.port, a.backend, a.bf16, a.max_batch, a.max_wait_ms, a.max_queue) == ("127.0.0.1", 8000, "torch", False, 32, 5.0, 256)
    with pytest.raises(BertkitError, match="does not exist"):
        make_server(config(tmp_path / "missing"))
    with pytest.raises(BertkitError, match="--max-batch must be at least 1"):
        make_server(config(tmp_path, max_batch=0))
    with pytest.raises(BertkitError, match="--bf16 applies to --backend torch|--backend onnx needs"):
        backend_factory(tmp_path, "onnx", bf16=True)
    busy = make_server(config(tmp_path), load=lambda: GatedBackend())[1]
    with pytest.raises(BertkitError, match="cannot listen on 127.0.0.1"):
        make_server(ServeConfig(str(tmp_path), port=busy.getsockname()[1]), load=lambda: GatedBackend())
    busy.close()


@pytest.mark.heavy
def test_token_budget_batches_never_exceed_it_and_each_request_gets_its_answer(minilm_dir):
    """--max-batch-tokens 64 under 64 concurrent clients: no batch holds more tokens than the budget (one request
    alone may: it is never split), and every request gets its own rows."""
    r = Running(config(minilm_dir, max_batch_tokens=64, max_wait_ms=2))
    try:
        texts = [[f"client {i} sends sentence {j} about number {i * 3 + j}" for j in range(1 + i % 3)] for i in range(64)]

        async def all_at_once():
            async with httpx.AsyncClient(base_url=r.url, timeout=60, limits=httpx.Limits(max_connections=64)) as c:
                return await asyncio.gather(*(c.post("/v1/embed", json={"texts": ts}) for ts in texts))

        answers = asyncio.run(all_at_once())
        batcher = r.state.batchers["embed"]
        tok = Tokenizer.from_pretrained(minilm_dir)
        biggest_request = max(sum(len(tok.encode(t)) for t in ts) for ts in texts)
        assert batcher.largest_tokens <= max(64, biggest_request)
    finally:
        r.stop()
    model = BertModel.from_pretrained(minilm_dir, new_heads=True, verbose=False)
    flat = [t for ts in texts for t in ts]
    want = dict(zip(flat, encode_sentences(model, tok, flat, max_length=256)))
    for ts, a in zip(texts, answers):
        rows = a.json()["results"]
        assert a.status_code == 200 and [x["text"] for x in rows] == ts
        assert max(np.abs(np.array(x["embedding"]) - want[t]).max() for x, t in zip(rows, ts)) < 1e-5


class FailingBackend(GatedBackend):
    """Raises on the text "boom" (a bug on one odd input): the batch holding it fails."""

    source = "failing"
    encoder = types.SimpleNamespace(config=types.SimpleNamespace(hidden_size=2, vocab_size=100))  # what /v1/embeddings reads
    pooling, width = ("mean",), 2

    def run(self, endpoint, items, lengths):
        if "boom" in items:
            raise RuntimeError("cannot run boom")
        return [{"text": t, "embedding": np.array([len(t), 1.0], dtype=np.float32), "truncated": False} for t in items]


@pytest.mark.heavy
def test_a_failing_batch_costs_only_the_request_the_model_cannot_run():
    """The batch is rerun one request at a time: the bad one gets a 500 with one sentence in each API's error shape,
    its batch-mates and later requests their answers, /readyz stays true, /metrics counts the failures."""
    r = Running(config("unused", max_wait_ms=300), load=FailingBackend)
    try:
        async def together():
            async with httpx.AsyncClient(base_url=r.url, timeout=30) as c:
                return await asyncio.gather(c.post("/v1/embed", json={"texts": ["fine"]}), c.post("/v1/embed", json={"texts": ["boom"]}),
                                            c.post("/v1/embed", json={"texts": ["also fine", "ok"]}))

        ok1, bad, ok2 = asyncio.run(together())
        later = post(r, "embed", {"texts": ["later"]})
        openai_bad = httpx.post(r.url + "/v1/embeddings", json={"input": "boom"})
        tei_bad = httpx.post(r.url + "/embed", json={"inputs": "boom"})
        ready = httpx.get(r.url + "/readyz").status_code
        failures = _metric(r, 'bertkit_batch_failures_total{endpoint="embed"}')
    finally:
        r.stop()
    assert [ok1.status_code, ok2.status_code, later.status_code] == [200, 200, 200]
    assert [x["text"] for x in ok2.json()["results"]] == ["also fine", "ok"]
    assert bad.status_code == 500 and bad.json()["error"].startswith("the model failed on this request (RuntimeError: cannot run boom)")
    assert openai_bad.status_code == 500 and openai_bad.json()["error"]["type"] == "server_error"
    assert tei_bad.status_code == 500 and tei_bad.json()["error_type"] == "Backend"
    assert ready == 200
    assert failures == 4  # the batch of three, boom alone, and the two single-request batches after
