"""`FeatureRanker`: `rank_features` as a scikit-learn feature selector (``SelectorMixin`` + ``BaseEstimator``).

It behaves like ``SelectKBest`` / ``SelectFdr``: the constructor stores its arguments unchanged; ``fit(X, y,
groups=None)`` ranks every column and sets ``scores_``, ``pvalues_``, ``qvalues_``, ``ranking_`` and ``result_``
(the `Ranking`); ``transform`` keeps the ``k`` best columns, or, with ``k=None``, those with ``q < alpha``. It is
usable as a `Pipeline` step; question groups reach ``fit`` as a fit parameter (``pipe.fit(X, y,
ranker__groups=g)``, ``cross_val_score(..., params={"ranker__groups": g})``) or through scikit-learn's metadata
routing (``set_fit_request(groups=True)``).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.feature_selection import SelectorMixin
from sklearn.utils import ClassifierTags
from sklearn.utils.validation import check_is_fitted, validate_data

from personas.errors import DataError, PersonasError
from personas.scoring.checks import is_torch
from personas.scoring.ranking import Ranking, rank_features

__all__ = ["FeatureRanker"]


class FeatureRanker(SelectorMixin, BaseEstimator):
    """Select features with `rank_features`, scikit-learn style.

    Args:
        key: ranking key (see `personas.scoring.KEYS`).
        alpha: false discovery rate; with ``k=None`` the selected columns are those with ``q_value < alpha``.
        k: keep the ``k`` best columns instead (an int, or ``"all"``); ``None`` selects by ``alpha``.
        min_frac_active: columns firing in fewer than this share of rows are not tested (q = 1, ranked last).
        ci_level: coverage of the AUROC intervals of ``result_``.
        feature_names: optional names of the columns (used by ``get_feature_names_out`` when ``X`` is not a
            DataFrame; a DataFrame's own column names win).

    Fitted attributes, one entry per column of ``X``: ``scores_`` (the key's score, higher = more separating),
    ``pvalues_``, ``qvalues_`` (Benjamini-Hochberg over the tested columns; 1.0 for untested ones),
    ``ranking_`` (1 = best; untested columns after all tested ones, by index); plus ``result_`` (the
    `Ranking`), ``classes_`` (the two label values; the second counts as misaligned) and ``n_features_in_``.
    """

    def __init__(
        self,
        key: str = "auroc",
        alpha: float = 0.05,
        k: int | str | None = None,
        min_frac_active: float = 0.0,
        ci_level: float = 0.95,
        feature_names: Sequence[Hashable] | None = None,
    ) -> None:
        self.key = key
        self.alpha = alpha
        self.k = k
        self.min_frac_active = min_frac_active
        self.ci_level = ci_level
        self.feature_names = feature_names

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.input_tags.sparse = True
        # binary targets only: scikit-learn's generic checks then give it two-class labels, as to a binary classifier
        tags.classifier_tags = ClassifierTags(multi_class=False)
        return tags

    def fit(self, X: Any, y: Any, groups: Any = None) -> FeatureRanker:
        """Rank every column of ``X`` for the binary labels ``y`` (stratified by ``groups`` when given)."""
        if is_torch(X):
            self.n_features_in_ = int(X.shape[1])
            y = np.asarray(y.detach().cpu().numpy() if is_torch(y) else y)
        else:
            X, y = validate_data(self, X, y, accept_sparse=("csr", "csc", "coo"), dtype=("float64", "float32"))
        self.classes_, codes = np.unique(np.asarray(y).ravel(), return_inverse=True)
        if self.classes_.size != 2:
            what = "one class only" if self.classes_.size == 1 else f"{self.classes_.size} distinct values"
            raise DataError(
                f"FeatureRanker needs binary labels (1 misaligned, 0 aligned); y has {what}: "
                f"{self.classes_[:5].tolist()}."
            )
        self._check_k()
        result = rank_features(
            X,
            codes.reshape(-1),
            groups,
            key=self.key,
            alpha=self.alpha,
            min_frac_active=self.min_frac_active,
            feature_names=self.feature_names,
            ci_level=self.ci_level,
        )
        self._set_from_result(result)
        return self

    def _check_k(self) -> None:
        k = self.k
        if k is None or k == "all":
            return
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise PersonasError(f"k={k!r}; expected a non-negative int, 'all', or None (select by alpha).")

    def _set_from_result(self, result: Ranking) -> None:
        f = int(result.meta["n_features"])
        feat = result["feature"].to_numpy()
        self.result_ = result
        self.scores_ = np.zeros(f)
        self.pvalues_ = np.ones(f)
        self.qvalues_ = np.ones(f)
        self.scores_[feat] = result["score"].to_numpy()
        self.pvalues_[feat] = result["p_value"].to_numpy()
        self.qvalues_[feat] = result["q_value"].to_numpy()
        ranking = np.empty(f, dtype=np.int64)
        rest = np.setdiff1d(np.arange(f), feat)
        ranking[feat] = np.arange(1, feat.size + 1)
        ranking[rest] = np.arange(feat.size + 1, f + 1)
        self.ranking_ = ranking

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self, "ranking_")
        if self.k is None:
            return self.qvalues_ < self.alpha
        k = self.ranking_.size if self.k == "all" else int(self.k)
        return self.ranking_ <= k

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the selected columns: ``input_features``, the DataFrame's columns, ``feature_names``, or x0..."""
        check_is_fitted(self, "ranking_")
        if input_features is None and self.feature_names is not None and not hasattr(self, "feature_names_in_"):
            return np.asarray(list(self.feature_names), dtype=object)[self.get_support()]
        return super().get_feature_names_out(input_features)
