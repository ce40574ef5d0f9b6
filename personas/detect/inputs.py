"""The detectors' input checks: any feature matrix (numpy, scipy sparse, torch, DataFrame) to one the estimators
read, finite values, feature names, and labels 0 (aligned) / 1 (misaligned), with errors that name what was wrong.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import column_or_1d

from personas.errors import DataError

#: The labels every detector predicts: 0 aligned, 1 misaligned.
CLASSES = (0, 1)


def _as_matrix(X: Any) -> Any:
    """``X`` as a 2-D numpy array or a CSR/CSC matrix of real, finite numbers (torch tensors and DataFrames are
    converted; other sparse formats become CSR). Raises `DataError` naming the shape or the bad values."""
    import scipy.sparse as sp

    if type(X).__module__.startswith("torch"):
        import torch

        X = X.detach().cpu()
        if X.layout != torch.strided:
            coo = X.to_sparse_coo().coalesce()
            rows, cols = coo.indices().numpy()
            X = sp.csr_matrix((coo.values().double().numpy(), (rows, cols)), shape=tuple(X.shape))
        else:
            X = X.double().numpy() if X.dtype in (torch.bfloat16, torch.float16) else X.numpy()
    if sp.issparse(X):
        if X.ndim != 2:
            raise DataError(f"expected a 2-D feature matrix (n_responses, n_features); got shape {X.shape}.")
        if X.format not in ("csr", "csc"):
            X = X.tocsr()
        values = X.data
    else:
        if hasattr(X, "to_numpy"):  # a DataFrame
            X = X.to_numpy()
        X = np.asarray(X)
        if X.ndim != 2:
            raise DataError(f"expected a 2-D feature matrix (n_responses, n_features); got shape {X.shape}. "
                            "Reshape your data: one row with X.reshape(1, -1), one feature with X.reshape(-1, 1).")
        values = X
    if values.dtype.kind == "c":
        raise DataError("Complex data not supported: expected real-valued features.")
    if values.dtype.kind not in "biuf":
        try:  # a TypeError (a dict in a cell) is raised as it is
            X = X.astype(np.float64)
        except ValueError as exc:
            raise DataError(f"features must be numbers; got dtype {values.dtype} ({exc}).") from exc
        values = X.data if sp.issparse(X) else X
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"Found array with 0 sample(s) or 0 feature(s) (shape={X.shape}) while a minimum of 1 is "
                        "required: expected at least one response and one feature.")
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        _raise_non_finite(X, values)
    return X


def _raise_non_finite(X: Any, values: np.ndarray) -> None:
    """Raise `DataError` naming how many values of ``X`` are NaN or inf, and where the first one is."""
    import scipy.sparse as sp

    bad = ~np.isfinite(values)
    if sp.issparse(X):  # the first bad stored value, in storage order; its row and column from the index arrays
        k = int(np.flatnonzero(bad)[0])
        outer = int(np.searchsorted(X.indptr, k, side="right") - 1)
        row, col = (outer, int(X.indices[k])) if X.format == "csr" else (int(X.indices[k]), outer)
        value = values[k]
    else:
        row, col = (int(i[0]) for i in np.nonzero(bad))
        value = values[row, col]
    raise DataError(f"X holds {int(bad.sum())} non-finite values (NaN or inf); the first is {value} at row {row}, "
                    f"column {col}. Fix or drop those rows before fitting or scoring.")


def _feature_names(X: Any) -> np.ndarray | None:
    """Column names of a DataFrame whose columns are all strings (scikit-learn's rule), else None."""
    columns = getattr(X, "columns", None)
    if columns is None:
        return None
    names = np.asarray(columns, dtype=object)
    return names if names.size and all(isinstance(c, str) for c in names) else None


def _dense_columns(X: Any, columns: np.ndarray | None = None) -> np.ndarray:
    """Selected columns (all by default) of a checked matrix (see `_as_matrix`) as a dense float64 array."""
    import scipy.sparse as sp

    if sp.issparse(X):
        X = X.tocsc() if columns is not None else X
        return np.asarray((X[:, columns] if columns is not None else X).toarray(), dtype=np.float64)
    return np.asarray(X[:, columns] if columns is not None else X, dtype=np.float64)


def _labels(y: Any, n: int, *, fitting: bool = False) -> np.ndarray:
    """0/1 labels as int8, one per row; with ``fitting``, both classes must be present."""
    if y is None:
        raise DataError("this detector requires y to be passed, but the target y is None; give one label per row "
                        "(1 misaligned, 0 aligned).")
    arr = np.asarray(y)
    arr = column_or_1d(arr, warn=True) if arr.ndim == 2 and arr.shape[1] == 1 else arr.ravel()
    if arr.shape[0] != n:
        raise DataError(f"got {arr.shape[0]} labels for {n} rows; expected one label (1 misaligned, 0 aligned) per row.")
    try:
        binary = bool(np.isin(arr, CLASSES).all())
    except TypeError:  # labels that cannot be compared with numbers
        binary = False
    if not binary:
        found = np.unique(arr.astype(str))[:5].tolist()
        if arr.dtype.kind == "f" and np.isfinite(arr).all() and (arr != np.round(arr)).any():
            raise DataError(f"labels look continuous (e.g. {found[:3]}); expected 0 (aligned) or 1 (misaligned). "
                            "Judge scores become labels through personas.load_responses (DataConfig thresholds).")
        raise DataError(f"labels must be 0 (aligned) or 1 (misaligned); found {found}. Only binary classification "
                        "is supported: map your labels to 0/1 with 1 = misaligned.")
    labels = arr.astype(np.int8)
    if fitting and np.unique(labels).size < 2:
        raise DataError(f"all {n} training labels are {int(labels[0])}: only one class is present; a detector needs "
                        "both misaligned (1) and aligned (0) training rows.")
    return labels
