"""``personas train-sae``: train a sae-lens SAE on a model's activations over a corpus."""

from __future__ import annotations

import argparse
import sys

from personas.cli.options import DRY_RUN_HELP, add_config_options, config_from_args
from personas.config import CaptureConfig, TrainSAEConfig
from personas.jobs.train_sae import train_sae_job
from personas.plan import plan_train_sae


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-sae", help="train a sae-lens SAE on a model's activations over the built-in corpus")
    p.add_argument("--model", default=CaptureConfig.model, help="model to read (default: %(default)s)")
    p.add_argument("--hook", default="blocks.3.hook_resid_post", help="hook name to train on (default: %(default)s)")
    p.add_argument("--out", required=True, help="folder to write the SAE into")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--checkpoint-dir", default=None,
                   help="with --stream: checkpoint folder (default: OUT-checkpoint; a matching one is resumed)")
    p.add_argument("--row-cache", default=None,
                   help="with --stream: keep the captured chunks here (float16) and reuse them in later runs over the "
                        "same capture, e.g. other widths or k")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    add_config_options(p, TrainSAEConfig)
    p.set_defaults(func=_cmd_train_sae)


def _cmd_train_sae(args: argparse.Namespace) -> int:
    if args.dry_run:
        config = config_from_args(TrainSAEConfig, args)
        print(plan_train_sae(args.model, args.hook, config.d_sae, config.corpus_tokens, config.batch_size_tokens)[1])
        return 0
    out, metrics = train_sae_job(
        model=args.model,
        hook=args.hook,
        config=config_from_args(TrainSAEConfig, args),
        out=args.out,
        device=args.device,
        command=" ".join(["personas", *sys.argv[1:]]),
        progress=not args.quiet,
        checkpoint_dir=args.checkpoint_dir,
        row_cache=args.row_cache,
    )
    if out is None:
        print(f"stopped at chunk {metrics['stopped_at_chunk']} ({metrics['n_training_samples']} of "
              f"{metrics['n_tokens']} samples), checkpoint in {metrics['checkpoint_dir']}: run the same command "
              "again to resume")
        return 0
    print(
        f"explained variance {metrics['explained_variance']:.3f} | L0 {metrics['l0']:.1f} | "
        f"dead fraction {metrics['dead_fraction']:.3f}"
    )
    print(f"wrote {out}")
    return 0
