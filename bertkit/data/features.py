"""Task examples as model inputs: token ids per example, the targets, and the padded batches.

Token classification reads one vector per word: the first sub-token of each word, gathered into a
left-aligned [B, W] sequence (`word_index`), so the loss, the CRF and the predictions all see words,
not pieces. A sentence longer than max_length tokens is read as sliding windows (as transformers'
token-classification pipeline does): windows of whole words, consecutive ones sharing about
`stride` tokens, each an item of its own (training sees them as extra examples); predictions are
merged back per sentence (serving/predict.py), so no word goes unseen. `forward` calls a
fine-tuned model on a collated batch.

Shapes: B batch, T tokens, W words, C labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import BertkitError
from ..heads import IGNORE_INDEX, BertForTokenClassification
from .datasets import TagExample
from .metrics import cut_tags


@dataclass
class Features:
    """Encoded examples, unpadded: token ids and types per example, and the targets."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: list[int] | None = None  # classify / pair
    word_index: list[list[int]] | None = None  # ner: token position of each kept word
    word_labels: list[list[int]] | None = None  # ner: label id of each kept word
    kept_words: list[list[int]] | None = None  # ner: which words of the example have a position
    truncated: list[int] = field(default_factory=list)  # indices of the examples cut to max_length
    lost_words: int = 0  # ner: words that got no position (cut off, or no pieces)
    # ner with windows: items are windows of examples
    example_of: list[int] | None = None  # the example each window comes from
    edges: list[list[int]] | None = None  # per window and kept word: tokens to the nearer cut edge (no cut: a large number)
    example_words: list[list[int]] | None = None  # per example: its words that have a position in some window

    def __len__(self) -> int:
        return len(self.input_ids)

    def words_of(self, example: int) -> list[int]:
        """The words of an example that get a prediction."""
        return self.kept_words[example] if self.example_of is None else self.example_words[example]


TRUNCATIONS = ("head", "head+tail")  # how a text longer than max_length is cut (classify)


def encode(tokenizer, examples, task: str, labels: list[str], max_length: int, stride: int | None = None,
           truncation: str = "head") -> Features:
    """Tokenize a list of examples (labels, when present, as ids of `labels`). ner with a stride: sentences
    longer than max_length become windows sharing about `stride` tokens; without, they are cut. classify
    with truncation "head+tail": a long text keeps its first quarter and last three quarters of the room
    (Sun et al. 2019, "How to Fine-Tune BERT for Text Classification", head 128 + tail 382 of 512)."""
    label_id = {label: i for i, label in enumerate(labels)}
    if task == "ner":
        return _encode_words(tokenizer, examples, label_id, max_length, stride)
    if truncation not in TRUNCATIONS:
        raise BertkitError(f"truncation {truncation!r} is not one of {', '.join(TRUNCATIONS)}.")
    if task == "classify" and truncation == "head+tail":
        return _encode_head_tail(tokenizer, examples, label_id, max_length)
    if task == "pair":
        enc = tokenizer([e.text_a for e in examples], [e.text_b for e in examples], max_length=max_length, padding=False, return_tensors=None)
    else:
        enc = tokenizer([e.text for e in examples], max_length=max_length, padding=False, return_tensors=None)
    ys = None
    if examples and examples[0].label is not None:
        ys = [_label_id(label_id, e.label) for e in examples]
    return Features(enc["input_ids"], enc["token_type_ids"], labels=ys, truncated=list(tokenizer.last_truncated))


def _encode_head_tail(tokenizer, examples, label_id: dict, max_length: int) -> Features:
    encs = tokenizer.backend.encode_batch([e.text for e in examples])  # whole: [CLS] pieces [SEP]
    room = max_length - 2
    head = room // 4
    ids, cut = [], []
    for i, enc in enumerate(encs):
        if len(enc.ids) > max_length:
            body = enc.ids[1:-1]
            ids.append([enc.ids[0], *body[:head], *body[len(body) - (room - head):], enc.ids[-1]])
            cut.append(i)
        else:
            ids.append(enc.ids)
    ys = [_label_id(label_id, e.label) for e in examples] if examples and examples[0].label is not None else None
    return Features(ids, [[0] * len(x) for x in ids], labels=ys, truncated=cut)


def _label_id(label_id: dict, label: str) -> int:
    if label not in label_id:
        raise BertkitError(f"label {label!r} is not one the model knows ({', '.join(label_id)}).")
    return label_id[label]

FAR = 1 << 30  # the edge distance of a sentence's own start and end: nothing is cut there


DEFAULT_STRIDE = 32  # tokens two windows share, unless the window is too short for it (see default_stride)


def default_stride(max_length: int) -> int:
    return min(DEFAULT_STRIDE, (max_length - 2) // 2)


def check_stride(stride: int, max_length: int) -> None:
    if not 0 <= stride <= (max_length - 2) // 2:
        raise BertkitError(f"--stride must be between 0 and half the {max_length - 2} tokens a window holds, not {stride}.")


def _encode_words(tokenizer, examples: list[TagExample], label_id: dict, max_length: int, stride: int | None) -> Features:
    if stride is not None:
        check_stride(stride, max_length)
    encs = tokenizer.backend.encode_batch([e.tokens for e in examples], is_pretokenized=True)  # whole: [CLS] pieces [SEP]
    windowed = stride is not None
    f = Features([], [], word_index=[], word_labels=[], kept_words=[], example_of=[] if windowed else None,
                 edges=[] if windowed else None, example_words=[] if windowed else None)
    for i, (e, enc) in enumerate(zip(examples, encs)):
        first: dict[int, int] = {}  # word -> position of its first piece
        for pos, w in enumerate(enc.word_ids):
            if w is not None and w not in first:
                first[w] = pos
        n = len(enc.ids)
        if not windowed:
            cut = n > max_length
            spans = [(1, min(n - 1, max_length - 1))]  # cut: [CLS] the first pieces [SEP]
            if cut:
                f.truncated.append(i)
        else:
            spans = windows(sorted(first.values()), n, max_length - 2, stride)
            f.example_words.append(sorted(first))
        kept_all = set()
        for s, t in spans:
            words = [w for w in sorted(first) if s <= first[w] < t]
            kept_all.update(words)
            f.input_ids.append([enc.ids[0], *enc.ids[s:t], enc.ids[-1]])
            f.token_type_ids.append([0] * (t - s + 2))
            f.word_index.append([first[w] - s + 1 for w in words])
            f.kept_words.append(words)
            if e.tags is not None:
                tags = [e.tags[w] for w in words]
                if windowed and len(spans) > 1:
                    tags = cut_tags(tags, s > 1, t < n - 1)
                f.word_labels.append([_label_id(label_id, tag) for tag in tags])
            if windowed:
                f.example_of.append(i)
                f.edges.append([min(first[w] - s if s > 1 else FAR, t - 1 - first[w] if t < n - 1 else FAR) for w in words])
        f.lost_words += len(e.tokens) - len(kept_all)
    if not examples or examples[0].tags is None:
        f.word_labels = None
    return f


def windows(starts: list[int], n: int, room: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) token spans covering positions 1..n-2 (the pieces between [CLS] and [SEP]) in windows of
    at most `room` tokens that begin and end at word starts (a longer word is cut), each beginning at the
    first word start within `stride` tokens of the previous one's end."""
    end, spans, s = n - 1, [], 1
    while True:
        t = min(s + room, end)
        if t < end:
            inside = [p for p in starts if s < p <= t]
            t = inside[-1] if inside else t  # end before the word that would not fit
        spans.append((s, t))
        if t >= end:
            return spans
        later = [p for p in starts if p > s and p >= t - stride]
        if not later:
            return spans  # only the rest of a word longer than a window is left; its first piece was read
        s = later[0]


def collate(f: Features, idx: list[int], pad_id: int, device) -> dict[str, torch.Tensor]:
    """A padded batch of the examples `idx`, on `device`."""
    T = max(len(f.input_ids[i]) for i in idx)
    ids = torch.full((len(idx), T), pad_id, dtype=torch.long)
    types = torch.zeros(len(idx), T, dtype=torch.long)
    mask = torch.zeros(len(idx), T, dtype=torch.long)
    for r, i in enumerate(idx):
        n = len(f.input_ids[i])
        ids[r, :n], types[r, :n], mask[r, :n] = torch.tensor(f.input_ids[i]), torch.tensor(f.token_type_ids[i]), 1
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    if f.labels is not None:
        batch["labels"] = torch.tensor([f.labels[i] for i in idx])
    if f.word_index is not None:
        W = max(max(len(f.word_index[i]) for i in idx), 1)
        word_index = torch.zeros(len(idx), W, dtype=torch.long)
        word_mask = torch.zeros(len(idx), W, dtype=torch.bool)
        word_labels = torch.full((len(idx), W), IGNORE_INDEX, dtype=torch.long)
        for r, i in enumerate(idx):
            n = len(f.word_index[i])
            word_index[r, :n], word_mask[r, :n] = torch.tensor(f.word_index[i], dtype=torch.long), True
            if f.word_labels is not None:
                word_labels[r, :n] = torch.tensor(f.word_labels[i], dtype=torch.long)
        batch |= {"word_index": word_index, "word_mask": word_mask}
        if f.word_labels is not None:
            batch["word_labels"] = word_labels
    return {k: v.to(device) for k, v in batch.items()}


def forward(model, batch, hidden: bool = False):
    """Logits [B, C] or emissions [B, W, C] for a collated batch (and the hidden states if asked)."""
    if isinstance(model, BertForTokenClassification) or batch.get("word_index") is not None:
        return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], batch["word_index"], hidden=hidden)
    return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], hidden=hidden)


def batches_by_length(f: Features, batch_size: int) -> list[list[int]]:
    """Inference order: examples sorted by length, so a batch wastes little on padding."""
    order = sorted(range(len(f)), key=lambda i: len(f.input_ids[i]))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
