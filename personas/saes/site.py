"""A site: a model, an SAE and the hook they meet at, opened together (what every job reads activations from).

`open_site` resolves and checks the SAE first (a folder, ``"RELEASE:SAE_ID"``, ``"default"`` or ``None``:
`personas.saes.check_sae_spec` reads its config and weight shapes without loading it), so that a wrong SAE fails
before the model loads; then it loads the model, the SAE on the model's device, and settles the hook: the capture
config's, else the SAE's ``hook_name``, else the model's default (`default_hook`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personas.config import DEFAULT_HOOK, CaptureConfig, SAEConfig
from personas.devices import sae_dtype
from personas.models import as_model_handle, load_model
from personas.models.offline import offline_model
from personas.saes.loading import check_sae_spec, load_sae


@dataclass
class Site:
    """A loaded model, the SAE (if any) and the hook they meet at: what every job reads activations from."""

    model: Any  # personas.models.ModelHandle
    sae: Any
    sae_config: SAEConfig
    hook: str


def default_hook(model: str | None) -> str:
    """The site read when neither the capture config nor the SAE names one: the offline model's own default
    (``blocks.18.hook_resid_post`` for SmolLM2, ``blocks.3.hook_resid_post`` for MiniLM), else `DEFAULT_HOOK`."""
    offline = offline_model(model)
    return offline.hook if offline is not None else DEFAULT_HOOK


def open_site(capture: CaptureConfig, sae: SAEConfig | str | Any = None, model: Any = None) -> Site:
    """Check the SAE named by ``sae``, load the model named by ``capture.model`` (unless ``model`` is given), then
    the SAE.

    ``sae`` is an `SAEConfig`, a spec string (``"default"``, a folder, ``"RELEASE:SAE_ID"``, ``"none"``) or a
    loaded SAE; ``"default"`` is the SAE shipped for the model. The hook is ``capture.hook``, else the SAE's
    ``hook_name``, else the model's default hook.
    """

    sae_obj = None
    if isinstance(sae, SAEConfig):
        sae_cfg = sae
    elif sae is None or isinstance(sae, (str, Path)):
        sae_cfg = SAEConfig(sae="default" if sae is None else str(sae))
    else:  # an SAE object that is already loaded
        sae_obj, sae_cfg = sae, SAEConfig(sae="in-memory")
    handle = as_model_handle(model) if model is not None else None
    model_name = handle.model_id if handle is not None else capture.model  # "default" means this model's SAE
    if sae_obj is None:
        check_sae_spec(sae_cfg.sae, model_name)  # milliseconds; the model load below can take minutes
    if handle is None:
        handle = load_model(capture.model, device=capture.device, dtype=capture.dtype)
    if sae_obj is None and sae_cfg.sae and str(sae_cfg.sae).lower() != "none":
        sae_obj = load_sae(sae_cfg.sae, device=handle.device, dtype=sae_dtype(capture.dtype, handle.device), model=model_name)
    hook = capture.hook or (sae_obj.cfg.metadata.hook_name if sae_obj is not None else None) or default_hook(model_name)
    return Site(model=handle, sae=sae_obj, sae_config=sae_cfg, hook=hook)
