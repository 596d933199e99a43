"""Files: reading user data with errors that name the file and the line, and writing atomically.

Reading: plain text, one item per line (what `bertkit embed` reads), and JSON objects (configs).
Writing: every output bertkit makes appears complete or not at all (`write_atomic` for a file,
`atomic_dir` for a new directory, `replace_dir` for one replaced in place, as checkpoints are).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import BertkitError


def read_lines(path: str | Path, allow_empty: bool = False) -> list[str]:
    """The lines of a UTF-8 text file, without line ends.

    A non-UTF-8 line or (unless allow_empty) an empty line is an error naming its number;
    a final newline does not make an extra empty line.
    """
    path = Path(path)
    if not path.is_file():
        raise BertkitError(f"{path} does not exist." if not path.exists() else f"{path} is not a file.")
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark is not part of the first line
        raw = raw[3:]
    chunks = raw.split(b"\n")
    if chunks and chunks[-1] == b"":
        chunks.pop()
    if not chunks:
        raise BertkitError(f"{path} is empty.")
    lines = []
    for n, chunk in enumerate(chunks, 1):
        try:
            line = chunk.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as e:
            raise BertkitError(f"{path} line {n} is not valid UTF-8 (byte {chunk[e.start]:#04x} at column {e.start + 1}).") from None
        if not line.strip() and not allow_empty:
            raise BertkitError(f"{path} line {n} is empty; give one text per line.")
        lines.append(line)
    return lines


def read_json(path: str | Path, kind: type = dict) -> Any:
    """A UTF-8 JSON file holding one object (config.json, tokenizer_config.json, ...); kind=list: one list (modules.json)."""
    path = Path(path)
    if not path.is_file():
        raise BertkitError(f"{path} does not exist.")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BertkitError(f"{path} is not valid JSON: {e}.") from None
    if not isinstance(d, kind):
        raise BertkitError(f"{path} must hold a JSON {'object' if kind is dict else 'list'}, not {type(d).__name__}.")
    return d


# ---- writing: every output appears complete or not at all ------------------------------------


@contextmanager
def staging(dst: Path):
    """A new private directory beside dst (same file system, so a rename moves it in one step);
    removed on the way out unless its contents were moved away."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class WriteFailed(BertkitError):
    """An output could not be written (a full disk, a quota, a read-only directory); what was there is unchanged."""


def write_atomic(path: str | os.PathLike, write) -> None:
    """write(file) into a temporary file beside `path`, then rename: never a half-written output."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.resolve().parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it private; an output is not
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_dir(dst, write) -> Path:
    """A new (or empty) directory dst: write(tmp) into a staging directory, then move it into place."""
    dst = check_new_dir(dst)
    with staging(dst) as tmp:
        write(tmp)
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it private; an output is not
        if dst.exists():
            dst.rmdir()
        os.replace(tmp, dst)
    return dst


def replace_dir(dst: Path, write) -> None:
    """write(tmp) into dst.tmp, then swap it in for an existing dst (a checkpoint): dst is always a complete
    old or new directory (between the two renames only dst.old exists; `existing_dir` finds it)."""
    tmp, old = dst.with_name(dst.name + ".tmp"), dst.with_name(dst.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        write(tmp)
    except OSError as e:  # a full disk, a quota, a read-only directory: dst stays as it was, the partial copy goes
        shutil.rmtree(tmp, ignore_errors=True)
        raise WriteFailed(f"writing {dst} failed ({e.strerror or e}); {dst} is unchanged.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dst.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(tmp, dst)
    shutil.rmtree(old, ignore_errors=True)


def save_safetensors(tensors: dict, path: Path, metadata: dict | None = None) -> None:
    """safetensors' save_file, its I/O failures (a full disk) raised as the OSError they are."""
    import re

    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as e:
        code = re.search(r"os error (\d+)", str(e))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from None


def sha256_of(path: Path) -> str:
    """The file's sha256 (hex), read in 4 MB pieces."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def existing_dir(dst: Path) -> Path | None:
    """dst, or the dst.old a replace_dir interrupted between its renames left."""
    old = dst.with_name(dst.name + ".old")
    return dst if dst.is_dir() else old if old.is_dir() else None


def check_new_dir(dst) -> Path:
    """An output directory must be new (or empty): bertkit never overwrites a checkpoint."""
    dst = Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise BertkitError(f"{dst} already exists and is not an empty directory; choose a new output path.")
    return dst


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
