"""``personas report``: a self-contained HTML report of a ``personas rank`` folder."""

from __future__ import annotations

import argparse
from typing import Any

from personas.errors import PersonasError
from personas.report.html import write_report


def register(sub: Any) -> None:
    """``personas report DIR [--out FILE] [--top N]``."""
    p = sub.add_parser(
        "report",
        help="write a self-contained HTML report (table, plots, examples, provenance) of a `personas rank` folder",
    )
    p.add_argument("run_dir", help="the --out folder of `personas rank` (ranking.csv, manifest.json, examples.json)")
    p.add_argument("--out", help="HTML file to write (default: RUN_DIR/report.html)")
    p.add_argument("--top", type=int, default=30, help="rows of the ranking table (default: 30)")
    p.add_argument("--title", default=None, help="title of the report")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise PersonasError(f"--top {args.top}; expected at least 1 row.")
    path = write_report(args.run_dir, out=args.out, top=args.top, title=args.title)
    print(f"wrote {path}")
    return 0
