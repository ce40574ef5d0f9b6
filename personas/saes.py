"""Load SAEs with sae-lens, check that they fit the model site, and encode activations in chunks.

An SAE is named by a spec string:

* ``"default"``: the SAE `personas` trained and ships for the offline default model (``data/saes/``);
* a folder written by sae-lens (``cfg.json`` + ``sae_weights.safetensors``), e.g. one from ``personas train-sae``;
* ``"RELEASE:SAE_ID"``: a pretrained sae-lens release, e.g. ``"gpt2-small-res-jb:blocks.8.hook_resid_pre"`` or
  ``"gemma-scope-2b-pt-res-canonical:layer_12/width_16k/canonical"``.

Training lives in `personas.training`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from personas.devices import resolve_device, resolve_dtype
from personas.errors import ModelLoadError, PersonasError, SiteMismatchError
from personas.models import hub_error

if TYPE_CHECKING:
    import torch

    from personas.models import ModelHandle

logger = logging.getLogger(__name__)

#: Folder of the SAE shipped for the offline default (MiniLM-L6 at blocks.3.hook_resid_post).
DEFAULT_SAE_NAME = "minilm-l6-blocks.3.hook_resid_post-topk-4096"


def data_dir() -> Path:
    """The folder of the files personas ships: ``saes/`` and ``demo_responses.jsonl``.

    They are package data (``personas/resources/``), found with `importlib.resources`, so an installed wheel has
    them as a clone does. The ``PERSONAS_DATA`` environment variable points elsewhere (a folder of the same layout).
    """
    from importlib import resources  # here, not at the top: this function is the only user

    env = os.environ.get("PERSONAS_DATA")
    return Path(env) if env else Path(resources.files("personas").joinpath("resources"))


def default_sae_path() -> Path:
    """The folder of the SAE that ``sae="default"`` loads (sae-lens format), inside `data_dir`."""
    return data_dir() / "saes" / DEFAULT_SAE_NAME


def load_sae(spec: str | os.PathLike | Any = "default", *, device="cpu", dtype="float32") -> Any:
    """Load an SAE from a spec (see the module docstring) or pass a loaded sae-lens SAE through."""
    if not isinstance(spec, (str, os.PathLike)):
        return spec
    torch_device = resolve_device(device)
    dtype_name = str(resolve_dtype(dtype, torch_device)).removeprefix("torch.")
    from sae_lens import SAE

    spec = str(spec)
    if spec == "default":
        path = default_sae_path()
        if not (path / "cfg.json").exists():
            raise ModelLoadError(
                f"the default SAE is not at {path}. It ships in the repository's data/saes/; install personas "
                "from a clone (`pip install -e .`), set PERSONAS_DATA to the data folder, or rebuild it with "
                "`personas train-sae`."
            )
        return SAE.load_from_disk(str(path), device=str(torch_device), dtype=dtype_name)
    if os.path.isdir(spec):
        if not (Path(spec) / "cfg.json").exists():
            raise ModelLoadError(
                f"the folder {spec!r} has no cfg.json; expected an SAE saved by sae-lens "
                "(cfg.json and sae_weights.safetensors), e.g. from `personas train-sae`."
            )
        return SAE.load_from_disk(spec, device=str(torch_device), dtype=dtype_name)
    if ":" not in spec:
        raise PersonasError(
            f"SAE spec {spec!r} is neither a folder nor 'RELEASE:SAE_ID'. Examples: "
            "'gpt2-small-res-jb:blocks.8.hook_resid_pre', a folder from `personas train-sae`, or 'default'."
        )
    release, sae_id = spec.split(":", 1)
    _check_release(release, sae_id)
    try:
        return SAE.from_pretrained(release, sae_id, device=str(torch_device), dtype=dtype_name)
    except Exception as exc:
        raise hub_error("SAE", spec, exc) from exc


def _check_release(release: str, sae_id: str) -> None:
    """Fail early, listing valid choices, when a release or SAE id is unknown to sae-lens."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    if release not in directory:
        close = [r for r in directory if release.split("-")[0] in r][:10]
        raise PersonasError(
            f"{release!r} is not a sae-lens pretrained release. Similar releases: {close or sorted(directory)[:10]}. "
            "See the sae-lens pretrained SAE table for all releases."
        )
    ids = directory[release].saes_map
    if sae_id not in ids:
        raise PersonasError(
            f"{sae_id!r} is not an SAE id of release {release!r}; valid ids include {sorted(ids)[:12]}"
            f"{' ...' if len(ids) > 12 else ''}."
        )


def sae_info(sae: Any) -> dict[str, Any]:
    """What an SAE is, for manifests: architecture, width, site, model and where it came from."""
    meta = sae.cfg.metadata
    return {
        "architecture": sae.cfg.architecture(),
        "d_in": int(sae.cfg.d_in),
        "d_sae": int(sae.cfg.d_sae),
        "hook_name": meta.hook_name,
        "model_name": meta.model_name,
        "release": meta.release if "release" in meta else None,
        "sae_id": meta.sae_id if "sae_id" in meta else None,
        "neuronpedia_id": meta.neuronpedia_id if "neuronpedia_id" in meta else None,
        "dtype": str(sae.cfg.dtype),
    }


def same_model(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return True
    a_name, b_name = (str(x).rstrip("/").split("/")[-1].lower() for x in (a, b))
    if a_name == b_name:
        return True
    try:
        from transformer_lens.loading_from_pretrained import get_official_model_name

        return get_official_model_name(a) == get_official_model_name(b)
    except (ValueError, KeyError):
        return False


def check_site(sae: Any, hook: str, model: ModelHandle | None = None, *, allow_model_mismatch: bool = False) -> None:
    """Raise `SiteMismatchError` unless the SAE was made for this hook, this width and (when known) this model."""
    meta = sae.cfg.metadata
    problems = []
    if meta.hook_name and meta.hook_name != hook:
        problems.append(f"it reads hook {meta.hook_name!r}, not {hook!r}")
    if model is not None:
        if int(sae.cfg.d_in) != model.d_model:
            problems.append(f"its d_in is {sae.cfg.d_in} but the model's d_model is {model.d_model}")
        if not allow_model_mismatch and not same_model(meta.model_name, model.model_id):
            problems.append(f"it was trained on model {meta.model_name!r}, not {model.model_id!r}")
    if problems:
        raise SiteMismatchError(
            "the SAE does not fit this site: " + "; ".join(problems) + ". Use an SAE trained on this model's "
            f"{hook!r}, read the hook the SAE was trained on (hook={meta.hook_name!r}), or, for a model saved under "
            "another name, pass allow_model_mismatch=True."
        )


def encode(sae: Any, activations: torch.Tensor, *, batch_tokens: int = 8192) -> torch.Tensor:
    """SAE latent activations for [n_tokens, d_in] activations, encoded in chunks of ``batch_tokens``."""
    import torch

    if activations.ndim != 2 or activations.shape[1] != sae.cfg.d_in:
        raise SiteMismatchError(
            f"expected activations of shape [n_tokens, {sae.cfg.d_in}] for this SAE, got {tuple(activations.shape)}."
        )
    param = next(iter(sae.parameters()))
    chunks = []
    with torch.no_grad():
        for lo in range(0, activations.shape[0], batch_tokens):
            chunk = activations[lo : lo + batch_tokens].to(device=param.device, dtype=param.dtype)
            chunks.append(sae.encode(chunk).float())
    if not chunks:
        return torch.zeros(0, sae.cfg.d_sae, device=param.device)
    return torch.cat(chunks)


def sae_fingerprint(sae: Any, spec: Any = None) -> dict[str, Any]:
    """What identifies an SAE in a cache fingerprint: `sae_info` plus a hash of (a sample of) its weights."""
    import torch

    digest = hashlib.sha256()
    sample = 1 << 20
    for name, tensor in sorted(sae.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        part = flat if flat.numel() <= 2 * sample else torch.cat([flat[:sample], flat[-sample:]])
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(part.to("cpu", torch.float32).contiguous().numpy().tobytes())
    return {"spec": spec if isinstance(spec, str) else "in-memory", **sae_info(sae), "weights_sha256": digest.hexdigest()}
