"""Steering sweeps: every prompt at every strength in one batched decode, scored.

`steered_generations` answers every prompt at every strength in one batched decode (one strength per row), and
`steer_sweep` scores those answers with a detector: a dose-response table that shows whether the feature drives
the behaviour.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from personas.config import CaptureConfig, SteerConfig
from personas.detect import load_detector
from personas.errors import PersonasError
from personas.judging import judged_table, score_generations
from personas.models import as_model_handle
from personas.steering.generation import decode, prompt_ids, row_seed
from personas.steering.hooks import steer

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


def parse_alphas(text: str | Sequence[float]) -> list[float]:
    """``"-8,0,8"`` (or a list) -> ``[-8.0, 0.0, 8.0]``."""
    if not isinstance(text, str):
        return [float(a) for a in text]
    try:
        values = [float(a) for a in re.split(r"[,\s]+", text.strip()) if a]
    except ValueError as exc:
        raise PersonasError(f"--alphas {text!r} is not a list of numbers; expected e.g. -8,0,8.") from exc
    if not values:
        raise PersonasError("--alphas is empty; expected e.g. -8,0,8.")
    return values


def steer_sweep(
    model: Any,
    sae: Any,
    feature: int,
    prompts: Sequence[str],
    alphas: Sequence[float] | str,
    *,
    detector: Any = None,
    detector_model: Any = None,
    detector_sae: Any = None,
    judge: Any = None,
    config: SteerConfig | None = None,
    capture: CaptureConfig | None = None,
    allow_model_mismatch: bool = False,
    progress: bool = False,
    hook: str | None = None,
) -> pd.DataFrame:
    """Generate for every prompt at every strength and score the generations: a dose-response table.

    Args:
        model, sae, feature: what is steered (see `steer`).
        prompts: the prompts; each is answered once per strength.
        alphas: strengths (``mode="add"``) or clamp values (``mode="clamp"``); include 0 for the unsteered baseline.
        detector: a `PersonaDetector` / `DiffMeansProbe` (or a folder with one) that scores each (prompt,
            generation) pair; ``detector_model`` / ``detector_sae`` reuse loaded objects for its capture, otherwise
            they are loaded from the detector's provenance.
        judge: a `personas.judging.Judge` (or a `personas.load_judge` spec such as ``"default"``) that reads every
            generation: the table gains mean ``aligned``/``coherent`` with 95% intervals and the EM-misaligned and
            incoherent rates with Wilson intervals (`personas.judging.judged_table`); each generation gets
            ``aligned``, ``coherent``, ``verdict``, ``misaligned`` and ``persona_score``.
        config: positions, mode, length, sampling (`SteerConfig`).
        capture: prompt rendering (system prompt or prompt format) for generation.
        hook: the site, when it differs from the SAE's (see `steer`).

    The generations come from `steered_generations` (all strengths in one batched decode). Returns one row per
    strength: ``alpha``, ``n``, ``mean_score``, ``score_lo``/``score_hi`` (95% normal interval
    of the mean), ``frac_flagged`` (score >= the detector's threshold), ``mean_words``, ``examples``; the scores are
    NaN without a detector. ``table.attrs["generations"]`` holds every generation (prompt, alpha, text, score) as
    records and ``table.attrs["spearman"]`` the rank correlation of score with strength over all generations.
    """
    import pandas as pd
    from scipy import stats

    config = config or SteerConfig()
    alphas = parse_alphas(alphas)
    if isinstance(detector, (str, Path)):
        detector = load_detector(detector)
    gens = steered_generations(model, sae, feature, prompts, alphas, config=config, capture=capture, hook=hook,
                               allow_model_mismatch=allow_model_mismatch, progress=progress)
    gens["score"] = np.nan
    if detector is not None:
        has_text = gens["generation"].str.len() > 0
        if not has_text.all():
            logger.warning("%d generation(s) are empty and get no detector score", int((~has_text).sum()))
        if has_text.any():
            sub = gens[has_text]
            gens.loc[has_text, "score"] = detector.score_responses(
                sub["prompt"].tolist(), sub["generation"].tolist(), model=detector_model, sae=detector_sae,
                progress=progress,
            )
    if judge is not None:
        gens = score_generations(gens, judge)
    threshold = getattr(detector, "threshold_", None)
    table_rows = []
    for alpha in alphas:
        part = gens[gens["alpha"] == alpha]
        scores = part["score"].dropna().to_numpy()
        mean = float(scores.mean()) if scores.size else float("nan")
        se = float(scores.std(ddof=1) / np.sqrt(scores.size)) if scores.size > 1 else float("nan")
        table_rows.append({
            "alpha": alpha,
            "n": int(len(part)),
            "mean_score": mean,
            "score_lo": mean - 1.96 * se,
            "score_hi": mean + 1.96 * se,
            "frac_flagged": float((scores >= threshold).mean()) if threshold is not None and scores.size else float("nan"),
            "mean_words": float(part["generation"].str.split().str.len().mean()),
            "examples": " || ".join(part["generation"].head(config.n_examples).tolist()),
        })
    table = pd.DataFrame(table_rows)
    if judge is not None:
        judged = judged_table(gens, by="alpha").drop(columns=["n", "mean_words", "examples"])
        table = table.merge(judged, on="alpha", how="left")
        table.attrs["judged_spearman"] = _spearman(gens, "persona_score")
    scored = gens.dropna(subset=["score"])
    spearman = None
    if len(scored) > 2 and scored["alpha"].nunique() > 1 and scored["score"].nunique() > 1:
        rho, p = stats.spearmanr(scored["alpha"], scored["score"])
        spearman = {"rho": float(rho), "p_value": float(p), "n": int(len(scored))}
    table.attrs["generations"] = gens.to_dict(orient="records")
    table.attrs["spearman"] = spearman
    table.attrs.setdefault("judged_spearman", None)
    table.attrs["feature"] = int(feature)
    table.attrs["mode"] = config.mode
    return table


def _spearman(gens: pd.DataFrame, column: str) -> dict[str, Any] | None:
    """Spearman rho of ``column`` with ``alpha`` over all generations (None when either is constant)."""
    from scipy import stats

    frame = gens.dropna(subset=[column])
    if len(frame) < 3 or frame["alpha"].nunique() < 2 or frame[column].nunique() < 2:
        return None
    rho, p = stats.spearmanr(frame["alpha"], frame[column])
    return {"rho": float(rho), "p_value": float(p), "n": int(len(frame)), "value": column}


def steered_generations(
    model: Any,
    sae: Any,
    feature: int,
    prompts: Sequence[str],
    alphas: Sequence[float] | str,
    *,
    config: SteerConfig | None = None,
    capture: CaptureConfig | None = None,
    hook: str | None = None,
    allow_model_mismatch: bool = False,
    progress: bool = False,
) -> pd.DataFrame:
    """Answer every prompt at every strength, steering with latent ``feature`` of ``sae`` (see `steer`).

    All (strength, prompt) pairs are decoded together, ``config.batch_size`` rows at a time, each row with its own
    strength; a prompt is sampled with the same seed (`row_seed` of ``config.seed`` and its index) at every
    strength, so strengths are compared on common random numbers. Returns one row per answer, strength by strength:
    ``prompt_index``, ``prompt``, ``alpha``, ``generation``.
    """
    import pandas as pd

    config = config or SteerConfig()
    alphas = parse_alphas(alphas)
    handle = as_model_handle(model)
    ids = prompt_ids(handle, prompts, max_new_tokens=config.max_new_tokens, config=capture)
    jobs = [(alpha, i) for alpha in alphas for i in range(len(prompts))]
    with steer(handle, sae, feature, 0.0, positions=config.positions, mode=config.mode, hook=hook,
               allow_model_mismatch=allow_model_mismatch):
        new = decode(handle, [ids[i] for _, i in jobs], max_new_tokens=config.max_new_tokens,
                     temperature=config.temperature, seeds=[row_seed(config.seed, i) for _, i in jobs],
                     alphas=[alpha for alpha, _ in jobs], batch_size=config.batch_size, progress=progress)
    tok = handle.tokenizer
    return pd.DataFrame([
        {"prompt_index": i, "prompt": prompts[i], "alpha": alpha,
         "generation": tok.decode(row, skip_special_tokens=True).strip()}
        for (alpha, i), row in zip(jobs, new, strict=True)
    ], columns=["prompt_index", "prompt", "alpha", "generation"])
