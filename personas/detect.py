"""Detectors: score responses as misaligned from a few SAE features, evaluated on questions they were not fit on.

Why this module is long: the two estimators share their input checks, threshold calibration, evaluation and file
format (save, load, scoring raw responses through the recorded site); split apart, the writer and the reader of
that format would live in different files.

A ranked feature list is a hypothesis; a detector tests it. `PersonaDetector` picks its top-k features by ranking
on *training* rows only (`personas.scoring.rank_features`, stratified by question when groups are given), then
scores a response either by one feature (its sign taken from the training AUROC) or by a small L2-regularised
logistic model on the k standardised features. Its decision threshold is calibrated on the training scores
(Youden's J, i.e. the best balanced accuracy), so the accuracy reported on held-out rows is honest.

`DiffMeansProbe` is the dense baseline of the persona-vector work: the difference of the class means of the raw
pooled activations at the same hook (misaligned minus aligned) and, as score, the projection on that direction.
Reporting both on the same split shows what the SAE's sparse features cost or gain over a dense direction.

Both are scikit-learn classifiers (``BaseEstimator`` + ``ClassifierMixin``) for labels 0 (aligned) and 1
(misaligned): ``fit(X, y, groups=None)``, ``decision_function`` (the score, higher = more misaligned), ``predict``
(the score against the calibrated ``threshold_``), ``score(X, y)`` (accuracy, scikit-learn's meaning) and, for
`PersonaDetector`, ``predict_proba``. They work on plain feature matrices (numpy, scipy sparse, torch, DataFrames),
so they can be fit from a `Capture`, a cache or any matrix, and they compose with scikit-learn's tools::

    cross_val_score(PersonaDetector(k=5), X, y, groups=g, cv=GroupKFold(4), params={"groups": g})
    GridSearchCV(PersonaDetector(), {"k": [1, 5, 20], "C": [0.1, 1.0]}, cv=GroupKFold(4)).fit(X, y, groups=g)

``groups`` reaches ``fit`` (to rank within questions) through ``params=`` as above. With
``sklearn.set_config(enable_metadata_routing=True)`` both estimators request ``groups`` by default, so
``cross_val_score(det, X, y, params={"groups": g}, cv=GroupKFold(4))`` and ``GridSearchCV(...).fit(X, y, groups=g)``
hand it to the splitter and to every ``fit``. Without routing, `GridSearchCV` gives ``groups`` to the splitter only,
and the detectors rank without groups inside it.

`fit_detector` (`personas.jobs.detect`) goes from data to both, capturing every row once and splitting afterwards,
with held-out evaluation by question: no question is in both the training and the test rows. AUROC intervals are
DeLong intervals (`auroc_with_ci`, which reuses the rank statistics of `personas.scoring`).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError as _SklearnNotFittedError
from sklearn.utils.validation import column_or_1d

from personas.artifacts import atomic_write_bytes, manifest_header, write_json
from personas.capturing import capture as run_capture
from personas.config import THRESHOLDS, CaptureConfig, DetectorConfig
from personas.detector_files import (
    check_detector_weights,
    check_finite_weights,
    check_saved,
    check_shapes,
)
from personas.devices import sae_dtype
from personas.errors import DataError, PersonasError
from personas.logs import quiet_third_party
from personas.models import as_model_handle, load_model
from personas.saes import check_sae_identity, load_sae, recorded_sae_spec
from personas.scoring import feature_metrics, has_mixed_group, rank_features
from personas.selection import select_features

logger = logging.getLogger(__name__)

__all__ = [
    "DetectorConfig",
    "DiffMeansProbe",
    "NotFittedError",
    "PersonaDetector",
    "auroc_with_ci",
    "calibrate_threshold",
    "cross_validate_by_group",
    "load_detector",
]

CONFIG_FILE = "detector.json"
WEIGHTS_FILE = "detector.safetensors"
FORMAT_VERSION = 1
#: The labels every detector predicts: 0 aligned, 1 misaligned.
CLASSES = (0, 1)


class NotFittedError(PersonasError, _SklearnNotFittedError):
    """A detector used before `fit` (or `load`): a `PersonasError` and scikit-learn's ``NotFittedError`` at once."""

# ---------------------------------------------------------------------------------------------------- helpers


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


# ---------------------------------------------------------------------------------------------------- scorers


class _Scorer(ClassifierMixin, BaseEstimator):
    """Shared plumbing: input checks, threshold calibration, prediction, evaluation, save/load. Subclasses define
    `_fit` (on checked inputs) and `_decision` (the score of a checked matrix)."""

    kind = "base"
    #: Where the detector's inputs came from (model, hook, SAE, capture settings); set by `fit_detector` and saved.
    provenance: dict[str, Any] | None = None
    # scikit-learn metadata routing: ``groups`` goes to ``fit`` by default when routing is enabled
    __metadata_request__fit = {"groups": True}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        tags.input_tags.sparse = True
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "threshold_")

    @property
    def classes_(self) -> np.ndarray:
        """The labels this classifier predicts: ``[0, 1]`` (0 aligned, 1 misaligned)."""
        self._check_fitted()
        return np.array(CLASSES)

    def fit(self, X: Any, y: Any, groups: Any = None) -> _Scorer:
        """Fit on feature matrix ``X`` (rows: responses) and labels ``y`` (1 misaligned, 0 aligned); ``groups``
        (the question of each row) is used where the subclass can use it."""
        names = _feature_names(X)
        Xc = _as_matrix(X)
        y = _labels(y, Xc.shape[0], fitting=True)
        self._fit(Xc, y, groups, names)
        self.n_features_in_ = int(Xc.shape[1])
        if names is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        scores = self._decision(Xc)
        self.threshold_ = calibrate_threshold(scores, y, self.threshold)
        self.train_auroc_ = auroc_with_ci(scores, y)[0]
        return self

    def _fit(self, X: Any, y: np.ndarray, groups: Any, names: np.ndarray | None) -> None:
        raise NotImplementedError

    def _decision(self, X: Any) -> np.ndarray:
        raise NotImplementedError

    def _checked(self, X: Any) -> Any:
        """``X`` checked against what the detector was fit on: its columns (count, and names when fit on names)."""
        self._check_fitted()
        fitted_names = getattr(self, "feature_names_in_", None)
        names = _feature_names(X)
        if fitted_names is not None and names is not None:
            if len(names) != len(fitted_names) or (names != fitted_names).any():
                raise DataError("The feature names should match those that were passed during fit: X has columns "
                                f"{names[:5].tolist()}..., the detector was fit on {fitted_names[:5].tolist()}...")
        elif fitted_names is not None:
            warnings.warn(f"X does not have valid feature names, but {type(self).__name__} was fitted with feature "
                          "names", UserWarning, stacklevel=3)
        elif names is not None:
            warnings.warn(f"X has feature names, but {type(self).__name__} was fitted without feature names",
                          UserWarning, stacklevel=3)
        Xc = _as_matrix(X)
        if Xc.shape[1] != self.n_features_in_:
            raise DataError(
                f"X has {Xc.shape[1]} features, but {type(self).__name__} is expecting {self.n_features_in_} features "
                "as input (the columns it was fit on: features of one SAE, or activations of one hook); capture with "
                "the same SAE and site."
            )
        return Xc

    def decision_function(self, X: Any) -> np.ndarray:
        """Misalignment score per row (higher = more misaligned); ``X`` has the columns the detector was fit on."""
        return self._decision(self._checked(X))

    def predict(self, X: Any) -> np.ndarray:
        """1 (misaligned) where the score reaches the threshold calibrated on the training rows, else 0."""
        return self.classes_[(self.decision_function(X) >= self.threshold_).astype(np.int64)]

    def evaluate(self, X: Any, y: Any, ci_level: float = 0.95) -> dict[str, Any]:
        """AUROC with a DeLong interval, and accuracy at the threshold calibrated on the training rows."""
        scores = self.decision_function(X)
        y = _labels(y, len(scores))
        n_pos = int(y.sum())
        if n_pos == 0 or n_pos == len(y):
            raise DataError(
                f"evaluation needs misaligned and aligned rows; got {n_pos} misaligned of {len(y)}. "
                "Use a test set (or a question split) with both classes."
            )
        auc, lo, hi = auroc_with_ci(scores, y, ci_level)
        pred = scores >= self.threshold_
        tpr = float(pred[y == 1].mean())
        tnr = float((~pred[y == 0]).mean())
        return {
            "auroc": auc,
            "auroc_ci": [lo, hi],
            "ci_level": ci_level,
            "accuracy": float((pred == y.astype(bool)).mean()),
            "balanced_accuracy": (tpr + tnr) / 2.0,
            "tpr": tpr,
            "tnr": tnr,
            "threshold": float(self.threshold_),
            "n": int(len(y)),
            "n_misaligned": n_pos,
            "n_aligned": int(len(y) - n_pos),
            **self._describe(),
        }

    def _describe(self) -> dict[str, Any]:
        return {}

    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(X, y) or {type(self).__name__}.load(folder) "
                "first."
            )

    # -- persistence ---------------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        """Write ``detector.json`` (settings, threshold, provenance) and ``detector.safetensors`` (weights)."""
        from safetensors.numpy import save as st_save

        self._check_fitted()
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise PersonasError(f"{str(folder)!r} is a file; expected a folder to save the detector into.")
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: np.ascontiguousarray(v) for k, v in self._tensors().items()}
        atomic_write_bytes(folder / WEIGHTS_FILE, st_save(tensors))
        write_json(
            folder / CONFIG_FILE,
            {
                **manifest_header(f"personas.{self.kind}"),
                "format_version": FORMAT_VERSION,
                "class": type(self).__name__,
                **self._state(),
                "threshold": float(self.threshold_),
                "train_auroc": float(getattr(self, "train_auroc_", float("nan"))),
                "provenance": self.provenance or {},
            },
        )
        return folder

    @classmethod
    def _read(cls, folder: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The settings and weights of a saved detector, read with clear errors (not yet checked against a kind)."""
        import json

        from safetensors.numpy import load_file

        folder = Path(folder)
        cfg_path, w_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        if not cfg_path.is_file() or not w_path.is_file():
            raise PersonasError(
                f"{str(folder)!r} is not a saved detector: expected {CONFIG_FILE} and {WEIGHTS_FILE} in it "
                "(written by PersonaDetector.save or `personas detect --out`)."
            )
        try:
            meta = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PersonasError(f"{str(cfg_path)!r} is not valid JSON ({exc}); save the detector again.") from exc
        if not isinstance(meta, dict):
            raise PersonasError(f"{str(cfg_path)!r} holds a JSON {type(meta).__name__}; expected an object.")
        if meta.get("format_version") != FORMAT_VERSION:
            raise PersonasError(
                f"{cfg_path} has format_version {meta.get('format_version')!r}; this personas reads {FORMAT_VERSION}."
            )
        try:
            tensors = load_file(str(w_path))
        except Exception as exc:  # safetensors raises its own error type for a truncated or foreign file
            raise PersonasError(
                f"{str(w_path)!r} is not a complete safetensors file ({type(exc).__name__}: {exc}); it may be "
                "truncated. Save the detector again."
            ) from exc
        return meta, tensors

    # -- scoring raw responses -----------------------------------------------------------------------------

    def score_responses(
        self, prompts: list[str], responses: list[str], *, model: Any = None, sae: Any = None, progress: bool = False
    ) -> np.ndarray:
        """Capture prompt/response pairs at the detector's site (model, hook, SAE from its provenance) and score them.

        ``model`` / ``sae`` reuse loaded objects; otherwise they are loaded from the provenance (the model name and
        the SAE spec recorded at fit time). ``sae=None`` here means "not given": a detector fit on SAE codes always
        scores SAE codes.
        """

        prov = getattr(self, "provenance", None) or {}
        cap = prov.get("capture")
        capture_cfg = CaptureConfig(**cap) if cap else CaptureConfig()
        hook = prov.get("hook") or capture_cfg.hook
        uses_sae = bool(prov.get("sae")) and self.kind == "detector"
        spec = prov["sae"].get("spec") if uses_sae else None
        if uses_sae and sae is None and (not spec or spec == "in-memory"):
            raise PersonasError(
                "this detector was fit on an SAE loaded in memory, so its provenance names no SAE to load; "
                "pass sae= (the same SAE) to score_responses."
            )
        with quiet_third_party():
            if model is None:
                handle = load_model(capture_cfg.model, device=capture_cfg.device, dtype=capture_cfg.dtype)
            else:
                handle = as_model_handle(model)
            if uses_sae and sae is None:
                # "default" may name another SAE since the fit: the shipped one it recorded
                sae = load_sae(recorded_sae_spec(prov["sae"].get("identity"), spec), device=handle.device,
                               dtype=sae_dtype(capture_cfg.dtype, handle.device), model=handle.model_id)
        if uses_sae:
            check_sae_identity(prov["sae"].get("identity"), sae, "this detector")
        if hook is None:
            raise PersonasError("the detector's provenance records no hook; it cannot capture responses itself.")
        captured = run_capture(
            handle, prompts, responses, hooks=[hook], config=capture_cfg, sae=sae if uses_sae else None,
            allow_model_mismatch=bool(prov.get("allow_model_mismatch", False)), progress=progress,
        )
        return self.decision_function(captured.features if uses_sae else captured.pooled[hook])


class PersonaDetector(_Scorer):
    """Score responses as misaligned from the top-k features chosen on training data.

    A scikit-learn classifier: the constructor stores its arguments unchanged, and ``fit(X, y, groups=None)`` ranks
    every column of ``X`` with `personas.scoring.rank_features` on these rows only (stratified by ``groups``, the
    question of each row, when some question has both classes; unstratified otherwise) and keeps ``k`` features:
    with ``groups`` and ``selection="stability"`` (the default; or ``"auroc"``, ``"l1"``, ``"forward"``) those that
    separate the classes on questions held out *within* the training rows (`personas.selection`), else the top
    ``k`` of the ranking (``selection="rank"``, or without groups). It sets:

    ``features_`` (column indices, best first), ``signs_`` (+1 where the feature is higher on misaligned rows),
    ``mean_``/``scale_`` (standardisation of the k columns on the training rows), ``coef_``/``intercept_``
    (logistic model; for ``method="single"`` a unit weight on the top feature with its sign), ``threshold_``
    (calibrated on training scores), ``ranking_`` (the training `Ranking`), ``classes_`` (``[0, 1]``),
    ``n_features_in_``, and ``feature_names_in_`` / ``feature_names_`` (all / the chosen column names) when ``X``
    is a DataFrame with string column names.

    ``decision_function(X)`` is the logistic model's log-odds (``method="logistic"``), or the signed standardised
    top feature (``"single"``); higher means more misaligned. ``predict`` compares it with ``threshold_``;
    ``predict_proba`` is its logistic function shifted so that 0.5 sits at ``threshold_`` (for ``"logistic"``: the
    model's probability with the intercept moved to the calibrated threshold, class-balanced; for ``"single"``: a
    monotone transform of the standardised feature, not a calibrated probability). ``score(X, y)`` is accuracy.
    """

    kind = "detector"

    def __init__(
        self,
        k: int = 10,
        method: str = "logistic",
        C: float = 1.0,
        key: str = "auroc",
        min_frac_active: float = 0.0,
        threshold: str = "youden",
        selection: str = "stability",
    ) -> None:
        self.k = k
        self.method = method
        self.C = C
        self.key = key
        self.min_frac_active = min_frac_active
        self.threshold = threshold
        self.selection = selection

    @classmethod
    def from_config(cls, config: DetectorConfig) -> PersonaDetector:
        """A detector with the feature, method and threshold settings of a `DetectorConfig`."""
        return cls(k=config.k, method=config.method, C=config.C, key=config.key,
                   min_frac_active=config.min_frac_active, threshold=config.threshold, selection=config.selection)

    def fit(self, X: Any, y: Any, groups: Any = None) -> PersonaDetector:
        """Choose the top-k features on these rows (ranked within ``groups`` when given) and fit the scorer and its
        threshold; see the class docstring for the attributes set."""
        return super().fit(X, y, groups)

    def _fit(self, X: Any, y: np.ndarray, groups: Any, names: np.ndarray | None) -> None:
        DetectorConfig(k=self.k, method=self.method, C=self.C, threshold=self.threshold,
                       selection=self.selection)  # validates the settings
        if groups is not None:
            groups = np.asarray(groups).ravel()
            if groups.shape[0] != y.shape[0]:
                raise DataError(f"got {groups.shape[0]} groups for {y.shape[0]} rows; expected one group (the "
                                "question) per row.")
            if not has_mixed_group(groups, y):
                logger.warning("no training question has both misaligned and aligned responses; ranking without "
                               "groups")
                groups = None
        ranking = rank_features(X, y, groups, key=self.key, min_frac_active=self.min_frac_active,
                                feature_names=None if names is None else names.tolist())
        if len(ranking) == 0:
            raise DataError(
                f"no feature is left to choose from after min_frac_active={self.min_frac_active}; lower it."
            )
        k = 1 if self.method == "single" else min(int(self.k), len(ranking))
        if k < self.k and self.method != "single":
            logger.warning("k=%d but only %d features are available; using %d", self.k, len(ranking), k)
        top = ranking.head(k)
        auc_column = "group_auroc" if "group_auroc" in top else "auroc"
        self.features_ = top["feature"].to_numpy(dtype=np.int64)
        self.signs_ = np.where(top[auc_column].to_numpy() >= 0.5, 1.0, -1.0)
        if self.method != "single" and self.selection != "rank" and groups is not None:
            try:  # features that hold on left-out questions, not only on these rows (personas.selection)
                chosen = select_features(X, y, groups, k=k, method=self.selection)
                self.features_ = np.asarray(chosen.features, dtype=np.int64)
                self.signs_ = np.asarray(chosen.signs, dtype=np.float64)
            except DataError as exc:
                logger.warning("selection=%r is not possible here (%s); using the top %d of the ranking",
                               self.selection, exc, k)
        self.ranking_ = ranking
        self.feature_names_ = None if names is None else [str(names[i]) for i in self.features_]
        Z = _dense_columns(X, self.features_)
        self.mean_ = Z.mean(axis=0)
        scale = Z.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        Zs = (Z - self.mean_) / self.scale_
        if self.method == "single":
            self.coef_ = self.signs_.copy()
            self.intercept_ = 0.0
        else:
            from sklearn.linear_model import LogisticRegression

            clf = LogisticRegression(C=float(self.C), class_weight="balanced", max_iter=2000)
            clf.fit(Zs, y)
            self.coef_ = clf.coef_.ravel().astype(np.float64)
            self.intercept_ = float(clf.intercept_[0])

    def _decision(self, X: Any) -> np.ndarray:
        Zs = (_dense_columns(X, self.features_) - self.mean_) / self.scale_
        return Zs @ self.coef_ + self.intercept_

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, 2) probabilities of aligned (column 0) and misaligned (column 1): the logistic function of
        ``decision_function(X) - threshold_``, so ``predict`` is the more probable class."""
        from scipy.special import expit

        p = expit(self.decision_function(X) - self.threshold_)
        return np.column_stack([1.0 - p, p])

    def _describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": self.method,
            "k": int(len(self.features_)),
            "features": [int(f) for f in self.features_],
            "coefficients": [float(c) for c in self.coef_],
            "signs": [int(s) for s in self.signs_],
        }
        if self.feature_names_ is not None:
            out["feature_names"] = list(self.feature_names_)
        return out

    def _tensors(self) -> dict[str, np.ndarray]:
        return {
            "features": self.features_.astype(np.int64),
            "signs": self.signs_.astype(np.float64),
            "coef": self.coef_.astype(np.float64),
            "intercept": np.array([self.intercept_], dtype=np.float64),
            "mean": self.mean_.astype(np.float64),
            "scale": self.scale_.astype(np.float64),
        }

    def _state(self) -> dict[str, Any]:
        return {
            "params": self.get_params(),
            "n_features_in": int(self.n_features_in_),
            "features": [int(f) for f in self.features_],
            "feature_names": self.feature_names_,
        }

    @classmethod
    def load(cls, folder: str | Path) -> PersonaDetector:
        """A detector saved with `save`: scores exactly as the saved one."""
        meta, t = cls._read(folder)
        if meta.get("kind") != "personas.detector":
            raise PersonasError(f"{folder} holds a {meta.get('kind')!r}, not a personas.detector.")
        where = (Path(folder) / CONFIG_FILE, Path(folder) / WEIGHTS_FILE)
        check_saved(*where, meta, t, cls, ("n_features_in", "features", "feature_names"),
                    ("features", "signs", "coef", "intercept", "mean", "scale"))
        check_detector_weights(*where, meta, t)
        det = cls(**meta["params"])
        det.features_ = t["features"].astype(np.int64)
        det.signs_ = t["signs"]
        det.coef_ = t["coef"]
        det.intercept_ = float(t["intercept"][0])
        det.mean_, det.scale_ = t["mean"], t["scale"]
        det.n_features_in_ = int(meta["n_features_in"])
        det.feature_names_ = meta.get("feature_names")
        det.threshold_ = float(meta["threshold"])
        det.train_auroc_ = meta.get("train_auroc")
        det.provenance = meta.get("provenance") or {}
        return det


class DiffMeansProbe(_Scorer):
    """The dense baseline: the persona-vector direction (mean misaligned - mean aligned activation on the training
    rows), scored by the projection of each row on its unit vector. A scikit-learn classifier like
    `PersonaDetector` (``decision_function`` is the projection); ``fit`` accepts ``groups`` for a common interface
    and ignores it. Sets ``direction_`` (unit), ``norm_`` (length of the mean difference), ``threshold_``,
    ``classes_`` and ``n_features_in_``."""

    kind = "dense_probe"

    def __init__(self, threshold: str = "youden") -> None:
        self.threshold = threshold

    def fit(self, X: Any, y: Any, groups: Any = None) -> DiffMeansProbe:
        """The difference of the class means of ``X`` on these rows, and the threshold on its projections."""
        return super().fit(X, y, groups)

    def _fit(self, X: Any, y: np.ndarray, groups: Any, names: np.ndarray | None) -> None:
        del groups, names  # the direction is a plain difference of means
        if self.threshold not in THRESHOLDS:
            raise PersonasError(f"DiffMeansProbe.threshold={self.threshold!r}; expected one of {THRESHOLDS}.")
        Z = _dense_columns(X)
        diff = Z[y == 1].mean(axis=0) - Z[y == 0].mean(axis=0)
        norm = float(np.linalg.norm(diff))
        self.norm_ = norm
        self.direction_ = diff / norm if norm > 0 else diff

    def _decision(self, X: Any) -> np.ndarray:
        return _dense_columns(X) @ self.direction_

    def _describe(self) -> dict[str, Any]:
        return {"method": "diff_means", "d": int(self.n_features_in_), "direction_norm": float(self.norm_)}

    def _tensors(self) -> dict[str, np.ndarray]:
        return {"direction": self.direction_.astype(np.float64), "norm": np.array([self.norm_])}

    def _state(self) -> dict[str, Any]:
        return {"params": {"threshold": self.threshold}, "n_features_in": int(self.n_features_in_)}

    @classmethod
    def load(cls, folder: str | Path) -> DiffMeansProbe:
        meta, t = cls._read(folder)
        if meta.get("kind") != "personas.dense_probe":
            raise PersonasError(f"{folder} holds a {meta.get('kind')!r}, not a personas.dense_probe.")
        where = (Path(folder) / CONFIG_FILE, Path(folder) / WEIGHTS_FILE)
        check_saved(*where, meta, t, cls, ("n_features_in",), ("direction", "norm"))
        check_shapes(where[1], t, {"direction": (int(meta["n_features_in"]),), "norm": (1,)})
        check_finite_weights(where[1], t, ("direction", "norm"))
        probe = cls(**meta["params"])
        probe.direction_ = t["direction"]
        probe.norm_ = float(t["norm"][0])
        probe.n_features_in_ = int(meta["n_features_in"])
        probe.threshold_ = float(meta["threshold"])
        probe.provenance = meta.get("provenance") or {}
        return probe


def load_detector(folder: str | Path) -> PersonaDetector | DiffMeansProbe:
    """Load a saved `PersonaDetector` or `DiffMeansProbe`, whichever the folder holds."""
    meta, _ = _Scorer._read(folder)
    return DiffMeansProbe.load(folder) if meta.get("kind") == "personas.dense_probe" else PersonaDetector.load(folder)


def cross_validate_by_group(
    features: Any, dense: Any, labels: Any, groups: Any, config: DetectorConfig | None = None
) -> dict[str, Any]:
    """Group k-fold: each fold holds out whole questions; the detector and the dense baseline are refit on the other
    folds. Returns per-fold AUROCs of both and their mean and standard deviation (folds lacking a class are skipped).
    """
    config = config or DetectorConfig()
    y = _labels(labels, int(features.shape[0]))
    g = np.asarray(groups).astype(str)
    unique = np.asarray(sorted(set(g.tolist())))
    if unique.size < config.cv_folds:
        raise DataError(f"cv_folds={config.cv_folds} but there are only {unique.size} questions (groups).")
    order = np.random.default_rng(config.seed).permutation(unique.size)
    folds = np.array_split(unique[order], config.cv_folds)
    rows: list[dict[str, Any]] = []
    for i, held in enumerate(folds):
        test = np.isin(g, held)
        train = ~test
        if len(set(y[test].tolist())) < 2 or len(set(y[train].tolist())) < 2:
            logger.warning("cross-validation fold %d lacks a class; skipped", i)
            continue
        tr, te = np.flatnonzero(train), np.flatnonzero(test)
        det = PersonaDetector.from_config(config).fit(features[tr], y[tr], g[tr])
        probe = DiffMeansProbe(threshold=config.threshold).fit(dense[tr], y[tr])
        rows.append({
            "fold": i,
            "test_groups": held.tolist(),
            "n_test": int(test.sum()),
            "sae_auroc": auroc_with_ci(det.decision_function(features[te]), y[te])[0],
            "dense_auroc": auroc_with_ci(probe.decision_function(dense[te]), y[te])[0],
            "sae_accuracy": float((det.predict(features[te]) == y[te]).mean()),
            "dense_accuracy": float((probe.predict(dense[te]) == y[te]).mean()),
        })
    summary: dict[str, Any] = {"n_folds": config.cv_folds, "seed": config.seed, "folds": rows}
    for name in ("sae_auroc", "dense_auroc", "sae_accuracy", "dense_accuracy"):
        values = np.array([r[name] for r in rows])
        summary[name] = {"mean": float(values.mean()) if values.size else None,
                         "sd": float(values.std(ddof=1)) if values.size > 1 else None}
    return summary
