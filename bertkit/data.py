"""Reading user data files, with errors that name the file and the line.

For now: plain text, one item per line (what `bertkit embed` reads), and JSON objects (configs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import BertkitError


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


def read_json(path: str | Path) -> dict[str, Any]:
    """A UTF-8 JSON file holding one object (config.json, tokenizer_config.json, ...)."""
    path = Path(path)
    if not path.is_file():
        raise BertkitError(f"{path} does not exist.")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BertkitError(f"{path} is not valid JSON: {e}.") from None
    if not isinstance(d, dict):
        raise BertkitError(f"{path} must hold a JSON object, not {type(d).__name__}.")
    return d
