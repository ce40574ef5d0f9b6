"""``personas serve``: an OpenAI-compatible server that scores every answer for the misaligned persona as it is
generated (`personas.serve.run_server`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from personas.cli.options import add_config_options, config_from_args
from personas.config import ServeConfig
from personas.serve import run_server

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _cmd_serve(args: argparse.Namespace) -> int:
    config = config_from_args(ServeConfig, args)
    if config.host not in LOCAL_HOSTS and not config.api_key_env:
        print(f"personas serve: warning: listening on {config.host} without --api-key-env: anyone who can reach "
              "this machine can use the model and read the dashboard", file=sys.stderr)

    def ready(state: Any, port: int) -> None:
        base = f"http://{config.host if ':' not in config.host else '[' + config.host + ']'}:{port}"
        mon = state.monitor
        watched = (f"monitor {mon.source} ({mon.scorer.kind} at {mon.scorer.hook}), flags at {mon.threshold:.4g} "
                   f"[{mon.threshold_source}]" if mon is not None else "no monitor")
        print(f"serving {state.served_name!r} at {base}/v1 | {watched}", flush=True)
        print(f"dashboard {base}/ | metrics {base}/metrics | events {state.recorder.events.path}"
              + (" | API key required" if state.api_key else ""), flush=True)

    run_server(config, on_ready=ready)
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve", help="serve a chat model over the OpenAI API, scoring every answer for the misaligned persona"
    )
    add_config_options(p, ServeConfig)
    p.set_defaults(func=_cmd_serve)
