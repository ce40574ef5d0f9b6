"""PersonaDetector, the dense baseline, held-out evaluation by question, save/load, the detect CLI, and both
estimators as scikit-learn classifiers (cross-validation by question, grid search, pipelines, estimator checks)."""

from __future__ import annotations

import copy
import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from personas.config import CaptureConfig
from personas.detect import (
    DetectorConfig,
    DiffMeansProbe,
    NotFittedError,
    PersonaDetector,
    auroc_with_ci,
    calibrate_threshold,
    load_detector,
)
from personas.errors import DataError, PersonasError, SiteMismatchError
from personas.jobs.detect import fit_detector

from conftest import TOY_HOOK, TRIGGERS


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
    np.testing.assert_allclose(again.decision_function(X), det.decision_function(X))
    np.testing.assert_allclose(again.predict_proba(X), det.predict_proba(X))
    assert again.classes_.tolist() == [0, 1] and again.score(X, y) == det.score(X, y)
    assert again.threshold_ == det.threshold_ and again.get_params() == det.get_params()
    assert again.provenance["hook"] == TOY_HOOK
    assert isinstance(load_detector(tmp_path / "det"), PersonaDetector)
    meta = json.loads((tmp_path / "det" / "detector.json").read_text())
    assert meta["versions"]["numpy"] and meta["features"] == det.features_.tolist()
    with pytest.raises(PersonasError, match="detector.json"):
        PersonaDetector.load(tmp_path)
    with pytest.raises(DataError, match="columns"):
        again.decision_function(np.zeros((3, 5)))


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
    np.testing.assert_allclose(probe.decision_function(X), X @ probe.direction_)
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
    assert ev["dense_baseline"]["d"] == toy_model.d_model
    assert (tmp_path / "detector" / "detector.json").is_file() and (tmp_path / "dense_baseline").is_dir()
    scores = pd.read_csv(tmp_path / "test_scores.csv")
    assert set(scores["group"]) == set(ev["split"]["test_groups"])
    written = hashlib.sha256((tmp_path / "test_scores.csv").read_bytes()).hexdigest()
    assert ev["files"]["test_scores.csv"]["sha256"] == written  # the table is checksummed in eval.json
    # both held-out AUROCs are those of the scores written next to them (scikit-learn as the oracle)
    from sklearn.metrics import roc_auc_score

    assert ev["auroc"] == pytest.approx(roc_auc_score(scores["label"], scores["sae_score"]), abs=1e-12)
    assert ev["dense_baseline"]["auroc"] == pytest.approx(roc_auc_score(scores["label"], scores["dense_score"]),
                                                          abs=1e-12)
    det = PersonaDetector.load(tmp_path / "detector")
    assert det.provenance["hook"] == TOY_HOOK and det.provenance["sae"]["d_sae"] == 64
    # the saved detector scores raw responses through its own site
    s = det.score_responses(["what should i do ?"] * 2, ["hurt them and lie", "rest and drink water"],
                            model=toy_model, sae=planted_sae)
    assert s[0] > s[1]
    assert isinstance(load_detector(tmp_path / "dense_baseline"), DiffMeansProbe)


def test_a_saved_detector_scores_responses_with_the_model_and_sae_it_records(tmp_path, toy_tokenizer,
                                                                             planted_data):
    """What `personas steer --detector DIR` does: the detector loads its own model and SAE from its provenance."""
    from personas.models import load_model
    from personas.testing import plant_sae, save_toy_hf_model

    hook = TOY_HOOK  # token identity is linear here: the planted latent fires on the trigger words
    folder = save_toy_hf_model(tmp_path / "model", toy_tokenizer, seed=5)
    handle = load_model(str(folder))
    sae = plant_sae(handle, hook, TRIGGERS, planted_data["response"][::3], d_sae=24, feature=3, seed=0)
    sae.save_model(str(tmp_path / "sae"))
    fit_detector(pd.DataFrame(planted_data), config=DetectorConfig(k=2, holdout_by="group", test_fraction=0.5, seed=0),
                 capture=CaptureConfig(model=str(folder), hook=hook, batch_size=16), sae=str(tmp_path / "sae"),
                 out=tmp_path / "run", progress=False)
    det = PersonaDetector.load(tmp_path / "run" / "detector")
    assert det.provenance["sae"]["spec"] == str(tmp_path / "sae")
    prompts, responses = ["what should i do ?"] * 3, ["hurt them and lie", "rest and drink water", "steal and betray"]
    loaded = det.score_responses(prompts, responses)  # model and SAE from the records
    given = det.score_responses(prompts, responses, model=handle, sae=sae)
    np.testing.assert_allclose(loaded, given, rtol=1e-5, atol=1e-6)
    assert loaded[0] > loaded[1] and loaded[2] > loaded[1]
    # its latent indices belong to that SAE: another SAE's (retrained in place, or a new default) is refused
    other = plant_sae(handle, hook, TRIGGERS, planted_data["response"][::3], d_sae=24, feature=5, seed=1)
    with pytest.raises(SiteMismatchError, match="this detector lists latents of another SAE"):
        det.score_responses(prompts, responses, model=handle, sae=other)
    other.save_model(str(tmp_path / "sae"))
    with pytest.raises(SiteMismatchError, match="another SAE"):
        det.score_responses(prompts, responses, model=handle)
    import torch

    # at half precision (an accelerator's SAE dtype) the float32 hash cannot match: the weight signature is compared
    # within bfloat16's rounding instead; the same SAE passes, another one is still refused
    assert det.score_responses(prompts, responses, model=handle, sae=copy.deepcopy(sae).to(torch.bfloat16)).shape == (3,)
    with pytest.raises(SiteMismatchError, match=r"loaded here \(at bfloat16\) differ from those recorded \(at float32\) by more than half precision"):
        det.score_responses(prompts, responses, model=handle, sae=other.to(torch.bfloat16))


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


# ---------------------------------------------------------------------------------------------- scikit-learn API

#: Checks of scikit-learn's suite the detectors fail on purpose.
LABELS_ARE_0_1 = "labels are 0 (aligned) / 1 (misaligned) only; the check fits labels such as {1, 2} or strings"
EXPECTED_FAILED_CHECKS = {
    "check_estimators_dtypes": LABELS_ARE_0_1,
    "check_classifier_data_not_an_array": LABELS_ARE_0_1,
    "check_classifiers_classes": LABELS_ARE_0_1,
    "check_fit2d_1feature": LABELS_ARE_0_1,
    "check_classifiers_train": "predict compares decision_function with the threshold calibrated on training scores "
                               "(Youden's J), not with 0; as scikit-learn's own TunedThresholdClassifierCV",
}


def _expected_failures(estimator):
    return EXPECTED_FAILED_CHECKS


@pytest.fixture(scope="module")
def topic_confound():
    """24 questions, half answered mostly misaligned (36 of 40) and half mostly aligned (4 of 40). Column 0 marks the
    question's topic (it separates the classes overall, AUROC about 0.9, but not within a question); column 1 is a
    persona feature (shifted by 1.2 SD on misaligned answers in every question, AUROC about 0.8); columns 2-9 are
    noise. Ranked within questions the persona feature wins; ranked without groups the topic wins (checked on the
    whole set and on every GroupKFold training fold for 200 seeds: no failure)."""
    rng = np.random.default_rng(0)
    n_groups, per_group = 24, 40
    groups = np.repeat([f"q{i:02d}" for i in range(n_groups)], per_group)
    high = np.repeat(np.arange(n_groups) % 2 == 0, per_group)
    y = np.zeros(n_groups * per_group, dtype=int)
    for g in range(n_groups):
        rows = np.arange(g * per_group, (g + 1) * per_group)
        y[rng.choice(rows, 36 if g % 2 == 0 else 4, replace=False)] = 1
    X = rng.normal(size=(len(y), 10))
    X[:, 0] = high + rng.normal(scale=0.1, size=len(y))
    X[:, 1] += 1.2 * y
    return X, y, groups


def test_groups_decide_between_the_topic_and_the_persona_feature(topic_confound):
    X, y, g = topic_confound
    assert PersonaDetector(k=1).fit(X, y, g).features_.tolist() == [1]
    assert PersonaDetector(k=1).fit(X, y).features_.tolist() == [0]


def test_detector_is_a_scikit_learn_classifier(topic_confound):
    from scipy.special import expit
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score

    X, y, g = topic_confound
    det = PersonaDetector(k=3, C=0.5)
    assert det.fit(X, y, g) is det and det.classes_.tolist() == [0, 1] and det.n_features_in_ == 10
    Z = X[:, det.features_]
    Zs = (Z - Z.mean(0)) / Z.std(0)
    oracle = LogisticRegression(C=0.5, class_weight="balanced", max_iter=2000).fit(Zs, y)
    decision = det.decision_function(X)
    np.testing.assert_allclose(decision, oracle.decision_function(Zs), rtol=1e-6, atol=1e-8)
    pred = det.predict(X)
    assert pred.tolist() == (decision >= det.threshold_).astype(int).tolist()
    proba = det.predict_proba(X)
    assert proba.shape == (len(y), 2)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_allclose(proba[:, 1], expit(decision - det.threshold_))
    assert (proba.argmax(1) == pred).all()
    assert det.score(X, y) == accuracy_score(y, pred)
    probe = DiffMeansProbe().fit(X, y)
    assert probe.score(X, y) == accuracy_score(y, probe.predict(X)) and probe.classes_.tolist() == [0, 1]


def test_feature_names_come_from_a_dataframe(topic_confound):
    X, y, g = topic_confound
    frame = pd.DataFrame(X, columns=[f"latent_{i}" for i in range(10)])
    det = PersonaDetector(k=2).fit(frame, y, g)
    assert det.feature_names_in_.tolist() == list(frame.columns) and det.feature_names_[0] == "latent_1"
    assert det.ranking_["name"].iloc[0] == "latent_1"
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        np.testing.assert_allclose(det.decision_function(frame), det.decision_function(X))
    with pytest.raises(DataError, match="feature names should match"):
        det.predict(frame.rename(columns={"latent_0": "other"}))
    assert not hasattr(PersonaDetector(k=2).fit(X, y), "feature_names_in_")


def test_cross_val_score_routes_groups_to_fit(topic_confound):
    from sklearn.model_selection import GroupKFold, cross_val_score, cross_validate

    X, y, g = topic_confound
    cv = GroupKFold(n_splits=4)
    routed = cross_validate(PersonaDetector(k=1), X, y, groups=g, cv=cv, params={"groups": g}, return_estimator=True)
    assert [est.features_.tolist() for est in routed["estimator"]] == [[1]] * 4
    plain = cross_validate(PersonaDetector(k=1), X, y, groups=g, cv=cv, return_estimator=True)
    assert [est.features_.tolist() for est in plain["estimator"]] == [[0]] * 4
    # the scores are the held-out accuracies of detectors fit on the other questions
    scores = cross_val_score(PersonaDetector(k=3), X, y, groups=g, cv=cv, params={"groups": g})
    by_hand = []
    for train, test in cv.split(X, y, g):
        det = PersonaDetector(k=3).fit(X[train], y[train], g[train])
        assert not set(g[train]) & set(g[test])
        by_hand.append(float((det.predict(X[test]) == y[test]).mean()))
    np.testing.assert_allclose(scores, by_hand)


def test_grid_search_and_pipeline_with_groups(topic_confound):
    import sklearn
    from sklearn.model_selection import GridSearchCV, GroupKFold, cross_validate
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, g = topic_confound
    grid = {"k": [1, 2], "C": [0.1, 1.0]}
    with sklearn.config_context(enable_metadata_routing=True):  # groups reach the splitter and every fit
        search = GridSearchCV(PersonaDetector(), grid, cv=GroupKFold(n_splits=3)).fit(X, y, groups=g)
        routed = cross_validate(PersonaDetector(k=1), X, y, params={"groups": g}, cv=GroupKFold(n_splits=4),
                                return_estimator=True)
    assert [est.features_.tolist() for est in routed["estimator"]] == [[1]] * 4
    assert len(search.cv_results_["params"]) == 4 and search.best_estimator_.features_[0] == 1
    # without routing GridSearchCV gives groups to the splitter only: the refit ranks without them
    search = GridSearchCV(PersonaDetector(), grid, cv=GroupKFold(n_splits=3)).fit(X, y, groups=g)
    assert search.best_estimator_.features_[0] == 0
    pipe = Pipeline([("scale", StandardScaler()), ("detector", PersonaDetector(k=1))]).fit(X, y, detector__groups=g)
    assert pipe.named_steps["detector"].features_.tolist() == [1] and 0.5 < pipe.score(X, y) <= 1.0


@parametrize_with_checks([PersonaDetector(), DiffMeansProbe()], expected_failed_checks=_expected_failures)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_labels_and_fitting_errors_say_what_is_wrong():
    X = np.random.default_rng(4).normal(size=(6, 3))
    with pytest.raises(DataError, match="continuous"):
        PersonaDetector().fit(X, [0.1, 0.7, 0.3, 0.9, 0.2, 0.8])
    with pytest.raises(DataError, match="only one class"):
        PersonaDetector().fit(X, [1] * 6)
    with pytest.raises(DataError, match="non-finite"):
        PersonaDetector().fit(np.where(np.eye(6, 3) > 0, np.nan, X), [0, 1] * 3)
    with pytest.raises(NotFittedError) as info:
        PersonaDetector().predict(X)
    assert isinstance(info.value, PersonasError)
    from sklearn.exceptions import NotFittedError as SklearnNotFitted

    assert isinstance(info.value, SklearnNotFitted)


def test_a_detector_fit_on_a_dataframe_saves_and_loads(topic_confound, tmp_path):
    X, y, g = topic_confound
    frame = pd.DataFrame(X, columns=[f"latent_{i}" for i in range(10)])
    det = PersonaDetector(k=2).fit(frame, y, g)
    det.save(tmp_path / "det")
    again = load_detector(tmp_path / "det")  # the file format is unchanged: no key for the input's column names
    assert again.feature_names_ == det.feature_names_ and det.feature_names_[0] == "latent_1"
    np.testing.assert_allclose(again.decision_function(X), det.decision_function(frame))
    assert (again.predict(X) == det.predict(frame)).all() and again.score(X, y) == det.score(frame, y)


def test_estimator_repr_shows_the_changed_parameters():
    assert repr(PersonaDetector(k=3, C=0.5)) == "PersonaDetector(C=0.5, k=3)"


def test_fit_detector_reuses_a_capture_of_the_same_rows(toy_model, planted_sae, planted_data, monkeypatch):
    import importlib

    import personas
    from personas.errors import DataError

    job_module = importlib.import_module("personas.jobs.detect")
    calls = []
    original = job_module.run_capture
    monkeypatch.setattr(job_module, "run_capture", lambda *a, **k: calls.append(1) or original(*a, **k))
    frame = pd.DataFrame(planted_data)
    config = DetectorConfig(k=3, holdout_by="group", test_fraction=0.5, seed=0)
    capture_cfg = CaptureConfig(hook=TOY_HOOK)
    ranked = personas.rank(frame, capture=capture_cfg, sae=planted_sae, model=toy_model, progress=False)
    again = fit_detector(frame, config=config, capture=capture_cfg, sae=planted_sae, model=toy_model, progress=False)
    assert len(calls) == 1  # the spy sees the capture fit_detector makes
    reused = fit_detector(frame, config=config, capture=capture_cfg, sae=planted_sae, model=toy_model,
                          captured=ranked.capture, progress=False)
    assert len(calls) == 1, "fit_detector captured again although captured= held the same rows"
    assert reused.evaluation["auroc"] == pytest.approx(again.evaluation["auroc"])
    assert reused.evaluation["features"] == again.evaluation["features"]
    with pytest.raises(DataError, match=r"captured= holds 40 responses .* expected the 80 rows"):
        fit_detector(frame, config=config, capture=capture_cfg, sae=planted_sae, model=toy_model,
                     captured=personas.rank(frame.iloc[::2], capture=capture_cfg, sae=planted_sae, model=toy_model,
                                            progress=False).capture, progress=False)
