"""The ``personas`` command line: thin, generated from the config dataclasses, calls the Python API.

Every field of a step's config dataclass becomes an option (``CaptureConfig.batch_size`` -> ``--batch-size``)
with the field's help text; only options given on the command line override the dataclass defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, Literal

from personas.config import CaptureConfig, DataConfig, RankConfig, SAEConfig, TrainSAEConfig
from personas.errors import PersonasError

# ------------------------------------------------------------------------------------------ dataclass options


def _option_type(annotation: Any) -> tuple[Callable[[str], Any] | None, list[Any] | None, bool]:
    """(converter, choices, is_bool) for a dataclass field annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _option_type(args[0]) if len(args) == 1 else (str, None, False)
    if origin is Literal:
        choices = list(typing.get_args(annotation))
        return type(choices[0]), choices, False
    if annotation is bool:
        return None, None, True
    if annotation in (int, float, str):
        return annotation, None, False
    return str, None, False


def add_config_options(
    parser: argparse.ArgumentParser, cls: type, *, skip: Sequence[str] = (), title: str | None = None
) -> None:
    """Add one ``--option`` per field of the dataclass ``cls``, defaulting to "not given"."""
    group = parser.add_argument_group(title or cls.__name__, (cls.__doc__ or "").strip().splitlines()[0])
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        converter, choices, is_bool = _option_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f"{f.metadata.get('help', '')} (default: {default})".replace("%", "%%")  # argparse formats help
        option = "--" + f.name.replace("_", "-")
        if is_bool:
            group.add_argument(option, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            group.add_argument(
                option, dest=f.name, type=converter, choices=choices, default=argparse.SUPPRESS, help=help_text,
                metavar=None if choices else f.name.upper(),
            )


def config_from_args(cls: type, args: argparse.Namespace, **fixed: Any) -> Any:
    """Build ``cls`` from the options given on the command line (its own defaults for the rest)."""
    names = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in vars(args).items() if k in names}
    given.update({k: v for k, v in fixed.items() if k in names})
    return cls(**given)


# ------------------------------------------------------------------------------------------ output


def format_table(frame: Any, n: int) -> str:
    """The top rows of a ranking as a plain-text table."""
    columns = [c for c in ("feature", "name", "auroc", "auroc_lo", "auroc_hi", "group_auroc", "mean_diff", "cohens_d",
                           "frac_active_pos", "frac_active_neg", "length_corr", "p_value", "q_value", "significant")
               if c in frame]
    view = frame.head(n)[columns].copy()
    formats = {c: "{:.3f}".format for c in columns if c not in ("feature", "name", "p_value", "q_value", "significant")}
    formats.update({c: "{:.2e}".format for c in ("p_value", "q_value") if c in columns})
    return view.to_string(index=False, formatters=formats)


# ------------------------------------------------------------------------------------------ commands


def _cmd_rank(args: argparse.Namespace) -> int:
    from personas.pipeline import rank, rank_from_cache

    if args.cache:
        if args.data:
            raise PersonasError(f"got both DATA ({args.data}) and --cache ({args.cache}); give one of them.")
        rank_cfg = config_from_args(RankConfig, args)
        ranking, manifest = rank_from_cache(
            args.cache, hook=getattr(args, "hook", None), rank=rank_cfg, out=args.out, exact=args.exact,
            bins=args.bins, engine=args.engine, ray_address=args.ray_address,
        )
        data = manifest["data"]
        print(f"cache {args.cache} | hook {manifest['hook']} | {data['n_misaligned']} misaligned, "
              f"{data['n_aligned']} aligned | features tested: {len(ranking)} | "
              f"significant (q < {rank_cfg.alpha}): {manifest['ranking']['n_significant']}")
        print(format_table(ranking, rank_cfg.top))
        if args.out:
            print(f"wrote {args.out}/ranking.csv and {args.out}/manifest.json")
        return 0
    if not args.data:
        raise PersonasError("no responses to rank: give DATA (a JSONL, CSV or Parquet file) or --cache CACHE.")
    capture_cfg = config_from_args(CaptureConfig, args)
    result = rank(
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
    print(format_table(result.ranking, top))
    if result.out_dir is not None:
        print(f"wrote {result.out_dir / 'ranking.csv'} and {result.out_dir / 'manifest.json'}")
        if args.report:
            from personas.report import write_report

            print(f"wrote {write_report(result.out_dir)}")
    return 0


def _cmd_train_sae(args: argparse.Namespace) -> int:
    from personas.pipeline import train_sae_job

    out, metrics = train_sae_job(
        model=args.model,
        hook=args.hook,
        config=config_from_args(TrainSAEConfig, args),
        out=args.out,
        device=args.device,
        command=" ".join(["personas", *sys.argv[1:]]),
        progress=not args.quiet,
    )
    print(
        f"explained variance {metrics['explained_variance']:.3f} | L0 {metrics['l0']:.1f} | "
        f"dead fraction {metrics['dead_fraction']:.3f}"
    )
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from personas import __version__

    parser = argparse.ArgumentParser(
        prog="personas",
        description="Find the SAE features that mark a language model's misaligned persona.",
    )
    parser.add_argument("--version", action="version", version=f"personas {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("rank", help="rank SAE features separating misaligned from aligned responses")
    p.add_argument("data", nargs="?", help="responses: JSONL, CSV or Parquet file (or use --cache)")
    p.add_argument("--out", default="runs/rank", help="folder for ranking.csv and manifest.json (default: runs/rank)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--report", action="store_true",
                   help="also keep per-token SAE codes, write examples.json and an HTML report (report.html)")
    g = p.add_argument_group("from a cache", "rank from `personas cache` output without loading the model")
    g.add_argument("--cache", help="an activation cache folder written by `personas cache`")
    g.add_argument("--exact", action=argparse.BooleanOptionalAction, default=True,
                   help="exact statistics (memory grows with non-zeros) or --no-exact: binned AUROC, flat memory")
    g.add_argument("--bins", type=int, default=64, help="histogram bins with --no-exact (default: 64)")
    g.add_argument("--engine", choices=["local", "ray"], default="local", help="score shards locally or on Ray")
    g.add_argument("--ray-address", default=None, help="Ray cluster address; default: a local Ray")
    add_config_options(p, CaptureConfig)
    add_config_options(p, SAEConfig)
    add_config_options(p, RankConfig)
    add_config_options(p, DataConfig)
    p.set_defaults(func=_cmd_rank)

    p = sub.add_parser("train-sae", help="train a sae-lens SAE on a model's activations over the built-in corpus")
    p.add_argument("--model", default=CaptureConfig.model, help="model to read (default: minilm)")
    p.add_argument("--hook", default="blocks.3.hook_resid_post", help="hook name to train on")
    p.add_argument("--out", required=True, help="folder to write the SAE into")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_options(p, TrainSAEConfig)
    p.set_defaults(func=_cmd_train_sae)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands() -> list[Callable[[Any], None]]:
    """`register(subparsers)` functions of the steps that add their own commands."""
    import importlib

    found = []
    for module in ("personas.cache", "personas.detect", "personas.steer", "personas.diff", "personas.report"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        if hasattr(mod, "register_cli"):
            found.append(mod.register_cli)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "huggingface_hub", "urllib3", "filelock", "transformers", "sae_lens", "transformer_lens"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if getattr(args, "quiet", False) or not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    try:
        return int(args.func(args) or 0)
    except PersonasError as exc:
        print(f"personas {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"personas {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
