"""A detector's numbers: AUROC with its DeLong interval, and the decision threshold calibrated on training scores."""


from __future__ import annotations

from typing import Any

import numpy as np

from personas.config import THRESHOLDS
from personas.errors import DataError, PersonasError
from personas.scoring import feature_metrics


def auroc_with_ci(scores: Any, labels: Any, ci_level: float = 0.95) -> tuple[float, float, float]:
    """(AUROC, lower, upper) of ``scores`` for 0/1 ``labels`` (1 = misaligned), with a DeLong interval.

    The AUROC is exact with ties counted 1/2; the interval is normal, clipped to [0, 1] (see
    `personas.scoring.METHOD_NOTES`).
    """

    s = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    if not np.all(np.isfinite(s)):
        raise DataError(f"auroc_with_ci got {int((~np.isfinite(s)).sum())} non-finite scores; expected finite scores.")
    metrics, _, _ = feature_metrics(s, labels, None, ci_level)
    return float(metrics["auroc"][0]), float(metrics["auroc_lo"][0]), float(metrics["auroc_hi"][0])


def calibrate_threshold(scores: Any, labels: Any, how: str = "youden") -> float:
    """The score threshold (predict misaligned when ``score >= threshold``) that maximises Youden's J
    (TPR - FPR, equivalently balanced accuracy) or plain accuracy on these scores; midpoints between
    neighbouring distinct scores are used so that the threshold generalises."""
    if how not in THRESHOLDS:
        raise PersonasError(f"threshold={how!r}; expected one of {THRESHOLDS}.")
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise DataError("calibrating a threshold needs both misaligned and aligned training rows; got one class only.")
    values = np.unique(s)
    candidates = np.concatenate([[values[0] - 1.0], (values[1:] + values[:-1]) / 2.0, [values[-1] + 1.0]])
    order = np.argsort(s)
    s_sorted, y_sorted = s[order], y[order]
    # rows predicted positive at threshold c: those with s >= c
    below = np.searchsorted(s_sorted, candidates, side="left")
    pos_below = np.concatenate([[0], np.cumsum(y_sorted)])[below]
    neg_below = below - pos_below
    tpr = (n_pos - pos_below) / n_pos
    tnr = neg_below / n_neg
    objective = tpr + tnr if how == "youden" else (n_pos - pos_below) + neg_below
    best = np.flatnonzero(objective == objective.max())
    return float(candidates[best[len(best) // 2]])  # the middle of a plateau of equally good thresholds
