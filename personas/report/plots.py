"""Figures for rankings, detectors and steering: each function returns a matplotlib `Figure`.

Figures are built with `matplotlib.figure.Figure` directly, never through ``pyplot``, so they work under any
backend (Agg on a server, inline in Jupyter) and leave no global state behind. In a notebook, a returned figure
shows as an image when it is the last expression of a cell (Jupyter renders a `Figure` by itself; no
``%matplotlib inline`` needed); elsewhere save it with ``fig.savefig("volcano.png")`` or embed it with
`figure_to_base64`.

* `volcano`: effect size against -log10 q-value, significant features marked, the best ones annotated.
* `auroc_intervals`: the AUROC of the top features with their confidence intervals (a forest plot); the
  within-question AUROC when the ranking has it.
* `feature_distributions`: the pooled activation of a feature (or any score) in the two classes.
* `roc_curves`: ROC curves of several scorers (a detector, a baseline...) with their AUROC in the legend.
* `group_auroc_scatter`: pooled against within-question AUROC, to spot features that track the question asked.
* `dose_response`: a steering sweep, a measured quantity against the steering coefficient.
* `paired_differences`: model diffing, the mean change of the top latents with paired confidence intervals.

Colours mean the same in every figure, in the HTML report and in the examples (`PALETTE`): red for the
misaligned side (higher in misaligned responses, rose after fine-tuning), blue for the aligned side, grey for
what is not significant; other lines (scorers, steered features) take `SERIES_COLORS`, which avoid both. Labels
placed on points (feature ids) never overlap: one that would collide with another is moved, or left out.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from personas.errors import PersonasError
from personas.report.style import (
    ALIGNED_COLOR,
    MISALIGNED_COLOR,
    NEUTRAL_COLOR,
    PALETTE,
    REFERENCE_COLOR,
    SERIES_COLORS,
    direction_colors,
    figure_to_base64,
    figure_to_bytes,
    make_figure,
    new_figure,
    place_labels,
    style_axes,
    table_column,
)

__all__ = [
    "ALIGNED_COLOR", "MISALIGNED_COLOR", "NEUTRAL_COLOR", "PALETTE", "SERIES_COLORS", "auroc_intervals", "dose_response",
    "feature_distributions", "figure_to_base64", "figure_to_bytes", "group_auroc_scatter", "make_figure",
    "paired_differences",
    "roc_curve", "roc_curves", "volcano",
]

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------ rankings


def volcano(
    ranking: Any,
    *,
    effect: str = "cohens_d",
    q: str = "q_value",
    alpha: float | None = None,
    annotate: int = 8,
    label_column: str | None = None,
    contrast: tuple[str, str] = ("misaligned", "aligned"),
    direction_labels: tuple[str, str] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Effect size against -log10 q-value, one point per feature.

    Args:
        ranking: a `Ranking` (or any DataFrame with ``feature``, the ``effect`` column and ``q``), or the table of
            `personas.jobs.diff_models` (``effect="effect_size"``, ``contrast=("fine-tuned", "base")``).
        effect: the column on the x axis: ``cohens_d`` (default), ``mean_diff``, ``auroc``, ``effect_size``...
        q: the column on the y axis, plotted as -log10; q-values of 0 are clipped to the smallest positive one.
        alpha: false discovery rate drawn as a horizontal line; default ``ranking.meta["alpha"]``, else 0.05.
            Points with q < alpha are coloured by the sign of the effect (red: higher on the first side).
        annotate: label the ``annotate`` best significant rows of the ranking (its own order) with their feature
            id (the best 3 rows when none is significant); a label that would overlap another is left out.
        label_column: column with a name to annotate with instead of the feature id (e.g. ``name``).
        contrast: the two sides the effect compares, first minus second, for the axis label.
        direction_labels: legend of significant points with positive and with negative effect; default
            ``("higher when misaligned", "higher when aligned")`` from ``contrast``.
    """
    x = table_column(ranking, effect, "volcano")
    qv = table_column(ranking, q, "volcano")
    if alpha is None:
        alpha = float((getattr(ranking, "meta", None) or {}).get("alpha", 0.05))
    first, second = contrast
    if direction_labels is None:
        direction_labels = (f"higher when {first}", f"higher when {second}")
    positive = qv[np.isfinite(qv) & (qv > 0)]
    floor = positive.min() if positive.size else 1e-300
    y = -np.log10(np.clip(np.nan_to_num(qv, nan=1.0), floor, 1.0))
    sig = qv < alpha
    centre = 0.5 if effect in ("auroc", "group_auroc") else 0.0
    fig, ax = new_figure((6.4, 4.6), ax)
    style_axes(ax)
    ax.scatter(x[~sig], y[~sig], s=9, color=NEUTRAL_COLOR, alpha=0.55, linewidths=0, label="not significant")
    up, down = sig & (x > centre), sig & (x <= centre)
    ax.scatter(x[up], y[up], s=16, color=MISALIGNED_COLOR, alpha=0.85, linewidths=0,
               label=f"{direction_labels[0]} ({int(up.sum())})")
    ax.scatter(x[down], y[down], s=16, color=ALIGNED_COLOR, alpha=0.85, linewidths=0,
               label=f"{direction_labels[1]} ({int(down.sum())})")
    ax.axhline(-np.log10(alpha), color=REFERENCE_COLOR, linestyle="--", linewidth=0.9)
    ax.text(1.0, -np.log10(alpha), f"q = {alpha:g} ", va="bottom", ha="right", fontsize=8, color=REFERENCE_COLOR,
            transform=ax.get_yaxis_transform())
    ax.axvline(centre, color=REFERENCE_COLOR, linewidth=0.6)
    ax.set_xlabel({
        "cohens_d": f"Cohen's d ({first} - {second})",
        "mean_diff": f"mean difference ({first} - {second})",
        "effect_size": f"paired effect size d_z ({first} - {second})",
        "auroc": f"AUROC ({first} vs {second})",
        "group_auroc": f"AUROC within questions ({first} vs {second})",
    }.get(effect, effect))
    ax.set_ylabel(f"-log10 {q.replace('_', '-')}")
    ax.set_title(title or f"{len(x)} features, {int(sig.sum())} significant at q < {alpha:g}", fontsize=10)
    ax.legend(fontsize=8, frameon=True, framealpha=0.85, loc="best")
    names = ranking[label_column] if label_column and label_column in ranking.columns else ranking["feature"]
    # the best rows of the ranking, significant ones only (a crowd of labels at the bottom helps nobody)
    picked = list(np.flatnonzero(sig)[: int(annotate)]) or list(range(min(3, int(annotate), len(x))))
    place_labels(ax, [(x[i], y[i], str(names.iloc[i])) for i in picked])
    return fig


def auroc_intervals(
    ranking: Any, *, n: int = 15, column: str | None = None, ax: Axes | None = None, title: str | None = None
) -> Figure:
    """The AUROC of the ``n`` best features with their confidence intervals (``<column>_lo`` / ``<column>_hi``).

    ``column`` defaults to ``group_auroc`` (the AUROC within questions, the statistic a grouped ranking is sorted
    and tested by) when the ranking has it, else ``auroc``. Red: higher in misaligned responses; blue: in aligned.
    """
    if column is None:
        column = "group_auroc" if "group_auroc" in ranking.columns else "auroc"
    top = ranking.head(n)
    value = table_column(top, column, "auroc_intervals")
    lo_name, hi_name = f"{column}_lo", f"{column}_hi"
    lo = np.asarray(top[lo_name], dtype=float) if lo_name in top.columns else value
    hi = np.asarray(top[hi_name], dtype=float) if hi_name in top.columns else value
    sig = np.asarray(top["significant"], dtype=bool) if "significant" in top.columns else np.zeros(len(top), bool)
    labels = [f"#{f}" for f in top["feature"]]
    fig, ax = new_figure((6.0, 0.28 * len(top) + 1.3), ax)
    style_axes(ax)
    rows = np.arange(len(top))[::-1]
    colors = direction_colors(value > 0.5)
    ax.hlines(rows, lo, hi, colors=colors, linewidth=1.6)
    ax.scatter(value, rows, c=colors, s=[36 if s else 18 for s in sig], zorder=3,
               edgecolors=["black" if s else "none" for s in sig], linewidths=0.8)
    ax.axvline(0.5, color=REFERENCE_COLOR, linestyle="--", linewidth=0.8)
    ax.set_yticks(rows, labels, fontsize=8)
    ax.set_xlim(min(0.0, np.nanmin(lo) - 0.02), max(1.0, np.nanmax(hi) + 0.02))
    what = "AUROC within questions" if column == "group_auroc" else column.replace("_", " ")
    ax.set_xlabel(f"{what} (misaligned vs aligned) with interval; 0.5 = chance")
    ax.set_title(title or f"top {len(top)} features (outlined: significant)", fontsize=10)
    return fig


def _dense_column(features: Any, j: int) -> np.ndarray:
    if hasattr(features, "tocsc"):  # scipy sparse
        return np.asarray(features.tocsc()[:, [j]].toarray()).ravel()
    if hasattr(features, "detach"):  # torch
        features = features.detach().cpu().numpy()
    return np.asarray(features)[:, j]


def feature_distributions(
    features: Any,
    labels: Any,
    feature: int | Sequence[int],
    *,
    bins: int = 30,
    log: bool = False,
    names: Mapping[int, str] | None = None,
    ncols: int = 3,
    class_names: tuple[str, str] = ("aligned", "misaligned"),
    xlabel: str = "pooled activation",
) -> Figure:
    """Histograms of the pooled activation of ``feature`` (or several) in misaligned and aligned responses.

    Args:
        features: [N, F] matrix (numpy, scipy sparse or torch), e.g. ``RankResult.features`` or ``Capture.features``.
        labels: N labels, 1 misaligned / 0 aligned.
        feature: a column index, or a list of them (one panel each).
        log: log-scaled counts, useful for sparse features that are zero in most responses.
        names: optional titles per feature.
        class_names: legend names of label 0 and label 1 (e.g. ``("base", "fine-tuned")`` for model diffing).
        xlabel: what the values are, e.g. ``"detector score (standardised)"`` when the columns are scores.
    """
    labels = np.asarray(labels).astype(int).ravel()
    n_rows = features.shape[0]
    if labels.shape[0] != n_rows:
        raise PersonasError(
            f"feature_distributions got {n_rows} rows of features but {labels.shape[0]} labels; expected one label "
            "per row (pass RankResult.features with RankResult.responses.labels)."
        )
    chosen = [int(feature)] if np.ndim(feature) == 0 else [int(f) for f in feature]  # type: ignore[arg-type]
    bad = [f for f in chosen if not 0 <= f < features.shape[1]]
    if bad:
        raise PersonasError(f"feature(s) {bad} are out of range; the matrix has {features.shape[1]} columns.")
    ncols = max(1, min(ncols, len(chosen)))
    nrows = int(np.ceil(len(chosen) / ncols))
    fig = make_figure((3.6 * ncols + 0.4, 2.8 * nrows + 0.3))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, j in zip(axes, chosen, strict=False):
        style_axes(ax)
        values = _dense_column(features, j)
        edges = np.histogram_bin_edges(values, bins=bins)
        for lab, color, text in ((0, ALIGNED_COLOR, class_names[0]), (1, MISALIGNED_COLOR, class_names[1])):
            v = values[labels == lab]
            active = float((v > 0).mean()) if v.size else 0.0
            ax.hist(v, bins=edges, color=color, alpha=0.55, label=f"{text} (n={v.size}, {active:.0%} > 0)",
                    log=log)
            if v.size:
                ax.axvline(float(v.mean()), color=color, linewidth=1.2, linestyle="--")
        ax.set_title((names or {}).get(j, f"feature {j}"), fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("responses")
        ax.legend(fontsize=7, frameon=False)
    for ax in axes[len(chosen):]:
        ax.set_visible(False)
    return fig


# ------------------------------------------------------------------------------------------------ detectors


def roc_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, float]:
    """(false positive rates, true positive rates, AUROC) of ``scores`` for binary ``labels`` (1 positive).

    The curve is `sklearn.metrics.roc_curve`'s, every threshold kept; tied scores make one step (a diagonal
    segment), so the area equals the tie-aware Mann-Whitney AUROC.
    """
    from sklearn import metrics

    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(int).ravel()
    if s.shape != y.shape:
        raise PersonasError(f"roc_curve got {s.size} scores but {y.size} labels; expected one score per label.")
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise PersonasError(
            f"roc_curve needs both classes; got {n_pos} positive (misaligned) and {n_neg} negative labels."
        )
    if not np.all(np.isfinite(s)):
        raise PersonasError(f"roc_curve got {int((~np.isfinite(s)).sum())} non-finite scores; drop or fill them.")
    fpr, tpr, _ = metrics.roc_curve(y, s, pos_label=1, drop_intermediate=False)
    return fpr, tpr, float(metrics.auc(fpr, tpr))


def roc_curves(
    curves: Mapping[str, tuple[Any, Any]], *, ax: Axes | None = None, title: str | None = None
) -> Figure:
    """ROC curves of several scorers, e.g. ``{"SAE detector": (scores, labels), "diff of means": (...)}``.

    Each value is ``(scores, labels)`` with labels 1 = misaligned; the legend gives each curve's AUROC.
    """
    if not curves:
        raise PersonasError("roc_curves got no curves; pass {name: (scores, labels)} with at least one entry.")
    fig, ax = new_figure((4.8, 4.4), ax)
    style_axes(ax)
    for (name, (scores, labels)), color in zip(curves.items(), SERIES_COLORS * 4, strict=False):
        fpr, tpr, auc = roc_curve(scores, labels)
        ax.plot(fpr, tpr, color=color, linewidth=1.8, label=f"{name} (AUROC {auc:.3f})", drawstyle="default")
    ax.plot([0, 1], [0, 1], color=REFERENCE_COLOR, linestyle="--", linewidth=0.8, label="chance")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate (aligned flagged)")
    ax.set_ylabel("true positive rate (misaligned caught)")
    ax.set_title(title or "ROC", fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    return fig


# ------------------------------------------------------------------------------------------------ steering


_X_CANDIDATES = ("coefficient", "coeff", "alpha", "scale", "strength", "dose")
#: Axis labels of the columns `personas.steering.steer_sweep` writes.
_AXIS_LABELS = {
    "alpha": "steering strength alpha",
    "coefficient": "steering coefficient", "coeff": "steering coefficient", "scale": "steering scale",
    "mean_score": "mean detector score of the generations", "frac_flagged": "share of generations flagged misaligned",
    "projection": "projection on the steered direction", "feature_activation": "activation of the steered feature",
    "misaligned_prob": "P(misaligned) by the detector", "logit_diff": "logit difference",
    "delta_logprob": "change in log-probability", "kl": "KL divergence from the unsteered model",
}
_Y_CANDIDATES = ("mean_score", "frac_flagged", "projection", "feature_activation", "activation", "score", "misaligned_prob",
                 "logit_diff", "delta_logprob", "kl", "value")


def _pick(table: Any, given: str | None, candidates: Sequence[str], what: str) -> str:
    if given is not None:
        if given not in table.columns:
            raise PersonasError(f"dose_response: column {given!r} is not in the table; it has {list(table.columns)}.")
        return given
    for c in candidates:
        if c in table.columns:
            return c
    raise PersonasError(
        f"dose_response could not guess the {what} column among {list(table.columns)}; "
        f"pass {what}='COLUMN' (tried {list(candidates)})."
    )


def dose_response(
    table: Any,
    *,
    x: str | None = None,
    y: str | Sequence[str] | None = None,
    hue: str | None = None,
    err: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """A steering sweep: the measured quantity ``y`` against the steering coefficient ``x``.

    Args:
        table: a DataFrame, e.g. from `personas.steer.steer_sweep`, with one row per coefficient (and per ``hue``
            value), or one row per coefficient and sample (the rows are then averaged, with a standard-error band).
        x: the coefficient column; guessed from ``coefficient``, ``alpha``, ``scale``... when not given.
        y: one column or a list of columns to draw (one line each); guessed when not given.
        hue: a column whose values get separate lines (e.g. ``feature`` or ``direction``).
        err: a column with the half-width of an error band (e.g. ``sem``); when several rows share an x value,
            the band is their standard error instead. Columns ``<y>_lo`` / ``<y>_hi`` are used as a band too
            (for ``mean_score``, ``score_lo`` / ``score_hi`` as `steer_sweep` writes them).
        xlabel, ylabel: axis labels; by default they say what `steer_sweep`'s columns measure.
    """
    import pandas as pd

    frame = pd.DataFrame(table)
    xcol = _pick(frame, x, _X_CANDIDATES, "x")
    ycols = [y] if isinstance(y, str) else list(y) if y is not None else [_pick(frame, None, _Y_CANDIDATES, "y")]
    for c in ycols:
        _pick(frame, c, (), "y")
    groups = [(None, frame)] if hue is None else list(frame.groupby(_pick(frame, hue, (), "hue"), sort=True))
    fig, ax = new_figure((5.6, 4.0), ax)
    style_axes(ax)
    colors = iter(SERIES_COLORS * 8)
    for ycol in ycols:
        for key, part in groups:
            color = next(colors)
            label = ycol if key is None else (f"{hue}={key}" if len(ycols) == 1 else f"{ycol}, {hue}={key}")
            stats = part.groupby(xcol, sort=True)[ycol].agg(["mean", "count", "std"])
            xs, mean = stats.index.to_numpy(dtype=float), stats["mean"].to_numpy(dtype=float)
            ax.plot(xs, mean, marker="o", markersize=4, color=color, linewidth=1.6, label=label)
            band = None
            if (stats["count"] > 1).any():
                sem = (stats["std"] / np.sqrt(stats["count"])).fillna(0.0).to_numpy(dtype=float)
                band = (mean - sem, mean + sem)
            elif err is not None and err in part.columns:
                e = part.groupby(xcol, sort=True)[err].mean().to_numpy(dtype=float)
                band = (mean - e, mean + e)
            else:
                for stem in (ycol, ycol.removeprefix("mean_")):  # steer_sweep: mean_score with score_lo/score_hi
                    if f"{stem}_lo" in part.columns and f"{stem}_hi" in part.columns:
                        lo = part.groupby(xcol, sort=True)[f"{stem}_lo"].mean().to_numpy(dtype=float)
                        hi = part.groupby(xcol, sort=True)[f"{stem}_hi"].mean().to_numpy(dtype=float)
                        band = (lo, hi)
                        break
            if band is not None:
                ax.fill_between(xs, band[0], band[1], color=color, alpha=0.18, linewidth=0)
    ax.axvline(0.0, color=REFERENCE_COLOR, linewidth=0.6)
    ax.set_xlabel(xlabel or _AXIS_LABELS.get(xcol, f"steering {xcol}"))
    ax.set_ylabel(ylabel or (_AXIS_LABELS.get(ycols[0], ycols[0]) if len(ycols) == 1 else "value"))
    ax.set_title(title or "dose-response", fontsize=10)
    if len(ycols) > 1 or hue is not None:
        ax.legend(fontsize=8, frameon=False)
    return fig


def group_auroc_scatter(
    ranking: Any, *, n: int | None = None, annotate: int = 6, ax: Axes | None = None, title: str | None = None
) -> Figure:
    """Pooled AUROC against within-question AUROC (``group_auroc``), one point per feature.

    A feature near the diagonal separates the classes within each question as well as overall. A feature whose
    pooled AUROC is far from 0.5 but whose within-question AUROC is near 0.5 tracks *which question* was asked
    (a topic confound), not how it was answered.
    """
    if "group_auroc" not in ranking.columns:
        raise PersonasError(
            "group_auroc_scatter needs a 'group_auroc' column, which rankings have when responses carry groups "
            f"(question ids); this table has {list(ranking.columns)}."
        )
    top = ranking.head(n) if n else ranking
    x = table_column(top, "auroc", "group_auroc_scatter")
    y = table_column(top, "group_auroc", "group_auroc_scatter")
    sig = np.asarray(top["significant"], dtype=bool) if "significant" in top.columns else np.zeros(len(top), bool)
    fig, ax = new_figure((4.8, 4.4), ax)
    style_axes(ax)
    up, down = sig & (y > 0.5), sig & (y <= 0.5)
    ax.scatter(x[~sig], y[~sig], s=10, color=NEUTRAL_COLOR, alpha=0.6, linewidths=0, label="not significant")
    ax.scatter(x[up], y[up], s=14, color=MISALIGNED_COLOR, alpha=0.8, linewidths=0,
               label="significant, higher when misaligned")
    ax.scatter(x[down], y[down], s=14, color=ALIGNED_COLOR, alpha=0.8, linewidths=0,
               label="significant, higher when aligned")
    ax.plot([0, 1], [0, 1], color=REFERENCE_COLOR, linestyle="--", linewidth=0.8)
    ax.axhline(0.5, color=REFERENCE_COLOR, linewidth=0.5)
    ax.axvline(0.5, color=REFERENCE_COLOR, linewidth=0.5)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("AUROC, all responses pooled")
    ax.set_ylabel("AUROC within questions (group_auroc)")
    ax.set_title(title or f"topic confounds: {len(top)} features", fontsize=10)
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    place_labels(ax, [(x[i], y[i], str(top["feature"].iloc[i])) for i in range(min(int(annotate), len(x)))])
    return fig


# ------------------------------------------------------------------------------------------------ diffing


def paired_differences(
    table: Any,
    *,
    n: int = 15,
    n_pairs: int | None = None,
    level: float = 0.95,
    contrast: tuple[str, str] = ("fine-tuned", "base"),
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Model diffing: the mean paired change of the ``n`` first latents of a diff table, with t intervals.

    Each row is one latent: ``mean_diff`` (first minus second of ``contrast``, the same conversations through both
    models) with the interval ``mean_diff +- t * sd_diff / sqrt(n_pairs)`` at ``level``. Red: rose; blue: fell;
    outlined: significant (``q_value`` below the table's alpha). ``n_pairs`` defaults to the table's
    ``attrs["n_pairs"]`` (`personas.scoring.paired.diff_features` records it).
    """
    from scipy import stats

    top = table.head(n)
    mean = table_column(top, "mean_diff", "paired_differences")
    sd = table_column(top, "sd_diff", "paired_differences")
    n_pairs = n_pairs if n_pairs is not None else (getattr(table, "attrs", None) or {}).get("n_pairs")
    if n_pairs is None or int(n_pairs) < 2:
        raise PersonasError(
            f"paired_differences needs the number of paired conversations (got n_pairs={n_pairs}); pass "
            "n_pairs=len(conversations), or the table diff_features returned (its attrs hold it)."
        )
    half = stats.t.ppf(0.5 + level / 2, int(n_pairs) - 1) * sd / np.sqrt(int(n_pairs))
    alpha = float((getattr(table, "attrs", None) or {}).get("alpha", 0.05))
    sig = (np.asarray(top["q_value"], dtype=float) < alpha) if "q_value" in top.columns else np.zeros(len(top), bool)
    fig, ax = new_figure((6.0, 0.28 * len(top) + 1.3), ax)
    style_axes(ax)
    rows = np.arange(len(top))[::-1]
    colors = direction_colors(mean > 0)
    ax.hlines(rows, mean - half, mean + half, colors=colors, linewidth=1.6)
    ax.scatter(mean, rows, c=colors, s=[36 if s else 18 for s in sig], zorder=3,
               edgecolors=["black" if s else "none" for s in sig], linewidths=0.8)
    ax.axvline(0.0, color=REFERENCE_COLOR, linestyle="--", linewidth=0.8)
    ax.set_yticks(rows, [f"#{f}" for f in top["feature"]], fontsize=8)
    first, second = contrast
    ax.set_xlabel(f"mean change in activation, {first} - {second} ({level:.0%} interval, {int(n_pairs)} pairs)")
    ax.set_title(title or f"top {len(top)} latents by change (outlined: significant at q < {alpha:g})", fontsize=10)
    return fig
