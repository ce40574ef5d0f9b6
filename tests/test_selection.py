"""Feature selection across questions, on planted data: consistent features win over topic features."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
from sklearn.metrics import roc_auc_score

from personas.errors import DataError
from personas.scoring.selection import SELECTIONS, grouped_cv_auroc, select_features, within_group_auroc


def _planted(seed: int, n_q: int = 10, n_topic: int = 5, per_class: int = 80, noise: int = 30):
    """Column 0: separates every question a little (d=0.7). Column 1: separates perfectly, but only on the first
    ``n_topic`` questions (a topic latent); its mean within-question AUROC (0.75) beats column 0's (0.69).
    Column 2: a copy of column 0 plus tiny noise (redundant). The rest: noise."""
    rng = np.random.default_rng(seed)
    y = np.tile(np.r_[np.ones(per_class), np.zeros(per_class)], n_q).astype(np.int8)
    groups = np.repeat([f"q{i}" for i in range(n_q)], 2 * per_class)
    n = y.size
    X = rng.normal(size=(n, 3 + noise))
    X[:, 0] += 0.7 * y
    topic = np.isin(groups, [f"q{i}" for i in range(n_topic)])
    X[topic, 1] += 10.0 * y[topic]
    X[:, 2] = X[:, 0] + 0.01 * rng.normal(size=n)
    return X, y, groups


def test_within_group_auroc_matches_sklearn():
    X, y, groups = _planted(0, n_q=3, per_class=20, noise=2)
    got = within_group_auroc(scipy.sparse.csr_matrix(X), y, groups, chunk=2)
    for gi, g in enumerate(sorted(set(groups))):
        rows = groups == g
        expect = [roc_auc_score(y[rows], X[rows, j]) for j in range(X.shape[1])]
        np.testing.assert_allclose(got[gi], expect, atol=1e-12)


def test_within_group_auroc_sparse_path_handles_ties_and_negative_values():
    rng = np.random.default_rng(7)
    n, f = 120, 9
    X = rng.integers(-2, 3, size=(n, f)).astype(float) * (rng.random((n, f)) < 0.5)  # many ties, zeros, negatives
    X[:, 0] = 0.0  # a column that never fires
    y = (rng.random(n) < 0.4).astype(np.int8)
    groups = np.repeat(["a", "b", "c"], n // 3)
    got = within_group_auroc(scipy.sparse.csr_matrix(X), y, groups)
    np.testing.assert_allclose(got, within_group_auroc(X, y, groups), atol=1e-12)
    for gi, g in enumerate(["a", "b", "c"]):
        rows = groups == g
        np.testing.assert_allclose(got[gi], [roc_auc_score(y[rows], X[rows, j]) for j in range(f)], atol=1e-12)


def test_stability_prefers_the_consistent_feature_over_a_topic_feature():
    X, y, groups = _planted(1)
    # the univariate ranking is fooled by the topic feature ...
    assert select_features(X, y, groups, k=1, method="auroc").features[0] == 1
    # ... stability selection across questions is not
    sel = select_features(X, y, groups, k=1, method="stability")
    assert sel.features[0] in (0, 2)
    assert sel.signs[0] == 1.0


@pytest.mark.parametrize("method", SELECTIONS)
def test_every_method_finds_planted_features_and_drops_the_redundant_copy(method):
    X, y, groups = _planted(2, n_topic=0)
    X[:, 3] -= 0.8 * y  # a second consistent feature, lower on misaligned answers
    sel = select_features(X, y, groups, k=2, method=method, n_candidates=8)
    assert set(sel.features) in ({0, 3}, {2, 3})
    assert sel.features.size == 2
    if method in ("auroc", "stability"):
        assert dict(zip(sel.features, sel.signs, strict=True))[3] == -1.0


def test_exclude_keeps_flagged_columns_out_and_indices_refer_to_x():
    X, y, groups = _planted(3, n_topic=0)
    sel = select_features(X, y, groups, k=1, method="auroc", exclude=[0, 2])
    assert sel.features[0] not in (0, 2)
    assert 0 <= sel.features[0] < X.shape[1]


def test_grouped_cv_auroc_is_high_for_signal_and_near_half_for_noise():
    X, y, groups = _planted(4, n_topic=0)
    assert grouped_cv_auroc(X[:, [0]], y, groups) > 0.65
    assert abs(grouped_cv_auroc(X[:, [5]], y, groups) - 0.5) < 0.1


def test_select_features_rejects_too_few_questions_and_bad_method():
    X, y, groups = _planted(5, n_q=2)
    with pytest.raises(DataError, match="at least 3 questions"):
        select_features(X, y, groups, k=1)
    with pytest.raises(DataError, match="method"):
        select_features(X, y, np.repeat(["a", "b", "c", "d"], X.shape[0] // 4), method="lasso")
