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
    assert ax.get_xlabel() == "steering alpha" and ax.get_ylabel() == "score"
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
