"""``personas sweep``: the early-warning sweep, fine-tunes at several bad-data fractions, seeds and checkpoints,
each measured by a judge, the persona latents and the dense direction, and tested against the 0% fine-tune."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from personas.artifacts import MANIFEST_FILE, check_output_dir
from personas.cli.options import add_config_options, config_from_args
from personas.config import SweepConfig
from personas.errors import PersonasError
from personas.organism.rejudge import rejudge_sweep
from personas.organism.sweep import QUICK, run_sweep
from personas.testing import toy_organism


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def _cmd_sweep(args: argparse.Namespace) -> int:
    config = config_from_args(SweepConfig, args)
    if args.rejudge:
        if config.judge == "none":
            raise PersonasError("personas sweep --rejudge needs a judge; got --judge none. Pass --judge default, a "
                                "saved judge folder, 'openai:MODEL' or 'http://HOST:PORT/v1:MODEL'.")
        result = rejudge_sweep(args.rejudge, config.judge)
        before = (result.manifest.get("judge_before") or {}).get("name", "none")
        print(f"rejudged {result.out_dir} with {result.manifest['judge']['name']} (was {before}); onsets:")
        for row in result.onset.itertuples():
            print(f"  seed {row.seed} {row.signal}: {_fmt(row.onset_fraction, 2)} ({row.test})")
        return 0
    model, sae = args.model, None
    if args.quick:  # the toy model goes into the run folder, beside the run's files
        check_output_dir(args.out, "personas.sweep")
        model, sae, _ = toy_organism(Path(args.out) / "toy-model")
        config = replace(config, **QUICK, direction=str(Path(model) / "direction.npy"))
    result = run_sweep(model, config, out=args.out, sae=sae, device=args.device)
    m, table = result.manifest, result.table
    judge = m["judge"]["name"] if m["judge"] else "none"
    print(f"model {m['model']['model']}{' (--quick toy model: the numbers mean nothing)' if args.quick else ''} | "
          f"latents {m['latents']} at {m['hook']} | judge {judge} | {m['eval_prompts']['n']} prompts x "
          f"{m['eval_prompts']['n_samples']} samples")
    final = table[table["final"]]
    for row in final.itertuples():
        label = "base" if row.model == "base" else f"{row.fraction:g}" if row.model == "fine-tune" else \
            f"{row.model} {row.fraction:g}"
        em = f"{_fmt(getattr(row, 'em_rate', None))} [{_fmt(getattr(row, 'em_lo', None))}, " \
             f"{_fmt(getattr(row, 'em_hi', None))}]"
        print(f"  seed {row.seed:>3} {label:>5} (step {row.step}): EM {em} | latent {_fmt(row.latent, 4)} "
              f"[{_fmt(row.latent_lo, 4)}, {_fmt(row.latent_hi, 4)}] | projection {_fmt(row.projection)} "
              f"[{_fmt(row.projection_lo)}, {_fmt(row.projection_hi)}]")
    for row in result.onset.itertuples():
        print(f"  onset seed {row.seed} {row.signal}: {_fmt(row.onset_fraction, 2)} ({row.test}, alpha {row.alpha})")
    for seed, check in (m.get("screening") or {}).items():
        parts = [f"{name} AUROC {check[name]['auroc']:.3f} [{check[name]['lo']:.3f}, {check[name]['hi']:.3f}]"
                 + (f", drops {check[name]['narrow_dropped']}/{check['n_narrow']} narrow"
                    if "narrow_dropped" in check[name] else "")
                 for name in ("screen", "direction", "judge") if name in check]
        print(f"  screen check seed {seed} ({check['n_narrow']} narrow of {check['n']}, top "
              f"{check['n_dropped']} dropped): " + "; ".join(parts))
    print(f"time: {m['wall_s_total']:.0f} s wall")
    if result.out_dir is not None:
        print(f"wrote {result.out_dir / MANIFEST_FILE}, sweep.csv, onset.csv, answers.jsonl, sweep.png, sweep.md"
              f"{' and screen_check.csv' if m.get('screening') else ''}")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("sweep", help="early warning: fine-tunes at several bad-data fractions and checkpoints, "
                              "judged EM rate vs persona latents vs dense projection, onset against the fine-tune on no bad data")
    p.add_argument("--model", default=None, help="base chat model: offline alias, folder or hub id (default: "
                   "smollm2)")
    p.add_argument("--out", default="runs/sweep", help="run folder (default: runs/sweep)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--quick", action="store_true", help="a 2-layer toy GPT-2 with a planted direction and tiny sizes "
                   "instead of the model: checks the plumbing in seconds (its numbers mean nothing)")
    p.add_argument("--rejudge", default=None, metavar="RUN_DIR",
                   help="score the answers of an existing sweep folder again with --judge and rewrite its tables, "
                        "onsets and report (nothing is trained or generated)")
    add_config_options(p, SweepConfig)
    p.set_defaults(func=_cmd_sweep)
