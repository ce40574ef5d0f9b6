"""``personas cache`` (capture a dataset into a sharded, resumable activation cache) and ``personas cache-info``."""

from __future__ import annotations

import sys
from typing import Any

from personas.artifacts import check_output_dir
from personas.cache.build import build_cache
from personas.cache.store import ActivationCache, open_cache
from personas.cli.options import DRY_RUN_HELP, add_config_options, config_from_args
from personas.config import CacheConfig, CaptureConfig, DataConfig, SAEConfig
from personas.data import load_responses
from personas.plan import format_plan, plan_job
from personas.saes import check_sae_spec


def register(subparsers: Any) -> None:
    """``personas cache DATA --out CACHE ...`` and ``personas cache-info CACHE [--verify]``."""
    p = subparsers.add_parser("cache", help="capture activations (and SAE codes) into a sharded, resumable cache")
    p.add_argument("data", help="responses: JSONL, CSV or Parquet file")
    p.add_argument("--out", required=True, help="cache folder (an interrupted job in it is resumed)")
    p.add_argument("--hook", action="append", dest="hooks", metavar="HOOK",
                   help="hook name to read; repeat for several sites (one forward pass). Default: the SAE's hook")
    p.add_argument("--max-shards", type=int, default=None, help="stop after this many new shards (resume later)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    add_config_options(p, CaptureConfig, skip=("hook",))
    add_config_options(p, SAEConfig)
    add_config_options(p, CacheConfig)
    add_config_options(p, DataConfig)
    p.set_defaults(func=_cmd_cache)

    p = subparsers.add_parser("cache-info", help="describe a cache and optionally verify every shard's checksum")
    p.add_argument("cache", help="cache folder")
    p.add_argument("--verify", action="store_true", help="check the sha256 of every shard and of the index")
    p.set_defaults(func=_cmd_cache_info)


def _cmd_cache(args: Any) -> int:
    capture_cfg = config_from_args(CaptureConfig, args)
    sae_cfg = config_from_args(SAEConfig, args)
    if args.dry_run:
        print(format_plan(plan_job(capture_cfg, sae_cfg.sae, load_responses(args.data, config_from_args(
            DataConfig, args)), hooks=args.hooks, encode_batch_tokens=sae_cfg.encode_batch_tokens,
            tokens=config_from_args(CacheConfig, args).tokens)))
        return 0
    check_output_dir(args.out)  # a folder that cannot be written, or a wrong SAE, fails before the model loads
    check_sae_spec(sae_cfg.sae, capture_cfg.model)
    result = build_cache(
        args.data,
        args.out,
        capture=capture_cfg,
        hooks=args.hooks,
        sae=sae_cfg,
        cache=config_from_args(CacheConfig, args),
        data_config=config_from_args(DataConfig, args),
        progress=not args.quiet,
        max_shards=args.max_shards,
        command=" ".join(["personas", *sys.argv[1:]]),
    )
    _print_info(result)
    if not result.complete:
        print("incomplete: rerun the same command to capture the remaining shards")
    return 0


def _cmd_cache_info(args: Any) -> int:
    cache = open_cache(args.cache)
    _print_info(cache)
    if args.verify:
        cache.verify()
        print(f"verified {len(cache.manifest['shards'])} shards and the row index: all checksums match")
    return 0


def _print_info(cache: ActivationCache) -> None:
    m = cache.manifest
    sae = m.get("sae") or {}
    print(f"cache {cache.path} | model {m['fingerprint']['model']} | hooks {', '.join(cache.hooks)} | "
          f"SAE {sae.get('spec', 'none')}{'' if not sae else ' (' + str(sae.get('d_sae')) + ' latents)'}")
    done = len(m["shards"])
    size = sum(e["bytes"] for e in m["shards"].values())
    print(f"responses {cache.n_rows} | shards {done}/{cache.n_shards} | {size / 2**20:.1f} MiB | "
          f"{'complete' if cache.complete else 'incomplete'}")
