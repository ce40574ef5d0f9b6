"""The heads of the offline judges: weighted ridge regression and the quantile calibration onto the reference
judge's 0-100, shared by the reader judge (`personas.judging.reader`) and the earlier one (`personas.judging.offline`).
"""

from __future__ import annotations

import numpy as np

from personas.errors import DataError

__all__ = ["quantile_calibration", "weighted_ridge"]


def quantile_calibration(pred: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None,
                         n_knots: int = 201) -> tuple[np.ndarray, np.ndarray]:
    """A monotone map from held-out predictions onto the reference scale: the predictions' (weighted) quantiles
    onto the reference scores' quantiles at the same levels, as interpolation knots (x strictly increasing).

    Quantile matching keeps the order of the predictions (no AUROC is lost) and gives them the reference judge's
    distribution, so that a threshold on the calibrated score flags about as many answers as the reference judge
    does on data like the calibration data.
    """
    pred, target = np.asarray(pred, dtype=float), np.asarray(target, dtype=float)
    weight = np.ones(len(pred)) if weight is None else np.asarray(weight, dtype=float)
    keep = np.isfinite(pred) & np.isfinite(target) & (weight > 0)
    if keep.sum() < 2:
        raise DataError(f"quantile_calibration got {int(keep.sum())} usable (prediction, score) pairs; expected at "
                        "least 2 with finite values and positive weight.")
    pred, target, weight = pred[keep], target[keep], weight[keep]
    levels = np.linspace(0.0, 1.0, n_knots)

    def quantiles(values: np.ndarray) -> np.ndarray:
        order = np.argsort(values, kind="stable")
        cum = np.cumsum(weight[order])
        cum = (cum - 0.5 * weight[order]) / cum[-1]
        return np.interp(levels, cum, values[order])

    knots_x, knots_y = quantiles(pred), np.clip(quantiles(target), 0.0, 100.0)
    keep = np.r_[True, np.diff(knots_x) > 0]  # interpolation needs increasing x
    return knots_x[keep], np.maximum.accumulate(knots_y[keep])


def weighted_ridge(Z: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Weighted ridge regression on standardized features (closed form in the smaller of n and p); the penalty is
    ``alpha`` per unit of mean sample weight."""
    w = w / w.sum()
    y_mean, z_mean = float(w @ y), w @ Z
    Zc, yc = (Z - z_mean) * np.sqrt(w)[:, None], (y - y_mean) * np.sqrt(w)
    lam = alpha / len(y)
    if Zc.shape[0] < Zc.shape[1]:
        coef = Zc.T @ np.linalg.solve(Zc @ Zc.T + lam * np.eye(len(yc)), yc)
    else:
        coef = np.linalg.solve(Zc.T @ Zc + lam * np.eye(Zc.shape[1]), Zc.T @ yc)
    return coef, y_mean - float(z_mean @ coef)
