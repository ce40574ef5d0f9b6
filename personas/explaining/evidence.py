"""The evidence an explanation is written from and scored on: windows of text around tokens of a run's answers.

Everything here reads a run's stored per-token SAE codes (`Corpus`: the codes of the asked latents, each answer's
tokens, class and question); nothing runs the model. For one latent, `gather_evidence` returns four sets of
`Window` s (a few tokens before and after a centre token, with every token's activation and the answer's class):

* **explanation set**: windows around the peak token of the ``n_top`` top-activating answers; windows centred on
  tokens at the activation quantiles 0.25, 0.5 and 0.75 (``n_quantile`` each); and ``n_silent`` windows where the
  latent is silent, centred on tokens where it is zero (windows that are zero throughout first), drawn from answers
  to the questions the activating windows come from, so that what tells them apart is not the topic;
* **scoring set**: ``n_score`` activating windows drawn evenly over the four quartiles of the activation (the
  weak activations count as much as the strong), and as many silent windows, from the same questions.

The two sets come from disjoint answers: **by question** when at least ``min_questions`` questions have activating
answers (half of those questions explain, the other half score; questions where the latent never fires are shared
out the same way), else **by answer** within each question. With ``score_on`` (another run of the same model and
SAE, e.g. on held-out questions), the explanation set comes from one run and the scoring set from the other.
Every draw is seeded by (``seed``, latent), so a rerun gives the same windows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from personas.errors import DataError
from personas.report.highlight import token_pieces

__all__ = ["Corpus", "Evidence", "Window", "gather_evidence", "split_answers"]

logger = logging.getLogger(__name__)

QUANTILES = (0.25, 0.5, 0.75)
#: The mark put around highlighted tokens in prompts (`Window.marked`).
MARK = ("<<", ">>")


@dataclass
class Corpus:
    """What explaining reads about a run's answers: the asked latents' activations on every answer token, the
    token ids (turned into text by ``tokenizer``, cut from ``texts`` where they are known), and each answer's class
    (1 misaligned, 0 aligned) and question (``groups``; None when the run does not know them)."""

    codes: Any  # scipy.sparse [tokens, asked latents]
    columns: dict[int, int]
    offsets: np.ndarray
    token_ids: np.ndarray
    labels: np.ndarray
    tokenizer: Any
    groups: np.ndarray | None = None
    texts: Sequence[str] | None = None
    name: str = ""
    _pieces: dict[int, list[str]] = field(default_factory=dict, repr=False)
    _columns: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        self.labels = np.asarray(self.labels).astype(int)
        n = self.offsets.size - 1
        if self.labels.shape != (n,):
            raise DataError(f"{self.name or 'the run'}: {self.labels.size} labels for {n} answers; expected one label "
                            "per answer. Rerun `personas rank --report`.")
        if self.groups is not None:
            self.groups = np.asarray([str(g) for g in self.groups])
            if self.groups.shape != (n,):
                raise DataError(f"{self.name or 'the run'}: {self.groups.size} questions for {n} answers; expected "
                                "one per answer.")
        if self.texts is not None and len(self.texts) != n:
            raise DataError(f"{self.name or 'the run'}: {len(self.texts)} texts for {n} answers; expected one per "
                            "answer.")

    @property
    def n_answers(self) -> int:
        return int(self.offsets.size - 1)

    def column(self, feature: int) -> np.ndarray:
        """The latent's activation on every answer token (float64)."""
        if feature not in self._columns:
            if feature not in self.columns:
                raise DataError(f"latent {feature} was not read from {self.name or 'the run'}; read it first.")
            self._columns[feature] = np.asarray(self.codes[:, [self.columns[feature]]].toarray(),
                                                dtype=np.float64).ravel()
        return self._columns[feature]

    def pieces(self, row: int) -> list[str]:
        """The text of each token of answer ``row`` (its original text where the run knows it)."""
        if row not in self._pieces:
            lo, hi = self.offsets[row], self.offsets[row + 1]
            text = None if self.texts is None else str(self.texts[row])
            self._pieces[row] = token_pieces(self.tokenizer, self.token_ids[lo:hi], text)
        return self._pieces[row]

    def group(self, row: int) -> str | None:
        return None if self.groups is None else str(self.groups[row])


@dataclass
class Window:
    """A few tokens of one answer around a centre token, with each token's activation of one latent."""

    feature: int
    row: int
    centre: int  # the centre token's position in the window
    tokens: list[str]
    activations: np.ndarray
    label: int
    group: str | None
    kind: str  # top, q25, q50, q75, silent (explanation set); active, silent (scoring set)
    start: int = 0  # the window's first token's position in the answer

    @property
    def active(self) -> bool:
        """True when the latent fires at the window's centre token."""
        return bool(self.activations[self.centre] > 0)

    @property
    def peak(self) -> float:
        return float(self.activations.max()) if self.activations.size else 0.0

    @property
    def text(self) -> str:
        return " ".join("".join(self.tokens).split())

    def marked(self, positions: Sequence[int]) -> str:
        """The window's text with the tokens at ``positions`` between << and >>."""
        chosen = set(int(p) for p in positions)
        parts = []
        for i, token in enumerate(self.tokens):
            if i in chosen:
                stripped = token.lstrip()
                parts.append(token[: len(token) - len(stripped)] + MARK[0] + stripped + MARK[1])
            else:
                parts.append(token)
        return " ".join("".join(parts).split())

    def firing(self, share: float = 0.5, most: int = 3) -> list[int]:
        """Positions of the window's strongest tokens: at least ``share`` of its peak, at most ``most`` of them."""
        if self.peak <= 0:
            return []
        order = np.argsort(-self.activations, kind="stable")
        return sorted(int(i) for i in order[:most] if self.activations[i] >= share * self.peak)

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "row": self.row, "start": self.start, "centre": self.centre,
                "kind": self.kind, "label": self.label, "group": self.group, "text": self.text,
                "peak": round(self.peak, 4)}


@dataclass
class Evidence:
    """One latent's windows: the explanation set and the scoring set (disjoint answers), and how they were split."""

    feature: int
    explain_active: list[Window]
    explain_silent: list[Window]
    score_active: list[Window]
    score_silent: list[Window]
    split: str  # question, answer or run
    explain_rows: frozenset[int]
    score_rows: frozenset[int]
    notes: list[str] = field(default_factory=list)

    @property
    def class_share(self) -> tuple[float, float]:
        """The share of misaligned answers among the explanation set's activating and silent windows."""
        return _share(self.explain_active), _share(self.explain_silent)

    @property
    def follows_class(self) -> str:
        """'misaligned' when the latent's activating windows are more often misaligned than its silent ones."""
        active, silent = self.class_share
        return "misaligned" if active >= silent else "aligned"

    def counts(self) -> dict[str, int]:
        return {"n_explain_active": len(self.explain_active), "n_explain_silent": len(self.explain_silent),
                "n_score_active": len(self.score_active), "n_score_silent": len(self.score_silent)}


def _share(windows: Sequence[Window]) -> float:
    return float(np.mean([w.label for w in windows])) if windows else float("nan")


# ---------------------------------------------------------------------------------------------------- splits


def split_answers(labels: np.ndarray, groups: np.ndarray | None, active: np.ndarray, *, min_questions: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    """(explanation rows, scoring rows, how): a partition of the answers into two disjoint halves.

    By question when at least ``min_questions`` questions have an activating answer (``active``): those questions
    are shuffled and dealt alternately to the two halves, then the others; else by answer, within each question
    (the activating answers dealt alternately, then the silent ones)."""
    n = labels.size
    side = np.zeros(n, dtype=bool)  # True: scoring
    if groups is not None:
        questions = np.unique(groups)
        fired = np.unique(groups[active])
        if fired.size >= min_questions:
            order = list(rng.permutation(fired)) + list(rng.permutation(np.setdiff1d(questions, fired)))
            scoring = {q for i, q in enumerate(order) if i % 2 == 1}
            side = np.isin(groups, list(scoring))
            return np.flatnonzero(~side), np.flatnonzero(side), "question"
    for members in _by_group(groups, n):
        for subset in (members[active[members]], members[~active[members]]):
            shuffled = rng.permutation(subset)
            start = int(rng.integers(2))
            side[shuffled[start::2]] = True
    return np.flatnonzero(~side), np.flatnonzero(side), "answer"


def _by_group(groups: np.ndarray | None, n: int) -> list[np.ndarray]:
    if groups is None:
        return [np.arange(n)]
    return [np.flatnonzero(groups == g) for g in np.unique(groups)]


# ---------------------------------------------------------------------------------------------------- windows


def gather_evidence(corpus: Corpus, feature: int, *, window_before: int = 12, window_after: int = 4,
                    n_top: int = 10, n_quantile: int = 4, n_silent: int = 20, n_score: int = 40,
                    min_questions: int = 4, seed: int = 0, score_on: Corpus | None = None) -> Evidence:
    """The explanation and scoring windows of ``feature`` (see the module docstring)."""
    rng = np.random.default_rng([int(seed), int(feature)])
    sampler = _Sampler(corpus, feature, window_before, window_after, rng)
    if not sampler.active_rows.any():
        raise DataError(f"latent {feature} never fires in {corpus.name or 'the run'}'s answers; there is nothing to "
                        "explain. Pick latents that fire (the ranking's frac_active_pos / frac_active_neg columns).")
    notes: list[str] = []
    if score_on is None:
        explain_rows, score_rows, how = split_answers(corpus.labels, corpus.groups, sampler.active_rows,
                                                      min_questions=min_questions, rng=rng)
        scorer = sampler
        if corpus.groups is None:
            notes.append("the run does not say which question each answer answers: silent windows come from any "
                         "answer and the sets are split by answer")
    else:
        explain_rows, how = np.arange(corpus.n_answers), "run"
        scorer = _Sampler(score_on, feature, window_before, window_after, rng)
        score_rows = np.arange(score_on.n_answers)
    explain_active = sampler.top(explain_rows, n_top)
    used = {w.row for w in explain_active}
    for q in QUANTILES:
        explain_active += sampler.at_quantile(explain_rows, q, n_quantile, used, kind=f"q{int(q * 100)}")
        used |= {w.row for w in explain_active}
    explain_silent = sampler.silent(explain_rows, n_silent, near=explain_active)
    score_active = scorer.stratified(score_rows, n_score)
    score_silent = scorer.silent(score_rows, len(score_active), near=score_active)
    if len(score_active) < n_score:
        notes.append(f"{len(score_active)} activating windows held out (asked for {n_score})")
    if len(score_silent) < len(score_active):
        notes.append(f"{len(score_silent)} silent windows held out for {len(score_active)} activating ones")
    return Evidence(feature, explain_active, explain_silent, score_active, score_silent, how,
                    frozenset(int(r) for r in explain_rows), frozenset(int(r) for r in score_rows), notes)


class _Sampler:
    """Draws windows of one latent from one corpus."""

    def __init__(self, corpus: Corpus, feature: int, before: int, after: int, rng: np.random.Generator) -> None:
        self.corpus, self.feature, self.before, self.after, self.rng = corpus, int(feature), before, after, rng
        self.column = corpus.column(feature)
        offsets = corpus.offsets
        self.row_of = np.repeat(np.arange(corpus.n_answers), np.diff(offsets))
        self.best = np.zeros(corpus.n_answers)
        nonempty = np.diff(offsets) > 0
        if nonempty.any():
            self.best[nonempty] = np.maximum.reduceat(self.column, offsets[:-1][nonempty])
        self.active_rows = self.best > 0

    def window(self, row: int, position: int, kind: str) -> Window:
        """The window of answer ``row`` around its token ``position`` (positions within the answer)."""
        lo, hi = self.corpus.offsets[row], self.corpus.offsets[row + 1]
        start, stop = max(0, position - self.before), min(hi - lo, position + self.after + 1)
        pieces = self.corpus.pieces(row)
        return Window(self.feature, int(row), int(position - start), list(pieces[start:stop]),
                      self.column[lo + start: lo + stop].astype(np.float32), int(self.corpus.labels[row]),
                      self.corpus.group(row), kind, int(start))

    def _mask(self, rows: np.ndarray) -> np.ndarray:
        allowed = np.zeros(self.corpus.n_answers, dtype=bool)
        allowed[rows] = True
        return allowed[self.row_of]

    def top(self, rows: np.ndarray, n: int) -> list[Window]:
        """Windows around the peak token of the ``n`` answers among ``rows`` with the highest activation."""
        rows = np.asarray(rows)[self.best[rows] > 0]
        rows = rows[np.lexsort((rows, -self.best[rows]))][:n]
        out = []
        for r in rows:
            lo, hi = self.corpus.offsets[r], self.corpus.offsets[r + 1]
            out.append(self.window(int(r), int(np.argmax(self.column[lo:hi])), "top"))
        return out

    def at_quantile(self, rows: np.ndarray, q: float, n: int, used: set[int], kind: str) -> list[Window]:
        """Windows centred on tokens nearest the activation quantile ``q`` of the active tokens among ``rows``,
        one per answer, answers in ``used`` left out."""
        if n == 0:
            return []
        tokens = np.flatnonzero(self._mask(rows) & (self.column > 0))
        if tokens.size == 0:
            return []
        target = np.quantile(self.column[tokens], q)
        order = tokens[np.argsort(np.abs(self.column[tokens] - target), kind="stable")]
        return self._distinct(order, n, used, kind)

    def stratified(self, rows: np.ndarray, n: int) -> list[Window]:
        """``n`` windows centred on active tokens among ``rows``, drawn evenly from the four quartiles of the
        activation, one per answer where there are enough answers."""
        tokens = np.flatnonzero(self._mask(rows) & (self.column > 0))
        if tokens.size == 0:
            return []
        values = self.column[tokens]
        edges = np.quantile(values, [0.25, 0.5, 0.75])
        strata = np.searchsorted(edges, values, side="right")
        shares = [n // 4 + (1 if i < n % 4 else 0) for i in range(4)]
        out: list[Window] = []
        used: set[int] = set()
        for stratum in (3, 2, 1, 0):  # the strongest first, so that a short supply keeps the clear cases
            members = self.rng.permutation(tokens[strata == stratum])
            out += self._distinct(members, shares[3 - stratum], used, "active")
            used |= {w.row for w in out}
        if len(out) < n:  # few answers: more windows per answer, at other tokens
            taken = {(w.row, w.start + w.centre) for w in out}
            rest = [t for t in self.rng.permutation(tokens)
                    if (int(self.row_of[t]), int(t - self.corpus.offsets[self.row_of[t]])) not in taken]
            out += self._take(rest[: n - len(out)], "active")
        return out[:n]

    def silent(self, rows: np.ndarray, n: int, near: Sequence[Window]) -> list[Window]:
        """``n`` windows centred on tokens where the latent is zero, from answers among ``rows`` to the questions
        of the windows ``near`` (any answer when questions are unknown); windows silent throughout first, one per
        answer first. When ``n`` equals the number of windows ``near``, the i-th is drawn as long as the i-th of
        ``near`` where it can be, so that length tells the two kinds apart no better than it does by chance."""
        if n == 0:
            return []
        rows = np.asarray(rows)
        if self.corpus.groups is not None and near:
            questions = {w.group for w in near}
            rows = rows[np.isin(self.corpus.groups[rows], list(questions))]
        tokens = np.flatnonzero(self._mask(rows) & (self.column == 0))
        if tokens.size == 0:
            return []
        loudest, lengths = self._window_max(tokens)
        order = np.lexsort((self.rng.random(tokens.size), loudest))
        tokens, loudest, lengths = tokens[order], loudest[order], lengths[order]
        if len(near) != n:
            return self._distinct(tokens, n, set(), "silent", repeat=True)
        chosen: list[int] = []
        taken = np.zeros(tokens.size, dtype=bool)
        answers: set[int] = set()
        for target in sorted((len(w.tokens) for w in near), reverse=True):  # the longest, rarest first
            free = ~taken
            if not free.any():
                break
            rows_of = self.row_of[tokens]
            fresh = free & ~np.isin(rows_of, list(answers))
            pool = fresh if fresh.any() else free
            quiet = pool & (loudest == 0)
            pool = quiet if quiet.any() else pool  # silent throughout where there are such windows
            # the nearest length, then the quietest, in the drawn order
            gap = np.where(pool, np.abs(lengths - target), np.iinfo(np.int64).max)
            candidates = np.flatnonzero(gap == gap.min())
            pick = candidates[np.argmin(loudest[candidates])]
            taken[pick] = True
            answers.add(int(rows_of[pick]))
            chosen.append(int(tokens[pick]))
        return self._take(chosen, "silent")

    def _window_max(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The highest activation within the window around each token, and the window's length in tokens."""
        out, lengths = np.empty(tokens.size), np.empty(tokens.size, dtype=np.int64)
        offsets = self.corpus.offsets
        for i, t in enumerate(tokens):
            r = self.row_of[t]
            lo, hi = max(offsets[r], t - self.before), min(offsets[r + 1], t + self.after + 1)
            out[i], lengths[i] = self.column[lo:hi].max(), hi - lo
        return out, lengths

    def _distinct(self, order: Sequence[int], n: int, used: set[int], kind: str, repeat: bool = False) -> list[Window]:
        """Windows at the tokens ``order`` (global indices), one per answer and none in ``used``; with ``repeat``,
        fill up with second windows of the same answers when there are too few answers."""
        chosen, seen, spare = [], set(used), []
        for t in order:
            r = int(self.row_of[t])
            if r in seen:
                if repeat and r not in used:
                    spare.append(t)
                continue
            seen.add(r)
            chosen.append(t)
            if len(chosen) == n:
                break
        if repeat and len(chosen) < n:
            chosen += spare[: n - len(chosen)]
        return self._take(chosen, kind)

    def _take(self, tokens: Sequence[int], kind: str) -> list[Window]:
        offsets = self.corpus.offsets
        return [self.window(int(self.row_of[t]), int(t - offsets[self.row_of[t]]), kind) for t in tokens]
