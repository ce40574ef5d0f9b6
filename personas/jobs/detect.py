"""The detect job: rank features on training rows, fit a `PersonaDetector` and the dense baseline, evaluate on
held-out rows (or whole held-out questions), and write the folder (``eval.json``, both detectors, test scores).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from personas.artifacts import (
    EVAL_FILE,
    SCORES_FILE,
    check_output_dir,
    manifest_header,
    output_dir,
    write_csv,
    write_json,
)
from personas.capturing import Capture
from personas.capturing import capture as run_capture
from personas.config import CaptureConfig, DataConfig, DetectorConfig, SAEConfig
from personas.data.responses import load_responses
from personas.detect import DiffMeansProbe, PersonaDetector, cross_validate_by_group
from personas.errors import DataError
from personas.logs import quiet_third_party
from personas.saes import sae_entry, sae_identity
from personas.saes.site import open_site

logger = logging.getLogger(__name__)

__all__ = ["DetectResult", "fit_detector", "format_evaluation", "write_detect"]


@dataclass
class DetectResult:
    """What `fit_detector` made: the detector, the dense baseline, and (with a test split) their evaluation."""

    detector: PersonaDetector
    baseline: DiffMeansProbe
    train: Any  # personas.data.Responses
    test: Any | None
    evaluation: dict[str, Any] | None
    test_scores: Any | None = None  # DataFrame: id, label, group, sae_score, dense_score
    out_dir: Path | None = None
    capture: Any = field(default=None, repr=False)

    def __repr__(self) -> str:
        ev = self.evaluation
        if ev is None:
            result = "not evaluated on held-out rows"
        else:
            lo, hi = ev["auroc_ci"]
            result = (f"held-out AUROC {ev['auroc']:.3f} [{lo:.3f}, {hi:.3f}], dense baseline "
                      f"{ev['dense_baseline']['auroc']:.3f}; split {ev['split']['mode']}")
        features = getattr(self.detector, "features_", np.zeros(0)).tolist()
        rows = f"train {len(self.train)} rows" + ("" if self.test is None else f", test {len(self.test)} rows")
        out = "" if self.out_dir is None else f"; out={str(self.out_dir)!r}"
        return f"DetectResult({result}; features {features[:10]}; {rows}{out})"


def fit_detector(
    train: Any,
    test: Any = None,
    *,
    config: DetectorConfig | None = None,
    capture: CaptureConfig | None = None,
    sae: SAEConfig | str | Any | None = "default",
    data_config: DataConfig | None = None,
    model: Any = None,
    out: str | Path | None = None,
    progress: bool = True,
    captured: Capture | None = None,
) -> DetectResult:
    """From responses to a fitted detector and dense baseline, evaluated on held-out rows.

    Args:
        train: responses to fit on (anything `load_responses` takes).
        test: responses to evaluate on. Without it, ``config.holdout_by="group"`` holds out whole questions of
            ``train`` (``test_fraction`` of them, drawn with ``seed``); with ``"none"`` nothing is evaluated.
        config: features, method, threshold and split (`DetectorConfig`).
        capture: model, hook and pooling (`CaptureConfig`); the hook defaults to the SAE's.
        sae: `SAEConfig`, spec string (default ``"default"``, the SAE shipped for the default model), a loaded SAE,
            or ``None`` / ``"none"``: the detector uses the raw activation dimensions.
        model: an already loaded model.
        out: folder for ``eval.json``, ``test_scores.csv``, ``detector/`` and ``dense_baseline/``.
        captured: a `Capture` of exactly these rows in load order (train, then test), made with the same model,
            hook and SAE (e.g. ``personas.rank(...).capture``, with ``model=`` and ``sae=`` the rank's own), so
            that nothing is captured twice.

    Every row (train and test) is captured in one pass; the features of the detector are chosen and every
    parameter (standardisation, weights, threshold, baseline direction) is fit on training rows only.
    """
    import pandas as pd

    config = config or DetectorConfig()
    capture_cfg = capture or CaptureConfig()
    train_r = load_responses(train, data_config)
    if test is not None:
        test_r = load_responses(test, data_config)
        full_prompts, full_texts = train_r.prompts + test_r.prompts, train_r.texts + test_r.texts
        train_pos = np.arange(len(train_r))
        test_pos = np.arange(len(train_r), len(train_r) + len(test_r))
        split_mode = "file"
    elif config.holdout_by == "group":
        full = train_r
        train_r, test_r = full.split_by_group(config.test_fraction, config.seed)
        index = {rid: i for i, rid in enumerate(full.ids)}
        train_pos = np.array([index[i] for i in train_r.ids], dtype=np.int64)
        test_pos = np.array([index[i] for i in test_r.ids], dtype=np.int64)
        full_prompts, full_texts = full.prompts, full.texts
        split_mode = "group"
    else:
        test_r = None
        full_prompts, full_texts = train_r.prompts, train_r.texts
        train_pos, test_pos = np.arange(len(train_r)), np.zeros(0, dtype=np.int64)
        split_mode = "none"
        logger.warning("no test data and holdout_by='none': the detector is fit but not evaluated on held-out rows")

    if out is not None:
        check_output_dir(out, "personas.detect")  # before the model loads
    with quiet_third_party():
        site = open_site(capture_cfg, "none" if sae is None else sae, model)
    handle, sae_obj, sae_cfg, hook = site.model, site.sae, site.sae_config, site.hook
    if captured is None:
        captured = run_capture(
            handle, full_prompts, full_texts, hooks=[hook], config=capture_cfg, sae=sae_obj,
            encode_batch_tokens=sae_cfg.encode_batch_tokens,
            allow_model_mismatch=bool(getattr(sae_cfg, "allow_model_mismatch", False)), progress=progress,
        )
    elif len(captured) != len(full_prompts) or hook not in captured.pooled or (
            sae_obj is not None and captured.features is None):
        raise DataError(
            f"captured= holds {len(captured)} responses with hooks {sorted(captured.pooled)} and "
            f"{'SAE codes' if captured.features is not None else 'no SAE codes'}; expected the {len(full_prompts)} "
            f"rows given (train, then test) captured at {hook}{' with the SAE' if sae_obj is not None else ''}. "
            "Pass the Capture of these same rows, or leave captured=None to capture them here."
        )
    dense = captured.pooled[hook]
    feats = captured.features if sae_obj is not None else dense
    if sae_obj is not None:
        feats = feats.tocsr()

    provenance = {
        "model": captured.model,
        "hook": hook,
        "sae": None if sae_obj is None else {**sae_entry(sae_obj, sae_cfg.sae),
                                             "identity": sae_identity(sae_obj, sae_cfg.sae, captured.model)},
        "capture": asdict(capture_cfg),
        "allow_model_mismatch": bool(getattr(sae_cfg, "allow_model_mismatch", False)),
        "train_data": {"source": train_r.source, "dataset_hash": train_r.dataset_hash, "n": len(train_r)},
    }
    detector = PersonaDetector.from_config(config)
    detector.fit(feats[train_pos], train_r.labels, train_r.groups if train_r.has_groups else None)
    detector.provenance = provenance
    baseline = DiffMeansProbe(threshold=config.threshold).fit(dense[train_pos], train_r.labels)
    baseline.provenance = {**provenance, "sae": None}

    evaluation = None
    scores_frame = None
    if test_r is not None:
        sae_eval = detector.evaluate(feats[test_pos], test_r.labels, config.ci_level)
        dense_eval = baseline.evaluate(dense[test_pos], test_r.labels, config.ci_level)
        train_groups = sorted(set(train_r.groups.tolist())) if train_r.has_groups else None
        test_groups = sorted(set(test_r.groups.tolist())) if test_r.has_groups else None
        overlap = sorted(set(train_groups or []) & set(test_groups or []))
        if overlap:
            logger.warning(
                "%d question(s) are in both the training and the test data (%s): the held-out AUROC is optimistic",
                len(overlap), ", ".join(overlap[:5]),
            )
        top_rows = detector.ranking_.head(len(detector.features_))
        evaluation = {
            **manifest_header("personas.detect"),
            "auroc": sae_eval["auroc"],
            "auroc_ci": sae_eval["auroc_ci"],
            "accuracy": sae_eval["accuracy"],
            "balanced_accuracy": sae_eval["balanced_accuracy"],
            "k": sae_eval["k"],
            "features": sae_eval["features"],
            "sae": sae_eval,
            "dense_baseline": dense_eval,
            "train_auroc": {"sae": detector.train_auroc_, "dense_baseline": baseline.train_auroc_},
            "train_feature_stats": top_rows[[c for c in ("feature", "auroc", "group_auroc", "mean_diff", "q_value")
                                             if c in top_rows]].to_dict(orient="records"),
            "split": {
                "mode": split_mode,
                "seed": config.seed if split_mode == "group" else None,
                "test_fraction": config.test_fraction if split_mode == "group" else None,
                "train": train_r.summary(),
                "test": test_r.summary(),
                "train_groups": train_groups,
                "test_groups": test_groups,
                "groups_in_both": overlap,
            },
            "model": captured.model,
            "hook": hook,
            "sae_info": provenance["sae"],
            "config": {
                "detector": asdict(config),
                "capture": asdict(capture_cfg),
                "sae": asdict(sae_cfg),
                "data": asdict(train_r.config),
            },
            "capture": captured.provenance(),
        }
        scores_frame = pd.DataFrame({
            "id": test_r.ids,
            "label": test_r.labels,
            "group": test_r.groups if test_r.has_groups else None,
            "sae_score": detector.decision_function(feats[test_pos]),
            "dense_score": baseline.decision_function(dense[test_pos]),
        })
    if config.cv_folds and evaluation is not None:
        if split_mode == "group":
            all_groups = np.empty(len(full_prompts), dtype=object)
            all_groups[train_pos] = train_r.groups
            all_groups[test_pos] = test_r.groups
            all_labels = np.zeros(len(full_prompts), dtype=np.int8)
            all_labels[train_pos], all_labels[test_pos] = train_r.labels, test_r.labels
            evaluation["cross_validation"] = cross_validate_by_group(feats, dense, all_labels, all_groups, config)
        else:
            logger.warning("cv_folds is used with holdout_by='group' only; skipped")
    result = DetectResult(detector, baseline, train_r, test_r, evaluation, scores_frame, capture=captured)
    if out is not None:
        result.out_dir = write_detect(result, out)
    return result


def write_detect(result: DetectResult, out: str | Path) -> Path:
    """Write ``detector/``, ``dense_baseline/``, and with an evaluation ``test_scores.csv`` and ``eval.json`` (its
    ``files`` lists them, the scores with their checksum)."""
    out = output_dir(out, "personas.detect")
    result.detector.save(out / "detector")
    result.baseline.save(out / "dense_baseline")
    scores = None if result.test_scores is None else write_csv(out / SCORES_FILE, result.test_scores)
    if result.evaluation is not None:
        result.evaluation["files"] = {"detector/": {"note": "the SAE detector"},
                                      "dense_baseline/": {"note": "the dense baseline"}}
        if scores is not None:
            result.evaluation["files"][SCORES_FILE] = scores
        write_json(out / EVAL_FILE, result.evaluation)
    return out


def format_evaluation(evaluation: dict[str, Any]) -> str:
    """Detector and dense baseline side by side, as printed by ``personas detect``."""
    rows = []
    first = "SAE detector" if evaluation.get("sae_info") else "top-k detector (raw dims)"
    for name, ev in ((first, evaluation["sae"]), ("dense baseline (diff of means)", evaluation["dense_baseline"])):
        lo, hi = ev["auroc_ci"]
        extra = f"k={ev['k']} {ev['method']}" if "k" in ev else f"d={ev['d']}"
        rows.append(
            f"{name:32s} AUROC {ev['auroc']:.3f} [{lo:.3f}, {hi:.3f}]  accuracy {ev['accuracy']:.3f}  "
            f"balanced {ev['balanced_accuracy']:.3f}  ({extra})"
        )
    cv = evaluation.get("cross_validation")
    if cv:
        def fmt(stat):
            return "n/a" if stat["mean"] is None else f"{stat['mean']:.3f} +- {stat['sd'] or 0:.3f}"

        rows.append(f"{cv['n_folds']}-fold CV by question: detector AUROC {fmt(cv['sae_auroc'])}, "
                    f"dense baseline AUROC {fmt(cv['dense_auroc'])} (mean +- sd over folds)")
    return "\n".join(rows)
