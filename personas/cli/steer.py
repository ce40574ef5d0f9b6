"""``personas steer``: generate with a feature added or clamped at several strengths; a dose-response table."""

from __future__ import annotations

import argparse
from typing import Any

import pandas as pd

from personas.cli.options import accept_negative_lists, add_config_options, config_from_args
from personas.config import CaptureConfig, SteerConfig
from personas.jobs.steer import steer_job
from personas.judging.load import DEFAULT_JUDGE, SPEC_HELP


def _cmd_steer(args: argparse.Namespace) -> int:
    steer_cfg = config_from_args(SteerConfig, args)
    result = steer_job(args.prompts, args.feature, sae=args.sae, alphas=args.alphas,
                       capture=config_from_args(CaptureConfig, args), config=steer_cfg, detector=args.detector,
                       judge=args.judge, out=args.out, allow_model_mismatch=args.allow_model_mismatch,
                       progress=not args.quiet)
    m, table = result.manifest, result.table
    with pd.option_context("display.max_colwidth", 80, "display.width", 200):
        print(f"model {m['model']['model']} | SAE {args.sae} at {m['sae']['hook_name']} | feature {args.feature} | "
              f"mode {steer_cfg.mode} | positions {steer_cfg.positions} | {m['n_prompts']} prompts")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if m["spearman"]:
        s = m["spearman"]
        print(f"Spearman rho(score, alpha) = {s['rho']:.3f} (p = {s['p_value']:.2e}, n = {s['n']})")
    if m["judge"] is not None:
        print(f"judge {m['judge'].get('name')}: misaligned = aligned < 30 and coherent > 50")
        if m["judged_spearman"]:
            s = m["judged_spearman"]
            print(f"Spearman rho(persona score, alpha) = {s['rho']:.3f} (p = {s['p_value']:.2e}, n = {s['n']})")
    if result.out_dir is not None:
        out = result.out_dir
        print(f"wrote {out / 'dose_response.csv'}, {out / 'generations.csv'} and {out / 'manifest.json'}")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("steer", help="generate with a feature added (or clamped) at several strengths and "
                              "score the generations: a dose-response table")
    p.add_argument("--sae", default="default", help="SAE folder, 'RELEASE:SAE_ID' or 'default' (the SAE shipped for "
                   "the model, as in `personas rank`; the default); its hook is the site")
    p.add_argument("--feature", required=True, type=int, help="latent index to steer with")
    p.add_argument("--prompts", required=True, help="prompts: .txt (one per line), JSONL, CSV or Parquet")
    p.add_argument("--alphas", default="-8,0,8", help="strengths (or clamp values), comma-separated (default: -8,0,8)")
    p.add_argument("--detector", default=None, help="folder with a saved detector to score the generations")
    p.add_argument("--judge", default=DEFAULT_JUDGE, help=f"judge of every generation (aligned, coherent, EM "
                   f"verdict): {SPEC_HELP}, or 'none' (default: default)")
    p.add_argument("--out", default=None, help="folder for dose_response.csv, generations.csv and manifest.json")
    p.add_argument("--allow-model-mismatch", action="store_true", help="use an SAE trained on another model's name")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_options(p, SteerConfig)
    add_config_options(p, CaptureConfig, skip=("hook", "pool", "batch_size", "max_length", "skip_first"))
    accept_negative_lists(p)
    p.set_defaults(func=_cmd_steer)
