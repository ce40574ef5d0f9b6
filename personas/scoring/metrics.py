"""From sums to the metric set: every per-feature column of a ranking, and how each is computed.

`metrics_from_stats` turns the mergeable moments and the rank statistics of `personas.scoring.kernels` into the
columns of a ranking (AUROC and its DeLong interval, Mann-Whitney / van Elteren / Welch p-values, mean
difference, Cohen's d, Hedges' g, firing rates, log odds); `METHOD_NOTES` says how each column is computed (it is
copied into every ranking's metadata). `benjamini_hochberg` gives the q-values (scipy's
``false_discovery_control``), `covariate_correlation` the correlation of every feature with one covariate such
as response length; `auroc` the AUROC of one score column (the helper every step uses for a single score).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy import special, stats

from personas.errors import DataError
from personas.scoring.checks import check_features, is_torch
from personas.scoring.kernels import delong_variance

__all__ = ["METHOD_NOTES", "auroc", "benjamini_hochberg", "covariate_correlation", "metrics_from_stats"]

METHOD_NOTES = {
    "auroc": "exact AUROC = U / (n_pos * n_neg) with ties counted as 1/2 (equals sklearn.metrics.roc_auc_score)",
    "auroc_ci": "DeLong (1988) variance of the AUROC with a normal interval, clipped to [0, 1]; "
    "a feature with zero variance (dead, constant, or perfectly separating) gets a zero-width interval",
    "p_value": "two-sided Mann-Whitney U test, normal approximation with tie correction and continuity "
    "correction (equals scipy.stats.mannwhitneyu(method='asymptotic')); exact p-values are never used",
    "p_value_grouped": "two-sided van Elteren stratified Wilcoxon test over the groups, weights 1/(n_g + 1), "
    "tie-corrected, no continuity correction; groups with one class only contribute nothing",
    "group_auroc": "AUROC over within-group (misaligned, aligned) pairs only = sum_g U_g / sum_g n_pos_g n_neg_g, "
    "a weighted average of per-group AUROCs; its interval combines per-group DeLong variances",
    "welch_p": "two-sided Welch t-test (unequal variances); never stratified",
    "cohens_d": "mean difference over the pooled standard deviation; hedges_g applies the small-sample factor",
    "log_odds": "log odds ratio of firing (value != 0), misaligned vs aligned, with 0.5 added to each cell; "
    "0 for features that never or always fire",
    "q_value": "Benjamini-Hochberg q-values of p_value over the tested features (after min_frac_active)",
    "moments": "means and variances from float64 sums and sums of squares (mergeable across shards), taken in "
    "units of a power of two per feature when values are extreme (never overflowing to inf)",
}
"""How each column of a ranking is computed (copied into ``Ranking.meta["methods"]``)."""


def auroc(scores: Any, labels: Any, *, one_class: float | str = "raise") -> float:
    """AUROC of one column of ``scores`` for 0/1 ``labels`` (truthy = positive): the chance that a positive row
    scores above a negative one, ties counted 1/2 (Mann-Whitney U / (n_pos * n_neg), equal to scikit-learn's
    ``roc_auc_score``); NaN when a score is NaN.

    ``one_class`` says what labels of one class only (or none) give: ``"raise"`` (a `DataError`), or the number
    to return instead (0.5 for "no separation", ``float("nan")`` for "not defined").
    """
    if isinstance(one_class, str) and one_class != "raise":
        raise DataError(f"one_class={one_class!r}; expected 'raise' or the number to return (0.5, float('nan')).")
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if s.size != y.size:
        raise DataError(f"auroc got {s.size} scores for {y.size} labels; expected one score per label.")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        if one_class == "raise":
            raise DataError(f"auroc needs both classes; got {n_pos} positive and {n_neg} negative labels.")
        return float(one_class)
    if np.isnan(s).any():
        return float("nan")
    order = np.argsort(s, kind="stable")
    ordered = s[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # first position of each run of equal scores
    ends = np.r_[starts[1:], s.size]
    run = np.repeat(np.arange(starts.size), ends - starts)
    ranks = np.empty(s.size)
    ranks[order] = ((starts + ends + 1) / 2.0)[run]  # 1-based ranks, ties given the mean rank of their run
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def benjamini_hochberg(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values (step-up FDR adjusted p-values) of a 1-D array of p-values.

    ``q_(i) = min_{j >= i} p_(j) * m / j`` over the sorted p-values, clipped to 1 (computed by
    ``scipy.stats.false_discovery_control``). A feature is a discovery at false discovery rate ``alpha`` when
    ``q < alpha``. Input order is kept.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise DataError(f"benjamini_hochberg expects a 1-D array of p-values; got shape {p.shape}.")
    if p.size == 0:
        return p.copy()
    if not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0:
        bad = p[~(np.isfinite(p) & (p >= 0) & (p <= 1))][:5]
        raise DataError(f"p-values must be finite and in [0, 1]; got for example {bad.tolist()}.")
    return np.minimum(stats.false_discovery_control(p, method="bh"), 1.0)


def metrics_from_stats(
    moments: dict[str, np.ndarray],
    rank: dict[str, np.ndarray],
    n1: int,
    n0: int,
    ci_level: float,
    grouped: bool,
) -> dict[str, np.ndarray]:
    """All per-feature columns from the mergeable moments and the rank statistics. Never NaN."""
    n1f, n0f = float(n1), float(n0)
    n = n1f + n0f
    z_ci = float(special.ndtri(0.5 + ci_level / 2.0))
    out: dict[str, np.ndarray] = {}

    pairs = n1f * n0f
    u = rank["u"]
    auc = u / pairs
    var = delong_variance(u, rank["sp2"], rank["sq2"], np.full_like(u, n1f), np.full_like(u, n0f))
    half = z_ci * np.sqrt(var)
    out["auroc"] = auc
    out["auroc_lo"] = np.clip(auc - half, 0.0, 1.0)
    out["auroc_hi"] = np.clip(auc + half, 0.0, 1.0)

    # Mann-Whitney U, as scipy.stats.mannwhitneyu(method="asymptotic", use_continuity=True), two-sided.
    u_big = np.maximum(u, pairs - u)
    s2 = pairs / 12.0 * ((n + 1.0) - rank["t"] / (n * (n - 1.0)))
    s = np.sqrt(np.maximum(s2, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        zmw = (u_big - pairs / 2.0 - 0.5) / s
    p_mw = np.where(s > 0, np.minimum(2.0 * special.ndtr(-zmw), 1.0), 1.0)
    out["mw_p"] = p_mw

    if grouped:
        gp = rank["g_pairs"]
        with np.errstate(divide="ignore", invalid="ignore"):
            gauc = np.where(gp > 0, rank["g_u"] / np.where(gp > 0, gp, 1.0), 0.5)
            gvar = np.where(gp > 0, rank["g_var"] / np.where(gp > 0, gp, 1.0) ** 2, 0.0)
            zve = rank["ve_num"] / np.sqrt(rank["ve_var"])
        ghalf = z_ci * np.sqrt(gvar)
        out["group_auroc"] = gauc
        out["group_auroc_lo"] = np.clip(gauc - ghalf, 0.0, 1.0)
        out["group_auroc_hi"] = np.clip(gauc + ghalf, 0.0, 1.0)
        out["p_value"] = np.where(rank["ve_var"] > 0, np.minimum(2.0 * special.ndtr(-np.abs(zve)), 1.0), 1.0)
    else:
        out["p_value"] = p_mw

    out.update(_moment_metrics(moments, n1f, n0f))
    k_pos = moments["nnz_pos"].astype(np.float64)
    k_neg = moments["nnz_neg"].astype(np.float64)
    out["frac_active_pos"] = k_pos / n1f
    out["frac_active_neg"] = k_neg / n0f
    out["frac_active"] = (k_pos + k_neg) / n
    log_odds = np.log((k_pos + 0.5) / (n1f - k_pos + 0.5)) - np.log((k_neg + 0.5) / (n0f - k_neg + 0.5))
    uninformative = (k_pos + k_neg == 0) | (k_pos + k_neg == n)  # never fires, or always fires
    out["log_odds"] = np.where(uninformative, 0.0, log_odds)
    return out


def _variance(sumsq: np.ndarray, mean: np.ndarray, n: float) -> np.ndarray:
    """Sample variance from a sum of squares; spread below the rounding error of that sum counts as none."""
    centred = sumsq - n * mean**2
    noise = 16.0 * np.finfo(np.float64).eps * sumsq
    return np.where(centred > noise, centred, 0.0) / max(n - 1.0, 1.0)


def _moment_metrics(moments: dict[str, np.ndarray], n1f: float, n0f: float) -> dict[str, np.ndarray]:
    """Means, Cohen's d, Hedges' g and Welch's p; computed in units of ``scale`` so no step overflows."""
    n = n1f + n0f
    scale = moments.get("scale", np.ones_like(moments["sum_pos"]))
    mean_pos = moments["sum_pos"] / n1f
    mean_neg = moments["sum_neg"] / n0f
    var_pos = _variance(moments["sumsq_pos"], mean_pos, n1f)
    var_neg = _variance(moments["sumsq_neg"], mean_neg, n0f)
    diff = mean_pos - mean_neg
    # a difference below the rounding error of the two means is none (a constant column stays d = 0, not inf)
    diff = np.where(np.abs(diff) > 64.0 * np.finfo(np.float64).eps * (np.abs(mean_pos) + np.abs(mean_neg)), diff, 0.0)
    out = {"mean_pos": mean_pos * scale, "mean_neg": mean_neg * scale, "mean_diff": diff * scale}
    pooled = np.sqrt(((n1f - 1.0) * var_pos + (n0f - 1.0) * var_neg) / max(n - 2.0, 1.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(pooled > 0, diff / pooled, np.where(diff == 0, 0.0, np.sign(diff) * np.inf))
    out["cohens_d"] = d
    out["hedges_g"] = d * (1.0 - 3.0 / (4.0 * n - 9.0)) if n > 2.25 else d

    a = var_pos / n1f
    b = var_neg / n0f
    se = np.sqrt(a + b)
    with np.errstate(divide="ignore", invalid="ignore"):
        tstat = diff / se
        df = (a + b) ** 2 / (a * a / max(n1f - 1.0, 1.0) + b * b / max(n0f - 1.0, 1.0))
        df = np.where(np.isfinite(df) & (df > 0), df, 1.0)
        p_w = 2.0 * special.stdtr(df, -np.abs(tstat))
    out["welch_p"] = np.where(se > 0, np.minimum(p_w, 1.0), np.where(diff == 0, 1.0, 0.0))
    return out


def covariate_correlation(features: Any, covariate: Any) -> np.ndarray:
    """Pearson correlation of every feature with one covariate per response (e.g. response length).

    A ranking reviewer's check: a feature that mostly tracks how long a response is can separate the classes
    whenever their lengths differ. Sparse inputs stay sparse; constant features get 0, never NaN.
    """
    x, n, f = check_features(features)
    z = np.asarray(covariate, dtype=np.float64).ravel()
    if z.shape[0] != n:
        raise DataError(f"covariate has {z.shape[0]} values for {n} responses; expected one per response.")
    zc = z - z.mean()
    z_norm = np.sqrt((zc**2).sum())
    if is_torch(x):
        x = x.detach().cpu().double().numpy()
    if sp.issparse(x):
        x = x.tocsc().astype(np.float64)
        sums = np.asarray(x.sum(axis=0)).ravel()
        squares = np.asarray(x.multiply(x).sum(axis=0)).ravel()
        cross = np.asarray(x.T @ zc).ravel()
    else:
        x = np.asarray(x, dtype=np.float64)
        sums, squares, cross = x.sum(axis=0), (x**2).sum(axis=0), x.T @ zc
    x_norm = np.sqrt(np.maximum(squares - sums**2 / n, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = cross / (x_norm * z_norm)
    return np.where((x_norm > 1e-12 * np.maximum(1.0, np.abs(sums) / n)) & (z_norm > 0), np.clip(r, -1, 1), 0.0)
