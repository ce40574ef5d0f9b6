"""Tests for personas.scoring.selector: FeatureRanker as a scikit-learn feature selector."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import check_estimator

from personas.scoring import FeatureRanker, rank_features


def _planted(seed: int = 0, n: int = 240, f: int = 40):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(8), n // 8)
    y = (rng.random(n) < 0.4).astype(int)
    x = rng.exponential(1.0, (n, f)) * (rng.random((n, f)) < 0.3)
    for j in (3, 11, 29):
        x[:, j] += y * rng.exponential(2.0, n)
    return x, y, g


def test_fit_sets_fitted_attributes_and_keeps_arguments():
    x, y, _ = _planted()
    est = FeatureRanker(key="cohens_d", alpha=0.1, min_frac_active=0.01)
    assert est.get_params() == {"key": "cohens_d", "alpha": 0.1, "k": None, "min_frac_active": 0.01,
                                "ci_level": 0.95, "feature_names": None}
    assert est.fit(x, y) is est
    ref = rank_features(x, y, key="cohens_d", alpha=0.1, min_frac_active=0.01).set_index("feature")
    np.testing.assert_allclose(est.scores_[ref.index], ref["score"])
    np.testing.assert_allclose(est.pvalues_[ref.index], ref["p_value"])
    np.testing.assert_allclose(est.qvalues_[ref.index], ref["q_value"])
    assert sorted(est.ranking_) == list(range(1, x.shape[1] + 1)) and est.n_features_in_ == x.shape[1]
    assert est.get_support(indices=True).tolist() == sorted(est.result_.significant()["feature"])


def test_selection_by_k_and_by_alpha_and_feature_names():
    x, y, _ = _planted()
    by_alpha = FeatureRanker().fit(x, y)
    assert set(by_alpha.get_support(indices=True)) == {3, 11, 29}
    np.testing.assert_array_equal(by_alpha.transform(x), x[:, [3, 11, 29]])
    by_k = FeatureRanker(k=2).fit(sp.csr_matrix(x), y)
    assert set(by_k.get_support(indices=True)) <= {3, 11, 29} and by_k.get_support().sum() == 2
    assert by_k.transform(sp.csr_matrix(x)).shape == (x.shape[0], 2)
    assert FeatureRanker(k="all").fit(x, y).get_support().all()
    names = [f"latent_{j}" for j in range(x.shape[1])]
    assert list(FeatureRanker(feature_names=names).fit(x, y).get_feature_names_out()) == [
        "latent_3", "latent_11", "latent_29"]
    frame = pd.DataFrame(x, columns=names)
    assert list(FeatureRanker(k=3).fit(frame, y).get_feature_names_out()) == ["latent_3", "latent_11", "latent_29"]
    labels = np.where(y == 1, "misaligned", "aligned")  # any two label values; the second sorted is positive
    assert set(FeatureRanker().fit(x, labels).get_support(indices=True)) == {3, 11, 29}
    with pytest.raises(ValueError, match="k="):
        FeatureRanker(k=-1).fit(x, y)
    with pytest.raises(ValueError, match="binary"):
        FeatureRanker().fit(x, np.arange(len(y)) % 3)


def test_pipeline_group_kfold_cross_val_and_grid_search():
    x, y, g = _planted(seed=1)
    pipe = Pipeline([("ranker", FeatureRanker(k=5)), ("clf", LogisticRegression())])
    pipe.fit(x, y, ranker__groups=g)
    assert pipe.named_steps["ranker"].result_.meta["grouped"]
    scores = cross_val_score(pipe, x, y, groups=g, cv=GroupKFold(n_splits=4), scoring="roc_auc",
                             params={"ranker__groups": g})
    assert scores.shape == (4,) and scores.mean() > 0.7
    search = GridSearchCV(pipe, {"ranker__k": [1, 3, 10]}, cv=GroupKFold(n_splits=4), scoring="roc_auc")
    search.fit(x, y, groups=g, ranker__groups=g)
    assert search.best_params_["ranker__k"] in (3, 10)
    assert clone(pipe).get_params()["ranker__k"] == 5


def test_scikit_learn_estimator_checks():
    # every generic check applies: the tags declare binary targets (as for a binary classifier), so the checks
    # give two-class labels; only the array-API check skips itself unless SCIPY_ARRAY_API is set
    results = check_estimator(FeatureRanker(), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert failed == []
    skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
    assert skipped <= {"check_array_api_input"}
    assert len(results) - len(skipped) >= 40
