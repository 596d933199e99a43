"""Task examples as model inputs: token ids per example, the targets, and the padded batches.

Token classification reads one vector per word: the first sub-token of each word, gathered into a
left-aligned [B, W] sequence (`word_index`), so the loss, the CRF and the predictions all see words,
not pieces. `forward` calls a fine-tuned model on a collated batch.

Shapes: B batch, T tokens, W words, C labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import BertkitError
from ..heads import IGNORE_INDEX, BertForTokenClassification
from .datasets import TagExample


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

    def __len__(self) -> int:
        return len(self.input_ids)

def encode(tokenizer, examples, task: str, labels: list[str], max_length: int) -> Features:
    """Tokenize a list of examples (labels, when present, as ids of `labels`)."""
    label_id = {label: i for i, label in enumerate(labels)}
    if task == "ner":
        return _encode_words(tokenizer, examples, label_id, max_length)
    if task == "pair":
        enc = tokenizer([e.text_a for e in examples], [e.text_b for e in examples], max_length=max_length, padding=False, return_tensors=None)
    else:
        enc = tokenizer([e.text for e in examples], max_length=max_length, padding=False, return_tensors=None)
    ys = None
    if examples and examples[0].label is not None:
        ys = [_label_id(label_id, e.label) for e in examples]
    return Features(enc["input_ids"], enc["token_type_ids"], labels=ys, truncated=list(tokenizer.last_truncated))

def _label_id(label_id: dict, label: str) -> int:
    if label not in label_id:
        raise BertkitError(f"label {label!r} is not one the model knows ({', '.join(label_id)}).")
    return label_id[label]

def _encode_words(tokenizer, examples: list[TagExample], label_id: dict, max_length: int) -> Features:
    backend = tokenizer.backend
    backend.enable_truncation(max_length)
    try:
        encs = backend.encode_batch([e.tokens for e in examples], is_pretokenized=True)
    finally:
        backend.no_truncation()
    f = Features([], [], word_index=[], word_labels=[], kept_words=[])
    for i, (e, enc) in enumerate(zip(examples, encs)):
        first: dict[int, int] = {}  # word -> position of its first piece
        for pos, w in enumerate(enc.word_ids):
            if w is not None and w not in first:
                first[w] = pos
        kept = sorted(first)
        f.input_ids.append(enc.ids)
        f.token_type_ids.append(enc.type_ids)
        f.word_index.append([first[w] for w in kept])
        f.kept_words.append(kept)
        if e.tags is not None:
            f.word_labels.append([_label_id(label_id, e.tags[w]) for w in kept])
        if enc.overflowing:
            f.truncated.append(i)
        f.lost_words += len(e.tokens) - len(kept)
    if not examples or examples[0].tags is None:
        f.word_labels = None
    return f

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
