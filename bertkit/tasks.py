"""What the commands do, as plain functions: summary, fill-mask, generate, sentence embeddings, convert.

The CLI only parses arguments and calls these; they are as usable from Python.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import read_pretrained
from .config import PRESETS, BertConfig
from .data.seq2seq import join_cjk
from .errors import BertkitError
from .generate import generate
from .heads import BertForMaskedLM, BertForPreTraining, task_of
from .io.files import check_new_dir, read_lines, write_atomic
from .model import BertModel
from .seq2seq import CausalLM, Seq2SeqLM
from .serving.load import default_device, load_for_inference, say_precision
from .serving.predict import (
    encode_sentences,
    mask_predictions,
    pooling_modes,
    predict_texts,
    relevance,
    sentence_max_length,
    sentence_pooling,
)
from .tokenizer import Tokenizer

# ---- summary ------------------------------------------------------------------------------

HEADS = {"base": BertModel, "mlm": BertForMaskedLM, "pretraining": BertForPreTraining}


@dataclass
class SummaryRow:
    name: str
    kind: str
    shape: str
    params: int


def summary(model_name: str, head: str = "base", seq_len: int = 128, depth: int = 2) -> tuple[list[SummaryRow], int]:
    """Modules, output shapes for a [1, seq_len] input, parameter counts; and the total.

    The model is built on the meta device: no memory for weights, so bert-large costs nothing.
    """
    config = _config_of(model_name) if Path(model_name).is_dir() or model_name not in PRESETS else BertConfig.from_preset(model_name)
    seq_len = min(seq_len, config.max_position_embeddings)
    cls = CausalLM if config.is_decoder else Seq2SeqLM if config.is_encoder_decoder else HEADS[head]  # a generative model has one head
    with torch.device("meta"):
        model = cls(config)
        ids = torch.zeros(1, seq_len, dtype=torch.long)
    shapes: dict[str, str] = {}
    # "layers.3.attn" is listed as "layers[3].attn": a list index is not a level of its own.
    shown = {
        re.sub(r"\.(\d+)", r"[\1]", name): m
        for name, m in model.named_modules()
        if name and not isinstance(m, (nn.ModuleList, nn.Dropout))
    }
    shown = {name: m for name, m in shown.items() if name.count(".") < depth}
    hooks = [m.register_forward_hook(lambda m, i, o, n=name: shapes.__setitem__(n, _shape(o))) for name, m in shown.items()]
    model(ids, decoder_input_ids=ids[:, :1]) if config.is_encoder_decoder else model(ids)
    for h in hooks:
        h.remove()
    rows = [SummaryRow(name, type(m).__name__, shapes.get(name, "-"), _count(m)) for name, m in shown.items()]
    return rows, _count(model)


def _config_of(name: str) -> BertConfig:
    from .checkpoint import find_config
    from .io.hub import resolve

    return BertConfig.from_json_file(find_config(resolve(name)))


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())  # parameters() yields a tied tensor once


def _shape(o) -> str:
    if isinstance(o, torch.Tensor):
        return str(list(o.shape))
    for field in ("last_hidden_state", "logits", "mlm_logits"):
        if isinstance(getattr(o, field, None), torch.Tensor):
            return str(list(getattr(o, field).shape))
    return "-"


def format_summary(rows: list[SummaryRow], total: int) -> str:
    w = max(len(r.name) + len(r.kind) + 6 for r in rows)
    lines = [f"{'Layer (type)':<{w}}{'Output shape':<18}{'Param #':>14}", "=" * (w + 32)]
    for r in rows:
        indent = "  " * r.name.count(".")
        lines.append(f"{indent + r.name.split('.')[-1] + ' (' + r.kind + ')':<{w}}{r.shape:<18}{r.params:>14,}")
    lines += ["=" * (w + 32), f"Total params: {total:,}"]
    return "\n".join(lines)


# ---- fill-mask ----------------------------------------------------------------------------


def check_text(text: str) -> None:
    if not text.strip():
        raise BertkitError("the text is empty.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes on the command line arrive as surrogates
        raise BertkitError("the text is not valid UTF-8.") from None


def fill_mask_command(model_name: str, text: str, top_k: int = 5, precision: str | None = None) -> list[list[tuple[str, float]]]:
    """`bertkit fill-mask`: check the text first, then load the model with its MLM head (precision: auto by default)."""
    check_text(text)
    model, tok = load_for_inference(model_name, kind="mlm", precision=precision)
    return fill_mask(model, tok, text, top_k)


def fill_mask(model: BertForMaskedLM, tok: Tokenizer, text: str, top_k: int = 5) -> list[list[tuple[str, float]]]:
    """For each [MASK] in `text`, the top_k tokens and their probabilities."""
    check_text(text)
    batch = tok(text, truncation=False)
    ids = batch["input_ids"]
    if ids.shape[1] > model.config.max_position_embeddings:
        raise BertkitError(f"the text is {ids.shape[1]} tokens long; the model reads at most {model.config.max_position_embeddings}.")
    if not bool((ids[0] == tok.mask_token_id).any()):
        raise BertkitError("the text has no [MASK] token to fill.")
    device = next(model.parameters()).device
    top, probs, _ = mask_predictions(model, {k: v.to(device) for k, v in batch.items()}, tok.mask_token_id, top_k)
    return [list(zip(tok.convert_ids_to_tokens(t), p)) for t, p in zip(top, probs)]


# ---- generate ------------------------------------------------------------------------------


def load_generator(model_name: str, device=None):
    """(model, tokenizer) of a checkpoint that can generate: a decoder, an encoder-decoder, or an encoder with a
    causal or UniLM mask and an MLM head (read from the checkpoint's config; the class named in the error otherwise)."""
    d, config, conv = read_pretrained(model_name)
    cls = CausalLM if config.is_decoder else Seq2SeqLM if config.is_encoder_decoder else BertForMaskedLM
    model = cls.from_converted(d, config, conv, verbose=False).to(device or default_device())
    if not Tokenizer.can_load(d):
        raise BertkitError(f"{d} has no tokenizer (tokenizer.json or vocab.txt) to read the prompt with.")
    return model, Tokenizer.from_pretrained(d)


def generate_text(model, tok: Tokenizer, text: str, **settings) -> str:
    """The continuation of `text` (a decoder, or a causal encoder), or the target for it (an encoder-decoder or a
    UniLM encoder), decoded without special tokens. settings: generate()'s keyword arguments."""
    check_text(text)
    ids = tok(text, truncation=False, padding=False, return_tensors=None)["input_ids"][0]
    c = model.config
    end = next((i for i in (tok.eos_token_id, tok.sep_token_id, c.eos_token_id) if i is not None and i < c.vocab_size), None)
    if c.is_decoder and c.extra.get("bertkit", {}).get("task") == "seq2seq":  # trained as `source <end> target <end>`
        ids = tok(text, truncation=False, padding=False, return_tensors=None, add_special_tokens=False)["input_ids"][0] + [end]
    elif (c.is_decoder or (not c.is_encoder_decoder and c.attention_mode == "causal")) and ids[-1:] == [tok.sep_token_id]:
        ids = ids[:-1]  # a BERT tokenizer's [SEP] would end the text the model should continue
    settings.setdefault("end_id", end)
    out = generate(model, ids, **settings)
    text = tok.decode(out, skip_special_tokens=True)
    return join_cjk(text) if tok.is_bert else text  # WordPiece spaces every token apart, Chinese too


def generate_command(model_name: str, text: str, seed: int | None = None, **settings) -> str:
    """`bertkit generate`: check the text first, then load and generate."""
    check_text(text)
    model, tok = load_generator(model_name)
    if seed is not None:
        settings["generator"] = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    return generate_text(model, tok, text, **settings)


# ---- sentence embeddings -----------------------------------------------------------------


def embed_file(
    model_name: str,
    input_path: str,
    output_path: str,
    pooling: str | None = None,
    normalize: bool | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    long: str = "truncate",
    progress: bool = True,
    backend: str = "torch",
    bf16: bool = False,
    int8: bool = False,
    kernels: str = "auto",
    prompt: str | None = None,
    prompt_name: str | None = None,
    precision: str | None = None,
) -> int:
    """`bertkit embed`: one line in, one vector out, written to a .npy atomically. Returns the count.

    pooling, normalize: None follows the model's sentence-transformers configuration (its 1_Pooling and Normalize
    modules; a plain checkpoint: mean, unnormalised); a pooling mode (or several, comma-separated) overrides it.
    prompt: a prefix put before every line; prompt_name: one of the model's named prompts (else its default prompt).
    backend "onnx" / "openvino": model_name is an embed/encoder export (`bertkit export onnx`), run by onnxruntime or
    OpenVINO (which picks its own precision: bf16 where the CPU has bf16 hardware).
    precision (or the older bf16 / int8 switches), kernels: see load.load_for_inference (default: auto).
    """
    texts = read_lines(input_path)
    if not output_path.endswith(".npy"):
        raise BertkitError(f"{output_path}: the output must be a .npy file.")
    out_dir = Path(output_path).resolve().parent
    if not out_dir.is_dir():
        raise BertkitError(f"the output directory {out_dir} does not exist.")
    if Path(output_path).is_dir():
        raise BertkitError(f"{output_path} is a directory; give a .npy file name.")
    if pooling is not None:
        pooling_modes(pooling)  # a bad mode is refused before the model loads
    model, tok = load_for_inference(model_name, backend, bf16, kind="encoder", int8=int8, kernels=kernels, precision=precision)
    declared = sentence_pooling(model.source_dir)
    limit = sentence_max_length(model.source_dir, tok, model.config)
    if max_length is not None and max_length > model.config.max_position_embeddings:
        raise BertkitError(f"--max-length {max_length} exceeds the model's limit of {model.config.max_position_embeddings} tokens.")
    max_length = max_length or limit
    prefix = declared.prompt(prompt, prompt_name)
    _check_lengths(tok, [prefix + t for t in texts] if prefix else texts, max_length, long, input_path)
    vectors = encode_sentences(model, tok, texts, pooling or declared.modes, declared.normalize if normalize is None else normalize,
                               batch_size, max_length, progress, prompt=prefix, include_prompt=declared.include_prompt)
    write_atomic(output_path, lambda f: np.save(f, vectors))
    say_precision(model)
    return len(texts)


# ---- rerank ---------------------------------------------------------------------------------


def rerank_file(model_name: str, query: str, input_path: str, raw_scores: bool = False, top_k: int | None = None,
                batch_size: int = 32, bf16: bool = False, int8: bool = False, kernels: str = "auto",
                precision: str | None = None) -> list[dict]:
    """`bertkit rerank`: score each line of input_path against query with a cross-encoder (a pair classifier: one of
    bertkit's, or a transformers sequence classifier such as a bge reranker), best first.

    Each row: {"index": the line's 0-based index, "score": the relevance probability (raw_scores: its log-odds, a
    one-logit reranker's logit), "text"}, the rows sorted by score (ties keep the file's order); top_k keeps the best k."""
    if not isinstance(query, str) or not query.strip():
        raise BertkitError("--query must be a non-empty text.")
    if top_k is not None and top_k < 1:
        raise BertkitError(f"--top-k must be at least 1, not {top_k}.")
    texts = read_lines(input_path)
    model, tok = load_for_inference(model_name, "torch", bf16, kind="task", int8=int8, kernels=kernels, precision=precision)
    if task_of(model.config).task != "pair":
        what = "words" if task_of(model.config).task == "ner" else "single texts"
        raise BertkitError(f"{model_name} classifies {what}; "
                           "rerank needs a pair classifier (a cross-encoder) that scores (query, text) pairs.")
    rows = predict_texts(model, tok, [(query, t) for t in texts], batch_size)
    cut = sum(r["truncated"] for r in rows)
    if cut:
        print(f"note: {cut} of {len(texts)} (query, line) pairs exceed {task_of(model.config).max_length} tokens and were "
              "truncated.", file=sys.stderr)
    out = [{"index": i, "score": relevance(r, raw_scores), "text": t} for i, (t, r) in enumerate(zip(texts, rows))]
    say_precision(model)
    return sorted(out, key=lambda d: -d["score"])[:top_k]


def _check_lengths(tok: Tokenizer, texts: list[str], max_length: int, long: str, path: str) -> None:
    """Say once how many lines exceed max_length (and truncate), or refuse (long="error")."""
    if long not in ("truncate", "error"):
        raise BertkitError(f"--long must be 'truncate' or 'error', not {long!r}.")
    lengths = [len(e.ids) for e in tok.backend.encode_batch(texts)]
    over = [n for n, length in enumerate(lengths, 1) if length > max_length]
    if not over:
        return
    if long == "error":
        raise BertkitError(f"{path} line {over[0]} is {lengths[over[0] - 1]} tokens, over the limit of {max_length} ({len(over)} such lines).")
    print(f"note: {len(over)} of {len(texts)} lines in {path} exceed {max_length} tokens and were truncated (first: line {over[0]}).", file=sys.stderr)


# ---- convert ------------------------------------------------------------------------------


def convert(src: str, dst: str, lowercase: bool | None = None) -> str:
    """Any checkpoint bertkit reads (HF .bin / sharded, Google TF) -> an HF directory with safetensors.

    The task class follows the weights present: MLM and NSP heads -> BertForPreTraining, MLM
    only -> BertForMaskedLM, else BertModel. Returns a line describing what was written.
    """
    check_new_dir(dst)  # before the expensive read
    d, config, conv = read_pretrained(src)
    heads = {k.split(".")[0] for k in conv.state_dict}
    cls = BertForPreTraining if {"mlm", "nsp"} <= heads else BertForMaskedLM if "mlm" in heads else BertModel
    model = cls.from_converted(d, config, conv, new_heads=cls is BertModel, verbose=True)
    tok = None
    if Tokenizer.can_load(d):
        tok = Tokenizer.from_pretrained(d)
        if lowercase is not None:
            tok = Tokenizer.from_vocab(tok.vocab(), lowercase=lowercase, model_max_length=tok.model_max_length)
    model.save_pretrained(dst, tokenizer=tok)
    what = "no tokenizer files (none beside the checkpoint)" if tok is None else "tokenizer files"
    return f"wrote {dst}: {cls.__name__}, {_count(model):,} parameters, config.json, model.safetensors, {what}."
