"""Per-response pooling of per-token SAE codes, and the confounds that make a latent look like a persona feature.

Pure functions on arrays (no models, no files). Per-token codes come as a CSR matrix ``codes`` [T tokens, F latents]
with ``offsets`` [N+1] (rows ``offsets[i]:offsets[i+1]`` are response i's tokens, as in
`personas.capturing.TokenCodes`) and ``token_ids`` [T].

- `pool_codes`: mean, max, fraction of the response's tokens where a latent is active, or the mean of its top-q
  tokens (zeros count as values), per response, all vectorised over the non-zeros.
- `confound_table`: per latent, the correlation of its pooled value with answer length and with the share of
  punctuation tokens, and the share of its activation mass carried by its single heaviest token type (a latent that
  is "the comma" or "the word husband" has a share near 1). `confound_kind` names what a latent is
  (``length``, ``style``, ``single-token`` or ``""``) under the thresholds of `CONFOUND_THRESHOLDS`;
  `flag_confounds` is its boolean.
- `add_confound_columns`: those columns, and ``kind``, on a ranking's rows.
- `residualize`: the part of each feature that covariates (length, punctuation share, ...) fitted on training rows
  do not explain, so a ranking can "control for" them.
- `punctuation_token_ids`: the ids of a tokenizer's tokens that are only punctuation or whitespace (the
  ``punctuation_ids`` the functions above take).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import scipy.sparse

from personas.errors import DataError

__all__ = ["CONFOUND_KINDS", "CONFOUND_THRESHOLDS", "POOLINGS", "add_confound_columns", "confound_kind",
           "confound_table", "flag_confounds", "heaviest_token", "pool_codes", "punctuation_token_ids", "residualize",
           "response_covariates"]

POOLINGS = ("mean", "max", "frac", "topq")
#: What `confound_kind` may call a latent, in the order it checks them (the first that applies wins).
CONFOUND_KINDS = ("length", "style", "single-token")
#: The default thresholds of `confound_kind` / `flag_confounds` (|correlation| above, heaviest-token share above).
CONFOUND_THRESHOLDS = {"max_corr": 0.5, "max_token_share": 0.5}


def _check(codes: Any, offsets: Any) -> tuple[scipy.sparse.csr_matrix, np.ndarray]:
    codes = scipy.sparse.csr_matrix(codes)
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or offsets.size < 2 or offsets[0] != 0 or offsets[-1] != codes.shape[0]:
        raise DataError(
            f"offsets must run from 0 to the number of token rows ({codes.shape[0]}); got {offsets.size} offsets "
            f"from {offsets[0] if offsets.size else None} to {offsets[-1] if offsets.size else None}."
        )
    if np.any(np.diff(offsets) < 0):
        raise DataError("offsets must not decrease; rows offsets[i]:offsets[i+1] are response i's tokens.")
    return codes, offsets


def pool_codes(codes: Any, offsets: Any, how: str = "mean", q: float = 0.25) -> scipy.sparse.csr_matrix:
    """Pool per-token codes [T, F] into one row per response [N, F] (CSR, float64).

    ``how``: ``"mean"`` (over all the response's tokens), ``"max"``, ``"frac"`` (fraction of its tokens where the
    latent is non-zero) or ``"topq"`` (mean of the latent's ``ceil(q * n_tokens)`` largest values in the response,
    zeros included, so ``q=1`` is the mean and a tiny ``q`` the max). A response without tokens pools to zeros.
    """

    if how not in POOLINGS:
        raise DataError(f"pooling how={how!r}; expected one of {POOLINGS}.")
    if how == "topq" and not 0.0 < q <= 1.0:
        raise DataError(f"topq pooling needs 0 < q <= 1; got q={q}.")
    codes, offsets = _check(codes, offsets)
    n, f = offsets.size - 1, codes.shape[1]
    lengths = np.diff(offsets)
    coo = codes.tocoo()
    resp = np.searchsorted(offsets, coo.row, side="right") - 1
    vals = coo.data.astype(np.float64)
    if how in ("mean", "frac"):
        v = vals if how == "mean" else (vals != 0).astype(np.float64)
        out = scipy.sparse.csr_matrix((v, (resp, coo.col)), shape=(n, f))  # duplicates are summed
        inv = np.divide(1.0, lengths, out=np.zeros(n), where=lengths > 0)
        return scipy.sparse.diags(inv) @ out
    if vals.size == 0:
        return scipy.sparse.csr_matrix((n, f))
    key = resp * f + coo.col.astype(np.int64)
    order = np.lexsort((-vals, key)) if how == "topq" else np.argsort(key, kind="stable")
    key, vals, resp = key[order], vals[order], resp[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    ukey = key[starts]
    if how == "max":
        agg = np.maximum.reduceat(vals, starts)
        # a response where the latent is zero on some tokens has a maximum of at least 0
        count = np.diff(np.r_[starts, key.size])
        agg = np.where(count < lengths[resp[starts]], np.maximum(agg, 0.0), agg)
    else:
        m = np.maximum(1, np.ceil(q * lengths)).astype(np.int64)
        rank = np.arange(key.size) - np.repeat(starts, np.diff(np.r_[starts, key.size]))
        keep = rank < m[resp]
        sums = np.bincount(np.searchsorted(ukey, key[keep]), weights=vals[keep], minlength=ukey.size)
        agg = sums / m[ukey // f]
    return scipy.sparse.csr_matrix((agg, (ukey // f, ukey % f)), shape=(n, f))


def punctuation_token_ids(tokenizer: Any) -> list[int]:
    """Ids of the tokenizer's tokens whose text is only punctuation and/or whitespace (sorted)."""
    punct = re.compile(r"^[\W_]+$")
    return sorted(i for t, i in tokenizer.get_vocab().items()
                  if punct.match(tokenizer.convert_tokens_to_string([t]).strip() or "_"))


def response_covariates(offsets: Any, token_ids: Any, punctuation_ids: Any = ()) -> dict[str, np.ndarray]:
    """Per-response covariates: ``length`` (response tokens) and ``punctuation`` (share of tokens whose id is in
    ``punctuation_ids``)."""

    offsets = np.asarray(offsets, dtype=np.int64)
    token_ids = np.asarray(token_ids)
    lengths = np.diff(offsets).astype(np.float64)
    is_punct = np.isin(token_ids, np.asarray(list(punctuation_ids), dtype=token_ids.dtype if token_ids.size else int))
    resp = np.searchsorted(offsets, np.arange(token_ids.size), side="right") - 1
    n_punct = np.bincount(resp[is_punct], minlength=lengths.size).astype(np.float64)
    return {"length": lengths, "punctuation": np.divide(n_punct, lengths, out=np.zeros_like(lengths),
                                                        where=lengths > 0)}


def _column_corr(X: Any, c: np.ndarray) -> np.ndarray:
    """Pearson correlation of every column of X (dense or sparse) with the vector c (0 where a column is constant)."""
    c = np.asarray(c, dtype=np.float64)
    n = c.size
    cc = c - c.mean()
    if scipy.sparse.issparse(X):
        X = scipy.sparse.csr_matrix(X, dtype=np.float64)
        mean = np.asarray(X.mean(axis=0)).ravel()
        sq = np.asarray(X.multiply(X).mean(axis=0)).ravel()
        cov = np.asarray(X.T @ cc).ravel() / n
    else:
        X = np.asarray(X, dtype=np.float64)
        mean = X.mean(axis=0)
        sq = (X * X).mean(axis=0)
        cov = X.T @ cc / n
    sd = np.sqrt(np.maximum(sq - mean * mean, 0.0)) * cc.std()
    return np.divide(cov, sd, out=np.zeros_like(cov), where=sd > 1e-12)


def confound_table(
    codes: Any, offsets: Any, token_ids: Any, *, pooled: Any = None, punctuation_ids: Any = (),
) -> dict[str, np.ndarray]:
    """Per latent: how much of it is length, punctuation or one token type.

    Returns arrays of length F: ``length_corr`` and ``punct_corr`` (Pearson correlation of the pooled latent,
    ``pooled`` or the mean pooling of ``codes``, with response length and with the response's punctuation share),
    ``top_token_share`` (share of the latent's total absolute activation mass on its heaviest token id),
    ``top_token`` (that token id, -1 for a latent that never fires) and ``mass`` (the total absolute mass).
    """

    codes, offsets = _check(codes, offsets)
    token_ids = np.asarray(token_ids, dtype=np.int64)
    if token_ids.size != codes.shape[0]:
        raise DataError(f"token_ids has {token_ids.size} entries for {codes.shape[0]} token rows; expected equal.")
    if pooled is None:
        pooled = pool_codes(codes, offsets, "mean")
    cov = response_covariates(offsets, token_ids, punctuation_ids)
    f = codes.shape[1]
    coo = codes.tocoo()
    top_share, top_token, mass = heaviest_token(coo.col, token_ids[coo.row], np.abs(coo.data), f)
    return {
        "length_corr": _column_corr(pooled, cov["length"]),
        "punct_corr": _column_corr(pooled, cov["punctuation"]),
        "top_token_share": top_share,
        "top_token": top_token,
        "mass": mass,
    }


def heaviest_token(latents: Any, tokens: Any, mass: Any, n_latents: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From (latent, token id, mass) triples (repeats are summed): per latent, the share of its mass on its heaviest
    token id, that id (-1 for a latent without mass) and its total mass; arrays of length ``n_latents``."""

    latents = np.asarray(latents, dtype=np.int64)
    tokens = np.asarray(tokens, dtype=np.int64)
    vocab = int(tokens.max()) + 1 if tokens.size else 1
    ukey, inverse = np.unique(latents * vocab + tokens, return_inverse=True)
    mass_pair = np.bincount(inverse, weights=np.asarray(mass, dtype=np.float64), minlength=ukey.size)
    latent = ukey // vocab
    total = np.bincount(latent, weights=mass_pair, minlength=n_latents).astype(np.float64)
    # heaviest token per latent: sort pairs by (latent, mass) and take each latent's last
    order = np.lexsort((mass_pair, latent))
    last = np.flatnonzero(np.r_[latent[order][1:] != latent[order][:-1], True]) if order.size else order
    share = np.zeros(n_latents)
    top = np.full(n_latents, -1, dtype=np.int64)
    best = order[last]
    share[latent[best]] = np.divide(mass_pair[best], total[latent[best]], out=np.zeros(best.size),
                                    where=total[latent[best]] > 0)
    top[latent[best]] = ukey[best] % vocab
    return share, top, total


def confound_kind(table: dict[str, np.ndarray], *, max_corr: float = CONFOUND_THRESHOLDS["max_corr"],
                  max_token_share: float = CONFOUND_THRESHOLDS["max_token_share"]) -> np.ndarray:
    """Per latent, what confound it is: ``"length"`` (|length_corr| > ``max_corr``), else ``"style"`` (|punct_corr|
    > ``max_corr``), else ``"single-token"`` (its heaviest token carries more than ``max_token_share`` of its
    mass), else ``""``. A NaN entry (a statistic that could not be computed) flags nothing."""

    for name, value in (("max_corr", max_corr), ("max_token_share", max_token_share)):
        if not 0.0 <= float(value) <= 1.0:
            raise DataError(f"{name}={value}; expected a threshold between 0 and 1.")
    with np.errstate(invalid="ignore"):
        tests = [np.abs(np.asarray(table["length_corr"], dtype=np.float64)) > max_corr,
                 np.abs(np.asarray(table["punct_corr"], dtype=np.float64)) > max_corr,
                 np.asarray(table["top_token_share"], dtype=np.float64) > max_token_share]
    kind = np.full(tests[0].shape, "", dtype=object)
    for name, hit in zip(reversed(CONFOUND_KINDS), reversed(tests), strict=False):  # the first kind in the order wins
        kind[hit] = name
    return kind


def flag_confounds(table: dict[str, np.ndarray], *, max_corr: float = CONFOUND_THRESHOLDS["max_corr"],
                   max_token_share: float = CONFOUND_THRESHOLDS["max_token_share"]) -> np.ndarray:
    """True for latents whose |length_corr| or |punct_corr| exceeds ``max_corr`` or whose heaviest token carries
    more than ``max_token_share`` of their mass (`confound_kind` is not empty)."""

    return confound_kind(table, max_corr=max_corr, max_token_share=max_token_share) != ""


def add_confound_columns(ranking: Any, table: dict[str, np.ndarray], *, token_text: Any = None,
                         max_corr: float = CONFOUND_THRESHOLDS["max_corr"],
                         max_token_share: float = CONFOUND_THRESHOLDS["max_token_share"]) -> dict[str, Any]:
    """Add ``length_corr``, ``punct_corr``, ``top_token_share``, ``top_token`` and ``kind`` to ``ranking`` (a
    DataFrame with a ``feature`` column indexing the arrays of ``table``), in place; ``token_text(ids) -> list`` turns
    the top token ids into text when given. Returns the thresholds and the counts of each kind, for a manifest."""

    rows = np.asarray(ranking["feature"], dtype=np.int64)
    for name in ("length_corr", "punct_corr", "top_token_share"):
        ranking[name] = np.asarray(table[name], dtype=np.float64)[rows]
    top = np.asarray(table["top_token"], dtype=np.int64)[rows]
    ranking["top_token"] = top
    if token_text is not None:
        texts = list(token_text([int(t) for t in top if t >= 0]))
        it = iter(texts)
        ranking["top_token_text"] = [next(it) if t >= 0 else "" for t in top]
    kind = confound_kind({k: np.asarray(table[k])[rows] for k in ("length_corr", "punct_corr", "top_token_share")},
                         max_corr=max_corr, max_token_share=max_token_share)
    ranking["kind"] = kind.astype(str)
    return {"max_corr": float(max_corr), "max_token_share": float(max_token_share),
            "order": list(CONFOUND_KINDS), "n_flagged": {k: int((kind == k).sum()) for k in CONFOUND_KINDS}}


def residualize(X: Any, covariates: Any, train: Any = None) -> np.ndarray:
    """Columns of X minus their least-squares fit on ``covariates`` [N, C] (with an intercept), fitted on the rows
    ``train`` (boolean mask or indices; default all rows) and applied to every row. Returns a dense array."""

    X = X.toarray() if scipy.sparse.issparse(X) else np.asarray(X, dtype=np.float64)
    C = np.asarray(covariates, dtype=np.float64)
    C = C.reshape(-1, 1) if C.ndim == 1 else C
    if C.shape[0] != X.shape[0]:
        raise DataError(f"covariates have {C.shape[0]} rows for {X.shape[0]} rows of X; expected equal.")
    design = np.column_stack([np.ones(C.shape[0]), C])
    rows = np.arange(X.shape[0]) if train is None else np.asarray(train)
    beta, *_ = np.linalg.lstsq(design[rows], X[rows], rcond=None)
    return X - design @ beta
