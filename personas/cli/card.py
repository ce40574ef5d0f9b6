"""``personas card RUN_DIR FEATURE... [--out DIR]``: one standalone HTML feature card per latent, from a run folder
(no forward pass of the model)."""

from __future__ import annotations

import argparse
from typing import Any

from personas.report.cards import write_cards


def register(sub: Any) -> None:
    """``personas card RUN_DIR FEATURE... [--out DIR] [--no-lens]``."""
    p = sub.add_parser(
        "card",
        help="write a feature card per latent (statistics, confound flags, examples at quantiles, logit lens, "
             "histogram, nearest latents) from a `personas rank --report` or `--cache` folder",
    )
    p.add_argument("run_dir", help="the --out folder of `personas rank --report` (or of `personas rank --cache`)")
    p.add_argument("features", nargs="+", type=int, metavar="FEATURE", help="latent indices")
    p.add_argument("--out", default=None, help="folder for the card-FEATURE.html files (default: RUN_DIR/cards)")
    p.add_argument("--no-lens", action="store_true", help="leave out the logit lens (it reads the unembedding)")
    p.set_defaults(func=_cmd_card)


def _cmd_card(args: argparse.Namespace) -> int:
    for path in write_cards(args.run_dir, args.features, out=args.out, lens=not args.no_lens):
        print(f"wrote {path}")
    return 0
