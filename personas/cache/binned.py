"""Ranking from a cache in memory that does not grow with the number of responses: histogram AUROC.

`BinnedRanker` makes two passes over the shards (value ranges, then per-feature histograms per class and
group) and reports the AUROC with an error bound (``auroc_max_err``) from the within-bin ties.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from personas.cache.shards import Shard
from personas.errors import PersonasError
from personas.scoring.ranking import (
    Ranking,
    build_ranking,
    check_rank_args,
    delong_variance,
    metrics_from_stats,
)


class BinnedRanker:
    """Feature ranking in memory that does not grow with the number of responses (two passes over shards).

    Pass 1 finds each feature's range of non-zero values and its moments (exact). Pass 2 counts values per
    (feature, group, bin, class) in ``bins`` bins over that range, with exact zeros in a slot of their own (SAE
    codes are mostly exactly zero). Ties within a bin are treated as ties, so the AUROC is off by at most
    ``auroc_max_err`` = half the share of (misaligned, aligned) pairs that fall in the same non-zero bin; p-values
    and DeLong intervals are computed from the same counts with the formulas of `personas.scoring`. Memory:
    ``n_features x n_groups x (bins + 1) x 2`` int64 counts.
    """

    def __init__(self, bins: int = 64) -> None:
        if bins < 2:
            raise PersonasError(f"bins={bins} must be at least 2.")
        self.bins = bins

    def fit_cache(self, cache: Any, *, hook: str, use: str, groups: np.ndarray | None, key: str,
                  alpha: float, min_frac_active: float, ci_level: float, verify: bool = True) -> Ranking:
        import pandas as pd

        check_rank_args(key, alpha, min_frac_active, ci_level)
        want = ("features",) if use == "sae" else ("pooled",)
        y_all = cache.labels
        if groups is not None:
            gcodes, uniques = pd.factorize(groups)
            n_groups = len(uniques)
        else:
            gcodes, n_groups = np.zeros(len(y_all), dtype=np.int64), 1

        def coo(shard: Shard) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
            x = shard.features if use == "sae" else shard.pooled[hook]
            if use == "sae":
                rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
                cols, vals = x.indices.astype(np.int64), x.data.astype(np.float64)
            else:
                rows, cols = np.nonzero(x)
                vals = x[rows, cols].astype(np.float64)
            keep = vals != 0
            return rows[keep] + shard.start, cols[keep].astype(np.int64), vals[keep], int(x.shape[1])

        f = None
        for shard in cache.iter_shards(want=want, hook=hook, verify=verify):
            rows, cols, vals, width = coo(shard)
            if f is None:
                f = width
                lo = np.full(f, np.inf)
                hi = np.full(f, -np.inf)
                moments = {k: np.zeros(f) for k in ("sum_pos", "sum_neg", "sumsq_pos", "sumsq_neg")}
                moments.update(nnz_pos=np.zeros(f, np.int64), nnz_neg=np.zeros(f, np.int64))
            if not np.isfinite(vals).all():
                raise PersonasError(f"shard {shard.index} holds non-finite values; the cache is unusable for ranking.")
            np.minimum.at(lo, cols, vals)
            np.maximum.at(hi, cols, vals)
            lab = y_all[rows].astype(bool)
            for name, sel in (("pos", lab), ("neg", ~lab)):
                moments[f"sum_{name}"] += np.bincount(cols[sel], vals[sel], minlength=f)
                moments[f"sumsq_{name}"] += np.bincount(cols[sel], vals[sel] ** 2, minlength=f)
                moments[f"nnz_{name}"] += np.bincount(cols[sel], minlength=f)
        assert f is not None
        lo = np.where(np.isfinite(lo), lo, 0.0)
        hi = np.where(np.isfinite(hi), hi, 0.0)
        b = self.bins
        zero_slot = np.where(lo >= 0, 0, np.where(hi <= 0, b, np.clip(np.round(b * -lo / np.where(hi > lo, hi - lo, 1)),
                                                                      1, b - 1))).astype(np.int64)
        slots = b + 1
        counts = np.zeros(f * n_groups * slots * 2, dtype=np.int64)
        for shard in cache.iter_shards(want=want, hook=hook, verify=verify):
            rows, cols, vals, _ = coo(shard)
            z = zero_slot[cols]
            with np.errstate(divide="ignore", invalid="ignore"):
                neg_bin = np.floor((vals - lo[cols]) / -lo[cols] * z)
                pos_bin = z + 1 + np.floor(vals / hi[cols] * (b - z))
            slot = np.where(vals < 0, np.clip(neg_bin, 0, np.maximum(z - 1, 0)), np.clip(pos_bin, z + 1, b))
            slot = np.nan_to_num(slot).astype(np.int64)
            flat = ((cols * n_groups + gcodes[rows]) * slots + slot) * 2 + y_all[rows].astype(np.int64)
            keys, hits = np.unique(flat, return_counts=True)  # no temporary of the size of counts
            counts[keys] += hits
        counts = counts.reshape(f, n_groups, slots, 2)
        # exact zeros: every response of (group, class) not counted in a non-zero slot
        per_gc = np.zeros((n_groups, 2), dtype=np.int64)
        np.add.at(per_gc, (gcodes, y_all.astype(np.int64)), 1)
        zeros = per_gc[None] - counts.sum(axis=2)
        counts[np.arange(f), :, zero_slot, :] += zeros

        n1 = int(y_all.sum())
        n0 = len(y_all) - n1
        rank: dict[str, np.ndarray] = {}
        max_err = np.zeros(f)
        step = max(1, (1 << 20) // (n_groups * slots))  # features per block of the final computation
        for j0 in range(0, f, step):
            j1 = min(f, j0 + step)
            block = counts[j0:j1].astype(np.float64)
            pooled = block.sum(axis=1)
            parts = _hist_rank_stats(pooled)
            pooled[np.arange(j1 - j0), zero_slot[j0:j1], :] = 0.0
            max_err[j0:j1] = 0.5 * (pooled[..., 0] * pooled[..., 1]).sum(axis=1) / (n1 * n0)
            if groups is not None:
                parts.update(_hist_group_stats(block, per_gc.astype(np.float64)))
            for name, value in parts.items():
                rank.setdefault(name, np.zeros(f))[j0:j1] = value
        metrics = metrics_from_stats(moments, rank, n1, n0, ci_level, groups is not None)
        ranking = build_ranking(metrics, n1, n0, key=key, alpha=alpha, min_frac_active=min_frac_active,
                                 feature_names=None, ci_level=ci_level,
                                 n_groups=n_groups if groups is not None else None)
        ranking["auroc_max_err"] = max_err[ranking["feature"].to_numpy()]
        ranking.meta["binned"] = {"bins": b, "max_auroc_err": float(max_err.max()) if f else 0.0}
        ranking.meta["methods"]["auroc"] = (f"AUROC from {b}-bin histograms per feature (exact zeros apart); "
                                            "values within a bin count as ties; error <= auroc_max_err")
        return ranking


def _hist_rank_stats(h: np.ndarray) -> dict[str, np.ndarray]:
    """U, tie term and DeLong placement sums from class counts per ordered slot, ``h[..., slot, class]``."""
    neg, pos = h[..., 0], h[..., 1]
    pz = np.cumsum(neg, axis=-1) - neg + 0.5 * neg
    qz = pos.sum(axis=-1, keepdims=True) - np.cumsum(pos, axis=-1) + 0.5 * pos
    c = pos + neg
    return {"u": (pos * pz).sum(-1), "sp2": (pos * pz * pz).sum(-1), "sq2": (neg * qz * qz).sum(-1),
            "t": (c**3 - c).sum(-1)}


def _hist_group_stats(counts: np.ndarray, per_gc: np.ndarray) -> dict[str, np.ndarray]:
    """The stratified statistics of `personas.scoring` (group AUROC, van Elteren) from per-group histograms."""

    s = _hist_rank_stats(counts)  # [f, g]
    n0g, n1g = per_gc[:, 0], per_gc[:, 1]
    var = delong_variance(s["u"], s["sp2"], s["sq2"], n1g[None, :], n0g[None, :])
    pairs = n1g * n0g
    ng = n1g + n0g
    valid = pairs > 0
    w = np.where(valid, 1.0 / (ng + 1.0), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        tie_frac = np.where(valid, s["t"] / np.where(valid, ng * (ng - 1.0), 1.0), 0.0)
    f = counts.shape[0]
    return {
        "g_u": s["u"].sum(axis=1),
        "g_pairs": np.full(f, pairs.sum()),
        "g_var": (var * pairs**2).sum(axis=1),
        "ve_num": ((s["u"] - pairs / 2.0) * w).sum(axis=1),
        "ve_var": (pairs / 12.0 * ((ng + 1.0) - tie_frac) * w * w).sum(axis=1),
    }
