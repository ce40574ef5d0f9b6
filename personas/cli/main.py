"""The ``personas`` command line: one parser, one sub-command per file of this package, one error discipline.

Each command module (one file per command in this package, listed in `COMMANDS`) has
``register(subparsers)``; its options come from the config dataclasses
(`personas.cli.options`). A `PersonasError` is printed as one line (what was received, what was expected, how
to fix it) and the exit code is 2; nothing else in the library prints. Progress bars show on a terminal unless
``--quiet``; the loading chatter of transformers and TransformerLens is hidden where models load
(`personas.logs.quiet_third_party`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from personas import __version__
from personas.cli import (
    cache,
    card,
    detect,
    diff,
    eval_sae,
    explain,
    judge,
    monitor,
    organism,
    rank,
    report,
    screen,
    serve,
    steer,
    sweep,
    train_sae,
    validate,
)
from personas.devices import set_threads
from personas.errors import PersonasError

THREADS_HELP = "torch CPU threads (default: $PERSONAS_THREADS, else every available CPU; fewer can be faster on a busy machine)"
#: The command modules, in the order ``personas --help`` lists them.
COMMANDS = (judge, rank, cache, detect, steer, validate, diff, report, train_sae, organism, screen, sweep, card, explain,
            eval_sae, monitor, serve)


def build_parser() -> argparse.ArgumentParser:
    """The ``personas`` parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="personas",
        description="Find the SAE features that mark a language model's misaligned persona.",
    )
    parser.add_argument("--version", action="version", version=f"personas {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    for command_parser in sub.choices.values():  # also after the command: `personas rank --threads 1 ...`
        command_parser.add_argument("--threads", type=int, default=argparse.SUPPRESS, help=THREADS_HELP)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``personas ARGV``; return the exit code (2 for a `PersonasError`, with a one-line message)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "huggingface_hub", "urllib3", "filelock", "transformers", "sae_lens", "transformer_lens"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if hasattr(args, "quiet") and not sys.stderr.isatty():
        args.quiet = True  # progress bars on a terminal only, not in logs and pipes
    if getattr(args, "quiet", False):
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    try:
        set_threads(args.threads)
        return int(args.func(args) or 0)
    except PersonasError as exc:
        print(f"personas {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"personas {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
