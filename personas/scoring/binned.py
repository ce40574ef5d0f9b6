"""`BinnedRanker`: a feature ranking from per-feature histograms, in memory that does not grow with the responses.

Two passes over the same shards. Pass 1 (`BinnedRanker.update_range`) finds each feature's range of non-zero
values and its moments (exact, `personas.scoring.kernels.block_moments`). Pass 2 (`BinnedRanker.update`) counts
values per (feature, group, bin, class) in ``bins`` bins over that range, with exact zeros in a slot of their own
(SAE codes are mostly exactly zero). Counts are kept sparse (only the cells that occur) and are densified one
block of features at a time in ``result()``, never as a ``features x groups x bins`` array up front.

Ties within a bin are treated as ties, so the AUROC is off by at most ``auroc_max_err`` = half the share of
(misaligned, aligned) pairs that fall in the same non-zero bin. p-values, DeLong intervals and the within-question
statistics come from the same counts through the functions the exact ranker uses (`hist_rank_stats` stands in for
the sort; `group_statistics` and `metrics_from_stats` are shared).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from personas.errors import DataError, PersonasError
from personas.scoring.checks import (
    as_float,
    check_features,
    check_finite,
    check_labels,
    iter_blocks,
    to_numpy_1d,
)
from personas.scoring.kernels import (
    block_moments,
    empty_moments,
    group_statistics,
    hist_rank_stats,
    merge_moments,
    run_rank_stats,
)
from personas.scoring.metrics import metrics_from_stats
from personas.scoring.ranking import Ranking, build_ranking, check_rank_args

__all__ = ["BLOCK_CELLS", "BinnedRanker"]

BLOCK_CELLS = 1 << 22
"""Most dense histogram cells (features x groups x slots x 2, float64) built at once in ``result()``."""

_COMPACT_EVERY = 1 << 24  # pending sparse cell keys merged into the sorted table once this many accumulate


class BinnedRanker:
    """Feature ranking in memory that does not grow with the number of responses (two passes over shards).

    Use: ``update_range(X, y, groups)`` for every shard, then ``update(X, y, groups)`` for every shard again,
    then ``result(key=..., ...)``. ``groups`` is given for all shards or for none. Memory: the moments and ranges
    (a few arrays of ``n_features``) and one count per occupied (feature, group, bin, class) cell.
    """

    def __init__(self, bins: int = 64) -> None:
        if bins < 2:
            raise PersonasError(f"bins={bins} must be at least 2.")
        self.bins = bins
        self.n_features: int | None = None
        self._moments: dict[str, np.ndarray] | None = None
        self._lo = self._hi = None
        self._group_index: dict[Any, int] = {}
        self._grouped: bool | None = None
        self._per_gc = np.zeros((0, 2), dtype=np.int64)  # responses per (group, class)
        self._cells: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending = 0

    # -- pass 1 ------------------------------------------------------------------------------------------------
    def update_range(self, X: Any, y: Any, groups: Any = None) -> BinnedRanker:
        """Pass 1: the value range and moments of every feature, the class sizes per group."""
        x, n, f = check_features(X)
        if self.n_features is None:
            self.n_features = f
            self._moments = empty_moments(f)
            self._lo, self._hi = np.full(f, np.inf), np.full(f, -np.inf)
        elif f != self.n_features:
            raise DataError(f"shard has {f} features but earlier shards had {self.n_features}.")
        lab = check_labels(y, (n, f), require_both=False)
        codes = self._codes(groups, n, add=True)
        per_gc = np.zeros((len(self._group_index) or 1, 2), dtype=np.int64)
        np.add.at(per_gc, (codes, lab.astype(np.int64)), 1)
        old = self._per_gc
        per_gc[: old.shape[0]] += old
        self._per_gc = per_gc
        for j0, j1, rows, cols, vals in iter_blocks(x, n, f):
            vals = as_float(vals)
            check_finite(vals, rows, cols, j0)
            merge_moments(self._moments, block_moments(cols, vals, lab[rows].astype(bool), j1 - j0), slice(j0, j1))
            np.minimum.at(self._lo, cols + j0, vals)
            np.maximum.at(self._hi, cols + j0, vals)
        return self

    def _codes(self, groups: Any, n: int, add: bool) -> np.ndarray:
        if self._grouped is None:
            self._grouped = groups is not None
        elif self._grouped != (groups is not None):
            raise DataError("shards must be given either all with groups or all without.")
        if groups is None:
            return np.zeros(n, dtype=np.int64)
        g = to_numpy_1d(groups, "groups")
        if g.shape[0] != n or pd.isna(g).any():
            raise DataError(f"groups must hold one non-missing id per response; got shape {g.shape} for {n} rows.")
        uniques, inverse = np.unique(g, return_inverse=True)
        if add:
            for value in uniques.tolist():
                self._group_index.setdefault(value, len(self._group_index))
        missing = [v for v in uniques.tolist() if v not in self._group_index]
        if missing:
            raise DataError(f"groups {missing[:5]} were not seen in update_range(); give both passes the same shards.")
        return np.array([self._group_index[v] for v in uniques.tolist()], dtype=np.int64)[inverse.ravel()]

    # -- pass 2 ------------------------------------------------------------------------------------------------
    def _zero_slot(self) -> np.ndarray:
        lo, hi, b = self._lo, self._hi, self.bins
        span = np.where(hi > lo, hi - lo, 1.0)
        return np.where(lo >= 0, 0, np.where(hi <= 0, b, np.clip(np.round(b * -lo / span), 1, b - 1))).astype(np.int64)

    def update(self, X: Any, y: Any, groups: Any = None) -> BinnedRanker:
        """Pass 2: count the non-zero values of one shard into (feature, group, bin, class) cells."""
        if self._moments is None:
            raise DataError("call update_range() on every shard before update().")
        x, n, f = check_features(X)
        if f != self.n_features:
            raise DataError(f"shard has {f} features but the first pass saw {self.n_features}.")
        lab = check_labels(y, (n, f), require_both=False).astype(np.int64)
        codes = self._codes(groups, n, add=False)
        self._lo = np.where(np.isfinite(self._lo), self._lo, 0.0)
        self._hi = np.where(np.isfinite(self._hi), self._hi, 0.0)
        zero_slot = self._zero_slot()
        b, n_groups, slots = self.bins, max(1, len(self._group_index)), self.bins + 1
        for j0, _j1, rows, cols, vals in iter_blocks(x, n, f):
            cols = cols + j0
            vals = as_float(vals).astype(np.float64)
            lo, hi, z = self._lo[cols], self._hi[cols], zero_slot[cols]
            with np.errstate(divide="ignore", invalid="ignore"):
                neg_bin = np.floor((vals - lo) / -lo * z)
                pos_bin = z + 1 + np.floor(vals / hi * (b - z))
            slot = np.where(vals < 0, np.clip(neg_bin, 0, np.maximum(z - 1, 0)), np.clip(pos_bin, z + 1, b))
            slot = np.nan_to_num(slot).astype(np.int64)
            flat = ((cols * n_groups + codes[rows]) * slots + slot) * 2 + lab[rows]
            keys, hits = np.unique(flat, return_counts=True)
            self._cells.append((keys, hits.astype(np.int64)))
            self._pending += keys.size
        if self._pending > _COMPACT_EVERY:
            self._compact()
        return self

    def _compact(self) -> None:
        if len(self._cells) > 1:
            keys = np.concatenate([k for k, _ in self._cells])
            hits = np.concatenate([h for _, h in self._cells])
            uniq, inverse = np.unique(keys, return_inverse=True)
            self._cells = [(uniq, np.bincount(inverse.ravel(), weights=hits, minlength=uniq.size).astype(np.int64))]
        self._pending = 0

    def _group_parts(self, k: np.ndarray, h: np.ndarray, w: int, zs: np.ndarray, per_gc: np.ndarray) -> dict:
        """Within-question statistics of ``w`` features from their sparse cells (local keys ``k``, counts ``h``).

        Each occupied (feature, group, bin) is a tie run; one zero run per (feature, group) holds the responses
        not counted elsewhere. Runs are ordered by bin and handed to the kernels shared with the exact ranker.
        """
        n_groups, slots = per_gc.shape[0], self.bins + 1
        run_key, cls = np.divmod(k, 2)  # run_key = (feature * groups + group) * slots + slot
        run_key, run = np.unique(run_key, return_inverse=True)  # keys are sorted: runs are contiguous
        pos = np.bincount(run, h * cls, minlength=run_key.size)
        neg = np.bincount(run, h * (1 - cls), minlength=run_key.size)
        seg = run_key // slots
        n_seg = w * n_groups
        z_pos = np.tile(per_gc[:, 1], w) - np.bincount(seg, pos, minlength=n_seg)
        z_neg = np.tile(per_gc[:, 0], w) - np.bincount(seg, neg, minlength=n_seg)
        all_seg = np.concatenate([seg, np.arange(n_seg)])
        order = np.argsort(np.concatenate([run_key, np.arange(n_seg) * slots + np.repeat(zs, n_groups)]), kind="stable")
        stats = run_rank_stats(
            all_seg[order], np.concatenate([pos, z_pos])[order], np.concatenate([neg, z_neg])[order], n_seg
        )
        shape = (w, n_groups)
        return group_statistics(*(a.reshape(shape) for a in stats), per_gc[:, 1], per_gc[:, 0])

    # -- result ------------------------------------------------------------------------------------------------
    def result(
        self, *, key: str = "auroc", alpha: float = 0.05, min_frac_active: float = 0.0, ci_level: float = 0.95
    ) -> Ranking:
        """The ranking from the counts; like `rank_features`, plus an ``auroc_max_err`` column."""
        check_rank_args(key, alpha, min_frac_active, ci_level)
        if self._moments is None:
            raise DataError("no shards were counted; call update_range() and then update() on every shard.")
        self._compact()
        keys, hits = self._cells[0] if self._cells else (np.zeros(0, np.int64), np.zeros(0, np.int64))
        f, b = int(self.n_features), self.bins
        n_groups, slots = max(1, len(self._group_index)), b + 1
        per_gc = self._per_gc.astype(np.float64)
        n0, n1 = (int(v) for v in self._per_gc.sum(axis=0))
        if n0 == 0 or n1 == 0:
            raise DataError(f"labels contain one class only ({n1} misaligned, {n0} aligned); ranking needs both.")
        if self._grouped and not ((per_gc > 0).all(axis=1)).any():
            raise DataError(
                f"no group has both misaligned and aligned responses ({n_groups} groups); a stratified test is "
                "impossible. Rank without groups."
            )
        zero_slot = self._zero_slot()
        cell = n_groups * slots * 2
        step = max(1, BLOCK_CELLS // (2 * slots + 4 * n_groups))
        n_class = per_gc.sum(axis=0)
        rank: dict[str, np.ndarray] = {}
        max_err = np.zeros(f)
        bounds = np.searchsorted(keys, np.arange(0, f + step, step, dtype=np.int64) * cell)
        for i, j0 in enumerate(range(0, f, step)):
            j1 = min(f, j0 + step)
            w, zs = j1 - j0, zero_slot[j0:j1]
            k, h = keys[bounds[i] : bounds[i + 1]], hits[bounds[i] : bounds[i + 1]].astype(np.float64)
            col, rest = np.divmod(k - j0 * cell, cell)
            pooled = np.bincount(col * (2 * slots) + rest % (2 * slots), h, minlength=w * 2 * slots)
            pooled = pooled.reshape(w, slots, 2)
            # exact zeros: every response of a class not counted in a non-zero slot
            pooled[np.arange(w), zs, :] += n_class[None] - pooled.sum(axis=1)
            parts = dict(zip(("u", "t", "sp2", "sq2"), hist_rank_stats(pooled), strict=True))
            pooled[np.arange(w), zs, :] = 0.0
            max_err[j0:j1] = 0.5 * (pooled[..., 0] * pooled[..., 1]).sum(axis=1) / (n1 * n0)
            if self._grouped:
                parts.update(self._group_parts(k - j0 * cell, h, w, zs, per_gc))
            for name, value in parts.items():
                rank.setdefault(name, np.zeros(f))[j0:j1] = value
        metrics = metrics_from_stats(self._moments, rank, n1, n0, ci_level, bool(self._grouped))
        ranking = build_ranking(metrics, n1, n0, key=key, alpha=alpha, min_frac_active=min_frac_active,
                                feature_names=None, ci_level=ci_level,
                                n_groups=n_groups if self._grouped else None)
        ranking["auroc_max_err"] = max_err[ranking["feature"].to_numpy()]
        ranking.meta["binned"] = {"bins": b, "max_auroc_err": float(max_err.max()) if f else 0.0}
        ranking.meta["methods"]["auroc"] = (f"AUROC from {b}-bin histograms per feature (exact zeros apart); "
                                            "values within a bin count as ties; error <= auroc_max_err")
        return ranking
