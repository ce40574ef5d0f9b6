"""``personas eval-sae SAE [SAE ...] --model M [--text T] [--data D]``: SAEs side by side in one table."""

from __future__ import annotations

import argparse
from typing import Any

from personas.cli.options import add_config_options, config_from_args
from personas.config import DEFAULT_MODEL, DataConfig, EvalSAEConfig
from personas.jobs.eval_sae import eval_sae_job
from personas.training.evaluate import format_eval_table


def register(sub: Any) -> None:
    p = sub.add_parser(
        "eval-sae",
        help="evaluate SAEs side by side: explained variance, LM loss recovered, L0, dead/dense latents, and "
             "leave-questions-out detection on labelled answers",
    )
    p.add_argument("saes", nargs="+", help="SAE folders, RELEASE:SAE_ID, or 'default'")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model the SAEs read (default: %(default)s)")
    p.add_argument("--text", default=None, help="documents: a text file (one per line) or JSONL with a 'text' field")
    p.add_argument("--data", default=None, help="labelled answers (JSONL, CSV, Parquet) with question groups")
    p.add_argument("--out", default=None, help="JSON file to write the results and their provenance to")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--dtype", default="float32", help="model dtype: float32, bfloat16, float16 or auto")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_options(p, EvalSAEConfig)
    add_config_options(p, DataConfig)
    p.set_defaults(func=_cmd_eval_sae)


def _cmd_eval_sae(args: argparse.Namespace) -> int:
    results = eval_sae_job(
        args.saes, model=args.model, text=args.text, data=args.data, config=config_from_args(EvalSAEConfig, args),
        data_config=config_from_args(DataConfig, args), device=args.device, dtype=args.dtype, out=args.out,
        progress=not args.quiet,
    )
    print(format_eval_table(results))
    if args.out:
        print(f"wrote {args.out}")
    return 0
