"""Paired tests of every latent between two encodings of the same conversations: the statistics of model diffing.

`diff_features(base, finetuned)` compares two [n, m] feature matrices whose rows are the same conversations
(teacher-forced through a base model and its fine-tune, encoded by one SAE), one latent per column:

* ``mean_base``, ``mean_finetuned``, ``mean_diff`` (finetuned minus base), ``sd_diff``,
  ``effect_size`` = mean_diff / sd_diff (the paired standardised mean difference, d_z),
* ``frac_increased`` / ``frac_decreased``: share of conversations where the latent went up / down,
* ``p_value``: two-sided Wilcoxon signed-rank test (zero differences dropped, normal approximation with tie
  correction), or the paired t-test with ``test="t"``; ``q_value``: Benjamini-Hochberg over the latents tested
  (latents that never change get p = 1).

Rows are sorted by ``mean_diff``, largest increase first (ties: smaller p-value, then lower index); ``key`` can
sort by ``effect_size`` or by ``p_value`` among increases instead. Pure numpy/scipy: no models, files or caches.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import special, stats

from personas.config import DIFF_KEYS
from personas.errors import DataError, PersonasError
from personas.scoring.checks import check_features, is_torch
from personas.scoring.metrics import benjamini_hochberg

__all__ = ["diff_features"]


def _host(x: Any) -> np.ndarray:
    return x.detach().cpu().double().numpy() if is_torch(x) else np.asarray(x)


def _wilcoxon_columns(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Wilcoxon signed-rank test of every column of the paired differences ``d`` [n, m]; zeros dropped,
    normal approximation with tie correction. Columns with no non-zero difference get statistic 0, p = 1."""
    n_cols = d.shape[1]
    stat = np.zeros(n_cols)
    p = np.ones(n_cols)
    tested = np.flatnonzero((d != 0).any(axis=0))
    if tested.size:
        res = stats.wilcoxon(d[:, tested], axis=0, zero_method="wilcox", method="approx", correction=False)
        stat[tested] = np.asarray(res.statistic, dtype=np.float64)
        p[tested] = np.nan_to_num(np.asarray(res.pvalue, dtype=np.float64), nan=1.0)
    return stat, p


def _t_columns(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paired t-test of every column of ``d``; a constant non-zero difference gets p = 0, no difference p = 1."""
    n = d.shape[0]
    mean = d.mean(axis=0)
    sd = d.std(axis=0, ddof=1) if n > 1 else np.zeros(d.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / (sd / np.sqrt(n))
    p = np.where(sd > 0, 2.0 * special.stdtr(max(n - 1, 1), -np.abs(np.nan_to_num(t))), np.where(mean == 0, 1.0, 0.0))
    with np.errstate(invalid="ignore"):
        t = np.where(sd > 0, t, np.where(mean == 0, 0.0, np.sign(mean) * np.inf))
    return t, np.clip(p, 0.0, 1.0)


def diff_features(
    base: Any,
    finetuned: Any,
    *,
    test: str = "wilcoxon",
    key: str = "mean_diff",
    alpha: float = 0.05,
    block: int = 4096,
) -> Any:
    """Paired comparison of every column of two [n, m] feature matrices (rows = the same conversations).

    Returns a DataFrame, one row per column, sorted by ``key`` (see the module docstring for the columns).
    Inputs may be numpy arrays, DataFrames, scipy sparse matrices or torch tensors (checked by
    `personas.scoring.checks.check_features`); columns are processed in blocks of ``block``.
    """
    base, n, m = check_features(base)
    finetuned, n_ft, m_ft = check_features(finetuned)
    if (n, m) != (n_ft, m_ft):
        raise DataError(f"base features {(n, m)} and fine-tuned features {(n_ft, m_ft)} must be of one shape: the "
                        "same conversations encoded by the same SAE.")
    if test not in ("wilcoxon", "t"):
        raise PersonasError(f"test={test!r}; expected 'wilcoxon' or 't'.")
    if key not in DIFF_KEYS:
        raise PersonasError(f"key={key!r}; expected one of {DIFF_KEYS}.")
    if n < 2:
        raise DataError(f"paired statistics need at least 2 conversations; got {n}.")
    base_c = base.tocsc() if sp.issparse(base) else _host(base)
    ft_c = finetuned.tocsc() if sp.issparse(finetuned) else _host(finetuned)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in (
        "mean_base", "mean_finetuned", "mean_diff", "sd_diff", "frac_increased", "frac_decreased",
        "frac_active_base", "frac_active_finetuned", "statistic", "p_value")}
    for j0 in range(0, m, block):
        j1 = min(j0 + block, m)
        b = base_c[:, j0:j1]
        f = ft_c[:, j0:j1]
        b = b.toarray() if sp.issparse(b) else b
        f = f.toarray() if sp.issparse(f) else f
        b = b.astype(np.float64)
        f = f.astype(np.float64)
        d = f - b
        cols["mean_base"].append(b.mean(0))
        cols["mean_finetuned"].append(f.mean(0))
        cols["mean_diff"].append(d.mean(0))
        cols["sd_diff"].append(d.std(0, ddof=1))
        cols["frac_increased"].append((d > 0).mean(0))
        cols["frac_decreased"].append((d < 0).mean(0))
        cols["frac_active_base"].append((b != 0).mean(0))
        cols["frac_active_finetuned"].append((f != 0).mean(0))
        stat, p = _wilcoxon_columns(d) if test == "wilcoxon" else _t_columns(d)
        cols["statistic"].append(stat)
        cols["p_value"].append(p)
    out = {k: np.concatenate(v) for k, v in cols.items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        effect = np.where(out["sd_diff"] > 0, out["mean_diff"] / out["sd_diff"],
                          np.where(out["mean_diff"] == 0, 0.0, np.sign(out["mean_diff"]) * np.inf))
    frame = pd.DataFrame({"feature": np.arange(m), **{k: out[k] for k in (
        "mean_base", "mean_finetuned", "mean_diff", "sd_diff")}, "effect_size": effect,
        **{k: out[k] for k in ("frac_increased", "frac_decreased", "frac_active_base", "frac_active_finetuned",
                               "statistic", "p_value")}})
    frame["q_value"] = benjamini_hochberg(frame["p_value"].to_numpy())
    frame["significant"] = frame["q_value"] < alpha
    if key == "p_value":  # most significant increases first, then decreases
        increase = frame["mean_diff"].to_numpy() > 0
        strength = -np.log10(np.maximum(frame["p_value"].to_numpy(), 1e-300))
        primary = np.where(increase, strength, frame["mean_diff"].to_numpy())
    else:
        primary = frame[key].to_numpy()
    order = np.lexsort((frame["feature"].to_numpy(), frame["p_value"].to_numpy(), -primary))
    frame = frame.iloc[order].reset_index(drop=True)
    frame.attrs.update({"test": test, "key": key, "alpha": alpha, "n_pairs": n})
    return frame
