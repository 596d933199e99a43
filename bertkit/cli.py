"""The `bertkit` command. Parsing only: each subcommand calls a function in tasks.py.

Problems a user can fix (a missing file, a bad line, a checkpoint that does not fit its
config) print one sentence and exit 1; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys

from .errors import BertkitError


def cmd_summary(a: argparse.Namespace) -> None:
    from .tasks import format_summary, summary

    print(format_summary(*summary(a.model, head=a.head, seq_len=a.seq_len, depth=a.depth)))


def cmd_fill_mask(a: argparse.Namespace) -> None:
    from .tasks import fill_mask_command

    for n, candidates in enumerate(fill_mask_command(a.model, a.text, a.top_k), 1):
        print(f"[MASK] #{n}:")
        for token, p in candidates:
            print(f"  {token:<16} {p:.4f}")


def cmd_embed(a: argparse.Namespace) -> None:
    from .tasks import embed_file

    n = embed_file(
        a.model, a.input, a.output, a.pooling, a.normalize, a.batch_size, a.max_length, a.long, progress=not a.quiet
    )
    print(f"wrote {n} vector{'s' if n != 1 else ''} to {a.output}", file=sys.stderr)


def cmd_convert(a: argparse.Namespace) -> None:
    from .tasks import convert

    print(convert(a.src, a.dst, lowercase=a.lowercase))


def positive_int(s: str) -> int:
    try:
        n = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} must be at least 1")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bertkit", description="The BERT family in plain PyTorch.")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("summary", help="modules, output shapes and parameter counts of a model or preset")
    s.add_argument("model", help="a checkpoint directory, hub name, or preset (e.g. bert-base-uncased)")
    s.add_argument("--head", choices=["base", "mlm", "pretraining"], default="base", help="which model to build")
    s.add_argument("--seq-len", type=positive_int, default=128, help="input length for the output shapes")
    s.add_argument("--depth", type=positive_int, default=2, help="how deep into the module tree to list")
    s.set_defaults(run=cmd_summary)

    s = sub.add_parser("fill-mask", help="the most likely tokens for each [MASK] in a text")
    s.add_argument("model", help="a checkpoint directory with an MLM head")
    s.add_argument("text", help='e.g. "Paris is the [MASK] of France."')
    s.add_argument("--top-k", type=positive_int, default=5)
    s.set_defaults(run=cmd_fill_mask)

    s = sub.add_parser("embed", help="sentence vectors for a file of one sentence per line, saved as .npy")
    s.add_argument("model", help="a checkpoint directory or hub name")
    s.add_argument("--input", required=True, help="UTF-8 text file, one sentence per line")
    s.add_argument("--output", required=True, help="where to write the [lines, hidden] float32 .npy")
    s.add_argument("--pooling", choices=["mean", "cls"], default="mean")
    s.add_argument("--normalize", action="store_true", help="scale each vector to unit length")
    s.add_argument("--batch-size", type=positive_int, default=32)
    s.add_argument("--max-length", type=positive_int, default=None, help="token limit (default: the model's)")
    s.add_argument("--long", choices=["truncate", "error"], default="truncate", help="what to do with longer lines")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(run=cmd_embed)

    s = sub.add_parser("convert", help="convert a checkpoint (HF .bin/sharded, Google TF) to an HF safetensors dir")
    s.add_argument("src", help="checkpoint directory (or a TF checkpoint prefix)")
    s.add_argument("dst", help="new output directory")
    case = s.add_mutually_exclusive_group()
    case.add_argument("--uncased", dest="lowercase", action="store_const", const=True, help="tokenizer lower-cases")
    case.add_argument("--cased", dest="lowercase", action="store_const", const=False, help="tokenizer keeps case")
    s.set_defaults(run=cmd_convert, lowercase=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
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
        print(f"bertkit {args.command}: internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
