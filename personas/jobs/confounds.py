"""The confound columns of a ranking, from the capture it was ranked from or from the cache it was read from.

Every ranking the rank jobs write carries, per latent, ``length_corr`` and ``punct_corr`` (Pearson correlation of
the pooled latent with the response's token count and with its share of punctuation tokens), ``top_token_share``
and ``top_token`` (the share of the latent's absolute activation mass on its single heaviest token id, and that id)
and ``kind`` (`personas.scoring.confounds.confound_kind`: ``length``, ``style``, ``single-token`` or empty). Nothing is
captured twice:

- `capture_confounds`: from a `Capture` whose per-token codes were kept (the rank job keeps them while it ranks and
  drops them after, unless asked to keep them), or, without an SAE, from the pooled activations and the response
  token ids (tokenized again, no forward pass); the top-token share needs per-token codes and is NaN without them.
- `cache_confounds`: streamed over a cache's shards, one shard in memory: the per-token codes and token ids give the
  punctuation share of each response and each latent's mass per token id; the correlations come from
  `personas.cache.store.cache_covariate_correlation`. A cache without per-token codes gets NaN for what needs them.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from personas.cache.store import ActivationCache, cache_covariate_correlation
from personas.capturing import tokenize_conversations
from personas.scoring import covariate_correlation
from personas.scoring.confounds import (
    confound_table,
    heaviest_token,
    punctuation_token_ids,
    response_covariates,
)

__all__ = ["cache_confounds", "capture_confounds", "token_texts"]

logger = logging.getLogger(__name__)


def token_texts(tokenizer: Any) -> Any:
    """``ids -> list of str``: each token id's text as the tokenizer writes it alone (for ``top_token_text``)."""
    if tokenizer is None:
        return None
    return lambda ids: [tokenizer.convert_tokens_to_string([t]) for t in tokenizer.convert_ids_to_tokens(list(ids))]


def capture_confounds(captured: Any, features: Any, handle: Any, prompts: Any = None, texts: Any = None
                      ) -> dict[str, np.ndarray]:
    """The confound table (`personas.scoring.confounds.confound_table`'s keys) of the ``features`` that were ranked.

    ``captured.token_codes`` (per-token SAE codes) gives all of it; without them (no SAE), the responses are
    tokenized again from ``prompts``/``texts`` (no forward pass) for the punctuation share, and the top-token share
    is NaN.
    """
    tokenizer = handle.tokenizer
    punct = punctuation_token_ids(tokenizer)
    codes = captured.token_codes
    if codes is not None:
        return confound_table(codes.codes, codes.offsets, codes.token_ids, pooled=features, punctuation_ids=punct)
    tokenized = tokenize_conversations(handle, prompts, texts, captured.config)
    skip = captured.config.skip_first
    ids = [np.asarray(t.input_ids[t.start + skip: t.end], dtype=np.int64) for t in tokenized]
    offsets = np.concatenate([[0], np.cumsum([i.size for i in ids])])
    cov = response_covariates(offsets, np.concatenate(ids) if ids else np.zeros(0, np.int64), punct)
    width = features.shape[1]
    return {"length_corr": covariate_correlation(features, cov["length"]),
            "punct_corr": covariate_correlation(features, cov["punctuation"]),
            "top_token_share": np.full(width, np.nan), "top_token": np.full(width, -1, dtype=np.int64)}


def cache_confounds(cache: ActivationCache, *, hook: str, use: str, tokenizer: Any = None,
                    length_corr: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The confound table of a cache's features at ``hook`` (``use`` ``"sae"`` or ``"pooled"``), streamed.

    ``tokenizer`` names the punctuation tokens (without it, or without cached per-token codes, ``punct_corr`` is
    NaN); ``length_corr`` saves recomputing the length correlations when the caller has them.
    """
    length = cache.index["n_tokens"].to_numpy(np.float64)
    if length_corr is None:
        length_corr = cache_covariate_correlation(cache, length, hook=hook, use=use)
    width = len(length_corr)
    table = {"length_corr": np.asarray(length_corr, dtype=np.float64), "punct_corr": np.full(width, np.nan),
             "top_token_share": np.full(width, np.nan), "top_token": np.full(width, -1, dtype=np.int64)}
    if not cache.has_tokens:
        logger.info("the cache holds no per-token codes: punct_corr and top_token_share are NaN")
        return table
    punct = np.asarray(punctuation_token_ids(tokenizer) if tokenizer is not None else [], dtype=np.int64)
    n_punct = np.zeros(cache.n_rows)
    latents, tokens, mass = [], [], []
    for shard in cache.iter_shards(want=("tokens",)):
        tc = shard.token_codes
        offsets = np.asarray(tc.offsets, dtype=np.int64)
        ids = np.asarray(tc.token_ids, dtype=np.int64)
        resp = np.searchsorted(offsets, np.arange(ids.size), side="right") - 1
        n_punct[shard.start:shard.stop] += np.bincount(resp[np.isin(ids, punct)], minlength=offsets.size - 1)
        if use == "sae":
            coo = tc.codes.tocoo()
            # this shard's (latent, token id) pairs, summed, so that memory grows with distinct pairs only
            pairs, inverse = np.unique(np.stack([coo.col.astype(np.int64), ids[coo.row]]), axis=1, return_inverse=True)
            latents.append(pairs[0])
            tokens.append(pairs[1])
            mass.append(np.bincount(inverse.ravel(), weights=np.abs(coo.data).astype(np.float64),
                                    minlength=pairs.shape[1]))
    if use == "sae" and latents:
        share, top, _ = heaviest_token(np.concatenate(latents), np.concatenate(tokens), np.concatenate(mass), width)
        table["top_token_share"], table["top_token"] = share, top
    if tokenizer is not None:
        share_p = np.divide(n_punct, length, out=np.zeros_like(length), where=length > 0)
        table["punct_corr"] = cache_covariate_correlation(cache, share_p, hook=hook, use=use)
    return table
