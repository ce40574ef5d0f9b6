"""The two detectors: `PersonaDetector` (a few SAE features) and `DiffMeansProbe` (the dense baseline).

Why this module is long: both estimators share one base class that owns their file format (save, load, and
scoring raw responses through the recorded site); split apart, the writer and the reader of that format would
live in different files.

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

from personas.artifacts import atomic_write_bytes, manifest_header, write_json
from personas.capturing import capture as run_capture
from personas.config import THRESHOLDS, CaptureConfig, DetectorConfig
from personas.detect.files import (
    check_detector_weights,
    check_finite_weights,
    check_saved,
    check_shapes,
)
from personas.detect.inputs import CLASSES, _as_matrix, _dense_columns, _feature_names, _labels
from personas.detect.metrics import auroc_with_ci, calibrate_threshold
from personas.devices import sae_dtype
from personas.errors import DataError, PersonasError
from personas.logs import quiet_third_party
from personas.models import as_model_handle, load_model
from personas.saes import check_sae_identity, load_sae, recorded_sae_spec
from personas.scoring import has_mixed_group, rank_features
from personas.scoring.selection import select_features

logger = logging.getLogger(__name__)

__all__ = ["DiffMeansProbe", "NotFittedError", "PersonaDetector", "load_detector"]

CONFIG_FILE = "detector.json"
WEIGHTS_FILE = "detector.safetensors"
FORMAT_VERSION = 1


class NotFittedError(PersonasError, _SklearnNotFittedError):
    """A detector used before `fit` (or `load`): a `PersonasError` and scikit-learn's ``NotFittedError`` at once."""


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
    separate the classes on questions held out *within* the training rows (`personas.scoring.selection`), else the top
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
            try:  # features that hold on left-out questions, not only on these rows (personas.scoring.selection)
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
