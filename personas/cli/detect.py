"""``personas detect``: fit a persona detector on the top features and evaluate it on held-out data."""

from __future__ import annotations

import argparse
from typing import Any

from personas.artifacts import EVAL_FILE
from personas.cli.options import DRY_RUN_HELP, add_config_options, config_from_args
from personas.config import CaptureConfig, DataConfig, DetectorConfig, SAEConfig
from personas.data import load_responses
from personas.errors import PersonasError
from personas.jobs.detect import fit_detector, format_evaluation
from personas.plan import format_plan, plan_job


def _cmd_detect(args: argparse.Namespace) -> int:
    config = config_from_args(DetectorConfig, args)
    if args.dry_run:
        sae_cfg, data_cfg = config_from_args(SAEConfig, args), config_from_args(DataConfig, args)
        for name in [args.train] + ([args.test] if args.test else []):
            print(f"[{name}]")
            print(format_plan(plan_job(config_from_args(CaptureConfig, args), sae_cfg.sae,
                                       load_responses(name, data_cfg), encode_batch_tokens=sae_cfg.encode_batch_tokens)))
        return 0
    if args.test is None and config.holdout_by == "none":
        raise PersonasError("personas detect needs held-out data: pass --test DATA, or --holdout-by group to hold out "
                            "whole questions of --train.")
    result = fit_detector(
        args.train,
        args.test,
        config=config,
        capture=config_from_args(CaptureConfig, args),
        sae=config_from_args(SAEConfig, args),
        data_config=config_from_args(DataConfig, args),
        out=args.out,
        progress=not args.quiet,
    )
    ev = result.evaluation
    split = ev["split"]
    sizes = []
    for side in ("train", "test"):
        groups = split[f"{side}_groups"]
        sizes.append(f"{side} {split[side]['n_labelled']} rows" + ("" if groups is None else f" / {len(groups)} questions"))
    sae_spec = (ev["sae_info"] or {}).get("spec", "none")
    print(f"model {ev['model']['model']} | hook {ev['hook']} | SAE {sae_spec} | split {split['mode']}: {', '.join(sizes)}")
    print(f"held-out AUROC {ev['auroc']:.3f} [{ev['auroc_ci'][0]:.3f}, {ev['auroc_ci'][1]:.3f}] with k={ev['k']} "
          f"features {ev['features']}")
    print(format_evaluation(ev))
    if result.out_dir is not None:
        print(f"wrote {result.out_dir / EVAL_FILE}, {result.out_dir / 'detector'} and {result.out_dir / 'dense_baseline'}")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "detect", help="fit a detector on the top SAE features and evaluate it on held-out data, next to a dense baseline"
    )
    p.add_argument("--train", required=True, help="responses to fit on (JSONL, CSV or Parquet)")
    p.add_argument("--test", default=None, help="responses to evaluate on; or use --holdout-by group")
    p.add_argument("--out", default="runs/detect", help="folder for eval.json and the saved detector (default: runs/detect)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    add_config_options(p, DetectorConfig)
    add_config_options(p, CaptureConfig)
    add_config_options(p, SAEConfig)
    add_config_options(p, DataConfig)
    p.set_defaults(func=_cmd_detect)
