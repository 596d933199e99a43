"""Sequence-to-sequence data: source/target pairs from files, and the bundled generative NER task.

Files (every reader error names the file and the line):
  JSON lines  {"source": ..., "target": ...} per line (blank lines skipped); without "target": unlabelled
  TSV         source<TAB>target per line (a header "source<TAB>target" is optional); one column: unlabelled

Generative NER (`peoples-daily-ner` read as seq2seq): the source is the sentence, the target its entities in
sentence order as text, `PER:江泽民；LOC:北京` (type, ASCII colon, the entity; entities joined by a full-width
semicolon; an empty target for a sentence without entities). Predictions are scored with the token taggers'
entity F1 (metrics.entity_scores): each predicted entity is placed at its first unused occurrence in the
sentence, so a generated entity counts only where a tagger's would, and one the sentence does not contain counts
as a miss.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import BertkitError
from ..io.files import read_lines
from .datasets import SPLITS, TagExample, _spans, json_object, load_dataset

ENTITY_SEP = "；"  # between entities
TYPE_SEP = ":"  # between an entity's type and its text
GENERATIVE = {"peoples-daily-ner": "entities"}  # bundled datasets read as seq2seq -> their metric


@dataclass
class Seq2SeqExample:
    source: str
    target: str | None  # None: unlabelled
    tags: list[str] | None = None  # generative NER: the sentence's gold tags (one per character), for entity F1


def _field(d: dict, key: str, path, n, required: bool) -> str | None:
    v = d.get(key)
    if v is None and not required:
        return None
    if v is None:
        raise BertkitError(f'{path} line {n} has no "{key}".')
    if not isinstance(v, str):
        raise BertkitError(f'{path} line {n}: "{key}" must be a string, not {type(v).__name__}.')
    return v


def read_seq2seq_file(path: str | os.PathLike, labelled: bool | None = None) -> list[Seq2SeqExample]:
    """Source/target pairs from a .jsonl/.json or .tsv/.txt file; a source may not be empty, a target may.
    labelled: True, every line needs a target (training); None, all lines or none have one, as the first."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".tsv", ".txt"):
        raise BertkitError(f"{path}: seq2seq data is JSON lines (.jsonl) or TSV (.tsv); not {suffix or 'a file without extension'}.")
    out: list[Seq2SeqExample] = []
    for n, line in enumerate(read_lines(path, allow_empty=True), 1):
        if not line.strip():
            continue
        if suffix in (".jsonl", ".json"):
            d = json_object(line, path, n)
            need = labelled if labelled is not None else bool(out and out[0].target is not None)
            source, target = _field(d, "source", path, n, True), _field(d, "target", path, n, need)
        else:
            cols = line.split("\t")
            if n == 1 and [c.strip().lower() for c in cols] in (["source", "target"], ["source"]):
                continue  # the header
            if len(cols) > 2:
                raise BertkitError(f"{path} line {n} has {len(cols)} tab-separated columns; give source<TAB>target.")
            source, target = cols[0], cols[1] if len(cols) == 2 else None
            if target is None and labelled:
                raise BertkitError(f"{path} line {n} has no target: give source<TAB>target.")
        if not source.strip():
            raise BertkitError(f'{path} line {n} has an empty "source".')
        if out and (target is None) != (out[0].target is None):
            raise BertkitError(f'{path} line {n} {"lacks" if target is None else "has"} a "target", unlike the first record.')
        out.append(Seq2SeqExample(source, target))
    if not out:
        raise BertkitError(f"{path} holds no examples.")
    return out


def entities_as_text(tokens: list[str], tags: list[str]) -> str:
    """A sentence's entities as the generative target: `PER:江泽民；LOC:北京`."""
    return ENTITY_SEP.join(f"{etype}{TYPE_SEP}{''.join(tokens[s:e + 1])}" for etype, s, e in _spans(tags))


def generative_ner(examples: list[TagExample]) -> list[Seq2SeqExample]:
    return [Seq2SeqExample("".join(e.tokens), entities_as_text(e.tokens, e.tags) if e.tags else None, e.tags) for e in examples]


def load_seq2seq(name_or_dir: str | os.PathLike, labelled: bool | None = None) -> dict[str, list[Seq2SeqExample]]:
    """A bundled dataset read as seq2seq (peoples-daily-ner: generative NER), or a directory of train/dev/test
    .jsonl/.tsv files."""
    name = str(name_or_dir)
    if name in GENERATIVE:
        return {k: generative_ner(v) for k, v in load_dataset(name).items()}
    d = Path(name_or_dir)
    if not d.is_dir():
        raise BertkitError(f"{name} is neither a bundled dataset ({', '.join(GENERATIVE)}) nor a directory.")
    files = {f.stem: f for f in sorted(d.iterdir()) if f.stem in SPLITS and f.suffix.lower() in (".jsonl", ".json", ".tsv", ".txt")}
    if not files:
        raise BertkitError(f"{d} holds no train, dev or test file (.jsonl or .tsv).")
    return {s: read_seq2seq_file(files[s], labelled) for s in SPLITS if s in files}


_CJK_GAP = re.compile(r"(?<=[\u3000-\u9fff\uff00-\uffef；:]) +| +(?=[\u3000-\u9fff\uff00-\uffef；:])")


def join_cjk(text: str) -> str:
    """A BERT WordPiece decode puts a space between every two tokens; Chinese (and the target's separators) has none."""
    return _CJK_GAP.sub("", text)


def parse_entities(text: str) -> list[tuple[str, str]]:
    """`PER:江泽民；LOC:北京` -> [("PER", "江泽民"), ("LOC", "北京")]; a WordPiece decoder's spaces between Chinese
    characters are dropped; pieces without a type are skipped."""
    found = []
    for piece in join_cjk(text).split(ENTITY_SEP):
        etype, sep, entity = piece.strip().partition(TYPE_SEP)
        if sep and etype.strip() and entity.strip():
            found.append((etype.strip(), entity.strip()))
    return found


def entity_tags(sentence: str, found: list[tuple[str, str]]) -> list[str]:
    """BIO tags over the sentence's characters with each entity at its first occurrence not already tagged."""
    tags = ["O"] * len(sentence)
    for etype, entity in found:
        start = sentence.find(entity)
        while start >= 0 and any(t != "O" for t in tags[start:start + len(entity)]):
            start = sentence.find(entity, start + 1)
        if start >= 0:
            tags[start:start + len(entity)] = [f"B-{etype}"] + [f"I-{etype}"] * (len(entity) - 1)
    return tags
