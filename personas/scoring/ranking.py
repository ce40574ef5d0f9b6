"""Score every SAE feature for how well it separates misaligned (label 1) from aligned (label 0) responses.

This module owns the *score* step's entry point: given a feature matrix (n_responses, n_features) and labels,
`rank_features` computes, for every feature at once,

- the AUROC (exact, with ties: most SAE activations are exactly zero) and a DeLong confidence interval,
- the mean difference (misaligned minus aligned), Cohen's d and Hedges' g,
- the firing rate in each class and the log odds ratio of firing,
- the Mann-Whitney U p-value (tie-corrected normal approximation) and the Welch t-test p-value,
- Benjamini-Hochberg q-values over all tested features,

and, when ``groups`` (the question each response answers) is given, a stratified test (van Elteren) and a
within-question AUROC, so that a feature that only marks a question whose answers happen to be mostly
misaligned is not reported as significant.

Entry points
------------
- :func:`rank_features` -> :class:`Ranking` (a ``pandas.DataFrame`` subclass, one row per feature, best first).
- :data:`KEYS`: the ranking keys; :data:`SCORE_FUNCTIONS`: pure ``(X, y) -> (scores, pvalues)`` functions,
  scikit-learn filter style; :func:`feature_metrics`: every metric column, unsorted.
- :func:`build_ranking`: metric columns -> `Ranking` (shared with `personas.scoring.streaming` and
  `personas.scoring.binned`).

How it is computed: inputs are checked by `personas.scoring.checks` (numpy, scipy sparse, torch; sparse input
stays sparse), the rank statistics and moments come from one pass of `personas.scoring.kernels` over column blocks,
and `personas.scoring.metrics` turns them into the columns.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from personas.errors import PersonasError
from personas.scoring.checks import (
    check_features,
    check_groups,
    check_labels,
    check_names,
    iter_blocks,
)
from personas.scoring.checks import check_rank_args as _check_args
from personas.scoring.kernels import group_bits, rank_pass
from personas.scoring.metrics import METHOD_NOTES, benjamini_hochberg, metrics_from_stats

logger = logging.getLogger(__name__)

__all__ = [
    "KEYS",
    "SCORE_FUNCTIONS",
    "Ranking",
    "build_ranking",
    "check_rank_args",
    "feature_metrics",
    "rank_features",
]


# --------------------------------------------------------------------------------------------------------------
# Ranking keys and score functions
# --------------------------------------------------------------------------------------------------------------


def _neglog10(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return -np.log10(p)


def _auroc_key(m: dict[str, np.ndarray]) -> np.ndarray:
    return np.abs(m.get("group_auroc", m["auroc"]) - 0.5)


# key -> (score from the metric columns (higher = more separating), name of the matching p-value column)
KEYS: dict[str, tuple[Callable[[dict[str, np.ndarray]], np.ndarray], str]] = {
    "auroc": (_auroc_key, "p_value"),
    "cohens_d": (lambda m: np.abs(m["cohens_d"]), "welch_p"),
    "mean_diff": (lambda m: np.abs(m["mean_diff"]), "welch_p"),
    "log_odds": (lambda m: np.abs(m["log_odds"]), "p_value"),
    "p_value": (lambda m: _neglog10(m["p_value"]), "p_value"),
    "welch_p": (lambda m: _neglog10(m["welch_p"]), "welch_p"),
}
"""Ranking keys. Each maps to a score where higher means more separating, and to its p-value column:

- ``auroc`` (default): ``|AUROC - 0.5|``, using ``group_auroc`` when groups are given; p-value: Mann-Whitney
  (van Elteren when grouped).
- ``cohens_d``: ``|d|``; ``mean_diff``: ``|mean difference|``; both with the Welch p-value.
- ``log_odds``: ``|log odds ratio of firing|``, with ``p_value``.
- ``p_value`` / ``welch_p``: ``-log10(p)``.

Ties of the score are broken by the p-value (smaller first), then by the feature index.
"""


def check_rank_args(key: str, alpha: float, min_frac_active: float, ci_level: float) -> None:
    """Raise a `PersonasError` naming the argument when a ranking argument is out of its range."""
    _check_args(key, alpha, min_frac_active, ci_level, KEYS)


def _group_codes(groups: Any, shape: tuple[int, int], y: np.ndarray) -> tuple[np.ndarray | None, int | None]:
    if groups is None:
        return None, None
    codes, uniques = check_groups(groups, shape, y)
    return codes, len(uniques)


def _metrics(
    features: Any, labels: Any, groups: Any, ci_level: float
) -> tuple[dict[str, np.ndarray], int, int, int | None]:
    x, n, f = check_features(features)
    y = check_labels(labels, (n, f))
    gcodes, n_groups = _group_codes(groups, (n, f), y)
    max_width = None if n_groups is None else (1 << (31 - group_bits(n_groups))) - 1
    moments, rank = rank_pass(iter_blocks(x, n, f, max_width), y, f, gcodes, n_groups or 1)
    n1 = int(y.sum())
    return metrics_from_stats(moments, rank, n1, n - n1, ci_level, gcodes is not None), n1, n - n1, n_groups


def feature_metrics(
    features: Any, labels: Any, groups: Any = None, ci_level: float = 0.95
) -> tuple[dict[str, np.ndarray], int, int]:
    """Every metric column for every feature (unsorted, unfiltered), and the class sizes ``(n_pos, n_neg)``."""
    metrics, n1, n0, _ = _metrics(features, labels, groups, ci_level)
    return metrics, n1, n0


def _make_score_function(key: str) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    score_of, p_col = KEYS[key]

    def score(X: Any, y: Any, groups: Any = None) -> tuple[np.ndarray, np.ndarray]:
        metrics, _, _ = feature_metrics(X, y, groups)
        return score_of(metrics), metrics[p_col]

    score.__name__ = f"{key}_score"
    score.__qualname__ = score.__name__
    score.__doc__ = (
        f"Score every column of X by ranking key {key!r}; returns (scores, pvalues), higher score = more "
        f"separating (p-values from the {p_col!r} column). Pass groups= for the stratified version."
    )
    return score


SCORE_FUNCTIONS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    k: _make_score_function(k) for k in KEYS
}
"""Pure score functions ``(X, y, groups=None) -> (scores, pvalues)`` by key name (scikit-learn filter style)."""


# --------------------------------------------------------------------------------------------------------------
# The Ranking result
# --------------------------------------------------------------------------------------------------------------

_DISPLAY_FORMATS = {
    "feature": "{:d}",
    "name": "{}",
    "auroc": "{:.3f}",
    "auroc_lo": "{:.3f}",
    "auroc_hi": "{:.3f}",
    "group_auroc": "{:.3f}",
    "group_auroc_lo": "{:.3f}",
    "group_auroc_hi": "{:.3f}",
    "auroc_max_err": "{:.1e}",
    "mean_diff": "{:.3g}",
    "cohens_d": "{:.2f}",
    "frac_active_pos": "{:.3f}",
    "frac_active_neg": "{:.3f}",
    "log_odds": "{:.2f}",
    "length_corr": "{:+.2f}",
    "p_value": "{:.2e}",
    "q_value": "{:.2e}",
}
_SIGNIFICANT_STYLE = "font-weight: bold; background-color: #fff3cd"


class Ranking(pd.DataFrame):
    """Features ranked best first: a ``pandas.DataFrame`` with one row per tested feature.

    ``meta`` (the frame's ``attrs``) holds ``n_pos``, ``n_neg``, ``key``, ``alpha``, ``ci_level``,
    ``n_features`` (columns given), ``n_features_tested`` (after ``min_frac_active``), ``n_significant``,
    ``grouped``, ``n_groups`` and ``methods`` (how each column was computed). Slicing keeps the type and the
    metadata; ``to_csv`` writes the plain table. In a notebook it shows as a styled table whose header counts come
    from the metadata, so a slice still says how many features were tested and significant.
    """

    @property
    def _constructor(self) -> Callable[..., Ranking]:
        return Ranking

    @property
    def meta(self) -> dict[str, Any]:
        """The ranking's metadata; the same dict as ``DataFrame.attrs`` (pandas carries it through slicing)."""
        return self.attrs

    @meta.setter
    def meta(self, value: dict[str, Any] | None) -> None:
        self.attrs = dict(value or {})

    @property
    def n_pos(self) -> int | None:
        """Number of misaligned (label 1) responses."""
        return self.attrs.get("n_pos")

    @property
    def n_neg(self) -> int | None:
        """Number of aligned (label 0) responses."""
        return self.attrs.get("n_neg")

    @property
    def key(self) -> str | None:
        """The ranking key the rows are sorted by (see `KEYS`)."""
        return self.attrs.get("key")

    @property
    def alpha(self) -> float | None:
        """False discovery rate behind the `significant` column."""
        return self.attrs.get("alpha")

    @property
    def n_features_tested(self) -> int | None:
        """Number of features that entered the test and the FDR correction."""
        return self.attrs.get("n_features_tested")

    def top(self, n: int = 20) -> Ranking:
        """The ``n`` best features."""
        return self.head(n)

    def significant(self) -> Ranking:
        """The features with ``q_value < alpha``, best first."""
        return self[self["significant"].to_numpy(dtype=bool)]

    def persona(self) -> Ranking:
        """The rows whose confound ``kind`` is empty: the ranking without the latents flagged as length, style or
        single-token confounds (see `personas.scoring.confounds.confound_kind`), best first. A view: nothing is dropped from
        the ranking or its files. A ranking without a ``kind`` column (made before it existed, or by
        `rank_features` alone) is returned whole."""
        if "kind" not in self.columns:
            return self
        kind = self["kind"].fillna("").astype(str).str.strip()  # a CSV reads the empty kind back as NaN
        return self[(kind == "").to_numpy()]

    def density_view(
        self, bins: Sequence[float] = (0.0, 0.001, 0.01, 0.1, 0.5, 1.0), per_bin: int = 5
    ) -> Ranking:
        """The best ``per_bin`` features within each band of overall firing rate (``frac_active``).

        Dense, always-on latents and rare ones are not comparable on raw effect sizes; this view shows the
        leaders of each density band side by side, with a ``density_bin`` column such as ``(0.01, 0.1]``.
        """
        edges = np.asarray(bins, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise PersonasError(f"bins must be an increasing sequence of at least 2 edges; got {list(bins)}.")
        band = pd.cut(self["frac_active"], edges, include_lowest=True)
        out = self.assign(density_bin=band.astype(str))
        picked = out.groupby(band, observed=True, sort=True).head(per_bin)
        order = np.lexsort((np.arange(len(picked)), pd.Categorical(band.loc[picked.index]).codes))
        return picked.iloc[order]

    def summary(self) -> str:
        """One line: rows shown of features tested, class sizes, key, and significant features (from the metadata)."""
        m = self.attrs
        if not m:
            return f"Ranking: {len(self)} rows (no metadata)"
        text = (
            f"Ranking: {len(self)} rows of {m.get('n_features_tested', '?')} tested features; "
            f"{m.get('n_pos', '?')} misaligned vs {m.get('n_neg', '?')} aligned responses; key {m.get('key', '?')!r}"
        )
        if m.get("grouped"):
            text += f" within {m.get('n_groups', '?')} questions"
        return text + f"; {m.get('n_significant', '?')} significant at q < {m.get('alpha', '?')}"

    def __repr__(self) -> str:
        return self.summary() + "\n" + super().__repr__()

    def _repr_html_(self) -> str:
        """The notebook display: the summary line and a pandas ``Styler`` table (significant rows highlighted).

        Follows ``pd.options.display.max_rows`` / ``min_rows`` as a DataFrame does; columns without a display
        format are left out of the styled table (the frame itself still holds them).
        """
        max_rows = pd.get_option("display.max_rows")
        shown = self
        if max_rows is not None and len(self) > max_rows:
            shown = self.head(pd.get_option("display.min_rows") or max_rows)
        cols = [c for c in _DISPLAY_FORMATS if c in shown.columns]
        if not cols:
            cols = list(shown.columns)
        table = pd.DataFrame(shown[cols]).set_axis(pd.RangeIndex(1, len(shown) + 1, name="#"), axis=0)
        sig = shown["significant"].to_numpy(dtype=bool) if "significant" in shown.columns else None
        if sig is not None:
            table.insert(0, "", np.where(sig, "\u2605", ""))
        styler = table.style.format({c: _DISPLAY_FORMATS[c] for c in cols if c in _DISPLAY_FORMATS}, na_rep="")
        if sig is not None:
            styler = styler.apply(
                lambda row: [_SIGNIFICANT_STYLE if sig[row.name - 1] else ""] * len(row), axis=1
            )
        alpha = self.attrs.get("alpha", "?")
        head = (
            f"<p>{html.escape(self.summary())} (&#9733; highlighted: q &lt; {html.escape(str(alpha))})</p>"
        )
        more = f"<p>... {len(self) - len(shown)} more rows</p>" if len(shown) < len(self) else ""
        return f"<div>{head}{styler.to_html()}{more}</div>"


_COLUMN_ORDER = (
    "mean_diff",
    "mean_pos",
    "mean_neg",
    "cohens_d",
    "hedges_g",
    "frac_active_pos",
    "frac_active_neg",
    "frac_active",
    "log_odds",
    "p_value",
)


def build_ranking(
    metrics: dict[str, np.ndarray],
    n1: int,
    n0: int,
    *,
    key: str,
    alpha: float,
    min_frac_active: float,
    feature_names: Sequence[Hashable] | None,
    ci_level: float,
    n_groups: int | None,
) -> Ranking:
    """Sort metric columns into a `Ranking`: filter by firing rate, add q-values and significance, break ties."""
    f = metrics["auroc"].size
    score_of, p_col = KEYS[key]
    score = score_of(metrics)
    keep = metrics["frac_active"] >= min_frac_active if min_frac_active > 0 else np.ones(f, dtype=bool)
    idx = np.flatnonzero(keep)
    q = benjamini_hochberg(metrics["p_value"][idx])
    order = np.lexsort((idx, metrics[p_col][idx], -score[idx]))
    sel = idx[order]
    cols: dict[str, Any] = {"feature": sel.astype(np.int64)}
    if feature_names is not None:
        names = list(feature_names)
        cols["name"] = pd.Series([names[i] for i in sel], dtype=object)
    for c in ("auroc", "auroc_lo", "auroc_hi"):
        cols[c] = metrics[c][sel]
    if n_groups is not None:
        for c in ("group_auroc", "group_auroc_lo", "group_auroc_hi"):
            cols[c] = metrics[c][sel]
    for c in _COLUMN_ORDER:
        cols[c] = metrics[c][sel]
    if n_groups is not None:
        cols["mw_p"] = metrics["mw_p"][sel]
    cols["welch_p"] = metrics["welch_p"][sel]
    cols["q_value"] = q[order]
    cols["significant"] = cols["q_value"] < alpha
    cols["score"] = score[sel]
    result = Ranking(cols)
    methods = dict(METHOD_NOTES)
    methods["p_value"] = METHOD_NOTES["p_value_grouped" if n_groups is not None else "p_value"]
    methods["mw_p"] = METHOD_NOTES["p_value"]
    del methods["p_value_grouped"]
    methods["score"] = f"ranking key {key!r}: " + (
        "|group_auroc - 0.5|" if key == "auroc" and n_groups else key
    )
    n_sig = int(cols["significant"].sum())
    result.meta = {
        "n_pos": int(n1),
        "n_neg": int(n0),
        "key": key,
        "alpha": float(alpha),
        "ci_level": float(ci_level),
        "min_frac_active": float(min_frac_active),
        "n_features": int(f),
        "n_features_tested": int(idx.size),
        "n_significant": n_sig,
        "grouped": n_groups is not None,
        "n_groups": n_groups,
        "methods": methods,
    }
    logger.debug("ranked %d of %d features by %s; %d significant", idx.size, f, key, n_sig)
    return result


def rank_features(
    features: Any,
    labels: Any,
    groups: Any = None,
    *,
    key: str = "auroc",
    alpha: float = 0.05,
    min_frac_active: float = 0.0,
    feature_names: Sequence[Hashable] | None = None,
    ci_level: float = 0.95,
) -> Ranking:
    """Rank every feature (column) by how well it separates misaligned from aligned responses.

    Args:
        features: (n_responses, n_features) activations: numpy array, scipy sparse matrix, or torch tensor
            (dense or sparse, CPU or CUDA). Sparse input is never densified. Zero columns give an empty
            `Ranking` with all its columns.
        labels: n_responses labels, 1 (or True) = misaligned, 0 = aligned.
        groups: optional n_responses group ids (the question each response answers). When given, the
            p-value is the van Elteren stratified Wilcoxon test and the default key uses ``group_auroc``, the
            AUROC over (misaligned, aligned) pairs that answer the same question; a feature that only marks
            a question whose answers are mostly misaligned scores 0.5 and is not significant.
        key: ranking key, one of `KEYS`. Default ``"auroc"``: ``|AUROC - 0.5|`` (``|group_auroc - 0.5|``
            with groups), so features that fire *less* on misaligned responses rank too (see the sign of
            ``auroc`` or ``mean_diff``). Ties: smaller p-value first, then lower feature index.
        alpha: false discovery rate; ``significant`` is ``q_value < alpha``.
        min_frac_active: drop features that fire (value != 0) in fewer than this fraction of all responses
            before testing; q-values are computed over the remaining features (this filter ignores labels).
        feature_names: optional names, one per column; adds a ``name`` column.
        ci_level: coverage of the AUROC intervals.

    Returns:
        A `Ranking`, best first. Columns: ``feature`` (column index), [``name``], ``auroc``, ``auroc_lo``,
        ``auroc_hi`` (DeLong interval), [``group_auroc``, ``group_auroc_lo``, ``group_auroc_hi``],
        ``mean_diff`` (misaligned minus aligned), ``mean_pos``, ``mean_neg``, ``cohens_d``, ``hedges_g``,
        ``frac_active_pos``, ``frac_active_neg``, ``frac_active``, ``log_odds``, ``p_value`` (Mann-Whitney,
        or van Elteren with groups), [``mw_p``: the unstratified Mann-Whitney p with groups], ``welch_p``,
        ``q_value`` (Benjamini-Hochberg of ``p_value``), ``significant``, ``score`` (the key's value).

    Dead or constant features get AUROC 0.5, p = 1, zero effect sizes; no column is ever NaN. Cohen's d is
    +-inf only for a feature that is constant within each class but differs between them; it stays finite for
    values of any magnitude (moments are summed in a per-feature power-of-two unit when values are extreme).
    Memory is bounded by the block sizes of `personas.scoring.checks` and `personas.scoring.kernels`.
    """
    check_rank_args(key, alpha, min_frac_active, ci_level)
    x, n, f = check_features(features)
    check_names(feature_names, f)
    metrics, n1, n0, n_groups = _metrics(x, labels, groups, ci_level)
    return build_ranking(
        metrics,
        n1,
        n0,
        key=key,
        alpha=alpha,
        min_frac_active=min_frac_active,
        feature_names=feature_names,
        ci_level=ci_level,
        n_groups=n_groups,
    )
