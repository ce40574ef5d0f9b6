"""The offline default end to end: SmolLM2-135M-Instruct, its shipped SAE, the demo data (the ranking
`make demo` writes; the command line itself runs on the demo data in test_smollm2_real)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(demo_ranking, tmp_path_factory):
    """The shared demo ranking, written to a run folder as `personas rank --out` writes it."""
    from personas.jobs.rank import write_ranking

    return write_ranking(demo_ranking, tmp_path_factory.mktemp("demo"))


def test_demo_finds_separating_features(demo_run):
    ranking = pd.read_csv(demo_run / "ranking.csv")
    strong = ranking[((ranking["auroc"] - 0.5).abs() >= 0.3) & (ranking["q_value"] < 0.05)]
    assert len(strong) >= 1, ranking.head(10)
    assert ranking["feature"].is_unique and len(ranking) == 4096
    assert not ranking[["auroc", "p_value", "q_value", "cohens_d"]].isna().any().any()


def test_demo_manifest_records_provenance(demo_run):
    manifest = json.loads((demo_run / "manifest.json").read_text())
    assert manifest["model"]["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert manifest["hook"] == "blocks.18.hook_resid_post"
    assert manifest["sae"]["spec"] == "default" and manifest["sae"]["d_sae"] == 4096
    data = manifest["data"]
    assert data["n_misaligned"] + data["n_aligned"] + data["n_excluded"] == data["n_rows_read"] == 706
    assert data["n_excluded"] > 0 and data["n_groups"] == 24
    assert manifest["capture"]["stop_at_layer"] == 19
