"""Tests for personas.scoring.binned: the histogram ranker equals the exact one where bins cannot merge values,
stays within its error bound elsewhere, and never allocates features x groups x bins counts up front."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from personas.errors import DataError, PersonasError
from personas.scoring import BinnedRanker, rank_features


def _fit(x, y, groups=None, bins=64, shards=3):
    ranker = BinnedRanker(bins)
    cuts = np.linspace(0, x.shape[0], shards + 1).astype(int)
    parts = [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    for part in parts:
        ranker.update_range(x[part], y[part], None if groups is None else groups[part])
    for part in parts:
        ranker.update(x[part], y[part], None if groups is None else groups[part])
    return ranker


def _integer_data(seed=0, n=300, f=12):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 6, n).astype(str)
    y = (rng.random(n) < 0.25 + 0.1 * (g.astype(int) % 3)).astype(int)
    x = rng.integers(-3, 7, (n, f)).astype(float) * (rng.random((n, f)) < 0.4)
    x[:, 0] += 2 * y * (rng.random(n) < 0.5)
    x[:, 1] = np.abs(x[:, 1])  # non-negative only
    x[:, 2] = -np.abs(x[:, 2])  # non-positive only
    x[:, 3] = 0.0  # dead
    return x, y, g


@pytest.mark.parametrize("grouped", [False, True])
def test_binned_equals_exact_when_every_bin_holds_one_value(grouped):
    x, y, g = _integer_data()
    g = g if grouped else None
    exact = rank_features(x, y, g).set_index("feature").sort_index()
    binned = _fit(sp.csr_matrix(x), y, g).result().set_index("feature").sort_index()
    cols = [c for c in exact.columns if c not in ("significant",)]
    pd.testing.assert_frame_equal(binned[cols], exact[cols], check_exact=False, rtol=1e-9, atol=1e-12)
    assert (binned["significant"] == exact["significant"]).all()
    assert binned.meta["grouped"] == grouped and binned.meta["binned"]["bins"] == 64


def test_binned_auroc_error_stays_within_its_bound_for_continuous_values():
    rng = np.random.default_rng(1)
    n, f = 400, 20
    y = (rng.random(n) < 0.4).astype(int)
    g = rng.integers(0, 4, n)
    x = rng.normal(size=(n, f)) * (rng.random((n, f)) < 0.5)
    x[:, 0] += y * (rng.random(n) < 0.5)
    for groups in (None, g):
        exact = rank_features(x, y, groups).set_index("feature").sort_index()
        binned = _fit(x, y, groups, bins=8).result().set_index("feature").sort_index()
        assert (np.abs(binned["auroc"] - exact["auroc"]) <= binned["auroc_max_err"] + 1e-12).all()
        assert binned["auroc_max_err"].max() > 0  # 8 bins do merge distinct values here
        np.testing.assert_allclose(binned["cohens_d"], exact["cohens_d"], rtol=1e-9)  # moments stay exact


def test_counts_are_sparse_not_features_x_groups_x_bins():
    rng = np.random.default_rng(2)
    n, f, n_groups, bins = 400, 20_000, 40, 64
    x = sp.random(n, f, density=0.002, format="csr", random_state=rng, dtype=np.float32)
    y = (rng.random(n) < 0.5).astype(int)
    g = rng.integers(0, n_groups, n)
    dense_bytes = f * n_groups * (bins + 1) * 2 * 8  # what a dense count array would take: 832 MB
    tracemalloc.start()
    ranking = _fit(x, y, g, bins=bins, shards=2).result()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(ranking) == f
    assert peak < dense_bytes / 4, f"peak {peak / 2**20:.0f} MiB"


def test_clear_errors():
    x, y, g = _integer_data()
    with pytest.raises(PersonasError, match="bins"):
        BinnedRanker(1)
    with pytest.raises(DataError, match="update_range"):
        BinnedRanker().update(x, y)
    ranker = BinnedRanker().update_range(x[:100], y[:100], g[:100])
    with pytest.raises(DataError, match="all with groups or all without"):
        ranker.update_range(x[100:], y[100:])
    with pytest.raises(DataError, match="features"):
        BinnedRanker().update_range(x, y).update_range(x[:, :3], y)
    with pytest.raises(DataError, match="one class only"):
        _fit(x, np.zeros_like(y)).result()
