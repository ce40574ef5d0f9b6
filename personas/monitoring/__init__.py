"""Monitoring: a detector watching a model while it generates.

* `thresholds`: `fpr_threshold`, the threshold that flags at most a share of benign answers, with the rate reached
  and its interval.
* `scorer`: `TokenScorer`, the detector's score of each answer token and of the whole answer (its pooling) from
  activations at its site; `Verdict`, what the monitor says of one answer.
* `generation`: `monitored_decode`, batched cached generation that reads the monitor's site in the same forward pass,
  with per-request sampling, stop strings, streaming and cancellation.
* `monitor`: `Monitor` (a detector, its SAE, the served model and a calibrated threshold; ``generate``, ``score``,
  ``calibrate``, ``save``) and `load_monitor`.
* `events`: `EventLog` (append-only JSON lines, whole lines only) and `Webhook` (background POSTs with retries).

The server (`personas.serve`) is a thin layer over these.
"""

from __future__ import annotations

from personas.monitoring.events import EventLog, Webhook, read_events
from personas.monitoring.generation import GenerationRequest, GenerationResult, monitored_decode, render_chat
from personas.monitoring.monitor import DEFAULT_MONITOR, Monitor, load_monitor, monitor_path
from personas.monitoring.scorer import TokenScorer, Verdict
from personas.monitoring.thresholds import FprThreshold, fpr_threshold

__all__ = ["DEFAULT_MONITOR", "EventLog", "FprThreshold", "GenerationRequest", "GenerationResult", "Monitor",
           "TokenScorer", "Verdict", "Webhook", "fpr_threshold", "load_monitor", "monitor_path", "monitored_decode",
           "read_events", "render_chat"]
