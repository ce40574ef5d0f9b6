"""Generation with steering hooks: batched, cached, positions exact.

`generate` and `decode` are batched and cached: prompts are padded on the left, one forward reads them all, then
each step feeds one new token per row through a key-value cache: TransformerLens's cache for a
`HookedTransformer`, and for a `TransformerBridge` the Hugging Face model inside it (its hook points sit inside
that model, so a `Steering` hook fires there unchanged, without the bridge's per-call overhead). The hook gets the
absolute position of the first token it sees (``offset``) and the padded prompt length, so it changes exactly the
positions it would change on one full, unpadded sequence; greedy answers are those of re- running the whole
sequence per token (tested token for token). Sampling uses one seeded generator per prompt, so an answer does not
depend on the batch it was decoded in. `BatchDecoder` is that decoder one step at a time, for callers that choose
the tokens themselves (the server in `personas.serve`), and takes read-only hooks: a monitor reads its site in the
same forward pass that generates.
"""

from __future__ import annotations

import logging
import re
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from personas.config import CaptureConfig
from personas.errors import PersonasError
from personas.logs import TokenRate
from personas.models import as_model_handle, decoder_layers
from personas.steering.hooks import Steering, _remove_hook, active_steerings

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

__all__ = ["BatchDecoder", "context_size", "decode", "decode_batch_limit", "generate", "prompt_ids", "render_prompt",
           "row_seed", "stop_token_ids"]


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


def stop_token_ids(tokenizer: Any) -> set[int]:
    """The token ids that end an answer: EOS, plus the token a chat template puts right after an assistant message
    (e.g. ``<|im_end|>``)."""
    return _stop_ids(tokenizer)


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
            added = getattr(tok, "added_tokens_decoder", {}) or {}  # special tokens not named in the tokenizer's map
            if ids and (ids[0] in set(tok.all_special_ids) or getattr(added.get(ids[0]), "special", False)):
                stop.add(ids[0])
        except Exception:  # a template without an assistant role etc.: EOS only
            logger.debug("could not find the chat template's end-of-turn token", exc_info=True)
    return stop


def context_size(model: Any) -> int:
    """The number of positions the model can read (0 when unknown)."""
    return _context_size(as_model_handle(model))


def _context_size(handle: Any) -> int:
    """The number of positions the model can read (0 when unknown)."""
    n_ctx = int(getattr(handle.model.cfg, "n_ctx", 0) or 0)
    if handle.backend == "bridge":
        hf_config = getattr(handle.model.original_model, "config", None)
        n_ctx = int(getattr(hf_config, "max_position_embeddings", 0) or getattr(hf_config, "n_positions", 0) or n_ctx)
    return n_ctx


def prompt_ids(model: Any, prompts: Sequence[str], *, max_new_tokens: int = 40,
               config: CaptureConfig | None = None) -> list[list[int]]:
    """The token ids `generate` feeds the model for each prompt: `render_prompt`, cut to its last
    ``n_ctx - max_new_tokens`` tokens (with a warning) when prompt and answer would not fit the context."""
    handle = as_model_handle(model)
    n_ctx = _context_size(handle)
    out = []
    for prompt in prompts:
        ids = render_prompt(handle, prompt, config)
        if n_ctx and len(ids) + max_new_tokens > n_ctx:
            keep = max(n_ctx - max_new_tokens, 1)
            logger.warning("a prompt of %d tokens is cut to its last %d to fit the context of %d", len(ids), keep, n_ctx)
            ids = ids[-keep:]
        out.append(ids)
    return out


def row_seed(seed: int, row: int) -> int:
    """The sampling seed of prompt ``row``: sampling draws from one generator per prompt, so an answer does not
    depend on which other prompts share its batch."""
    return int(np.random.SeedSequence([int(seed), int(row)]).generate_state(1)[0])


def generate(
    model: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 40,
    temperature: float = 0.0,
    seed: int = 0,
    config: CaptureConfig | None = None,
    progress: bool = False,
    batch_size: int = 16,
) -> list[str]:
    """Generate a response to each prompt (greedy, or sampled with ``temperature`` and ``seed``).

    Prompts are rendered with `render_prompt` (see `prompt_ids`) and decoded ``batch_size`` at a time with a
    key-value cache (`decode`). Active `steer` hooks see absolute positions, so ``positions="response"`` steers
    exactly the generated tokens. Sampling draws from one seeded generator per prompt (`row_seed`): the same
    answers whatever ``batch_size``. Returns the decoded responses, special tokens dropped.
    """
    handle = as_model_handle(model)
    rows = prompt_ids(handle, prompts, max_new_tokens=max_new_tokens, config=config)
    new = decode(handle, rows, max_new_tokens=max_new_tokens, temperature=temperature,
                 seeds=[row_seed(seed, i) for i in range(len(rows))], batch_size=batch_size, progress=progress)
    return [handle.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in new]


def decode(
    model: Any,
    rows: Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 40,
    temperature: float = 0.0,
    seeds: Sequence[int] | None = None,
    alphas: Sequence[float] | None = None,
    stop_ids: set[int] | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> list[list[int]]:
    """New token ids for each row of prompt ids, with the active `steer` hooks; the stop token is left out.

    Rows are sorted by length, padded on the left and run ``batch_size`` at a time: one forward over the prompts,
    then one token per step through a key-value cache (TransformerLens's for a `HookedTransformer`, the Hugging
    Face model's under a `TransformerBridge`, whose hook points fire inside it). Each active `Steering` gets
    ``offset`` (the absolute position of the first token of each forward) and ``prompt_len`` (where answers start
    in the padded batch), so it changes the same positions as on a full, unpadded sequence. ``alphas`` gives every
    row its own strength (all strengths of a sweep in one batch). A row stops at a stop id (EOS and the chat
    template's end of turn, `stop_ids` default) or after ``max_new_tokens``; ``seeds`` seed one sampler per row.
    """

    handle = as_model_handle(model)
    if batch_size < 1:
        raise PersonasError(f"batch_size={batch_size}; expected at least 1.")
    if alphas is not None and len(alphas) != len(rows):
        raise PersonasError(f"got {len(alphas)} alphas for {len(rows)} rows; expected one per row.")
    if any(len(r) == 0 for r in rows):
        raise PersonasError("a prompt has no tokens; expected at least one token per prompt.")
    seeds = list(seeds) if seeds is not None else [row_seed(0, i) for i in range(len(rows))]
    stop = _stop_ids(handle.tokenizer) if stop_ids is None else set(stop_ids)
    steerings = active_steerings(handle)
    saved = [(s, s.alpha, s.prompt_len, s.offset) for s in steerings]
    if not _cached_decoding(handle, steerings):
        logger.info("steering at %s: no cached decoding for this site on a bridge; decoding one prompt at a time, "
                    "re-reading the whole sequence per token", [s.hook_name for s in steerings])
        batch_size = 1
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    out: dict[int, list[int]] = {}
    bar = TokenRate("generate", len(rows), progress, unit="answer")
    try:
        for lo in range(0, len(order), batch_size):
            chunk = order[lo:lo + batch_size]
            if alphas is not None:
                for s in steerings:
                    s.alpha = [float(alphas[i]) for i in chunk]
            new = _decode_batch(handle, [list(rows[i]) for i in chunk], [seeds[i] for i in chunk], steerings,
                                max_new_tokens, temperature, stop)
            out.update(zip(chunk, new, strict=True))
            bar.update(len(chunk), sum(len(ids) for ids in new))
    finally:
        bar.close()
        for s, alpha, plen, offset in saved:
            s.alpha, s.prompt_len, s.offset = alpha, plen, offset
    return [out[i] for i in range(len(rows))]


def _decode_batch(handle: Any, rows: list[list[int]], seeds: list[int], steerings: list[Steering],
                  max_new_tokens: int, temperature: float, stop: set[int]) -> list[list[int]]:
    import torch

    generators = [torch.Generator().manual_seed(s) for s in seeds] if temperature > 0 else []
    with BatchDecoder(handle, rows) as step:
        return _run_steps(step, len(rows), generators, max_new_tokens, temperature, stop)


def _run_steps(step: BatchDecoder, batch: int, generators: list[Any], max_new_tokens: int, temperature: float,
               stop: set[int]) -> list[list[int]]:
    import torch

    new: list[list[int]] = [[] for _ in range(batch)]
    done = torch.zeros(batch, dtype=torch.bool)
    with torch.no_grad():
        logits = step.first()
        for t in range(max_new_tokens):
            nxt = _choose(logits.float().cpu(), temperature, generators)
            for r in range(batch):
                if not done[r]:
                    if int(nxt[r]) in stop:
                        done[r] = True
                    else:
                        new[r].append(int(nxt[r]))
            if bool(done.all()) or t == max_new_tokens - 1:
                break
            logits = step.next(nxt.to(logits.device))
    return new


class BatchDecoder:
    """One batch of prompts decoded through a key-value cache, with the active `steer` hooks and read-only hooks.

    ``rows`` (token ids per prompt) are padded on the left; ``first()`` reads them all and returns the logits after
    each prompt's last token ([batch, vocab]), ``next(tokens)`` feeds one token per row and returns the logits after
    it. The stepper is chosen as `decode` chooses it (TransformerLens's cache, the plain Hugging Face model under a
    bridge, or the uncached loop, which takes one row only). ``readers`` are callables with a ``hook_name`` that see
    the activation at their site in every forward (``[batch, positions, d]``; the prompt's positions in ``first()``,
    then the one fed token) and return it unchanged: a monitor reads its site in the same forward pass that
    generates. Use it as a context manager (or call ``close()``): the readers' hooks are removed on exit.
    """

    def __init__(self, model: Any, rows: Sequence[Sequence[int]], *, readers: Sequence[Any] = ()) -> None:
        import torch

        handle = as_model_handle(model)
        if not rows or any(len(r) == 0 for r in rows):
            raise PersonasError("BatchDecoder needs at least one row and at least one token per row.")
        self.handle = handle
        self.steerings = active_steerings(handle)
        self.readers = list(readers)
        self.cached = _cached_decoding(handle, [*self.steerings, *self.readers])
        if not self.cached and len(rows) != 1:
            raise PersonasError(f"these sites ({[h.hook_name for h in [*self.steerings, *self.readers]]}) have no "
                                "cached decoding on a bridge: decode one row at a time (see decode_batch_limit).")
        tok = handle.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        batch, width = len(rows), max(len(r) for r in rows)
        ids = torch.full((batch, width), pad, dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, width - len(row):] = torch.tensor(list(row), dtype=torch.long)
            mask[r, width - len(row):] = 1
        ids, mask = ids.to(handle.device), mask.to(handle.device)
        self.width, self.steps = width, 0
        for s in self.steerings:  # left padding: every prompt ends at column `width`
            s.prompt_len, s.offset = width, 0
        self._points: list[tuple[Any, Any]] = []
        if not self.cached:
            self.stepper: _Stepper = _FullStepper(handle, ids, mask)
        elif handle.backend == "bridge":
            self.stepper = _HFStepper(handle, ids, mask, [*self.steerings, *self.readers])
        else:
            self.stepper = _Stepper(handle, ids, mask)
        if handle.backend != "bridge" or not self.cached:  # the readers fire at the model's own hook points
            handle.check_hooks([r.hook_name for r in self.readers])
            for reader in self.readers:
                point = handle.model.hook_dict[reader.hook_name]
                point.add_hook(reader)
                self._points.append((point, reader))

    def first(self) -> torch.Tensor:
        """Logits after the last prompt token of every row, [batch, vocab]."""
        return self.stepper.first()

    def next(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row ([batch]); the logits after it, [batch, vocab]."""
        for s in self.steerings:
            s.offset = self.width + self.steps
        self.steps += 1
        return self.stepper.next(tokens)

    def close(self) -> None:
        """Remove the hooks this decoder added (the steppers' and the readers')."""
        self.stepper.close()
        for point, reader in self._points:
            _remove_hook(point, reader)
        self._points = []

    def __enter__(self) -> BatchDecoder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def decode_batch_limit(model: Any, hook_names: Sequence[str] = ()) -> int | None:
    """The most rows `BatchDecoder` takes at once with the active steering hooks and readers at ``hook_names``:
    None (no limit) where it decodes with a key-value cache, 1 where it falls back to the uncached loop."""
    handle = as_model_handle(model)
    if handle.backend != "bridge":
        return None
    sites = [s.hook_name for s in active_steerings(handle)] + list(hook_names)
    cached = all(_BLOCK_SITE.match(h) for h in sites) and hasattr(handle.model, "original_model")
    return None if cached else 1


def _choose(logits: torch.Tensor, temperature: float, generators: list[Any]) -> torch.Tensor:
    """Greedy argmax, or a sample from softmax(logits / temperature) by the Gumbel-max trick, one generator per
    row (a row's draws do not depend on the other rows)."""
    import torch

    if temperature <= 0:
        return logits.argmax(dim=-1)
    noise = torch.stack([torch.rand(logits.shape[-1], generator=g, dtype=torch.float64) for g in generators])
    gumbel = -torch.log(-torch.log(noise.clamp(min=1e-300)))
    return (logits.double() / temperature + gumbel).argmax(dim=-1)


class _Stepper:
    """One forward over left-padded prompts, then one token per row at a time through a key-value cache."""

    def __init__(self, handle: Any, ids: torch.Tensor, mask: torch.Tensor) -> None:
        self.handle, self.ids, self.mask = handle, ids, mask
        self.cache: Any = None

    def first(self) -> torch.Tensor:
        """Logits after the last prompt token, [batch, vocab]."""
        from transformer_lens import TransformerLensKeyValueCache

        model = self.handle.model
        self.cache = TransformerLensKeyValueCache.init_cache(model.cfg, self.ids.device, self.ids.shape[0])
        return model(self.ids, attention_mask=self.mask, past_kv_cache=self.cache)[:, -1]

    def next(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits after one more token per row, [batch, vocab]."""
        import torch

        ones = torch.ones_like(tokens)[:, None]
        return self.handle.model(tokens[:, None], attention_mask=ones, past_kv_cache=self.cache)[:, -1]

    def close(self) -> None:
        """Release what the stepper holds (hooks)."""


class _HFStepper(_Stepper):
    """The Hugging Face model under a `TransformerBridge`, run through its own key-value cache.

    The bridge's wrapped model does not decode correctly with a cache (its components ignore the cached positions),
    so this runs a plain Hugging Face model that shares the bridge's weights (`plain_hf_model`, no copy) and
    calls each active `Steering` from a forward hook on the decoder block of its site, as
    ``blocks.N.hook_resid_post`` is the block's output and ``blocks.N.hook_resid_pre`` its input.
    """

    def __init__(self, handle: Any, ids: torch.Tensor, mask: torch.Tensor, steerings: list[Any]) -> None:
        import inspect

        super().__init__(handle, ids, mask)
        self.hf = plain_hf_model(handle)
        params = inspect.signature(self.hf.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"  # transformers >= 5 says "cache"
        self.extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        layers = decoder_layers(self.hf)
        self.handles = []
        for s in steerings:
            layer, where = _block_site(s.hook_name)
            self.handles.append(_hook_block(layers[layer], where, s))

    def first(self) -> torch.Tensor:
        self.positions = (self.mask.cumsum(-1) - 1).clamp(min=0)
        return self._forward(self.ids)

    def next(self, tokens: torch.Tensor) -> torch.Tensor:
        import torch

        self.mask = torch.cat([self.mask, torch.ones_like(tokens)[:, None]], dim=1)
        self.positions = self.positions[:, -1:] + 1
        return self._forward(tokens[:, None])

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def _forward(self, ids: torch.Tensor) -> torch.Tensor:
        kwargs = {self.cache_arg: self.cache} if self.cache is not None else {}
        out = self.hf(input_ids=ids, attention_mask=self.mask, position_ids=self.positions, use_cache=True,
                      **kwargs, **self.extra)
        cache = getattr(out, "cache", None)
        self.cache = cache if cache is not None else out.past_key_values
        return out.logits[:, -1]


class _FullStepper(_Stepper):
    """No cache: the whole sequence again at every step, one row at a time (no padding). Exact for any site, and
    slow; used for bridge sites that are not a decoder block's input or output."""

    def first(self) -> torch.Tensor:
        if self.ids.shape[0] != 1:
            raise PersonasError(f"internal: the uncached decoder takes one row at a time, got {self.ids.shape[0]}.")
        return self.handle.model(self.ids)[:, -1]

    def next(self, tokens: torch.Tensor) -> torch.Tensor:
        import torch

        self.ids = torch.cat([self.ids, tokens[:, None]], dim=1)
        for s in active_steerings(self.handle):
            s.offset = 0
        return self.handle.model(self.ids)[:, -1]


_BLOCK_SITE = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")
_PLAIN_MODELS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _block_site(hook_name: str) -> tuple[int, str]:
    match = _BLOCK_SITE.match(hook_name)
    if match is None:
        raise PersonasError(f"internal: {hook_name!r} is not a decoder block's input or output.")
    return int(match.group(1)), match.group(2)


def _cached_decoding(handle: Any, hooks: Sequence[Any]) -> bool:
    """Whether `decode` can use a key-value cache with these hooks (always for a `HookedTransformer`; for a
    bridge when every hooked site is a block's ``hook_resid_pre`` or ``hook_resid_post``)."""
    return decode_batch_limit(handle, [h.hook_name for h in hooks if not isinstance(h, Steering)]) is None


def _hook_block(block: Any, where: str, steering: Steering) -> Any:
    """A forward (``post``) or forward-pre (``pre``) hook on ``block`` that applies ``steering`` to the hidden
    states, whether the block takes and returns them alone or first in a tuple."""
    if where == "post":
        def post(_module, _inputs, output):
            if isinstance(output, tuple):
                return (steering(output[0]), *output[1:])
            return steering(output)

        return block.register_forward_hook(post)

    def pre(_module, args, kwargs):
        if args:
            return (steering(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": steering(kwargs["hidden_states"])}

    return block.register_forward_pre_hook(pre, with_kwargs=True)


def plain_hf_model(model: Any) -> Any:
    """The Hugging Face model of a `TransformerBridge` without the bridge's components: a model of the same class
    and config whose parameters and buffers *are* the bridge's tensors (no copy), built once per bridge."""
    import torch

    handle = as_model_handle(model)
    bridge = handle.model
    if bridge in _PLAIN_MODELS:
        return _PLAIN_MODELS[bridge]
    wrapped = bridge.original_model
    with torch.device("meta"):
        plain = type(wrapped)(wrapped.config)
    tensors = {name: _walk(wrapped, name) for name in plain.state_dict()}
    plain.load_state_dict(tensors, assign=True, strict=True)
    for name, _ in list(plain.named_buffers()):  # non-persistent buffers (rotary frequencies) too
        owner, _, leaf = name.rpartition(".")
        module = plain.get_submodule(owner) if owner else plain
        module._buffers[leaf] = _walk(wrapped, name)
    plain.tie_weights()
    plain.eval()
    _PLAIN_MODELS[bridge] = plain
    return plain


def _walk(root: Any, name: str) -> Any:
    """``root``'s attribute at the dotted path ``name``, stepping through the bridge's wrappers
    (``_original_component``) to the Hugging Face modules they wrap."""
    obj = root
    for part in name.split("."):
        while "_original_component" in getattr(obj, "_modules", {}):
            obj = obj._modules["_original_component"]
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj
