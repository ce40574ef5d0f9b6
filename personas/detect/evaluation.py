"""Cross-validation of the detectors by group: no question is in both the training and the test rows of a fold."""


from __future__ import annotations

import logging
from typing import Any

import numpy as np

from personas.config import DetectorConfig
from personas.detect.estimators import DiffMeansProbe, PersonaDetector
from personas.detect.inputs import _labels
from personas.detect.metrics import auroc_with_ci
from personas.errors import DataError

logger = logging.getLogger(__name__)


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
