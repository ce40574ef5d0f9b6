"""The default engine: one model replica in this process, shards captured and scored one after another."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from personas.cache.engines.base import (
    CaptureSpec,
    ScoreTask,
    ShardCapturer,
    ShardResult,
    ShardTask,
    score_shard,
)
from personas.scoring import StreamingRanker


class LocalEngine:
    """Capture and score shards in this process, in shard order (one shard's data in memory at a time)."""

    name = "local"

    def __init__(self) -> None:
        self._worker: ShardCapturer | None = None

    def start_capture(self, spec: CaptureSpec) -> dict[str, Any]:
        self._worker = ShardCapturer(spec)
        return self._worker.describe()

    def run_capture(self, tasks: Iterable[ShardTask]) -> Iterator[ShardResult]:
        if self._worker is None:
            raise RuntimeError("call start_capture(spec) before run_capture(tasks)")
        for task in tasks:
            yield self._worker.run(task)

    def score(self, tasks: Iterable[ScoreTask]):
        """Merge the shards' accumulators in the order given."""

        total = StreamingRanker()
        for task in tasks:
            total.merge(score_shard(task))
        return total

    def close(self) -> None:
        self._worker = None

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
