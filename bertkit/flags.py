"""Command-line flags: argument types, and flags generated from the run-settings dataclasses they
mirror, so a default is written once (in the dataclass).

`add_flags(parser, Config, helps)` adds `--field-name` for each field named in `helps`: a switch
for a bool that defaults to False, else a typed option with the dataclass default.
"""

from __future__ import annotations

import argparse
import dataclasses


def positive_int(s: str) -> int:
    try:
        n = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} must be at least 1")
    return n


def add_flags(parser: argparse.ArgumentParser, config_cls, helps: dict, types: dict | None = None) -> None:
    """`--field-name` for each field of the dataclass `config_cls` named in `helps` (a help text, or
    (help, choices)), with the dataclass default; flags the parser already has are left alone."""
    have = {a.dest for a in parser._actions}
    for f in dataclasses.fields(config_cls):
        if f.name not in helps or f.name in have:
            continue
        help_text, choices = helps[f.name] if isinstance(helps[f.name], tuple) else (helps[f.name], None)
        flag = "--" + f.name.replace("_", "-")
        if f.default is False:
            parser.add_argument(flag, action="store_true", help=help_text)
            continue
        kind = (types or {}).get(f.name) or field_type(f)
        parser.add_argument(flag, type=kind, default=f.default, choices=choices, help=help_text)


def field_type(f: dataclasses.Field):
    """int, float or str, from the default or (for a None default) the annotation, e.g. "float | None"."""
    if f.default is not None and f.default is not dataclasses.MISSING:
        return {int: int, float: float}.get(type(f.default), str)
    annotation = str(f.type)
    return int if annotation.startswith("int") else float if annotation.startswith("float") else str
