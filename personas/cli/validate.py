"""``personas validate``: the persona-features protocol on your model: screen candidate latents by steering,
confirm the best on other prompts at strengths fixed in advance, every generation judged (aligned, coherent, EM)."""

from __future__ import annotations

import argparse
from typing import Any

import pandas as pd

from personas.artifacts import CONFIRMATION_FILE, GENERATIONS_FILE, MANIFEST_FILE, SCREENING_FILE
from personas.cli.options import accept_negative_lists, add_config_options, config_from_args
from personas.config import CaptureConfig, SteerConfig
from personas.jobs.validate import validate_job
from personas.judging.load import DEFAULT_JUDGE, SPEC_HELP
from personas.steering.validation import CONFIRM_MULTIPLES, SCREEN_MULTIPLES


def _cmd_validate(args: argparse.Namespace) -> int:
    result = validate_job(
        args.screen_prompts, args.confirm_prompts, out=args.out, features=args.features, ranking=args.ranking,
        n_candidates=args.n_candidates, sae=args.sae, reference=args.reference,
        screen_multiples=args.screen_multiples, multiples=args.multiples, judge=args.judge,
        capture=config_from_args(CaptureConfig, args), config=config_from_args(SteerConfig, args),
        allow_model_mismatch=args.allow_model_mismatch, progress=not args.quiet)
    v, m, out = result.validation, result.manifest, result.out_dir
    judge_name = v.judge.get("name", v.judge.get("kind"))
    print(f"model {m['model']['model']} | SAE {args.sae} at {m['sae']['hook_name']} | judge {judge_name} | "
          f"misaligned = aligned < 30 and coherent > 50")
    if result.left_out:
        print(f"left out (never fire on the reference, no strength unit): {result.left_out}")
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        print("screening (effect = mean persona score at k > 0 minus k = 0, bootstrap 95% over prompts):")
        print(v.screening.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
        print(f"chosen: latent {v.chosen} (unit {v.unit:.3f}); confirmation on {m['n_confirm_prompts']} other "
              "prompts:")
        cols = ["k", "n", "aligned", "coherent", "misaligned_rate", "misaligned_lo", "misaligned_hi",
                "incoherent_rate", "mean_words"]
        print(v.confirmation[cols].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    d = v.dose_response
    if d:
        print(f"dose-response: Spearman rho(persona score, k) = {d['rho']:.3f} (p = {d['p_value']:.2e}, n = {d['n']}), "
              f"bootstrap over prompts [{d['boot95'][0]:.3f}, {d['boot95'][1]:.3f}]")
    print(f"wrote {out / SCREENING_FILE}, {out / CONFIRMATION_FILE}, {out / GENERATIONS_FILE} and {out / MANIFEST_FILE}")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("validate", help="screen candidate latents by steering and confirm the best on other "
                              "prompts, judged (aligned, coherent, EM verdict): the persona-features protocol")
    p.add_argument("--sae", default="default", help="SAE folder, 'RELEASE:SAE_ID' or 'default' (the one shipped for "
                   "the offline model); its hook is the site")
    p.add_argument("--features", default=None, help="candidate latents, comma-separated (or --ranking)")
    p.add_argument("--ranking", default=None, help="a personas rank run folder: candidates are its top latents that "
                   "are higher in misaligned answers, significant and not style/length/single-token confounds")
    p.add_argument("--n-candidates", type=int, default=3, help="candidates taken from --ranking (default 3)")
    p.add_argument("--screen-prompts", required=True, help="prompts for screening (.txt, JSONL, CSV or Parquet)")
    p.add_argument("--confirm-prompts", required=True, help="other prompts for the confirmation")
    p.add_argument("--reference", default=None, help="answers on which each latent's strength unit (its typical "
                   "activation) is measured (default: the model's unsteered answers to the screening prompts)")
    p.add_argument("--screen-multiples", default=",".join(f"{k:g}" for k in SCREEN_MULTIPLES),
                   help="strengths of the screening, in units (default: %(default)s)")
    p.add_argument("--multiples", default=",".join(f"{k:g}" for k in CONFIRM_MULTIPLES),
                   help="strengths of the confirmation, in units (default: %(default)s)")
    p.add_argument("--judge", default=DEFAULT_JUDGE, help=f"judge of every generation: {SPEC_HELP}")
    p.add_argument("--out", required=True, help="folder for screening.csv, confirmation.csv, generations.csv and "
                   "manifest.json")
    p.add_argument("--allow-model-mismatch", action="store_true", help="use an SAE trained on another model's name")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_options(p, SteerConfig)
    add_config_options(p, CaptureConfig, skip=("hook", "pool", "batch_size", "max_length", "skip_first"))
    accept_negative_lists(p)
    p.set_defaults(func=_cmd_validate)
