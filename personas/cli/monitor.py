"""``personas monitor``: calibrate a detector's threshold at a false-positive rate on benign answers (``calibrate``),
or show a monitor's record (``show``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from personas.cli.options import add_config_options, config_from_args
from personas.config import MonitorConfig
from personas.errors import PersonasError
from personas.jobs.monitor import calibrate_monitor
from personas.monitoring.monitor import MONITOR_FILE, monitor_path
from personas.serve.server import load_served_model


def _cmd_calibrate(args: argparse.Namespace) -> int:
    config = config_from_args(MonitorConfig, args)
    model, allow = None, None
    if config.model is not None:  # the served model: adapters (PEFT or the organism's) as the server loads them
        model, base = load_served_model(config.model, device=config.device, dtype=config.dtype)
        allow = config.allow_model_mismatch or base is not None
    result = calibrate_monitor(args.detector, args.benign, config=config, model=model, out=args.out,
                               allow_model_mismatch=allow)
    cal = result.calibration
    lo, hi = cal["fpr_interval"]
    print(f"{result.monitor!r}")
    print(f"threshold {result.monitor.threshold:.6g}: flags {cal['n_flagged']} of {cal['n']} benign answers, "
          f"FPR {cal['fpr_reached']:.4f} [{lo:.4f}, {hi:.4f}] (asked {cal['fpr_asked']}; expected on new answers "
          f"{cal['expected_fpr']:.4f})")
    if cal.get("n_unscored"):
        print(f"{cal['n_unscored']} benign answers had no token to score and were left out")
    if result.out_dir is not None:
        print(f"wrote {result.out_dir / MONITOR_FILE} and the detector beside it")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    folder = monitor_path(args.monitor)
    if not (folder / MONITOR_FILE).is_file():
        raise PersonasError(f"{str(folder)!r} holds no {MONITOR_FILE}; it is a bare detector (it flags at its training "
                            "threshold). Calibrate it with `personas monitor calibrate`.")
    record = json.loads((folder / MONITOR_FILE).read_text(encoding="utf-8"))
    cal = dict(record.get("calibration") or {})
    cal.pop("benign_scores", None)
    print(json.dumps({"folder": str(folder), "threshold": record["threshold"],
                      "threshold_source": record.get("threshold_source"), "monitor": record.get("monitor"),
                      "calibration": cal}, indent=2))
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("monitor", help="calibrate a detector as a monitor at a false-positive rate, or show "
                                              "a monitor's calibration")
    sub = p.add_subparsers(dest="monitor_command", required=True)
    cal = sub.add_parser("calibrate", help="set a detector's threshold at a false-positive rate on benign answers "
                                           "read through the served model")
    cal.add_argument("detector", help="a detector folder (`personas detect --out DIR`: DIR/detector), a monitor "
                                      "folder, or 'default'")
    cal.add_argument("--benign", required=True, help="benign answers (JSONL, CSV, Parquet with prompt and response); "
                                                     "prompts only (or a .txt of prompts): the served model answers")
    cal.add_argument("--out", required=True, help="folder for the monitor (detector files and monitor.json)")
    add_config_options(cal, MonitorConfig)
    cal.set_defaults(func=_cmd_calibrate)
    show = sub.add_parser("show", help="print a monitor's threshold and calibration record")
    show.add_argument("monitor", help="a monitor folder or 'default'")
    show.set_defaults(func=_cmd_show)
