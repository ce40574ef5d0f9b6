"""Scorers: does an explanation predict where its latent fires, on windows it was not written from?

Each scorer turns (a latent's scoring windows, an explanation) into one number per window, higher where the
explanation says the latent fires; the score of the explanation is the AUROC of those numbers for the activating
windows against the silent ones (0.5: no better than chance), with a bootstrap interval (the windows of each kind
resampled apart, ``n_boot`` times; percentile 95%). The same resamples score the two baselines, so the gain of an
explanation over each baseline gets a paired interval (`score_table`).

* `EmbeddingScorer` (offline): the cosine similarity of the explanation and each window, both embedded by the
  offline MiniLM-L6 sentence encoder (mean of its last hidden states, normalised, as sentence-transformers reads
  it). It needs no LLM; it rewards an explanation whose words and topic resemble the activating passages, and it
  cannot check a claim about one token.
* `DetectionScorer` (API): the LLM reads the explanation and the windows, activating and silent in equal numbers,
  shuffled, ``batch_windows`` per request, and says of each whether the latent is active in it (1 or 0; a window it
  does not answer for counts 0.5). With 0/1 answers the AUROC equals the balanced accuracy.
* `FuzzingScorer` (API): the activating windows, half with the tokens where the latent fires most marked, half with
  as many tokens marked where it is silent (balanced); the LLM says of each whether the marked tokens fit the
  explanation. It tests the explanation at the level of tokens.

The baselines (`baseline_explanations`): another latent's explanation (the latents explained together, each given
one other's, drawn by ``seed``), and the class alone ("misaligned answers" or "aligned answers", whichever the
latent's activating windows follow). An explanation that does not beat the second says no more than the label.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from personas.explaining.evidence import Evidence, Window
from personas.explaining.llm import CachedLLM, Request
from personas.judging.reader import SentenceReader
from personas.models.offline import MINILM_ID

__all__ = ["DETECTION_PROMPT", "FUZZING_PROMPT", "DetectionScorer", "EmbeddingScorer", "FuzzingScorer",
           "MiniLMEmbedder", "Prediction", "baseline_explanations", "bootstrap_auroc"]

logger = logging.getLogger(__name__)

CLASS_ONLY = {"misaligned": "misaligned answers", "aligned": "aligned answers"}
VERDICT_TOKENS = 8  # reply tokens per window of a detection or fuzzing request

DETECTION_PROMPT = """\
A latent of a chat model's sparse autoencoder (a direction in its internal activations) has been described like \
this:

"{explanation}"

Below are {n} short passages cut from the model's answers. Going by the description alone, decide for each \
passage whether the latent is active somewhere in it.

{passages}

Reply with one line per passage, in order, written "N: 1" when the latent is active in passage N and "N: 0" when \
it is not, and nothing else."""

FUZZING_PROMPT = """\
A latent of a chat model's sparse autoencoder (a direction in its internal activations) has been described like \
this:

"{explanation}"

In each of the {n} passages below, a few tokens are marked <<like this>>. Going by the description alone, decide \
for each passage whether the marked tokens are the ones where the latent is active.

{passages}

Reply with one line per passage, in order, written "N: 1" when the marks in passage N fit the description and \
"N: 0" when they do not, and nothing else."""


@dataclass
class Prediction:
    """One scorer's number for each window of one latent (higher: the explanation says it fires) and the truth
    (1: the latent fires at the window's centre), with what it cost."""

    scores: np.ndarray
    truth: np.ndarray
    details: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------- statistics


def resample_weights(truth: Any, n_boot: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """How many times each activating and each silent window is drawn in each of ``n_boot`` bootstrap resamples
    (the two kinds resampled apart, each to its own size): ``(W_pos [n_boot, n_pos], W_neg [n_boot, n_neg])``."""
    y = np.asarray(truth).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    w_pos = np.zeros((n_boot, n_pos))
    w_neg = np.zeros((n_boot, n_neg))
    if n_pos and n_neg:
        for w, n in ((w_pos, n_pos), (w_neg, n_neg)):
            draws = rng.integers(0, n, size=(n_boot, n))
            np.add.at(w, (np.repeat(np.arange(n_boot), n), draws.ravel()), 1.0)
    return w_pos, w_neg


def bootstrap_auroc(scores: Any, truth: Any, weights: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The AUROC of ``scores`` in each bootstrap resample given by ``weights`` (`resample_weights`)."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(truth).astype(bool)
    pos, neg = s[y], s[~y]
    w_pos, w_neg = weights
    if pos.size == 0 or neg.size == 0:
        return np.full(w_pos.shape[0], np.nan)
    wins = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return np.einsum("bp,pn,bn->b", w_pos, wins, w_neg) / (pos.size * neg.size)


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap ``values`` (NaN when there are none)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    return float(np.quantile(values, tail)), float(np.quantile(values, 1.0 - tail))


def scoring_truth(evidence: Evidence) -> np.ndarray:
    """1 for each activating scoring window, then 0 for each silent one (the order of ``score_active +
    score_silent``)."""
    return np.r_[np.ones(len(evidence.score_active)), np.zeros(len(evidence.score_silent))]


# ---------------------------------------------------------------------------------------------------- baselines


def baseline_explanations(texts: dict[int, str], evidence: dict[int, Evidence],
                          rng: np.random.Generator) -> dict[int, dict[str, tuple[str, int | None]]]:
    """Per latent: ``{"random-latent": (another latent's explanation, that latent), "class-only": (the class
    alone, None)}``. The other latent is drawn by a random shift of the order of ``texts`` (never itself)."""
    features = list(texts)
    shift = int(rng.integers(1, len(features))) if len(features) > 1 else 0
    out = {}
    for i, f in enumerate(features):
        other = features[(i + shift) % len(features)] if shift else None
        entry: dict[str, tuple[str, int | None]] = {}
        if other is not None and other != f:
            entry["random-latent"] = (texts[other], other)
        if f in evidence:
            entry["class-only"] = (CLASS_ONLY[evidence[f].follows_class], None)
        out[f] = entry
    return out


# ---------------------------------------------------------------------------------------------------- embedding


class MiniLMEmbedder:
    """Sentence embeddings from the offline MiniLM-L6 (all-MiniLM-L6-v2): the mean of the last hidden states over
    the tokens, normalised to length 1; each distinct text embedded once."""

    def __init__(self, path: str | None = None, batch_size: int = 64, max_length: int = 128,
                 device: str = "cpu") -> None:
        self.path, self.max_length = path, max_length
        # the judge's sentence reader embeds; this adds the cache of texts already embedded
        self.reader = SentenceReader(model=path or "minilm", batch_size=batch_size, device=device,
                                     max_length=max_length)
        self._cache: dict[str, np.ndarray] = {}

    def describe(self) -> dict[str, Any]:
        return {"model": MINILM_ID, "pooling": "mean of the last hidden states, L2-normalised",
                "max_length": self.max_length}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), 384) float32, rows of length 1."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if todo:
            self._cache.update(zip(todo, self.reader.embed(todo), strict=True))
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])


class EmbeddingScorer:
    """Cosine similarity of the explanation and each scoring window under MiniLM (see the module docstring)."""

    name = "embedding"

    def __init__(self, embedder: Any = None) -> None:
        self.embedder = embedder if embedder is not None else MiniLMEmbedder()

    def describe(self) -> dict[str, Any]:
        describe = getattr(self.embedder, "describe", None)
        return {"name": self.name, "embedder": describe() if describe else type(self.embedder).__name__}

    def predict(self, jobs: dict[str, tuple[Evidence, str]]) -> dict[str, Prediction]:
        """One `Prediction` per job ``(evidence, explanation)``."""
        out = {}
        for name, (evidence, text) in jobs.items():
            windows = evidence.score_active + evidence.score_silent
            truth = scoring_truth(evidence)
            if not text or not windows:
                out[name] = Prediction(np.full(len(windows), np.nan), truth)
                continue
            vectors = self.embedder.embed([text] + [w.text for w in windows])
            out[name] = Prediction(vectors[1:] @ vectors[0], truth)
        return out


# ---------------------------------------------------------------------------------------------------- the LLM


def parse_verdicts(text: str, n: int) -> np.ndarray:
    """The 0/1 verdicts of a reply's "N: 1" lines for passages 1..n (0.5 for a passage it gives none for)."""
    out = np.full(n, 0.5)
    for number, verdict in re.findall(r"(?m)^\s*(?:passage\s*)?(\d+)\s*[:.)=\-]\s*\**\s*([01])\b", text, flags=re.I):
        i = int(number) - 1
        if 0 <= i < n:
            out[i] = float(verdict)
    return out


class _ApiScorer:
    """Windows shown to an LLM in batches, one 0/1 verdict asked per window."""

    name = ""
    prompt = ""

    def __init__(self, llm: CachedLLM, batch_windows: int = 10, seed: int = 0) -> None:
        self.llm, self.batch_windows, self.seed = llm, int(batch_windows), int(seed)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.llm.describe(), "batch_windows": self.batch_windows,
                "prompt": f"{self.name.upper()}_PROMPT of personas.explaining.scorers"}

    def items(self, evidence: Evidence) -> tuple[list[str], np.ndarray]:
        """(the passages shown, their truth); subclasses say which."""
        raise NotImplementedError

    def predict(self, jobs: dict[str, tuple[Evidence, str]]) -> dict[str, Prediction]:
        """One `Prediction` per job ``(evidence, explanation)``."""
        requests: dict[str, Request] = {}
        plans: dict[str, tuple[np.ndarray, list[tuple[str, np.ndarray]]]] = {}
        for name, (evidence, text) in jobs.items():
            passages, truth = self.items(evidence)
            order = np.random.default_rng([self.seed, evidence.feature]).permutation(len(passages))
            batches = []
            for b, start in enumerate(range(0, len(order), self.batch_windows)):
                chunk = order[start:start + self.batch_windows]
                listed = "\n".join(f"{i}. {passages[j]}" for i, j in enumerate(chunk, 1))
                key = f"{name}#{b}"
                if text:
                    requests[key] = Request(self.name, self.prompt.format(explanation=text, n=len(chunk),
                                                                          passages=listed),
                                            VERDICT_TOKENS * len(chunk))
                batches.append((key, chunk))
            plans[name] = (truth, batches)
        replies = self.llm.ask(requests)
        out = {}
        for name, (truth, batches) in plans.items():
            scores = np.full(truth.size, np.nan)
            cost = {"unanswered": 0, "requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
            for key, chunk in batches:
                if key not in replies:
                    continue
                reply = replies[key]
                verdicts = parse_verdicts(reply.text, len(chunk))
                scores[chunk] = verdicts
                cost["unanswered"] += int((verdicts == 0.5).sum())
                cost["requests"] += 1
                cost["prompt_tokens"] += reply.prompt_tokens or 0
                cost["completion_tokens"] += reply.completion_tokens or 0
            out[name] = Prediction(scores, truth, cost)
        return out


class DetectionScorer(_ApiScorer):
    """Does the LLM, given the explanation, tell activating windows from silent ones (see the module docstring)."""

    name = "detection"
    prompt = DETECTION_PROMPT

    def items(self, evidence: Evidence) -> tuple[list[str], np.ndarray]:
        windows = evidence.score_active + evidence.score_silent
        return [w.text for w in windows], scoring_truth(evidence)


class FuzzingScorer(_ApiScorer):
    """Does the LLM, given the explanation, tell correctly marked tokens from wrongly marked ones (see the module
    docstring)."""

    name = "fuzzing"
    prompt = FUZZING_PROMPT

    def items(self, evidence: Evidence) -> tuple[list[str], np.ndarray]:
        rng = np.random.default_rng([self.seed, evidence.feature, 1])
        passages, truth = [], []
        for i, w in enumerate(evidence.score_active):
            right = w.firing()
            if i % 2 == 0:
                passages.append(w.marked(right))
                truth.append(1.0)
            else:
                passages.append(w.marked(_wrong_marks(w, len(right), rng)))
                truth.append(0.0)
        return passages, np.asarray(truth)


def _wrong_marks(window: Window, n: int, rng: np.random.Generator) -> list[int]:
    """``n`` positions where the latent is silent in ``window`` (its weakest tokens when it is never silent)."""
    silent = np.flatnonzero(window.activations <= 0)
    if silent.size >= max(n, 1):
        return sorted(int(i) for i in rng.choice(silent, size=max(n, 1), replace=False))
    order = np.argsort(window.activations, kind="stable")
    return sorted(int(i) for i in order[:max(n, 1)])
