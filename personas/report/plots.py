"""Figures for rankings, detectors and steering: each function returns a matplotlib `Figure`.

Figures are built with `matplotlib.figure.Figure` directly, never through ``pyplot``, so they work under any
backend (Agg on a server, inline in Jupyter) and leave no global state behind. In a notebook, a returned figure
shows as an image when it is the last expression of a cell (run ``%matplotlib inline`` once); elsewhere save it
with ``fig.savefig("volcano.png")`` or embed it with `figure_to_base64`.

* `volcano`: effect size against -log10 q-value, significant features marked, the best ones annotated.
* `auroc_intervals`: the AUROC of the top features with their confidence intervals (a forest plot).
* `feature_distributions`: the pooled activation of a feature in misaligned and aligned responses.
* `roc_curves`: ROC curves of several scorers (a detector, a baseline...) with their AUROC in the legend.
* `group_auroc_scatter`: pooled against within-question AUROC, to spot features that track the question asked.
* `dose_response`: a steering sweep, a measured quantity against the steering coefficient.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from personas.errors import PersonasError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

#: Colours of the two classes, used in every figure: misaligned (label 1) and aligned (label 0).
MISALIGNED_COLOR = "#c0392b"
ALIGNED_COLOR = "#2874a6"
NEUTRAL_COLOR = "#9aa5b1"
_CYCLE = ("#c0392b", "#2874a6", "#27ae60", "#8e44ad", "#d68910", "#17a589", "#5d6d7e", "#a04000")


def _new_figure(figsize: tuple[float, float], ax: Axes | None = None) -> tuple[Figure, Axes]:
    """A fresh figure with one axes, or the figure of ``ax`` when the caller passes axes to draw into."""
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _style(ax: Axes) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(True, color="#e5e8eb", linewidth=0.6)
    ax.set_axisbelow(True)


def _column(table: Any, name: str, what: str) -> np.ndarray:
    if name not in table.columns:
        raise PersonasError(
            f"{what} needs a {name!r} column; the table has {list(table.columns)}. "
            "Pass a Ranking from personas.rank_features / personas.rank, or name the column to use."
        )
    return np.asarray(table[name], dtype=np.float64)


# ------------------------------------------------------------------------------------------------ rankings


def volcano(
    ranking: Any,
    *,
    effect: str = "cohens_d",
    q: str = "q_value",
    alpha: float | None = None,
    annotate: int = 8,
    label_column: str | None = None,
    direction_labels: tuple[str, str] = ("higher when misaligned", "higher when aligned"),
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Effect size against -log10 q-value, one point per feature.

    Args:
        ranking: a `Ranking` (or any DataFrame with ``feature``, the ``effect`` column and ``q``).
        effect: the column on the x axis: ``cohens_d`` (default), ``mean_diff``, ``auroc``, ``log_odds``...
        q: the column on the y axis, plotted as -log10; q-values of 0 are clipped to the smallest positive one.
        alpha: false discovery rate drawn as a horizontal line; default ``ranking.meta["alpha"]``, else 0.05.
            Points with q < alpha are coloured by the sign of the effect (red: higher in misaligned responses).
        annotate: label the ``annotate`` best significant rows of the ranking (its own order) with their feature
            id (the best 3 rows when none is significant).
        label_column: column with a name to annotate with instead of the feature id (e.g. ``name``).
        direction_labels: legend of significant points with positive and with negative effect, e.g.
            ``("rose after fine-tuning", "fell after fine-tuning")`` for a `personas.diff` table.
    """
    x = _column(ranking, effect, "volcano")
    qv = _column(ranking, q, "volcano")
    if alpha is None:
        alpha = float((getattr(ranking, "meta", None) or {}).get("alpha", 0.05))
    positive = qv[np.isfinite(qv) & (qv > 0)]
    floor = positive.min() if positive.size else 1e-300
    y = -np.log10(np.clip(np.nan_to_num(qv, nan=1.0), floor, 1.0))
    sig = qv < alpha
    fig, ax = _new_figure((6.4, 4.6), ax)
    _style(ax)
    ax.scatter(x[~sig], y[~sig], s=9, color=NEUTRAL_COLOR, alpha=0.55, linewidths=0, label="not significant")
    up, down = sig & (x > 0), sig & (x <= 0)
    ax.scatter(x[up], y[up], s=16, color=MISALIGNED_COLOR, alpha=0.85, linewidths=0,
               label=f"{direction_labels[0]} ({int(up.sum())})")
    ax.scatter(x[down], y[down], s=16, color=ALIGNED_COLOR, alpha=0.85, linewidths=0,
               label=f"{direction_labels[1]} ({int(down.sum())})")
    ax.axhline(-np.log10(alpha), color="#566573", linestyle="--", linewidth=0.9)
    ax.text(1.0, -np.log10(alpha), f"q = {alpha:g} ", va="bottom", ha="right", fontsize=8, color="#566573",
            transform=ax.get_yaxis_transform())
    ax.axvline(0.0 if effect != "auroc" else 0.5, color="#566573", linewidth=0.6)
    names = ranking[label_column] if label_column and label_column in ranking.columns else ranking["feature"]
    # the best rows of the ranking, significant ones only (a crowd of labels at the bottom helps nobody)
    picked = [i for i in range(len(x)) if sig[i]][: int(annotate)] or list(range(min(3, int(annotate), len(x))))
    for i in picked:
        if not (np.isfinite(x[i]) and np.isfinite(y[i])):
            continue
        ax.annotate(str(names.iloc[i]), (x[i], y[i]), xytext=(4, 3), textcoords="offset points", fontsize=8,
                    color="#1b2631")
    ax.set_xlabel({"cohens_d": "Cohen's d (misaligned - aligned)", "mean_diff": "mean difference (misaligned - aligned)",
                   "auroc": "AUROC (misaligned vs aligned)"}.get(effect, effect))
    ax.set_ylabel(f"-log10 {q.replace('_', '-')}")
    n = len(x)
    ax.set_title(title or f"{n} features, {int(sig.sum())} significant at q < {alpha:g}", fontsize=10)
    ax.legend(fontsize=8, frameon=True, framealpha=0.85, loc="best")
    return fig


def auroc_intervals(
    ranking: Any, *, n: int = 15, column: str = "auroc", ax: Axes | None = None, title: str | None = None
) -> Figure:
    """The AUROC of the ``n`` best features with their confidence intervals (``auroc_lo`` / ``auroc_hi``).

    With ``column="group_auroc"`` the within-question AUROC is drawn instead (when the ranking has it).
    """
    top = ranking.head(n)
    value = _column(top, column, "auroc_intervals")
    lo_name, hi_name = f"{column}_lo", f"{column}_hi"
    lo = np.asarray(top[lo_name], dtype=float) if lo_name in top.columns else value
    hi = np.asarray(top[hi_name], dtype=float) if hi_name in top.columns else value
    sig = np.asarray(top["significant"], dtype=bool) if "significant" in top.columns else np.zeros(len(top), bool)
    labels = [f"#{f}" for f in top["feature"]]
    fig, ax = _new_figure((6.0, 0.28 * len(top) + 1.3), ax)
    _style(ax)
    rows = np.arange(len(top))[::-1]
    colors = [MISALIGNED_COLOR if v > 0.5 else ALIGNED_COLOR for v in value]
    ax.hlines(rows, lo, hi, colors=colors, linewidth=1.6)
    ax.scatter(value, rows, c=colors, s=[36 if s else 18 for s in sig], zorder=3,
               edgecolors=["black" if s else "none" for s in sig], linewidths=0.8)
    ax.axvline(0.5, color="#566573", linestyle="--", linewidth=0.8)
    ax.set_yticks(rows, labels, fontsize=8)
    ax.set_xlim(min(0.0, np.nanmin(lo) - 0.02), max(1.0, np.nanmax(hi) + 0.02))
    ax.set_xlabel(f"{column.replace('_', ' ')} with interval (0.5 = chance)")
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
) -> Figure:
    """Histograms of the pooled activation of ``feature`` (or several) in misaligned and aligned responses.

    Args:
        features: [N, F] matrix (numpy, scipy sparse or torch), e.g. ``RankResult.features`` or ``Capture.features``.
        labels: N labels, 1 misaligned / 0 aligned.
        feature: a column index, or a list of them (one panel each).
        log: log-scaled counts, useful for sparse features that are zero in most responses.
        names: optional titles per feature.
        class_names: legend names of label 0 and label 1 (e.g. ``("base", "fine-tuned")`` for model diffing).
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
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, len(chosen)))
    nrows = int(np.ceil(len(chosen) / ncols))
    fig = Figure(figsize=(3.6 * ncols + 0.4, 2.8 * nrows + 0.3), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, j in zip(axes, chosen, strict=False):
        _style(ax)
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
        ax.set_xlabel("pooled activation")
        ax.set_ylabel("responses")
        ax.legend(fontsize=7, frameon=False)
    for ax in axes[len(chosen):]:
        ax.set_visible(False)
    return fig


# ------------------------------------------------------------------------------------------------ detectors


def roc_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, float]:
    """(false positive rates, true positive rates, AUROC) of ``scores`` for binary ``labels`` (1 positive).

    Tied scores make one step (a diagonal segment), so the area equals the tie-aware Mann-Whitney AUROC.
    """
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
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tp = np.cumsum(y == 1)[last_of_tie]
    fp = np.cumsum(y == 0)[last_of_tie]
    tpr = np.r_[0.0, tp / n_pos]
    fpr = np.r_[0.0, fp / n_neg]
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
    return fpr, tpr, auc


def roc_curves(
    curves: Mapping[str, tuple[Any, Any]], *, ax: Axes | None = None, title: str | None = None
) -> Figure:
    """ROC curves of several scorers, e.g. ``{"SAE detector": (scores, labels), "diff of means": (...)}``.

    Each value is ``(scores, labels)`` with labels 1 = misaligned; the legend gives each curve's AUROC.
    """
    if not curves:
        raise PersonasError("roc_curves got no curves; pass {name: (scores, labels)} with at least one entry.")
    fig, ax = _new_figure((4.8, 4.4), ax)
    _style(ax)
    for (name, (scores, labels)), color in zip(curves.items(), _CYCLE * 4, strict=False):
        fpr, tpr, auc = roc_curve(scores, labels)
        ax.plot(fpr, tpr, color=color, linewidth=1.8, label=f"{name} (AUROC {auc:.3f})", drawstyle="default")
    ax.plot([0, 1], [0, 1], color="#566573", linestyle="--", linewidth=0.8, label="chance")
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
    """
    import pandas as pd

    frame = pd.DataFrame(table)
    xcol = _pick(frame, x, _X_CANDIDATES, "x")
    ycols = [y] if isinstance(y, str) else list(y) if y is not None else [_pick(frame, None, _Y_CANDIDATES, "y")]
    for c in ycols:
        _pick(frame, c, (), "y")
    groups = [(None, frame)] if hue is None else list(frame.groupby(_pick(frame, hue, (), "hue"), sort=True))
    fig, ax = _new_figure((5.6, 4.0), ax)
    _style(ax)
    colors = iter(_CYCLE * 8)
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
    ax.axvline(0.0, color="#566573", linewidth=0.6)
    ax.set_xlabel(f"steering {xcol}")
    ax.set_ylabel(ycols[0] if len(ycols) == 1 else "value")
    ax.set_title(title or "dose-response", fontsize=10)
    if len(ycols) > 1 or hue is not None:
        ax.legend(fontsize=8, frameon=False)
    return fig


# ------------------------------------------------------------------------------------------------ export


def figure_to_bytes(fig: Figure, fmt: str = "png", *, dpi: int = 110) -> bytes:
    """The figure rendered as ``png`` or ``svg`` bytes (works without pyplot, under any backend)."""
    if fmt not in ("png", "svg"):
        raise PersonasError(f"figure format {fmt!r}; expected 'png' or 'svg'.")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=dpi, metadata={"Software": None} if fmt == "png" else {"Date": None})
    return buffer.getvalue()


def figure_to_base64(fig: Figure, fmt: str = "png", *, dpi: int = 110) -> str:
    """A ``data:`` URI of the figure, for self-contained HTML (``<img src="...">``)."""
    mime = "image/png" if fmt == "png" else "image/svg+xml"
    return f"data:{mime};base64," + base64.b64encode(figure_to_bytes(fig, fmt, dpi=dpi)).decode("ascii")


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
    x = _column(top, "auroc", "group_auroc_scatter")
    y = _column(top, "group_auroc", "group_auroc_scatter")
    sig = np.asarray(top["significant"], dtype=bool) if "significant" in top.columns else np.zeros(len(top), bool)
    fig, ax = _new_figure((4.8, 4.4), ax)
    _style(ax)
    ax.scatter(x[~sig], y[~sig], s=10, color=NEUTRAL_COLOR, alpha=0.6, linewidths=0, label="not significant")
    ax.scatter(x[sig], y[sig], s=14, color=MISALIGNED_COLOR, alpha=0.8, linewidths=0, label="significant")
    ax.plot([0, 1], [0, 1], color="#566573", linestyle="--", linewidth=0.8)
    ax.axhline(0.5, color="#566573", linewidth=0.5)
    ax.axvline(0.5, color="#566573", linewidth=0.5)
    for i in range(min(int(annotate), len(x))):
        ax.annotate(str(top["feature"].iloc[i]), (x[i], y[i]), xytext=(4, 3), textcoords="offset points", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("AUROC, all responses pooled")
    ax.set_ylabel("AUROC within questions (group_auroc)")
    ax.set_title(title or f"topic confounds: {len(top)} features", fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    return fig
