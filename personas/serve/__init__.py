"""The OpenAI-compatible server that watches every answer for the misaligned persona as it is generated.

* `protocol`: the chat-completions request checked by hand (every bad request gets the API's error object and a
  4xx), the response and stream objects.
* `engine`: the model's one thread; requests batched within a short window, decoded with the monitor reading its
  site in the same forward pass (`personas.monitoring.monitored_decode`).
* `record`: the event log, the webhook, the dashboard's recent answers and the judge cascade.
* `metrics`: Prometheus metrics; `dashboard`: the server-rendered page at ``/``.
* `app`: the FastAPI application; `server`: loading the model and monitor, `run_server`, `ServerThread`.

Needs the ``serve`` extra (FastAPI, uvicorn, prometheus_client): ``pip install "personas[serve]"``.
"""

from __future__ import annotations

from personas.serve.app import ServerState, create_app
from personas.serve.server import ServerThread, build_state, load_served_model, run_server

__all__ = ["ServerState", "ServerThread", "build_state", "create_app", "load_served_model", "run_server"]
