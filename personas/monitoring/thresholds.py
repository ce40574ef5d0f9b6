"""Thresholds at a false-positive rate: the score above which a monitor flags, chosen on benign answers.

A deployed monitor is tuned to the alarms it raises on ordinary traffic, not to balanced accuracy on a labelled set:
`fpr_threshold` takes the persona scores of benign answers and returns the lowest threshold that flags at most a
share ``fpr`` of them (an answer is flagged when its score is at or above the threshold). With ``n`` benign scores
at most ``floor(fpr * n)`` of them may be flagged; ties are never split (a threshold between equal scores does not
exist), so the rate reached can be below the rate asked. The threshold sits halfway between the last flagged and
the first unflagged distinct score (as `personas.detect.calibrate_threshold` places its thresholds), or, when not
even the highest benign score may be flagged, above the highest by half the gap to the next one.

The rate reached on the calibration answers comes with a Wilson interval (`personas.judging.wilson_interval`):
what a fresh sample of the same traffic would show, read as a binomial share. The threshold is itself chosen on
these answers, so the rate on new benign answers is slightly above the rate reached in expectation (for the k-th
highest of n scores, (k + 1) / (n + 1) rather than k / n): `FprThreshold.expected_fpr` says it. Below 1 / n a
rate cannot be resolved at all; `fpr_threshold` warns when ``n * fpr < 1``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from personas.errors import DataError
from personas.judging.base import wilson_interval

logger = logging.getLogger(__name__)

__all__ = ["FprThreshold", "fpr_threshold"]


@dataclass(frozen=True)
class FprThreshold:
    """A threshold chosen at a false-positive rate: flag when ``score >= threshold``."""

    threshold: float
    fpr_asked: float
    fpr_reached: float
    fpr_interval: tuple[float, float]
    ci_level: float
    n: int
    n_flagged: int

    @property
    def expected_fpr(self) -> float:
        """The expected false-positive rate on new benign answers of the same kind: (k + 1) / (n + 1)."""
        return (self.n_flagged + 1) / (self.n + 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields, and ``expected_fpr``."""
        out = asdict(self)
        out["fpr_interval"] = list(self.fpr_interval)
        out["expected_fpr"] = self.expected_fpr
        return out


def fpr_threshold(scores: Any, fpr: float, ci_level: float = 0.95) -> FprThreshold:
    """The lowest threshold that flags at most a share ``fpr`` of the benign ``scores`` (see the module docstring).

    Raises `DataError` for no scores, non-finite scores, or a rate outside (0, 1).
    """
    from scipy import stats

    values = np.asarray(scores, dtype=np.float64).ravel()
    if values.size == 0:
        raise DataError("fpr_threshold got no benign scores; expected at least one score of a benign answer.")
    if not np.isfinite(values).all():
        raise DataError(f"fpr_threshold got {int((~np.isfinite(values)).sum())} non-finite scores of {values.size}; "
                        "expected finite persona scores (an empty answer has no score: leave it out).")
    if not 0.0 < fpr < 1.0:
        raise DataError(f"fpr={fpr}; expected a false-positive rate strictly between 0 and 1, e.g. 0.01.")
    if not 0.0 < ci_level < 1.0:
        raise DataError(f"ci_level={ci_level}; expected a coverage strictly between 0 and 1, e.g. 0.95.")
    n = int(values.size)
    if n * fpr < 1:
        logger.warning("%d benign answers cannot resolve a false-positive rate of %g (one answer is %.3g): the "
                       "threshold flags none of them; calibrate on at least %d answers", n, fpr, 1 / n,
                       math.ceil(1 / fpr))
    allowed = math.floor(fpr * n + 1e-9)
    distinct = np.unique(values)[::-1]  # highest first
    # counts[j]: benign scores at or above distinct[j]
    counts = np.searchsorted(-np.sort(values)[::-1], -distinct, side="right")
    ok = np.flatnonzero(counts <= allowed)
    if ok.size == 0:  # not even the highest score may be flagged: go above it
        top = distinct[0]
        gap = (distinct[0] - distinct[1]) / 2.0 if distinct.size > 1 else max(abs(top), 1.0) * 1e-6
        threshold, flagged = float(top + gap), 0
    else:
        j = int(ok[-1])
        flagged = int(counts[j])
        threshold = float((distinct[j] + distinct[j + 1]) / 2.0) if j + 1 < distinct.size else float(distinct[j])
    z = float(stats.norm.ppf(0.5 + ci_level / 2.0))
    lo, hi = wilson_interval(flagged, n, z)
    return FprThreshold(threshold=threshold, fpr_asked=float(fpr), fpr_reached=flagged / n, fpr_interval=(lo, hi),
                        ci_level=float(ci_level), n=n, n_flagged=flagged)
