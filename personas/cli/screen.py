"""``personas screen``: rank training examples by how far they move the persona latents against the base model's
own answers, before any fine-tuning."""

from __future__ import annotations

import argparse
from typing import Any

from personas.artifacts import MANIFEST_FILE
from personas.cli.options import add_config_options, config_from_args
from personas.config import ScreenConfig
from personas.organism.screen import SCREEN_FILE, run_screen


def _cmd_screen(args: argparse.Namespace) -> int:
    config = config_from_args(ScreenConfig, args)
    result = run_screen(args.train, args.model, config, out=args.out)
    m, table = result.manifest, result.table
    what = f"latents {m['latents']}" if m["latents"] else "the dense direction"
    base = m["base_answers"]
    print(f"screened {len(table)} examples of {args.train} with {what} at {m['hook']} "
          f"({base['generated']} base answers generated, {base['cached']} cached; {m['time']['total_s']:.0f} s)")
    for row in table.head(args.show).itertuples():
        print(f"  {row.rank:>4} id {row.id}: score {row.score:+.4f} | {' '.join(str(row.response).split())[:90]}")
    if result.out_dir is not None:
        print(f"wrote {result.out_dir / SCREEN_FILE} and {result.out_dir / MANIFEST_FILE}")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("screen", help="rank training examples by their persona-latent shift against the "
                              "base model's own answers (data screening before fine-tuning)")
    p.add_argument("train", help="training file (.jsonl/.json/.csv/.parquet) with prompt and response columns; "
                   "the 'id' column (else the row number) names each example")
    p.add_argument("--model", default="smollm2", help="the base model: offline alias (smollm2), folder, or hub id "
                   "(default: smollm2)")
    p.add_argument("--out", default="runs/screen", help="run folder (default: runs/screen)")
    p.add_argument("--show", type=int, default=10, help="examples printed (default: 10)")
    add_config_options(p, ScreenConfig)
    p.set_defaults(func=_cmd_screen)
