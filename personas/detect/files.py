"""Checks of saved detector files: a tampered or foreign file fails on load.

A detector folder (`personas.detect`) holds ``detector.json`` (settings, threshold, provenance) and
``detector.safetensors`` (weights). Loading one trusts neither: `check_saved` wants exactly the keys the saver
writes, parameters the class takes, a finite threshold and a recorded capture config made of `CaptureConfig`
fields; `check_detector_weights` wants k of every per-feature tensor, feature indices inside ``[0,
n_features_in)`` that agree with the JSON, finite values, positive scales and signs of +-1. Without them a feature
index of -1 silently read the last column, a ``mean`` of length 1 broadcast, and a zero scale gave infinite scores.
Non-finite input is refused by the detectors themselves, as scikit-learn's estimator checks require.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import numpy as np

from personas.config import CaptureConfig
from personas.errors import PersonasError

#: Keys of ``detector.json``: the manifest header, then what the saver adds around a scorer's own state.
SAVED_KEYS = ("kind", "created_at", "versions", "format_version", "class", "params", "threshold", "train_auroc",
              "provenance")


def check_saved(config_path: Path, weights_path: Path, meta: dict[str, Any], tensors: dict[str, np.ndarray],
                cls: type, state_keys: tuple[str, ...], tensor_keys: tuple[str, ...]) -> None:
    """Keys, parameters and provenance of a saved detector: all known, all there, of the right types."""
    known = {*SAVED_KEYS, *state_keys}
    unknown, missing = sorted(set(meta) - known), sorted(k for k in known if k not in meta)
    if unknown or missing:
        raise PersonasError(
            f"{config_path} has unknown keys {unknown} and lacks keys {missing}; expected exactly {sorted(known)}. "
            "It was not written by this version of personas (or was edited); save the detector again."
        )
    extra, absent = sorted(set(tensors) - set(tensor_keys)), sorted(set(tensor_keys) - set(tensors))
    if extra or absent:
        raise PersonasError(
            f"{weights_path} has unknown tensors {extra} and lacks {absent}; expected {sorted(tensor_keys)}. "
            "Save the detector again."
        )
    params = meta["params"]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    if not isinstance(params, dict) or set(params) - accepted:
        bad = sorted(set(params) - accepted) if isinstance(params, dict) else type(params).__name__
        raise PersonasError(
            f"{config_path}: 'params' holds {bad}, which {cls.__name__} does not take; expected {sorted(accepted)}."
        )
    n_in = meta["n_features_in"]
    if not isinstance(n_in, int) or isinstance(n_in, bool) or n_in < 1:
        raise PersonasError(f"{config_path}: n_features_in={n_in!r}; expected a positive integer.")
    threshold = meta["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not np.isfinite(threshold):
        raise PersonasError(f"{config_path}: threshold={threshold!r}; expected a finite number.")
    provenance = meta["provenance"]
    if not isinstance(provenance, dict):
        raise PersonasError(f"{config_path}: 'provenance' is a {type(provenance).__name__}; expected an object.")
    capture = provenance.get("capture")
    if capture is not None:
        fields = {f.name for f in dataclasses.fields(CaptureConfig)}
        if not isinstance(capture, dict) or set(capture) - fields:
            bad = sorted(set(capture) - fields) if isinstance(capture, dict) else type(capture).__name__
            raise PersonasError(
                f"{config_path}: the recorded capture config holds {bad}, which are not CaptureConfig fields "
                f"{sorted(fields)}; the detector could not capture responses itself. Save it again."
            )
        try:
            CaptureConfig(**capture)
        except TypeError as exc:
            raise PersonasError(f"{config_path}: the recorded capture config is not usable ({exc}).") from exc


def check_shapes(weights_path: Path, tensors: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]]) -> None:
    """Raise `PersonasError` listing the tensors whose shapes differ from ``expected``."""
    wrong = {name: list(tensors[name].shape) for name, shape in expected.items() if tensors[name].shape != shape}
    if wrong:
        raise PersonasError(
            f"{weights_path} holds tensors of the wrong shapes {wrong}; expected "
            f"{ {name: list(shape) for name, shape in expected.items()} }. Save the detector again."
        )


def check_finite_weights(weights_path: Path, tensors: dict[str, np.ndarray], names: tuple[str, ...]) -> None:
    """Raise `PersonasError` naming the tensors that hold NaN or inf."""
    bad = [name for name in names if not np.isfinite(np.asarray(tensors[name], dtype=np.float64)).all()]
    if bad:
        raise PersonasError(f"{weights_path}: {bad} hold NaN or inf; expected finite weights.")


def check_detector_weights(config_path: Path, weights_path: Path, meta: dict[str, Any],
                           t: dict[str, np.ndarray]) -> None:
    """A `PersonaDetector`'s weights: k of each, indices inside the fitted width, finite values, positive scales."""
    k = int(t["features"].shape[0]) if t["features"].ndim == 1 else -1
    if k < 1:
        raise PersonasError(f"{weights_path}: 'features' has shape {list(t['features'].shape)}; expected [k], k >= 1.")
    check_shapes(weights_path, t, {"features": (k,), "signs": (k,), "coef": (k,), "mean": (k,), "scale": (k,),
                                   "intercept": (1,)})
    if not np.issubdtype(t["features"].dtype, np.integer):
        raise PersonasError(f"{weights_path}: 'features' is {t['features'].dtype}; expected integers.")
    n_in = int(meta["n_features_in"])
    outside = [int(f) for f in t["features"] if not 0 <= int(f) < n_in]
    if outside:
        raise PersonasError(
            f"{weights_path}: feature indices {outside} are outside [0, {n_in}) (n_features_in); save the detector "
            "again."
        )
    if meta["features"] != [int(f) for f in t["features"]]:
        raise PersonasError(
            f"{config_path} lists features {meta['features']} but the weights hold {t['features'].tolist()}; the "
            "two files come from different detectors. Save the detector again."
        )
    check_finite_weights(weights_path, t, ("signs", "coef", "intercept", "mean", "scale"))
    if not (t["scale"] > 0).all():
        raise PersonasError(
            f"{weights_path}: 'scale' holds {t['scale'][t['scale'] <= 0].tolist()}; expected positive standard "
            "deviations (a zero scale would give infinite scores)."
        )
    if not np.isin(t["signs"], (-1.0, 1.0)).all():
        raise PersonasError(f"{weights_path}: 'signs' holds {t['signs'].tolist()}; expected +1 or -1.")
    names = meta["feature_names"]
    if names is not None and (not isinstance(names, list) or len(names) != k):
        raise PersonasError(f"{config_path}: feature_names must be null or a list of {k} names.")
