"""Steering with SAE features: add a latent's decoder direction (or clamp the latent) while a causal model runs.

`steer` is a context manager that registers one forward hook at the SAE's site (``sae.cfg.metadata.hook_name``)
of a TransformerLens `HookedTransformer` or `TransformerBridge`, and removes exactly that hook on exit, also when
the block raises. Two modes:

* ``mode="add"``: the residual stream at the site becomes ``x + alpha * W_dec[feature]``;
* ``mode="clamp"``: the latent is set to ``value`` in the SAE's reconstruction, ``x + (value - f(x)) * W_dec[feature]``
  where ``f(x)`` is the latent's current activation (``sae.encode``) at each position.

``positions`` chooses where: ``"all"`` tokens, only the ``"prompt"`` tokens (positions < ``prompt_len``), or only
the ``"response"`` tokens (positions >= ``prompt_len``, i.e. the generated ones). `generate` sets ``prompt_len``
of the active steering hooks itself. Generation recomputes the whole sequence at each step (no key-value cache),
so positions are absolute and the hook sees every token; this is simple and exact, and slower for long outputs.

`steer_sweep` generates for a list of prompts at several strengths and scores the generations with a detector:
a dose-response table that shows whether the feature drives the behaviour.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from personas.config import MODES, POSITIONS, CaptureConfig, SteerConfig
from personas.detect import load_detector
from personas.errors import PersonasError
from personas.judging import judged_table, score_generations
from personas.models import as_model_handle
from personas.saes import check_site

if TYPE_CHECKING:
    import pandas as pd
    import torch

logger = logging.getLogger(__name__)

__all__ = ["SteerConfig", "Steering", "generate", "parse_alphas", "render_prompt", "steer", "steer_sweep"]


# ------------------------------------------------------------------------------------------------ the hook


class Steering:
    """The forward hook `steer` registers. ``prompt_len`` (an int, or one per batch row) marks where the response
    starts; it must be set for ``positions="prompt"`` or ``"response"`` (`generate` sets it)."""

    def __init__(
        self,
        sae: Any,
        feature: int,
        alpha: float,
        *,
        positions: str = "all",
        mode: str = "add",
        hook_name: str,
        prompt_len: int | Sequence[int] | None = None,
    ) -> None:
        self.sae = sae
        self.feature = int(feature)
        self.alpha = float(alpha)
        self.positions = positions
        self.mode = mode
        self.hook_name = hook_name
        self.prompt_len = prompt_len
        self.calls = 0

    @property
    def direction(self) -> torch.Tensor:
        """The latent's decoder row ``W_dec[feature]`` ([d_in])."""
        return self.sae.W_dec[self.feature].detach()

    def position_mask(self, batch: int, length: int, device: Any) -> torch.Tensor:
        """[batch, length] bool: the positions this hook changes."""
        import torch

        if self.positions == "all":
            return torch.ones(batch, length, dtype=torch.bool, device=device)
        if self.prompt_len is None:
            raise PersonasError(
                f"steering with positions={self.positions!r} needs the prompt length: set steering.prompt_len "
                "(generate() does it), or use positions='all'."
            )
        plen = torch.as_tensor(self.prompt_len, device=device).reshape(-1, 1)
        if plen.shape[0] not in (1, batch):
            raise PersonasError(f"steering.prompt_len has {plen.shape[0]} entries for a batch of {batch}; expected 1 or {batch}.")
        pos = torch.arange(length, device=device).reshape(1, -1)
        mask = pos < plen if self.positions == "prompt" else pos >= plen
        return mask.expand(batch, length)

    def __call__(self, activation: torch.Tensor, hook: Any = None) -> torch.Tensor:
        import torch

        self.calls += 1
        shape = activation.shape
        x = activation.reshape(shape[0], shape[1], -1)  # hook_z-style [B, T, H, d_head] sites are flattened
        direction = self.direction.to(device=x.device, dtype=x.dtype)
        if direction.shape[0] != x.shape[-1]:
            raise PersonasError(
                f"the SAE's decoder rows have {direction.shape[0]} dimensions but the activation at "
                f"{self.hook_name!r} has shape {tuple(shape)}; use an SAE trained on this site."
            )
        mask = self.position_mask(x.shape[0], x.shape[1], x.device).unsqueeze(-1).to(x.dtype)
        if self.mode == "add":
            delta = self.alpha * direction
        else:
            param = next(iter(self.sae.parameters()))
            with torch.no_grad():
                current = self.sae.encode(x.to(param.dtype))[..., self.feature].to(x.dtype)
            delta = (self.alpha - current).unsqueeze(-1) * direction
        return (x + mask * delta).reshape(shape)

    def __repr__(self) -> str:
        return (f"Steering(feature={self.feature}, alpha={self.alpha}, mode={self.mode!r}, "
                f"positions={self.positions!r}, hook={self.hook_name!r})")


@contextmanager
def steer(
    model: Any,
    sae: Any,
    feature: int,
    alpha: float = 0.0,
    *,
    positions: str = "all",
    mode: str = "add",
    prompt_len: int | Sequence[int] | None = None,
    hook: str | None = None,
    allow_model_mismatch: bool = False,
) -> Iterator[Steering]:
    """Steer ``model`` with latent ``feature`` of ``sae`` inside the ``with`` block.

    Args:
        model: a `ModelHandle`, `HookedTransformer` or `TransformerBridge`.
        sae: the sae-lens SAE whose decoder row gives the direction; its ``hook_name`` is the site.
        feature: latent index.
        alpha: added multiple of ``W_dec[feature]`` (``mode="add"``), or the value the latent is clamped to
            (``mode="clamp"``).
        positions: ``"all"``, ``"prompt"`` (positions < prompt_len) or ``"response"`` (positions >= prompt_len).
        prompt_len: where the response starts; `generate` sets it on the yielded `Steering`.
        hook: the site, when it differs from ``sae.cfg.metadata.hook_name`` (the SAE must still fit its width).

    Yields the `Steering` hook. The hook is removed on exit, also after an exception; other hooks on the model are
    left alone.
    """

    if positions not in POSITIONS:
        raise PersonasError(f"positions={positions!r}; expected one of {POSITIONS}.")
    if mode not in MODES:
        raise PersonasError(f"mode={mode!r}; expected one of {MODES}.")
    handle = as_model_handle(model)
    hook_name = hook or sae.cfg.metadata.hook_name
    if not hook_name:
        raise PersonasError("the SAE's metadata names no hook; pass hook='blocks.N.hook_resid_post'.")
    handle.check_hooks([hook_name])
    if hook is not None and hook != sae.cfg.metadata.hook_name:
        if int(sae.cfg.d_in) != handle.d_model:
            raise PersonasError(f"the SAE's d_in {sae.cfg.d_in} differs from the model's d_model {handle.d_model}.")
    else:
        check_site(sae, hook_name, handle, allow_model_mismatch=allow_model_mismatch)
    d_sae = int(sae.cfg.d_sae)
    if not 0 <= int(feature) < d_sae:
        raise PersonasError(f"feature={feature} is not a latent of this SAE; expected 0 <= feature < {d_sae}.")
    steering = Steering(sae, feature, alpha, positions=positions, mode=mode, hook_name=hook_name, prompt_len=prompt_len)
    point = handle.model.hook_dict[hook_name]
    point.add_hook(steering)
    try:
        yield steering
    finally:
        _remove_hook(point, steering)


def _remove_hook(point: Any, fn: Any) -> None:
    """Remove the forward hooks of ``point`` whose user function is ``fn``, and only those."""
    kept = []
    for lens_handle in point.fwd_hooks:
        if getattr(lens_handle, "user_hook", None) is fn:
            lens_handle.hook.remove()
        else:
            kept.append(lens_handle)
    point.fwd_hooks = kept


def active_steerings(model: Any) -> list[Steering]:
    """The `Steering` hooks currently registered on ``model``."""

    found: list[Steering] = []
    # a TransformerBridge lists one hook point under several names (aliases): count each hook once
    for point in {id(p): p for p in as_model_handle(model).model.hook_dict.values()}.values():
        for lens_handle in getattr(point, "fwd_hooks", ()):
            hook = getattr(lens_handle, "user_hook", None)
            if isinstance(hook, Steering) and not any(hook is f for f in found):
                found.append(hook)
    return found


# ------------------------------------------------------------------------------------------------ generation


def render_prompt(model: Any, prompt: str, config: CaptureConfig | None = None) -> list[int]:
    """Token ids of a prompt as the model sees it before its answer: the chat template with the generation prompt,
    or ``config.prompt_format`` (with BOS when the model expects one). Tokenized once, no double BOS."""

    config = config or CaptureConfig()
    handle = as_model_handle(model)
    tok = handle.tokenizer
    if handle.is_encoder:
        raise PersonasError(f"model {handle.model_id!r} is an encoder; generation and steering need a causal model.")
    if getattr(tok, "chat_template", None):
        messages = [{"role": "user", "content": prompt}]
        if config.system_prompt:
            messages.insert(0, {"role": "system", "content": config.system_prompt})
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(tok(text, add_special_tokens=False)["input_ids"])
    ids = list(tok(config.prompt_format.replace("{prompt}", prompt), add_special_tokens=False)["input_ids"])
    if getattr(handle.model.cfg, "default_prepend_bos", True) and tok.bos_token_id is not None:
        ids = [tok.bos_token_id, *ids]
    return ids


def _stop_ids(tok: Any) -> set[int]:
    """EOS, plus the token a chat template puts right after an assistant message (e.g. ``<|im_end|>``)."""
    stop = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    if getattr(tok, "chat_template", None):
        marker = "QQQMARKQQQ"
        try:
            text = tok.apply_chat_template(
                [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}], tokenize=False
            )
            tail = text[text.index(marker) + len(marker):]
            ids = tok(tail, add_special_tokens=False)["input_ids"] if tail.strip() else []
            if ids and ids[0] in set(tok.all_special_ids):
                stop.add(ids[0])
        except Exception:  # a template without an assistant role etc.: EOS only
            logger.debug("could not find the chat template's end-of-turn token", exc_info=True)
    return stop


def generate(
    model: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 40,
    temperature: float = 0.0,
    seed: int = 0,
    config: CaptureConfig | None = None,
    progress: bool = False,
) -> list[str]:
    """Generate a response to each prompt (greedy, or sampled with ``temperature`` and ``seed``).

    Prompts are rendered with `render_prompt`. Active `steer` hooks get ``prompt_len`` set for each prompt, so
    ``positions="response"`` steers exactly the generated tokens. Returns the decoded responses, special tokens
    dropped.
    """
    import torch
    from tqdm.auto import tqdm

    handle = as_model_handle(model)
    tok = handle.tokenizer
    stop = _stop_ids(tok)
    n_ctx = int(getattr(handle.model.cfg, "n_ctx", 0) or 0)
    steerings = active_steerings(handle)
    generator = torch.Generator().manual_seed(int(seed))
    out = []
    for prompt in tqdm(prompts, desc="generate", disable=not progress, leave=False):
        ids = render_prompt(handle, prompt, config)
        if n_ctx and len(ids) + max_new_tokens > n_ctx:
            keep = max(n_ctx - max_new_tokens, 1)
            logger.warning("a prompt of %d tokens is cut to its last %d to fit the context of %d", len(ids), keep, n_ctx)
            ids = ids[-keep:]
        for s in steerings:
            s.prompt_len = len(ids)
        new: list[int] = []
        tokens = torch.tensor([ids], dtype=torch.long, device=handle.device)
        with torch.no_grad():
            for _ in range(max_new_tokens):
                logits = handle.model(tokens)[0, -1].float()
                if temperature > 0:
                    probs = torch.softmax(logits / temperature, dim=-1).cpu()
                    nxt = int(torch.multinomial(probs, 1, generator=generator))
                else:
                    nxt = int(logits.argmax())
                if nxt in stop:
                    break
                new.append(nxt)
                tokens = torch.cat([tokens, torch.tensor([[nxt]], device=tokens.device)], dim=1)
        out.append(tok.decode(new, skip_special_tokens=True).strip())
    return out


# ------------------------------------------------------------------------------------------------ sweep


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

    Returns one row per strength: ``alpha``, ``n``, ``mean_score``, ``score_lo``/``score_hi`` (95% normal interval
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
    rows = []
    for alpha in alphas:
        with steer(model, sae, feature, alpha, positions=config.positions, mode=config.mode,
                   allow_model_mismatch=allow_model_mismatch):
            texts = generate(model, prompts, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                             seed=config.seed, config=capture, progress=progress)
        for i, (prompt, text) in enumerate(zip(prompts, texts, strict=True)):
            rows.append({"prompt_index": i, "prompt": prompt, "alpha": alpha, "generation": text})
    gens = pd.DataFrame(rows)
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
