"""The organism's diff at the level of SAE latents: which latents of an SAE rise in the narrow fine-tune, and what
they fire on.

* `diff_latents` merges the fine-tune's adapter into a temporary Hugging Face folder (`save_merged`) and runs the
  project's own model diffing on the pair (`personas.jobs.diff.diff_models`: the same answers teacher-forced through
  the base model and the fine-tune, encoded by the *same* SAE, pooled over answer tokens, a paired Wilcoxon test per
  latent with Benjamini-Hochberg q-values), exactly what ``personas diff --base MODEL --finetuned FOLDER`` does.
* `top_increases` picks the latents that rose: significant (q below the diff's alpha), sorted by mean increase
  (the ranking of the persona-features work), with their effect size and how often they fire.
* `encode_answers` encodes per-token residuals (`personas.organism.chat.answer_residuals`) once per answer;
  `latent_examples` says what a latent fires on (the answer tokens where it is largest, with a few tokens of
  context) and `latent_means` pools codes per answer (mean over tokens), e.g. to ask whether a diff latent also
  separates misaligned from aligned answers read by the base model.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from personas.config import CaptureConfig, DiffConfig
from personas.data.prompts import Prompts
from personas.errors import DataError
from personas.jobs.diff import DiffResult, diff_models
from personas.organism.adapter import Adapter, save_merged
from personas.saes import encode

__all__ = ["diff_latents", "encode_answers", "latent_examples", "latent_means", "top_increases"]


def diff_latents(base_folder: str | os.PathLike, adapter: Adapter, tokenizer: Any, prompts: Sequence[str],
                 responses: Sequence[str], sae: Any, *, hook: str, batch_size: int = 16) -> DiffResult:
    """`personas.diff` between the base model folder and the base model with ``adapter`` merged in.

    The merged model lives in a temporary folder that is removed afterwards; ``adapter.model`` is left unchanged.
    """
    if len(prompts) < 2:
        raise DataError(f"the latent diff needs at least 2 (prompt, answer) pairs; got {len(prompts)}.")
    with tempfile.TemporaryDirectory(prefix="personas-merged-") as merged:
        save_merged(adapter, tokenizer, merged)
        pairs = Prompts(list(prompts), list(responses), [str(i) for i in range(len(prompts))],
                        f"organism answers ({len(prompts)})")
        return diff_models(str(base_folder), merged, pairs, sae, hook=hook,
                           capture=CaptureConfig(batch_size=batch_size), config=DiffConfig(), progress=False)


def top_increases(table: Any, n: int = 5, alpha: float = 0.05) -> Any:
    """The ``n`` latents with the largest mean increase among those whose increase is significant (q < alpha)."""
    rising = table[(table["mean_diff"] > 0) & (table["q_value"] < alpha)]
    return rising.sort_values(["mean_diff", "p_value", "feature"], ascending=[False, True, True],
                              kind="stable").head(n).reset_index(drop=True)


def encode_answers(sae: Any, hidden: Sequence[np.ndarray]) -> list[np.ndarray]:
    """SAE codes of every answer token (`personas.saes.encode`): one (n_tokens, d_sae) array per answer."""
    import torch

    return [encode(sae, torch.as_tensor(h)).cpu().numpy() if len(h) else np.zeros((0, int(sae.cfg.d_sae)), np.float32)
            for h in hidden]


def latent_means(codes: Sequence[np.ndarray], features: Sequence[int]) -> np.ndarray:
    """Mean over each answer's tokens of the given latents' codes (from `encode_answers`): (n answers, len(features))."""
    cols = np.asarray(list(features), dtype=np.int64)
    rows = [c[:, cols].mean(axis=0) if len(c) else np.zeros(cols.size, np.float32) for c in codes]
    return np.stack(rows) if rows else np.zeros((0, cols.size), np.float32)


def latent_examples(codes: Sequence[np.ndarray], token_ids: Sequence[Sequence[int]], tokenizer: Any, feature: int,
                    k: int = 5, context: int = 6) -> list[dict[str, Any]]:
    """The ``k`` answer tokens where ``feature`` is largest (codes from `encode_answers`): activation, answer index,
    and the token marked ``[[...]]`` in ``context`` tokens on each side."""
    if len(codes) != len(token_ids):
        raise DataError(f"latent_examples got codes of {len(codes)} answers for {len(token_ids)} token lists.")
    found = []
    for i, (c, ids) in enumerate(zip(codes, token_ids, strict=True)):
        if len(c) != len(ids):
            raise DataError(f"answer {i}: {len(c)} code rows for {len(ids)} tokens; expected one row per token.")
        acts = c[:, feature]
        found += [(float(acts[pos]), i, int(pos)) for pos in np.flatnonzero(acts > 0)]
    found.sort(key=lambda t: (-t[0], t[1], t[2]))
    out = []
    for value, i, pos in found[:k]:
        ids = list(token_ids[i])
        left = tokenizer.decode(ids[max(0, pos - context):pos])
        right = tokenizer.decode(ids[pos + 1:pos + 1 + context])
        text = f"{left}[[{tokenizer.decode([ids[pos]])}]]{right}"
        out.append({"activation": round(value, 3), "answer": i, "context": " ".join(text.split())})
    return out
