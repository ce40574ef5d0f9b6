"""What every engine runs: the per-shard capture worker and the per-shard scorer, plus their task types.

These objects are plain and picklable so that Ray can ship them to workers; the worker loads its own model
replica from a name or folder (a model object already in memory can only be used by the local engine).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from personas.cache.shards import check_shard_against_index, encode_shard, read_shard_file
from personas.capturing import capture
from personas.config import CaptureConfig
from personas.devices import sae_dtype
from personas.models import as_model_handle, load_model
from personas.saes import load_sae, sae_fingerprint
from personas.scoring import StreamingRanker

logger = logging.getLogger(__name__)


@dataclass
class CaptureSpec:
    """Everything a worker needs to build its model replica and capture shards."""

    model: Any  # name or folder (any engine), or a ModelHandle / TransformerLens model (local engine only)
    sae: Any  # None, a spec string for load_sae, or a loaded sae-lens SAE
    hooks: list[str]
    config: CaptureConfig
    keep_tokens: bool = True
    encode_batch_tokens: int = 8192


@dataclass
class ShardTask:
    """One contiguous block of responses, rows ``start:stop`` of the dataset."""

    index: int
    start: int
    stop: int
    prompts: list[str]
    responses: list[str]
    labels: np.ndarray


@dataclass
class ShardResult:
    """A captured shard, serialized (safetensors bytes), with capture statistics for the manifest."""

    index: int
    data: bytes
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScoreTask:
    """Score one shard file of a cache: rows ``rows[0]:rows[1]``, whose labels the row index gives."""

    index: int
    path: str
    sha256: str | None
    size: int | None
    groups: np.ndarray | None
    hook: str | None
    use: str
    verify: bool = True
    rows: tuple[int, int] | None = None
    labels: np.ndarray | None = None


class ShardCapturer:
    """Holds one model replica (and SAE) and turns `ShardTask`s into `ShardResult`s with `personas.capture`."""

    def __init__(self, spec: CaptureSpec) -> None:
        self.spec = spec
        cfg = spec.config
        if isinstance(spec.model, str):
            self.handle = load_model(spec.model, device=cfg.device, dtype=cfg.dtype)
        else:
            self.handle = as_model_handle(spec.model)
        self.sae = None
        if spec.sae is not None:
            self.sae = load_sae(spec.sae, device=self.handle.device, dtype=sae_dtype(cfg.dtype, self.handle.device), model=self.handle.model_id)
            if not isinstance(spec.sae, str):
                self.sae = self.sae.to(self.handle.device)
        self.handle.check_hooks(list(spec.hooks))

    def describe(self) -> dict[str, Any]:
        """The model and SAE as loaded: what the cache fingerprint is made of."""

        sae_hook = None
        if self.sae is not None:
            hook_name = self.sae.cfg.metadata.hook_name
            sae_hook = hook_name if hook_name in self.spec.hooks else self.spec.hooks[0]
        return {
            "model": self.handle.provenance(),
            "model_id": self.handle.model_id,
            "sae": None if self.sae is None else sae_fingerprint(self.sae, self.spec.sae),
            "sae_hook": sae_hook,
            "stop_at_layer": self.handle.stop_layer(list(self.spec.hooks)),
        }

    def run(self, task: ShardTask) -> ShardResult:
        spec = self.spec
        captured = capture(
            self.handle,
            task.prompts,
            task.responses,
            hooks=list(spec.hooks),
            config=spec.config,
            sae=self.sae,
            keep_tokens=spec.keep_tokens and self.sae is not None,
            encode_batch_tokens=spec.encode_batch_tokens,
            progress=False,
        )
        data = encode_shard(task.index, task.start, task.stop, np.asarray(task.labels), captured, list(spec.hooks))
        stats = {k: captured.stats.get(k) for k in ("n_response_tokens", "n_truncated", "n_norm_outlier_tokens",
                                                     "max_norm_ratio")}
        return ShardResult(task.index, data, stats)


def score_shard(task: ScoreTask):
    """A `StreamingRanker` holding one shard's responses (labels from the shard, groups from the task)."""

    shard = read_shard_file(task.path, sha256=task.sha256, size=task.size, verify=task.verify,
                            want=("features",) if task.use == "sae" else ("pooled",), hook=task.hook,
                            expect=None if task.rows is None else (task.index, *task.rows))
    if task.labels is not None:
        check_shard_against_index(shard, task.labels, None, task.path)
    x = shard.features if task.use == "sae" else shard.pooled[task.hook]
    return StreamingRanker(int(x.shape[1])).update(x, shard.labels, task.groups)
