"""``personas explain RUN_DIR [FEATURE...]``: what latents mean, in words, with a score; writes
``RUN_DIR/explanations.csv`` (no forward pass of the model) and, where the folder has a ``report.html`` (``personas
rank --report``), writes it again so that its table and feature cards show the explanations."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from personas.artifacts import REPORT_FILE
from personas.cli.options import add_config_options, config_from_args
from personas.config import ExplainConfig
from personas.jobs.explain import explain
from personas.report.html import write_report


def register(sub: Any) -> None:
    """``personas explain RUN_DIR [FEATURE...] [--explainer offline|SPEC] [--scorers ...] [--data DATA]``."""
    p = sub.add_parser(
        "explain",
        help="explain latents in words from a run's stored token codes (offline, or an LLM over an "
             "OpenAI-compatible API) and score each explanation on held-out windows against two baselines",
    )
    p.add_argument("run_dir", help="the --out folder of `personas rank --report` (or of `personas rank --cache`)")
    p.add_argument("features", nargs="*", metavar="FEATURE",
                   help="latent indices (default: the ranking's top --n-features latents without a confound flag)")
    p.add_argument("--data", default=None, help="the answers the run was ranked from, for their text and questions "
                   "(default: the file its manifest names)")
    p.add_argument("--score-on", default=None, help="another rank run of the same model, hook and SAE (e.g. on "
                   "held-out questions): the scoring windows come from it")
    p.add_argument("--interventions", nargs="*", default=(), metavar="DIR",
                   help="folders of `personas validate` / `personas steer` runs whose figures go beside the scores")
    p.add_argument("--keep-report", action="store_true", help=f"leave RUN_DIR/{REPORT_FILE} as it is (by default "
                   "it is written again, as `personas report RUN_DIR` writes it, with the explanations in it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar while an API explainer or scorer is asked")
    add_config_options(p, ExplainConfig)
    p.set_defaults(func=_cmd_explain)


def _cmd_explain(args: argparse.Namespace) -> int:
    table = explain(args.run_dir, args.features or None, config=config_from_args(ExplainConfig, args),
                    data=args.data, score_on=args.score_on, interventions=args.interventions,
                    progress=not args.quiet)
    summary = table.summary()
    with pd.option_context("display.max_colwidth", 90, "display.width", 220):
        print(summary.to_string(index=False))
    provenance = table.attrs.get("explain") or {}
    print(f"explainer {provenance.get('explainer', {}).get('name')} | {len(summary)} latents | "
          f"{provenance.get('seconds_per_latent')} s per latent | scores: AUROC on held-out windows, 95% bootstrap "
          "interval; (random) another latent's explanation, (class) 'misaligned answers' / 'aligned answers'")
    for name, stats in (provenance.get("api") or {}).items():
        print(f"{name}: {stats['requests']} requests ({stats['cached']} replies cached), {stats['prompt_tokens']} "
              f"prompt and {stats['completion_tokens']} completion tokens reported")
    for note in provenance.get("notes") or []:
        print(f"note: {note}")
    if table.attrs.get("path"):
        print(f"wrote {table.attrs['path']}")
        report = Path(table.attrs["path"]).parent / REPORT_FILE
        if report.is_file() and not args.keep_report:
            print(f"wrote {write_report(report.parent)} (with the explanations)")
    return 0
