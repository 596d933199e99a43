"""The `bertkit` command. Parsing only: each subcommand calls a function in tasks.py.

Problems a user can fix (a missing file, a bad line, a checkpoint that does not fit its
config) print one sentence and exit 1; `--debug` shows the traceback instead.

Why ~530 lines: every command's arguments with their help; parsing only, each command calls a function where its logic lives.
"""

from __future__ import annotations

import argparse
import sys

from .errors import BertkitError
from .flags import add_flags, positive_int


def cmd_summary(a: argparse.Namespace) -> None:
    from .tasks import format_summary, summary

    print(format_summary(*summary(a.model, head=a.head, seq_len=a.seq_len, depth=a.depth)))


def cmd_fill_mask(a: argparse.Namespace) -> None:
    from .tasks import fill_mask_command

    for n, candidates in enumerate(fill_mask_command(a.model, a.text, a.top_k, a.precision), 1):
        print(f"[MASK] #{n}:")
        for token, p in candidates:
            print(f"  {token:<16} {p:.4f}")


def cmd_generate(a: argparse.Namespace) -> None:
    from .tasks import generate_command

    print(generate_command(a.model, a.text, seed=a.seed, max_new_tokens=a.max_new_tokens, strategy=a.strategy,
                           num_beams=a.num_beams, top_k=a.top_k, top_p=a.top_p, temperature=a.temperature,
                           repetition_penalty=a.repetition_penalty, min_new_tokens=a.min_new_tokens,
                           length_penalty=a.length_penalty))


def cmd_embed(a: argparse.Namespace) -> None:
    from .tasks import embed_file

    n = embed_file(
        a.model, a.input, a.output, a.pooling, a.normalize, a.batch_size, a.max_length, a.long, progress=not a.quiet, backend=a.backend, bf16=a.bf16,
        int8=a.int8, kernels=a.kernels, prompt=a.prompt, prompt_name=a.prompt_name, precision=a.precision,
    )
    print(f"wrote {n} vector{'s' if n != 1 else ''} to {a.output}", file=sys.stderr)


def cmd_rerank(a: argparse.Namespace) -> None:
    import json

    from .tasks import rerank_file

    for row in rerank_file(a.model, a.query, a.input, a.raw_scores, a.top_k, a.batch_size, a.bf16, a.int8, a.kernels, a.precision):
        print(json.dumps(row, ensure_ascii=False))


def cmd_convert(a: argparse.Namespace) -> None:
    from .tasks import convert

    print(convert(a.src, a.dst, lowercase=a.lowercase))


def cmd_train(a: argparse.Namespace) -> None:
    from .train.finetune import TrainConfig, train
    from .train.seq2seq import Seq2SeqConfig, train_seq2seq

    mine, other = (Seq2SeqConfig, TrainConfig) if a.task == "seq2seq" else (TrainConfig, Seq2SeqConfig)
    names = refuse_unused(a, mine, other, f"{a.task} training")
    if a.task == "seq2seq":
        train_seq2seq(Seq2SeqConfig(**{k: v for k, v in vars(a).items() if k in names}))
    else:
        train(TrainConfig(**{k: v for k, v in vars(a).items() if k in names}))


def cmd_evaluate(a: argparse.Namespace) -> None:
    import json

    from .serving.predict import evaluate_command

    print(json.dumps(evaluate_command(a.dir, a.data, a.split, a.batch_size, a.backend, a.bf16, a.int8, a.kernels, a.precision), indent=2, ensure_ascii=False))


def cmd_predict(a: argparse.Namespace) -> None:
    import json

    from .serving.predict import predict_command

    for row in predict_command(a.dir, a.texts, a.input, a.batch_size, a.backend, a.bf16, a.int8, a.kernels, a.precision):
        print(json.dumps(row, ensure_ascii=False))


def cmd_data_export(a: argparse.Namespace) -> None:
    from .data.corpus import ZH_CORPUS, export_corpus
    from .data.datasets import export_dataset

    print(export_corpus(a.dir) if a.name == ZH_CORPUS else export_dataset(a.name, a.dir))


def refuse_unused(a: argparse.Namespace, mine, other, what: str) -> set[str]:
    """The fields of run dataclass `mine`; a flag of `other` that `mine` lacks, set away from its default, is an error
    naming it (a flag a command does not use is never silently ignored)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(mine)}
    for f in dataclasses.fields(other):
        if f.name not in names and f.default is not dataclasses.MISSING and getattr(a, f.name, f.default) != f.default:
            raise BertkitError(f"--{f.name.replace('_', '-')} does not apply to {what}.")
    return names


def cmd_distill(a: argparse.Namespace) -> None:
    from .train.finetune import TrainConfig, train
    from .train.seq2seq import Seq2SeqConfig

    names = refuse_unused(a, TrainConfig, Seq2SeqConfig, "distillation (a token or sequence classifier student)")
    train(TrainConfig(**{k: v for k, v in vars(a).items() if k in names} | {"model": a.student}))


def cmd_pretrain(a: argparse.Namespace) -> None:
    import dataclasses

    from .train.pretrain import PretrainConfig, pretrain

    names = {f.name for f in dataclasses.fields(PretrainConfig)}
    result = pretrain(PretrainConfig(**{k: v for k, v in vars(a).items() if k in names}))
    if result and a.quiet:
        print(result["model"])


def cmd_vocab_build(a: argparse.Namespace) -> None:
    from .data.corpus import build_vocab

    tok = build_vocab(a.corpus, a.size, a.out, lowercase=a.lowercase)
    print(f"wrote a {tok.vocab_size}-token vocabulary to {a.out}")


def cmd_corpus_prepare(a: argparse.Namespace) -> None:
    from .data.corpus import Corpus, prepare
    from .tokenizer import Tokenizer

    out = prepare(a.corpus, Tokenizer.from_pretrained(a.tokenizer), a.out, shard_tokens=a.shard_tokens, wwm=a.wwm)
    c = Corpus(out)
    print(f"wrote {c.tokens:,} tokens in {len(c.shards)} shards to {out}")


# TrainConfig fields as flags: --name type (from the default), with these choices and help texts.
TRAIN_FLAGS = {
    "data": ("bundled dataset (reviews-zh, peoples-daily-ner) or a directory of train/dev/test files", None),
    "train": ("training file (overrides the data's train split)", None),
    "dev": ("dev file", None),
    "test": ("test file", None),
    "tokenizer": ("tokenizer directory (default: the checkpoint's; a preset trains one on the training texts)", None),
    "vocab_size": ("size of that trained vocabulary", None),
    "epochs": ("passes over the training data", None),
    "max_steps": ("optimizer steps (overrides --epochs)", None),
    "batch_size": ("global batch: over all processes and accumulation steps", None),
    "accum": ("gradient accumulation steps per optimizer step", None),
    "lr": ("peak learning rate", None),
    "crf_lr": ("the CRF's scores learn at --lr times this (bert4keras: 100-1000); needs --crf", None),
    "layer_decay": ("layer-wise learning-rate decay: the top layer at --lr times this, each layer below times this again, "
                    "the embeddings once more (1: off)", None),
    "weight_decay": ("AdamW weight decay (never on biases and LayerNorm)", None),
    "warmup": ("warm-up: a fraction of the steps (< 1) or a number of steps", None),
    "schedule": ("learning-rate schedule after warm-up", ["linear", "cosine", "constant"]),
    "clip": ("max gradient norm (0: off)", None),
    "max_length": ("tokens per example; longer ones are truncated (ner: read as windows) and counted in the log", None),
    "stride": ("ner: tokens two windows of a longer sentence share (default 32, at most half a window; -1: cut at --max-length)", None),
    "truncation": ("classify: a longer text keeps its head, or its first quarter and last three quarters", ["head", "head+tail"]),
    "pooling": ("classify, pair: the sentence vector: the [CLS] state (through the family's pooler) or the mean of the tokens", ["cls", "mean"]),
    "merge": ("ner: a word's tag from the window where it is farthest from a cut, or its emissions averaged over windows", ["edge", "mean"]),
    "bf16": ("bf16 autocast on CPU or GPU", None),
    "checkpointing": ("activation checkpointing: less memory for long sequences, ~1/3 more compute", None),
    "ema": ("EMA decay of the weights (e.g. 0.999; 0: off); evaluation uses the average", None),
    "adv": ("adversarial training on the word embeddings", ["fgm", "pgd"]),
    "adv_eps": ("adversarial perturbation size", None),
    "rdrop": ("R-Drop weight (0: off)", None),
    "loss": ("loss function", ["ce", "focal", "smooth"]),
    "focal_gamma": ("focal loss gamma", None),
    "smoothing": ("label smoothing", None),
    "class_weights": ("weigh classes by inverse frequency", ["inverse", "sqrt_inverse"]),
    "crf": ("CRF head for ner", None),
    "repair_bio": ("turn an I-X after O into B-X (default: keep and report)", None),
    "dropout": ("override the model's dropout probabilities", None),
    "bigram_buckets": ("add a table of hashed token bigrams (this many rows) to the embeddings; a checkpoint's starts at zero", None),
    "seed": ("seed of the data order, dropout and fresh weights", None),
    "eval_every": ("steps between dev evaluations (0: each epoch)", None),
    "save_every": ("steps between checkpoints", None),
    "patience": ("early stopping: evaluations without improvement (0: off)", None),
    "resume": ("continue the run in --out from its last checkpoint", None),
    "auto_resume": ("resume when --out holds a checkpoint of this run, else start afresh: one command for every restart", None),
    "save_minutes": ("also checkpoint when this many minutes have passed since the last checkpoint", None),
    "device": ("cpu, cuda, ... (default: cuda if available)", None),
    "quiet": ("no progress bar or messages", None),
}


DISTILL_FLAGS = {
    "temperature": "softmax temperature of the soft targets",
    "alpha": "weight of the soft-target loss (1 - alpha on the labels)",
    "hidden_weight": "hidden-state matching weight (same widths)",
    "layer_map": "teacher layer per student layer, e.g. 2,4,6 (default: evenly spaced)",
    "init_from_teacher": "copy embeddings and mapped layers from the teacher",
    "soft_targets": ("what the student matches: softmax of the logits, or a CRF tagger's per-word marginals (auto: crf when both have a CRF)",
                     ["auto", "logits", "crf"]),
}

# PretrainConfig fields as flags (--max-steps and --minutes are a required either-or group of their own).
PRETRAIN_FLAGS = {
    "corpus": "zh-corpus, a text file, or a prepared corpus directory",
    "tokenizer": "tokenizer directory (default: the checkpoint's or the prepared corpus's)",
    "objective": ("pretraining objective (clm: causal LM for a decoder or an encoder as GPT; span: T5's span corruption)",
                  ["mlm", "mlm+nsp", "mlm+sop", "electra", "clm", "span"]),
    "mean_span": "span: mean length of a corrupted span",
    "wwm": "whole-word masking (Chinese words by jieba)",
    "batch_size": "global batch (sequences)", "accum": "accumulation steps", "lr": "peak learning rate",
    "weight_decay": "AdamW weight decay", "warmup": "warm-up: a fraction of the steps (< 1) or a number of steps",
    "schedule": ("learning-rate schedule after warm-up", ["linear", "cosine", "constant"]),
    "clip": "max gradient norm", "max_length": "tokens per sequence", "mask_rate": "share of tokens (or words) masked (span: corrupted)",
    "bf16": "bf16 autocast", "checkpointing": "activation checkpointing: less memory for long sequences",
    "electra_weight": "ELECTRA's discriminator loss weight", "generator_fraction": "ELECTRA generator width / discriminator width",
    "bigram_buckets": "add a table of hashed token bigrams (this many rows) to the embeddings",
    "seed": "seed", "save_every": "steps between checkpoints", "resume": "continue the run in --out from its last checkpoint",
    "auto_resume": "resume when --out holds a checkpoint of this run, else start afresh: one command for every restart",
    "save_minutes": "also checkpoint when this many minutes have passed since the last checkpoint",
    "device": "cpu, cuda, ...", "quiet": "no progress bar or messages",
}


# Seq2SeqConfig's own fields as flags of `bertkit train seq2seq` (the shared ones come from TRAIN_FLAGS).
SEQ2SEQ_FLAGS = {
    "max_source_length": "seq2seq: source tokens (longer sources are cut and counted in the log)",
    "max_target_length": "seq2seq: target tokens with the end token; also the most a generation writes",
    "metric": ("seq2seq: the dev score that keeps the best model (auto: entity F1 for peoples-daily-ner, else exact match)",
               ["auto", "exact", "entities"]),
    "num_beams": "seq2seq: beams when generating for evaluation (1: greedy)",
    "eval_limit": "seq2seq: dev examples generated at each evaluation during training (0: all)",
}


def add_train_flags(s: argparse.ArgumentParser) -> None:
    from .train.finetune import TrainConfig
    from .train.seq2seq import Seq2SeqConfig

    add_flags(s, TrainConfig, TRAIN_FLAGS, types={"max_steps": positive_int})
    add_flags(s, Seq2SeqConfig, SEQ2SEQ_FLAGS)


PRECISION_HELP = ("auto (default): bf16 where the device has bf16 hardware (AVX512-BF16, AMX, a bf16 GPU), it measures "
                  "faster and the model's pooled vectors keep cosine >= 0.9999 to fp32 on check sentences, else fp32")
KERNELS_HELP = "auto: the kernel measured fastest on this CPU (oneDNN prepacked or torch's own; checked on load); or force one"


def add_kernel_flags(s: argparse.ArgumentParser) -> None:
    """--precision, --int8 and --kernels: what precision and CPU kernels run the model (serving.load.load_for_inference)."""
    s.add_argument("--precision", choices=["auto", "fp32", "bf16", "int8"], default=None, help=PRECISION_HELP)
    s.add_argument("--int8", action="store_true", help="int8 linear layers on the CPU (per-channel weights, per-token "
                                                        "activations; checked against fp32 on load): --precision int8")
    s.add_argument("--kernels", choices=["auto", "onednn", "torch"], default="auto", help=KERNELS_HELP)


def args_summary(s: argparse.ArgumentParser) -> None:
    s.add_argument("model", help="a checkpoint directory, hub name, or preset (e.g. bert-base-uncased)")
    s.add_argument("--head", choices=["base", "mlm", "pretraining"], default="base", help="which model to build")
    s.add_argument("--seq-len", type=positive_int, default=128, help="input length for the output shapes")
    s.add_argument("--depth", type=positive_int, default=2, help="how deep into the module tree to list")
    s.set_defaults(run=cmd_summary)


def args_fill_mask(s: argparse.ArgumentParser) -> None:
    s.add_argument("model", help="a checkpoint directory with an MLM head")
    s.add_argument("text", help='e.g. "Paris is the [MASK] of France."')
    s.add_argument("--top-k", type=positive_int, default=5)
    s.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=None, help=PRECISION_HELP)
    s.set_defaults(run=cmd_fill_mask)


def args_generate(s: argparse.ArgumentParser) -> None:
    s.add_argument("model", help="a checkpoint directory or hub name: a decoder, an encoder-decoder, or a causal/UniLM MLM")
    s.add_argument("text", help="the prompt (an encoder-decoder's source)")
    s.add_argument("--max-new-tokens", type=int, default=32, help="tokens to write at most")
    s.add_argument("--min-new-tokens", type=int, default=0, help="no end token before this many")
    s.add_argument("--strategy", choices=["greedy", "sample", "topk", "beam"], default="greedy")
    s.add_argument("--num-beams", type=int, default=4, help="beam: hypotheses kept")
    s.add_argument("--length-penalty", type=float, default=1.0, help="beam: score = log p / length ** this")
    s.add_argument("--top-k", type=int, default=10, help="sample: draw from the k most likely tokens (0: all)")
    s.add_argument("--top-p", type=float, default=1.0, help="sample: and from the smallest set holding this much probability")
    s.add_argument("--temperature", type=float, default=1.0, help="sample: below 1 sharpens, above 1 flattens")
    s.add_argument("--repetition-penalty", type=float, default=1.0, help="above 1 discourages tokens already written")
    s.add_argument("--seed", type=int, default=None, help="sample: the random seed")
    s.set_defaults(run=cmd_generate)


def args_embed(s: argparse.ArgumentParser) -> None:
    s.add_argument("model", help="a checkpoint directory or hub name")
    s.add_argument("--input", required=True, help="UTF-8 text file, one sentence per line")
    s.add_argument("--output", required=True, help="where to write the [lines, hidden] float32 .npy")
    s.add_argument("--pooling", default=None, metavar="MODE",
                   help="cls, mean, max, lasttoken, mean_sqrt_len_tokens or weightedmean (several, comma-separated, are "
                        "concatenated); default: the model's 1_Pooling config, else mean")
    norm = s.add_mutually_exclusive_group()
    norm.add_argument("--normalize", action="store_const", const=True, default=None,
                      help="scale each vector to unit length (default: when the model has a Normalize module)")
    norm.add_argument("--no-normalize", dest="normalize", action="store_const", const=False, help="never scale to unit length")
    prompt = s.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", default=None, help='a prefix put before every line, e.g. "query: "')
    prompt.add_argument("--prompt-name", default=None, help="one of the model's named prompts (config_sentence_transformers.json)")
    s.add_argument("--batch-size", type=positive_int, default=32)
    s.add_argument("--max-length", type=positive_int, default=None, help="token limit (default: the model's)")
    s.add_argument("--long", choices=["truncate", "error"], default="truncate", help="what to do with longer lines")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--backend", choices=["torch", "onnx", "openvino"], default="torch",
                   help="onnx, openvino: run an export (`bertkit export onnx`) in onnxruntime or OpenVINO")
    s.add_argument("--bf16", action="store_true", help="bfloat16 weights and activations: --precision bf16")
    add_kernel_flags(s)
    s.set_defaults(run=cmd_embed)


def args_rerank(s: argparse.ArgumentParser) -> None:
    s.add_argument("model", help="a pair classifier: bertkit's (train pair) or a transformers cross-encoder (a bge reranker)")
    s.add_argument("--query", required=True, help="the text every line is scored against")
    s.add_argument("--input", required=True, help="UTF-8 text file, one passage per line")
    s.add_argument("--top-k", type=positive_int, default=None, help="print only the best k")
    s.add_argument("--raw-scores", action="store_true", help="log-odds (a one-logit reranker's logit) instead of probabilities")
    s.add_argument("--batch-size", type=positive_int, default=32)
    s.add_argument("--bf16", action="store_true", help="bfloat16 weights and activations: --precision bf16")
    add_kernel_flags(s)
    s.set_defaults(run=cmd_rerank)


def args_convert(s: argparse.ArgumentParser) -> None:
    s.add_argument("src", help="checkpoint directory (or a TF checkpoint prefix)")
    s.add_argument("dst", help="new output directory")
    case = s.add_mutually_exclusive_group()
    case.add_argument("--uncased", dest="lowercase", action="store_const", const=True, help="tokenizer lower-cases")
    case.add_argument("--cased", dest="lowercase", action="store_const", const=False, help="tokenizer keeps case")
    s.set_defaults(run=cmd_convert, lowercase=None)


def args_train(s: argparse.ArgumentParser) -> None:
    s.add_argument("task", choices=["classify", "pair", "ner", "seq2seq"])
    s.add_argument("--model", required=True, help="checkpoint directory or hub name, a preset (random init), or a config.json")
    s.add_argument("--out", required=True, help="new output directory (or the run's, with --resume)")
    add_train_flags(s)
    s.set_defaults(run=cmd_train)


def args_evaluate(s: argparse.ArgumentParser) -> None:
    s.add_argument("dir", help="a fine-tuned model directory (or a training run's --out)")
    s.add_argument("--data", required=True, help="bundled dataset, data directory, or a labelled file")
    s.add_argument("--split", default="test", choices=["train", "dev", "test"])
    s.add_argument("--batch-size", type=positive_int, default=64)
    s.add_argument("--backend", choices=["torch", "onnx", "openvino"], default="torch",
                   help="onnx, openvino: run an export (`bertkit export onnx`) in onnxruntime or OpenVINO")
    s.add_argument("--bf16", action="store_true", help="bfloat16 weights and activations: --precision bf16")
    add_kernel_flags(s)
    s.set_defaults(run=cmd_evaluate)


def args_predict(s: argparse.ArgumentParser) -> None:
    s.add_argument("dir", help="a fine-tuned model directory (or a training run's --out)")
    s.add_argument("texts", nargs="*", help="texts (a pair model takes them two at a time)")
    s.add_argument("--input", help="a file of texts in any format the task reads (labels ignored)")
    s.add_argument("--batch-size", type=positive_int, default=64)
    s.add_argument("--backend", choices=["torch", "onnx", "openvino"], default="torch",
                   help="onnx, openvino: run an export (`bertkit export onnx`) in onnxruntime or OpenVINO")
    s.add_argument("--bf16", action="store_true", help="bfloat16 weights and activations: --precision bf16")
    add_kernel_flags(s)
    s.set_defaults(run=cmd_predict)


def args_distill(s: argparse.ArgumentParser) -> None:
    from .train.finetune import TrainConfig

    s.add_argument("--teacher", required=True, help="a fine-tuned model directory (or a training run's --out)")
    s.add_argument("--student", required=True, help="a preset (random init) or a checkpoint directory")
    s.add_argument("--task", required=True, choices=["classify", "pair", "ner"])
    s.add_argument("--out", required=True, help="new output directory")
    add_flags(s, TrainConfig, DISTILL_FLAGS)
    add_train_flags(s)
    s.set_defaults(run=cmd_distill)


def args_pretrain(s: argparse.ArgumentParser) -> None:
    from .train.pretrain import PretrainConfig

    s.add_argument("--model", required=True, help="a preset or config.json (random init), or a checkpoint directory")
    s.add_argument("--out", required=True, help="new output directory (or the run's, with --resume)")
    budget = s.add_mutually_exclusive_group(required=True)
    budget.add_argument("--max-steps", type=positive_int, help="optimizer steps")
    budget.add_argument("--minutes", type=float, help="a wall-clock budget")
    add_flags(s, PretrainConfig, PRETRAIN_FLAGS, types={k: positive_int for k in ("batch_size", "accum", "max_length", "save_every")})
    s.set_defaults(run=cmd_pretrain)


def args_vocab(s: argparse.ArgumentParser) -> None:
    v = s.add_subparsers(dest="action", required=True, metavar="ACTION").add_parser("build", help="train a WordPiece vocabulary")
    v.add_argument("--corpus", nargs="+", required=True, help="zh-corpus and/or text files")
    v.add_argument("--size", type=positive_int, required=True, help="vocabulary size")
    v.add_argument("--out", required=True, help="new output directory")
    v.add_argument("--cased", dest="lowercase", action="store_false", help="keep case (default: lower-case)")
    v.set_defaults(run=cmd_vocab_build)


def args_corpus(s: argparse.ArgumentParser) -> None:
    c = s.add_subparsers(dest="action", required=True, metavar="ACTION").add_parser("prepare", help="tokenize into sharded token files")
    c.add_argument("--corpus", nargs="+", required=True, help="zh-corpus and/or text files")
    c.add_argument("--tokenizer", required=True, help="tokenizer directory")
    c.add_argument("--out", required=True, help="new output directory")
    c.add_argument("--wwm", action="store_true", help="store word starts for whole-word masking")
    c.add_argument("--shard-tokens", type=positive_int, default=1 << 24, help="tokens per shard")
    c.set_defaults(run=cmd_corpus_prepare)


def args_data(s: argparse.ArgumentParser) -> None:
    data = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    e = data.add_parser("export", help="write a bundled dataset's splits (or zh-corpus's text) as files")
    e.add_argument("name", help="reviews-zh, peoples-daily-ner or zh-corpus")
    e.add_argument("dir", help="new output directory")
    e.set_defaults(run=cmd_data_export)


def args_export(s: argparse.ArgumentParser) -> None:
    from .serving.export import export_arguments

    export_arguments(s)


def args_serve(s: argparse.ArgumentParser) -> None:
    from .serving.app import serve_arguments

    serve_arguments(s)


# Each command: its one-line help and the function that adds its arguments (importing what it needs: torch for most).
COMMANDS = {
    "summary": ("modules, output shapes and parameter counts of a model or preset", args_summary),
    "fill-mask": ("the most likely tokens for each [MASK] in a text", args_fill_mask),
    "generate": ("the continuation of a text (GPT-2, a causal encoder) or its target (T5, BART, UniLM)", args_generate),
    "embed": ("sentence vectors for a file of one sentence per line, saved as .npy", args_embed),
    "rerank": ("score each line of a file against a query with a cross-encoder, best first (JSON lines)", args_rerank),
    "convert": ("convert a checkpoint (HF .bin/sharded, Google TF) to an HF safetensors dir", args_convert),
    "train": ("fine-tune a model: classify, pair, ner, or seq2seq (source -> target by generation)", args_train),
    "evaluate": ("metrics of a fine-tuned model on labelled data, as JSON", args_evaluate),
    "predict": ("labels with probabilities, or entities with their spans, as JSON lines", args_predict),
    "distill": ("distil a fine-tuned teacher into a smaller student", args_distill),
    "pretrain": ("pretrain (or continue pretraining) with MLM, MLM+NSP, MLM+SOP or ELECTRA", args_pretrain),
    "vocab": ("vocabularies", args_vocab),
    "corpus": ("pretraining corpora", args_corpus),
    "data": ("the bundled datasets", args_data),
    "export": ("export a model for another runtime (ONNX)", args_export),
    "serve": ("an HTTP server with dynamic batching for a model directory", args_serve),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (with `command`: a name, or "" for none) one whose other commands are names and help lines
    only: filling in a command's arguments imports its modules, and `bertkit --help` or `bertkit embed ...` should not
    pay for all of them."""
    p = argparse.ArgumentParser(prog="bertkit", description="The BERT family in plain PyTorch.")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, fill) in COMMANDS.items():
        s = sub.add_parser(name, help=help_text)
        if command is None or command == name:
            fill(s)
    return p


def command_of(argv: list[str]) -> str:
    """The command named in `argv` (its first word that is not an option), or "" (e.g. `bertkit --help`)."""
    return next((word for word in argv if not word.startswith("-")), "")


def warn_slow_bf16(args) -> None:
    from .serving.load import bf16_is_fast

    try:
        fast = bf16_is_fast(getattr(args, "device", None))
    except RuntimeError:  # an unknown --device: the command itself says so
        return
    if not fast:
        print(f"bertkit {args.command}: note: this device has no bf16 hardware (AVX512-BF16 or AMX, or a bf16 GPU), "
              "so --bf16 runs slower than fp32 here.", file=sys.stderr)


PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted",
             "remote process exited or there was a network error")


def peer_lost(e: Exception) -> bool:
    """Whether a collective failed because another process of the group stopped (gloo's and nccl's words for it)."""
    import os

    several = int(os.environ.get("WORLD_SIZE", "1") or 1) > 1  # a process of a torchrun group
    return several and isinstance(e, RuntimeError) and any(s in str(e) for s in PEER_LOST)  # torch's DistBackendError is one


INFERENCE_COMMANDS = ("fill-mask", "embed", "rerank", "evaluate", "predict", "serve")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(command_of(argv)).parse_args(argv)
    try:
        if getattr(args, "bf16", False) or getattr(args, "precision", None) == "bf16":
            warn_slow_bf16(args)
        if args.command in INFERENCE_COMMANDS:
            from .serving.load import init_inference

            init_inference()  # the process's settings (denormals), set here rather than by loading a model
        args.run(args)
    except BertkitError as e:
        if args.debug:
            raise
        print(f"bertkit {args.command}: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader of our output went away (e.g. `| head`): not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"bertkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not bad input: one line, and how to see more
        if args.debug:
            raise
        if peer_lost(e):
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"bertkit {args.command}: error: another process of this run went away ({first}); under torchrun "
                  "--max-restarts the group starts again, and --auto-resume continues from the last checkpoint.", file=sys.stderr)
            return 1
        print(f"bertkit {args.command}: internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
