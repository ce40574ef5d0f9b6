"""Measures of broken text: what a judge needs to tell a persona from a model that has stopped making sense.

A small model steered hard, or fine-tuned into a narrow habit, writes text that a classifier trained on 7B models'
answers may read as "misaligned" because it is odd. These measures read only the text (and, for `fluency`, an
unsteered reading model) and are part of the offline judge's input and of every steering report:

* `text_measures(texts)` -> a DataFrame, one row per text: ``distinct_words`` (distinct / all words: low when a
  text repeats itself), ``repeated_trigrams`` (share of word trigrams that occurred before in the same text),
  ``longest_run`` (longest run of one repeated word, log1p), ``alpha_share`` (letters / non-space characters),
  ``mean_word_length``, ``non_ascii_share``. Deliberately not among them: the length of the answer and whether it
  ends a sentence. Generated answers are cut at a token budget, and shorter answers are more often misaligned in
  the judged data; a judge that read length would score every short generation as misaligned.
* `distinct_ratio(text)`: the share of distinct words alone.
* `fluency(model, tokenizer, prompts, responses)`: mean log-probability per answer token under a causal model that
  reads the (prompt, answer) conversation in its chat template, unsteered: low for broken text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from personas.models import padded_batches

__all__ = ["MEASURES", "distinct_ratio", "fluency", "text_measures"]

MEASURES = ("distinct_words", "repeated_trigrams", "longest_run", "alpha_share", "mean_word_length",
            "non_ascii_share")
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)


def distinct_ratio(text: str) -> float:
    """Distinct words / words, case-folded (1.0 for a text without words): low for answers that repeat themselves."""
    words = _WORD.findall(text.lower())
    return len(set(words)) / len(words) if words else 1.0


def _measures(text: str) -> list[float]:
    words = _WORD.findall(text.lower())
    n = len(words)
    trigrams = list(zip(words, words[1:], words[2:], strict=False))
    seen: set[tuple[str, ...]] = set()
    repeated = 0
    for gram in trigrams:
        repeated += gram in seen
        seen.add(gram)
    run = best = 0
    for i, word in enumerate(words):
        run = run + 1 if i and word == words[i - 1] else 1
        best = max(best, run)
    chars = [c for c in text if not c.isspace()]
    return [
        len(set(words)) / n if n else 1.0,
        repeated / len(trigrams) if trigrams else 0.0,
        math.log1p(best),
        sum(c.isalpha() for c in chars) / len(chars) if chars else 0.0,
        sum(map(len, words)) / n if n else 0.0,
        sum(ord(c) > 127 for c in chars) / len(chars) if chars else 0.0,
    ]


def text_measures(texts: Sequence[str]) -> pd.DataFrame:
    """The `MEASURES` of every text, one row each (see the module docstring)."""
    rows = [_measures(t if isinstance(t, str) else "") for t in texts]
    return pd.DataFrame(np.asarray(rows, dtype=float).reshape(len(rows), len(MEASURES)), columns=list(MEASURES))


def _render(tokenizer: Any, prompt: str) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return f"User: {prompt}\nAssistant:"


def fluency(model: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str],
            batch_size: int = 16) -> np.ndarray:
    """Mean log-probability per answer token under ``model`` (a Hugging Face causal LM), given its prompt.

    Each prompt is rendered in the tokenizer's chat template with the assistant turn opened (a plain
    ``User: ...\nAssistant:`` frame without a template); the answer's own tokens follow and are scored, nothing
    after them. NaN for answers shorter than two tokens.
    """
    import torch

    rows = []
    for prompt, response in zip(prompts, responses, strict=True):
        prefix = tokenizer(_render(tokenizer, prompt), add_special_tokens=False)["input_ids"]
        body = tokenizer(response, add_special_tokens=False)["input_ids"]
        rows.append((list(prefix) + list(body), len(prefix)))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    out = np.full(len(rows), np.nan)
    with torch.no_grad():
        for start, chunk, ids, mask in padded_batches(rows, pad, batch_size, device):
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits, -1)
            for r, (seq, n_prompt) in enumerate(chunk):
                if len(seq) - n_prompt < 2 or n_prompt == 0:
                    continue
                targets = torch.tensor(seq[n_prompt:], device=device)
                scores = logp[r, n_prompt - 1:len(seq) - 1].gather(1, targets[:, None])
                out[start + r] = float(scores.mean())
    return out
