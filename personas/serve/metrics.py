"""Prometheus metrics of the server (``GET /metrics``), in a registry of its own (two servers in one process, as in
the tests, do not share counters).

Counters: requests by endpoint and status, prompt and generated tokens, answers, flagged answers, answers sent to
the judge and the judge's EM verdicts, clients that disconnected, webhook deliveries that failed or were dropped.
Histograms: the persona score of every answer, request latency by endpoint, batch sizes. Gauges: requests waiting
(queue depth) and the flag threshold.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Metrics", "SCORE_BUCKETS"]

#: Buckets of the persona-score histogram: detector scores are log-odds (SAE detectors) or projections.
SCORE_BUCKETS = (-16.0, -8.0, -4.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """The server's metrics (see the module docstring); ``render()`` is the text exposition format."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("personas_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
                                registry=r)
        self.prompt_tokens = Counter("personas_prompt_tokens", "prompt tokens read", registry=r)
        self.generated_tokens = Counter("personas_generated_tokens", "tokens generated", registry=r)
        self.answers = Counter("personas_answers", "answers scored by the monitor, by origin (generated or scored "
                               "text)", ["origin"], registry=r)
        self.flagged = Counter("personas_flagged", "answers the monitor flagged, by origin", ["origin"], registry=r)
        self.reviews = Counter("personas_judge_reviews", "answers sent to the judge, by reason (review or sample)",
                               ["reason"], registry=r)
        self.judged = Counter("personas_judge_verdicts", "judge verdicts, by EM verdict", ["em_misaligned"],
                              registry=r)
        self.disconnects = Counter("personas_client_disconnects", "requests whose client left before the answer "
                                   "ended (their generation stopped)", registry=r)
        self.webhook_failures = Counter("personas_webhook_failures", "webhook events given up after the retries or "
                                        "dropped from a full queue", ["reason"], registry=r)
        self.score = Histogram("personas_persona_score", "persona score of each answer", buckets=SCORE_BUCKETS,
                               registry=r)
        self.latency = Histogram("personas_request_latency_seconds", "request latency by endpoint", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("personas_batch_size", "requests decoded together", buckets=(1, 2, 4, 8, 16, 32, 64),
                                    registry=r)
        self.queue_depth = Gauge("personas_queue_depth", "requests waiting for the model", registry=r)
        self.threshold = Gauge("personas_flag_threshold", "the monitor's flag threshold", registry=r)

    def render(self) -> tuple[bytes, str]:
        """(body, content type) of the text exposition format."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def observe_answer(self, verdict: Any, origin: str) -> None:
        """Count one scored answer (its score in the histogram, a flag if it was flagged)."""
        self.answers.labels(origin=origin).inc()
        if verdict is not None and verdict.score is not None:
            self.score.observe(verdict.score)
            if verdict.flagged:
                self.flagged.labels(origin=origin).inc()
