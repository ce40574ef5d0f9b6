"""The steering hook: add a latent's decoder direction (or clamp the latent) while a causal model runs.

`steer` is a context manager that registers one forward hook at the SAE's site (``sae.cfg.metadata.hook_name``)
of a TransformerLens `HookedTransformer` or `TransformerBridge`, and removes exactly that hook on exit, also when
the block raises. Two modes:

* ``mode="add"``: the residual stream at the site becomes ``x + alpha * W_dec[feature]``;
* ``mode="clamp"``: the latent is set to ``value`` in the SAE's reconstruction, ``x + (value - f(x)) * W_dec[feature]``
  where ``f(x)`` is the latent's current activation (``sae.encode``) at each position.

``positions`` chooses where: ``"all"`` tokens, only the ``"prompt"`` tokens (positions < ``prompt_len``), or only
the ``"response"`` tokens (positions >= ``prompt_len``, i.e. the generated ones). `generate` sets ``prompt_len``
of the active steering hooks itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from personas.config import MODES, POSITIONS
from personas.errors import PersonasError
from personas.models import as_model_handle
from personas.saes import check_site

if TYPE_CHECKING:
    import torch


class Steering:
    """The forward hook `steer` registers. ``prompt_len`` (an int, or one per batch row) marks where the response
    starts; it must be set for ``positions="prompt"`` or ``"response"`` (`generate` sets it). ``offset`` is the
    absolute position of the first token the hook sees (0, or the cached length while decoding with a key-value
    cache). ``alpha`` is a number, or one per batch row (a sweep decodes several strengths in one batch)."""

    def __init__(
        self,
        sae: Any,
        feature: int,
        alpha: float | Sequence[float],
        *,
        positions: str = "all",
        mode: str = "add",
        hook_name: str,
        prompt_len: int | Sequence[int] | None = None,
    ) -> None:
        self.sae = sae
        self.feature = int(feature)
        self.alpha: float | list[float] = (
            [float(a) for a in alpha] if isinstance(alpha, Sequence) and not isinstance(alpha, str) else float(alpha)
        )
        self.offset = 0
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
        pos = torch.arange(self.offset, self.offset + length, device=device).reshape(1, -1)
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
        alpha = self._alpha(x.shape[0], x)
        if self.mode == "add":
            delta = alpha.unsqueeze(-1) * direction
        else:
            param = next(iter(self.sae.parameters()))
            with torch.no_grad():
                current = self.sae.encode(x.to(param.dtype))[..., self.feature].to(x.dtype)
            delta = (alpha - current).unsqueeze(-1) * direction
        return (x + mask * delta).reshape(shape)

    def _alpha(self, batch: int, x: torch.Tensor) -> torch.Tensor:
        """[batch, 1] strengths (or [1, 1] for one strength)."""
        import torch

        alpha = torch.as_tensor(self.alpha, dtype=x.dtype, device=x.device).reshape(-1, 1)
        if alpha.shape[0] not in (1, batch):
            raise PersonasError(f"steering.alpha has {alpha.shape[0]} entries for a batch of {batch}; expected 1 or "
                                f"{batch}.")
        return alpha

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
