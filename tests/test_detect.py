"""PersonaDetector, the dense baseline, held-out evaluation by question, save/load and the detect CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from personas.config import CaptureConfig
from personas.detect import (
    DetectorConfig,
    DiffMeansProbe,
    PersonaDetector,
    auroc_with_ci,
    calibrate_threshold,
    load_detector,
)
from personas.errors import DataError, PersonasError
from personas.jobs.detect import fit_detector

from conftest import TOY_HOOK


@pytest.fixture(scope="module")
def planted_capture(toy_model, planted_sae, planted_data):
    from personas.capturing import capture

    return capture(toy_model, planted_data["prompt"], planted_data["response"], hooks=[TOY_HOOK], sae=planted_sae,
                   progress=False)


@pytest.fixture(scope="module")
def group_split(planted_data):
    groups = np.asarray(planted_data["group"])
    test = np.isin(groups, ["q0", "q2"])
    return np.flatnonzero(~test), np.flatnonzero(test)


def test_detector_picks_the_planted_feature_and_generalises_to_new_questions(planted_capture, planted_data, group_split):
    train, test = group_split
    X = planted_capture.features
    y = np.asarray(planted_data["label"])
    groups = np.asarray(planted_data["group"])
    det = PersonaDetector(k=3).fit(X[train], y[train], groups[train])
    assert det.features_[0] == 7 and len(det.features_) == 3
    ev = det.evaluate(X[test], y[test])
    assert ev["auroc"] > 0.95
    lo, hi = ev["auroc_ci"]
    assert lo <= ev["auroc"] <= hi and hi <= 1.0
    assert ev["accuracy"] > 0.7 and ev["k"] == 3 and ev["features"][0] == 7
    assert ev["n"] == len(test) and ev["n_misaligned"] + ev["n_aligned"] == len(test)
    single = PersonaDetector(method="single").fit(X[train], y[train], groups[train])
    assert single.features_.tolist() == [7] and single.evaluate(X[test], y[test])["auroc"] > 0.95


def test_features_are_chosen_on_training_rows_only():
    rng = np.random.default_rng(0)
    n = 200
    y = np.tile([0, 1], n // 2)
    train = np.arange(n) < 100
    X = rng.normal(size=(n, 5))
    X[~train, 0] += 4 * y[~train]  # informative only in the test rows
    X[train, 1] += 4 * y[train]  # informative only in the training rows
    det = PersonaDetector(k=1).fit(X[train], y[train])
    assert det.features_.tolist() == [1]


def test_single_feature_detector_uses_the_sign_of_its_auroc():
    rng = np.random.default_rng(1)
    y = np.tile([0, 1], 60)
    X = rng.normal(size=(120, 4))
    X[:, 2] -= 3 * y  # lower on misaligned rows
    det = PersonaDetector(method="single").fit(X, y)
    assert det.features_.tolist() == [2] and det.signs_.tolist() == [-1.0]
    assert det.evaluate(X, y)["auroc"] > 0.95


def test_save_and_load_round_trip(planted_capture, planted_data, tmp_path):
    X = planted_capture.features
    y = np.asarray(planted_data["label"])
    det = PersonaDetector(k=4, C=0.5).fit(X, y)
    det.provenance = {"hook": TOY_HOOK, "sae": {"spec": "in-memory"}}
    det.save(tmp_path / "det")
    assert (tmp_path / "det" / "detector.json").is_file() and (tmp_path / "det" / "detector.safetensors").is_file()
    again = PersonaDetector.load(tmp_path / "det")
    np.testing.assert_allclose(again.score(X), det.score(X))
    assert again.threshold_ == det.threshold_ and again.get_params() == det.get_params()
    assert again.provenance["hook"] == TOY_HOOK
    assert isinstance(load_detector(tmp_path / "det"), PersonaDetector)
    meta = json.loads((tmp_path / "det" / "detector.json").read_text())
    assert meta["versions"]["numpy"] and meta["features"] == det.features_.tolist()
    with pytest.raises(PersonasError, match="detector.json"):
        PersonaDetector.load(tmp_path)
    with pytest.raises(DataError, match="columns"):
        again.score(np.zeros((3, 5)))


def test_auroc_with_ci_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    s = rng.normal(size=300) + y
    s[:20] = 0.0  # ties
    auc, lo, hi = auroc_with_ci(s, y)
    assert auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert lo < auc < hi and 0.05 < hi - lo < 0.2


def test_threshold_is_calibrated_between_separable_classes():
    scores = np.array([0.1, 0.2, 0.3, 0.9, 1.0, 1.1])
    y = np.array([0, 0, 0, 1, 1, 1])
    t = calibrate_threshold(scores, y)
    assert 0.3 < t < 0.9
    assert calibrate_threshold(scores, y, "accuracy") == pytest.approx(t)


def test_dense_baseline_is_the_difference_of_means_projection():
    rng = np.random.default_rng(3)
    y = np.tile([0, 1], 50)
    X = rng.normal(size=(100, 6)) + np.outer(y, [2, 0, 0, 0, 0, 1])
    probe = DiffMeansProbe().fit(X, y)
    diff = X[y == 1].mean(0) - X[y == 0].mean(0)
    np.testing.assert_allclose(probe.direction_, diff / np.linalg.norm(diff))
    np.testing.assert_allclose(probe.score(X), X @ probe.direction_)
    assert probe.evaluate(X, y)["auroc"] > 0.9


def test_fit_detector_holds_out_questions_and_captures_once(toy_model, planted_sae, planted_data, tmp_path,
                                                             monkeypatch):
    import importlib

    job_module = importlib.import_module("personas.jobs.detect")
    calls = []
    original = job_module.run_capture
    monkeypatch.setattr(job_module, "run_capture", lambda *a, **k: calls.append(1) or original(*a, **k))
    fit_detector(
        pd.DataFrame(planted_data), config=DetectorConfig(k=3, holdout_by="group", test_fraction=0.5, seed=0, cv_folds=2),
        capture=CaptureConfig(hook=TOY_HOOK), sae=planted_sae, model=toy_model, out=tmp_path, progress=False,
    )
    assert len(calls) == 1
    ev = json.loads((tmp_path / "eval.json").read_text())
    for key in ("auroc", "auroc_ci", "k", "features", "sae", "dense_baseline", "split"):
        assert key in ev
    assert ev["split"]["groups_in_both"] == []
    cv = ev["cross_validation"]
    assert len(cv["folds"]) == 2 and cv["sae_auroc"]["mean"] > 0.9
    assert sorted(g for fold in cv["folds"] for g in fold["test_groups"]) == ["q0", "q1", "q2", "q3"]
    assert not set(ev["split"]["train_groups"]) & set(ev["split"]["test_groups"])
    assert ev["features"][0] == 7 and ev["auroc"] > 0.9
    assert 0.0 <= ev["dense_baseline"]["auroc"] <= 1.0 and ev["dense_baseline"]["d"] == toy_model.d_model
    assert (tmp_path / "detector" / "detector.json").is_file() and (tmp_path / "dense_baseline").is_dir()
    scores = pd.read_csv(tmp_path / "test_scores.csv")
    assert set(scores["group"]) == set(ev["split"]["test_groups"])
    det = PersonaDetector.load(tmp_path / "detector")
    assert det.provenance["hook"] == TOY_HOOK and det.provenance["sae"]["d_sae"] == 64
    # the saved detector scores raw responses through its own site
    s = det.score_responses(["what should i do ?"] * 2, ["hurt them and lie", "rest and drink water"],
                            model=toy_model, sae=planted_sae)
    assert s[0] > s[1]
    assert isinstance(load_detector(tmp_path / "dense_baseline"), DiffMeansProbe)


def test_fit_detector_with_a_separate_test_file(toy_model, planted_sae, planted_data):
    frame = pd.DataFrame(planted_data)
    train, test = frame[frame["group"].isin(["q1", "q3"])], frame[frame["group"].isin(["q0", "q2"])]
    result = fit_detector(train, test, config=DetectorConfig(k=2), capture=CaptureConfig(hook=TOY_HOOK),
                          sae=planted_sae, model=toy_model, progress=False)
    assert result.evaluation["split"]["mode"] == "file"
    assert result.evaluation["sae"]["n"] == len(test)


def test_config_rejects_bad_values():
    with pytest.raises(PersonasError, match="k=0"):
        DetectorConfig(k=0)
    with pytest.raises(PersonasError, match="method"):
        DetectorConfig(method="forest")
    with pytest.raises(PersonasError, match="cv_folds"):
        DetectorConfig(cv_folds=1)


def test_detect_cli_on_a_local_folder(tmp_path, toy_tokenizer, planted_data, capsys):
    from personas.cli.main import main
    from personas.testing import save_toy_hf_model

    folder = save_toy_hf_model(tmp_path / "tiny", toy_tokenizer, seed=1)
    data = tmp_path / "data.jsonl"
    pd.DataFrame(planted_data).to_json(data, orient="records", lines=True)
    out = tmp_path / "out"
    code = main(["detect", "--train", str(data), "--holdout-by", "group", "--test-fraction", "0.5", "--k", "3",
                 "--model", str(folder), "--hook", "blocks.0.hook_resid_pre", "--sae", "none", "--out", str(out),
                 "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "held-out AUROC" in printed and "dense baseline" in printed
    ev = json.loads((out / "eval.json").read_text())
    assert ev["k"] == 3 and len(ev["auroc_ci"]) == 2 and ev["sae_info"] is None
    assert main(["detect", "--train", str(data), "--model", str(folder), "--sae", "none", "--quiet"]) == 2
    assert "--holdout-by group" in capsys.readouterr().err
