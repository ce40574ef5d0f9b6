"""Score every SAE feature for how well it separates misaligned (label 1) from aligned (label 0) responses.

This module owns the *score* step of the pipeline: given a feature matrix (n_responses, n_features) and labels,
it computes, for every feature at once,

- the AUROC (exact, with ties: most SAE activations are exactly zero) and a DeLong confidence interval,
- the mean difference (misaligned minus aligned), Cohen's d and Hedges' g,
- the firing rate in each class and the log odds ratio of firing,
- the Mann-Whitney U p-value (tie-corrected normal approximation) and the Welch t-test p-value,
- Benjamini-Hochberg q-values over all tested features,

and, when ``groups`` (the question each response answers) is given, a stratified test (van Elteren) and a
within-question AUROC, so that a feature that only marks a question whose answers happen to be mostly
misaligned is not reported as significant.

Entry points
------------
- :func:`rank_features` -> :class:`Ranking` (a ``pandas.DataFrame`` subclass, one row per feature, best first).
- :data:`SCORE_FUNCTIONS`: pure ``(X, y) -> (scores, pvalues)`` functions, scikit-learn filter style.
- :class:`FeatureRanker`: an estimator that stores its arguments and sets ``scores_``, ``pvalues_``,
  ``qvalues_``, ``ranking_`` and ``result_`` on ``fit``.
- :class:`StreamingRanker`: a mergeable accumulator of shards whose ``result()`` equals
  :func:`rank_features` on the concatenated data.
- :func:`benjamini_hochberg`.

How it is computed
------------------
Inputs may be dense numpy arrays, scipy sparse matrices or torch tensors (CPU or CUDA; CUDA tensors are
copied to the host one column block at a time, and all arithmetic runs in numpy). Sparse inputs stay sparse:
only the non-zero entries are ever sorted. For each feature the zeros form one tie block whose rank is known in
closed form, so the rank statistics need the non-zero values only. All features are handled together: the
non-zero entries are packed into one integer key ``(feature, value, label)`` and sorted once; tie runs,
rank sums, DeLong placement values and tie corrections are then segment sums (``np.bincount``).

Moments (counts, sums, sums of squares, non-zero counts, per class) are plain sums and therefore mergeable
across shards; the rank statistics need the non-zero values themselves, which :class:`StreamingRanker` keeps
(its memory grows with the number of non-zeros).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import special

from personas.errors import DataError, PersonasError

logger = logging.getLogger(__name__)

__all__ = [
    "KEYS",
    "SCORE_FUNCTIONS",
    "FeatureRanker",
    "Ranking",
    "StreamingRanker",
    "benjamini_hochberg",
    "build_ranking",
    "check_rank_args",
    "covariate_correlation",
    "delong_variance",
    "feature_metrics",
    "has_mixed_group",
    "metrics_from_stats",
    "rank_features",
]

# Largest number of non-zero entries sorted in one block (keys are 8 bytes each: 256 MiB).
_MAX_BLOCK_NNZ = 1 << 25
# Largest number of dense elements converted to COO triples in one block.
_MAX_BLOCK_DENSE = 1 << 24
# Largest number of (feature, group) segments per block; per-segment arrays are float64.
_MAX_BLOCK_SEGMENTS = 1 << 22

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
    "moments": "means and variances from float64 sums and sums of squares (mergeable across shards)",
}


# --------------------------------------------------------------------------------------------------------------
# Benjamini-Hochberg
# --------------------------------------------------------------------------------------------------------------


def benjamini_hochberg(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values (step-up FDR adjusted p-values) of a 1-D array of p-values.

    ``q_(i) = min_{j >= i} p_(j) * m / j`` over the sorted p-values, clipped to 1. A feature is a discovery at
    false discovery rate ``alpha`` when ``q < alpha``. Input order is kept.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise DataError(f"benjamini_hochberg expects a 1-D array of p-values; got shape {p.shape}.")
    if p.size == 0:
        return p.copy()
    if not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0:
        bad = p[~(np.isfinite(p) & (p >= 0) & (p <= 1))][:5]
        raise DataError(f"p-values must be finite and in [0, 1]; got for example {bad.tolist()}.")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (m / np.arange(1, m + 1, dtype=np.float64))
    q_sorted = np.minimum.accumulate(scaled[::-1])[::-1]
    q = np.empty(m, dtype=np.float64)
    q[order] = np.minimum(q_sorted, 1.0)
    return q


# --------------------------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------------------------


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _to_numpy_1d(x: Any, what: str) -> np.ndarray:
    if _is_torch(x):
        x = x.detach().cpu().numpy()
    elif isinstance(x, (pd.Series, pd.Index)):
        x = x.to_numpy()
    arr = np.asarray(x)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise DataError(f"{what} must be 1-D (one entry per response); got shape {arr.shape}.")
    return arr


def _check_features(features: Any) -> tuple[Any, int, int]:
    """Return (matrix in a supported container, n_responses, n_features)."""
    if _is_torch(features):
        if features.layout != _torch_strided():
            features = _torch_sparse_to_scipy(features)
        elif features.ndim != 2:
            raise DataError(
                f"features must be 2-D (n_responses, n_features); got a torch tensor of shape "
                f"{tuple(features.shape)}."
            )
    elif sp.issparse(features):
        if features.ndim != 2:
            raise DataError(f"features must be 2-D (n_responses, n_features); got shape {features.shape}.")
    else:
        if isinstance(features, pd.DataFrame):
            features = features.to_numpy()
        features = np.asarray(features)
        if features.ndim != 2:
            raise DataError(f"features must be 2-D (n_responses, n_features); got shape {features.shape}.")
        if features.dtype.kind not in "biuf":
            raise DataError(f"features must be numeric; got dtype {features.dtype}.")
    n, f = (int(s) for s in features.shape)
    return features, n, f


def _torch_strided() -> Any:
    import torch

    return torch.strided


def _torch_sparse_to_scipy(t: Any) -> sp.csr_matrix:
    import torch

    if t.ndim != 2:
        raise DataError(f"features must be 2-D (n_responses, n_features); got shape {tuple(t.shape)}.")
    coo = t.detach().to_sparse_coo().coalesce().cpu()
    idx = coo.indices().numpy()
    vals = coo.values()
    if vals.dtype in (torch.bfloat16, torch.float16):
        vals = vals.float()
    return sp.csr_matrix((vals.numpy(), (idx[0], idx[1])), shape=tuple(t.shape))


def _check_labels(labels: Any, features_shape: tuple[int, ...]) -> np.ndarray:
    y = _to_numpy_1d(labels, "labels")
    n = features_shape[0]
    if y.shape[0] != n:
        raise DataError(
            f"labels has shape {y.shape} but features has shape {features_shape}; expected one label per row "
            f"(response) of features."
        )
    if y.dtype.kind == "b":
        y = y.astype(np.int8)
    elif y.dtype.kind in "iuf":
        values = np.unique(y)
        if not np.isin(values, (0, 1)).all():
            shown = values[~np.isin(values, (0, 1))][:5].tolist()
            raise DataError(
                f"labels must be 0 (aligned) or 1 (misaligned); found other values such as {shown}. "
                f"Threshold judge scores into labels first (see personas.data)."
            )
        y = y.astype(np.int8)
    else:
        raise DataError(
            f"labels must be 0/1 or bool; got dtype {y.dtype} (for example {y[:3].tolist()}). "
            f"Map them to 1 = misaligned, 0 = aligned first."
        )
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == n:
        which = "aligned (0)" if n_pos == 0 else "misaligned (1)"
        raise DataError(
            f"labels contain one class only: all {n} responses are {which}. Ranking needs both misaligned "
            f"and aligned responses."
        )
    return y


def _check_groups(
    groups: Any, features_shape: tuple[int, ...], y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return (integer codes 0..G-1 per response, unique group ids)."""
    g = _to_numpy_1d(groups, "groups")
    if g.shape[0] != features_shape[0]:
        raise DataError(
            f"groups has shape {g.shape} but features has shape {features_shape}; expected one group id "
            f"(the question) per response."
        )
    codes, uniques = pd.factorize(g, use_na_sentinel=True)
    if (codes < 0).any():
        raise DataError(
            f"groups contain {int((codes < 0).sum())} missing values (None/NaN); give every response a group."
        )
    n_groups = len(uniques)
    pos = np.bincount(codes, weights=y, minlength=n_groups)
    tot = np.bincount(codes, minlength=n_groups)
    if not ((pos > 0) & (pos < tot)).any():
        raise DataError(
            f"no group has both misaligned and aligned responses ({n_groups} groups); a stratified test is "
            f"impossible. Pass groups=None or collect both kinds of answer for some questions."
        )
    return codes.astype(np.int64), np.asarray(uniques)


def covariate_correlation(features: Any, covariate: Any) -> np.ndarray:
    """Pearson correlation of every feature with one covariate per response (e.g. response length).

    A ranking reviewer's check: a feature that mostly tracks how long a response is can separate the classes
    whenever their lengths differ. Sparse inputs stay sparse; constant features get 0, never NaN.
    """
    x, n, f = _check_features(features)
    z = np.asarray(covariate, dtype=np.float64).ravel()
    if z.shape[0] != n:
        raise DataError(f"covariate has {z.shape[0]} values for {n} responses; expected one per response.")
    zc = z - z.mean()
    z_norm = np.sqrt((zc**2).sum())
    if _is_torch(x):
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


def has_mixed_group(groups: Any, labels: Any) -> bool:
    """True when at least one group holds both misaligned and aligned responses (a stratified test needs one)."""
    codes, uniques = pd.factorize(np.asarray(groups).ravel())
    y = np.asarray(labels, dtype=float).ravel()
    pos = np.bincount(codes, weights=y, minlength=len(uniques))
    tot = np.bincount(codes, minlength=len(uniques))
    return bool(((pos > 0) & (pos < tot)).any())


def _iter_blocks(
    x: Any, n: int, f: int, n_segments_per_col: int
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]]:
    """Yield column blocks as COO triples ``(j0, j1, rows, local_cols, values)`` with explicit zeros removed."""
    max_cols_seg = max(1, _MAX_BLOCK_SEGMENTS // max(1, n_segments_per_col))
    if sp.issparse(x):
        nnz = int(x.nnz)
        avg = max(1.0, nnz / max(1, f))
        width = int(min(f, max_cols_seg, max(1, _MAX_BLOCK_NNZ // avg)))
        width = max(width, 1)
        if width >= f and x.format == "csr":
            if not x.has_canonical_format:
                x = x.copy()  # never modify the caller's matrix
                x.sum_duplicates()
            rows = np.repeat(np.arange(n, dtype=np.int64 if n >= 2**31 else np.int32), np.diff(x.indptr))
            yield _drop_zeros(0, f, rows, x.indices, x.data)
            return
        csc = x.tocsc()
        if not csc.has_canonical_format:
            csc = csc.copy()
            csc.sum_duplicates()
        for j0 in range(0, f, width):
            j1 = min(f, j0 + width)
            a, b = int(csc.indptr[j0]), int(csc.indptr[j1])
            cols = np.repeat(np.arange(j1 - j0, dtype=np.int64), np.diff(csc.indptr[j0 : j1 + 1]))
            yield _drop_zeros(j0, j1, csc.indices[a:b].astype(np.int64), cols, csc.data[a:b])
        return
    width = int(min(f, max_cols_seg, max(1, _MAX_BLOCK_DENSE // max(1, n))))
    torch_in = _is_torch(x)
    for j0 in range(0, f, width):
        j1 = min(f, j0 + width)
        if torch_in:
            block = _torch_block(x, j0, j1)
        else:
            block = np.asarray(x[:, j0:j1])
        rows, cols = np.nonzero(block)
        yield j0, j1, rows.astype(np.int64), cols.astype(np.int64), block[rows, cols]


def _torch_block(x: Any, j0: int, j1: int) -> np.ndarray:
    import torch

    block = x[:, j0:j1].detach()
    if block.dtype in (torch.bfloat16, torch.float16):
        block = block.float()
    return block.cpu().numpy()


def _drop_zeros(j0: int, j1: int, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray):
    keep = vals != 0
    if not keep.all():
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
    return j0, j1, rows, cols, vals


def _as_float(vals: np.ndarray) -> np.ndarray:
    if vals.dtype == np.float32 or vals.dtype == np.float64:
        return vals
    if vals.dtype == np.float16:
        return vals.astype(np.float32)
    return vals.astype(np.float64)


def _check_finite(vals: np.ndarray, rows: np.ndarray, cols: np.ndarray, j0: int) -> None:
    if vals.size and not np.isfinite(vals).all():
        bad = np.flatnonzero(~np.isfinite(vals))
        i = bad[0]
        raise DataError(
            f"features contain {bad.size} non-finite values (NaN or inf) in the block of columns from {j0}; the "
            f"first is {vals[i]} at response {int(rows[i])}, feature {j0 + int(cols[i])}. Fix or drop those responses."
        )


# --------------------------------------------------------------------------------------------------------------
# Mergeable moments
# --------------------------------------------------------------------------------------------------------------

_MOMENT_FIELDS = ("sum_pos", "sum_neg", "sumsq_pos", "sumsq_neg", "nnz_pos", "nnz_neg")


def _block_moments(cols: np.ndarray, vals: np.ndarray, lab: np.ndarray, width: int) -> dict[str, np.ndarray]:
    """Per-feature sums, sums of squares and non-zero counts, per class, of one block (float64)."""
    cls = cols.astype(np.int64) * 2
    cls += lab
    w = vals.astype(np.float64)
    s = np.bincount(cls, w, minlength=2 * width).reshape(width, 2)
    w *= w
    s2 = np.bincount(cls, w, minlength=2 * width).reshape(width, 2)
    del w
    c = np.bincount(cls, minlength=2 * width).reshape(width, 2).astype(np.int64)
    return {
        "sum_pos": s[:, 1].copy(),
        "sum_neg": s[:, 0].copy(),
        "sumsq_pos": s2[:, 1].copy(),
        "sumsq_neg": s2[:, 0].copy(),
        "nnz_pos": c[:, 1].copy(),
        "nnz_neg": c[:, 0].copy(),
    }


def _empty_moments(f: int) -> dict[str, np.ndarray]:
    out = {k: np.zeros(f, dtype=np.float64) for k in _MOMENT_FIELDS[:4]}
    out["nnz_pos"] = np.zeros(f, dtype=np.int64)
    out["nnz_neg"] = np.zeros(f, dtype=np.int64)
    return out


# --------------------------------------------------------------------------------------------------------------
# Rank statistics of all features at once
# --------------------------------------------------------------------------------------------------------------


def _sorted_keys(seg: np.ndarray, vals: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """Pack each non-zero entry into one uint64 key ``segment << 33 | code << 1 | label`` and sort the keys.

    ``code`` is an order-preserving unsigned 32-bit code of the value whose top bit is set exactly for
    positive values: the bit pattern for float32 values (and float64 values that are exact in float32), the
    dense rank otherwise. Sorting the keys orders entries by (segment, value); equal values form tie runs.
    """
    if vals.dtype == np.float64:
        v32 = vals.astype(np.float32)
        if np.array_equal(v32, vals):
            vals = v32
        del v32
    if vals.dtype == np.float32:
        u = vals.view(np.uint32)
        code = np.where(u >> np.uint32(31), ~u, u | np.uint32(0x80000000))
    else:
        m = vals.size
        order = np.argsort(vals)
        sv = vals[order]
        dense = np.zeros(m, dtype=np.uint32)
        if m:
            np.cumsum(sv[1:] != sv[:-1], out=dense[1:])
        dense[sv > 0] |= np.uint32(0x80000000)
        code = np.empty(m, dtype=np.uint32)
        code[order] = dense
        del order, sv, dense
    key = seg.astype(np.uint64)
    key <<= np.uint64(33)
    wide = code.astype(np.uint64)
    del code
    wide <<= np.uint64(1)
    key |= wide
    del wide
    key |= lab.astype(np.uint64)
    key.sort()
    return key


# Entries decoded and processed at once by `_segment_rank_stats` (bounds its temporaries, ~15 x 8 bytes each).
_CHUNK_ENTRIES = 1 << 20


def _segment_rank_stats(
    key: np.ndarray, n1: np.ndarray, n0: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rank statistics of every segment from its sorted keys (see `_sorted_keys`) plus the implicit zeros.

    ``n1`` and ``n0`` are the class sizes of each segment (float64, length n_segments). Returns, per segment,
    ``U`` (Mann-Whitney U of the positives: pairs with pos > neg, ties 1/2), ``T`` (sum of t^3 - t over tie
    runs, the zero run included), and ``SP2`` / ``SQ2``: sums of squared DeLong placement counts of the
    positives (negatives below, ties 1/2) and of the negatives (positives above, ties 1/2).
    """
    n_seg = n1.size
    bounds = np.searchsorted(key, np.arange(n_seg + 1, dtype=np.uint64) << np.uint64(33))
    out = [np.zeros(n_seg) for _ in range(4)]
    s0 = 0
    while s0 < n_seg:
        s1 = int(np.searchsorted(bounds, bounds[s0] + _CHUNK_ENTRIES, side="right")) - 1
        s1 = min(max(s1, s0 + 1), n_seg)
        a, b = int(bounds[s0]), int(bounds[s1])
        chunk = _chunk_rank_stats(key[a:b], bounds[s0 : s1 + 1] - a, s0, n1[s0:s1], n0[s0:s1])
        for dst, src in zip(out, chunk, strict=True):
            dst[s0:s1] = src
        s0 = s1
    return out[0], out[1], out[2], out[3]


def _chunk_rank_stats(
    key: np.ndarray, starts: np.ndarray, s_off: int, n1: np.ndarray, n0: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`_segment_rank_stats` for the whole segments ``s_off ..`` whose sorted keys are ``key``."""
    n_seg = n1.size
    m = key.size
    sstart, send = starts[:-1], starts[1:]
    seg = (key >> np.uint64(33)).view(np.int64)
    seg -= s_off
    lab = (key & np.uint64(1)).astype(bool)
    value_pos = ((key >> np.uint64(32)) & np.uint64(1)).astype(bool)
    tie_start = np.ones(m, dtype=bool)
    if m > 1:
        np.greater(key[1:] ^ key[:-1], np.uint64(1), out=tie_start[1:])
    cp = np.zeros(m + 1, dtype=np.int64)  # cp[i] = positives among the first i entries
    np.cumsum(lab, out=cp[1:])
    nz_pos = (cp[send] - cp[sstart]).astype(np.float64)
    nz_neg = (send - sstart) - nz_pos
    if value_pos.all():
        negval_pos = np.zeros(n_seg)
        negval_neg = np.zeros(n_seg)
    else:  # negative values sort first within their segment
        n_negval = np.bincount(seg[~value_pos], minlength=n_seg)
        negval_pos = (cp[sstart + n_negval] - cp[sstart]).astype(np.float64)
        negval_neg = n_negval - negval_pos
    z_pos = n1 - nz_pos
    z_neg = n0 - nz_neg

    if tie_start.all():  # no ties among the non-zeros (common for float activations): runs are entries
        gstart = np.arange(m, dtype=np.int64)
        cp_start, cp_end = cp[:-1], cp[1:]
        gseg, gvp = seg, value_pos
        gpos = lab.astype(np.float64)
        gsize = None
    else:
        gstart = np.flatnonzero(tie_start)
        gend = np.empty_like(gstart)
        gend[:-1] = gstart[1:]
        gend[-1] = m
        gseg, gvp = seg[gstart], value_pos[gstart]
        cp_start, cp_end = cp[gstart], cp[gend]
        gpos = (cp_end - cp_start).astype(np.float64)
        gsize = (gend - gstart).astype(np.float64)
        del gend
    del tie_start, seg, value_pos, lab
    gneg = (1.0 - gpos) if gsize is None else gsize - gpos
    # Per (segment, value sign) offsets, gathered once with index 2 * segment + sign:
    # negatives strictly below a run = earlier non-zero negatives of its segment (+ the zeros if value > 0),
    # positives strictly above a run = later non-zero positives of its segment (+ the zeros if value < 0).
    first_neg = (sstart - cp[sstart]).astype(np.float64)
    below_off = np.stack([-first_neg, z_neg - first_neg], axis=1).ravel()
    last_pos = cp[send].astype(np.float64)
    above_off = np.stack([last_pos + z_pos, last_pos], axis=1).ravel()
    sign_idx = gseg * 2
    sign_idx += gvp
    below = (gstart - cp_start).astype(np.float64)
    below += below_off[sign_idx]
    below += 0.5 * gneg  # placement count of each positive of the run
    above = above_off[sign_idx]
    above -= cp_end
    above += 0.5 * gpos  # placement count of each negative of the run
    del sign_idx, gstart, cp_start, cp_end
    w = gpos * below
    u = np.bincount(gseg, w, minlength=n_seg).astype(np.float64)
    w *= below
    sp2 = np.bincount(gseg, w, minlength=n_seg).astype(np.float64)
    np.multiply(gneg, above, out=w)
    w *= above
    sq2 = np.bincount(gseg, w, minlength=n_seg).astype(np.float64)
    if gsize is None:
        t = np.zeros(n_seg)
    else:
        multi = gsize > 1
        gs = gsize[multi]
        t = np.bincount(gseg[multi], gs * gs * gs - gs, minlength=n_seg).astype(np.float64)

    pz = negval_neg + 0.5 * z_neg
    qz = (nz_pos - negval_pos) + 0.5 * z_pos
    zt = z_pos + z_neg
    u += z_pos * pz
    sp2 += z_pos * pz * pz
    sq2 += z_neg * qz * qz
    t += zt**3 - zt
    return u, t, sp2, sq2


def delong_variance(
    u: np.ndarray, sp2: np.ndarray, sq2: np.ndarray, n1: np.ndarray, n0: np.ndarray
) -> np.ndarray:
    """DeLong variance of the AUROC from U and the sums of squared placement counts (0 where undefined)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        pairs = n1 * n0
        auc = np.where(pairs > 0, u / np.where(pairs > 0, pairs, 1.0), 0.5)
        s10 = (sp2 / np.maximum(n0, 1.0) ** 2 - n1 * auc * auc) / np.maximum(n1 - 1.0, 1.0)
        s01 = (sq2 / np.maximum(n1, 1.0) ** 2 - n0 * auc * auc) / np.maximum(n0 - 1.0, 1.0)
        var = np.maximum(s10, 0.0) / np.maximum(n1, 1.0) + np.maximum(s01, 0.0) / np.maximum(n0, 1.0)
    return np.where(pairs > 0, var, 0.0)


def _rank_pass(
    blocks: Iterator[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]],
    y: np.ndarray,
    f: int,
    gcodes: np.ndarray | None,
    n_groups: int,
    want_moments: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One pass over the column blocks: moments and rank statistics (global and, with groups, stratified)."""
    n1 = float(y.sum())
    n0 = float(y.size - n1)
    moments = _empty_moments(f)
    rank = {k: np.zeros(f) for k in ("u", "t", "sp2", "sq2")}
    if gcodes is not None:
        n1g = np.bincount(gcodes, weights=y.astype(np.float64), minlength=n_groups)
        n0g = np.bincount(gcodes, minlength=n_groups) - n1g
        for k in ("g_u", "g_pairs", "g_var", "ve_num", "ve_var"):
            rank[k] = np.zeros(f)
    for j0, j1, rows, cols, vals in blocks:
        vals = _as_float(vals)
        _check_finite(vals, rows, cols, j0)
        width = j1 - j0
        lab = y[rows].astype(bool)
        if want_moments:
            for k, v in _block_moments(cols, vals, lab, width).items():
                moments[k][j0:j1] = v
        key = _sorted_keys(cols, vals, lab)
        u, t, sp2, sq2 = _segment_rank_stats(key, np.full(width, n1), np.full(width, n0))
        del key
        rank["u"][j0:j1], rank["t"][j0:j1], rank["sp2"][j0:j1], rank["sq2"][j0:j1] = u, t, sp2, sq2
        if gcodes is None:
            continue
        gseg = cols.astype(np.int64) * n_groups + gcodes[rows]
        key = _sorted_keys(gseg, vals, lab)
        del gseg
        s1 = np.tile(n1g, width)
        s0 = np.tile(n0g, width)
        u, t, sp2, sq2 = _segment_rank_stats(key, s1, s0)
        del key
        shape = (width, n_groups)
        u, t = u.reshape(shape), t.reshape(shape)
        var = delong_variance(u.ravel(), sp2, sq2, s1, s0).reshape(shape)
        pairs = n1g * n0g
        ng = n1g + n0g
        valid = pairs > 0
        w = np.where(valid, 1.0 / (ng + 1.0), 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            tie_frac = np.where(valid, t / np.where(valid, ng * (ng - 1.0), 1.0), 0.0)
        rank["g_u"][j0:j1] = u.sum(axis=1)
        rank["g_pairs"][j0:j1] = pairs.sum()
        rank["g_var"][j0:j1] = (var * pairs**2).sum(axis=1)  # divided by sum(pairs)^2 later
        rank["ve_num"][j0:j1] = ((u - pairs / 2.0) * w).sum(axis=1)
        rank["ve_var"][j0:j1] = (pairs / 12.0 * ((ng + 1.0) - tie_frac) * w * w).sum(axis=1)
    return moments, rank


# --------------------------------------------------------------------------------------------------------------
# From sums to the metric set
# --------------------------------------------------------------------------------------------------------------


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

    mean_pos = moments["sum_pos"] / n1f
    mean_neg = moments["sum_neg"] / n0f
    var_pos = np.maximum(moments["sumsq_pos"] - n1f * mean_pos**2, 0.0) / max(n1f - 1.0, 1.0)
    var_neg = np.maximum(moments["sumsq_neg"] - n0f * mean_neg**2, 0.0) / max(n0f - 1.0, 1.0)
    diff = mean_pos - mean_neg
    out["mean_pos"] = mean_pos
    out["mean_neg"] = mean_neg
    out["mean_diff"] = diff
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

    k_pos = moments["nnz_pos"].astype(np.float64)
    k_neg = moments["nnz_neg"].astype(np.float64)
    out["frac_active_pos"] = k_pos / n1f
    out["frac_active_neg"] = k_neg / n0f
    out["frac_active"] = (k_pos + k_neg) / n
    log_odds = np.log((k_pos + 0.5) / (n1f - k_pos + 0.5)) - np.log((k_neg + 0.5) / (n0f - k_neg + 0.5))
    uninformative = (k_pos + k_neg == 0) | (k_pos + k_neg == n)  # never fires, or always fires
    out["log_odds"] = np.where(uninformative, 0.0, log_odds)
    return out


# --------------------------------------------------------------------------------------------------------------
# Ranking keys and score functions
# --------------------------------------------------------------------------------------------------------------


def _neglog10(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return -np.log10(p)


def _auroc_key(m: dict[str, np.ndarray]) -> np.ndarray:
    return np.abs(m.get("group_auroc", m["auroc"]) - 0.5)


# key -> (score from the metric columns (higher = more separating), name of the matching p-value column)
KEYS: dict[str, tuple[Callable[[dict[str, np.ndarray]], np.ndarray], str]] = {
    "auroc": (_auroc_key, "p_value"),
    "cohens_d": (lambda m: np.abs(m["cohens_d"]), "welch_p"),
    "mean_diff": (lambda m: np.abs(m["mean_diff"]), "welch_p"),
    "log_odds": (lambda m: np.abs(m["log_odds"]), "p_value"),
    "p_value": (lambda m: _neglog10(m["p_value"]), "p_value"),
    "welch_p": (lambda m: _neglog10(m["welch_p"]), "welch_p"),
}
"""Ranking keys. Each maps to a score where higher means more separating, and to its p-value column:

- ``auroc`` (default): ``|AUROC - 0.5|``, using ``group_auroc`` when groups are given; p-value: Mann-Whitney
  (van Elteren when grouped).
- ``cohens_d``: ``|d|``; ``mean_diff``: ``|mean difference|``; both with the Welch p-value.
- ``log_odds``: ``|log odds ratio of firing|``, with ``p_value``.
- ``p_value`` / ``welch_p``: ``-log10(p)``.

Ties of the score are broken by the p-value (smaller first), then by the feature index.
"""


def _check_key(key: str) -> None:
    if key not in KEYS:
        raise PersonasError(f"key={key!r} is not a ranking key; expected one of {sorted(KEYS)}.")


def feature_metrics(
    features: Any, labels: Any, groups: Any = None, ci_level: float = 0.95
) -> tuple[dict[str, np.ndarray], int, int]:
    """Every metric column for every feature (unsorted, unfiltered), and the class sizes ``(n_pos, n_neg)``."""
    x, n, f = _check_features(features)
    y = _check_labels(labels, (n, f))
    gcodes, n_groups = None, 1
    if groups is not None:
        gcodes, uniques = _check_groups(groups, (n, f), y)
        n_groups = len(uniques)
    blocks = _iter_blocks(x, n, f, n_groups)
    moments, rank = _rank_pass(blocks, y, f, gcodes, n_groups)
    n1 = int(y.sum())
    return metrics_from_stats(moments, rank, n1, n - n1, ci_level, gcodes is not None), n1, n - n1


def _make_score_function(key: str) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    score_of, p_col = KEYS[key]

    def score(X: Any, y: Any, groups: Any = None) -> tuple[np.ndarray, np.ndarray]:
        metrics, _, _ = feature_metrics(X, y, groups)
        return score_of(metrics), metrics[p_col]

    score.__name__ = f"{key}_score"
    score.__qualname__ = score.__name__
    score.__doc__ = (
        f"Score every column of X by ranking key {key!r}; returns (scores, pvalues), higher score = more "
        f"separating (p-values from the {p_col!r} column). Pass groups= for the stratified version."
    )
    return score


SCORE_FUNCTIONS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    k: _make_score_function(k) for k in KEYS
}
"""Pure score functions ``(X, y, groups=None) -> (scores, pvalues)`` by key name (scikit-learn filter style)."""


# --------------------------------------------------------------------------------------------------------------
# The Ranking result
# --------------------------------------------------------------------------------------------------------------

_HTML_COLUMNS = (
    ("feature", "{:d}"),
    ("name", "{}"),
    ("auroc", "{:.3f}"),
    ("auroc_lo", "{:.3f}"),
    ("auroc_hi", "{:.3f}"),
    ("group_auroc", "{:.3f}"),
    ("mean_diff", "{:.3g}"),
    ("cohens_d", "{:.2f}"),
    ("frac_active_pos", "{:.3f}"),
    ("frac_active_neg", "{:.3f}"),
    ("log_odds", "{:.2f}"),
    ("p_value", "{:.2e}"),
    ("q_value", "{:.2e}"),
)


class Ranking(pd.DataFrame):
    """Features ranked best first: a ``pandas.DataFrame`` with one row per tested feature.

    ``meta`` holds ``n_pos``, ``n_neg``, ``key``, ``alpha``, ``ci_level``, ``n_features`` (columns given),
    ``n_features_tested`` (after ``min_frac_active``), ``grouped``, ``n_groups`` and ``methods`` (how each
    column was computed). Slicing keeps the type and the metadata; ``to_csv`` writes the plain table.
    """

    _metadata = ["meta"]
    meta: dict[str, Any] | None = None

    @property
    def _constructor(self) -> Callable[..., Ranking]:
        return Ranking

    def _meta(self, name: str) -> Any:
        return (self.meta or {}).get(name)

    @property
    def n_pos(self) -> int | None:
        """Number of misaligned (label 1) responses."""
        return self._meta("n_pos")

    @property
    def n_neg(self) -> int | None:
        """Number of aligned (label 0) responses."""
        return self._meta("n_neg")

    @property
    def key(self) -> str | None:
        """The ranking key the rows are sorted by (see `KEYS`)."""
        return self._meta("key")

    @property
    def alpha(self) -> float | None:
        """False discovery rate behind the `significant` column."""
        return self._meta("alpha")

    @property
    def n_features_tested(self) -> int | None:
        """Number of features that entered the test and the FDR correction."""
        return self._meta("n_features_tested")

    def top(self, n: int = 20) -> Ranking:
        """The ``n`` best features."""
        return self.head(n)

    def significant(self) -> Ranking:
        """The features with ``q_value < alpha``, best first."""
        return self[self["significant"].to_numpy(dtype=bool)]

    def density_view(
        self, bins: Sequence[float] = (0.0, 0.001, 0.01, 0.1, 0.5, 1.0), per_bin: int = 5
    ) -> Ranking:
        """The best ``per_bin`` features within each band of overall firing rate (``frac_active``).

        Dense, always-on latents and rare ones are not comparable on raw effect sizes; this view shows the
        leaders of each density band side by side, with a ``density_bin`` column such as ``(0.01, 0.1]``.
        """
        edges = np.asarray(bins, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise PersonasError(f"bins must be an increasing sequence of at least 2 edges; got {list(bins)}.")
        band = pd.cut(self["frac_active"], edges, include_lowest=True)
        out = self.assign(density_bin=band.astype(str))
        picked = out.groupby(band, observed=True, sort=True).head(per_bin)
        order = np.lexsort((np.arange(len(picked)), pd.Categorical(band.loc[picked.index]).codes))
        return picked.iloc[order]

    def _repr_html_(self) -> str:  # pragma: no cover - exercised in notebooks, smoke-tested in tests
        meta = self.meta or {}
        shown = self.head(20)
        cols = [(c, fmt) for c, fmt in _HTML_COLUMNS if c in shown.columns]
        sig = (
            shown["significant"].to_numpy(dtype=bool)
            if "significant" in shown.columns
            else np.zeros(len(shown), bool)
        )
        n_sig = int(np.asarray(self["significant"], dtype=bool).sum()) if "significant" in self.columns else 0
        head = (
            f"<p><b>Ranking</b>: {len(self)} features shown of {meta.get('n_features_tested', '?')} tested; "
            f"{meta.get('n_pos', '?')} misaligned vs {meta.get('n_neg', '?')} aligned responses; "
            f"key <code>{html.escape(str(meta.get('key', '?')))}</code>; "
            f"{n_sig} significant at q &lt; {meta.get('alpha', '?')} (marked &#9733;).</p>"
        )
        rows = ["<tr><th></th><th>#</th>" + "".join(f"<th>{html.escape(c)}</th>" for c, _ in cols) + "</tr>"]
        for i in range(len(shown)):
            cells = []
            for c, fmt in cols:
                v = shown[c].iloc[i]
                try:
                    text = fmt.format(v)
                except (ValueError, TypeError):
                    text = str(v)
                cells.append(f"<td>{html.escape(text)}</td>")
            style = ' style="font-weight:bold;background:#fff3cd"' if sig[i] else ""
            mark = "&#9733;" if sig[i] else ""
            rows.append(f"<tr{style}><td>{mark}</td><td>{i + 1}</td>{''.join(cells)}</tr>")
        more = f"<p>... {len(self) - len(shown)} more rows</p>" if len(self) > len(shown) else ""
        return f"<div>{head}<table>{''.join(rows)}</table>{more}</div>"


def build_ranking(
    metrics: dict[str, np.ndarray],
    n1: int,
    n0: int,
    *,
    key: str,
    alpha: float,
    min_frac_active: float,
    feature_names: Sequence[Hashable] | None,
    ci_level: float,
    n_groups: int | None,
) -> Ranking:
    """Sort metric columns into a `Ranking`: filter by firing rate, add q-values and significance, break ties."""
    f = metrics["auroc"].size
    score_of, p_col = KEYS[key]
    score = score_of(metrics)
    keep = metrics["frac_active"] >= min_frac_active if min_frac_active > 0 else np.ones(f, dtype=bool)
    idx = np.flatnonzero(keep)
    q = benjamini_hochberg(metrics["p_value"][idx])
    order = np.lexsort((idx, metrics[p_col][idx], -score[idx]))
    sel = idx[order]
    cols: dict[str, Any] = {"feature": sel}
    if feature_names is not None:
        names = list(feature_names)
        cols["name"] = [names[i] for i in sel]
    for c in ("auroc", "auroc_lo", "auroc_hi"):
        cols[c] = metrics[c][sel]
    if n_groups is not None:
        for c in ("group_auroc", "group_auroc_lo", "group_auroc_hi"):
            cols[c] = metrics[c][sel]
    for c in (
        "mean_diff",
        "mean_pos",
        "mean_neg",
        "cohens_d",
        "hedges_g",
        "frac_active_pos",
        "frac_active_neg",
        "frac_active",
        "log_odds",
        "p_value",
    ):
        cols[c] = metrics[c][sel]
    if n_groups is not None:
        cols["mw_p"] = metrics["mw_p"][sel]
    cols["welch_p"] = metrics["welch_p"][sel]
    cols["q_value"] = q[order]
    cols["significant"] = cols["q_value"] < alpha
    cols["score"] = score[sel]
    result = Ranking(cols)
    methods = dict(METHOD_NOTES)
    methods["p_value"] = METHOD_NOTES["p_value_grouped" if n_groups is not None else "p_value"]
    methods["mw_p"] = METHOD_NOTES["p_value"]
    del methods["p_value_grouped"]
    methods["score"] = f"ranking key {key!r}: " + (
        "|group_auroc - 0.5|" if key == "auroc" and n_groups else key
    )
    result.meta = {
        "n_pos": int(n1),
        "n_neg": int(n0),
        "key": key,
        "alpha": float(alpha),
        "ci_level": float(ci_level),
        "min_frac_active": float(min_frac_active),
        "n_features": int(f),
        "n_features_tested": int(idx.size),
        "grouped": n_groups is not None,
        "n_groups": n_groups,
        "methods": methods,
    }
    logger.debug(
        "ranked %d of %d features by %s; %d significant", idx.size, f, key, int(cols["significant"].sum())
    )
    return result


def check_rank_args(key: str, alpha: float, min_frac_active: float, ci_level: float) -> None:
    """Raise a `PersonasError` naming the argument when a ranking argument is out of its range."""
    _check_key(key)
    if not 0.0 < alpha < 1.0:
        raise PersonasError(f"alpha={alpha} must be strictly between 0 and 1 (a false discovery rate).")
    if not 0.0 <= min_frac_active <= 1.0:
        raise PersonasError(f"min_frac_active={min_frac_active} must be in [0, 1].")
    if not 0.0 < ci_level < 1.0:
        raise PersonasError(f"ci_level={ci_level} must be strictly between 0 and 1 (e.g. 0.95).")


def _check_names(feature_names: Sequence[Hashable] | None, f: int) -> None:
    if feature_names is not None and len(feature_names) != f:
        raise DataError(f"feature_names has {len(feature_names)} entries but features has {f} columns.")


def rank_features(
    features: Any,
    labels: Any,
    groups: Any = None,
    *,
    key: str = "auroc",
    alpha: float = 0.05,
    min_frac_active: float = 0.0,
    feature_names: Sequence[Hashable] | None = None,
    ci_level: float = 0.95,
) -> Ranking:
    """Rank every feature (column) by how well it separates misaligned from aligned responses.

    Args:
        features: (n_responses, n_features) activations: numpy array, scipy sparse matrix, or torch tensor
            (dense or sparse, CPU or CUDA). Sparse input is never densified.
        labels: n_responses labels, 1 (or True) = misaligned, 0 = aligned.
        groups: optional n_responses group ids (the question each response answers). When given, the
            p-value is the van Elteren stratified Wilcoxon test and the default key uses ``group_auroc``, the
            AUROC over (misaligned, aligned) pairs that answer the same question; a feature that only marks
            a question whose answers are mostly misaligned scores 0.5 and is not significant.
        key: ranking key, one of `KEYS`. Default ``"auroc"``: ``|AUROC - 0.5|`` (``|group_auroc - 0.5|``
            with groups), so features that fire *less* on misaligned responses rank too (see the sign of
            ``auroc`` or ``mean_diff``). Ties: smaller p-value first, then lower feature index.
        alpha: false discovery rate; ``significant`` is ``q_value < alpha``.
        min_frac_active: drop features that fire (value != 0) in fewer than this fraction of all responses
            before testing; q-values are computed over the remaining features (this filter ignores labels).
        feature_names: optional names, one per column; adds a ``name`` column.
        ci_level: coverage of the AUROC intervals.

    Returns:
        A `Ranking`, best first. Columns: ``feature`` (column index), [``name``], ``auroc``, ``auroc_lo``,
        ``auroc_hi`` (DeLong interval), [``group_auroc``, ``group_auroc_lo``, ``group_auroc_hi``],
        ``mean_diff`` (misaligned minus aligned), ``mean_pos``, ``mean_neg``, ``cohens_d``, ``hedges_g``,
        ``frac_active_pos``, ``frac_active_neg``, ``frac_active``, ``log_odds``, ``p_value`` (Mann-Whitney,
        or van Elteren with groups), [``mw_p``: the unstratified Mann-Whitney p with groups], ``welch_p``,
        ``q_value`` (Benjamini-Hochberg of ``p_value``), ``significant``, ``score`` (the key's value).

    Dead or constant features get AUROC 0.5, p = 1, zero effect sizes; no column is ever NaN. Cohen's d is
    +-inf only for a feature that is constant within each class but differs between them.
    """
    check_rank_args(key, alpha, min_frac_active, ci_level)
    x, n, f = _check_features(features)
    _check_names(feature_names, f)
    y = _check_labels(labels, (n, f))
    gcodes, n_groups = None, None
    if groups is not None:
        gcodes, uniques = _check_groups(groups, (n, f), y)
        n_groups = len(uniques)
    moments, rank = _rank_pass(_iter_blocks(x, n, f, n_groups or 1), y, f, gcodes, n_groups or 1)
    n1 = int(y.sum())
    metrics = metrics_from_stats(moments, rank, n1, n - n1, ci_level, gcodes is not None)
    return build_ranking(
        metrics,
        n1,
        n - n1,
        key=key,
        alpha=alpha,
        min_frac_active=min_frac_active,
        feature_names=feature_names,
        ci_level=ci_level,
        n_groups=n_groups,
    )


# --------------------------------------------------------------------------------------------------------------
# scikit-learn style estimator
# --------------------------------------------------------------------------------------------------------------


class FeatureRanker:
    """Rank features with `rank_features`, scikit-learn style.

    The constructor stores its arguments unchanged. ``fit(X, y, groups=None)`` sets, per column of X:
    ``scores_`` (the key's score, higher = more separating), ``pvalues_`` (``p_value``), ``qvalues_``
    (Benjamini-Hochberg over the tested features; 1.0 for columns dropped by ``min_frac_active``),
    ``ranking_`` (1 = best; dropped columns rank after all tested ones, by index) and ``result_`` (the
    `Ranking`), plus ``n_features_in_``.
    """

    def __init__(
        self,
        key: str = "auroc",
        alpha: float = 0.05,
        min_frac_active: float = 0.0,
        ci_level: float = 0.95,
        feature_names: Sequence[Hashable] | None = None,
    ) -> None:
        self.key = key
        self.alpha = alpha
        self.min_frac_active = min_frac_active
        self.ci_level = ci_level
        self.feature_names = feature_names

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("key", "alpha", "min_frac_active", "ci_level", "feature_names")}

    def set_params(self, **params: Any) -> FeatureRanker:
        for k, v in params.items():
            if k not in self.get_params():
                raise PersonasError(
                    f"FeatureRanker has no parameter {k!r}; expected one of {sorted(self.get_params())}."
                )
            setattr(self, k, v)
        return self

    def fit(self, X: Any, y: Any, groups: Any = None) -> FeatureRanker:
        result = rank_features(
            X,
            y,
            groups,
            key=self.key,
            alpha=self.alpha,
            min_frac_active=self.min_frac_active,
            feature_names=self.feature_names,
            ci_level=self.ci_level,
        )
        self._set_from_result(result)
        return self

    def _set_from_result(self, result: Ranking) -> None:
        f = int(result.meta["n_features"])
        feat = result["feature"].to_numpy()
        self.result_ = result
        self.n_features_in_ = f
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

    def get_support(self, indices: bool = False) -> np.ndarray:
        """Mask (or indices) of the significant features, in column order."""
        mask = self.qvalues_ < self.alpha
        return np.flatnonzero(mask) if indices else mask


# --------------------------------------------------------------------------------------------------------------
# Streaming / mergeable accumulator
# --------------------------------------------------------------------------------------------------------------


class StreamingRanker:
    """Accumulate shards of responses, merge accumulators, and rank as if all data had been given at once.

    State (``state_dict()``, plain numpy arrays): per-feature float64 sums and sums of squares and int64
    non-zero counts per class, the labels (and group ids) of every response seen, and the non-zero entries
    (response index, feature index, value) needed for the exact AUROC / Mann-Whitney statistics; memory grows
    with the number of non-zeros. ``result()`` equals `rank_features` on the concatenated shards: exactly for
    counts and rank statistics, up to floating-point summation order for means and variances.
    Shards must be given either all with groups or all without.
    """

    def __init__(self, n_features: int | None = None) -> None:
        self.n_features = n_features
        self.n_responses = 0
        self._moments: dict[str, np.ndarray] | None = None
        self._labels: list[np.ndarray] = []
        self._groups: list[np.ndarray] | None = None
        self._rows: list[np.ndarray] = []
        self._cols: list[np.ndarray] = []
        self._vals: list[np.ndarray] = []

    # -- accumulation ------------------------------------------------------------------------------------------
    def update(self, X_shard: Any, y_shard: Any, groups_shard: Any = None) -> StreamingRanker:
        x, n, f = _check_features(X_shard)
        if self.n_features is None:
            self.n_features = f
        elif f != self.n_features:
            raise DataError(
                f"shard has shape {(n, f)} but this accumulator holds {self.n_features} features; every "
                f"shard must have the same columns."
            )
        y = _to_numpy_1d(y_shard, "labels")
        if y.shape[0] != n:
            raise DataError(f"labels has shape {y.shape} but the shard has shape {(n, f)}.")
        if y.dtype.kind not in "biuf" or not np.isin(np.unique(y), (0, 1)).all():
            raise DataError(f"labels must be 0 (aligned) or 1 (misaligned); got {np.unique(y)[:5].tolist()}.")
        y = y.astype(np.int8)
        self._check_group_mode(groups_shard is not None)
        if groups_shard is not None:
            g = _to_numpy_1d(groups_shard, "groups")
            if g.shape[0] != n:
                raise DataError(f"groups has shape {g.shape} but the shard has shape {(n, f)}.")
            if pd.isna(g).any():
                raise DataError("groups contain missing values (None/NaN); give every response a group.")
            self._groups = (self._groups or []) + [g]
        moments = self._moments if self._moments is not None else _empty_moments(f)
        for j0, j1, rows, cols, vals in _iter_blocks(x, n, f, 1):
            vals = _as_float(vals)
            _check_finite(vals, rows, cols, j0)
            for k, v in _block_moments(cols, vals, y[rows].astype(bool), j1 - j0).items():
                moments[k][j0:j1] += v
            self._rows.append(rows + self.n_responses)
            self._cols.append((cols + j0).astype(np.int32 if f < 2**31 else np.int64))
            self._vals.append(vals)
        self._moments = moments
        self._labels.append(y)
        self.n_responses += n
        return self

    def _check_group_mode(self, has_groups: bool) -> None:
        if self.n_responses == 0 and not self._labels:
            return
        if has_groups != (self._groups is not None):
            raise DataError(
                "shards must be given either all with groups or all without; this one "
                + (
                    "has groups but earlier ones did not."
                    if has_groups
                    else "has no groups but earlier ones did."
                )
            )

    def merge(self, other: StreamingRanker) -> StreamingRanker:
        """Append the responses of ``other`` (in place) and return self."""
        if other.n_responses == 0:
            return self
        if self.n_responses == 0:
            self.n_features = other.n_features
        elif other.n_features != self.n_features:
            raise DataError(
                f"cannot merge accumulators of {self.n_features} and {other.n_features} features."
            )
        self._check_group_mode(other._groups is not None)
        if self._moments is None:
            self._moments = {k: v.copy() for k, v in other._moments.items()}
        else:
            for k in _MOMENT_FIELDS:
                self._moments[k] = self._moments[k] + other._moments[k]
        self._rows += [r + self.n_responses for r in other._rows]
        self._cols += list(other._cols)
        self._vals += list(other._vals)
        self._labels += list(other._labels)
        if other._groups is not None:
            self._groups = (self._groups or []) + list(other._groups)
        self.n_responses += other.n_responses
        return self

    # -- serialisation -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """The full state as plain numpy arrays (for ``np.savez`` or pickling across workers)."""
        self._compact()
        f = self.n_features or 0
        state = {
            "n_features": np.asarray(f, dtype=np.int64),
            "n_responses": np.asarray(self.n_responses, dtype=np.int64),
            "labels": self._labels[0] if self._labels else np.zeros(0, np.int8),
            "rows": self._rows[0] if self._rows else np.zeros(0, np.int64),
            "cols": self._cols[0] if self._cols else np.zeros(0, np.int32),
            "vals": self._vals[0] if self._vals else np.zeros(0, np.float32),
        }
        for k, v in (self._moments or _empty_moments(f)).items():
            state[k] = v
        if self._groups is not None:
            state["groups"] = self._groups[0]
        return state

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> StreamingRanker:
        """Rebuild an accumulator from `state_dict` output."""
        missing = {"n_features", "n_responses", "labels", "rows", "cols", "vals", *_MOMENT_FIELDS} - set(
            state
        )
        if missing:
            raise DataError(f"state is missing {sorted(missing)}; pass the dict returned by state_dict().")
        out = cls(int(state["n_features"]))
        out.n_responses = int(state["n_responses"])
        if out.n_responses:
            out._labels = [np.asarray(state["labels"])]
            out._rows = [np.asarray(state["rows"])]
            out._cols = [np.asarray(state["cols"])]
            out._vals = [np.asarray(state["vals"])]
            out._moments = {k: np.asarray(state[k]).copy() for k in _MOMENT_FIELDS}
            if "groups" in state:
                out._groups = [np.asarray(state["groups"])]
        return out

    def _compact(self) -> None:
        for name in ("_labels", "_rows", "_cols", "_vals"):
            parts = getattr(self, name)
            if len(parts) > 1:
                setattr(self, name, [np.concatenate(parts)])
        if self._groups is not None and len(self._groups) > 1:
            self._groups = [np.concatenate(self._groups)]

    # -- result ------------------------------------------------------------------------------------------------
    def result(
        self,
        *,
        key: str = "auroc",
        alpha: float = 0.05,
        min_frac_active: float = 0.0,
        feature_names: Sequence[Hashable] | None = None,
        ci_level: float = 0.95,
    ) -> Ranking:
        """Rank the accumulated responses; same arguments and output as `rank_features`."""
        check_rank_args(key, alpha, min_frac_active, ci_level)
        if self.n_responses == 0:
            raise DataError("no shards were added; call update() with at least one shard first.")
        self._compact()
        f = int(self.n_features)
        n = self.n_responses
        _check_names(feature_names, f)
        y = _check_labels(self._labels[0], (n, f))
        gcodes, n_groups = None, None
        if self._groups is not None:
            gcodes, uniques = _check_groups(self._groups[0], (n, f), y)
            n_groups = len(uniques)
        x = sp.csc_matrix((self._vals[0], (self._rows[0], self._cols[0])), shape=(n, f))
        _, rank = _rank_pass(
            _iter_blocks(x, n, f, n_groups or 1), y, f, gcodes, n_groups or 1, want_moments=False
        )
        n1 = int(y.sum())
        metrics = metrics_from_stats(self._moments, rank, n1, n - n1, ci_level, gcodes is not None)
        return build_ranking(
            metrics,
            n1,
            n - n1,
            key=key,
            alpha=alpha,
            min_frac_active=min_frac_active,
            feature_names=feature_names,
            ci_level=ci_level,
            n_groups=n_groups,
        )
