"""Hub names: the Hugging Face cache layout, and a real download over HTTP (a local server
standing in for the hub through HF_ENDPOINT), complete or not at all."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest
import transformers

import bertkit
from conftest import randomise, save_hf, tiny_hf_config


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A directory served as https://huggingface.co is: /{name}/resolve/main/{file}."""
    root = tmp_path / "served"
    model = randomise(transformers.BertModel(tiny_hf_config()))
    save_hf(model, root / "org" / "tiny" / "resolve" / "main", "sharded")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("BERTKIT_CACHE", str(tmp_path / "cache"))
    yield model
    server.shutdown()


def test_download_then_cache(hub, tmp_path):
    model = bertkit.BertModel.from_pretrained("org/tiny")
    cached = tmp_path / "cache" / "org--tiny"
    assert model.source_dir == cached and (cached / "model.safetensors.index.json").is_file()
    assert not [p for p in cached.parent.iterdir() if p.name.startswith(".")]  # no temporary left
    for k, v in hub.state_dict().items():
        ours = bertkit.weights.from_hf({k: v}).state_dict
        (name,) = ours
        assert (model.state_dict()[name.removeprefix("bert.")] == v).all()
    (tmp_path / "served" / "org").rename(tmp_path / "served" / "gone")  # the cache answers now
    assert bertkit.BertModel.from_pretrained("org/tiny").source_dir == cached


def test_unknown_hub_model_and_offline(hub, monkeypatch):
    with pytest.raises(bertkit.BertkitError, match="the hub has no model org/missing"):
        bertkit.BertModel.from_pretrained("org/missing")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(bertkit.BertkitError, match="HF_HUB_OFFLINE"):
        bertkit.BertModel.from_pretrained("org/other")


def test_huggingface_cache_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    repo = tmp_path / "hub" / "models--org--cached"
    save_hf(randomise(transformers.BertModel(tiny_hf_config())), repo / "snapshots" / "abc123", "safetensors")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    assert bertkit.BertModel.from_pretrained("org/cached").source_dir == repo / "snapshots" / "abc123"


def test_a_missing_path_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(bertkit.BertkitError, match="does not exist"):
        bertkit.BertModel.from_pretrained(tmp_path / "no" / "such" / "dir")
