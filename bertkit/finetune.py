"""Fine-tuning models and the features they read: sequence classification (single texts and
pairs) and token classification (softmax or CRF), plus evaluation and prediction.

A fine-tuned model directory is an ordinary checkpoint: config.json carries transformers'
`id2label` / `label2id` and a `bertkit` entry {task, crf, max_length, tokens}; the classifier is
named `classifier.*` as in transformers' BertForSequenceClassification /
BertForTokenClassification, so a BERT classifier bertkit saves loads in transformers too.
Token classification reads one vector per word: the first sub-token of each word, gathered into a
left-aligned [B, W] sequence, so the loss, the CRF and the predictions all see words, not pieces.

Shapes: B batch, T tokens, W words, H hidden, C labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .checkpoint import PretrainedMixin
from .config import BertConfig
from .crf import CRF, bio_constraints
from .datasets import PairExample, TagExample, TextExample
from .errors import BertkitError
from .metrics import classification_report, entities, entity_scores
from .model import BertModel
from .tricks import IGNORE_INDEX

TASKS = ("classify", "pair", "ner")


def labels_of(config: BertConfig) -> list[str]:
    """The label names in id order, from transformers' id2label."""
    id2label = config.extra.get("id2label")
    if not id2label:
        raise BertkitError("the checkpoint's config has no id2label: it is not a fine-tuned classifier.")
    return [id2label[k] for k in sorted(id2label, key=int)]


def task_of(config: BertConfig) -> dict:
    info = config.extra.get("bertkit")
    if not isinstance(info, dict) or info.get("task") not in TASKS:
        raise BertkitError("the checkpoint's config has no bertkit task entry: it was not fine-tuned by bertkit.")
    return info


def set_task(config: BertConfig, task: str, labels: list[str], **info) -> None:
    """Record the task and labels in the config (written to config.json with the model)."""
    config.extra["id2label"] = {str(i): label for i, label in enumerate(labels)}
    config.extra["label2id"] = {label: i for i, label in enumerate(labels)}
    config.extra["bertkit"] = {"task": task, **info}


class BertForSequenceClassification(PretrainedMixin, nn.Module):
    """Pooled [CLS] vector (or the raw [CLS] state in families without a pooler) -> dropout -> C logits."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.drop = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, len(labels_of(config)))
        self.classifier.apply(self.bert.init_weights)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, hidden: bool = False):
        """-> logits [B, C]; with hidden=True also the hidden states (for distillation)."""
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states=hidden)
        pooled = out.pooler_output if out.pooler_output is not None else out.last_hidden_state[:, 0]
        logits = self.classifier(self.drop(pooled))
        return (logits, out.hidden_states) if hidden else logits


class BertForTokenClassification(PretrainedMixin, nn.Module):
    """Per-word logits (emissions) [B, W, C], scored by softmax cross-entropy or by a CRF."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        labels = labels_of(config)
        self.bert = BertModel(config, add_pooler=False)
        self.drop = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, len(labels))
        self.classifier.apply(self.bert.init_weights)
        self.crf = CRF(len(labels), bio_constraints(labels)) if config.extra.get("bertkit", {}).get("crf") else None

    def forward(self, input_ids, attention_mask, token_type_ids, word_index, hidden: bool = False):
        """word_index [B, W]: the token position of each word's first piece (0 at padding words).
        -> emissions [B, W, C]; with hidden=True also the hidden states (for distillation)."""
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states=hidden)
        h = out.last_hidden_state  # [B, T, H]
        words = h.gather(1, word_index[..., None].expand(-1, -1, h.shape[-1]))  # [B, W, H]
        logits = self.classifier(self.drop(words))  # [B, W, C]
        return (logits, out.hidden_states) if hidden else logits

    def decode(self, emissions, word_mask) -> list[list[int]]:
        if self.crf is not None:
            return self.crf.decode(emissions, word_mask)
        best = emissions.argmax(-1)
        return [row[: int(n)].tolist() for row, n in zip(best, word_mask.sum(1))]


MODEL_CLASSES = {"classify": BertForSequenceClassification, "pair": BertForSequenceClassification, "ner": BertForTokenClassification}


# ---- features ---------------------------------------------------------------------------------


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


@torch.no_grad()
def predict_features(model, f: Features, batch_size: int = 64) -> list:
    """Per example: label probabilities [C] (classify/pair) or the predicted label id per kept word (ner)."""
    model.eval()
    device = next(model.parameters()).device
    out: list = [None] * len(f)
    pad = model.config.pad_token_id or 0
    for idx in batches_by_length(f, batch_size):
        batch = collate(f, idx, pad, device)
        logits = forward(model, batch).float()
        if f.word_index is not None:
            preds = model.decode(logits, batch["word_mask"])
        else:
            preds = logits.softmax(-1).cpu()
        for i, p in zip(idx, preds):
            out[i] = p
    return out


def word_tags(f: Features, i: int, pred: list[int], labels: list[str], n_words: int) -> list[str]:
    """A tag for every word of example i: the prediction where the word has a position, else O."""
    tags = ["O"] * n_words
    for w, p in zip(f.kept_words[i], pred):
        tags[w] = labels[p]
    return tags


def evaluate_examples(model, tokenizer, examples, batch_size: int = 64) -> dict:
    """Metrics of a fine-tuned model on labelled examples: accuracy and macro-F1, or entity P/R/F1."""
    info, labels = task_of(model.config), labels_of(model.config)
    f = encode(tokenizer, examples, info["task"], labels, info["max_length"])
    preds = predict_features(model, f, batch_size)
    if info["task"] == "ner":
        pred_tags = [word_tags(f, i, p, labels, len(e.tokens)) for i, (e, p) in enumerate(zip(examples, preds))]
        scores = entity_scores([e.tags for e in examples], pred_tags)
        return {"f1": scores["f1"], "precision": scores["precision"], "recall": scores["recall"],
                "per_type": scores["per_type"], "examples": len(examples), "truncated": len(f.truncated)}
    y_pred = [labels[int(p.argmax())] for p in preds]
    report = classification_report([e.label for e in examples], y_pred)
    return {"accuracy": report["accuracy"], "macro_f1": report["macro"]["f1"], "per_class": report["per_class"],
            "examples": len(examples), "truncated": len(f.truncated)}


def main_metric(task: str) -> str:
    return "f1" if task == "ner" else "accuracy"


def predict_texts(model, tokenizer, inputs: list, batch_size: int = 64) -> list[dict]:
    """What `bertkit predict` prints, one dict per input: a label with its probabilities, or entities."""
    info, labels = task_of(model.config), labels_of(model.config)
    task = info["task"]
    if task == "ner":
        examples = [TagExample(_words(t, info.get("tokens", "chars"))) for t in inputs]
    elif task == "pair":
        examples = [PairExample(a, b) for a, b in inputs]
    else:
        examples = [TextExample(t) for t in inputs]
    f = encode(tokenizer, examples, task, labels, info["max_length"])
    preds = predict_features(model, f, batch_size)
    cut, results = set(f.truncated), []
    for i, (x, p) in enumerate(zip(inputs, preds)):
        if task == "ner":
            words = examples[i].tokens
            tags = word_tags(f, i, p, labels, len(words))
            results.append({"text": x, "entities": _spans(words, tags, info.get("tokens", "chars"))})
        else:
            k = int(p.argmax())
            probs = {label: round(float(q), 6) for label, q in zip(labels, p)}
            results.append({"text" if task == "classify" else "pair": x, "label": labels[k], "probability": probs[labels[k]], "probabilities": probs})
        results[-1]["truncated"] = i in cut
    return results


def _words(text: str, kind: str) -> list[str]:
    words = list(text) if kind == "chars" else text.split()
    return [w for w in words if not w.isspace()] if kind == "chars" else words


def _spans(words: list[str], tags: list[str], kind: str) -> list[dict]:
    """Entities with their text and [start, end) offsets in words (= characters for char-level models)."""
    sep = "" if kind == "chars" else " "
    return [{"type": t, "text": sep.join(words[s:e]), "start": s, "end": e} for t, s, e in entities(tags)]


def loss_of_batch(model, batch, loss, rdrop: float = 0.0) -> tuple[torch.Tensor, int]:
    """(summed loss, the count it sums over: examples, or words for ner).

    The trainer divides by the count over the whole global batch, so gradient accumulation and
    several processes give exactly the mean of one big batch. rdrop > 0: R-Drop, the batch twice
    in one forward (two dropout masks), their mean loss plus rdrop * the symmetric KL.
    """
    from .tricks import rdrop_loss

    count = len(batch["labels"]) if "labels" in batch else int(batch["word_mask"].sum())
    if rdrop:
        batch = {k: torch.cat([v, v]) for k, v in batch.items()}
    logits = forward(model, batch)
    total = task_loss(model, batch, logits, loss)
    if rdrop:
        half, mask = len(logits) // 2, batch.get("word_mask")
        kl = rdrop_loss(logits[:half], logits[half:], None if mask is None else mask[:half])
        total = total / 2 + rdrop * kl * count
    return total, count


def task_loss(model, batch, logits, loss) -> torch.Tensor:
    """The summed hard-label loss of a batch's logits: the loss function, or the CRF's likelihood."""
    core = getattr(model, "module", model)  # under DistributedDataParallel
    if "labels" in batch:
        return loss(logits, batch["labels"])
    if getattr(core, "crf", None) is not None:
        return core.crf.nll(logits, batch["word_labels"], batch["word_mask"]).sum()
    return loss(logits, batch["word_labels"])  # padding words carry IGNORE_INDEX


def sum_loss(kind: str, class_weight=None, gamma: float = 2.0, smoothing: float = 0.1):
    """(logits, target, reduction) -> loss, for the trainer's summed losses."""
    from .tricks import focal_loss, label_smoothing_loss

    def fn(logits, target, reduction="sum"):
        if kind == "focal":
            return focal_loss(logits, target, gamma, class_weight, reduction=reduction)
        return label_smoothing_loss(logits, target, smoothing if kind == "smooth" else 0.0, class_weight, reduction=reduction)

    if kind not in ("ce", "focal", "smooth"):
        raise BertkitError(f"loss {kind!r} is not one of ce, focal, smooth.")
    return fn



# ---- fine-tuned directories: evaluate and predict -----------------------------------------------


def load_finetuned(path, backend: str = "torch", bf16: bool = False):
    """(model, tokenizer) from a fine-tuned model directory, or a training run's --out directory.

    backend "onnx": path is an export (`bertkit export onnx`), run by onnxruntime through the same calls.
    bf16: bfloat16 weights and activations (torch backend; the CRF stays fp32).
    """
    from pathlib import Path

    from .checkpoint import read_pretrained
    from .tokenizer import Tokenizer

    if backend == "onnx":
        if bf16:
            raise BertkitError("--bf16 applies to the torch backend; an ONNX graph keeps the precision it was exported in.")
        from .export import load_onnx

        return load_onnx(path, TASKS)
    p = Path(path)
    if p.is_dir() and not (p / "config.json").exists() and (p / "model" / "config.json").exists():
        p = p / "model"
    d, config, conv = read_pretrained(p)
    info = task_of(config)
    model = MODEL_CLASSES[info["task"]].from_converted(d, config, conv, verbose=False)
    if bf16:
        model.to(torch.bfloat16)
        if getattr(model, "crf", None) is not None:
            model.crf.float()
    return model, Tokenizer.from_pretrained(d)


def evaluate_command(path, data: str, split: str = "test", batch_size: int = 64, backend: str = "torch",
                     bf16: bool = False) -> dict:
    from pathlib import Path

    from .datasets import BUNDLED, load_dataset, read_task_file

    model, tokenizer = load_finetuned(path, backend, bf16)
    task = task_of(model.config)["task"]
    if data in BUNDLED or Path(data).is_dir():
        splits = load_dataset(data, task)
        if split not in splits:
            raise BertkitError(f"{data} has no {split!r} split; it has {', '.join(splits)}.")
        examples = splits[split]
    else:
        examples = read_task_file(data, task)
    if (examples[0].tags if task == "ner" else examples[0].label) is None:
        raise BertkitError(f"{data} has no labels to evaluate against.")
    return evaluate_examples(model, tokenizer, examples, batch_size)


def predict_command(path, texts: list[str], input_file: str | None = None, batch_size: int = 64,
                    backend: str = "torch", bf16: bool = False) -> list[dict]:
    """Predictions for texts given on the command line (pairs as two texts each) or in a file."""
    from .datasets import read_task_file

    model, tokenizer = load_finetuned(path, backend, bf16)
    task = task_of(model.config)["task"]
    if input_file:
        examples = read_task_file(input_file, task)
        inputs = [("".join(e.tokens) if task_of(model.config).get("tokens", "chars") == "chars" else " ".join(e.tokens)) if task == "ner"
                  else (e.text_a, e.text_b) if task == "pair" else e.text for e in examples]
    else:
        for n, t in enumerate(texts, 1):
            if not t.strip():
                raise BertkitError(f"text {n} is empty.")
        if task == "pair":
            if len(texts) % 2:
                raise BertkitError(f"a pair model takes texts two at a time; got {len(texts)}.")
            inputs = list(zip(texts[0::2], texts[1::2]))
        else:
            inputs = list(texts)
    if not inputs:
        raise BertkitError("nothing to predict: give texts or --input FILE.")
    return predict_texts(model, tokenizer, inputs, batch_size)
