"""Read activations at named hook sites on response tokens only, pooled per response.

The prompt, the chat template and special tokens are masked: only the tokens of the model's response count.
Each conversation is tokenized once, explicitly, so no second BOS is prepended:

* causal models with a chat template: the template renders the prompt (with the generation prompt) and the
  response is tokenized after it; tokens the template adds after the response are not needed (causal attention).
* causal models without a template: ``CaptureConfig.prompt_format`` renders the prompt, BOS is added when the
  model expects it.
* encoders (BERT-style, e.g. the offline default MiniLM): prompt and response are a sentence pair; the response
  is the second segment, its ``[SEP]`` excluded.

Batches are formed from responses of similar length, right-padded, and the forward pass stops after the
deepest hooked block (``stop_at_layer``). When an SAE is given, each response token is encoded and the codes
are pooled per response (the mean of per-token latent activations, as in the model-diffing work), and the SAE's
reconstruction of those tokens is measured on the way (``Capture.stats["sae_fit"]``: explained variance, L0, dead
fraction), so every ranking's manifest says how well the SAE fits the data it ranked.

Why this module is long: tokenization under each kind of chat template, the batched hook loop with its out-of-memory
fallback, and pooling of dense activations and sparse codes are one step that every capture path shares; split, the
masks and the pooling would have to agree across modules.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from personas.config import CaptureConfig
from personas.devices import resolve_dtype
from personas.errors import DataError, PersonasError
from personas.logs import TokenRate
from personas.models import as_model_handle
from personas.saes import ReconstructionStats, SparseCodes, check_site, encode_sparse

if TYPE_CHECKING:
    import scipy.sparse
    import torch

    from personas.models import ModelHandle

logger = logging.getLogger(__name__)

#: A response token whose norm exceeds this multiple of the median response-token norm is counted as an outlier.
NORM_OUTLIER_RATIO = 20.0
#: Response tokens decoded to measure an SAE's explained variance during a capture (a seeded sample; see `capture`).
SAE_FIT_TOKENS = 4096


@dataclass
class Tokenized:
    """One conversation, tokenized once: ``input_ids[start:end]`` are the response tokens that count."""

    input_ids: list[int]
    start: int
    end: int
    token_type_ids: list[int] | None = None
    truncated: bool = False

    @property
    def n_response(self) -> int:
        return self.end - self.start


def tokenize_conversations(
    handle: ModelHandle, prompts: Sequence[str], responses: Sequence[str], config: CaptureConfig | None = None
) -> list[Tokenized]:
    """Tokenize prompt/response pairs and locate the response tokens (see the module docstring)."""
    config = clamp_max_length(handle, config or CaptureConfig())
    if len(prompts) != len(responses):
        raise DataError(f"got {len(prompts)} prompts but {len(responses)} responses; expected one prompt per response.")
    tok = handle.tokenizer
    if handle.is_encoder:
        out = _tokenize_pairs(tok, prompts, responses, config)
    else:
        out = _tokenize_causal(handle, tok, prompts, responses, config)
    n_ctx = int(getattr(handle.model.cfg, "n_ctx", 0) or 0)
    too_long = [i for i, t in enumerate(out) if n_ctx and len(t.input_ids) > n_ctx]
    if too_long:
        raise DataError(
            f"{len(too_long)} conversation(s) (rows {too_long[:10]}) are up to "
            f"{max(len(out[i].input_ids) for i in too_long)} tokens long after truncation to max_length="
            f"{config.max_length}, but model {handle.model_id!r} has {n_ctx} positions (n_ctx). "
            f"Set max_length (--max-length) to at most {n_ctx}."
        )
    empty = [i for i, t in enumerate(out) if t.n_response - config.skip_first < 1]
    if empty:
        raise DataError(
            f"{len(empty)} response(s) have no tokens left to pool (rows {empty[:10]}) after skip_first="
            f"{config.skip_first} and max_length={config.max_length}. Lower skip_first, raise max_length, "
            "or drop those rows."
        )
    return out


def _tokenize_pairs(tok, prompts, responses, config: CaptureConfig) -> list[Tokenized]:
    enc = tok(list(prompts), list(responses), truncation="longest_first", max_length=config.max_length)
    full_lengths = [len(ids) for ids in tok(list(responses), add_special_tokens=False)["input_ids"]]  # one call
    out = []
    for i in range(len(prompts)):
        seq = enc.sequence_ids(i)
        positions = [j for j, s in enumerate(seq) if s == 1]
        if not positions:
            out.append(Tokenized(enc["input_ids"][i], 0, 0))
            continue
        out.append(
            Tokenized(
                input_ids=enc["input_ids"][i],
                start=positions[0],
                end=positions[-1] + 1,
                token_type_ids=enc["token_type_ids"][i] if "token_type_ids" in enc else None,
                truncated=len(positions) < full_lengths[i],
            )
        )
    return out


def _tokenize_causal(handle: ModelHandle, tok, prompts: Sequence[str], responses: Sequence[str],
                     config: CaptureConfig) -> list[Tokenized]:
    """Prefixes (chat template or ``prompt_format``) and responses, each list tokenized in one batched call."""
    prefixes, texts = [], []
    bos = getattr(handle.model.cfg, "default_prepend_bos", True) and tok.bos_token_id is not None
    templated = bool(getattr(tok, "chat_template", None))
    for prompt, response in zip(prompts, responses, strict=True):
        if templated:
            prefixes.append(_chat_prefix(tok, prompt, response, config))
        else:
            prefix = config.prompt_format.replace("{prompt}", prompt)
            if prefix and not prefix[-1].isspace() and response and not response[0].isspace():
                response = " " + response
            prefixes.append(prefix)
        texts.append(response)
    prefix_batch = tok(prefixes, add_special_tokens=False)["input_ids"] if prefixes else []
    response_batch = tok(texts, add_special_tokens=False)["input_ids"] if texts else []
    out = []
    for prefix_ids, response_ids in zip(prefix_batch, response_batch, strict=True):
        prefix_ids = list(prefix_ids)
        if not templated and bos:
            prefix_ids = [tok.bos_token_id, *prefix_ids]
        budget = config.max_length - len(prefix_ids)
        if budget < min(len(response_ids), config.max_length // 2):
            # keep the first prompt token (BOS or the template's opening) and the end of the prompt
            keep = config.max_length - min(len(response_ids), config.max_length // 2)
            prefix_ids = prefix_ids[:1] + prefix_ids[len(prefix_ids) - (keep - 1) :]
            budget = config.max_length - len(prefix_ids)
        truncated = len(response_ids) > budget
        response_ids = list(response_ids[:budget])
        out.append(Tokenized(prefix_ids + response_ids, len(prefix_ids), len(prefix_ids) + len(response_ids), None,
                             truncated))
    return out


def _chat_prefix(tok, prompt: str, response: str, config: CaptureConfig) -> str:
    """The text the chat template puts before the assistant's response."""
    messages = [{"role": "user", "content": prompt}]
    if config.system_prompt:
        messages.insert(0, {"role": "system", "content": config.system_prompt})
    try:
        prefix = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        full = tok.apply_chat_template(
            [*messages, {"role": "assistant", "content": response}], tokenize=False
        )
    except Exception as exc:  # jinja errors, e.g. a template without a system role
        raise PersonasError(
            f"the model's chat template failed on a conversation ({type(exc).__name__}: {exc}). "
            "If it rejects the system role, drop system_prompt."
        ) from exc
    at = full.find(response, len(prefix) if full.startswith(prefix) else 0) if response else -1
    if at < 0:
        at = full.find(response.strip())
    if at < 0:
        raise PersonasError(
            "the chat template changed the response text, so its tokens cannot be located "
            f"(response starts {response[:40]!r}). Pass pre-rendered text with a plain prompt_format instead."
        )
    return full[:at]


# --------------------------------------------------------------------------------------------------- pooling


def pool_segments(values: torch.Tensor, segments: torch.Tensor, n_segments: int, how: str) -> torch.Tensor:
    """Pool rows of ``values`` [n, d] into ``n_segments`` rows by segment id (mean, max or last row)."""
    import torch

    d = values.shape[1]
    if how == "mean":
        out = torch.zeros(n_segments, d, dtype=values.dtype, device=values.device)
        out.index_add_(0, segments, values)
        counts = torch.bincount(segments, minlength=n_segments).clamp(min=1).to(values.dtype)
        return out / counts[:, None]
    if how == "max":
        out = torch.full((n_segments, d), float("-inf"), dtype=values.dtype, device=values.device)
        out.scatter_reduce_(0, segments[:, None].expand(-1, d), values, reduce="amax", include_self=True)
        return torch.nan_to_num(out, neginf=0.0)
    if how == "last":
        positions = torch.arange(len(segments), device=values.device)
        last = torch.full((n_segments,), -1, dtype=torch.long, device=values.device)
        last.scatter_reduce_(0, segments, positions, reduce="amax", include_self=True)
        out = torch.zeros(n_segments, d, dtype=values.dtype, device=values.device)
        has = last >= 0
        out[has] = values[last[has]]
        return out
    raise PersonasError(f"pool={how!r}; expected one of 'mean', 'max', 'last'.")


def pool_sparse_codes(
    codes: SparseCodes, segments: np.ndarray, n_segments: int, how: str
) -> scipy.sparse.csr_matrix:
    """Pool sparse per-token codes into ``n_segments`` rows (CSR), as `pool_segments` would pool the dense codes.

    ``segments[t]`` is the segment (response) of token row ``t``; rows of one segment are contiguous and in order.
    Only the non-zeros are touched: mean divides segment sums by the segment's token count; max takes the largest
    value and keeps 0 where a latent is silent on some token of the segment (codes may be negative); last keeps
    the last token's codes.
    """
    import scipy.sparse

    counts = np.bincount(segments, minlength=n_segments)
    rows = codes.rows.cpu().numpy()
    cols = codes.cols.cpu().numpy().astype(np.int64, copy=False)
    vals = codes.values.cpu().numpy().astype(np.float64, copy=False)
    seg = segments[rows] if rows.size else rows
    shape = (n_segments, codes.n_cols)
    if how == "mean":
        summed = scipy.sparse.csr_matrix((vals, (seg, cols)), shape=shape)  # duplicates are summed
        summed.sum_duplicates()
        scale = 1.0 / np.maximum(counts, 1)
        out = scipy.sparse.diags(scale) @ summed
    elif how == "max":
        key = seg * codes.n_cols + cols
        order = np.lexsort((-vals, key))  # per (segment, latent): largest value first
        key, vals_sorted = key[order], vals[order]
        first = np.ones(key.size, dtype=bool)
        first[1:] = key[1:] != key[:-1]
        starts = np.flatnonzero(first)
        n_nonzero = np.diff(np.append(starts, key.size))
        best = vals_sorted[starts]
        uniq = key[starts]
        seg_u = uniq // codes.n_cols
        # a latent that is zero on some token of the segment has max(best, 0)
        best = np.where(n_nonzero < counts[seg_u], np.maximum(best, 0.0), best)
        out = scipy.sparse.csr_matrix((best, (seg_u, uniq % codes.n_cols)), shape=shape)
    elif how == "last":
        last_row = np.cumsum(counts) - 1  # the last token row of each segment (rows are contiguous)
        has = counts > 0
        target = np.full(segments.size, -1, dtype=np.int64)
        target[last_row[has]] = np.flatnonzero(has)
        keep = target[rows] >= 0 if rows.size else np.zeros(0, dtype=bool)
        out = scipy.sparse.csr_matrix((vals[keep], (target[rows[keep]], cols[keep])), shape=shape)
    else:
        raise PersonasError(f"pool={how!r}; expected one of 'mean', 'max', 'last'.")
    out = scipy.sparse.csr_matrix(out, dtype=np.float32)
    out.eliminate_zeros()
    out.sort_indices()
    return out


# --------------------------------------------------------------------------------------------------- capture


@dataclass
class TokenCodes:
    """Per-token SAE codes of every response, sparse: rows ``offsets[i]:offsets[i+1]`` belong to response i."""

    codes: scipy.sparse.csr_matrix
    offsets: np.ndarray
    token_ids: np.ndarray

    def response(self, i: int) -> tuple[np.ndarray, scipy.sparse.csr_matrix]:
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return self.token_ids[lo:hi], self.codes[lo:hi]


@dataclass
class Capture:
    """Pooled activations (and SAE codes) of N responses, in the order they were given."""

    pooled: dict[str, np.ndarray]
    n_tokens: np.ndarray
    config: CaptureConfig
    model: dict[str, Any]
    features: scipy.sparse.csr_matrix | None = None
    sae_hook: str | None = None
    token_codes: TokenCodes | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.n_tokens)

    def provenance(self) -> dict[str, Any]:
        return {"capture": asdict(self.config), "model": self.model, "sae_hook": self.sae_hook, **self.stats}

    def __repr__(self) -> str:
        sites = ", ".join(f"{hook} ({a.shape[1]} dims)" for hook, a in self.pooled.items())
        codes = "" if self.features is None else f"; SAE codes {self.features.shape[1]} latents at {self.sae_hook}"
        tokens = "" if self.token_codes is None else " + per-token codes"
        return (f"Capture({len(self)} responses, {int(self.n_tokens.sum())} response tokens, {self.config.pool} "
                f"pooling of {(self.model or {}).get('model')} at {sites}{codes}{tokens})")


def capture(
    model: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    hooks: Sequence[str] | str | None = None,
    config: CaptureConfig | None = None,
    sae: Any = None,
    keep_tokens: bool = False,
    encode_batch_tokens: int = 8192,
    allow_model_mismatch: bool = False,
    progress: bool = True,
    sae_fit_tokens: int | None = SAE_FIT_TOKENS,
) -> Capture:
    """Run the model over prompt/response pairs and pool activations over response tokens.

    Args:
        model: a `ModelHandle` from `load_model`, or a TransformerLens `HookedTransformer` / `TransformerBridge`.
        prompts, responses: the conversations, one prompt per response.
        hooks: hook names to read; default ``config.hook``, else the SAE's ``hook_name``.
        config: tokenization, pooling, batching (see `CaptureConfig`).
        sae: an sae-lens SAE; its site is checked against the model, then each response token is encoded and the
            codes are pooled into `Capture.features` (a CSR matrix, responses x latents); ``stats["sae_fit"]``
            holds its explained variance, L0 and dead fraction on these response tokens.
        sae_fit_tokens: the explained variance in ``stats["sae_fit"]`` is measured on a seeded sample of this many
            response tokens (L0 and dead latents on all of them), so that measuring the fit costs a small fixed
            decode instead of a second pass over every token; None decodes every token, 0 none.
        keep_tokens: also keep the per-token SAE codes (sparse), for top-activating examples.
        allow_model_mismatch: accept an SAE whose recorded model differs from this model (hook and width must
            still match).
    """
    import scipy.sparse
    import torch

    handle = as_model_handle(model)
    config = clamp_max_length(handle, config or CaptureConfig())
    hook_list = _resolve_hooks(hooks, config, sae)
    handle.check_hooks(hook_list)
    sae_hook = None
    if sae is not None:
        sae_hook = sae.cfg.metadata.hook_name if sae.cfg.metadata.hook_name in hook_list else hook_list[0]
        check_site(sae, sae_hook, handle, allow_model_mismatch=allow_model_mismatch)

    tokenized = tokenize_conversations(handle, prompts, responses, config)
    n = len(tokenized)
    device = handle.device
    pad_id = handle.tokenizer.pad_token_id if handle.tokenizer.pad_token_id is not None else 0
    pooled = {h: np.zeros((n, handle.d_model), dtype=np.float32) for h in hook_list}
    n_tokens = np.array([t.n_response - config.skip_first for t in tokenized], dtype=np.int64)
    feature_parts: list[Any] = []
    token_parts: dict[int, tuple[Any, np.ndarray]] = {}
    norm_ratios: list[float] = []
    n_outliers = 0
    fit = None  # the SAE's fit on these response tokens
    if sae is not None:
        fit = ReconstructionStats(int(sae.cfg.d_sae), sample_tokens=sae_fit_tokens,
                                  total_tokens=int(np.clip(n_tokens, 0, None).sum()))

    order = np.argsort([-len(t.input_ids) for t in tokenized], kind="stable")
    batches = [order[i : i + config.batch_size] for i in range(0, n, config.batch_size)]
    bar = TokenRate("capture", n, progress)  # input tokens per second in the bar's postfix
    for batch in batches:
        items = [tokenized[i] for i in batch]
        width = max(len(t.input_ids) for t in items)
        ids = torch.full((len(items), width), pad_id, dtype=torch.long)
        attn = torch.zeros((len(items), width), dtype=torch.long)
        types = torch.zeros((len(items), width), dtype=torch.long) if items[0].token_type_ids is not None else None
        mask = torch.zeros((len(items), width), dtype=torch.bool)
        for row, t in enumerate(items):
            ids[row, : len(t.input_ids)] = torch.tensor(t.input_ids)
            attn[row, : len(t.input_ids)] = 1
            mask[row, t.start + config.skip_first : t.end] = True
            if types is not None:
                types[row, : len(t.token_type_ids)] = torch.tensor(t.token_type_ids)
        acts = run_hooks_halving_on_oom(handle, ids.to(device), attn.to(device), hook_list,
                                        None if types is None else types.to(device))
        mask = mask.to(device)
        segments = mask.nonzero()[:, 0]
        for hook, value in acts.items():
            flat = value[mask].float()
            pooled[hook][batch] = pool_segments(flat, segments, len(items), config.pool).cpu().numpy()
            if hook == hook_list[0]:
                norms = flat.norm(dim=-1)
                median = norms.median().clamp(min=1e-6)
                ratio = norms / median
                n_outliers += int((ratio > NORM_OUTLIER_RATIO).sum())
                norm_ratios.append(float(ratio.max()))
        if sae is not None:
            codes = encode_sparse(sae, acts[sae_hook][mask], batch_tokens=encode_batch_tokens, stats=fit)
            seg_np = segments.cpu().numpy()
            feature_parts.append(pool_sparse_codes(codes, seg_np, len(items), config.pool))
            if keep_tokens:
                batch_codes = codes.to_csr()  # token rows of the batch, response after response
                bounds = np.concatenate([[0], np.cumsum(np.bincount(seg_np, minlength=len(items)))])
                for row, idx in enumerate(batch):
                    t = items[row]
                    token_parts[int(idx)] = (
                        batch_codes[bounds[row] : bounds[row + 1]],
                        np.asarray(t.input_ids[t.start + config.skip_first : t.end], dtype=np.int64),
                    )
        bar.update(len(items), int(attn.sum()))
    bar.close()

    if n_outliers:
        logger.warning(
            "%d response tokens have activation norms above %.0fx the median (max %.0fx): attention-sink-like "
            "outliers dominate means; consider CaptureConfig.skip_first or pool='max'.",
            n_outliers,
            NORM_OUTLIER_RATIO,
            max(norm_ratios),
        )
    result = Capture(
        pooled=pooled,
        n_tokens=n_tokens,
        config=config,
        model=handle.provenance(),
        sae_hook=sae_hook,
        stats={
            "n_responses": n,
            "n_response_tokens": int(n_tokens.sum()),
            "n_truncated": int(sum(t.truncated for t in tokenized)),
            "n_norm_outlier_tokens": n_outliers,
            "max_norm_ratio": float(max(norm_ratios)) if norm_ratios else None,
            "stop_at_layer": handle.stop_layer(hook_list),
            **({"sae_fit": fit.summary()} if fit is not None else {}),
        },
    )
    if sae is not None:
        stacked = scipy.sparse.vstack(feature_parts, format="csr")  # rows in batch order
        result.features = stacked[np.argsort(order, kind="stable")]
        if keep_tokens:
            parts = [token_parts[i] for i in range(n)]
            offsets = np.concatenate([[0], np.cumsum([p[1].size for p in parts])])
            result.token_codes = TokenCodes(
                codes=scipy.sparse.vstack([p[0] for p in parts], format="csr"),
                offsets=offsets,
                token_ids=np.concatenate([p[1] for p in parts]),
            )
    return result


def run_hooks_halving_on_oom(handle: ModelHandle, ids: torch.Tensor, attn: torch.Tensor, hooks: list[str],
                             types: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """`ModelHandle.run_hooks` on a batch; on a CUDA out-of-memory error, the batch is run again in two halves
    (each halved again if it too runs out), logged, and the activations are concatenated: rows are independent, so
    the result is the batch's. A single sequence that does not fit re-raises the error."""
    import torch

    try:
        return handle.run_hooks(ids, attn, hooks, types)
    except torch.cuda.OutOfMemoryError:
        if ids.shape[0] < 2:
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        logger.warning("CUDA out of memory on a batch of %d sequences x %d tokens: retrying it in two halves "
                       "(a smaller --batch-size avoids the retry)", ids.shape[0], ids.shape[1])
    half = ids.shape[0] // 2
    parts = [run_hooks_halving_on_oom(handle, ids[rows], attn[rows], hooks, None if types is None else types[rows])
             for rows in (slice(0, half), slice(half, None))]
    return {h: torch.cat([part[h] for part in parts]) for h in hooks}


def clamp_max_length(handle: ModelHandle, config: CaptureConfig) -> CaptureConfig:
    """``config`` with ``max_length`` at most the model's context (``n_ctx``).

    A ``max_length`` the user asked for beyond the context is refused (a `DataError` naming the limit): it cannot
    be honoured, and running without a word would mislead. The generic default (512) is lowered to the context of
    a model with fewer positions, logged at INFO.
    """
    n_ctx = int(getattr(handle.model.cfg, "n_ctx", 0) or 0)
    if not n_ctx or config.max_length <= n_ctx:
        return config
    if config.max_length != CaptureConfig.max_length:
        raise DataError(f"max_length={config.max_length} is longer than model {handle.model_id!r} can read: it has "
                        f"{n_ctx} positions (n_ctx). Set max_length (--max-length) to at most {n_ctx}.")
    logger.info("max_length=%d is longer than the context of model %r (%d tokens, n_ctx): lowered to %d",
                config.max_length, handle.model_id, n_ctx, n_ctx)
    return replace(config, max_length=n_ctx)


def _resolve_hooks(hooks, config: CaptureConfig, sae) -> list[str]:
    if isinstance(hooks, str):
        hooks = [hooks]
    if hooks:
        return list(dict.fromkeys(hooks))
    if config.hook:
        return [config.hook]
    if sae is not None:
        return [sae.cfg.metadata.hook_name]
    raise PersonasError("no hook to read: pass hooks=['blocks.N.hook_resid_post'], set CaptureConfig.hook, or give an SAE.")


def token_activations(
    model: Any,
    texts: Sequence[str],
    hook: str,
    *,
    batch_size: int = 32,
    max_length: int = 256,
    dtype: str = "float32",
    progress: bool = True,
) -> torch.Tensor:
    """Activations of every non-special token of plain texts at one hook, stacked [n_tokens, d_model] on the CPU.

    Rows follow the texts in the order given, and the tokens of each text in order.
    This is what SAEs are trained on. Special tokens (BOS, [CLS], [SEP], padding) are left out: attention-sink
    positions would otherwise dominate the reconstruction loss.
    """
    import torch
    from tqdm.auto import tqdm

    handle = as_model_handle(model)
    handle.check_hooks([hook])
    tok = handle.tokenizer
    out_dtype = resolve_dtype(dtype)
    special = set(tok.all_special_ids)
    parts: dict[int, torch.Tensor] = {}
    bar = tqdm(total=len(texts), desc=f"activations {hook}", unit="doc", disable=not progress, leave=False)
    order = np.argsort([len(t) for t in texts], kind="stable")
    for lo in range(0, len(texts), batch_size):
        batch = [texts[i] for i in order[lo : lo + batch_size]]
        enc = tok(batch, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
        ids = enc["input_ids"]
        if not handle.is_encoder and tok.bos_token_id is not None and getattr(handle.model.cfg, "default_prepend_bos", True):
            if not bool((ids[:, 0] == tok.bos_token_id).all()):
                ids = torch.cat([torch.full((ids.shape[0], 1), tok.bos_token_id), ids], dim=1)
                enc["attention_mask"] = torch.cat([torch.ones(ids.shape[0], 1, dtype=torch.long), enc["attention_mask"]], 1)
        attn = enc["attention_mask"]
        keep = attn.bool() & ~torch.isin(ids, torch.tensor(sorted(special), dtype=ids.dtype))
        types = enc.get("token_type_ids")
        acts = handle.run_hooks(
            ids.to(handle.device), attn.to(handle.device), [hook], None if types is None else types.to(handle.device)
        )[hook]
        per_doc = acts[keep.to(acts.device)].to("cpu", out_dtype).split(keep.sum(1).tolist())
        for doc, value in zip(order[lo : lo + batch_size], per_doc, strict=True):
            parts[int(doc)] = value
        bar.update(len(batch))
    bar.close()
    if not parts:
        raise DataError("no texts were given to capture token activations from.")
    return torch.cat([parts[i] for i in range(len(texts))])
