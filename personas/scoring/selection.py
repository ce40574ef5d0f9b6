"""Choose k features that separate misaligned from aligned answers on questions the selection never saw.

Pure functions on a feature matrix ``X`` [N, F] (dense or scipy sparse), 0/1 labels ``y`` (1 = misaligned) and
``groups`` [N] (the question each answer belongs to); no models, no files.

Why not the top k by pooled AUROC: a latent for a training question's *topic* separates the classes when
misaligned answers come more from some questions than others, and it is useless on a new question. Every method
here therefore scores a feature *within* each question (`within_group_auroc`: the AUROC among that question's
answers, averaged over questions) and checks that what it picks holds on questions left out:

- ``"auroc"``: the k features whose mean within-question AUROC is farthest from 0.5;
- ``"stability"``: in each leave-one-question-out fold of the training questions, the top ``n_candidates`` by
  within-question AUROC; keep the features chosen in most folds that also separate the left-out question the same way (by more
  than ``min_gap``): stability selection across questions;
- ``"l1"``: an L1-penalised logistic path over C on the screened candidates, limited to k features, with C chosen by
  leave-one-question-out cross-validation inside the training questions;
- ``"forward"``: greedy forward selection from the screened candidates, each step adding the feature that most
  raises the leave-one-question-out AUROC of a linear discriminant on the chosen set; stops at k or when nothing
  helps.

All methods drop redundant features: a candidate whose |correlation| with an already chosen feature exceeds
``max_corr`` is skipped. `select_features` returns a `Selection` (column indices best first, signs, scores);
`fit_logistic`/`grouped_cv_auroc` fit and judge the small logistic model on the chosen columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse
import scipy.stats

from personas.errors import DataError
from personas.scoring.metrics import auroc

__all__ = ["SELECTIONS", "Selection", "select_features", "within_group_auroc", "grouped_cv_auroc", "fit_logistic",
           "auroc"]

SELECTIONS = ("auroc", "stability", "l1", "forward")


@dataclass
class Selection:
    """The chosen columns of X, best first, with ``signs`` (+1: higher on misaligned answers) and the method's
    ``scores`` of the chosen columns; ``details`` holds method-specific diagnostics (e.g. the chosen C)."""

    features: np.ndarray
    signs: np.ndarray
    scores: np.ndarray
    method: str
    details: dict[str, Any] = field(default_factory=dict)


def _dense(X: Any, rows: Any = None, cols: Any = None) -> np.ndarray:
    if rows is not None:
        X = X[rows]
    if cols is not None:
        X = X[:, cols]
    return X.toarray().astype(np.float64) if scipy.sparse.issparse(X) else np.asarray(X, dtype=np.float64)


def _check(X: Any, y: Any, groups: Any) -> tuple[Any, np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(np.int8).ravel()
    groups = np.asarray(groups).ravel()
    if X.shape[0] != y.size or groups.size != y.size:
        raise DataError(f"X has {X.shape[0]} rows, y {y.size}, groups {groups.size}; expected equal.")
    if not set(np.unique(y)) <= {0, 1}:
        raise DataError(f"y must be 0/1 (1 = misaligned); got values {np.unique(y)[:5]}.")
    if scipy.sparse.issparse(X):
        X = scipy.sparse.csc_matrix(X)
    return X, y, groups


def _mixed(y: np.ndarray, groups: np.ndarray) -> list[Any]:
    return [g for g in np.unique(groups) if 0 < y[groups == g].sum() < (groups == g).sum()]


def _sparse_rank_sums(X: scipy.sparse.csc_matrix, pos: np.ndarray) -> np.ndarray:
    """Per column, the sum over ``pos`` rows of their ranks in that column (ties averaged), touching only the
    non-zeros: the implicit zeros form one tied block."""
    n, f = X.shape
    X = scipy.sparse.csc_matrix(X, copy=True)
    X.sum_duplicates()
    X.eliminate_zeros()  # stored zeros belong to the tied zero block
    col = np.repeat(np.arange(f), np.diff(X.indptr))
    vals = X.data.astype(np.float64)
    nz_col = np.diff(X.indptr)
    z = n - nz_col  # zeros per column
    order = np.lexsort((vals, col))
    col_s, val_s = col[order], vals[order]
    start = X.indptr[col_s]
    pos_in_col = np.arange(vals.size) - start  # 0-based position among the column's non-zeros
    # average position over runs of equal (column, value)
    new_run = np.r_[True, (col_s[1:] != col_s[:-1]) | (val_s[1:] != val_s[:-1])]
    run_id = np.cumsum(new_run) - 1
    run_first = pos_in_col[new_run]
    run_len = np.bincount(run_id)
    avg_pos = run_first[run_id] + (run_len[run_id] - 1) / 2.0
    # rank among all n values: negatives before the zero block, positives after it
    rank = avg_pos + 1 + np.where(val_s > 0, z[col_s], 0)
    is_pos = pos[X.indices[order]]
    sums = np.bincount(col_s[is_pos], weights=rank[is_pos], minlength=f)
    # the positive rows at zero: their rank is the middle of the zero block
    n_neg = np.bincount(col_s[val_s < 0], minlength=f)
    pos_nz = np.bincount(col_s[is_pos], minlength=f)
    zero_rank = n_neg + (z + 1) / 2.0
    return sums + (int(pos.sum()) - pos_nz) * zero_rank


def within_group_auroc(X: Any, y: Any, groups: Any, *, chunk: int = 2048) -> np.ndarray:
    """[G, F] AUROC of every column within each group that has both classes (rows in sorted group order).

    Ties count 1/2. A sparse X is ranked through its non-zeros only (the zeros are one tied block), so a wide
    dictionary costs what its non-zeros cost; a dense X is ranked ``chunk`` columns at a time.
    """

    X, y, groups = _check(X, y, groups)
    mixed = _mixed(y, groups)
    if not mixed:
        raise DataError("no group has both misaligned and aligned answers; within-group AUROC is undefined.")
    f = X.shape[1]
    out = np.empty((len(mixed), f))
    Xr = X.tocsr() if scipy.sparse.issparse(X) else X  # row slices of CSR are cheap
    for gi, g in enumerate(mixed):
        rows = np.flatnonzero(groups == g)
        yy = y[rows].astype(bool)
        n1, n0 = int(yy.sum()), int((~yy).sum())
        if scipy.sparse.issparse(X):
            out[gi] = (_sparse_rank_sums(Xr[rows], yy) - n1 * (n1 + 1) / 2) / (n1 * n0)
            continue
        for c0 in range(0, f, chunk):
            block = _dense(X, rows, slice(c0, min(f, c0 + chunk)))
            r = scipy.stats.rankdata(block, axis=0)
            out[gi, c0:c0 + block.shape[1]] = (r[yy].sum(axis=0) - n1 * (n1 + 1) / 2) / (n1 * n0)
    return out


def _corr_with(X: Any, j: int, cols: np.ndarray) -> np.ndarray:
    a = _dense(X, None, [j])[:, 0]
    B = _dense(X, None, cols)
    a = a - a.mean()
    B = B - B.mean(axis=0)
    den = np.sqrt((a * a).sum() * (B * B).sum(axis=0))
    return np.divide(a @ B, den, out=np.zeros(B.shape[1]), where=den > 1e-12)


def _greedy_unique(X: Any, order: np.ndarray, k: int, max_corr: float) -> list[int]:
    """The first k of ``order`` whose |correlation| with every earlier pick is at most ``max_corr``."""
    chosen: list[int] = []
    for j in order:
        if len(chosen) >= k:
            break
        if chosen and max_corr < 1.0 and np.max(np.abs(_corr_with(X, int(j), np.asarray(chosen)))) > max_corr:
            continue
        chosen.append(int(j))
    return chosen


def _standardise(Z: np.ndarray, ref: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ref = Z if ref is None else ref
    mean, sd = ref.mean(axis=0), ref.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return (Z - mean) / sd, mean, sd


def fit_logistic(Z: np.ndarray, y: np.ndarray, C: float = 1.0, penalty: str = "l2"):
    """A class-balanced logistic model on standardised columns; returns ``predict(Z_new) -> log-odds``."""
    from sklearn.linear_model import LogisticRegression

    Zs, mean, sd = _standardise(Z)
    solver = "liblinear" if penalty == "l1" else "lbfgs"
    clf = LogisticRegression(C=C, l1_ratio=1.0 if penalty == "l1" else 0.0, solver=solver, class_weight="balanced",
                             max_iter=2000)
    clf.fit(Zs, y)
    coef, b = clf.coef_.ravel().copy(), float(clf.intercept_[0])

    def predict(Znew: np.ndarray) -> np.ndarray:
        return ((Znew - mean) / sd) @ coef + b

    predict.coef_ = coef  # type: ignore[attr-defined]
    return predict


def grouped_cv_auroc(Z: np.ndarray, y: Any, groups: Any, C: float = 1.0, penalty: str = "l2") -> float:
    """AUROC of the leave-one-group-out (out-of-fold) log-odds of `fit_logistic` on the columns of Z, pooled over
    the folds (0.5 when a training fold lacks a class)."""
    y = np.asarray(y).astype(np.int8)
    groups = np.asarray(groups)
    Z = np.asarray(Z, dtype=np.float64)
    if Z.ndim == 1:
        Z = Z[:, None]
    pred = np.zeros(y.size)
    for g in np.unique(groups):
        test = groups == g
        if len(np.unique(y[~test])) < 2:
            return 0.5
        pred[test] = fit_logistic(Z[~test], y[~test], C, penalty)(Z[test])
    return auroc(pred, y, one_class=0.5)


def _screen(X: Any, y: np.ndarray, groups: np.ndarray, n: int, max_corr: float) -> tuple[np.ndarray, np.ndarray]:
    wg = within_group_auroc(X, y, groups).mean(axis=0)
    order = np.argsort(-np.abs(wg - 0.5), kind="stable")
    return np.asarray(_greedy_unique(X, order, n, max_corr), dtype=np.int64), wg


def select_features(
    X: Any, y: Any, groups: Any, k: int = 10, method: str = "stability", *, max_corr: float = 0.9,
    n_candidates: int = 40, Cs: Any = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0), exclude: Any = None,
    min_gap: float = 0.03,
) -> Selection:
    """Choose at most ``k`` columns of X that separate y within questions and hold on left-out questions.

    Args:
        X: [N, F] features (dense or sparse), e.g. pooled SAE codes of one or several sites side by side.
        y: 0/1 labels, 1 = misaligned. groups: the question of each row (at least 3 questions with both classes).
        method: one of `SELECTIONS` (see the module docstring).
        max_corr: skip a candidate whose |Pearson correlation| with a chosen feature is above this (1 keeps all).
        n_candidates: the screened pool (top by within-question AUROC, redundancy dropped) for "l1" and "forward",
            and the per-fold top list of "stability".
        Cs: inverse regularisation strengths tried by "l1" (and the final C of "forward" is 1).
        exclude: boolean mask [F] or indices of columns never to choose (e.g. flagged confounds).
        min_gap: "stability" counts a fold only when the left-out question's AUROC is beyond 0.5 by this much.
    """

    if method not in SELECTIONS:
        raise DataError(f"selection method={method!r}; expected one of {SELECTIONS}.")
    if k < 1:
        raise DataError(f"k={k} must be at least 1.")
    X, y, groups = _check(X, y, groups)
    mixed = _mixed(y, groups)
    if len(mixed) < 3:
        raise DataError(
            f"selection across questions needs at least 3 questions with both classes; got {len(mixed)}. "
            "Give groups (the question of each answer) or use more questions."
        )
    keep = np.isin(groups, mixed)
    X, y, groups = X[np.flatnonzero(keep)], y[keep], groups[keep]
    if exclude is not None:
        ex = np.zeros(X.shape[1], bool)
        ex[np.asarray(exclude)] = True
        allowed = np.flatnonzero(~ex)
    else:
        allowed = np.arange(X.shape[1])
    Xa = X[:, allowed]
    if method == "auroc":
        wg = within_group_auroc(Xa, y, groups).mean(axis=0)
        order = np.argsort(-np.abs(wg - 0.5), kind="stable")
        chosen = np.asarray(_greedy_unique(Xa, order, k, max_corr), dtype=np.int64)
        sel = Selection(chosen, np.sign(wg[chosen] - 0.5), wg[chosen], method)
    elif method == "stability":
        sel = _stability(Xa, y, groups, k, max_corr, min_gap, n_candidates)
    else:
        cand, wg = _screen(Xa, y, groups, max(n_candidates, k), max_corr)
        Z = _dense(Xa, None, cand)
        if method == "l1":
            sel = _l1(Z, y, groups, k, Cs)
        else:
            sel = _forward(Z, y, groups, k)
        sel.features = cand[sel.features]
        sel.signs = np.sign(wg[sel.features] - 0.5)
    sel.signs = np.where(sel.signs == 0, 1.0, sel.signs)
    sel.features = allowed[sel.features]
    return sel


def _stability(X: Any, y: np.ndarray, groups: np.ndarray, k: int, max_corr: float, min_gap: float,
               n_top: int) -> Selection:
    wg = within_group_auroc(X, y, groups)  # [G, F]
    G = wg.shape[0]
    # near-copies split a small top list between them, so each fold keeps a pool well above k
    top = min(X.shape[1] - 1, max(n_top, 2 * k))
    freq = np.zeros(X.shape[1])
    for leave in range(G):
        mean = np.delete(wg, leave, axis=0).mean(axis=0)
        idx = np.argpartition(-np.abs(mean - 0.5), top)[:top]
        # a chosen feature counts only when it also separates the left-out question, in the same direction, by
        # more than min_gap (a feature of some questions' topic sits near 0.5 on the others and rarely passes)
        agree = np.sign(mean[idx] - 0.5) * (wg[leave, idx] - 0.5) > min_gap
        freq[idx[agree]] += 1.0
    freq /= G
    overall = wg.mean(axis=0)
    order = np.lexsort((-np.abs(overall - 0.5), -freq))
    chosen = np.asarray(_greedy_unique(X, order, k, max_corr), dtype=np.int64)
    return Selection(chosen, np.sign(overall[chosen] - 0.5), freq[chosen], "stability",
                     {"frequency": freq[chosen], "within_auroc": overall[chosen]})


def _l1(Z: np.ndarray, y: np.ndarray, groups: np.ndarray, k: int, Cs: Any) -> Selection:
    def top_k(C: float, rows: np.ndarray) -> np.ndarray:
        coef = fit_logistic(Z[rows], y[rows], C, "l1").coef_
        nz = np.flatnonzero(coef)
        return nz[np.argsort(-np.abs(coef[nz]), kind="stable")][:k]

    scores = []
    for C in Cs:
        pred = np.zeros(y.size)
        for g in np.unique(groups):
            test, train = groups == g, np.flatnonzero(groups != g)
            cols = top_k(C, train)
            if cols.size == 0:
                pred[test] = 0.0
                continue
            pred[test] = fit_logistic(Z[train][:, cols], y[train])(Z[test][:, cols])
        scores.append(auroc(pred, y, one_class=0.5))
    best = float(list(Cs)[int(np.argmax(scores))])
    cols = top_k(best, np.arange(y.size))
    if cols.size == 0:
        cols = np.array([0])
    return Selection(cols, np.ones(cols.size), np.full(cols.size, max(scores)), "l1",
                     {"C": best, "cv_auroc": dict(zip(map(float, Cs), scores, strict=True))})


def _lda_cv_auroc(Z: np.ndarray, y: np.ndarray, folds: list[np.ndarray], ridge: float = 1e-3) -> float:
    """Pooled leave-one-group-out AUROC of a ridge-regularised linear discriminant (closed form, fast)."""
    pred = np.zeros(y.size)
    for test in folds:
        tr = ~test
        Zt = Z[tr]
        mu1, mu0 = Zt[y[tr] == 1].mean(axis=0), Zt[y[tr] == 0].mean(axis=0)
        sd = Zt.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        cov = np.atleast_2d(np.cov((Zt - np.where(y[tr, None] == 1, mu1, mu0)) / sd, rowvar=False))
        w = np.linalg.solve(cov + ridge * np.eye(cov.shape[0]), (mu1 - mu0) / sd)
        pred[test] = (Z[test] / sd) @ w
    return auroc(pred, y, one_class=0.5)


def _forward(Z: np.ndarray, y: np.ndarray, groups: np.ndarray, k: int) -> Selection:
    # candidates are scored by a linear discriminant (closed form) instead of a logistic fit: the ranking of
    # candidates is what matters, and it costs microseconds instead of milliseconds per fold
    folds = [groups == g for g in np.unique(groups)]
    chosen: list[int] = []
    path: list[float] = []
    best_score = 0.5
    while len(chosen) < k:
        trial = [(_lda_cv_auroc(Z[:, chosen + [j]], y, folds), j) for j in range(Z.shape[1]) if j not in chosen]
        score, j = max(trial)
        if chosen and score <= best_score + 1e-4:
            break
        chosen.append(j)
        path.append(score)
        best_score = score
    return Selection(np.asarray(chosen, dtype=np.int64), np.ones(len(chosen)), np.asarray(path), "forward",
                     {"cv_auroc_path": path})
