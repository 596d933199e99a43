"""The tokenizer of any checkpoint, on the `tokenizers` library: BERT's WordPiece with BERT's exact pipeline
(below), and any other `tokenizer.json` (byte-level BPE as GPT-2 and RoBERTa, Unigram as T5, mT5 and XLM-R)
with its own normaliser, pre-tokenizer, post-processor and decoder, and the special tokens its
tokenizer_config.json names.

BERT's pipeline: normalise (clean control chars, put spaces around CJK characters so each is one token,
lower-case and strip accents when asked) -> split on whitespace and punctuation -> greedy longest-match
WordPiece with "##" continuations -> [CLS] A [SEP] (B [SEP]).

Loads `tokenizer.json` or `vocab.txt` (+ `tokenizer_config.json`), writes them back so `transformers`
loads the same tokenizer. Ids, offsets and decoding equal transformers' fast tokenizer of the same directory.

Why ~450 lines: BERT's WordPiece pipeline and any tokenizer.json behind one interface, with pairs, truncation, offsets and decoding equal to transformers'.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from .errors import BertkitError
from .io.files import read_json

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
ROLES = ("pad", "unk", "cls", "sep", "mask", "bos", "eos")  # tokenizer_config.json's <role>_token entries
BERT_ROLES = dict(zip(ROLES, SPECIALS))


class Tokenizer:
    def __init__(self, backend: Backend, model_max_length: int = 512, specials: dict[str, str] | None = None,
                 clean_up_spaces: bool = False):
        """specials: role ("pad", "eos", ...) -> the token's text, as tokenizer_config.json names them; None: BERT's
        five, which the vocabulary must hold. clean_up_spaces: transformers' clean_up_tokenization_spaces on decode."""
        if specials is None:
            missing = [t for t in SPECIALS if backend.token_to_id(t) is None]
            if missing:
                raise BertkitError(f"the vocabulary lacks BERT's special tokens {', '.join(missing)}.")
            specials = BERT_ROLES
        absent = [t for t in specials.values() if backend.token_to_id(t) is None]
        if absent:
            raise BertkitError(f"the tokenizer names special token {absent[0]!r}, which its vocabulary lacks.")
        self.backend = backend
        self.model_max_length = model_max_length
        self.specials = dict(specials)
        self.clean_up_spaces = clean_up_spaces
        for role in ROLES:  # pad_token_id, eos_token_id, ...: None where the tokenizer has no such token
            setattr(self, f"{role}_token_id", backend.token_to_id(specials[role]) if role in specials else None)
        backend.no_padding()
        backend.no_truncation()
        self._thread = threading.local()  # what the last call in this thread truncated
        self._cutting: dict[int, Backend] = {}  # max_length -> a copy of backend that truncates there, set once
        self._lock = threading.Lock()

    # Threads share a Tokenizer safely: a call never changes `backend` (truncation runs on a copy made once per
    # max_length and never changed after), and `last_truncated` is per thread.

    @property
    def last_truncated(self) -> list[int]:
        """The indices of the inputs this thread's last call cut to max_length."""
        return getattr(self._thread, "truncated", [])

    def _truncating(self, max_length: int) -> Backend:
        backend = self._cutting.get(max_length)
        if backend is None:
            with self._lock:
                backend = self._cutting.get(max_length)
                if backend is None:
                    backend = Backend.from_str(self.backend.to_str())
                    backend.enable_truncation(max_length, strategy="longest_first")
                    if len(self._cutting) >= 16:
                        self._cutting.pop(next(iter(self._cutting)))
                    self._cutting[max_length] = backend
        return backend

    def __getstate__(self) -> dict:  # pickling (DataLoader workers, deepcopy): the lock and per-thread state stay behind
        return {k: v for k, v in self.__dict__.items() if k not in ("_thread", "_cutting", "_lock")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._thread, self._cutting, self._lock = threading.local(), {}, threading.Lock()

    @property
    def is_bert(self) -> bool:
        """BERT's WordPiece with its five special tokens (ModernBERT's byte-level BPE and DeBERTa-v3's Unigram name theirs
        alike: the model decides)."""
        return isinstance(self.backend.model, WordPiece) and all(self.specials.get(r) == t for r, t in BERT_ROLES.items() if r in ("pad", "unk", "cls", "sep", "mask"))

    @property
    def fill_id(self) -> int:
        """The id padding is written with: the pad token, else (GPT-2 has none) the end token, masked either way."""
        return next(i for i in (self.pad_token_id, self.eos_token_id, 0) if i is not None)

    # ---- construction ----------------------------------------------------------------

    @classmethod
    def from_vocab(
        cls,
        vocab: str | Path | dict[str, int],
        lowercase: bool = True,
        strip_accents: bool | None = None,
        chinese_chars: bool = True,
        model_max_length: int = 512,
    ) -> Tokenizer:
        """BERT's tokenizer for a vocab.txt (one token per line, id = line number) or {token: id}.

        strip_accents=None follows lowercase, as in BERT.
        """
        where = "the vocabulary" if isinstance(vocab, dict) else str(vocab)
        if not isinstance(vocab, dict):
            vocab = read_vocab(Path(vocab))
        missing = [t for t in SPECIALS if t not in vocab]
        if missing:
            raise BertkitError(f"{where} lacks BERT's special tokens {', '.join(missing)}.")
        backend = Backend(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        _set_pipeline(backend, lowercase, strip_accents, chinese_chars)
        return cls(backend, model_max_length)

    @classmethod
    def can_load(cls, d: Path) -> bool:
        return (d / "tokenizer.json").is_file() or (d / "vocab.txt").is_file()

    @classmethod
    def from_pretrained(cls, path, revision: str | None = None, token: str | None = None) -> Tokenizer:
        from .io.hub import resolve

        d = resolve(path, revision=revision, token=token)
        settings = read_json(d / "tokenizer_config.json") if (d / "tokenizer_config.json").is_file() else {}
        for key in ("do_lower_case", "strip_accents", "tokenize_chinese_chars"):
            if settings.get(key) is not None and not isinstance(settings[key], bool):
                raise BertkitError(f"{d / 'tokenizer_config.json'}: {key} must be true, false or null, not {settings[key]!r}.")
        max_len = _model_max_length(d, settings)
        if (d / "tokenizer.json").is_file():
            try:
                backend = Backend.from_file(str(d / "tokenizer.json"))
            except Exception as e:  # tokenizers raises a bare Exception for malformed files
                raise BertkitError(f"{d / 'tokenizer.json'} is not a valid tokenizer file ({e}).") from None
            _apply_settings(backend, settings)
            specials = _declared_specials(d, settings)
            if not specials and all(backend.token_to_id(t) is not None for t in SPECIALS):
                specials = None  # an undeclared BERT vocabulary: BERT's five
            clean = settings.get("clean_up_tokenization_spaces", False)
            return cls(backend, max_len, specials, bool(clean) and _decoder_type(backend) != "WordPiece")
        if (d / "vocab.txt").is_file():
            lower = settings.get("do_lower_case", None)
            lower = _guess_lowercase(d / "vocab.txt") if lower is None else lower
            return cls.from_vocab(
                d / "vocab.txt", lower, settings.get("strip_accents"), settings.get("tokenize_chinese_chars", True), max_len
            )
        raise BertkitError(f"{d} has no tokenizer.json nor vocab.txt.")

    # ---- encoding --------------------------------------------------------------------

    def __call__(
        self,
        texts: str | list[str],
        text_pair: str | list[str] | None = None,
        max_length: int | None = None,
        padding: bool | str = True,
        truncation: bool = True,
        return_tensors: str | None = "pt",
        return_offsets_mapping: bool = False,
        add_special_tokens: bool = True,
    ) -> dict[str, Any]:
        """Encode a text or a batch (with optional pairs) into input_ids, token_type_ids, attention_mask.

        truncation: cut to max_length (default model_max_length), longest-first for pairs;
            `self.last_truncated` lists the batch indices that were cut.
        padding: True pads to the longest in the batch, "max_length" to max_length, False not at all.
        add_special_tokens: False leaves out what the post-processor adds ([CLS] and [SEP], </s>, ...).
        return_tensors: "pt" (torch), "np" (numpy) or None (lists).
        """
        if isinstance(texts, str) and text_pair == "":
            text_pair = None  # transformers encodes ("a", "") as the single text "a"
        texts, pairs = _as_batch(texts, "texts"), None if text_pair is None else _as_batch(text_pair, "text_pair")
        if pairs is not None and len(pairs) != len(texts):
            raise BertkitError(f"got {len(texts)} texts but {len(pairs)} text pairs.")
        max_length = max_length or self.model_max_length
        added = self.backend.num_special_tokens_to_add(pairs is not None) if add_special_tokens else 0
        if truncation and max_length <= added + (pairs is not None):
            raise BertkitError(f"max_length {max_length} leaves no room for the text beside the {added} special tokens.")
        backend = self._truncating(max_length) if truncation else self.backend
        encs = backend.encode_batch(texts if pairs is None else list(zip(texts, pairs)), add_special_tokens=add_special_tokens)
        self._thread.truncated = [i for i, e in enumerate(encs) if e.overflowing]
        out = {
            "input_ids": [e.ids for e in encs],
            "token_type_ids": [e.type_ids for e in encs],
            "attention_mask": [e.attention_mask for e in encs],
        }
        if return_offsets_mapping:
            out["offset_mapping"] = [e.offsets for e in encs]
        if padding:
            width = max_length if padding == "max_length" else max(len(ids) for ids in out["input_ids"])
            fill = {"input_ids": self.fill_id, "offset_mapping": (0, 0)}
            out = {k: [row + [fill.get(k, 0)] * (width - len(row)) for row in v] for k, v in out.items()}
        return _as_tensors(out, return_tensors)

    def encode(self, text: str, text_pair: str | None = None) -> list[int]:
        return self(text, text_pair, padding=False, return_tensors=None)["input_ids"][0]

    def tokenize(self, text: str) -> list[str]:
        return self.backend.encode(text, add_special_tokens=False).tokens

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        if isinstance(ids, torch.Tensor | np.ndarray):
            ids = ids.tolist()
        text = self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)
        return clean_up_spaces(text) if self.clean_up_spaces else text

    def convert_ids_to_tokens(self, ids) -> list[str]:
        return [self.backend.id_to_token(int(i)) for i in ids]

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def vocab(self) -> dict[str, int]:
        return self.backend.get_vocab()

    # ---- saving ----------------------------------------------------------------------

    def save_pretrained(self, d: str | Path) -> None:
        """Write vocab.txt (BERT's), tokenizer.json, tokenizer_config.json and special_tokens_map.json."""
        d = Path(d)
        d.mkdir(parents=True, exist_ok=True)
        if not self.is_bert:
            self.backend.save(str(d / "tokenizer.json"))
            specials = {f"{r}_token": t for r, t in self.specials.items()}
            config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": self.model_max_length,
                      "clean_up_tokenization_spaces": self.clean_up_spaces, **specials}
            (d / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            (d / "special_tokens_map.json").write_text(json.dumps(specials, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            return
        vocab = sorted(self.vocab().items(), key=lambda kv: kv[1])
        (d / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")
        self.backend.save(str(d / "tokenizer.json"))
        norm = _normalizer_settings(self.backend)
        config = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": norm.get("lowercase", True),
            "strip_accents": norm.get("strip_accents"),
            "tokenize_chinese_chars": norm.get("handle_chinese_chars", True),
            "model_max_length": self.model_max_length,
            "clean_up_tokenization_spaces": True,
            **_special_map(),
        }
        (d / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (d / "special_tokens_map.json").write_text(json.dumps(_special_map(), indent=2) + "\n", encoding="utf-8")


def train_wordpiece(texts: Iterable[str], vocab_size: int, lowercase: bool = True, min_frequency: int = 2) -> Tokenizer:
    """A BERT WordPiece vocabulary learnt from `texts` (CJK characters stay one per token): the same texts and
    settings always give the same vocabulary (`learn_wordpiece`), and ids are specials first, then the tokens in
    sorted order. (The `tokenizers` trainer breaks ties between equally frequent merges in hash order, so two of its
    trainings on one corpus differed by a few tokens; bertkit learns the merges itself.)
    """
    backend = Backend(WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    _set_pipeline(backend, lowercase, None, True)
    words: dict[str, int] = {}
    for text in texts:  # the words as the tokenizer will see them: normalised, split at spaces, punctuation and CJK
        for w, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text)):
            words[w] = words.get(w, 0) + 1
    learnt = sorted(t for t in learn_wordpiece(words, vocab_size, min_frequency, list(SPECIALS)) if t not in SPECIALS)
    return Tokenizer.from_vocab({t: i for i, t in enumerate([*SPECIALS, *learnt])}, lowercase=lowercase)


def learn_wordpiece(word_counts: dict[str, int], vocab_size: int, min_frequency: int, specials: list[str]) -> list[str]:
    """The tokens of a WordPiece vocabulary learnt as the `tokenizers` trainer learns it (BPE merges over the words,
    "##" on every piece but a word's first), in a fixed order: words in sorted order, ties between equally frequent
    pairs broken by the pair itself. So the vocabulary is a function of the corpus and the settings alone.

    The vocabulary: the specials, every character (and "##" + every character that occurs inside a word), then the
    merged pieces, most frequent pair first, until vocab_size tokens or no pair occurs min_frequency times."""
    import heapq
    from collections import defaultdict

    words = sorted(word_counts)
    counts = [word_counts[w] for w in words]
    symbols = [[w[0], *("##" + c for c in w[1:])] for w in words]
    vocab = dict.fromkeys(specials)
    for syms in symbols:
        vocab.update(dict.fromkeys(syms))
    pairs: dict[tuple[str, str], int] = defaultdict(int)
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, syms in enumerate(symbols):
        for p in zip(syms, syms[1:]):
            pairs[p] += counts[i]
            where[p].add(i)
    heap = [(-c, p) for p, c in pairs.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        neg, pair = heapq.heappop(heap)
        now = pairs.get(pair, 0)
        if now != -neg:  # a stale entry: the pair's count changed since it was pushed
            if now > 0:
                heapq.heappush(heap, (-now, pair))
            continue
        if now < min_frequency:
            break
        a, b = pair
        merged = a + b[2:] if b.startswith("##") else a + b
        vocab[merged] = None
        touched = set()
        for i in sorted(where.pop(pair)):
            syms, c = symbols[i], counts[i]
            for p in zip(syms, syms[1:]):  # this word's pairs leave the counts, and come back merged below
                pairs[p] -= c
                touched.add(p)
            out, j = [], 0
            while j < len(syms):
                if j + 1 < len(syms) and syms[j] == a and syms[j + 1] == b:
                    out.append(merged)
                    j += 2
                else:
                    out.append(syms[j])
                    j += 1
            symbols[i] = out
            for p in zip(out, out[1:]):
                pairs[p] += c
                where[p].add(i)
                touched.add(p)
        for p in touched:
            if pairs[p] <= 0:
                pairs.pop(p, None)
                where.pop(p, None)
            else:
                heapq.heappush(heap, (-pairs[p], p))
    return list(vocab)


# ---- helpers ----------------------------------------------------------------------------


def _set_pipeline(backend: Backend, lowercase: bool, strip_accents: bool | None, chinese_chars: bool) -> None:
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=chinese_chars, strip_accents=strip_accents, lowercase=lowercase
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    backend.add_special_tokens(list(SPECIALS))  # "[MASK]" in a text is one token, never "[", "mask", "]"
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    if cls_id is not None and sep_id is not None:
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
        )


def _declared_specials(d: Path, settings: dict[str, Any]) -> dict[str, str]:
    """role -> token text from tokenizer_config.json, else special_tokens_map.json (entries may be
    {"content": ...} objects, as transformers writes AddedTokens)."""
    found: dict[str, str] = {}
    smap = read_json(d / "special_tokens_map.json") if (d / "special_tokens_map.json").is_file() else {}
    for source in (smap, settings):
        for role in ROLES:
            v = source.get(f"{role}_token")
            v = v.get("content") if isinstance(v, dict) else v
            if isinstance(v, str):
                found[role] = v
    return found


def _decoder_type(backend: Backend) -> str | None:
    return (json.loads(backend.to_str()).get("decoder") or {}).get("type")


def clean_up_spaces(text: str) -> str:
    """transformers' clean_up_tokenization: no space before punctuation and English contractions."""
    for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
                 (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(a, b)
    return text


def _normalizer_settings(backend: Backend) -> dict[str, Any]:
    norm = json.loads(backend.to_str()).get("normalizer") or {}
    return norm if norm.get("type") == "BertNormalizer" else {}


def _apply_settings(backend: Backend, settings: dict[str, Any]) -> None:
    """tokenizer_config.json's case settings win over tokenizer.json's normalizer, as in transformers."""
    norm = _normalizer_settings(backend)
    want = {
        "lowercase": settings.get("do_lower_case", norm.get("lowercase")),
        "strip_accents": settings.get("strip_accents", norm.get("strip_accents")),
        "handle_chinese_chars": settings.get("tokenize_chinese_chars", norm.get("handle_chinese_chars")),
    }
    if norm and any(want[k] != norm.get(k) for k in want):
        backend.normalizer = normalizers.BertNormalizer(clean_text=norm.get("clean_text", True), **want)


def read_vocab(path: Path) -> dict[str, int]:
    if not path.is_file():
        raise BertkitError(f"{path} does not exist.")
    vocab: dict[str, int] = {}
    for n, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        try:
            token = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
            raise BertkitError(f"{path} line {n} is not valid UTF-8.") from None
        if token and token not in vocab:  # duplicates keep their first id, as BERT's loader
            vocab[token] = n - 1
    return vocab


def _guess_lowercase(vocab: Path) -> bool:
    """Google ships no do_lower_case: an uncased vocabulary has no upper-case ASCII tokens."""
    return not any(t.isascii() and t != t.lower() and t not in SPECIALS for t in read_vocab(vocab))


def _model_max_length(d: Path, settings: dict[str, Any]) -> int:
    n = settings.get("model_max_length")
    if isinstance(n, int) and n < 1_000_000:  # transformers writes 1e30 for "unset"
        return n
    for name in ("config.json", "bert_config.json"):
        if (d / name).is_file():
            n = read_json(d / name).get("max_position_embeddings")
            return n if isinstance(n, int) and n > 0 else 512
    return 512


def _special_map() -> dict[str, str]:
    return {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}


def _as_batch(x, what: str) -> list[str]:
    batch = [x] if isinstance(x, str) else list(x) if isinstance(x, list | tuple) else None
    if batch is None or not all(isinstance(t, str) for t in batch):
        raise BertkitError(f"{what} must be a string or a list of strings.")
    if not batch:
        raise BertkitError(f"{what} is an empty list.")
    return batch


def _as_tensors(out: dict[str, list], kind: str | None) -> dict[str, Any]:
    if kind is None:
        return out
    if len({len(r) for r in out["input_ids"]}) > 1:
        raise BertkitError("texts of different lengths cannot form a tensor without padding=True.")
    make = {"pt": lambda v: torch.tensor(v, dtype=torch.long), "np": lambda v: np.array(v, dtype=np.int64)}
    if kind not in make:
        raise BertkitError(f"return_tensors must be 'pt', 'np' or None, not {kind!r}.")
    return {k: make[kind](v) for k, v in out.items()}
