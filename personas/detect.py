"""Detectors: score responses as misaligned from a few SAE features, evaluated on questions they were not fit on.

A ranked feature list is a hypothesis; a detector tests it. `PersonaDetector` picks its top-k features by ranking
on *training* rows only (`personas.scoring.rank_features`, stratified by question when groups are given), then
scores a response either by one feature (its sign taken from the training AUROC) or by a small L2-regularised
logistic model on the k standardised features. Its decision threshold is calibrated on the training scores
(Youden's J, i.e. the best balanced accuracy), so the accuracy reported on held-out rows is honest.

`DiffMeansProbe` is the dense baseline of the persona-vector work: the difference of the class means of the raw
pooled activations at the same hook (misaligned minus aligned) and, as score, the projection on that direction.
Reporting both on the same split shows what the SAE's sparse features cost or gain over a dense direction.

Both work on plain feature matrices (numpy, scipy sparse), so they can be fit from a `Capture`, a cache or any
matrix. `fit_detector` goes from data to both, capturing every row once and splitting afterwards, with held-out
evaluation by question (`holdout_by="group"`): no question is in both the training and the test rows.

AUROC intervals are DeLong intervals (`auroc_with_ci`, which reuses the rank statistics of `personas.scoring`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from personas.artifacts import atomic_write_bytes, manifest_header, write_json
from personas.capturing import capture as run_capture
from personas.config import THRESHOLDS, CaptureConfig, DetectorConfig
from personas.detector_files import (
    check_detector_weights,
    check_finite_input,
    check_finite_weights,
    check_saved,
    check_shapes,
)
from personas.errors import DataError, PersonasError
from personas.models import as_model_handle, load_model
from personas.saes import load_sae
from personas.scoring import feature_metrics, has_mixed_group, rank_features

logger = logging.getLogger(__name__)

__all__ = [
    "DetectorConfig",
    "DiffMeansProbe",
    "PersonaDetector",
    "auroc_with_ci",
    "calibrate_threshold",
    "cross_validate_by_group",
    "load_detector",
]

CONFIG_FILE = "detector.json"
WEIGHTS_FILE = "detector.safetensors"
FORMAT_VERSION = 1


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


def _dense_columns(X: Any, columns: np.ndarray | None = None) -> np.ndarray:
    """Selected columns of X as a dense float64 array (X: numpy, scipy sparse, torch or DataFrame)."""
    import scipy.sparse as sp

    if type(X).__module__.startswith("torch"):
        X = (X.to_dense() if X.is_sparse else X).detach().cpu().numpy()
    if hasattr(X, "to_numpy") and not sp.issparse(X):
        X = X.to_numpy()
    if sp.issparse(X):
        X = X.tocsc() if columns is not None else X
        sub = X[:, columns] if columns is not None else X
        out = sub.toarray()
    else:
        X = np.asarray(X)
        if X.ndim != 2:
            raise DataError(f"expected a 2-D feature matrix (n_responses, n_features); got shape {X.shape}.")
        out = X[:, columns] if columns is not None else X
    return np.asarray(out, dtype=np.float64)


def _n_columns(X: Any) -> int:
    shape = getattr(X, "shape", None)
    if shape is None or len(shape) != 2:
        raise DataError(f"expected a 2-D feature matrix (n_responses, n_features); got {type(X).__name__} {shape}.")
    return int(shape[1])


def _labels(y: Any, n: int) -> np.ndarray:
    arr = np.asarray(y).ravel()
    if arr.shape[0] != n:
        raise DataError(f"got {arr.shape[0]} labels for {n} rows; expected one label (1 misaligned, 0 aligned) per row.")
    if not np.isin(arr, (0, 1, True, False)).all():
        raise DataError(f"labels must be 0 (aligned) or 1 (misaligned); found {np.unique(arr)[:5].tolist()}.")
    return arr.astype(np.int8)


# ---------------------------------------------------------------------------------------------------- scorers


class _Scorer:
    """Shared plumbing: threshold calibration, evaluation, save/load. Subclasses define `_fit` and `score`."""

    kind = "base"
    threshold_: float
    provenance: dict[str, Any]

    def _calibrate(self, X: Any, y: np.ndarray, how: str) -> None:
        self.threshold_ = calibrate_threshold(self.score(X), y, how)
        self.train_auroc_ = auroc_with_ci(self.score(X), y)[0]

    def predict(self, X: Any) -> np.ndarray:
        """1 (misaligned) where the score reaches the calibrated threshold, else 0."""
        self._check_fitted()
        return (self.score(X) >= self.threshold_).astype(np.int8)

    def evaluate(self, X: Any, y: Any, ci_level: float = 0.95) -> dict[str, Any]:
        """AUROC with a DeLong interval, and accuracy at the threshold calibrated on the training rows."""
        self._check_fitted()
        scores = self.score(X)
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
            raise PersonasError(f"this {type(self).__name__} is not fitted yet; call fit(X, y) or load(folder) first.")

    # -- persistence ---------------------------------------------------------------------------------------

    def _tensors(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _state(self) -> dict[str, Any]:
        raise NotImplementedError

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
                "provenance": getattr(self, "provenance", {}),
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
        the SAE spec recorded at fit time).
        """

        prov = getattr(self, "provenance", None) or {}
        cap = prov.get("capture")
        capture_cfg = CaptureConfig(**cap) if cap else CaptureConfig()
        hook = prov.get("hook") or capture_cfg.hook
        if model is None:
            handle = load_model(capture_cfg.model, device=capture_cfg.device, dtype=capture_cfg.dtype)
        else:
            handle = as_model_handle(model)
        uses_sae = bool(prov.get("sae")) and self.kind == "detector"
        if uses_sae and sae is None:
            spec = prov["sae"].get("spec")
            if not spec or spec == "in-memory":
                raise PersonasError(
                    "this detector was fit on an SAE loaded in memory, so its provenance names no SAE to load; "
                    "pass sae= (the same SAE) to score_responses."
                )
            sae = load_sae(spec, device=handle.device, dtype=capture_cfg.dtype)
        if hook is None:
            raise PersonasError("the detector's provenance records no hook; it cannot capture responses itself.")
        captured = run_capture(
            handle, prompts, responses, hooks=[hook], config=capture_cfg, sae=sae if uses_sae else None,
            allow_model_mismatch=bool(prov.get("allow_model_mismatch", False)), progress=progress,
        )
        return self.score(captured.features if uses_sae else captured.pooled[hook])


class PersonaDetector(_Scorer):
    """Score responses as misaligned from the top-k features chosen on training data.

    The constructor stores its arguments unchanged (scikit-learn style). ``fit(X, y, groups=None)`` ranks every
    column of ``X`` with `personas.scoring.rank_features` on these rows only (stratified by ``groups`` when
    given), keeps the ``k`` best, and sets:

    ``features_`` (column indices, best first), ``signs_`` (+1 where the feature is higher on misaligned rows),
    ``mean_``/``scale_`` (standardisation of the k columns on the training rows), ``coef_``/``intercept_``
    (logistic model; for ``method="single"`` a unit weight on the top feature with its sign), ``threshold_``
    (calibrated on training scores), ``ranking_`` (the training `Ranking`), ``n_features_in_``.

    ``score(X)`` is the logistic model's log-odds (``method="logistic"``), or the signed standardised top feature
    (``"single"``); higher means more misaligned.
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
    ) -> None:
        self.k = k
        self.method = method
        self.C = C
        self.key = key
        self.min_frac_active = min_frac_active
        self.threshold = threshold
        self.provenance: dict[str, Any] = {}

    @classmethod
    def from_config(cls, config: DetectorConfig) -> PersonaDetector:
        return cls(k=config.k, method=config.method, C=config.C, key=config.key,
                   min_frac_active=config.min_frac_active, threshold=config.threshold)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"k": self.k, "method": self.method, "C": self.C, "key": self.key,
                "min_frac_active": self.min_frac_active, "threshold": self.threshold}

    def fit(self, X: Any, y: Any, groups: Any = None, *, feature_names: list[str] | None = None) -> PersonaDetector:
        DetectorConfig(k=self.k, method=self.method, C=self.C, threshold=self.threshold)  # validates the settings
        n_cols = _n_columns(X)
        y = _labels(y, int(X.shape[0]))
        if groups is not None and not has_mixed_group(groups, y):
            logger.warning("no training question has both misaligned and aligned responses; ranking without groups")
            groups = None
        ranking = rank_features(X, y, groups, key=self.key, min_frac_active=self.min_frac_active,
                                feature_names=feature_names)
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
        self.ranking_ = ranking
        self.n_features_in_ = n_cols
        self.feature_names_ = None if feature_names is None else [str(feature_names[i]) for i in self.features_]
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
        self._calibrate(X, y, self.threshold)
        return self

    def score(self, X: Any) -> np.ndarray:
        """Misalignment score per row (higher = more misaligned); ``X`` has the columns the detector was fit on."""
        if not hasattr(self, "features_"):
            raise PersonasError("this PersonaDetector is not fitted yet; call fit(X, y) or PersonaDetector.load(folder).")
        if _n_columns(X) != self.n_features_in_:
            raise DataError(
                f"X has {_n_columns(X)} columns but the detector was fit on {self.n_features_in_} "
                "(features of one SAE, or activations of one hook); capture with the same SAE/site."
            )
        Z = _dense_columns(X, self.features_)
        check_finite_input(Z, self.features_)
        Zs = (Z - self.mean_) / self.scale_
        return Zs @ self.coef_ + self.intercept_

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

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        fitted = f", features={self.features_.tolist()}" if hasattr(self, "features_") else ""
        return f"PersonaDetector({params}{fitted})"


class DiffMeansProbe(_Scorer):
    """The dense baseline: the persona-vector direction (mean misaligned - mean aligned activation on the training
    rows), scored by the projection of each row on its unit vector. Sets ``direction_`` (unit), ``norm_`` (length
    of the mean difference) and ``threshold_``."""

    kind = "dense_probe"

    def __init__(self, threshold: str = "youden") -> None:
        self.threshold = threshold
        self.provenance: dict[str, Any] = {}

    def fit(self, X: Any, y: Any, groups: Any = None) -> DiffMeansProbe:
        del groups  # the direction is a plain difference of means; accepted for a common interface
        Z = _dense_columns(X)
        y = _labels(y, Z.shape[0])
        if y.sum() == 0 or y.sum() == len(y):
            raise DataError("the difference-of-means probe needs misaligned and aligned training rows.")
        diff = Z[y == 1].mean(axis=0) - Z[y == 0].mean(axis=0)
        norm = float(np.linalg.norm(diff))
        self.norm_ = norm
        self.direction_ = diff / norm if norm > 0 else diff
        self.n_features_in_ = Z.shape[1]
        self._calibrate(Z, y, self.threshold)
        return self

    def score(self, X: Any) -> np.ndarray:
        if not hasattr(self, "direction_"):
            raise PersonasError("this DiffMeansProbe is not fitted yet; call fit(X, y) first.")
        Z = _dense_columns(X)
        if Z.shape[1] != self.n_features_in_:
            raise DataError(f"X has {Z.shape[1]} columns; the probe was fit on {self.n_features_in_} (d_model).")
        check_finite_input(Z, None)
        return Z @ self.direction_

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
            "sae_auroc": auroc_with_ci(det.score(features[te]), y[te])[0],
            "dense_auroc": auroc_with_ci(probe.score(dense[te]), y[te])[0],
            "sae_accuracy": float((det.predict(features[te]) == y[te]).mean()),
            "dense_accuracy": float((probe.predict(dense[te]) == y[te]).mean()),
        })
    summary: dict[str, Any] = {"n_folds": config.cv_folds, "seed": config.seed, "folds": rows}
    for name in ("sae_auroc", "dense_auroc", "sae_accuracy", "dense_accuracy"):
        values = np.array([r[name] for r in rows])
        summary[name] = {"mean": float(values.mean()) if values.size else None,
                         "sd": float(values.std(ddof=1)) if values.size > 1 else None}
    return summary


# ---------------------------------------------------------------------------------------------------- the job


# ---------------------------------------------------------------------------------------------------- CLI


