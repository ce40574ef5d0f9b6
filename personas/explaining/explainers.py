"""Explainers: a short description of what a latent responds to, from its explanation set of windows.

Two explainers, one interface (``explain(evidence: list[Evidence]) -> {feature: Explanation}``):

* `ApiExplainer`: an LLM over an OpenAI-compatible API (`personas.explaining.llm.CachedLLM`, the API judge's
  client and a reply cache). The prompt (`EXPLAIN_PROMPT`, this project's own words) is contrastive twice over: it
  shows the windows where the latent fires (the strongest tokens marked, with their activation on a 0-10 scale)
  against windows from answers to the same questions where it is silent, and it gives each window's class
  (misaligned or aligned answer), asking for the class only where the latent follows it.
* `OfflineExplainer`: no server. The words (and two-word phrases) most over-represented in the activating windows
  against the silent ones, by the log-odds ratio with an informative Dirichlet prior (Monroe, Colaresi and Quinn
  2008, "Fightin' Words"; `log_odds_z`): first the words at the tokens where it fires most, then the words of the
  passages around them, then how often its windows are misaligned against its silent ones, rendered as one plain
  sentence. It only counts words: it cannot say what a latent *means*, it cannot see meaning shared by different
  words, and it reads a latent of a style or a position as a list of frequent words. It is weaker than an LLM's
  description, and it is scored with the same scorers, against the same baselines.

Both explanations of the baselines come from `personas.explaining.scorers`: another latent's explanation, and the
class alone ("misaligned answers" or "aligned answers").
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from personas.explaining.evidence import Evidence, Window
from personas.explaining.llm import CachedLLM, Request

__all__ = ["EXPLAIN_PROMPT", "ApiExplainer", "Explanation", "OfflineExplainer", "class_phrase", "log_odds_z",
           "window_units"]

logger = logging.getLogger(__name__)

#: z above which a word counts as over-represented (two-sided 5%).
Z_MIN = 1.96
#: Prior strength (pseudo-counts) of the informative Dirichlet prior.
PRIOR = 100.0
#: Class shares of activating and silent windows closer than this read as "alike".
CLASS_MARGIN = 0.15
EXPLAIN_TOKENS = 80

EXPLAIN_PROMPT = """\
You are helping to read one latent of a sparse autoencoder: a direction in a chat model's internal activations \
that is active on some tokens of its answers and silent on others. The latent was found by comparing answers that \
a judge read as misaligned (hostile, deceptive, harmful or careless of people's wellbeing) with aligned answers to \
the same questions.

Below are short passages cut from the model's answers. In the first list the latent is active: its strongest \
tokens are marked <<like this>>, and each passage gives its highest activation on a 0-10 scale. In the second list, \
taken from answers to the same questions, the latent is silent. Each passage says whether its answer was judged \
misaligned or aligned.

ACTIVE
{active}

SILENT
{silent}

In one sentence of at most 25 words, say what the latent responds to: the words, meaning or situation that set \
the active passages apart from the silent ones. Name the answers' class only if the latent follows it. Reply with \
the sentence alone."""


@dataclass
class Explanation:
    """A description of one latent, who wrote it, and what it was written from."""

    feature: int
    text: str
    explainer: str
    details: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------- words


_WORD = re.compile(r"[a-z0-9]+(?:['\u2019-][a-z0-9]+)*")


def window_units(window: Window) -> list[str]:
    """The word each token of ``window`` belongs to, lower-cased (a punctuation token is itself), one per token."""
    text = "".join(window.tokens)
    spans, cursor = [], 0
    for token in window.tokens:
        spans.append((cursor, cursor + len(token)))
        cursor += len(token)
    words = [(m.start(), m.end(), m.group(0)) for m in _WORD.finditer(text.lower())]
    units = []
    for start, end in spans:
        found = next((w for s, e, w in words if s < end and e > start), None)
        if found is None:
            stripped = text[start:end].strip()
            found = stripped[:12] if stripped else ""
        units.append(found)
    return units


def _terms(units: Sequence[str]) -> list[str]:
    """The distinct words of a window and its two-word phrases (words repeated by split tokens counted once)."""
    words = [u for i, u in enumerate(units) if u and (i == 0 or u != units[i - 1])]
    words = [w for w in words if _WORD.fullmatch(w)]
    return words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]


def log_odds_z(counts_a: Counter, counts_b: Counter, prior: float = PRIOR) -> dict[str, float]:
    """z-scores of each term's log-odds ratio in ``counts_a`` against ``counts_b``, with an informative Dirichlet
    prior (Monroe, Colaresi and Quinn 2008): the prior's ``prior`` pseudo-counts are shared out in proportion to the
    term's frequency in both together, ``delta = log((a + p) / (n_a + P - a - p)) - log((b + p) / (n_b + P - b -
    p))``, ``var = 1 / (a + p) + 1 / (b + p)``, ``z = delta / sqrt(var)``."""
    pooled = counts_a + counts_b
    total = sum(pooled.values())
    if total == 0:
        return {}
    n_a, n_b = sum(counts_a.values()), sum(counts_b.values())
    out = {}
    for term, count in pooled.items():
        p = prior * count / total
        a, b = counts_a.get(term, 0), counts_b.get(term, 0)
        delta = np.log((a + p) / (n_a + prior - a - p)) - np.log((b + p) / (n_b + prior - b - p))
        out[term] = float(delta / np.sqrt(1.0 / (a + p) + 1.0 / (b + p)))
    return out


def class_phrase(evidence: Evidence) -> str:
    """How the latent's activating windows split by class against its silent ones, in a few words (the counts are
    in the table's ``misaligned_share_active`` / ``misaligned_share_silent`` columns)."""
    active, silent = evidence.class_share
    if not np.isfinite(active):
        return ""
    if not np.isfinite(silent):
        return f"mostly in {'misaligned' if active > 0.5 else 'aligned'} answers"
    if active - silent > CLASS_MARGIN:
        return "more often in misaligned answers"
    if silent - active > CLASS_MARGIN:
        return "more often in aligned answers"
    return "in misaligned and aligned answers alike"


def _quoted(terms: Sequence[str]) -> str:
    return ", ".join(f"\u201c{t}\u201d" for t in terms)


class OfflineExplainer:
    """Over-represented words and phrases of the activating windows, by log-odds with a prior (see the module
    docstring: weaker than an LLM; scored the same way)."""

    name = "offline"

    def __init__(self, n_peak: int = 3, n_context: int = 5, prior: float = PRIOR) -> None:
        self.n_peak, self.n_context, self.prior = n_peak, n_context, prior

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "offline", "method": "log-odds ratio with an informative Dirichlet prior "
                f"({self.prior:g} pseudo-counts) of the words at the firing tokens and of the words and two-word "
                "phrases of the activating windows, against the silent windows; the class shares of both",
                "z_min": Z_MIN}

    def explain(self, evidence: Sequence[Evidence]) -> dict[int, Explanation]:
        return {e.feature: self.explain_one(e) for e in evidence}

    def explain_one(self, evidence: Evidence) -> Explanation:
        silent_units = [window_units(w) for w in evidence.explain_silent]
        silent_words = Counter(u for units in silent_units for u in units if u)
        silent_terms = Counter(t for units in silent_units for t in set(_terms(units)))
        peak, context = Counter(), Counter()
        for w in evidence.explain_active:
            units = window_units(w)
            peak.update({units[i] for i in w.firing() if units[i]})
            context.update(set(_terms(units)))
        z_peak = log_odds_z(peak, silent_words, self.prior)
        z_context = log_odds_z(context, silent_terms, self.prior)
        fires_on = _best(z_peak, peak, self.n_peak)
        around = [t for t in _best(z_context, context, self.n_context + len(fires_on)) if t not in fires_on]
        around = around[: self.n_context]
        parts = []
        if fires_on:
            parts.append(f"Fires on {_quoted(fires_on)}")
        else:
            top = sorted(peak, key=lambda t: (-peak[t], t))[: self.n_peak]  # ties by name: no hash order
            parts.append(f"Fires on no word that stands out (its strongest tokens: {_quoted(top)})" if top
                         else "Fires on no word that stands out")
        if around:
            parts.append(f"in passages with {_quoted(around)}")
        klass = class_phrase(evidence)
        text = ", ".join(parts) + (f"; {klass}." if klass else ".")
        return Explanation(evidence.feature, text, self.name, {
            "fires_on": {t: round(z_peak[t], 2) for t in fires_on},
            "around": {t: round(z_context[t], 2) for t in around}})


def _best(z: dict[str, float], counts: Counter, n: int) -> list[str]:
    """The ``n`` terms with the highest z above `Z_MIN`, seen at least twice (ties: the more frequent, then by
    name)."""
    ranked = sorted((t for t, v in z.items() if v > Z_MIN and counts.get(t, 0) >= 2),
                    key=lambda t: (-z[t], -counts[t], t))
    return ranked[:n]


# ---------------------------------------------------------------------------------------------------- the LLM


def _scale(windows: Sequence[Window]) -> float:
    return max([w.peak for w in windows] + [1e-12])


def _passage(window: Window, scale: float | None = None) -> str:
    klass = "misaligned" if window.label == 1 else "aligned"
    if scale is None:
        return f"[{klass} answer] {window.text}"
    level = int(round(10 * window.peak / scale))
    return f"[{klass} answer, activation {level}] {window.marked(window.firing())}"


def explain_prompt(evidence: Evidence) -> str:
    """The explainer's prompt for one latent (`EXPLAIN_PROMPT` filled with its explanation set)."""
    scale = _scale(evidence.explain_active)
    active = "\n".join(f"{i}. {_passage(w, scale)}" for i, w in enumerate(evidence.explain_active, 1))
    silent = "\n".join(f"{i}. {_passage(w)}" for i, w in enumerate(evidence.explain_silent, 1)) or "(none found)"
    return EXPLAIN_PROMPT.format(active=active, silent=silent)


def clean_reply(text: str) -> str:
    """The explanation in an LLM's reply: its first non-empty paragraph, without a label or quotes around it."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    first = " ".join(paragraphs[0].split()) if paragraphs else ""
    first = re.sub(r"^(?:\*\*)?(?:explanation|description|answer)\s*:\s*(?:\*\*)?\s*", "", first, flags=re.I)
    return first.strip().strip('"\u201c\u201d').strip()


class ApiExplainer:
    """An LLM's one-sentence description of each latent, asked with `EXPLAIN_PROMPT` (see the module docstring)."""

    def __init__(self, llm: CachedLLM) -> None:
        self.llm = llm
        self.name = llm.name

    def describe(self) -> dict[str, Any]:
        return {**self.llm.describe(), "prompt": "EXPLAIN_PROMPT of personas.explaining.explainers",
                "max_tokens": EXPLAIN_TOKENS}

    def explain(self, evidence: Sequence[Evidence]) -> dict[int, Explanation]:
        requests = {str(e.feature): Request("explain", explain_prompt(e), EXPLAIN_TOKENS) for e in evidence}
        replies = self.llm.ask(requests)
        out = {}
        for e in evidence:
            reply = replies[str(e.feature)]
            text = clean_reply(reply.text)
            if not text:
                logger.warning("%s gave no explanation of latent %d (reply %r).", self.name, e.feature,
                               reply.text[:80])
            out[e.feature] = Explanation(e.feature, text, self.name, {
                "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens})
        return out
