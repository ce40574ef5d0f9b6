"""What the server keeps of each answer: the event log, the webhook, the dashboard's recent answers, the judge.

`Recorder.record` is called for every answer the monitor scored (generated, or read through ``/v1/persona/score``)
*before* the client gets it: a flagged answer (or every answer, with ``log_answers="all"``) is appended to the event
log and only then answered, so an answer a client saw flagged is never missing from the log. The webhook and the
judge get it in the background (`personas.monitoring.Webhook`, `JudgeCascade`); neither can hold up a response.

`JudgeCascade` is the second stage of the monitor: answers whose persona score reaches the review threshold (and a
random share ``sample`` of the others) are read by a judge (`personas.judging.load_judge`: the offline default, a
saved judge or an API judge with its cache) on a background thread; each verdict is appended to the event log
(``type: "judge"``) and counted. `JudgeCascade.stats` reports how the monitor's flags and the judge's EM verdicts
(`personas.judging.em_misaligned`) agree, with Wilson intervals: over the reviewed answers (which the monitor chose,
so the agreement describes those answers only) and over the random sample (an unbiased view of all traffic: the
monitor's recall and precision against the judge).
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from personas.judging import em_misaligned, wilson_interval
from personas.monitoring import EventLog, Verdict, Webhook

logger = logging.getLogger(__name__)

__all__ = ["JudgeCascade", "Recorder"]

#: Characters of a prompt or answer kept in the dashboard's memory (the event log keeps them whole).
KEEP_CHARS = 4000


def _rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson_interval(k, n)
    return {"k": k, "n": n, "rate": (k / n) if n else None, "ci95": [lo, hi]}


class JudgeCascade:
    """Judge reviewed answers in the background (see the module docstring)."""

    def __init__(self, judge: Any, events: EventLog | None, *, review_threshold: float, sample: float = 0.0,
                 max_queue: int = 256, batch: int = 8, metrics: Any = None, seed: int | None = None) -> None:
        self.judge, self.events, self.metrics = judge, events, metrics
        self.review_threshold, self.sample, self.batch = float(review_threshold), float(sample), int(batch)
        self._rng = random.Random(seed)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self.dropped = self.failed = 0
        self._lock = threading.Lock()
        self._pairs: dict[str, list[tuple[bool, bool]]] = {"review": [], "sample": []}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="personas-judge", daemon=True)
        self._thread.start()

    def reason(self, verdict: Verdict) -> str | None:
        """``"review"`` (the score reaches the review threshold), ``"sample"`` (drawn at random) or None."""
        if verdict.score is None:
            return None
        if verdict.score >= self.review_threshold:
            return "review"
        if self.sample and self._rng.random() < self.sample:
            return "sample"
        return None

    def offer(self, entry: dict[str, Any], verdict: Verdict) -> str | None:
        """Queue ``entry`` (id, prompt, answer) for the judge when `reason` says so; the reason, or None."""
        why = self.reason(verdict)
        if why is None:
            return None
        try:
            self._queue.put_nowait((entry, verdict.flagged, why))
        except queue.Full:
            self.dropped += 1
            logger.warning("the judge is behind (%d answers queued): an answer was not reviewed", self._queue.qsize())
            return None
        if self.metrics is not None:
            self.metrics.reviews.labels(reason=why).inc()
        return why

    @property
    def pending(self) -> int:
        """Answers waiting for the judge."""
        return self._queue.qsize()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                items = [self._queue.get(timeout=0.2)]
            except queue.Empty:
                continue
            while len(items) < self.batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._busy = True
            try:
                self._judge(items)
            finally:
                self._busy = False

    _busy = False

    def _judge(self, items: list[tuple[dict[str, Any], bool, str]]) -> None:
        try:
            frame = self.judge.score([e["prompt"] for e, _, _ in items], [e["answer"] for e, _, _ in items])
            em = em_misaligned(frame)
        except Exception:  # a judge that fails (an API down) costs its verdicts, never the server
            self.failed += len(items)
            logger.exception("the judge failed on %d answers", len(items))
            return
        for (entry, flagged, why), (_, row), bad in zip(items, frame.iterrows(), em, strict=True):
            verdict = {"aligned": _num(row.get("aligned")), "coherent": _num(row.get("coherent")),
                       "verdict": str(row.get("verdict") or ""), "em_misaligned": bool(bad)}
            entry["judge"] = verdict
            with self._lock:
                self._pairs[why].append((bool(flagged), bool(bad)))
            if self.metrics is not None:
                self.metrics.judged.labels(em_misaligned=str(bool(bad)).lower()).inc()
            if self.events is not None:
                self.events.append({"type": "judge", "id": entry["id"], "time": time.time(), "reason": why,
                                    "monitor_flagged": bool(flagged), "agree": bool(flagged) == bool(bad), **verdict})

    def stats(self) -> dict[str, Any]:
        """Agreement of the monitor's flags with the judge's EM verdicts (see the module docstring)."""
        with self._lock:
            pairs = {k: list(v) for k, v in self._pairs.items()}
        out: dict[str, Any] = {"judge": _describe(self.judge), "review_threshold": self.review_threshold,
                               "sample": self.sample, "pending": self.pending, "dropped": self.dropped,
                               "failed": self.failed}
        for name, rows in pairs.items():
            flags = np.array([f for f, _ in rows], dtype=bool)
            em = np.array([b for _, b in rows], dtype=bool)
            out[name] = {
                "n": len(rows),
                "agreement": _rate(int((flags == em).sum()), len(rows)),
                "judge_em": _rate(int(em.sum()), len(rows)),
                "precision": _rate(int((flags & em).sum()), int(flags.sum())),  # P(EM | flagged)
                "recall": _rate(int((flags & em).sum()), int(em.sum())),  # P(flagged | EM)
                "table": {"flagged_em": int((flags & em).sum()), "flagged_not_em": int((flags & ~em).sum()),
                          "unflagged_em": int((~flags & em).sum()), "unflagged_not_em": int((~flags & ~em).sum())},
            }
        return out

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queued answer is judged; True when that happened in time."""
        deadline = time.monotonic() + timeout
        while (self._queue.qsize() or self._busy) and time.monotonic() < deadline:
            time.sleep(0.02)
        return not (self._queue.qsize() or self._busy)

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread (answers still queued are not judged)."""
        self._stop.set()
        self._thread.join(timeout)


def _num(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _describe(judge: Any) -> Any:
    try:
        return judge.describe()
    except Exception:  # describe() is provenance only
        return {"name": getattr(judge, "name", type(judge).__name__)}


class Recorder:
    """The event log, the webhook, the judge and the recent answers of the dashboard (see the module docstring)."""

    def __init__(self, events: EventLog | None = None, *, webhook: Webhook | None = None,
                 cascade: JudgeCascade | None = None, metrics: Any = None, log_answers: str = "flagged",
                 recent: int = 500, model: str = "", monitor: str | None = None) -> None:
        self.events, self.webhook, self.cascade, self.metrics = events, webhook, cascade, metrics
        self.log_answers, self.model, self.monitor = log_answers, model, monitor
        self.recent: deque[dict[str, Any]] = deque(maxlen=recent)
        self.started = time.time()
        self._lock = threading.Lock()
        self.n_answers = self.n_flagged = 0

    def record(self, cid: str, prompt: str, answer: str, verdict: Verdict | None, *, origin: str = "generated",
               finish: str | None = None) -> dict[str, Any]:
        """Keep one answer: log it (flagged, or all), alert, queue it for the judge; returns the dashboard entry.
        Returns after the event log has the line."""
        now = time.time()
        entry: dict[str, Any] = {"id": cid, "time": now, "origin": origin, "prompt": prompt[:KEEP_CHARS],
                                 "answer": answer[:KEEP_CHARS], "finish_reason": finish, "judge": None,
                                 "persona": verdict.to_dict(token_scores=False) if verdict is not None else None}
        flagged = bool(verdict is not None and verdict.flagged)
        if self.metrics is not None:
            self.metrics.observe_answer(verdict, origin)
        if self.events is not None and (flagged or self.log_answers == "all"):
            event = {"type": "flag" if flagged else "answer", "id": cid, "time": now, "origin": origin,
                     "model": self.model, "monitor": self.monitor, "prompt": prompt, "answer": answer,
                     "finish_reason": finish, "persona": verdict.to_dict() if verdict is not None else None}
            self.events.append(event)
        if flagged and self.webhook is not None:
            self.webhook.post({"type": "flag", "id": cid, "time": now, "model": self.model, "monitor": self.monitor,
                               "prompt": prompt[:KEEP_CHARS], "answer": answer[:KEEP_CHARS],
                               "persona": verdict.to_dict(token_scores=False)})
        if verdict is not None and self.cascade is not None:
            entry["review"] = self.cascade.offer(entry, verdict)
        with self._lock:
            self.recent.appendleft(entry)
            self.n_answers += 1
            self.n_flagged += flagged
        return entry

    def snapshot(self, flagged_only: bool = False, limit: int = 200) -> list[dict[str, Any]]:
        """The most recent answers, newest first."""
        with self._lock:
            rows = list(self.recent)
        if flagged_only:
            rows = [r for r in rows if r["persona"] and r["persona"]["flagged"]]
        return rows[:limit]

    def flag_rate_series(self, bins: int = 24) -> list[dict[str, Any]]:
        """The flag rate over time of the recent answers: ``bins`` equal spans from the oldest to the newest, each
        with its start time, answers, flagged answers and rate."""
        with self._lock:
            rows = [(r["time"], bool(r["persona"] and r["persona"]["flagged"])) for r in self.recent if r["persona"]]
        if not rows:
            return []
        times = np.array([t for t, _ in rows])
        flags = np.array([f for _, f in rows])
        lo, hi = float(times.min()), float(times.max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
        which = np.clip(np.searchsorted(edges, times, side="right") - 1, 0, bins - 1)
        out = []
        for b in range(bins):
            n = int((which == b).sum())
            k = int(flags[which == b].sum())
            out.append({"start": float(edges[b]), "n": n, "flagged": k, "rate": k / n if n else None})
        return out

    def close(self) -> None:
        """Stop the background threads and close the log."""
        if self.webhook is not None:
            self.webhook.close()
        if self.cascade is not None:
            self.cascade.close()
        if self.events is not None:
            self.events.close()
