"""What runs, caches and saved detectors record of an SAE, and the check that a recorded SAE is the one at hand.

* `sae_info`: the SAE's shape and provenance for a manifest; `sae_entry`: the manifest's ``sae`` block.
* `sae_identity` / `sae_fingerprint`: what identifies an SAE (spec, shape, dtype, a signature of its weights);
  `check_sae_identity` refuses to read latent indices through another SAE than the one recorded.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from personas.errors import PersonasError, SiteMismatchError
from personas.saes.loading import check_sae_spec, data_dir, shipped_saes

logger = logging.getLogger(__name__)

_SIGNATURE_ROWS, _SIGNATURE_DIMS = 32, 4


def sae_info(sae: Any, spec: Any = None) -> dict[str, Any]:
    """What an SAE is, for manifests: architecture, width, site, model and where it came from.

    sae-lens 6 keeps neither the release nor the SAE id in a pretrained SAE's metadata: a ``"RELEASE:SAE_ID"``
    ``spec`` supplies them.
    """
    meta = sae.cfg.metadata
    release = meta.release if "release" in meta else None
    sae_id = meta.sae_id if "sae_id" in meta else None
    if release is None and isinstance(spec, str) and ":" in spec and not os.path.exists(spec):
        release, sae_id = spec.split(":", 1)
    return {
        "architecture": sae.cfg.architecture(),
        "d_in": int(sae.cfg.d_in),
        "d_sae": int(sae.cfg.d_sae),
        "hook_name": meta.hook_name,
        "model_name": meta.model_name,
        "release": release,
        "sae_id": sae_id,
        "neuronpedia_id": meta.neuronpedia_id if "neuronpedia_id" in meta else None,
        "dtype": str(sae.cfg.dtype),
    }


def sae_entry(sae: Any, spec: Any) -> dict[str, Any]:
    """A manifest's ``sae`` entry: the spec as given and `sae_info` (release and SAE id read from a
    ``"RELEASE:SAE_ID"`` spec where the SAE's metadata lacks them)."""
    return {"spec": str(spec), **sae_info(sae, str(spec))}


def sae_identity(sae: Any, spec: Any = None, model: str | None = None) -> dict[str, Any]:
    """What a run records of the SAE whose latent indices it reports: the weights' hash (`sae_fingerprint`), their
    dtype, a small dtype-tolerant `weight_signature`, and, when ``spec`` names a shipped SAE (``"default"``, for
    ``model``, included), its folder name, so that the indices stay tied to that SAE after the default changes
    (`check_sae_identity`)."""
    shipped = None
    if isinstance(spec, (str, os.PathLike)) and str(spec).lower() != "none":
        try:
            path = check_sae_spec(spec, model)
        except PersonasError:
            path = None
        if isinstance(path, Path) and path.resolve().parent == (data_dir() / "saes").resolve():
            shipped = path.name
    return {"weights_sha256": sae_fingerprint(sae)["weights_sha256"], "shipped": shipped,
            "dtype": _sae_dtype(sae), "signature": weight_signature(sae)}


def _sae_dtype(sae: Any) -> str | None:
    param = next(iter(sae.parameters()), None)
    return None if param is None else str(param.dtype).removeprefix("torch.")


def weight_signature(sae: Any) -> list[float] | None:
    """A dtype-tolerant sample of an SAE's weights: 32 decoder rows spread over the latents (the first and the last
    included), 4 spread dimensions each, as float32 values. Two SAEs trained apart differ in it far beyond half
    precision's rounding; the same SAE at float32 and at bfloat16 agrees to about 0.4%. None without a decoder."""
    import torch

    w = getattr(sae, "W_dec", None)
    if not isinstance(w, torch.Tensor) or w.ndim != 2 or w.numel() == 0:
        return None
    rows = torch.linspace(0, w.shape[0] - 1, min(_SIGNATURE_ROWS, w.shape[0])).round().long()
    dims = torch.linspace(0, w.shape[1] - 1, min(_SIGNATURE_DIMS, w.shape[1])).round().long()
    picked = w.detach()[rows.to(w.device)][:, dims.to(w.device)].to("cpu", torch.float32)
    return [float(f"{v:.6g}") for v in picked.reshape(-1).tolist()]


def _signatures_agree(recorded: Sequence[float], found: Sequence[float]) -> bool:
    try:
        a, b = np.asarray(recorded, dtype=np.float64), np.asarray(found, dtype=np.float64)
    except (TypeError, ValueError):  # a hand-edited record: not a list of numbers, so no match
        return False
    if a.shape != b.shape or not np.isfinite(a).all():
        return False
    scale = float(np.abs(a).max()) if a.size else 0.0
    return bool(np.allclose(b, a, rtol=0.02, atol=0.01 * scale))  # bfloat16 keeps 8 bits: ~0.4% per value


def recorded_sae_spec(recorded: Any, spec: Any) -> Any:
    """The SAE to read recorded latent indices with: ``spec``, except that ``"default"`` becomes the shipped SAE
    named in ``recorded`` (what `sae_identity` wrote), as long as it still ships: the indices belong to that one,
    even after the default changed."""
    shipped = recorded.get("shipped") if isinstance(recorded, dict) else None
    if spec == "default" and shipped and shipped in shipped_saes():
        logger.info("reading the recorded latents with the SAE they were recorded with, %s", shipped)
        return shipped
    return spec


def check_sae_identity(recorded: Any, sae: Any, what: str) -> None:
    """Refuse latent indices recorded for another SAE: ``recorded`` is what `sae_identity` wrote (None: an older
    record without it, accepted), ``sae`` the SAE about to read them, ``what`` names the record in the message.

    Both at float32 (older records name no dtype: float32): the weights' hashes must match. Either at another dtype
    (an accelerator's bfloat16 or float16 SAE, whose rounded weights hash differently): the `weight_signature`s must
    agree within half precision's rounding; a record without one cannot be checked, and a warning says so."""
    if not isinstance(recorded, dict) or not recorded.get("weights_sha256"):
        return
    dtype, recorded_dtype = _sae_dtype(sae), recorded.get("dtype") or "float32"
    name = recorded.get("shipped")
    hint = (f"pass --sae {name} (the shipped SAE it used)" if name else "pass --sae with the SAE it used")
    if dtype in (None, "float32") and recorded_dtype == "float32":
        found = sae_fingerprint(sae)["weights_sha256"]
        if found == recorded["weights_sha256"]:
            return
        raise SiteMismatchError(
            f"{what} lists latents of another SAE (weights sha256 {recorded['weights_sha256'][:12]}); the SAE loaded "
            f"here is {found[:12]}, so its latent indices would name other features. {hint}, or --latents."
        )
    signature = recorded.get("signature")
    if not signature:
        logger.warning("%s: the SAE runs at %s and the record (made at %s) has no weight signature, so whether it "
                       "is the SAE recorded is not checked", what, dtype, recorded_dtype)
        return
    found_signature = weight_signature(sae)
    if found_signature is None or not _signatures_agree(signature, found_signature):
        raise SiteMismatchError(
            f"{what} lists latents of another SAE: the decoder weights of the SAE loaded here (at {dtype}) differ from "
            f"those recorded (at {recorded_dtype}) by more than half precision rounds, so its latent indices would "
            f"name other features. {hint}, or --latents."
        )


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
    return {"spec": spec if isinstance(spec, str) else "in-memory", **sae_info(sae, spec),
            "weights_sha256": digest.hexdigest()}
