"""Ray engine: capture with one model replica per Ray actor, score shards as parallel Ray tasks.

Install with ``pip install "personas[ray]"``. Without an address a local Ray is started (and stopped on
``close()``); with ``address`` (``"auto"``, ``"ray://head:10001"``, ``"HEAD_IP:6379"``) the job joins that
cluster. Each capture actor loads the model itself, by name or folder, so every node needs the model (a hub id
with a shared HF cache, or a folder on a shared file system). The driver alone writes the cache: actors send each
shard back serialized. Scoring tasks read shard files themselves, so the cache folder must be visible to the
workers (shared file system) when they run on other machines.

Results equal the local engine's: shards are captured by the same code, and the per-shard accumulators are
merged on the driver in shard order.
"""

from __future__ import annotations

import logging
import os
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
from personas.errors import PersonasError
from personas.scoring import StreamingRanker

logger = logging.getLogger(__name__)


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise PersonasError(
            "engine='ray' needs Ray; install it with `pip install \"personas[ray]\"` (or `pip install ray`), "
            "or use engine='local'."
        ) from exc
    return ray


class _CaptureActor:
    def __init__(self, spec: CaptureSpec) -> None:
        self.worker = ShardCapturer(spec)

    def describe(self) -> dict[str, Any]:
        return self.worker.describe()

    def run(self, task: ShardTask) -> ShardResult:
        return self.worker.run(task)


def _score_state(task: ScoreTask):
    return score_shard(task).state_dict()


class RayEngine:
    """Capture shards with ``num_workers`` model replicas and score shards in parallel on Ray.

    Args:
        address: a Ray cluster to join; None starts a local Ray (shut down on ``close()``).
        num_workers: capture actors; default one per GPU in the cluster, else 2.
        num_gpus_per_worker: GPUs reserved per capture actor; default 1 when the cluster has GPUs and the capture
            device is not ``cpu``, else 0.
        num_cpus_per_worker: CPUs reserved per capture actor (default 1).
        init_kwargs: extra keyword arguments for ``ray.init`` (e.g. ``_temp_dir``, ``num_cpus``).
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_workers: int | None = None, *,
                 num_gpus_per_worker: float | None = None, num_cpus_per_worker: float = 1,
                 init_kwargs: dict[str, Any] | None = None) -> None:
        ray = _import_ray()
        self.ray = ray
        self.address = address
        self.num_workers = num_workers
        self.num_gpus_per_worker = num_gpus_per_worker
        self.num_cpus_per_worker = num_cpus_per_worker
        self._started_ray = False
        self._actors: list[Any] = []
        if not ray.is_initialized():
            kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            kwargs.update(init_kwargs or {})
            if address:
                kwargs["address"] = address
            os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
            ray.init(**kwargs)
            self._started_ray = not address
        resources = ray.cluster_resources()
        self.info = {"address": address or "local", "cluster_cpus": resources.get("CPU", 0),
                     "cluster_gpus": resources.get("GPU", 0), "ray": ray.__version__}

    # -- capture ------------------------------------------------------------------------------------------------
    def start_capture(self, spec: CaptureSpec) -> dict[str, Any]:
        ray = self.ray
        if not isinstance(spec.model, str):
            raise PersonasError("engine='ray' needs the model by name or folder (each worker loads its own replica).")
        gpus = self.info["cluster_gpus"]
        per_gpu = self.num_gpus_per_worker
        if per_gpu is None:
            per_gpu = 1 if gpus and spec.config.device != "cpu" else 0
        n = self.num_workers or (int(gpus // per_gpu) if per_gpu else 2) or 1
        cpus = self.info["cluster_cpus"]
        for what, each, have in (("GPU", per_gpu, gpus), ("CPU", self.num_cpus_per_worker, cpus)):
            if each and n * each > have:  # Ray would leave the extra actors pending forever: a silent hang
                raise PersonasError(
                    f"num_workers={n} capture workers need {n * each:g} {what}s ({each:g} each) but the Ray cluster "
                    f"has {have:g}. Use --num-workers {max(1, int(have // each))}, add nodes, or capture on the "
                    f"{'CPU (--device cpu)' if what == 'GPU' else 'local engine'}."
                )
        actor_cls = ray.remote(num_cpus=self.num_cpus_per_worker, num_gpus=per_gpu)(_CaptureActor)
        self._actors = [actor_cls.remote(spec) for _ in range(n)]
        described = ray.get([a.describe.remote() for a in self._actors])
        first = {k: v for k, v in described[0].items() if k != "model"}
        for other in described[1:]:
            if {k: v for k, v in other.items() if k != "model"} != first:
                raise PersonasError("Ray workers loaded different models or SAEs; check that every node has the same "
                                    "model folder and SAE.")
        self.info["num_workers"] = n
        self.info["num_gpus_per_worker"] = per_gpu
        logger.info("ray: %d capture workers (%s GPU each)", n, per_gpu)
        return described[0]

    def run_capture(self, tasks: Iterable[ShardTask]) -> Iterator[ShardResult]:
        """Results as they complete (two shards in flight per actor)."""
        ray = self.ray
        if not self._actors:
            raise RuntimeError("call start_capture(spec) before run_capture(tasks)")
        pending: dict[Any, Any] = {}
        free = list(self._actors) * 2
        queue = iter(tasks)
        exhausted = False
        while True:
            while free and not exhausted:
                task = next(queue, None)
                if task is None:
                    exhausted = True
                    break
                actor = free.pop(0)
                pending[actor.run.remote(task)] = actor
            if not pending:
                return
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                free.append(pending.pop(ref))
                yield ray.get(ref)

    # -- scoring ------------------------------------------------------------------------------------------------
    def score(self, tasks: Iterable[ScoreTask]):
        """Score shards as parallel tasks; merge their accumulators in the order given."""

        ray = self.ray
        remote = ray.remote(num_cpus=1)(_score_state)
        refs = [remote.remote(t) for t in tasks]
        total = StreamingRanker()
        for ref in refs:  # in shard order: identical sums to the local engine
            total.merge(StreamingRanker.from_state(ray.get(ref)))
        return total

    def close(self) -> None:
        for actor in self._actors:
            self.ray.kill(actor)
        self._actors = []
        if self._started_ray:
            self.ray.shutdown()
            self._started_ray = False

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
