"""Binned ranking of a cache: feed its shards, twice, to `personas.scoring.binned.BinnedRanker`.

The statistics (histograms, error bound, the shared within-question tests) live in `personas.scoring.binned`;
this module only reads the shards: the pooled SAE codes (``use="sae"``) or the pooled activations at a hook, with
labels and question groups taken from the cache's index. Memory does not grow with the number of responses.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from personas.cache.shards import Shard
from personas.errors import PersonasError
from personas.scoring.binned import BinnedRanker
from personas.scoring.ranking import Ranking

__all__ = ["BinnedRanker", "rank_binned"]


def rank_binned(cache: Any, *, hook: str, use: str, groups: np.ndarray | None, key: str, alpha: float,
                min_frac_active: float, ci_level: float, bins: int = 64, verify: bool = True) -> Ranking:
    """Rank the features of an `ActivationCache` with a `BinnedRanker` of ``bins`` bins (two passes over shards).

    ``groups`` holds one question id per cached response (or None); ``use`` is ``"sae"`` or ``"activations"``.
    """
    ranker = BinnedRanker(bins)
    want = ("features",) if use == "sae" else ("pooled",)
    labels = cache.labels

    def parts(shard: Shard) -> tuple[Any, np.ndarray, np.ndarray | None]:
        x = shard.features if use == "sae" else shard.pooled[hook]
        rows = slice(shard.start, shard.stop)
        return x, labels[rows], None if groups is None else groups[rows]

    for shard in cache.iter_shards(want=want, hook=hook, verify=verify):
        x, y, g = parts(shard)
        try:
            ranker.update_range(x, y, g)
        except PersonasError as exc:
            raise PersonasError(f"shard {shard.index}: {exc}") from exc
    for shard in cache.iter_shards(want=want, hook=hook, verify=verify):
        ranker.update(*parts(shard))
    return ranker.result(key=key, alpha=alpha, min_frac_active=min_frac_active, ci_level=ci_level)
