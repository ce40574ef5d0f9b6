"""Explain and score a set of latents of one run: evidence, explanations, baselines, scores, one table.

`explain_latents` is the step `personas.explain` runs once it has a `Corpus` (the job reads the run folder): for
each latent it gathers the explanation and scoring windows (`personas.explaining.evidence`), has the explainer
describe every latent from its explanation set (`personas.explaining.explainers`), gives each latent its two
baseline explanations, and has every scorer predict, from each of the three explanations, where the latent fires
among its held-out windows (`personas.explaining.scorers`). Each (latent, scorer) draws one set of bootstrap
resamples of its windows, used for all three explanations: the intervals of the gains over the baselines are
paired. The result is an `Explanations` table (`personas.explaining.table`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from personas.errors import DataError
from personas.explaining.evidence import Corpus, Evidence, gather_evidence
from personas.explaining.scorers import (
    Prediction,
    baseline_explanations,
    bootstrap_auroc,
    interval,
    resample_weights,
)
from personas.explaining.table import Explanations
from personas.scoring import auroc

__all__ = ["explain_latents"]

logger = logging.getLogger(__name__)

_EVIDENCE_FIELDS = ("window_before", "window_after", "n_top", "n_quantile", "n_silent", "n_score",
                    "min_questions", "seed")


def explain_latents(corpus: Corpus, features: Sequence[int], *, explainer: Any, scorers: Sequence[Any],
                    config: Any, score_on: Corpus | None = None, spare: Sequence[int] = (),
                    ranks: Mapping[int, int] | None = None,
                    interventions: Mapping[int, dict[str, Any]] | None = None) -> Explanations:
    """The scored explanations of ``features`` (see the module docstring).

    Args:
        corpus: the run's answers and the latents' per-token codes.
        features: the latents to explain and score.
        explainer: an `OfflineExplainer` or `ApiExplainer`.
        scorers: `EmbeddingScorer`, `DetectionScorer`, `FuzzingScorer` instances.
        config: an `ExplainConfig` (window sizes, set sizes, seed, bootstrap).
        score_on: another run's corpus (same model and SAE) to draw the scoring windows from.
        spare: latents explained only to lend their explanation to the random-latent baseline.
        ranks: each latent's row in the ranking (1 = first), for the table.
        interventions: `intervention_figures` of the latents.
    """
    features = [int(f) for f in features]
    if not features:
        raise DataError("explain_latents got no latent; name one or more.")
    options = {k: getattr(config, k) for k in _EVIDENCE_FIELDS}
    start = time.perf_counter()
    evidence: dict[int, Evidence] = {}
    for f in list(dict.fromkeys([*features, *spare])):
        evidence[f] = gather_evidence(corpus, f, score_on=score_on, **options)
    gathered = time.perf_counter()
    explanations = explainer.explain(list(evidence.values()))
    explained = time.perf_counter()
    rng = np.random.default_rng([int(config.seed), 2])
    baselines = baseline_explanations({f: explanations[f].text for f in evidence}, evidence, rng)
    texts = {f: {"explanation": (explanations[f].text, None), **baselines[f]} for f in features}
    jobs = {f"{f}|{kind}": (evidence[f], text) for f in features for kind, (text, _) in texts[f].items()}
    predictions: dict[str, dict[str, Prediction]] = {}
    seconds: dict[str, float] = {}
    for scorer in scorers:
        begun = time.perf_counter()
        predictions[scorer.name] = scorer.predict(jobs)
        seconds[scorer.name] = time.perf_counter() - begun
    n = len(features)
    timing = {"seconds_evidence": (gathered - start) / len(evidence),
              "seconds_explain": (explained - gathered) / len(evidence),
              **{f"seconds_{name}": value / n for name, value in seconds.items()}}
    rows = []
    for f in features:
        rows += _rows(f, evidence[f], explanations[f], texts[f], predictions, config, (ranks or {}).get(f),
                      (interventions or {}).get(f), timing)
    table = Explanations(rows)
    table.notes = [f"latent {f}: {note}" for f in features for note in evidence[f].notes]
    return table


def _rows(feature: int, evidence: Evidence, explanation: Any, texts: dict[str, tuple[str, int | None]],
          predictions: dict[str, dict[str, Prediction]], config: Any, rank: int | None,
          intervention: dict[str, Any] | None, timing: dict[str, float]) -> list[dict[str, Any]]:
    active, silent = evidence.class_share
    common = {"feature": feature, "rank": rank, "explainer": explanation.explainer, "split": evidence.split,
              **evidence.counts(), "misaligned_share_active": round(active, 4),
              "misaligned_share_silent": round(silent, 4)}
    rows = {kind: {**common, "kind": kind, "explanation": text, "explanation_of": source}
            for kind, (text, source) in texts.items()}
    main = rows["explanation"]
    for name, by_job in predictions.items():
        keyed = {kind: by_job[f"{feature}|{kind}"] for kind in texts}
        truth = keyed["explanation"].truth
        rng = np.random.default_rng([int(config.seed), int(feature), len(name)])
        weights = resample_weights(truth, int(config.n_boot), rng)
        boots = {}
        for kind, prediction in keyed.items():
            scores = prediction.scores
            usable = np.all(np.isfinite(scores)) and scores.size > 0
            value = auroc(scores, truth, one_class=np.nan) if usable else np.nan
            boots[kind] = bootstrap_auroc(scores, truth, weights) if usable else np.full(int(config.n_boot), np.nan)
            lo, hi = interval(boots[kind])
            rows[kind].update({name: value, f"{name}_lo": lo, f"{name}_hi": hi})
            if prediction.details:
                rows[kind].update({f"{name}_{k}": v for k, v in prediction.details.items()})
        beats = []
        for kind, label in (("random-latent", "random"), ("class-only", "class")):
            if kind not in boots:
                beats.append(False)
                continue
            gain = main[name] - rows[kind][name]
            lo, hi = interval(boots["explanation"] - boots[kind])
            main.update({f"{name}_vs_{label}": gain, f"{name}_vs_{label}_lo": lo, f"{name}_vs_{label}_hi": hi})
            beats.append(bool(np.isfinite(lo) and lo > 0))
        main[f"{name}_beats_baselines"] = all(beats)
    if intervention:
        main.update({"intervention": intervention["text"], "intervention_effect": intervention.get("effect"),
                     "intervention_lo": intervention.get("lo"), "intervention_hi": intervention.get("hi")})
    main.update({k: round(v, 4) for k, v in timing.items()})
    main.update({f"explain_{k}": v for k, v in explanation.details.items() if k.endswith("tokens")})
    return list(rows.values())
