"""Figures: each function returns a drawable Figure without pyplot; the ROC helper matches the ranking's AUROC."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from personas.errors import PersonasError
from personas.report import plots as plot
from personas.scoring.ranking import rank_features


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(0)
    X = rng.exponential(1.0, (120, 40)) * (rng.random((120, 40)) < 0.4)
    y = np.r_[np.ones(60), np.zeros(60)].astype(int)
    X[:60, 5] += 2.0  # a planted feature, higher when misaligned
    groups = np.tile(np.arange(6), 20).astype(str)
    return X, y, rank_features(X, y, groups)


def _is_png(fig) -> bool:
    data = plot.figure_to_bytes(fig, "png")
    return data.startswith(b"\x89PNG") and len(data) > 2000


def test_volcano_marks_and_annotates_the_planted_feature(planted):
    X, y, ranking = planted
    fig = plot.volcano(ranking)
    ax = fig.axes[0]
    assert "significant" in ax.get_title() and "Cohen" in ax.get_xlabel() and "log10" in ax.get_ylabel()
    assert "5" in [t.get_text() for t in ax.texts]  # the planted feature is labelled
    assert _is_png(fig)


def test_volcano_other_effect_and_missing_column(planted):
    _, _, ranking = planted
    assert _is_png(plot.volcano(ranking, effect="auroc", annotate=0))
    with pytest.raises(PersonasError, match="needs a 'nope' column"):
        plot.volcano(ranking, effect="nope")


def test_auroc_intervals_and_group_scatter(planted):
    _, _, ranking = planted
    fig = plot.auroc_intervals(ranking, n=10)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[int(np.argmax(ax.get_yticks()))] == "#5"  # the best feature is drawn at the top
    assert _is_png(fig)
    assert _is_png(plot.group_auroc_scatter(ranking))
    with pytest.raises(PersonasError, match="group_auroc"):
        plot.group_auroc_scatter(ranking.drop(columns=["group_auroc"]))


def test_feature_distributions_accepts_sparse_and_checks_shapes(planted):
    import scipy.sparse

    X, y, _ = planted
    fig = plot.feature_distributions(scipy.sparse.csr_matrix(X), y, [5, 6], names={5: "planted"})
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["planted", "feature 6"]
    assert _is_png(fig)
    with pytest.raises(PersonasError, match="one label per row"):
        plot.feature_distributions(X, y[:-1], 5)
    with pytest.raises(PersonasError, match="out of range"):
        plot.feature_distributions(X, y, 99)


def test_roc_curve_area_equals_tie_aware_auroc(planted):
    X, y, ranking = planted
    for j in (5, 7):  # feature 7 has many tied zeros
        fpr, tpr, auc = plot.roc_curve(X[:, j], y)
        assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
        assert auc == pytest.approx(float(ranking.set_index("feature").loc[j, "auroc"]), abs=1e-9)
    fig = plot.roc_curves({"planted": (X[:, 5], y), "noise": (X[:, 7], y)})
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0].startswith("planted (AUROC 0.9") and labels[-1] == "chance"
    with pytest.raises(PersonasError, match="both classes"):
        plot.roc_curve([0.1, 0.2], [1, 1])


def test_dose_response_guesses_columns_and_averages_samples():
    rng = np.random.default_rng(1)
    table = pd.DataFrame({
        "alpha": np.repeat([-4.0, -2.0, 0.0, 2.0, 4.0], 6),
        "feature": np.tile([3, 3, 3, 9, 9, 9], 5),
        "score": rng.normal(size=30),
    })
    fig = plot.dose_response(table, hue="feature")
    ax = fig.axes[0]
    assert len(ax.lines) == 3  # two features and the zero line
    assert ax.get_xlabel() == "steering strength alpha" and ax.get_ylabel() == "score"
    assert _is_png(fig)
    with pytest.raises(PersonasError, match="could not guess the y column"):
        plot.dose_response(pd.DataFrame({"alpha": [0, 1], "zzz": [1, 2]}))


def test_figures_are_not_registered_with_pyplot(planted):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot.volcano(planted[2])
    assert plt.get_fignums() == before


def test_base64_uri():
    from matplotlib.figure import Figure

    fig = Figure()
    fig.add_subplot().plot([0, 1])
    assert plot.figure_to_base64(fig).startswith("data:image/png;base64,iVBOR")
    assert plot.figure_to_base64(fig, "svg").startswith("data:image/svg+xml;base64,")


def _label_boxes(fig):
    from matplotlib.text import Annotation

    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    return [t.get_window_extent(renderer) for t in fig.axes[0].texts if isinstance(t, Annotation)]


def test_point_labels_never_overlap_even_when_points_crowd():
    # 30 significant features with nearly the same effect and q: their labels would print on top of each other
    rng = np.random.default_rng(3)
    ranking = pd.DataFrame({"feature": np.arange(1000, 1030), "cohens_d": 1.0 + rng.normal(0, 0.01, 30),
                            "q_value": 1e-6 * (1 + rng.random(30) * 0.1), "auroc": 0.8 + rng.normal(0, 0.002, 30),
                            "group_auroc": 0.8 + rng.normal(0, 0.002, 30), "significant": True})
    for fig in (plot.volcano(ranking, annotate=30), plot.group_auroc_scatter(ranking, annotate=30)):
        boxes = _label_boxes(fig)
        assert 1 <= len(boxes) < 30  # the best is labelled, colliding ones are left out
        assert not [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]
        frame = fig.axes[0].get_window_extent(fig.canvas.get_renderer())
        assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 for b in boxes)
    assert plot.volcano(ranking, annotate=30).axes[0].texts[1].get_text() == "1000"  # the first row first


def test_direction_colours_are_the_same_in_every_plot(planted):
    from matplotlib.colors import to_hex

    X, y, ranking = planted
    red, blue = plot.PALETTE["misaligned"], plot.PALETTE["aligned"]
    volcano = plot.volcano(ranking).axes[0]
    legend = {t.get_text().split(" (")[0]: to_hex(h.get_facecolor()[0])
              for t, h in zip(volcano.get_legend().get_texts(), volcano.get_legend().legend_handles, strict=True)}
    assert legend["higher when misaligned"] == red and legend["higher when aligned"] == blue
    forest = plot.auroc_intervals(ranking, n=5).axes[0]
    assert to_hex(forest.collections[1].get_facecolors()[0]) == red  # feature 5, higher when misaligned
    dist = plot.feature_distributions(X, y, 5).axes[0]
    assert {to_hex(p.get_facecolor()) for p in dist.patches} == {red, blue}
    roc = plot.roc_curves({"a": (X[:, 5], y), "b": (X[:, 7], y)}).axes[0]
    assert not {to_hex(line.get_color()) for line in roc.lines} & {red, blue}  # scorers are not directions


def test_interval_plot_shows_within_question_auroc_when_grouped(planted):
    _, _, ranking = planted
    ax = plot.auroc_intervals(ranking, n=5).axes[0]
    assert "within questions" in ax.get_xlabel()
    lo, hi = ax.collections[0].get_segments()[0][:, 0]  # the first row, drawn at the top: feature 5
    best = ranking.iloc[0]
    assert (lo, hi) == pytest.approx((best["group_auroc_lo"], best["group_auroc_hi"]))
    assert "within" not in plot.auroc_intervals(ranking.drop(columns=["group_auroc"]), n=5).axes[0].get_xlabel()


def test_roc_curve_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(size=200) + y, 1)  # many ties
    fpr, tpr, auc = plot.roc_curve(s, y)
    assert auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_axis_labels_say_what_is_plotted(planted):
    X, y, _ = planted
    table = pd.DataFrame({"alpha": [-4.0, 0.0, 4.0], "mean_score": [0.2, 0.4, 0.7], "score_lo": [0.1, 0.3, 0.6],
                          "score_hi": [0.3, 0.5, 0.8], "frac_flagged": [0.0, 0.25, 0.75]})
    ax = plot.dose_response(table, y="mean_score").axes[0]
    assert ax.get_xlabel() == "steering strength alpha" and "detector score" in ax.get_ylabel()
    assert "flagged" in plot.dose_response(table, y="frac_flagged").axes[0].get_ylabel()
    ax = plot.feature_distributions(X, y, 5, xlabel="detector score (standardised)").axes[0]
    assert ax.get_xlabel() == "detector score (standardised)"
    diff = pd.DataFrame({"feature": [1, 2], "effect_size": [1.5, -0.2], "q_value": [1e-4, 0.5]})
    ax = plot.volcano(diff, effect="effect_size", contrast=("fine-tuned", "base"),
                      direction_labels=("rose after fine-tuning", "fell after fine-tuning")).axes[0]
    assert ax.get_xlabel() == "paired effect size d_z (fine-tuned - base)"


def test_paired_differences_draws_t_intervals_of_the_mean_change():
    from scipy import stats

    from personas.scoring.paired import diff_features

    rng = np.random.default_rng(2)
    base = rng.exponential(1.0, (40, 6))
    tuned = base + rng.normal(0, 0.3, (40, 6))
    tuned[:, 2] += 1.0  # rose
    tuned[:, 4] -= 0.8  # fell
    table = diff_features(base, tuned)
    fig = plot.paired_differences(table, n=6)
    ax = fig.axes[0]
    top = [t.get_text() for t in ax.get_yticklabels()][int(np.argmax(ax.get_yticks()))]
    assert top == "#2"
    d = tuned[:, 2] - base[:, 2]
    half = stats.t.ppf(0.975, 39) * d.std(ddof=1) / np.sqrt(40)
    lo, hi = ax.collections[0].get_segments()[0][:, 0]
    assert (lo, hi) == pytest.approx((d.mean() - half, d.mean() + half))
    assert "fine-tuned - base" in ax.get_xlabel() and _is_png(fig)
    bare = table.copy()
    bare.attrs = {}
    with pytest.raises(PersonasError, match="n_pairs"):
        plot.paired_differences(bare, n=3)
    assert _is_png(plot.paired_differences(bare, n=3, n_pairs=40))


def test_figures_show_in_jupyter_without_matplotlib_inline(planted):
    fig = plot.volcano(planted[2])
    assert fig._repr_png_().startswith(b"\x89PNG")
    assert plot.make_figure()._repr_png_().startswith(b"\x89PNG")
