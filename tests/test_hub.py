"""Hub names: huggingface_hub's download into the standard cache, with a small fake hub on
127.0.0.1 standing in for huggingface.co through HF_ENDPOINT; the cache read by hand without
huggingface_hub; and local paths (a run directory, a path that is not there). A download is used
whole or not at all: a missing shard or a connection cut mid-file is an error, never a model."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest
import torch
import transformers

import bertkit
from bertkit.io.hub import resolve
from conftest import randomise, save_hf, tiny_hf_config


class FakeHub(http.server.BaseHTTPRequestHandler):
    """The routes of huggingface.co that snapshot_download uses, over `root`/{org}/{name}/{revision}/:

    GET /api/models/{repo}/revision/{rev}: the revision's commit; GET /api/models/{repo}/tree/{commit}:
    its files; HEAD and GET /{repo}/resolve/{commit}/{file}: a file, with the X-Repo-Commit and ETag
    headers the client requires. A commit is a hash of the files, so a changed file is a new commit.
    Errors carry the X-Error-Code the client tells a missing repo, revision and file apart by.
    """

    root: Path
    seen: list  # (method, path, Authorization header) of every request
    hidden: set  # files the tree lists but the server answers 404
    cut: dict  # file -> cut yet: its first GET stops after half the bytes, later ones (the client's retries) get 503

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.answer(body=True)

    def do_HEAD(self):
        self.answer(body=False)

    def answer(self, body: bool) -> None:
        self.seen.append((self.command, self.path, self.headers.get("Authorization")))
        parts = [urllib.parse.unquote(p) for p in urllib.parse.urlsplit(self.path).path.strip("/").split("/")]
        api = parts[:2] == ["api", "models"]
        parts = parts[2:] if api else parts
        repo = self.root.joinpath(*parts[:2])
        if len(parts) < 4 or not repo.is_dir():
            return self.send(404, b"", {"X-Error-Code": "RepoNotFound"}, body)
        kind, rev, file = parts[2], parts[3], "/".join(parts[4:])
        revisions = {d.name: d for d in repo.iterdir()}
        revisions |= {commit_of(d): d for d in list(revisions.values())}
        if rev not in revisions:
            return self.send(404, b"", {"X-Error-Code": "RevisionNotFound"}, body)
        d = revisions[rev]
        commit, files = commit_of(d), sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())
        if api and kind == "revision":
            info = {"id": "/".join(parts[:2]), "sha": commit, "siblings": [{"rfilename": f} for f in files]}
            return self.send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)
        if api and kind == "tree":
            tree = [{"type": "file", "path": f, "size": (d / f).stat().st_size, "oid": sha1(d / f)} for f in files]
            return self.send(200, json.dumps(tree).encode(), {"Content-Type": "application/json"}, body)
        if file not in files or file in self.hidden:
            return self.send(404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, body)
        data = (d / file).read_bytes()
        headers = {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
        if body and file in self.cut:
            if self.cut[file]:
                return self.send(503, b"", {}, body)
            self.cut[file] = True
            return self.send(200, data, headers, body, stop=len(data) // 2)
        self.send(200, data, headers, body)

    def send(self, status: int, data: bytes, headers: dict, body: bool, stop: int | None = None) -> None:
        self.send_response(status)
        for k, v in (headers | {"Content-Length": str(len(data))}).items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(data[:stop])  # stop: the connection closes with the rest unsent


def commit_of(d: Path) -> str:
    h = hashlib.sha1()
    for f in sorted(p for p in d.rglob("*") if p.is_file()):
        h.update(f.relative_to(d).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def sha1(f: Path) -> str:
    return hashlib.sha1(f.read_bytes()).hexdigest()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A FakeHub on a free port as HF_ENDPOINT, an empty HF_HOME, online, no token of the user's."""
    constants = pytest.importorskip("huggingface_hub.constants")
    root = tmp_path / "served"
    root.mkdir()
    handler = type("Hub", (FakeHub,), {"root": root, "seen": [], "hidden": set(), "cut": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def publish(repo: str, revision: str, fmt: str, seed: int = 0):
        model = randomise(transformers.BertModel(tiny_hf_config()), seed)
        save_hf(model, root / repo / revision, fmt)
        return model

    def stop():
        server.shutdown()
        server.server_close()  # the port refuses connections from now on

    handler.publish, handler.stop = staticmethod(publish), staticmethod(stop)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    # conftest made huggingface_hub offline at its import; the fake hub is the network here
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    yield handler
    stop()


def cache_of(tmp_path: Path, repo: str) -> Path:
    return (tmp_path / "hf-home" / "hub" / ("models--" + repo.replace("/", "--"))).resolve()


def assert_weights(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    back = bertkit.weights.to_hf({f"bert.{k}": v for k, v in ours.state_dict().items()}, ours.config, base_model=True)
    for k, v in theirs.state_dict().items():  # every weight of the served model, by its own name
        assert torch.equal(back[k], v), k


def test_download_then_cache_with_the_hub_gone(hub, tmp_path, monkeypatch):
    theirs = hub.publish("org/tiny", "main", "sharded")
    served = hub.root / "org" / "tiny" / "main"
    (served / "pytorch_model.bin").write_bytes(b"a second format, never fetched")
    (served / "README.md").write_text("not fetched either")
    model = bertkit.BertModel.from_pretrained("org/tiny")
    snap = model.source_dir
    assert snap.parent == cache_of(tmp_path, "org/tiny") / "snapshots"
    assert sorted(p.name for p in snap.iterdir()) == sorted(
        p.name for p in served.iterdir() if p.name not in ("pytorch_model.bin", "README.md")
    )
    assert_weights(model, theirs)
    assert not list(cache_of(tmp_path, "org/tiny").rglob("*.incomplete"))
    hub.stop()
    assert bertkit.BertModel.from_pretrained("org/tiny").source_dir == snap  # the cache answers now
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve("org/tiny") == snap


def test_a_revision_reaches_the_hub(hub):
    main = hub.publish("org/tiny", "main", "safetensors", seed=0)
    v2 = hub.publish("org/tiny", "v2", "safetensors", seed=1)
    snap = resolve("org/tiny", revision="v2")
    assert ("GET", "/api/models/org/tiny/revision/v2", None) in hub.seen
    assert_weights(bertkit.BertModel.from_pretrained(snap), v2)
    assert_weights(bertkit.BertModel.from_pretrained(resolve("org/tiny")), main)
    assert resolve("org/tiny") != snap
    with pytest.raises(bertkit.BertkitError, match="the hub model org/tiny has no revision v9"):
        resolve("org/tiny", revision="v9")


def test_the_token_is_sent(hub, monkeypatch):
    hub.publish("org/tiny", "main", "safetensors")
    resolve("org/tiny", token="hf_argument")
    assert {method for method, _, _ in hub.seen} == {"GET", "HEAD"}
    assert {auth for _, _, auth in hub.seen} == {"Bearer hf_argument"}
    hub.seen.clear()
    monkeypatch.setenv("HF_TOKEN", "hf_environment")  # no argument: huggingface_hub's own default
    resolve("org/tiny")
    assert hub.seen and {auth for _, _, auth in hub.seen} == {"Bearer hf_environment"}


def test_unknown_hub_model_and_offline(hub, monkeypatch):
    with pytest.raises(bertkit.BertkitError, match="the hub has no model org/missing"):
        bertkit.BertModel.from_pretrained("org/missing")
    hub.publish("org/other", "main", "safetensors")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.seen.clear()
    with pytest.raises(bertkit.BertkitError, match="HF_HUB_OFFLINE"):
        bertkit.BertModel.from_pretrained("org/other")
    assert hub.seen == []  # offline: nothing is sent


@pytest.mark.heavy
@pytest.mark.parametrize("how", ["not in the repository", "listed but 404"])
def test_a_missing_shard_is_an_error_until_it_appears(hub, tmp_path, monkeypatch, how):
    theirs = hub.publish("org/tiny", "main", "sharded")
    served = hub.root / "org" / "tiny" / "main"
    shard = sorted(set(json.loads((served / "model.safetensors.index.json").read_text())["weight_map"].values()))[-1]
    if how == "listed but 404":
        hub.hidden.add(shard)
    else:
        (served / shard).rename(tmp_path / shard)
    with pytest.raises(bertkit.BertkitError, match=rf"(?=.*org/tiny)(?=.*{re.escape(shard)})"):
        resolve("org/tiny")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nor is what did arrive used later as if complete
    with pytest.raises(bertkit.BertkitError, match=rf"org/tiny is incomplete.*{re.escape(shard)}"):
        resolve("org/tiny")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    hub.hidden.clear()
    if (tmp_path / shard).exists():
        (tmp_path / shard).rename(served / shard)
    assert_weights(bertkit.BertModel.from_pretrained("org/tiny"), theirs)


@pytest.mark.heavy
def test_a_download_cut_mid_file_is_never_used(hub, tmp_path, monkeypatch):
    theirs = hub.publish("org/single", "main", "safetensors")
    hub.cut["model.safetensors"] = False
    with pytest.raises(bertkit.BertkitError, match="downloading org/single from the hub failed"):
        resolve("org/single")
    cache = cache_of(tmp_path, "org/single")
    assert any(m == "GET" and p.endswith("/model.safetensors") for m, p, _ in hub.seen)  # it was cut, not skipped
    assert not list(cache.rglob("model.safetensors")) and not list(cache.rglob("*.incomplete"))
    assert [p.name for p in cache.glob("snapshots/*/*")] == ["config.json"]  # what did arrive, a partial snapshot
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(bertkit.BertkitError, match="org/single is incomplete.*model.safetensors"):
        resolve("org/single")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    hub.cut.clear()
    assert_weights(bertkit.BertModel.from_pretrained("org/single"), theirs)


@pytest.mark.parametrize("with_hub", [True, False], ids=["huggingface_hub", "by-hand"])
def test_huggingface_cache_layout(tmp_path, monkeypatch, with_hub):
    if not with_hub:
        monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # `import huggingface_hub` fails
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    repo = tmp_path / "hub" / "models--org--cached"
    snap = repo / "snapshots" / ("ab" * 20)
    save_hf(randomise(transformers.BertModel(tiny_hf_config())), snap, "safetensors")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("ab" * 20)
    assert bertkit.BertModel.from_pretrained("org/cached").source_dir.resolve() == snap.resolve()
    (snap / "model.safetensors").unlink()
    with pytest.raises(bertkit.BertkitError, match="org/cached is incomplete: a weights file"):
        resolve("org/cached")


def test_without_huggingface_hub_a_download_asks_for_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(bertkit.BertkitError, match="pip install huggingface_hub"):
        resolve("org/absent")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(bertkit.BertkitError, match="HF_HUB_OFFLINE"):
        resolve("org/absent")


def test_a_run_directory_resolves_to_its_model(tmp_path):
    out = tmp_path / "run"
    theirs = save_hf(randomise(transformers.BertModel(tiny_hf_config())), out / "model", "safetensors")
    (out / "train_config.json").write_text("{}")
    model = bertkit.BertModel.from_pretrained(out)
    assert model.source_dir == theirs == resolve(out)


def test_a_missing_path_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(bertkit.BertkitError, match="does not exist"):
        bertkit.BertModel.from_pretrained(tmp_path / "no" / "such" / "dir")
    with pytest.raises(bertkit.BertkitError, match="the model path is empty"):
        resolve(" ")
