"""``personas rank``: rank the features separating misaligned from aligned responses (from data or a cache)."""

from __future__ import annotations

import argparse
import dataclasses

from personas.cli.options import DRY_RUN_HELP, add_config_options, config_from_args, format_table
from personas.config import CacheRankConfig, CaptureConfig, DataConfig, RankConfig, SAEConfig
from personas.data import load_responses
from personas.errors import PersonasError
from personas.jobs.rank import rank_cache_job, rank_responses
from personas.plan import format_plan, plan_job
from personas.report.html import write_report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rank", help="rank SAE features separating misaligned from aligned responses")
    p.add_argument("data", nargs="?", help="responses: JSONL, CSV or Parquet file (or use --cache)")
    p.add_argument("--out", default="runs/rank", help="folder for ranking.csv and manifest.json (default: runs/rank)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--report", action="store_true",
                   help="also keep per-token SAE codes, write examples.json and an HTML report (report.html)")
    p.add_argument("--persona-only", action="store_true",
                   help="print only the rows without a confound kind (length, style, single-token); the files keep all")
    p.add_argument("--cache", help="an activation cache folder written by `personas cache` (no model is loaded)")
    p.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    add_config_options(p, CacheRankConfig)
    add_config_options(p, CaptureConfig)
    add_config_options(p, SAEConfig)
    add_config_options(p, RankConfig)
    add_config_options(p, DataConfig)
    p.set_defaults(func=_cmd_rank)


def _cmd_rank(args: argparse.Namespace) -> int:
    if args.cache:
        return _rank_cache(args)
    if not args.data:
        raise PersonasError("no responses to rank: give DATA (a JSONL, CSV or Parquet file) or --cache CACHE.")
    capture_cfg = config_from_args(CaptureConfig, args)
    if args.dry_run:
        sae_cfg = config_from_args(SAEConfig, args)
        print(format_plan(plan_job(capture_cfg, sae_cfg.sae, load_responses(args.data, config_from_args(
            DataConfig, args)), encode_batch_tokens=sae_cfg.encode_batch_tokens)))
        return 0
    result = rank_responses(
        args.data,
        capture=capture_cfg,
        sae=config_from_args(SAEConfig, args),
        rank=config_from_args(RankConfig, args),
        data_config=config_from_args(DataConfig, args),
        out=args.out,
        keep_tokens=args.report,
        progress=not args.quiet,
    )
    data = result.manifest["data"]
    top = config_from_args(RankConfig, args).top
    print(
        f"model {result.manifest['model']['model']} | hook {result.manifest['hook']} | "
        f"SAE {(result.manifest['sae'] or {}).get('spec', 'none')} | pool {capture_cfg.pool}"
    )
    print(
        f"responses: {data['n_misaligned']} misaligned, {data['n_aligned']} aligned, "
        f"{data['n_excluded']} excluded | features tested: {result.manifest['ranking']['n_features']} | "
        f"significant (q < {result.manifest['ranking']['alpha']}): {result.manifest['ranking']['n_significant']}"
    )
    print(_table(result.ranking, top, args.persona_only))
    if result.out_dir is not None:
        print(f"wrote {result.out_dir / 'ranking.csv'} and {result.out_dir / 'manifest.json'}")
        if args.report:
            print(f"wrote {write_report(result.out_dir)}")
    return 0


def _table(ranking, top: int, persona_only: bool) -> str:
    """The printed table: the top rows, or with ``--persona-only`` the top rows of `Ranking.persona`."""
    if not persona_only:
        return format_table(ranking, top)
    view = ranking.persona()
    return (f"{len(ranking) - len(view)} of {len(ranking)} rows flagged as confounds are left out of this view "
            f"(thresholds in the manifest)\n" + format_table(view, top))


#: Options that still mean something with --cache: which cached hook to rank (and, where given, CPU threads).
_CACHE_KEEPS = ("hook", "threads")


def _rank_cache(args: argparse.Namespace) -> int:
    """The ``--cache`` branch: rank a cache as it was captured; capture, SAE and data options are refused."""
    if args.data:
        raise PersonasError(f"got both DATA ({args.data}) and --cache ({args.cache}); give one of them.")
    given = vars(args)
    ignored = [
        "--" + f.name.replace("_", "-")
        for cls in (CaptureConfig, SAEConfig, DataConfig) for f in dataclasses.fields(cls)
        if f.name in given and f.name not in _CACHE_KEEPS
    ]
    if ignored:
        raise PersonasError(
            f"{', '.join(dict.fromkeys(ignored))} given with --cache: a cache is ranked as it was captured (its model, "
            "SAE, pooling and data options were fixed by `personas cache`, see `personas cache-info`). Drop them, "
            "or rank the data file without --cache."
        )
    rank_cfg = config_from_args(RankConfig, args)
    ranking, manifest = rank_cache_job(
        args.cache, hook=getattr(args, "hook", None), rank=rank_cfg, options=config_from_args(CacheRankConfig, args),
        out=args.out, examples=args.report,
    )
    data = manifest["data"]
    print(f"cache {args.cache} | hook {manifest['hook']} | {data['n_misaligned']} misaligned, "
          f"{data['n_aligned']} aligned | features tested: {len(ranking)} | "
          f"significant (q < {rank_cfg.alpha}): {manifest['ranking']['n_significant']} | "
          f"length alone: AUROC {manifest['ranking']['length_auroc']:.2f}")
    print(_table(ranking, rank_cfg.top, args.persona_only))
    if args.out:
        print(f"wrote {args.out}/ranking.csv and {args.out}/manifest.json")
        if args.report:
            print(f"wrote {write_report(args.out)}")
    return 0
