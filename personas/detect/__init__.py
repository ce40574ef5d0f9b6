"""Detectors: score responses as misaligned from a few SAE features, evaluated on questions they were not fit on.

* `estimators`: `PersonaDetector` (top-k features ranked on training rows, one feature or a small logistic model)
  and `DiffMeansProbe` (the dense difference-of-means baseline), scikit-learn classifiers that save, load and
  score raw responses through the site they recorded; `load_detector`.
* `inputs`: the matrices and labels the estimators accept, checked with errors that name what was wrong.
* `metrics`: `auroc_with_ci` (DeLong interval) and `calibrate_threshold` (Youden's J on training scores).
* `evaluation`: `cross_validate_by_group` (no question in both the training and the test rows).
* `files`: the saved detector's files and their checks.

`fit_detector` (`personas.jobs.detect`) goes from data to both, capturing every row once and splitting afterwards.
The names below are the public face; import them from ``personas.detect``.
"""

from personas.config import DetectorConfig
from personas.detect.estimators import DiffMeansProbe, NotFittedError, PersonaDetector, load_detector
from personas.detect.evaluation import cross_validate_by_group
from personas.detect.metrics import auroc_with_ci, calibrate_threshold

__all__ = [
    "DetectorConfig", "DiffMeansProbe", "NotFittedError", "PersonaDetector", "auroc_with_ci", "calibrate_threshold",
    "cross_validate_by_group", "load_detector",
]
