"""The clients people already use, against `bertkit serve` on loopback: the `openai` SDK's embeddings call,
`huggingface_hub.InferenceClient` on the TEI routes, TEI's /embed, /predict, /rerank, /tokenize, /info and
/health by hand, the API key, and each API's error bodies for bad input."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from test_serve import Running, config, quick_train, wait_for  # noqa: E402

from bertkit import BertModel, Tokenizer  # noqa: E402
from bertkit.serving.predict import encode_sentences, predict_texts  # noqa: E402

TEXTS = ["A man is eating food.", "Someone is playing the guitar loudly in the street tonight.", "ok"]


@pytest.fixture(scope="module")
def minilm_server(minilm_dir):
    r = Running(config(minilm_dir, served_name="minilm"))
    yield r
    r.stop()


def want_vectors(minilm_dir, texts):
    model, tok = BertModel.from_pretrained(minilm_dir, new_heads=True, verbose=False), Tokenizer.from_pretrained(minilm_dir)
    return encode_sentences(model, tok, texts, normalize=True, max_length=256)


def cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.mark.heavy
def test_the_openai_sdk_gets_bertkits_and_sentence_transformers_vectors(minilm_server, minilm_dir):
    openai = pytest.importorskip("openai")
    st = pytest.importorskip("sentence_transformers")
    client = openai.OpenAI(base_url=minilm_server.url + "/v1", api_key="unused", max_retries=0)
    out = client.embeddings.create(model="minilm", input=TEXTS)
    got = np.array([d.embedding for d in out.data])
    assert [d.index for d in out.data] == [0, 1, 2] and out.model == "minilm"
    assert cosines(got, want_vectors(minilm_dir, TEXTS)).min() > 0.99999
    assert cosines(got, st.SentenceTransformer(str(minilm_dir), device="cpu").encode(TEXTS)).min() > 0.99999
    assert np.allclose(np.linalg.norm(got, axis=-1), 1, atol=1e-5)  # unit length, as OpenAI's
    tok = Tokenizer.from_pretrained(minilm_dir)
    assert out.usage.prompt_tokens == sum(len(tok.encode(t)) for t in TEXTS) == out.usage.total_tokens
    one = client.embeddings.create(model="minilm", input=TEXTS[0])
    assert len(one.data) == 1 and cosines(one.data[0].embedding, got[0]) > 0.99999
    small = client.embeddings.create(model="minilm", input=TEXTS, dimensions=64)
    cut = got[:, :64] / np.linalg.norm(got[:, :64], axis=-1, keepdims=True)
    assert np.abs(np.array([d.embedding for d in small.data]) - cut).max() < 1e-5  # the first 64, renormalised
    raw = httpx.post(minilm_server.url + "/v1/embeddings", json={"input": TEXTS, "encoding_format": "base64"}).json()
    decoded = np.array([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in raw["data"]])
    assert np.abs(decoded - got).max() < 1e-6
    ids = client.embeddings.create(model="minilm", input=[tok.encode(t)[1:-1] for t in TEXTS])  # token ids, no specials
    assert cosines(np.array([d.embedding for d in ids.data]), got).min() > 0.9999
    assert client.models.list().data[0].id == "minilm"


def test_openai_errors_have_openais_shape(minilm_server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=minilm_server.url + "/v1", api_key="unused", max_retries=0)
    for kw, message in ((dict(input=[]), "input must be a string or a non-empty list"),
                        (dict(input=["ok", ""]), r"input\[1\] is empty"),
                        (dict(input="ok", dimensions=5000), "dimensions must be a whole number from 1 to the model's 384"),
                        (dict(input="ok", encoding_format="hex"), "encoding_format must be 'float' or 'base64'")):
        with pytest.raises(openai.BadRequestError, match=message) as e:
            client.embeddings.create(model="minilm", **kw)
        assert e.value.status_code == 400 and e.value.body["type"] == "invalid_request_error"
    r = httpx.post(minilm_server.url + "/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]


def test_tei_routes_and_the_huggingface_client(minilm_server, minilm_dir, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(hub.constants, "is_offline_mode", lambda: False)  # the suite runs offline; this server is local
    url = minilm_server.url
    want = want_vectors(minilm_dir, TEXTS)
    got = np.array(httpx.post(url + "/embed", json={"inputs": TEXTS}).json())
    assert cosines(got, want).min() > 0.99999 and np.allclose(np.linalg.norm(got, axis=-1), 1, atol=1e-5)
    plain = np.array(httpx.post(url + "/embed", json={"inputs": TEXTS[0], "normalize": False}).json())
    assert plain.shape == (1, 384) and abs(np.linalg.norm(plain) - 1) > 1e-3  # not scaled
    client = hub.InferenceClient(base_url=url)
    assert cosines(client.feature_extraction(TEXTS[1]), want[1:2]).min() > 0.99999
    assert cosines(hub.InferenceClient(base_url=url + "/embed").feature_extraction(TEXTS[0]), want[:1]).min() > 0.99999
    long = "The quick brown fox " * 80
    r = httpx.post(url + "/embed", json={"inputs": [long]})
    assert r.status_code == 413 and r.json()["error_type"] == "Validation" and "truncate: true" in r.json()["error"]
    assert httpx.post(url + "/embed", json={"inputs": [long], "truncate": True}).status_code == 200
    tok = Tokenizer.from_pretrained(minilm_dir)
    pieces = httpx.post(url + "/tokenize", json={"inputs": "Hello world"}).json()[0]
    assert [p["id"] for p in pieces] == tok.encode("Hello world") and pieces[0]["special"] and pieces[0]["start"] is None
    assert pieces[1] == {"id": tok.encode("Hello world")[1], "text": "hello", "special": False, "start": 0, "stop": 5}
    info = httpx.get(url + "/info").json()
    assert info["model_type"] == {"embedding": {"pooling": "mean"}} and info["max_input_length"] == 256 and info["model_id"] == "minilm"
    assert httpx.get(url + "/health").status_code == 200
    for path, body in (("/predict", {"inputs": "x"}), ("/rerank", {"query": "q", "texts": ["a"]})):
        r = httpx.post(url + path, json=body)
        assert r.status_code == 422 and "does not serve classify" in r.json()["error"]
    r = httpx.post(url + "/embed", json={"inputs": []})
    assert r.status_code == 422 and r.json() == {"error": "inputs must be a string or a non-empty list of strings.", "error_type": "Validation"}


@pytest.fixture(scope="module")
def pair_model(tmp_path_factory):
    from bertkit.data.datasets import load_dataset

    d = tmp_path_factory.mktemp("pairs")
    reviews = load_dataset("reviews-zh")["train"][:120]
    with (d / "pairs.jsonl").open("w", encoding="utf-8") as f:
        for a, b in zip(reviews[0::2], reviews[1::2]):
            f.write(json.dumps({"sentence1": a.text, "sentence2": b.text, "label": int(a.label == b.label)}, ensure_ascii=False) + "\n")
    return quick_train(d / "run", task="pair", train=str(d / "pairs.jsonl"), dev=str(d / "pairs.jsonl"))


@pytest.mark.heavy
def test_rerank_and_predict_on_a_pair_classifier(pair_model):
    from bertkit.serving.load import load_finetuned

    r = Running(config(pair_model))
    try:
        texts = ["质量很好", "很差", "一般般", "物流很快"]
        ranked = httpx.post(r.url + "/rerank", json={"query": "不错", "texts": texts, "return_text": True}).json()
        pred = httpx.post(r.url + "/predict", json={"inputs": [["不错", "很好"], ["差", "好"]]}).json()
        one = httpx.post(r.url + "/predict", json={"inputs": ["不错", "很好"]}).json()
        bad = httpx.post(r.url + "/predict", json={"inputs": "a single text"})
    finally:
        r.stop()
    model, tok = load_finetuned(pair_model, precision="fp32")
    want = predict_texts(model, tok, [["不错", t] for t in texts])
    last = list(want[0]["probabilities"])[-1]
    scores = sorted(((w["probabilities"][last], i) for i, w in enumerate(want)), reverse=True)
    assert [x["index"] for x in ranked] == [i for _, i in scores] and [x["text"] for x in ranked] == [texts[i] for _, i in scores]
    assert all(abs(x["score"] - s) < 1e-5 for x, (s, _) in zip(ranked, scores))
    assert len(pred) == 2 and pred[0][0]["score"] >= pred[0][-1]["score"] and {d["label"] for d in pred[0]} == set(want[0]["probabilities"])
    assert isinstance(one, list) and isinstance(one[0], dict)  # a single pair: one list of labels
    assert bad.status_code == 422 and "classifies pairs" in bad.json()["error"]


def test_the_api_key(minilm_dir, monkeypatch):
    openai = pytest.importorskip("openai")
    r = Running(config(minilm_dir, api_key="s3cret"), wait_ready=False)
    try:
        from test_serve import wait_for

        wait_for(lambda: httpx.get(r.url + "/readyz", headers={"authorization": "Bearer s3cret"}).status_code == 200, "the model")
        assert httpx.get(r.url + "/health").status_code == 200 and httpx.get(r.url + "/healthz").status_code == 200  # open
        for path in ("/readyz", "/metrics", "/info"):
            assert httpx.get(r.url + path).status_code == 401
        assert httpx.post(r.url + "/v1/embed", json={"texts": ["a"]}).status_code == 401
        wrong = httpx.post(r.url + "/embed", json={"inputs": "a"}, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error_type"] == "Unauthorized"
        assert httpx.post(r.url + "/embed", json={"inputs": "a"}, headers={"x-api-key": "s3cret"}).status_code == 200
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=r.url + "/v1", api_key="nope", max_retries=0).embeddings.create(model="m", input="a")
        assert len(openai.OpenAI(base_url=r.url + "/v1", api_key="s3cret", max_retries=0).embeddings.create(model="m", input="a").data) == 1
    finally:
        r.stop()


def test_metrics_carry_the_process_and_the_schema_its_constraints(minilm_server):
    text = httpx.get(minilm_server.url + "/metrics").text
    rss = float(next(line.split()[1] for line in text.splitlines() if line.startswith("process_resident_memory_bytes ")))
    cpu = float(next(line.split()[1] for line in text.splitlines() if line.startswith("process_cpu_seconds_total ")))
    assert rss > 50e6 and cpu > 0
    schema = httpx.get(minilm_server.url + "/openapi.json").json()
    texts = next(v for k, v in schema["components"]["schemas"].items() if k.startswith("EmbedIn"))["properties"]["texts"]
    assert texts["minItems"] == 1 and texts["items"]["minLength"] == 1
    paths = schema["paths"]
    assert {"/v1/embeddings", "/v1/models", "/embed", "/tokenize", "/info", "/health"} <= set(paths)
    assert not {"/rerank", "/predict"} & set(paths)  # an encoder does not serve them: the document lists what the model does


SCHEMATHESIS_CONFIG = """
[checks.positive_data_acceptance]  # 413: an input longer than the model's max_length with truncate false (TEI's answer,
expected-statuses = ["2XX", "401", "403", "404", "409", "413", "429"]  # which a schema cannot say in characters)
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "413", "422", "428"]  # 413: too many inputs, as documented
"""


def run_schemathesis(url: str, tmp_path, *args: str) -> str:
    """schemathesis' CLI against the server's own /openapi.json, every default check, a fixed seed, a bounded run."""
    pytest.importorskip("schemathesis")
    import subprocess
    import sys

    (tmp_path / "schemathesis.toml").write_text(SCHEMATHESIS_CONFIG)
    code = "import sys; from schemathesis.cli import schemathesis; sys.argv[0] = 'st'; sys.exit(schemathesis())"
    out = subprocess.run([sys.executable, "-c", code, "--config-file", str(tmp_path / "schemathesis.toml"), "run", url + "/openapi.json",
                          "--max-examples", "25", "--seed", "7", *args], capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert out.returncode == 0 and "No issues found" in out.stdout, out.stdout[-20000:] + out.stderr[-2000:]
    return int(re.search(r"Tested: (\d+)", out.stdout).group(1))


@pytest.mark.heavy
def test_schemathesis_finds_nothing_against_an_encoder(minilm_server, tmp_path):
    """Bodies generated from the document, valid and invalid: no 5xx, every answer's status, type and body as documented,
    valid bodies accepted, invalid ones refused."""
    assert run_schemathesis(minilm_server.url, tmp_path) >= 10  # operations tested


@pytest.mark.heavy
def test_schemathesis_finds_nothing_against_a_pair_classifier_behind_a_key(pair_model, tmp_path):
    r = Running(config(pair_model, api_key="k3y"), wait_ready=False)
    try:
        wait_for(lambda: httpx.get(r.url + "/readyz", headers={"x-api-key": "k3y"}).status_code == 200, "the model to load")
        schema = httpx.get(r.url + "/openapi.json", headers={"Authorization": "Bearer k3y"}).json()
        assert {"/rerank", "/predict"} <= set(schema["paths"]) and "/embed" not in schema["paths"]  # only what the model serves
        assert run_schemathesis(r.url, tmp_path, "-H", "Authorization: Bearer k3y") >= 10
    finally:
        r.stop()
