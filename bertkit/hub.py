"""Where a model name points: a local directory, the Hugging Face cache, or a download.

`resolve("path/to/dir")` returns the directory. `resolve("bert-base-uncased")` or
`resolve("org/name")` looks in the local Hugging Face cache (what `huggingface_hub` wrote,
under $HF_HOME/hub) and otherwise downloads the files a BERT checkpoint needs from
$HF_ENDPOINT (https://huggingface.co by default) into ~/.cache/bertkit, with the standard
library only. HF_HUB_OFFLINE=1 forbids the download.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .errors import BertkitError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
CONFIGS = ("config.json",)
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
TOKENIZER = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def locate(path: str | os.PathLike) -> tuple[Path, Path | None]:
    """(checkpoint directory, the weights file or TF prefix the user named in it, if any)."""
    p = Path(path).expanduser()
    if p.is_file():
        tf = re.match(r"(.*)\.(index|data-\d+-of-\d+)$", p.name)
        return p.parent, p.parent / tf.group(1) if tf else p
    if not p.exists() and p.parent.is_dir() and (p.parent / (p.name + ".index")).is_file():
        return p.parent, p  # a TF prefix: dir/bert_model.ckpt
    return resolve(path), None


def resolve(path: str | os.PathLike) -> Path:
    """The checkpoint directory `path` names (see the module docstring)."""
    if not str(path).strip():
        raise BertkitError("the model path is empty.")
    p = Path(path).expanduser()
    if p.is_dir():
        return p
    if p.is_file():  # a weights file or a TF prefix's .index: its directory is the checkpoint
        return p.parent
    name = str(path)
    if p.parent.is_dir() and list(p.parent.glob(p.name + ".index")):  # a TF prefix, dir/bert_model.ckpt
        return p.parent
    if not HUB_ID.match(name) or name.startswith("."):
        raise BertkitError(f"{name} does not exist.")
    cached = _hf_cache(name)
    if cached is not None:
        return cached
    if os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on"):
        raise BertkitError(f"{name} is not a directory and not in the local Hugging Face cache (HF_HUB_OFFLINE is set).")
    try:
        return download(name)
    except BertkitError as e:
        raise BertkitError(f"{name} is not a local directory, and {e}") from None


def _hf_cache(name: str) -> Path | None:
    """The snapshot huggingface_hub stored for `name`, if one holds a config."""
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    repo = home / "hub" / ("models--" + name.replace("/", "--"))
    ref = repo / "refs" / "main"
    snaps = [repo / "snapshots" / ref.read_text().strip()] if ref.is_file() else sorted((repo / "snapshots").glob("*"))
    for snap in snaps:
        if (snap / "config.json").is_file():
            return snap
    return None


def _fetch(url: str, dst: Path) -> bool:
    """Download url to dst; False if the hub says it does not exist (404)."""
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(dst, "wb") as f:
            shutil.copyfileobj(r, f, length=1 << 20)
        return True
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return False
        raise BertkitError(f"downloading {url} failed: HTTP {e.code}.") from None
    except (urllib.error.URLError, OSError) as e:
        raise BertkitError(f"{url} could not be downloaded ({e}).") from None


def download(name: str) -> Path:
    """Fetch config, weights and tokenizer files of hub model `name`; the cache dir appears complete or not at all."""
    cache = Path(os.environ.get("BERTKIT_CACHE", Path.home() / ".cache" / "bertkit")) / name.replace("/", "--")
    if (cache / "config.json").is_file():
        return cache
    base = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/") + f"/{name}/resolve/main/"
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
    try:
        if not _fetch(base + "config.json", tmp / "config.json"):
            raise BertkitError(f"the hub has no model {name}.")
        for w in WEIGHTS:
            if _fetch(base + w, tmp / w):
                if w.endswith(".index.json"):
                    shards = set(json.loads((tmp / w).read_text())["weight_map"].values())
                    for s in sorted(shards):
                        _fetch(base + s, tmp / s)
                break
        else:
            raise BertkitError(f"hub model {name} has no model.safetensors nor pytorch_model.bin.")
        for t in TOKENIZER:
            _fetch(base + t, tmp / t)
        os.replace(tmp, cache)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cache
