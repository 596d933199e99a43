"""Where a model name points: a local directory, a training run, or a model on the Hugging Face hub.

`resolve(path)` returns the checkpoint directory `path` names; `locate(path)` also returns the
weights file or TF prefix the user named inside it. This module owns:

- local paths: a checkpoint directory is used as is, a weights file or a TF prefix names its
  directory, and a training run's --out directory (no config.json, but model/config.json) names
  its model/. `revision` and `token` do not apply to them.
- hub names ("bert-base-uncased", "org/name"): `huggingface_hub.snapshot_download` fetches them
  into the standard Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub) at `revision` (a
  branch, tag or commit; the default branch if None) with `token` (else HF_TOKEN or the saved
  login, as huggingface_hub decides). Only the files bertkit reads are fetched: config.json, the
  tokenizer files, sentence_bert_config.json and one weights format (safetensors, else .bin),
  with every shard its index names.
- completeness: a snapshot is returned only when its config and all its weights are there. A
  missing file (a shard the index names, a file cut off mid-download) is an error naming it,
  never a partial model.
- HF_HUB_OFFLINE=1: the cache only, nothing is sent.
- without huggingface_hub (the optional `hub` extra) the cache is read by hand (the same layout),
  and a model that is not in it asks for the install.

Every failure is a `BertkitError` of one sentence. HF_ENDPOINT, HF_HOME, HF_HUB_CACHE and
HF_HUB_OFFLINE are read at each call, where huggingface_hub reads them once, at its import.
"""

from __future__ import annotations

import glob
import os
import re
import urllib.parse
from pathlib import Path

from ..errors import BertkitError
from .files import read_json

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
CONFIG = "config.json"
EXTRAS = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "sentence_bert_config.json")
# The weights formats bertkit reads, (single file, shard index), in the order it prefers them;
# only the first one a repository has is downloaded (many hold both, doubling the download).
FORMATS = (("model.safetensors", "model.safetensors.index.json"), ("pytorch_model.bin", "pytorch_model.bin.index.json"))
# The file checkpoint.read_checkpoint reads from a directory: the first of these present.
READ_ORDER = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin.index.json", "pytorch_model.bin")


def locate(path: str | os.PathLike, revision: str | None = None, token: str | None = None) -> tuple[Path, Path | None]:
    """(checkpoint directory, the weights file or TF prefix the user named in it, if any)."""
    p = Path(path).expanduser()
    if p.is_file():
        tf = re.match(r"(.*)\.(index|data-\d+-of-\d+)$", p.name)
        return p.parent, p.parent / tf.group(1) if tf else p
    if not p.exists() and p.parent.is_dir() and (p.parent / (p.name + ".index")).is_file():
        return p.parent, p  # a TF prefix: dir/bert_model.ckpt
    return resolve(path, revision=revision, token=token), None


def resolve(path: str | os.PathLike, revision: str | None = None, token: str | None = None) -> Path:
    """The checkpoint directory `path` names (see the module docstring)."""
    if not str(path).strip():
        raise BertkitError("the model path is empty.")
    p = Path(path).expanduser()
    if p.is_dir():
        return _run_model(p)
    if p.is_file():  # a weights file or a TF prefix's .index: its directory is the checkpoint
        return p.parent
    name = str(path)
    if p.parent.is_dir() and (p.parent / (p.name + ".index")).is_file():  # a TF prefix, dir/bert_model.ckpt
        return p.parent
    if not HUB_ID.match(name) or name.startswith("."):  # a path that is not there: the hub is not asked
        raise BertkitError(f"{name} does not exist.")
    try:
        from huggingface_hub import errors, snapshot_download
    except ImportError:
        return _from_cache(name, revision)
    return _download(snapshot_download, errors, name, revision, token)


def _run_model(d: Path) -> Path:
    """A training run's --out directory keeps its model in model/; any other directory is the checkpoint."""
    if not (d / CONFIG).is_file() and not (d / "bert_config.json").is_file() and (d / "model" / CONFIG).is_file():
        return d / "model"
    return d


# ---- The hub, through huggingface_hub ---------------------------------------------------


def _download(snapshot_download, errors, name: str, revision: str | None, token: str | None) -> Path:
    """The complete snapshot of `name`: config and tokenizer, one weights format, then the shards its index names."""
    fetch = _fetcher(snapshot_download, errors, name, token)
    snap = fetch(revision, [CONFIG, *EXTRAS, *FORMATS[0]])
    for later in FORMATS[1:]:
        if _weights(snap) is None:
            fetch(snap.name, list(later))  # snap.name is the commit: every file comes from the same one
    weights = _weights(snap)
    if weights is not None and weights.name.endswith(".index.json"):
        fetch(snap.name, [glob.escape(s) for s in sorted(_shards(weights))])  # patterns, so [ ] in a name is escaped
    _check(snap, name)
    return snap


def _fetcher(snapshot_download, errors, name: str, token: str | None):
    """fetch(revision, files) -> the snapshot directory, huggingface_hub's errors turned into one sentence each."""

    def fetch(revision: str | None, files: list[str]) -> Path:
        offline = _offline()
        try:
            return Path(
                snapshot_download(
                    name,
                    revision=revision,
                    token=token,
                    allow_patterns=files,
                    cache_dir=_cache_dir(),
                    local_files_only=offline,
                    endpoint=os.environ.get("HF_ENDPOINT") or None,
                )
            )
        # Most specific first: GatedRepoError is a RepositoryNotFoundError, LocalEntryNotFoundError (the
        # cache cannot answer) an EntryNotFoundError, and every answer of the hub an HfHubHTTPError.
        except errors.GatedRepoError:
            raise BertkitError(
                f"{name} is gated on the hub: accept its terms on its page, then pass a token or set HF_TOKEN."
            ) from None
        except errors.RepositoryNotFoundError:
            raise BertkitError(f"the hub has no model {name} (a private one needs a token or HF_TOKEN).") from None
        except errors.RevisionNotFoundError:
            raise BertkitError(f"the hub model {name} has no revision {revision}.") from None
        except errors.LocalEntryNotFoundError as e:
            raise _not_cached(name, e, offline or _caused_by(e, errors.OfflineModeIsEnabled)) from None
        except errors.EntryNotFoundError as e:  # listed by the hub, yet 404 when fetched
            raise BertkitError(f"the hub lists {_file_of(e)} in {name} but does not serve it (HTTP 404).") from None
        except errors.HfHubHTTPError as e:
            status = e.response.status_code if e.response is not None else "error"
            if status == 401:
                raise BertkitError(f"the hub refused the token given for {name} (HTTP 401).") from None
            raise BertkitError(f"downloading {name} from the hub failed: HTTP {status}.") from None
        except errors.HFValidationError as e:  # a name the hub cannot hold
            raise BertkitError(f"{name} is not a valid hub model name ({_first_line(e)}).") from None
        except _network_errors() as e:  # the connection cut mid-file, a size that does not match, a full disk
            raise BertkitError(f"downloading {name} from the hub failed ({type(e).__name__}: {_first_line(e)}).") from None

    return fetch


def _not_cached(name: str, e: Exception, offline: bool) -> BertkitError:
    """The sentence for huggingface_hub's "cannot use the cache": partial, offline, or the hub out of reach.

    offline: HF_HUB_OFFLINE as bertkit read it, or as huggingface_hub did at its import (it then refuses to send).
    """
    why = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached"
    partial = getattr(e, "snapshot_path", None)  # IncompleteSnapshotError: the cache lacks files the hub listed
    if partial is not None:
        what = _missing(Path(partial))
        what = f"{what} is missing" if what else "files the hub lists are missing"
        return BertkitError(f"the cached copy of {name} is incomplete ({what}) and {why}, so it cannot be completed.")
    if offline:
        return BertkitError(f"{name} is not a directory and not in the local Hugging Face cache (HF_HUB_OFFLINE is set).")
    cause = e.__cause__ or e
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    return BertkitError(
        f"{name} is not in the local Hugging Face cache and the hub at {endpoint} could not be reached "
        f"({type(cause).__name__}: {_first_line(cause)})."
    )


def _caused_by(e: BaseException | None, kind: type[BaseException]) -> bool:
    """Whether `kind` is in the `raise ... from` chain of `e` (huggingface_hub wraps the reason it gives up)."""
    while e is not None:
        if isinstance(e, kind):
            return True
        e = e.__cause__
    return False


def _file_of(e: Exception) -> str:
    """The repository file a 404 was about: the tail of .../resolve/{revision}/{file}."""
    url = urllib.parse.unquote(urllib.parse.urlsplit(str(getattr(getattr(e, "response", None), "url", ""))).path)
    return url.split("/resolve/", 1)[-1].split("/", 1)[-1] or "a file"


def _network_errors() -> tuple[type[BaseException], ...]:
    """OSError, and the HTTP client's errors (httpx2 for huggingface_hub 2, httpx for 1), which are not OSErrors."""
    kinds: list[type[BaseException]] = [OSError]
    for module in ("httpx2", "httpx"):
        try:
            kinds.append(__import__(module).HTTPError)
        except (ImportError, AttributeError):
            continue  # that client is not installed
    return tuple(kinds)


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0].rstrip(".") if lines else type(e).__name__


# ---- The cache, read by hand (no huggingface_hub) -------------------------------------------


def _from_cache(name: str, revision: str | None) -> Path:
    """The snapshot the Hugging Face cache holds for `name` at `revision`, when huggingface_hub is not installed."""
    snap = _cached_snapshot(name, revision)
    if snap is None and _offline():
        raise BertkitError(f"{name} is not a directory and not in the local Hugging Face cache (HF_HUB_OFFLINE is set).")
    if snap is None:
        raise BertkitError(
            f"{name} is not a directory and not in the local Hugging Face cache; `pip install huggingface_hub` to download it."
        )
    _check(snap, name)
    return snap


def _cached_snapshot(name: str, revision: str | None) -> Path | None:
    """models--org--name/snapshots/{commit}, the commit being `revision` itself or what refs/{revision} holds."""
    repo = _cache_dir() / ("models--" + name.replace("/", "--"))
    rev = revision or "main"
    ref = repo / "refs" / rev
    commit = rev if COMMIT.match(rev) else ref.read_text().strip() if ref.is_file() else None
    snap = repo / "snapshots" / commit if commit else None
    return snap if snap is not None and snap.is_dir() else None


def _cache_dir() -> Path:
    """The standard Hugging Face cache, by huggingface_hub's rule, read now."""
    hub = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if not hub:
        home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
        hub = os.path.join(home, "hub")
    return Path(os.path.expandvars(hub)).expanduser()


def _offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as huggingface_hub reads it, but now rather than at its import."""
    flags = (os.environ.get(v, "").strip().upper() for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(f in ("1", "ON", "YES", "TRUE") for f in flags)


# ---- Completeness ---------------------------------------------------------------------------


def _check(snap: Path, name: str) -> None:
    """A snapshot is used whole or not at all: what it lacks is an error, never a partial model."""
    what = _missing(snap)
    if what is not None:
        raise BertkitError(f"{name} is incomplete: {what} is missing from {snap}.")


def _missing(d: Path) -> str | None:
    """What directory `d` lacks to be loaded (the config, the weights, a shard), or None."""
    if not (d / CONFIG).is_file():
        return CONFIG
    weights = _weights(d)
    if weights is None:
        return "a weights file (model.safetensors, a shard index or pytorch_model.bin)"
    if weights.name.endswith(".index.json"):
        absent = [s for s in sorted(_shards(weights)) if not (d / s).is_file()]
        if absent:
            return f"shard {absent[0]} named in {weights.name}" + (f" (and {len(absent) - 1} more)" if len(absent) > 1 else "")
    return None


def _weights(d: Path) -> Path | None:
    """The weights file or shard index bertkit would read from `d`."""
    return next((d / w for w in READ_ORDER if (d / w).is_file()), None)


def _shards(index: Path) -> set[str]:
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise BertkitError(f"{index} is not a valid shard index: weight_map must map names to file names.")
    return set(weight_map.values())
