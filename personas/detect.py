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

import argparse
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from personas.config import THRESHOLDS, CaptureConfig, DataConfig, DetectorConfig, SAEConfig
from personas.errors import DataError, PersonasError
from personas.provenance import atomic_write_bytes, library_versions, now, output_dir, write_json

logger = logging.getLogger(__name__)

__all__ = [
    "DetectResult",
    "DetectorConfig",
    "DiffMeansProbe",
    "PersonaDetector",
    "auroc_with_ci",
    "calibrate_threshold",
    "cross_validate_by_group",
    "fit_detector",
    "load_detector",
]

CONFIG_FILE = "detector.json"
WEIGHTS_FILE = "detector.safetensors"
EVAL_FILE = "eval.json"
SCORES_FILE = "test_scores.csv"
FORMAT_VERSION = 1



# ---------------------------------------------------------------------------------------------------- helpers


def auroc_with_ci(scores: Any, labels: Any, ci_level: float = 0.95) -> tuple[float, float, float]:
    """(AUROC, lower, upper) of ``scores`` for 0/1 ``labels`` (1 = misaligned), with a DeLong interval.

    The AUROC is exact with ties counted 1/2; the interval is normal, clipped to [0, 1] (see
    `personas.scoring.METHOD_NOTES`).
    """
    from personas.scoring import feature_metrics

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
                "kind": f"personas.{self.kind}",
                "format_version": FORMAT_VERSION,
                "class": type(self).__name__,
                **self._state(),
                "threshold": float(self.threshold_),
                "train_auroc": float(getattr(self, "train_auroc_", float("nan"))),
                "provenance": getattr(self, "provenance", {}),
                "created_at": now(),
                "versions": library_versions(),
            },
        )
        return folder

    @classmethod
    def _read(cls, folder: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        import json

        from safetensors.numpy import load_file

        folder = Path(folder)
        cfg_path, w_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        if not cfg_path.is_file() or not w_path.is_file():
            raise PersonasError(
                f"{str(folder)!r} is not a saved detector: expected {CONFIG_FILE} and {WEIGHTS_FILE} in it "
                "(written by PersonaDetector.save or `personas detect --out`)."
            )
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise PersonasError(
                f"{cfg_path} has format_version {meta.get('format_version')!r}; this personas reads {FORMAT_VERSION}."
            )
        return meta, load_file(str(w_path))

    # -- scoring raw responses -----------------------------------------------------------------------------

    def score_responses(
        self, prompts: list[str], responses: list[str], *, model: Any = None, sae: Any = None, progress: bool = False
    ) -> np.ndarray:
        """Capture prompt/response pairs at the detector's site (model, hook, SAE from its provenance) and score them.

        ``model`` / ``sae`` reuse loaded objects; otherwise they are loaded from the provenance (the model name and
        the SAE spec recorded at fit time).
        """
        from personas.capture import capture as run_capture
        from personas.models import as_model_handle, load_model
        from personas.saes import load_sae

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
        from personas.scoring import has_mixed_group, rank_features

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
        Zs = (_dense_columns(X, self.features_) - self.mean_) / self.scale_
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


@dataclass
class DetectResult:
    """What `fit_detector` made: the detector, the dense baseline, and (with a test split) their evaluation."""

    detector: PersonaDetector
    baseline: DiffMeansProbe
    train: Any  # personas.data.Responses
    test: Any | None
    evaluation: dict[str, Any] | None
    test_scores: Any | None = None  # DataFrame: id, label, group, sae_score, dense_score
    out_dir: Path | None = None
    capture: Any = field(default=None, repr=False)


def fit_detector(
    train: Any,
    test: Any = None,
    *,
    config: DetectorConfig | None = None,
    capture: CaptureConfig | None = None,
    sae: SAEConfig | str | Any = "default",
    data_config: DataConfig | None = None,
    model: Any = None,
    out: str | Path | None = None,
    progress: bool = True,
) -> DetectResult:
    """From responses to a fitted detector and dense baseline, evaluated on held-out rows.

    Args:
        train: responses to fit on (anything `load_responses` takes).
        test: responses to evaluate on. Without it, ``config.holdout_by="group"`` holds out whole questions of
            ``train`` (``test_fraction`` of them, drawn with ``seed``); with ``"none"`` nothing is evaluated.
        config: features, method, threshold and split (`DetectorConfig`).
        capture: model, hook and pooling (`CaptureConfig`); the hook defaults to the SAE's.
        sae: `SAEConfig`, spec string (``"none"``: the detector uses raw activation dimensions), or a loaded SAE.
        model: an already loaded model.
        out: folder for ``eval.json``, ``test_scores.csv``, ``detector/`` and ``dense_baseline/``.

    Every row (train and test) is captured in one pass; the features of the detector are chosen and every
    parameter (standardisation, weights, threshold, baseline direction) is fit on training rows only.
    """
    import pandas as pd

    from personas.capture import capture as run_capture
    from personas.data import load_responses
    from personas.pipeline import open_site
    from personas.saes import sae_info

    config = config or DetectorConfig()
    capture_cfg = capture or CaptureConfig()
    train_r = load_responses(train, data_config)
    if test is not None:
        test_r = load_responses(test, data_config)
        full_prompts, full_texts = train_r.prompts + test_r.prompts, train_r.texts + test_r.texts
        train_pos = np.arange(len(train_r))
        test_pos = np.arange(len(train_r), len(train_r) + len(test_r))
        split_mode = "file"
    elif config.holdout_by == "group":
        full = train_r
        train_r, test_r = full.split_by_group(config.test_fraction, config.seed)
        index = {rid: i for i, rid in enumerate(full.ids)}
        train_pos = np.array([index[i] for i in train_r.ids], dtype=np.int64)
        test_pos = np.array([index[i] for i in test_r.ids], dtype=np.int64)
        full_prompts, full_texts = full.prompts, full.texts
        split_mode = "group"
    else:
        test_r = None
        full_prompts, full_texts = train_r.prompts, train_r.texts
        train_pos, test_pos = np.arange(len(train_r)), np.zeros(0, dtype=np.int64)
        split_mode = "none"
        logger.warning("no test data and holdout_by='none': the detector is fit but not evaluated on held-out rows")

    site = open_site(capture_cfg, sae, model)
    handle, sae_obj, sae_cfg, hook = site.model, site.sae, site.sae_config, site.hook
    captured = run_capture(
        handle, full_prompts, full_texts, hooks=[hook], config=capture_cfg, sae=sae_obj,
        encode_batch_tokens=sae_cfg.encode_batch_tokens,
        allow_model_mismatch=bool(getattr(sae_cfg, "allow_model_mismatch", False)), progress=progress,
    )
    dense = captured.pooled[hook]
    feats = captured.features if sae_obj is not None else dense
    if sae_obj is not None:
        feats = feats.tocsr()

    provenance = {
        "model": captured.model,
        "hook": hook,
        "sae": None if sae_obj is None else {"spec": str(sae_cfg.sae), **sae_info(sae_obj)},
        "capture": asdict(capture_cfg),
        "allow_model_mismatch": bool(getattr(sae_cfg, "allow_model_mismatch", False)),
        "train_data": {"source": train_r.source, "dataset_hash": train_r.dataset_hash, "n": len(train_r)},
    }
    detector = PersonaDetector.from_config(config)
    detector.fit(feats[train_pos], train_r.labels, train_r.groups if train_r.has_groups else None)
    detector.provenance = provenance
    baseline = DiffMeansProbe(threshold=config.threshold).fit(dense[train_pos], train_r.labels)
    baseline.provenance = {**provenance, "sae": None}

    evaluation = None
    scores_frame = None
    if test_r is not None:
        sae_eval = detector.evaluate(feats[test_pos], test_r.labels, config.ci_level)
        dense_eval = baseline.evaluate(dense[test_pos], test_r.labels, config.ci_level)
        train_groups = sorted(set(train_r.groups.tolist())) if train_r.has_groups else None
        test_groups = sorted(set(test_r.groups.tolist())) if test_r.has_groups else None
        overlap = sorted(set(train_groups or []) & set(test_groups or []))
        if overlap:
            logger.warning(
                "%d question(s) are in both the training and the test data (%s): the held-out AUROC is optimistic",
                len(overlap), ", ".join(overlap[:5]),
            )
        top_rows = detector.ranking_.head(len(detector.features_))
        evaluation = {
            "kind": "personas.detect",
            "created_at": now(),
            "auroc": sae_eval["auroc"],
            "auroc_ci": sae_eval["auroc_ci"],
            "accuracy": sae_eval["accuracy"],
            "balanced_accuracy": sae_eval["balanced_accuracy"],
            "k": sae_eval["k"],
            "features": sae_eval["features"],
            "sae": sae_eval,
            "dense_baseline": dense_eval,
            "train_auroc": {"sae": detector.train_auroc_, "dense_baseline": baseline.train_auroc_},
            "train_feature_stats": top_rows[[c for c in ("feature", "auroc", "group_auroc", "mean_diff", "q_value")
                                             if c in top_rows]].to_dict(orient="records"),
            "split": {
                "mode": split_mode,
                "seed": config.seed if split_mode == "group" else None,
                "test_fraction": config.test_fraction if split_mode == "group" else None,
                "train": train_r.summary(),
                "test": test_r.summary(),
                "train_groups": train_groups,
                "test_groups": test_groups,
                "groups_in_both": overlap,
            },
            "model": captured.model,
            "hook": hook,
            "sae_info": provenance["sae"],
            "config": {
                "detector": asdict(config),
                "capture": asdict(capture_cfg),
                "sae": asdict(sae_cfg),
                "data": asdict(train_r.config),
            },
            "capture": captured.provenance(),
            "versions": library_versions(),
        }
        scores_frame = pd.DataFrame({
            "id": test_r.ids,
            "label": test_r.labels,
            "group": test_r.groups if test_r.has_groups else None,
            "sae_score": detector.score(feats[test_pos]),
            "dense_score": baseline.score(dense[test_pos]),
        })
    if config.cv_folds and evaluation is not None:
        if split_mode == "group":
            all_groups = np.empty(len(full_prompts), dtype=object)
            all_groups[train_pos] = train_r.groups
            all_groups[test_pos] = test_r.groups
            all_labels = np.zeros(len(full_prompts), dtype=np.int8)
            all_labels[train_pos], all_labels[test_pos] = train_r.labels, test_r.labels
            evaluation["cross_validation"] = cross_validate_by_group(feats, dense, all_labels, all_groups, config)
        else:
            logger.warning("cv_folds is used with holdout_by='group' only; skipped")
    result = DetectResult(detector, baseline, train_r, test_r, evaluation, scores_frame, capture=captured)
    if out is not None:
        result.out_dir = write_detect(result, out)
    return result


def write_detect(result: DetectResult, out: str | Path) -> Path:
    """Write ``detector/``, ``dense_baseline/``, and with an evaluation ``eval.json`` and ``test_scores.csv``."""
    from personas.provenance import atomic_write_text

    out = output_dir(out)
    result.detector.save(out / "detector")
    result.baseline.save(out / "dense_baseline")
    if result.evaluation is not None:
        result.evaluation["files"] = {"detector": "detector/", "dense_baseline": "dense_baseline/",
                                      "test_scores": SCORES_FILE}
        write_json(out / EVAL_FILE, result.evaluation)
    if result.test_scores is not None:
        atomic_write_text(out / SCORES_FILE, result.test_scores.to_csv(index=False))
    return out


# ---------------------------------------------------------------------------------------------------- CLI


def format_evaluation(evaluation: dict[str, Any]) -> str:
    """Detector and dense baseline side by side, as printed by ``personas detect``."""
    rows = []
    first = "SAE detector" if evaluation.get("sae_info") else "top-k detector (raw dims)"
    for name, ev in ((first, evaluation["sae"]), ("dense baseline (diff of means)", evaluation["dense_baseline"])):
        lo, hi = ev["auroc_ci"]
        extra = f"k={ev['k']} {ev['method']}" if "k" in ev else f"d={ev['d']}"
        rows.append(
            f"{name:32s} AUROC {ev['auroc']:.3f} [{lo:.3f}, {hi:.3f}]  accuracy {ev['accuracy']:.3f}  "
            f"balanced {ev['balanced_accuracy']:.3f}  ({extra})"
        )
    cv = evaluation.get("cross_validation")
    if cv:
        def fmt(stat):
            return "n/a" if stat["mean"] is None else f"{stat['mean']:.3f} +- {stat['sd'] or 0:.3f}"

        rows.append(f"{cv['n_folds']}-fold CV by question: detector AUROC {fmt(cv['sae_auroc'])}, "
                    f"dense baseline AUROC {fmt(cv['dense_auroc'])} (mean +- sd over folds)")
    return "\n".join(rows)


def _cmd_detect(args: argparse.Namespace) -> int:
    from personas.cli import config_from_args

    config = config_from_args(DetectorConfig, args)
    if args.test is None and config.holdout_by == "none":
        raise PersonasError("personas detect needs held-out data: pass --test DATA, or --holdout-by group to hold out "
                            "whole questions of --train.")
    result = fit_detector(
        args.train,
        args.test,
        config=config,
        capture=config_from_args(CaptureConfig, args),
        sae=config_from_args(SAEConfig, args),
        data_config=config_from_args(DataConfig, args),
        out=args.out,
        progress=not args.quiet,
    )
    ev = result.evaluation
    split = ev["split"]
    sizes = []
    for side in ("train", "test"):
        groups = split[f"{side}_groups"]
        sizes.append(f"{side} {split[side]['n_labelled']} rows" + ("" if groups is None else f" / {len(groups)} questions"))
    sae_spec = (ev["sae_info"] or {}).get("spec", "none")
    print(f"model {ev['model']['model']} | hook {ev['hook']} | SAE {sae_spec} | split {split['mode']}: {', '.join(sizes)}")
    print(f"held-out AUROC {ev['auroc']:.3f} [{ev['auroc_ci'][0]:.3f}, {ev['auroc_ci'][1]:.3f}] with k={ev['k']} "
          f"features {ev['features']}")
    print(format_evaluation(ev))
    if result.out_dir is not None:
        print(f"wrote {result.out_dir / EVAL_FILE}, {result.out_dir / 'detector'} and {result.out_dir / 'dense_baseline'}")
    return 0


def register_cli(subparsers: Any) -> None:
    from personas.cli import add_config_options

    p = subparsers.add_parser(
        "detect", help="fit a detector on the top SAE features and evaluate it on held-out data, next to a dense baseline"
    )
    p.add_argument("--train", required=True, help="responses to fit on (JSONL, CSV or Parquet)")
    p.add_argument("--test", default=None, help="responses to evaluate on; or use --holdout-by group")
    p.add_argument("--out", default="runs/detect", help="folder for eval.json and the saved detector (default: runs/detect)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_options(p, DetectorConfig)
    add_config_options(p, CaptureConfig)
    add_config_options(p, SAEConfig)
    add_config_options(p, DataConfig)
    p.set_defaults(func=_cmd_detect)
