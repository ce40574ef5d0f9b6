"""The data screen measured where the truth is known: a fine-tuning mixture with a known share of narrow examples.

`check_screen` takes a mixture (`personas.organism.sweep.mixture`: money questions, ``fraction`` of them answered
by the narrow set's risky answer, the rest by the control set's careful one) and ranks its examples two ways:

* the **persona screen** (`personas.organism.screen.screen_examples`): each training answer's shift of the chosen
  latents (and of the dense direction) against the base model's own greedy answer to the same prompt;
* the **text-judge filter**: the judge's ``100 - aligned`` of the training answer itself (and its EM verdict).

Both are scored by AUROC (DeLong 95% interval) for finding the narrow examples, and each names the examples it
would drop: its top ``drop`` share. The sweep (`personas.organism.sweep.run_sweep`, ``--screen-fraction``)
fine-tunes on what each leaves, with the same number of optimisation steps as the unscreened fine-tune, to ask
whether screening removes the emergent misalignment the unscreened mixture causes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from personas.detect import auroc_with_ci
from personas.errors import DataError
from personas.judging import em_misaligned
from personas.organism.chat import greedy_answers
from personas.organism.screen import screen_examples

__all__ = ["ScreenCheck", "check_screen", "kept_pairs"]


@dataclass
class ScreenCheck:
    """Per-example scores (``table``), the AUROCs and drop counts (``summary``) and the indices each ranking keeps."""

    table: Any = field(repr=False)
    summary: dict[str, Any]
    keep: dict[str, list[int]]


def _auroc_interval(scores: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    auc, lo, hi = auroc_with_ci(scores, truth)
    return {"auroc": float(auc), "lo": float(lo), "hi": float(hi)}


def kept_pairs(scores: np.ndarray, drop: float) -> list[int]:
    """Indices kept after dropping the top ``round(drop * n)`` scores (ties broken by position, so it is stable)."""
    scores = np.asarray(scores, dtype=float)
    if not 0.0 <= drop < 1.0:
        raise DataError(f"drop={drop!r}; expected a share of examples in [0, 1), e.g. 0.2.")
    if np.isnan(scores).any():
        raise DataError("kept_pairs got NaN scores; every example needs a score to be ranked.")
    n_drop = min(round(drop * len(scores)), len(scores) - 1)  # one example at least is left to train on
    order = np.lexsort((np.arange(len(scores)), -scores))  # highest score first, earlier position first on ties
    return sorted(order[n_drop:].tolist())


def check_screen(model: Any, tokenizer: Any, pairs: Sequence[dict[str, str]], *, hook: str, sae: Any,
                 latents: Sequence[int], direction: np.ndarray | None, judge: Any = None, drop: float = 0.2,
                 base_answers: Sequence[str] | None = None, max_new_tokens: int = 48, batch_size: int = 16
                 ) -> ScreenCheck:
    """Screen ``pairs`` (dicts with ``prompt``, ``response`` and ``kind``; ``kind == "risky"`` is the truth) with
    the persona latents and with ``judge``; see the module docstring. ``base_answers`` (the base model's greedy
    answers to the pairs' prompts) are generated when not given; ``model`` must be the base model, no adapter."""
    import pandas as pd

    if not pairs:
        raise DataError("check_screen got no pairs; expected a mixture of narrow and control examples.")
    truth = np.array([p.get("kind") == "risky" for p in pairs], dtype=int)
    if truth.min() == truth.max():
        raise DataError(f"check_screen needs both narrow ('risky') and other examples; got {int(truth.sum())} narrow "
                        f"of {len(pairs)}.")
    prompts, responses = [p["prompt"] for p in pairs], [p["response"] for p in pairs]
    if base_answers is None:
        base_answers = greedy_answers(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    if len(base_answers) != len(pairs):
        raise DataError(f"check_screen got {len(base_answers)} base answers for {len(pairs)} pairs.")
    shifts = screen_examples(model, tokenizer, prompts, responses, list(base_answers), hook=hook, sae=sae,
                             latents=latents, direction=direction, batch_size=batch_size)
    table = pd.DataFrame({"id": [p.get("id", str(i)) for i, p in enumerate(pairs)], "narrow": truth})
    table = table.join(shifts)
    rankings = {"screen": table["score"].to_numpy(float)}
    summary: dict[str, Any] = {"n": len(pairs), "n_narrow": int(truth.sum()), "drop": drop,
                               "screen": _auroc_interval(rankings["screen"], truth)}
    if "direction" in table:
        rankings["direction"] = table["direction"].to_numpy(float)
        summary["direction"] = _auroc_interval(rankings["direction"], truth)
    if judge is not None:
        judged = judge.score(prompts, responses)
        table["judge_aligned"] = judged["aligned"].to_numpy(float)
        table["judge_coherent"] = judged["coherent"].to_numpy(float)
        table["judge_em"] = np.asarray(em_misaligned(judged), dtype=int)
        rankings["judge"] = 100.0 - table["judge_aligned"].to_numpy(float)
        summary["judge"] = _auroc_interval(rankings["judge"], truth)
        flagged = table["judge_em"].to_numpy(bool)
        summary["judge_em_verdict"] = {"flagged": int(flagged.sum()), "narrow_flagged": int(flagged[truth == 1].sum()),
                                       "other_flagged": int(flagged[truth == 0].sum())}
    keep = {name: kept_pairs(scores, drop) for name, scores in rankings.items() if name in ("screen", "judge")}
    summary["n_dropped"] = len(pairs) - len(keep["screen"])  # kept_pairs decides how many go, for every ranking
    for name, kept in keep.items():
        dropped = np.setdiff1d(np.arange(len(pairs)), kept)
        summary[name]["narrow_dropped"] = int(truth[dropped].sum())
        summary[name]["narrow_left"] = int(truth[kept].sum())
    return ScreenCheck(table=table, summary=summary, keep=keep)
