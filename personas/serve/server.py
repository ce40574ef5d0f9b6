"""`personas serve`: load the model and its monitor, open the record, and run the app under uvicorn.

`load_served_model` opens what ``--model`` names: the offline default, a folder, a hub id, a PEFT LoRA adapter
(merged on load by `personas.models.load_model`; what the organism writes), or an adapter in the organism's earlier
format (``adapter.safetensors`` + its own ``adapter_config.json``, `personas.organism.adapter`), which is loaded the way the
organism's own diff loads it: the base model from `personas.organism.run.load_chat_model`, the adapter attached with
`load_adapter` and written merged with `save_merged` into a temporary folder that `load_model` then opens (the
folder is removed once the weights are in memory). It also returns the base model an adapter adapts, so that the
monitor of the base model is accepted on its fine-tune without ``--allow-model-mismatch``.

`build_state` makes everything a server holds (`personas.serve.app.ServerState`): the engine thread, the event log
at ``OUT/events.jsonl`` (appended to across restarts), the webhook, the judge cascade, the metrics, and
``OUT/manifest.json`` (what is served and watched, the limits, the calibration; the API key's variable name only).
`run_server` serves it until interrupted; `ServerThread` runs one in a background thread of this process (on a free
port of 127.0.0.1 by default), for notebooks, tests and benchmarks.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from personas.artifacts import MANIFEST_FILE, check_output_dir, manifest_header, write_json
from personas.config import ServeConfig
from personas.errors import ModelLoadError, PersonasError
from personas.judging import load_judge
from personas.logs import quiet_third_party
from personas.models import ModelHandle, load_model
from personas.models.offline import SMOLLM2_ID, offline_model
from personas.models.peft import is_peft_adapter, read_lora
from personas.monitoring import EventLog, Monitor, Webhook
from personas.organism.adapter import (
    ADAPTER_CONFIG_FILE,
    LEGACY_ADAPTER_FILE,
    load_adapter,
    read_adapter_config,
    save_merged,
)
from personas.organism.run import load_chat_model
from personas.saes import same_model
from personas.serve.app import ServerState, create_app
from personas.serve.engine import Engine
from personas.serve.metrics import Metrics
from personas.serve.protocol import Limits
from personas.serve.record import JudgeCascade, Recorder
from personas.steering import context_size

logger = logging.getLogger(__name__)

__all__ = ["EVENTS_FILE", "ServerThread", "build_state", "is_organism_adapter", "load_served_model", "run_server"]

EVENTS_FILE = "events.jsonl"
SERVE_KIND = "personas.serve"
#: What the ``serve`` extra installs (``pip install "personas[serve]"``): the ASGI app, its server, the metrics.
SERVE_EXTRA = ("fastapi", "uvicorn", "prometheus_client")


def is_organism_adapter(folder: str | os.PathLike) -> bool:
    """True for a folder in the organism's earlier adapter format (what `personas.organism.adapter.save_adapter`
    wrote before it wrote PEFT's format, which `load_model` reads)."""
    folder = Path(folder)
    if not ((folder / LEGACY_ADAPTER_FILE).is_file() and (folder / ADAPTER_CONFIG_FILE).is_file()):
        return False
    try:
        return isinstance(json.loads((folder / ADAPTER_CONFIG_FILE).read_text(encoding="utf-8")).get("adapter"), dict)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False


def _base_id(name: str) -> str:
    offline = offline_model(name)
    return offline.model_id if offline is not None else name


def load_served_model(spec: str, *, device: str = "cpu", dtype: str = "float32") -> tuple[ModelHandle, str | None]:
    """(the model, the base model it adapts or None) for ``--model`` (see the module docstring)."""
    path = Path(spec).expanduser()
    if path.is_dir() and is_organism_adapter(path):
        config = read_adapter_config(path)
        base = config.get("base_model")
        if not base:
            raise ModelLoadError(f"{str(path / ADAPTER_CONFIG_FILE)!r} names no base_model; expected the model the "
                                 "adapter was trained on (e.g. HuggingFaceTB/SmolLM2-135M-Instruct).")
        offline = offline_model(base)
        base_folder = offline.path() if offline is not None else Path(base)
        logger.info("loading the organism adapter %s on %s (merged through a temporary folder)", path, base)
        with quiet_third_party():
            lm, tokenizer = load_chat_model(base_folder)
            adapter = load_adapter(lm, path)
            with tempfile.TemporaryDirectory(prefix="personas-merged-") as tmp:
                save_merged(adapter, tokenizer, tmp)
                del lm, adapter
                handle = load_model(tmp, device=device, dtype=dtype)
        return ModelHandle(model=handle.model, model_id=str(path.resolve()), backend=handle.backend), _base_id(base)
    with quiet_third_party():
        handle = load_model(spec, device=device, dtype=dtype)
    base = _base_id(read_lora(path).base_model) if path.is_dir() and is_peft_adapter(path) else None
    return handle, base


def _port_free(host: str, port: int) -> None:
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PersonasError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port, or "
                                "stop what uses it.") from None


def require_serve_extra() -> None:
    """Raise a `PersonasError` naming what to install when a package of the ``serve`` extra is missing."""
    missing = []
    for name in SERVE_EXTRA:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise PersonasError(f"personas serve needs {', '.join(missing)} (the serve extra), which is not installed; "
                            "install it with `pip install \"personas[serve]\"`.")


def build_state(config: ServeConfig, *, model: Any = None, monitor: Any = None, judge: Any = None,
                api_key: str | None = None) -> ServerState:
    """Everything a server holds, from ``config`` (``model``, ``monitor`` and ``judge`` may be given loaded;
    ``api_key`` overrides ``config.api_key_env``)."""
    require_serve_extra()  # before a model loads
    out = check_output_dir(config.out)
    manifest_path = out / MANIFEST_FILE
    if manifest_path.is_file():
        try:
            kind = json.loads(manifest_path.read_text(encoding="utf-8")).get("kind")
        except (OSError, ValueError, AttributeError):
            kind = None
        if kind != SERVE_KIND:
            raise PersonasError(f"--out {str(out)!r} holds a {kind!r} run, not a server's record; choose another "
                                "folder (the server appends to OUT/events.jsonl across restarts).")
    if api_key is None and config.api_key_env:
        api_key = os.environ.get(config.api_key_env)
        if not api_key:
            raise PersonasError(f"--api-key-env {config.api_key_env}: that environment variable is not set (or "
                                "empty); export it with the key, or leave --api-key-env out to serve without one.")
    base = None
    loaded_here = model is None
    if loaded_here:
        model, base = load_served_model(config.model, device=config.device, dtype=config.dtype)
    handle = model if isinstance(model, ModelHandle) else load_model(model)
    if monitor is None and config.monitor != "none":
        watched = base or handle.model_id
        if config.monitor == "default" and not same_model(watched, SMOLLM2_ID) and not config.allow_model_mismatch:
            raise PersonasError(f"the shipped monitor watches SmolLM2-135M-Instruct ({SMOLLM2_ID}), not "
                                f"{handle.model_id!r}. Pass --monitor DIR (a detector fit on this model: `personas "
                                "detect --out`, then `personas monitor calibrate`), or --monitor none.")
        allow = config.allow_model_mismatch or base is not None
        monitor = Monitor(handle, config.monitor, allow_model_mismatch=allow)
        if base is not None and not config.allow_model_mismatch and not same_model(base, monitor.fit_model):
            raise PersonasError(f"the monitor was fit on {monitor.fit_model!r}, but {config.model!r} adapts "
                                f"{base!r}; pass a monitor of that model, or --allow-model-mismatch.")
    if monitor is not None and base is not None:
        logger.info("watching the adapter %s with a monitor fit on its base model %s", handle.model_id, base)
    metrics = Metrics()
    events = EventLog(out / "events.jsonl")
    webhook = None
    if config.webhook:
        webhook = Webhook(config.webhook, timeout=config.webhook_timeout, retries=config.webhook_retries,
                          on_failure=lambda why: metrics.webhook_failures.labels(reason=why).inc())
    cascade = None
    if config.judge or judge is not None:
        if monitor is None:
            raise PersonasError("--judge reviews what the monitor flags; it needs a monitor (not --monitor none).")
        judge = judge if judge is not None else load_judge(config.judge)
        review = monitor.threshold_at(config.review_fpr) if config.review_fpr is not None else monitor.threshold
        cascade = JudgeCascade(judge, events, review_threshold=review, sample=config.judge_sample, metrics=metrics)
    served = config.served_name or (config.model if loaded_here else handle.model_id)
    recorder = Recorder(events, webhook=webhook, cascade=cascade, metrics=metrics, log_answers=config.log_answers,
                        recent=config.recent, model=served,
                        monitor=monitor.source if monitor is not None else None)
    if monitor is not None:
        metrics.threshold.set(monitor.threshold)
    engine = Engine(handle, monitor, max_batch=config.max_batch, window_ms=config.batch_window_ms,
                    max_queue=config.max_queue, metrics=metrics).start()
    limits = Limits(max_messages=config.max_messages, max_tokens_limit=config.max_tokens_limit,
                    default_max_tokens=config.default_max_tokens)
    manifest = {
        **manifest_header(SERVE_KIND),
        "config": {**asdict(config), "api_key_env": config.api_key_env},
        "served_name": served,
        "model": handle.provenance(),
        "base_model": base,
        "monitor": monitor.describe() if monitor is not None else None,
        "judge": cascade.stats()["judge"] if cascade is not None else None,
        "review_threshold": cascade.review_threshold if cascade is not None else None,
        "auth": bool(api_key),
        "files": {EVENTS_FILE: "append-only JSON lines: flagged answers (type flag), judge verdicts (type judge)"},
    }
    write_json(manifest_path, manifest)
    return ServerState(model=handle, monitor=monitor, engine=engine, recorder=recorder, metrics=metrics,
                       served_name=served, limits=limits, max_body_bytes=config.max_body_bytes, api_key=api_key,
                       n_ctx=context_size(handle), started=time.time(), manifest=manifest)


def close_state(state: ServerState) -> None:
    """Stop the engine and the record's threads, close the event log."""
    state.engine.close()
    state.recorder.close()


def _uvicorn_server(app: Any, host: str, port: int, log_level: str = "warning") -> Any:
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=5, lifespan="off")
    return uvicorn.Server(config)


def run_server(config: ServeConfig, *, on_ready: Any = None) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM); ``on_ready(state, port)`` is called once listening."""
    _port_free(config.host, config.port)
    state = build_state(config)
    app = create_app(state)
    server = _uvicorn_server(app, config.host, config.port, log_level="info")
    sock = socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
    except OSError as exc:
        close_state(state)
        raise PersonasError(f"cannot listen on {config.host}:{config.port} ({exc.strerror or exc}); choose another "
                            "--port.") from None
    port = sock.getsockname()[1]
    if on_ready is not None:
        on_ready(state, port)
    try:
        server.run(sockets=[sock])
    finally:
        close_state(state)
        sock.close()


class ServerThread:
    """A server over ``state`` in a background thread of this process, on ``host`` and a free port::

        with ServerThread(state) as server:
            client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    """

    def __init__(self, state: ServerState, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state, self.host = state, host
        self.app = create_app(state)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.port = self._sock.getsockname()[1]
        self._server = _uvicorn_server(self.app, host, self.port)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="personas-server", daemon=True)

    @property
    def url(self) -> str:
        """``http://HOST:PORT``."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        """Start serving; returns once the server accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise PersonasError("the server did not start; see the log.")
            time.sleep(0.02)
        return self

    def stop(self, close: bool = True) -> None:
        """Stop serving; with ``close``, also the engine and the record's threads."""
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()
        if close:
            close_state(self.state)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
