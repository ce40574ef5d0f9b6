"""Exact ranking from a cache in bounded memory: non-zero values spilled to disk by feature block, ranked per block.

`SpillRanker` gives the exact statistics of `personas.scoring.StreamingRanker` (equal to `rank_features` on the
whole matrix) while holding at most ``budget`` non-zero values in memory, whatever the number of responses.
Three passes over the shards: (1) count each feature's non-zero values; cut the features into consecutive blocks
of at most ``budget`` non-zeros (a feature with more gets a block of its own); (2) append each shard's non-zeros
to one file per block in a temporary folder (``row int64, feature int32, value float32``: 16 bytes a value);
(3) read one block at a time and rank it with `StreamingRanker`. Every per-feature statistic depends on that
feature's values alone, so the blocks' columns are gathered and `build_ranking` adds the q-values, the order and
the significance over all features at once, as the in-memory ranker does.

Memory: ``budget`` values (about 100 bytes each while a block is ranked) plus the labels, groups and per-feature
columns; disk: 16 bytes per non-zero value of the cache, removed when done.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from personas.cache.shards import Shard
from personas.errors import PersonasError
from personas.scoring import Ranking, StreamingRanker, build_ranking, check_rank_args

_RECORD = np.dtype([("row", "<i8"), ("col", "<i4"), ("val", "<f4")])
_METRICS = ("auroc", "auroc_lo", "auroc_hi", "group_auroc", "group_auroc_lo", "group_auroc_hi", "mean_pos",
            "mean_neg", "mean_diff", "cohens_d", "hedges_g", "frac_active_pos", "frac_active_neg", "frac_active",
            "log_odds", "p_value", "mw_p", "welch_p")


class SpillRanker:
    """Exact feature ranking from a cache holding at most ``budget`` non-zero values in memory (see the module).

    Args:
        budget: non-zero values held in memory while one block of features is ranked (at least 1).
        folder: where the temporary spill folder is made (default: the system's temporary folder).
    """

    def __init__(self, budget: int = 1 << 21, folder: str | Path | None = None) -> None:
        if budget < 1:
            raise PersonasError(f"budget={budget} must be at least 1 non-zero value.")
        self.budget = budget
        self.folder = folder

    def fit_cache(self, cache: Any, *, hook: str, use: str, groups: np.ndarray | None, key: str, alpha: float,
                  min_frac_active: float, ci_level: float, verify: bool = True) -> Ranking:
        check_rank_args(key, alpha, min_frac_active, ci_level)
        want = ("features",) if use == "sae" else ("pooled",)
        y = cache.labels

        def coo(shard: Shard) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
            x = shard.features if use == "sae" else shard.pooled[hook]
            if use == "sae":
                rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
                cols, vals = x.indices, x.data
            else:
                rows, cols = np.nonzero(x)
                vals = x[rows, cols]
            keep = vals != 0
            return rows[keep] + shard.start, cols[keep], vals[keep], int(x.shape[1])

        nnz = None
        for shard in cache.iter_shards(want=want, hook=hook, verify=verify):
            _, cols, _, width = coo(shard)
            nnz = np.bincount(cols, minlength=width) + (0 if nnz is None else nnz)
        assert nnz is not None
        starts = _blocks(nnz, self.budget)
        block_of = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
        metrics: dict[str, np.ndarray] = {}
        with tempfile.TemporaryDirectory(prefix="personas-spill-", dir=self.folder) as tmp:
            paths = [Path(tmp) / f"block-{b:05d}.bin" for b in range(len(starts) - 1)]
            for path in paths:
                path.touch()
            for shard in cache.iter_shards(want=want, hook=hook, verify=verify):
                rows, cols, vals, _ = coo(shard)
                blocks = block_of[cols]
                order = np.argsort(blocks, kind="stable")
                records = np.empty(order.size, dtype=_RECORD)
                records["row"], records["col"], records["val"] = rows[order], cols[order], vals[order]
                cuts = np.searchsorted(blocks[order], np.arange(len(paths) + 1))
                for b in np.flatnonzero(np.diff(cuts)):
                    with open(paths[b], "ab") as fh:
                        fh.write(records[cuts[b]:cuts[b + 1]].tobytes())
            for b, path in enumerate(paths):
                j0, j1 = int(starts[b]), int(starts[b + 1])
                records = np.fromfile(path, dtype=_RECORD)
                x = scipy.sparse.csr_matrix((records["val"], (records["row"], records["col"] - j0)),
                                            shape=(len(y), j1 - j0))
                del records
                part = StreamingRanker(j1 - j0).update(x, y, groups).result(key=key, alpha=0.5, ci_level=ci_level)
                columns = j0 + part["feature"].to_numpy()
                for name in _METRICS:
                    if name in part:
                        metrics.setdefault(name, np.zeros(len(nnz)))[columns] = part[name].to_numpy()
                path.unlink()
        if "mw_p" not in metrics:  # ungrouped: the Mann-Whitney p-value is the p-value
            metrics["mw_p"] = metrics["p_value"]
        n1 = int(y.sum())
        n_groups = part.meta.get("n_groups") if groups is not None else None
        ranking = build_ranking(metrics, n1, len(y) - n1, key=key, alpha=alpha, min_frac_active=min_frac_active,
                                feature_names=None, ci_level=ci_level, n_groups=n_groups)
        ranking.meta["spill"] = {"budget": self.budget, "blocks": len(paths),
                                 "max_block_values": int(max(nnz[a:b].sum() for a, b in zip(starts, starts[1:], strict=False)))}
        return ranking


def _blocks(nnz: np.ndarray, budget: int) -> np.ndarray:
    """Starts of consecutive feature blocks of at most ``budget`` non-zeros each (a bigger feature stands alone);
    the last entry is the number of features."""
    starts = [0]
    held = 0
    for j, count in enumerate(nnz.tolist()):
        if held and held + count > budget:
            starts.append(j)
            held = 0
        held += count
    starts.append(len(nnz))
    return np.asarray(starts, dtype=np.int64)
