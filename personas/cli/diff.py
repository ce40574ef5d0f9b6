"""``personas diff``: model diffing, the same conversations through a base model and its fine-tune, one SAE."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from personas.artifacts import DIFF_FILE, MANIFEST_FILE
from personas.cli.options import DRY_RUN_HELP, add_config_options, config_from_args
from personas.config import CaptureConfig, DiffConfig, SAEConfig
from personas.data.prompts import load_prompts
from personas.jobs.diff import diff_models
from personas.plan import format_plan, human, plan_job


def _cmd_diff(args: argparse.Namespace) -> int:
    config = config_from_args(DiffConfig, args)
    capture_cfg = config_from_args(CaptureConfig, args)
    if args.dry_run:
        return _dry_run(args, capture_cfg)
    result = diff_models(
        args.base, args.finetuned, args.prompts, config_from_args(SAEConfig, args), hook=capture_cfg.hook,
        capture=capture_cfg, config=config, out=args.out, progress=not args.quiet,
    )
    m = result.manifest
    stats = m["statistics"]
    print(f"base {m['base']['model']} | fine-tuned {m['finetuned']['model']} | hook {m['hook']} | "
          f"SAE {m['sae']['spec']} | {stats['n_pairs']} conversations ({config.test} test)")
    print(f"latents: {stats['n_latents']} | significant changes (q < {config.alpha}): {stats['n_significant']}, "
          f"of which increases: {stats['n_significant_increase']}")
    columns = ["feature", "mean_base", "mean_finetuned", "mean_diff", "effect_size", "frac_increased", "p_value",
               "q_value"]
    view = result.table.head(config.top)[columns]
    formats = {c: "{:.3f}".format for c in columns if c not in ("feature", "p_value", "q_value")}
    formats.update({c: "{:.2e}".format for c in ("p_value", "q_value")})
    print(view.to_string(index=False, formatters=formats))
    if result.out_dir is not None:
        print(f"wrote {result.out_dir / DIFF_FILE} and {result.out_dir / MANIFEST_FILE}")
    return 0


def _dry_run(args: argparse.Namespace, capture_cfg: CaptureConfig) -> int:
    """Both models' plans on the same conversations; both are held in memory at once."""
    sae_cfg = config_from_args(SAEConfig, args)
    data = load_prompts(args.prompts)
    peaks = []
    for role, model in (("base", args.base), ("fine-tuned", args.finetuned)):
        plan = plan_job(replace(capture_cfg, model=str(model)), sae_cfg.sae, prompts=data.prompts,
                        responses=data.responses, encode_batch_tokens=sae_cfg.encode_batch_tokens)
        print(f"[{role}]")
        print(format_plan(plan))
        peaks.append(plan)
    both = sum(p.weights_bytes for p in peaks) + max(p.peak_bytes - p.weights_bytes for p in peaks)
    print(f"both models loaded together: estimated peak memory {human(both)}"
          + ("" if data.responses else " (answers are generated first: max_new_tokens more per row)"))
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("diff", help="rank SAE latents by their increase from a base model to its fine-tune "
                              "on the same conversations (paired tests, q-values)")
    p.add_argument("--base", required=True, help="base model: TransformerLens name, Hugging Face id or local folder")
    p.add_argument("--finetuned", required=True, help="fine-tuned model: name, id or local folder")
    p.add_argument("--prompts", required=True, help="prompts (and responses): .txt, JSONL, CSV or Parquet")
    p.add_argument("--out", default="runs/diff", help="folder for diff.csv and manifest.json (default: runs/diff)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    add_config_options(p, DiffConfig)
    add_config_options(p, SAEConfig)
    add_config_options(p, CaptureConfig, skip=("model",))
    p.set_defaults(func=_cmd_diff)
