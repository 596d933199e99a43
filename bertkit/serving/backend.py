"""What `bertkit serve` runs behind HTTP: the model backends.

A backend is a loaded model behind a few methods (`Backend`): which endpoints it serves, the token
length of each input, and `run`, one synchronous call over a list of inputs that returns what
`bertkit predict` prints for each. `ModelBackend` runs a model through the very functions the
commands use (predict.predict_texts, predict.encode_sentences, the MLM head as fill-mask does): one
of bertkit's torch models (`load_torch`) or an ONNX export in onnxruntime (`load_onnx`), both loaded
by load.load_for_inference.
"""

from __future__ import annotations

import importlib.util
from typing import Protocol

import torch

from ..errors import BertkitError
from ..heads import TASKS, BertForMaskedLM, hf_task, task_of
from ..kernels import kernels_of
from .load import check_model, load_for_inference, resolve_precision
from .predict import encode_sentences, mask_predictions, predict_texts, prompt_length, sentence_max_length, sentence_pooling

ENDPOINTS = ("embed", "fill-mask", "classify", "ner")
MAX_TOP_K = 50  # fill-mask computes this many candidates per mask; a request asks for top_k <= it


# ---- backends: what runs the model ---------------------------------------------------------------


class Backend(Protocol):
    """A loaded model as the server sees it. `run` is called from one inference thread at a time."""

    endpoints: tuple[str, ...]  # which of ENDPOINTS it serves
    pairs: bool  # classify takes pairs [a, b]
    max_length: int  # tokens; longer inputs are truncated and flagged
    pooling: tuple[str, ...]  # embed: the pooling modes (predict.POOLINGS), concatenated
    width: int  # embed: the vector's width (hidden size times the modes)

    def describe(self) -> dict: ...

    def lengths(self, endpoint: str, items: list) -> list[int]:
        """Untruncated token counts (with [CLS]/[SEP]), for grouping by length. Embed items are texts or
        (prompt, text) pairs (TEI's prompt_name), whose prompt goes before its text."""

    def run(self, endpoint: str, items: list, lengths: list[int]) -> list[dict]:
        """One result row per item, in order (embed rows carry a float32 numpy vector)."""


ENDPOINTS_OF = {"classify": ("classify",), "pair": ("classify",), "ner": ("ner",), "mlm": ("embed", "fill-mask"),
                "encoder": ("embed",)}


class ModelBackend:
    """A model and its tokenizer behind the functions the commands use (predict.predict_texts,
    predict.encode_sentences, the MLM head at the masks as tasks.fill_mask). The model is one of bertkit's torch
    models or bertkit.export's OnnxRunner, which is called like one."""

    def __init__(self, model, tok, task: str, max_length: int, source, kind: str, bf16: bool = False):
        self.model, self.tok, self.task, self.max_length, self.kind, self.bf16 = model, tok, task, max_length, kind, bf16
        self.source, self.endpoints, self.pairs = str(source), ENDPOINTS_OF[task], task == "pair"
        self.encoder = getattr(model, "bert", model)  # the backbone, for embed
        self.device = next(model.parameters()).device
        self.kernels = {"onnx": "onnxruntime", "openvino": "openvino"}.get(kind) or kernels_of(model)
        self.precision = getattr(model, "precision", "bf16" if bf16 else "fp32")  # what load_for_inference chose
        self.precision_note = getattr(model, "precision_note", f"{self.precision}, onnxruntime")
        self.bf16 = self.precision == "bf16"
        # the pooling a sentence-transformers directory declares (normalising stays each request's option)
        sentence = sentence_pooling(getattr(model, "source_dir", None))
        self.pooling, self.include_prompt = sentence.modes, sentence.include_prompt
        self.width = self.encoder.config.hidden_size * len(self.pooling)

    def describe(self) -> dict:

        return {"model": self.source, "task": self.task, "backend": self.kind, "bf16": self.bf16, "kernels": self.kernels,
                "precision": self.precision, "precision_note": self.precision_note, "device": str(self.device),
                "threads": torch.get_num_threads(), "max_length": self.max_length, "endpoints": list(self.endpoints),
                "pooling": ",".join(self.pooling)}

    def lengths(self, endpoint: str, items: list) -> list[int]:
        if endpoint == "embed":
            inputs = [prompted(x) for x in items]
        else:
            inputs = [tuple(x) for x in items] if self.pairs else items
        return [len(e.ids) for e in self.tok.backend.encode_batch(inputs)]

    def run(self, endpoint: str, items: list, lengths: list[int]) -> list[dict]:

        if endpoint == "embed":
            return self._embed(items, lengths)
        if endpoint == "fill-mask":
            return self._fill_mask(items, lengths)
        return predict_texts(self.model, self.tok, items, batch_size=len(items))

    def _embed(self, items: list, lengths: list[int]) -> list[dict]:
        """items: texts, or (prompt, text) pairs: the prompt goes before its text, and its tokens are left out of pooling
        where the model's Pooling says include_prompt false (as sentence-transformers does)."""
        texts = [prompted(x) for x in items]
        counts = {} if self.include_prompt else {x[0]: prompt_length(self.tok, x[0]) for x in items if not isinstance(x, str)}
        skips = [0 if isinstance(x, str) else counts.get(x[0], 0) for x in items]
        vectors = encode_sentences(self.encoder, self.tok, texts, self.pooling, batch_size=len(texts), max_length=self.max_length,
                                   skips=skips)
        return [{"text": t, "embedding": v, "truncated": n > self.max_length} for t, v, n in zip(texts, vectors, lengths)]

    def _fill_mask(self, texts: list[str], lengths: list[int]) -> list[dict]:
        """predict.mask_predictions (the MLM head only at the [MASK] positions), rows as the API writes them."""
        batch = {k: v.to(self.device) for k, v in self.tok(texts, max_length=self.max_length).items()}
        top, probs, counts = mask_predictions(self.model, batch, self.tok.mask_token_id, MAX_TOP_K)
        rows, m = [], 0
        for text, n, count in zip(texts, lengths, counts):
            masks = [[{"token": t, "probability": round(p, 6)} for t, p in zip(self.tok.convert_ids_to_tokens(ids), ps)]
                     for ids, ps in zip(top[m:m + count], probs[m:m + count])]
            rows.append({"text": text, "masks": masks, "truncated": n > self.max_length})
            m += count
        return rows


def load_torch(path, bf16: bool = False, threads: int | None = None, int8: bool = False, kernels: str = "auto",
               precision: str | None = None) -> ModelBackend:
    """The checkpoint's own task: bertkit's task entry in config.json, else an MLM head, else an encoder."""
    model, tok = load_for_inference(path, "torch", bf16, threads=threads, int8=int8, kernels=kernels, precision=precision)
    d = model.source_dir
    if "bertkit" in model.config.extra or hf_task(model.config) is not None:  # a task bertkit trained, or a transformers classifier
        task, max_length = task_of(model.config).task, task_of(model.config).max_length
    else:
        task, max_length = "mlm" if isinstance(model, BertForMaskedLM) else "encoder", sentence_max_length(d, tok, model.config)
    return ModelBackend(model, tok, task, max_length, d, "torch", bf16)


def load_onnx(path, bf16: bool = False, threads: int | None = None, kind: str = "onnx") -> ModelBackend:
    """An export of `bertkit export onnx` (the .onnx file or its directory) in onnxruntime (kind "onnx") or OpenVINO."""
    runner, tok = load_for_inference(path, kind, bf16, threads=threads)
    if runner.task in TASKS:
        return ModelBackend(runner, tok, runner.task, task_of(runner.config).max_length, runner.path, kind)
    return ModelBackend(runner, tok, "encoder", sentence_max_length(runner.source_dir, tok, runner.config), runner.path, kind)


def backend_factory(path, kind: str = "torch", bf16: bool = False, threads: int | None = None, int8: bool = False,
                    kernels: str = "auto", precision: str | None = None):
    """A function that loads the backend (called in a thread once the server listens); what cannot
    work (a missing extra, bf16 on ONNX, no .onnx file) fails here, before the port opens."""
    if kind == "torch":
        check_model(path)
        resolve_precision(precision, bf16, int8)  # a contradiction is refused before the port opens
        return lambda: load_torch(path, bf16, threads, int8, kernels, precision)
    if kind not in ("onnx", "openvino"):
        raise BertkitError(f"--backend must be torch, onnx or openvino, not {kind!r}.")
    from .onnx import onnx_file

    engine = "onnxruntime" if kind == "onnx" else "openvino"
    if importlib.util.find_spec(engine) is None:
        raise BertkitError(f"--backend {kind} needs {engine}: pip install 'bertkit[{kind}]'.")
    if bf16 or int8 or precision in ("bf16", "int8"):
        flag = "--bf16" if bf16 else "--int8" if int8 else f"--precision {precision}"
        raise BertkitError(f"{flag} applies to --backend torch; an ONNX graph runs in the precision it was exported in.")
    onnx_file(path)
    return lambda: load_onnx(path, threads=threads, kind=kind)


def prompted(item) -> str:
    """An embed item as the model reads it: a text, or a (prompt, text) pair's prompt before its text."""
    return item if isinstance(item, str) else item[0] + item[1]
