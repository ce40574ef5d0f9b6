"""Input checks of the *score* step: one copy of label, group, feature-matrix and argument validation.

Every entry point of `personas.scoring` (and any caller that validates the same inputs) goes through these
functions, so a rule (what a label may be, what a group id may be, which containers a feature matrix may come
in) lives in one place:

- `check_features`: a 2-D numpy array, pandas DataFrame, scipy sparse matrix or torch tensor (dense or sparse,
  CPU or CUDA) -> a container the kernels read, with its shape. Torch sparse tensors become scipy CSR; dense
  torch tensors stay where they are and are copied to the host one column block at a time (`iter_blocks`).
- `check_labels`: 0/1 or bool, one per row, both classes present (with ``require_both``).
- `check_groups`: group ids -> integer codes, no missing values, at least one group holding both classes.
- `check_rank_args`, `check_names`: the ranking arguments.
- `iter_blocks`: column blocks of any supported matrix as COO triples without explicit zeros; `BLOCK_NNZ`
  and `BLOCK_DENSE` bound how many entries one block holds (and so the memory of a ranking).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from personas.errors import DataError, PersonasError

__all__ = [
    "BLOCK_DENSE",
    "BLOCK_NNZ",
    "check_features",
    "check_groups",
    "check_labels",
    "check_names",
    "check_rank_args",
    "has_mixed_group",
    "iter_blocks",
]

BLOCK_NNZ = 1 << 25
"""Most non-zero entries handled in one column block (the sort keys take 8 bytes each: 256 MiB).

Together with `BLOCK_DENSE` and `personas.scoring.kernels.BLOCK_SEGMENTS` this bounds the memory of a ranking
whatever the number of rows or features; lower it (module attribute) to trade speed for memory."""

BLOCK_DENSE = 1 << 24
"""Most elements of a *dense* input converted to non-zero triples in one column block."""


def is_torch(x: Any) -> bool:
    """True for a torch tensor (checked by module name, so torch is never imported here)."""
    return type(x).__module__.startswith("torch")


def to_numpy_1d(x: Any, what: str) -> np.ndarray:
    """A 1-D numpy array from a list, numpy array, pandas Series/Index or torch tensor (a column vector is flattened)."""
    if is_torch(x):
        x = x.detach().cpu().numpy()
    elif isinstance(x, (pd.Series, pd.Index)):
        x = x.to_numpy()
    arr = np.asarray(x)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise DataError(f"{what} must be 1-D (one entry per response); got shape {arr.shape}.")
    return arr


def check_features(features: Any) -> tuple[Any, int, int]:
    """Return ``(matrix in a supported container, n_responses, n_features)`` or raise a `DataError`."""
    if is_torch(features):
        import torch

        if features.ndim != 2:
            raise DataError(
                f"features must be 2-D (n_responses, n_features); got a torch tensor of shape "
                f"{tuple(features.shape)}."
            )
        if features.layout != torch.strided:
            features = _torch_sparse_to_scipy(features)
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


def _torch_sparse_to_scipy(t: Any) -> sp.csr_matrix:
    import torch

    coo = t.detach().to_sparse_coo().coalesce().cpu()
    idx = coo.indices().numpy()
    vals = coo.values()
    if vals.dtype in (torch.bfloat16, torch.float16):
        vals = vals.float()
    return sp.csr_matrix((vals.numpy(), (idx[0], idx[1])), shape=tuple(t.shape))


def check_labels(labels: Any, shape: tuple[int, ...], *, require_both: bool = True) -> np.ndarray:
    """Labels as int8 0/1 (1 = misaligned), one per row of a matrix of ``shape``; bool, integer or float 0/1 input
    is accepted. With ``require_both`` (the default) a label vector holding one class only is an error: no statistic
    separates the classes then.
    """
    y = to_numpy_1d(labels, "labels")
    n_rows = int(shape[0])
    if y.shape[0] != n_rows:
        raise DataError(
            f"labels has shape {y.shape} but features has shape {tuple(shape)}; expected one label per row "
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
    if require_both and (n_pos == 0 or n_pos == n_rows):
        which = "aligned (0)" if n_pos == 0 else "misaligned (1)"
        raise DataError(
            f"labels contain one class only: all {n_rows} responses are {which}. Ranking needs both misaligned "
            f"and aligned responses."
        )
    return y


def check_groups(groups: Any, shape: tuple[int, ...], y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(integer codes 0..G-1 per response, unique group ids)``.

    With labels ``y`` it also checks that some group holds both classes (a stratified test needs one).
    """
    g = to_numpy_1d(groups, "groups")
    if g.shape[0] != int(shape[0]):
        raise DataError(
            f"groups has shape {g.shape} but features has shape {tuple(shape)}; expected one group id "
            f"(the question) per response."
        )
    codes, uniques = pd.factorize(g, use_na_sentinel=True)
    if (codes < 0).any():
        raise DataError(
            f"groups contain {int((codes < 0).sum())} missing values (None/NaN); give every response a group."
        )
    if y is not None and not _mixed(codes, len(uniques), y):
        raise DataError(
            f"no group has both misaligned and aligned responses ({len(uniques)} groups); a stratified test is "
            f"impossible. Pass groups=None or collect both kinds of answer for some questions."
        )
    return codes.astype(np.int64), np.asarray(uniques)


def _mixed(codes: np.ndarray, n_groups: int, y: np.ndarray) -> bool:
    pos = np.bincount(codes, weights=np.asarray(y, dtype=np.float64), minlength=n_groups)
    tot = np.bincount(codes, minlength=n_groups)
    return bool(((pos > 0) & (pos < tot)).any())


def has_mixed_group(groups: Any, labels: Any) -> bool:
    """True when at least one group holds both misaligned and aligned responses (a stratified test needs one)."""
    codes, uniques = pd.factorize(np.asarray(groups).ravel())
    return _mixed(codes, len(uniques), np.asarray(labels, dtype=np.float64).ravel())


def check_rank_args(key: str, alpha: float, min_frac_active: float, ci_level: float, keys: Any = None) -> None:
    """Raise a `PersonasError` naming the argument when a ranking argument is out of its range.

    ``keys`` is the collection of valid ranking keys (`personas.scoring.KEYS`); None skips the key check.
    """
    if keys is not None and key not in keys:
        raise PersonasError(f"key={key!r} is not a ranking key; expected one of {sorted(keys)}.")
    if not 0.0 < alpha < 1.0:
        raise PersonasError(f"alpha={alpha} must be strictly between 0 and 1 (a false discovery rate).")
    if not 0.0 <= min_frac_active <= 1.0:
        raise PersonasError(f"min_frac_active={min_frac_active} must be in [0, 1].")
    if not 0.0 < ci_level < 1.0:
        raise PersonasError(f"ci_level={ci_level} must be strictly between 0 and 1 (e.g. 0.95).")


def check_names(feature_names: Sequence[Hashable] | None, f: int) -> None:
    """Raise a `DataError` unless ``feature_names`` is None or has one entry per column."""
    if feature_names is not None and len(feature_names) != f:
        raise DataError(f"feature_names has {len(feature_names)} entries but features has {f} columns.")


def as_float(vals: np.ndarray) -> np.ndarray:
    """float32 and float64 stay as they are; float16 becomes float32, integers float64."""
    if vals.dtype == np.float32 or vals.dtype == np.float64:
        return vals
    if vals.dtype == np.float16:
        return vals.astype(np.float32)
    return vals.astype(np.float64)


def check_finite(vals: np.ndarray, rows: np.ndarray, cols: np.ndarray, j0: int) -> None:
    """Raise a `DataError` naming the first non-finite entry (response and feature) of a block."""
    if vals.size and not np.isfinite(vals).all():
        bad = np.flatnonzero(~np.isfinite(vals))
        i = bad[0]
        raise DataError(
            f"features contain {bad.size} non-finite values (NaN or inf) in the columns from {j0} on; the first is "
            f"{vals[i]} at response {int(rows[i])}, feature {j0 + int(cols[i])}. Fix or drop those responses."
        )


Block = tuple[int, int, np.ndarray, np.ndarray, np.ndarray]


def iter_blocks(x: Any, n: int, f: int, max_width: int | None = None) -> Iterator[Block]:
    """Yield column blocks as COO triples ``(j0, j1, rows, local_cols, values)`` with explicit zeros removed.

    A block holds at most `BLOCK_NNZ` non-zeros on average (sparse input) or `BLOCK_DENSE` elements (dense input)
    and at most ``max_width`` columns. CSR input is read block by block without a copy of the whole matrix (one
    byte per non-zero for the column mask); other sparse formats are converted to CSC once. The caller's matrix is
    never modified.
    """
    cap = f if max_width is None else max(1, min(f, max_width))
    if f == 0:
        return
    if sp.issparse(x):
        avg = max(1.0, int(x.nnz) / f)
        width = int(min(cap, max(1, BLOCK_NNZ // avg)))
        if width >= f and x.format == "csr":
            if not x.has_canonical_format:
                x = x.copy()
                x.sum_duplicates()
            rows = np.repeat(np.arange(n, dtype=np.int64 if n >= 2**31 else np.int32), np.diff(x.indptr))
            yield _drop_zeros(0, f, rows, x.indices, x.data)
            return
        if x.format == "csr":  # column blocks straight from the rows: no copy of the whole matrix
            if not x.has_canonical_format:
                x = x.copy()
                x.sum_duplicates()
            for j0 in range(0, f, width):
                j1 = min(f, j0 + width)
                at = np.flatnonzero((x.indices >= j0) & (x.indices < j1))
                rows = np.searchsorted(x.indptr, at, side="right") - 1
                yield _drop_zeros(j0, j1, rows, x.indices[at].astype(np.int64) - j0, x.data[at])
            return
        csc = x.tocsc()
        if not csc.has_canonical_format:
            csc = csc.copy() if csc is x else csc
            csc.sum_duplicates()
        for j0 in range(0, f, width):
            j1 = min(f, j0 + width)
            a, b = int(csc.indptr[j0]), int(csc.indptr[j1])
            cols = np.repeat(np.arange(j1 - j0, dtype=np.int64), np.diff(csc.indptr[j0 : j1 + 1]))
            yield _drop_zeros(j0, j1, csc.indices[a:b].astype(np.int64), cols, csc.data[a:b])
        return
    width = int(min(cap, max(1, BLOCK_DENSE // max(1, n))))
    for j0 in range(0, f, width):
        j1 = min(f, j0 + width)
        block = _torch_block(x, j0, j1) if is_torch(x) else np.asarray(x[:, j0:j1])
        rows, cols = np.nonzero(block)
        yield j0, j1, rows.astype(np.int64), cols.astype(np.int64), block[rows, cols]


def _torch_block(x: Any, j0: int, j1: int) -> np.ndarray:
    import torch

    block = x[:, j0:j1].detach()
    if block.dtype in (torch.bfloat16, torch.float16):
        block = block.float()
    return block.cpu().numpy()


def _drop_zeros(j0: int, j1: int, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> Block:
    keep = vals != 0
    if not keep.all():
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
    return j0, j1, rows, cols, vals
