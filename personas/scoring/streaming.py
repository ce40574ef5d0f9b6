"""`StreamingRanker`: the exact ranking of `rank_features`, accumulated shard by shard and mergeable.

Moments (counts, sums, sums of squares, non-zero counts, per class) are plain sums and merge by addition (in a
common power-of-two unit per feature, `personas.scoring.kernels.merge_moments`); the rank statistics need the
non-zero values themselves, which the accumulator keeps (its memory grows with the number of non-zeros). The
cache's engines (`personas.cache.engines`) score shards into accumulators, ship their ``state_dict()`` between
processes and merge them; ``result()`` then equals `rank_features` on the concatenated data.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from personas.errors import DataError
from personas.scoring.checks import (
    as_float,
    check_features,
    check_finite,
    check_groups,
    check_labels,
    check_names,
    iter_blocks,
    to_numpy_1d,
)
from personas.scoring.kernels import (
    MOMENT_FIELDS,
    block_moments,
    empty_moments,
    group_bits,
    merge_moments,
    rank_pass,
)
from personas.scoring.metrics import metrics_from_stats
from personas.scoring.ranking import Ranking, build_ranking, check_rank_args

__all__ = ["StreamingRanker"]


class StreamingRanker:
    """Accumulate shards of responses, merge accumulators, and rank as if all data had been given at once.

    State (``state_dict()``, plain numpy arrays): per-feature float64 sums and sums of squares (in units of a
    per-feature ``scale``) and int64 non-zero counts per class, the labels (and group ids) of every response
    seen, and the non-zero entries (response index, feature index, value) needed for the exact AUROC /
    Mann-Whitney statistics; memory grows with the number of non-zeros. ``result()`` equals `rank_features` on
    the concatenated shards: exactly for counts and rank statistics, up to floating-point summation order for
    means and variances. Shards must be given either all with groups or all without.
    """

    def __init__(self, n_features: int | None = None) -> None:
        self.n_features = n_features
        self.n_responses = 0
        self._moments: dict[str, np.ndarray] | None = None
        self._labels: list[np.ndarray] = []
        self._groups: list[np.ndarray] | None = None
        self._rows: list[np.ndarray] = []
        self._cols: list[np.ndarray] = []
        self._vals: list[np.ndarray] = []

    # -- accumulation ------------------------------------------------------------------------------------------
    def update(self, X_shard: Any, y_shard: Any, groups_shard: Any = None) -> StreamingRanker:
        """Add one shard: its features ``[n, F]``, 0/1 labels and (if any shard has them) group ids."""
        x, n, f = check_features(X_shard)
        if self.n_features is None:
            self.n_features = f
        elif f != self.n_features:
            raise DataError(
                f"shard has shape {(n, f)} but this accumulator holds {self.n_features} features; every "
                f"shard must have the same columns."
            )
        y = check_labels(y_shard, (n, f), require_both=False)
        self._check_group_mode(groups_shard is not None)
        if groups_shard is not None:
            g = to_numpy_1d(groups_shard, "groups")
            check_groups(g, (n, f))
            self._groups = (self._groups or []) + [g]
        moments = self._moments if self._moments is not None else empty_moments(f)
        for j0, j1, rows, cols, vals in iter_blocks(x, n, f):
            vals = as_float(vals)
            check_finite(vals, rows, cols, j0)
            merge_moments(moments, block_moments(cols, vals, y[rows].astype(bool), j1 - j0), slice(j0, j1))
            self._rows.append(rows + self.n_responses)
            self._cols.append((cols + j0).astype(np.int32 if f < 2**31 else np.int64))
            self._vals.append(vals)
        self._moments = moments
        self._labels.append(y)
        self.n_responses += n
        return self

    def _check_group_mode(self, has_groups: bool) -> None:
        if self.n_responses == 0 and not self._labels:
            return
        if has_groups != (self._groups is not None):
            raise DataError(
                "shards must be given either all with groups or all without; this one "
                + (
                    "has groups but earlier ones did not."
                    if has_groups
                    else "has no groups but earlier ones did."
                )
            )

    def merge(self, other: StreamingRanker) -> StreamingRanker:
        """Append the responses of ``other`` (in place) and return self."""
        if other.n_responses == 0:
            return self
        if self.n_responses == 0:
            self.n_features = other.n_features
        elif other.n_features != self.n_features:
            raise DataError(
                f"cannot merge accumulators of {self.n_features} and {other.n_features} features."
            )
        self._check_group_mode(other._groups is not None)
        if self._moments is None:
            self._moments = {k: v.copy() for k, v in other._moments.items()}
        else:
            merge_moments(self._moments, other._moments)
        self._rows += [r + self.n_responses for r in other._rows]
        self._cols += list(other._cols)
        self._vals += list(other._vals)
        self._labels += list(other._labels)
        if other._groups is not None:
            self._groups = (self._groups or []) + list(other._groups)
        self.n_responses += other.n_responses
        return self

    # -- serialisation -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """The full state as plain numpy arrays (for ``np.savez`` or pickling across workers)."""
        self._compact()
        f = self.n_features or 0
        state = {
            "n_features": np.asarray(f, dtype=np.int64),
            "n_responses": np.asarray(self.n_responses, dtype=np.int64),
            "labels": self._labels[0] if self._labels else np.zeros(0, np.int8),
            "rows": self._rows[0] if self._rows else np.zeros(0, np.int64),
            "cols": self._cols[0] if self._cols else np.zeros(0, np.int32),
            "vals": self._vals[0] if self._vals else np.zeros(0, np.float32),
        }
        for k, v in (self._moments or empty_moments(f)).items():
            state[k] = v
        if self._groups is not None:
            state["groups"] = self._groups[0]
        return state

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> StreamingRanker:
        """Rebuild an accumulator from `state_dict` output (a state without ``scale`` has scale 1)."""
        required = {"n_features", "n_responses", "labels", "rows", "cols", "vals", *MOMENT_FIELDS} - {"scale"}
        missing = required - set(state)
        if missing:
            raise DataError(f"state is missing {sorted(missing)}; pass the dict returned by state_dict().")
        out = cls(int(state["n_features"]))
        out.n_responses = int(state["n_responses"])
        if out.n_responses:
            out._labels = [np.asarray(state["labels"])]
            out._rows = [np.asarray(state["rows"])]
            out._cols = [np.asarray(state["cols"])]
            out._vals = [np.asarray(state["vals"])]
            out._moments = {k: np.asarray(state[k]).copy() for k in MOMENT_FIELDS if k in state}
            out._moments.setdefault("scale", np.ones(out.n_features))
            if "groups" in state:
                out._groups = [np.asarray(state["groups"])]
        return out

    def _compact(self) -> None:
        for name in ("_labels", "_rows", "_cols", "_vals"):
            parts = getattr(self, name)
            if len(parts) > 1:
                setattr(self, name, [np.concatenate(parts)])
        if self._groups is not None and len(self._groups) > 1:
            self._groups = [np.concatenate(self._groups)]

    # -- result ------------------------------------------------------------------------------------------------
    def result(
        self,
        *,
        key: str = "auroc",
        alpha: float = 0.05,
        min_frac_active: float = 0.0,
        feature_names: Sequence[Hashable] | None = None,
        ci_level: float = 0.95,
    ) -> Ranking:
        """Rank the accumulated responses; same arguments and output as `rank_features`."""
        check_rank_args(key, alpha, min_frac_active, ci_level)
        if self.n_responses == 0:
            raise DataError("no shards were added; call update() with at least one shard first.")
        self._compact()
        f = int(self.n_features)
        n = self.n_responses
        check_names(feature_names, f)
        y = check_labels(self._labels[0], (n, f))
        gcodes, n_groups = None, None
        if self._groups is not None:
            gcodes, uniques = check_groups(pd.Series(self._groups[0]), (n, f), y)
            n_groups = len(uniques)
        x = sp.csc_matrix((self._vals[0], (self._rows[0], self._cols[0])), shape=(n, f))
        max_width = None if n_groups is None else (1 << (31 - group_bits(n_groups))) - 1
        _, rank = rank_pass(iter_blocks(x, n, f, max_width), y, f, gcodes, n_groups or 1, want_moments=False)
        n1 = int(y.sum())
        metrics = metrics_from_stats(self._moments, rank, n1, n - n1, ci_level, gcodes is not None)
        return build_ranking(
            metrics,
            n1,
            n - n1,
            key=key,
            alpha=alpha,
            min_frac_active=min_frac_active,
            feature_names=feature_names,
            ci_level=ci_level,
            n_groups=n_groups,
        )
