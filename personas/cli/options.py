"""Command-line options generated from the config dataclasses, and the plain-text ranking table.

Every field of a step's config dataclass becomes an option (``CaptureConfig.batch_size`` -> ``--batch-size``)
with the field's help text, its type, and its ``Literal`` choices; only options given on the command line
override the dataclass defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, Literal

DRY_RUN_HELP = ("resolve model, site, SAE and data from their configs and tokenizer, print parameters, memory per "
                "batch at the chosen dtype and batch size, cache size and tokens to process, and stop (no weights "
                "are loaded)")


def _option_type(annotation: Any) -> tuple[Callable[[str], Any] | None, list[Any] | None, bool]:
    """(converter, choices, is_bool) for a dataclass field annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _option_type(args[0]) if len(args) == 1 else (str, None, False)
    if origin is Literal:
        choices = list(typing.get_args(annotation))
        return type(choices[0]), choices, False
    if annotation is bool:
        return None, None, True
    if annotation in (int, float, str):
        return annotation, None, False
    return str, None, False


def add_config_options(
    parser: argparse.ArgumentParser, cls: type, *, skip: Sequence[str] = (), title: str | None = None
) -> None:
    """Add one ``--option`` per field of the dataclass ``cls``, defaulting to "not given"."""
    group = parser.add_argument_group(title or cls.__name__, (cls.__doc__ or "").strip().splitlines()[0])
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        converter, choices, is_bool = _option_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f"{f.metadata.get('help', '')} (default: {default})".replace("%", "%%")  # argparse formats help
        option = "--" + f.name.replace("_", "-")
        if is_bool:
            group.add_argument(option, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            group.add_argument(
                option, dest=f.name, type=converter, choices=choices, default=argparse.SUPPRESS, help=help_text,
                metavar=None if choices else f.name.upper(),
            )


#: What argparse takes for a value, not an option: a negative number or a list of numbers starting with one.
_NEGATIVE_VALUES = re.compile(r"^-\d+(\.\d+)?([,\s]+-?\d+(\.\d+)?)*$|^-\.\d+$")


def accept_negative_lists(parser: argparse.ArgumentParser) -> None:
    """Let ``--alphas -8,0,8`` be read as a value, not as an option (argparse only knows plain negative numbers)."""
    parser._negative_number_matcher = _NEGATIVE_VALUES


def config_from_args(cls: type, args: argparse.Namespace, **fixed: Any) -> Any:
    """Build ``cls`` from the options given on the command line (its own defaults for the rest)."""
    names = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in vars(args).items() if k in names}
    given.update({k: v for k, v in fixed.items() if k in names})
    return cls(**given)


def format_table(frame: Any, n: int) -> str:
    """The top rows of a ranking as a plain-text table."""
    columns = [c for c in ("feature", "name", "auroc", "auroc_lo", "auroc_hi", "group_auroc", "mean_diff", "cohens_d",
                           "frac_active_pos", "frac_active_neg", "length_corr", "p_value", "q_value", "significant",
                           "kind") if c in frame]
    view = frame.head(n)[columns].copy()
    if "kind" in view:
        view["kind"] = view["kind"].fillna("").astype(str)
    formats = {c: "{:.3f}".format for c in columns
               if c not in ("feature", "name", "p_value", "q_value", "significant", "kind")}
    formats.update({c: "{:.2e}".format for c in ("p_value", "q_value") if c in columns})
    return view.to_string(index=False, formatters=formats)
