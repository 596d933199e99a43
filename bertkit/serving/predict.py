"""Inference over examples and texts: predictions, evaluation, sentence embeddings.

What `bertkit predict`, `evaluate`, `embed` and the server run, for a torch model or an ONNX export
called like one (serving.export.OnnxRunner). Batches are sorted by length, so little goes to padding.

Why ~400 lines: prediction, evaluation and sentence embeddings share one batching-by-length loop and the window merge; splitting them would copy it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import BertConfig
from ..data.datasets import BUNDLED, PairExample, TagExample, TextExample, load_dataset, read_task_file
from ..data.features import Features, batches_by_length, collate, default_stride, encode, forward
from ..data.metrics import classification_report, entities, entity_scores
from ..errors import BertkitError
from ..heads import TaskEntry, labels_of, task_of
from ..io.files import read_json
from ..model import BertModel
from ..tokenizer import Tokenizer
from .load import load_for_inference, say_precision

MERGES = ("edge", "mean")  # how the windows of a long sentence are merged (see predict_features)


@torch.no_grad()
def predict_features(model, f: Features, batch_size: int = 64, merge: str = "edge") -> list:
    """Per example: label probabilities [C] (classify/pair) or the predicted label id of each of its words
    that has a position, `f.words_of(i)` (ner). Windows of one sentence are merged: "edge" keeps each word's
    tag from the window where it lies farthest from a cut edge; "mean" averages each word's emissions over
    its windows and decodes the whole sentence once (the CRF's Viterbi over all its words)."""
    if merge not in MERGES:
        raise BertkitError(f"merge must be one of {', '.join(MERGES)}, not {merge!r}.")
    model.eval()
    device = next(model.parameters()).device
    out: list = [None] * len(f)
    emissions: list = [None] * len(f)
    pad = model.config.pad_token_id or 0
    for idx in batches_by_length(f, batch_size):
        batch = collate(f, idx, pad, device)
        logits = forward(model, batch).float()
        if f.word_index is not None:
            preds = model.decode(logits, batch["word_mask"])
            for r, i in enumerate(idx):
                emissions[i] = logits[r, :len(f.word_index[i])].cpu()
        else:
            preds = (logits.sigmoid() if logits.shape[-1] == 1 else logits.softmax(-1)).cpu()  # one logit: a relevance score
        for i, p in zip(idx, preds):
            out[i] = p
    if f.example_of is None:
        return out
    return merge_windows(model, f, out, emissions, merge)


def merge_windows(model, f: Features, preds: list, emissions: list, merge: str) -> list[list[int]]:
    """Per example, a label id for each word of f.words_of(i), from the predictions of its windows."""
    by_example: dict[int, list[int]] = {}
    for j, i in enumerate(f.example_of):
        by_example.setdefault(i, []).append(j)
    merged = []
    for i, words in enumerate(f.example_words):
        where = {w: k for k, w in enumerate(words)}
        if merge == "edge":
            best: dict[int, tuple[int, int]] = {}  # word -> (edge distance, label)
            for j in by_example.get(i, []):
                for w, edge, label in zip(f.kept_words[j], f.edges[j], preds[j]):
                    if w not in best or edge > best[w][0]:
                        best[w] = (edge, label)
            merged.append([best[w][1] for w in words])
            continue
        total = torch.zeros(len(words), emissions[by_example[i][0]].shape[-1]) if words else torch.zeros(0, 1)
        count = torch.zeros(len(words), 1)
        for j in by_example.get(i, []):
            rows = torch.tensor([where[w] for w in f.kept_words[j]], dtype=torch.long)
            total.index_add_(0, rows, emissions[j])
            count.index_add_(0, rows, torch.ones(len(rows), 1))
        mean = total / count.clamp(min=1)
        merged.append(model.decode(mean[None], torch.ones(1, len(words), dtype=torch.bool))[0] if words else [])
    return merged


def word_tags(f: Features, i: int, pred: list[int], labels: list[str], n_words: int) -> list[str]:
    """A tag for every word of example i: the prediction where the word has a position, else O."""
    tags = ["O"] * n_words
    for w, p in zip(f.words_of(i), pred):
        tags[w] = labels[p]
    return tags


def evaluate_examples(model, tokenizer, examples, batch_size: int = 64) -> dict:
    """Metrics of a fine-tuned model on labelled examples: accuracy and macro-F1, or entity P/R/F1."""
    info, labels = task_of(model.config), labels_of(model.config)
    f = encode(tokenizer, examples, info.task, labels, info.max_length, stride_of(info), info.truncation)
    preds = predict_features(model, f, batch_size, info.merge)
    if info.task == "ner":
        pred_tags = [word_tags(f, i, p, labels, len(e.tokens)) for i, (e, p) in enumerate(zip(examples, preds))]
        scores = entity_scores([e.tags for e in examples], pred_tags)
        return {"f1": scores["f1"], "precision": scores["precision"], "recall": scores["recall"],
                "per_type": scores["per_type"], "examples": len(examples), "truncated": len(f.truncated)}
    y_pred = [labels[int(p.argmax())] for p in preds]
    report = classification_report([e.label for e in examples], y_pred)
    return {"accuracy": report["accuracy"], "macro_f1": report["macro"]["f1"], "per_class": report["per_class"],
            "examples": len(examples), "truncated": len(f.truncated)}


def stride_of(info: TaskEntry) -> int | None:
    """A tagger reads long sentences as windows with the stride it was trained with (or the default); -1: cut."""
    if info.task != "ner":
        return None
    stride = default_stride(info.max_length) if info.stride is None else info.stride
    return None if stride < 0 else stride


def main_metric(task: str) -> str:
    return "f1" if task == "ner" else "accuracy"


def predict_texts(model, tokenizer, inputs: list, batch_size: int = 64) -> list[dict]:
    """What `bertkit predict` prints, one dict per input: a label with its probabilities, or entities."""
    info, labels = task_of(model.config), labels_of(model.config)
    task = info.task
    if task == "ner":
        examples = [TagExample(_words(t, info.tokens)) for t in inputs]
    elif task == "pair":
        examples = [PairExample(a, b) for a, b in inputs]
    else:
        examples = [TextExample(t) for t in inputs]
    f = encode(tokenizer, examples, task, labels, info.max_length, stride_of(info), info.truncation)
    preds = predict_features(model, f, batch_size, info.merge)
    cut, results = set(f.truncated), []
    for i, (x, p) in enumerate(zip(inputs, preds)):
        if task == "ner":
            words = examples[i].tokens
            tags = word_tags(f, i, p, labels, len(words))
            results.append({"text": x, "entities": _spans(words, tags, info.tokens)})
        else:
            k = int(p.argmax())
            probs = {label: round(float(q), 6) for label, q in zip(labels, p)}
            results.append({"text" if task == "classify" else "pair": x, "label": labels[k], "probability": probs[labels[k]], "probabilities": probs})
        results[-1]["truncated"] = i in cut
    return results


def relevance(row: dict, raw: bool = False) -> float:
    """A pair classifier's score that its pair is relevant: the probability of its last label (a one-logit
    cross-encoder's sigmoid); raw: the log-odds instead (that cross-encoder's logit)."""
    p = row["probabilities"][list(row["probabilities"])[-1]]
    return float(np.log(max(p, 1e-12)) - np.log(max(1 - p, 1e-12))) if raw else float(p)


def _words(text: str, kind: str) -> list[str]:
    words = list(text) if kind == "chars" else text.split()
    return [w for w in words if not w.isspace()] if kind == "chars" else words


def _spans(words: list[str], tags: list[str], kind: str) -> list[dict]:
    """Entities with their text and [start, end) offsets in words (= characters for char-level models)."""
    sep = "" if kind == "chars" else " "
    return [{"type": t, "text": sep.join(words[s:e]), "start": s, "end": e} for t, s, e in entities(tags)]


def evaluate_command(path, data: str, split: str = "test", batch_size: int = 64, backend: str = "torch",
                     bf16: bool = False, int8: bool = False, kernels: str = "auto", precision: str | None = None) -> dict:
    from pathlib import Path


    model, tokenizer = load_for_inference(path, backend, bf16, kind="task", int8=int8, kernels=kernels, precision=precision)
    task = task_of(model.config).task
    if data in BUNDLED or Path(data).is_dir():
        splits = load_dataset(data, task)
        if split not in splits:
            raise BertkitError(f"{data} has no {split!r} split; it has {', '.join(splits)}.")
        examples = splits[split]
    else:
        examples = read_task_file(data, task)
    if (examples[0].tags if task == "ner" else examples[0].label) is None:
        raise BertkitError(f"{data} has no labels to evaluate against.")
    scores = evaluate_examples(model, tokenizer, examples, batch_size)
    say_precision(model)
    return scores


def predict_command(path, texts: list[str], input_file: str | None = None, batch_size: int = 64,
                    backend: str = "torch", bf16: bool = False, int8: bool = False, kernels: str = "auto",
                    precision: str | None = None) -> list[dict]:
    """Predictions for texts given on the command line (pairs as two texts each) or in a file."""

    model, tokenizer = load_for_inference(path, backend, bf16, kind="task", int8=int8, kernels=kernels, precision=precision)
    task = task_of(model.config).task
    if input_file:
        examples = read_task_file(input_file, task)
        inputs = [("".join(e.tokens) if task_of(model.config).tokens == "chars" else " ".join(e.tokens)) if task == "ner"
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
    rows = predict_texts(model, tokenizer, inputs, batch_size)
    say_precision(model)
    return rows


# sentence-transformers' pooling modes, in the order its legacy config keys list them (a concatenation follows the config's order)
POOLINGS = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
LEGACY_POOLING = dict(pooling_mode_cls_token="cls", pooling_mode_max_tokens="max", pooling_mode_mean_tokens="mean",
                      pooling_mode_mean_sqrt_len_tokens="mean_sqrt_len_tokens", pooling_mode_weightedmean_tokens="weightedmean",
                      pooling_mode_lasttoken="lasttoken")
POOLING_ALIASES = {"last-token": "lasttoken", "last_token": "lasttoken", "mean-sqrt-len": "mean_sqrt_len_tokens"}


@dataclass
class Pooling:
    """How a sentence vector is made of the token vectors, as a sentence-transformers directory says it: the pooling
    modes (1_Pooling/config.json; several are concatenated), whether a prompt's tokens count (include_prompt), whether
    a Normalize module follows, and the named prompts (config_sentence_transformers.json)."""

    modes: tuple[str, ...] = ("mean",)
    include_prompt: bool = True
    normalize: bool = False
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None

    def prompt(self, text: str | None = None, name: str | None = None) -> str | None:
        """The prefix to put before every text: `text` itself, the prompt called `name`, else the default prompt."""
        if text is not None and name is not None:
            raise BertkitError("give a prompt or a prompt name, not both.")
        if name is not None:
            if name not in self.prompts:
                raise BertkitError(f"the model has no prompt named {name!r}; its prompts are: {', '.join(sorted(self.prompts)) or 'none'}.")
            return self.prompts[name]
        if text is None and self.default_prompt_name is not None:
            return self.prompts.get(self.default_prompt_name)
        return text


def pooling_modes(pooling) -> tuple[str, ...]:
    """"mean", "cls,max", ("cls", "max") or a Pooling -> its modes, each one of POOLINGS."""
    if isinstance(pooling, Pooling):
        return pooling.modes
    modes = tuple(pooling.split(",")) if isinstance(pooling, str) else tuple(pooling)
    modes = tuple(POOLING_ALIASES.get(m.strip(), m.strip()) for m in modes)
    bad = [m for m in modes if m not in POOLINGS]
    if not modes or bad:
        raise BertkitError(f"pooling must be one or more of {', '.join(POOLINGS)}, not {pooling!r}.")
    return modes


def sentence_pooling(d: Path | None) -> Pooling:
    """The pooling a sentence-transformers directory declares (modules.json, its Pooling and Normalize modules,
    config_sentence_transformers.json's prompts); a plain checkpoint: mean pooling, unnormalised, no prompts."""
    if d is None:
        return Pooling()
    d = Path(d)
    pooling_dir, normalize = (d / "1_Pooling") if (d / "1_Pooling" / "config.json").is_file() else None, False
    if (d / "modules.json").is_file():
        modules = read_json(d / "modules.json", list)
        if not all(isinstance(m, dict) and isinstance(m.get("type", ""), str) for m in modules):
            raise BertkitError(f"{d / 'modules.json'} must be a list of modules, each an object with a type.")
        pooling_dir = next((d / m.get("path", "") for m in modules if m.get("type", "").endswith("Pooling")), None)
        normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
    modes, include_prompt = ("mean",), True
    if pooling_dir is not None and (pooling_dir / "config.json").is_file():
        path = pooling_dir / "config.json"
        cfg = read_json(path)
        if not isinstance(cfg, dict):
            raise BertkitError(f"{path} must hold an object.")
        if "pooling_mode" in cfg:
            try:
                modes = pooling_modes(cfg["pooling_mode"])
            except BertkitError as e:
                raise BertkitError(f"{path}: {e}") from None
        else:
            modes = tuple(mode for key, mode in LEGACY_POOLING.items() if cfg.get(key) is True) or ("mean",)
        include_prompt = cfg.get("include_prompt", True)
        if not isinstance(include_prompt, bool):
            raise BertkitError(f"{path}: include_prompt must be true or false, not {include_prompt!r}.")
    prompts, default = {}, None
    if (d / "config_sentence_transformers.json").is_file():
        path = d / "config_sentence_transformers.json"
        st = read_json(path)
        prompts = st.get("prompts") or {} if isinstance(st, dict) else {}
        if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
            raise BertkitError(f"{path}: prompts must map names to prefix strings.")
        default = st.get("default_prompt_name")
        if default is not None and default not in prompts:
            raise BertkitError(f"{path}: default_prompt_name {default!r} is not one of its prompts.")
    return Pooling(modes, include_prompt, normalize, prompts, default)


def pool(h: torch.Tensor, mask: torch.Tensor, modes: tuple[str, ...]) -> torch.Tensor:
    """Token vectors h [B, T, H] (fp32) and the tokens that count [B, T] -> [B, H * len(modes)], as sentence-transformers'
    Pooling computes each mode (right padding: position weights start at 1, the last token is the last one counted)."""
    m = mask.to(h.dtype).unsqueeze(-1)  # [B, T, 1]
    out = []
    for mode in modes:
        if mode == "cls":  # the first token counted ([CLS], or the first past an excluded prompt)
            out.append(h.gather(1, mask.int().argmax(1)[:, None, None].expand(-1, 1, h.shape[-1])).squeeze(1))
        elif mode == "max":
            out.append(h.masked_fill(m == 0, float("-inf")).max(1).values)
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            n = m.sum(1).clamp(min=1e-9)
            out.append((h * m).sum(1) / (n if mode == "mean" else n.sqrt()))
        elif mode == "weightedmean":
            w = m * torch.arange(1, h.shape[1] + 1, dtype=h.dtype, device=h.device).view(1, -1, 1)
            out.append((h * w).sum(1) / w.sum(1).clamp(min=1e-9))
        else:  # lasttoken
            last = h.shape[1] - 1 - mask.int().flip(1).argmax(1)
            out.append((h * m).gather(1, last[:, None, None].expand(-1, 1, h.shape[-1])).squeeze(1))
    return torch.cat(out, dim=-1)


def prompt_length(tok: Tokenizer, prompt: str) -> int:
    """Tokens a prompt takes at the start of an input ([CLS] and its pieces, not a closing special token), as
    sentence-transformers counts them to leave them out of pooling."""
    ids = tok.encode(prompt)
    specials = {tok.backend.token_to_id(t) for t in tok.specials.values()} - {None}
    return len(ids) - 1 if ids and ids[-1] in specials else len(ids)


def encode_sentences(
    model: BertModel,
    tok: Tokenizer,
    texts: list[str],
    pooling: str | tuple[str, ...] | Pooling = "mean",
    normalize: bool = False,
    batch_size: int = 32,
    max_length: int | None = None,
    progress: bool = False,
    prompt: str | None = None,
    include_prompt: bool = True,
    skips: list[int] | None = None,
) -> np.ndarray:
    """One vector per text ([len(texts), H * modes] float32), batched by length to waste little on padding.

    pooling: one of POOLINGS, several (concatenated), or a directory's Pooling (its modes and include_prompt).
    prompt: a prefix put before every text ("query: "); with include_prompt False its tokens are left out of pooling.
    skips: instead, the tokens at the start of each text left out of pooling (texts that carry different prompts)."""
    modes = pooling_modes(pooling)
    if isinstance(pooling, Pooling):
        include_prompt = pooling.include_prompt
    if prompt:
        texts = [prompt + t for t in texts]
    if skips is None:
        skips = [prompt_length(tok, prompt) if prompt and not include_prompt else 0] * len(texts)
    elif len(skips) != len(texts):
        raise BertkitError(f"skips: {len(skips)} counts for {len(texts)} texts.")
    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), model.config.hidden_size * len(modes)), dtype=np.float32)
    bar = _progress(len(texts), "embedding") if progress else None
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        batch = {k: v.to(device) for k, v in tok([texts[i] for i in idx], max_length=max_length).items()}
        with torch.inference_mode():
            h = model(**batch).last_hidden_state.float()  # pooled in fp32 whatever the model's dtype
        skip = torch.tensor([skips[i] for i in idx], device=device)
        counted = batch["attention_mask"] * (torch.arange(h.shape[1], device=device)[None, :] >= skip[:, None])
        v = pool(h, counted, modes)
        if normalize:
            v = torch.nn.functional.normalize(v.float(), dim=-1)
        out[idx] = v.float().cpu().numpy()
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    return out


def sentence_max_length(d: Path, tok: Tokenizer, config: BertConfig) -> int:
    """sentence-transformers' max_seq_length when the checkpoint is one of theirs, else the model's limit."""
    limit = min(tok.model_max_length, config.max_position_embeddings)
    st = d / "sentence_bert_config.json"
    if st.is_file():
        n = read_json(st).get("max_seq_length", limit)
        if not isinstance(n, int) or n < 1:
            raise BertkitError(f"{st}: max_seq_length must be a positive whole number, not {n!r}.")
        limit = min(limit, n)
    return limit


def onnx_embed(onnx_path, texts: list[str], pooling: str = "mean", normalize: bool = False, batch_size: int = 32,
               max_length: int | None = None, progress: bool = False) -> np.ndarray:
    """encode_sentences through onnxruntime: [len(texts), H] float32."""
    runner, tok = load_for_inference(onnx_path, "onnx", kind="encoder")
    return encode_sentences(runner, tok, texts, pooling, normalize, batch_size, max_length, progress)


def onnx_predict(onnx_path, inputs: list, batch_size: int = 64) -> list[dict]:
    """predict_texts through onnxruntime: texts, or (text_a, text_b) pairs for a pair model."""
    runner, tok = load_for_inference(onnx_path, "onnx", kind="task")
    return predict_texts(runner, tok, inputs, batch_size)


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="text", file=sys.stderr, disable=None)


def mask_predictions(model, batch: dict, mask_id: int, k: int) -> tuple[list[list[int]], list[list[float]], list[int]]:
    """The top k tokens at every [MASK] of a batch, the MLM head run only at the M masks: ([M][k] ids, [M][k]
    probabilities, masks per row). The one fill-mask of `bertkit fill-mask` and the server's /v1/fill-mask."""
    with torch.inference_mode():
        h = model.bert(**batch).last_hidden_state  # [B, T, H]
        where = batch["input_ids"] == mask_id  # [B, T]
        logits = model.mlm(h[where], model.bert.embed.word.weight)  # [M, V]
        probs, top = logits.float().softmax(-1).topk(min(k, logits.shape[-1]), dim=-1)  # [M, k]
    return top.tolist(), probs.tolist(), where.sum(1).tolist()

