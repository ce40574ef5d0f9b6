"""Calibration of every p-value path of personas.scoring under the null, over label permutations.

For each path (plain Mann-Whitney, grouped van Elteren, binned, and the paired tests of model diffing) the labels
are permuted 200 times (within questions for the grouped path; by swapping the two members of random pairs for
the paired tests), so every feature is null. Each permutation gets freshly drawn features, so that the 200 x 50
p-values are independent (with one fixed matrix, features whose ties make their p-values discrete shift the
share of every permutation alike, and the spread exceeds the binomial one). The share of p-values below alpha
must then lie in the 99.9% binomial interval around alpha; a test that is anti-conservative (or far too
conservative) fails.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from personas.scoring import BinnedRanker, diff_features, rank_features

N, F, PERMUTATIONS = 200, 50, 200
ALPHAS = (0.05, 0.2)


def _data(seed: int):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(5), N // 5)
    rate = np.array([0.2, 0.35, 0.5, 0.65, 0.8])[groups]  # labels depend on the question
    y = (rng.random(N) < rate).astype(int)
    return rng, y, groups


def _features(rng: np.random.Generator, groups: np.ndarray) -> np.ndarray:
    """Sparse-ish, non-negative, tied at zero, and shifted by question (a topic effect)."""
    x = rng.exponential(1.0, (N, F)) * (rng.random((N, F)) < 0.6)
    return x + 0.7 * groups[:, None] * (rng.random((N, F)) < 0.3)


def _assert_calibrated(p: np.ndarray, what: str) -> None:
    for alpha in ALPHAS:
        lo, hi = stats.binom.interval(0.999, p.size, alpha)
        hits = int((p < alpha).sum())
        assert lo <= hits <= hi, f"{what}: {hits} of {p.size} null p-values < {alpha}; expected {lo:.0f}..{hi:.0f}"


def _within(rng: np.random.Generator, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    out = y.copy()
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        out[idx] = rng.permutation(y[idx])
    return out


def test_plain_mann_whitney_is_calibrated():
    rng, y, g = _data(0)
    p = np.concatenate(
        [rank_features(_features(rng, g), rng.permutation(y))["p_value"].to_numpy() for _ in range(PERMUTATIONS)]
    )
    _assert_calibrated(p, "Mann-Whitney")


def test_grouped_van_elteren_is_calibrated_under_within_question_permutations():
    rng, y, g = _data(1)
    p = np.concatenate(
        [
            rank_features(_features(rng, g), _within(rng, y, g), groups=g)["p_value"].to_numpy()
            for _ in range(PERMUTATIONS)
        ]
    )
    _assert_calibrated(p, "van Elteren")


def _binned(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    ranker = BinnedRanker(bins=16)
    halves = (slice(0, N // 2), slice(N // 2, N))
    for part in halves:
        ranker.update_range(x[part], y[part], None if groups is None else groups[part])
    for part in halves:
        ranker.update(x[part], y[part], None if groups is None else groups[part])
    return ranker.result()["p_value"].to_numpy()


def test_binned_paths_are_calibrated():
    rng, y, g = _data(2)
    plain = np.concatenate([_binned(_features(rng, g), rng.permutation(y), None) for _ in range(PERMUTATIONS)])
    _assert_calibrated(plain, "binned Mann-Whitney")
    grouped = np.concatenate([_binned(_features(rng, g), _within(rng, y, g), g) for _ in range(PERMUTATIONS)])
    _assert_calibrated(grouped, "binned van Elteren")


@pytest.mark.parametrize("test", ["wilcoxon", "t"])
def test_paired_diff_tests_are_calibrated(test):
    rng = np.random.default_rng(3)
    p = []
    for _ in range(PERMUTATIONS):
        a = rng.exponential(1.0, (N, F)) * (rng.random((N, F)) < 0.7)
        b = rng.exponential(1.0, (N, F)) * (rng.random((N, F)) < 0.7)
        swap = rng.random(N) < 0.5  # under the null the two members of a pair are exchangeable
        base = np.where(swap[:, None], b, a)
        tuned = np.where(swap[:, None], a, b)
        p.append(diff_features(base, tuned, test=test)["p_value"].to_numpy())
    _assert_calibrated(np.concatenate(p), f"paired {test}")
