"""The logit lens of an SAE latent: the tokens its decoder direction promotes and suppresses through the unembedding.

As SAE dashboards do, the direction goes through the final norm's elementwise scale (centred first for a
LayerNorm, whose mean subtraction is linear; the norm's division is the same for every token and is left out) and
the unembedding: ``logits = (g * d) @ W_U``. The scale ``g`` is the norm's weight, or ``1 + weight`` for the norms
that store it offset by one (Gemma's RMSNorm: the weight is 0 at initialisation). No forward pass of the model:
`LensSource` takes the unembedding and the final norm's scale from a loaded TransformerLens model (which folds the
offset into its weights), or reads those two tensors alone from a Hugging Face model folder (safetensors or a
PyTorch state dict; names found on a weightless ``meta`` copy of the model, the offset found by running a copy of
the norm module alone with a zero weight). Encoders (MiniLM) have no unembedding: the lens is skipped with a note.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from personas.models.offline import offline_model

__all__ = ["LensSource", "logit_lens", "model_folder", "read_unembedding"]

logger = logging.getLogger(__name__)

_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


@dataclass
class LensSource:
    """An unembedding ``W_U`` [d_model, vocab], the final norm's weight (or None) and kind, and a tokenizer; or a
    ``note`` saying why there is none."""

    W_U: np.ndarray | None = None
    norm_weight: np.ndarray | None = None
    norm_kind: str | None = None  # "layernorm", "rmsnorm" or None
    norm_offset: float = 0.0  # 1.0 where the norm scales by (1 + weight) (Gemma's RMSNorm)
    tokenizer: Any = None
    note: str | None = None
    origin: str = ""

    @classmethod
    def from_hooked(cls, model: Any, tokenizer: Any = None) -> LensSource:
        """From a TransformerLens ``HookedTransformer`` (its ``W_U`` and ``ln_final``)."""
        kind = getattr(model.cfg, "normalization_type", None)
        weight = getattr(getattr(model, "ln_final", None), "w", None)
        return cls(W_U=model.W_U.detach().float().cpu().numpy(),
                   norm_weight=None if weight is None else weight.detach().float().cpu().numpy(),
                   norm_kind={"LN": "layernorm", "LNPre": "layernorm", "RMS": "rmsnorm", "RMSPre": "rmsnorm"}.get(kind),
                   tokenizer=tokenizer if tokenizer is not None else model.tokenizer,
                   origin=f"{model.cfg.model_name} (loaded)")

    @classmethod
    def for_run(cls, data: Any, model: Any = None) -> LensSource:
        """For a run (`personas.report.run_data.RunData`): ``model`` if given, the run's own loaded model when it is
        a HookedTransformer, else the tensors read from the model's folder; a note when none applies."""
        handle = model if model is not None else getattr(data, "handle", None)
        if handle is not None:
            inner = getattr(handle, "model", handle)
            if getattr(handle, "is_encoder", False):
                return cls(note="logit lens skipped: the model is an encoder (no unembedding).")
            if hasattr(inner, "W_U") and hasattr(inner, "cfg") and type(inner).__name__ == "HookedTransformer":
                return cls.from_hooked(inner, data.tokenizer)
        folder = model_folder(data.manifest)
        if folder is None:
            return cls(note=f"logit lens skipped: the weights of {data.model_name!r} are not in a local folder "
                            "(pass model= to personas.card with the loaded model).")
        try:
            return read_unembedding(folder, tokenizer=data.tokenizer)
        except Exception as exc:  # an unreadable folder must not stop a card; the note says why
            logger.warning("logit lens skipped: %s", exc)
            return cls(note=f"logit lens skipped: could not read the unembedding from {folder} "
                            f"({type(exc).__name__}: {exc}).")


def model_folder(manifest: dict[str, Any]) -> Path | None:
    """The local folder of a run's model (an offline model's folder, or the folder it was loaded from), or None."""
    model = manifest.get("model")
    model_id = model.get("model") if isinstance(model, dict) else model
    config = manifest.get("config") or {}
    asked = (config.get("capture") or {}).get("model")
    source = manifest.get("source") or {}
    if not asked and isinstance(source.get("fingerprint"), dict):
        asked = (source["fingerprint"].get("capture") or {}).get("model")
    for name in (model_id,) if model_id else (asked,):  # the model that ran (a passed model overrides the config)
        if not name:
            continue
        offline = offline_model(str(name))
        if offline is not None:
            return Path(offline.path())
        if Path(str(name)).is_dir():
            return Path(str(name))
    return None


def read_unembedding(folder: str | Path, *, tokenizer: Any = None) -> LensSource:
    """The unembedding and final norm weight of the Hugging Face model in ``folder``, read alone (no forward pass;
    the rest of the weights are not loaded). An encoder folder gives a `LensSource` with a note."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(folder)
    config = AutoConfig.from_pretrained(str(folder))
    if not any(a.endswith(_CAUSAL_SUFFIXES) for a in (getattr(config, "architectures", None) or [])):
        return LensSource(note=f"logit lens skipped: {folder.name} is not a causal language model "
                               f"({', '.join(config.architectures or ['no architecture'])}); encoders have no unembedding.")
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    names = {id(m): n for n, m in skeleton.named_modules()}
    out_name = names[id(skeleton.get_output_embeddings())]
    in_name = names[id(skeleton.get_input_embeddings())]
    norm_name = None
    for name, module in skeleton.named_modules():  # the last norm before the head is the final one
        if name == out_name:
            break
        if type(module).__name__.endswith("Norm") and not list(module.children()):
            norm_name, norm_type = name, type(module).__name__
    tensors = _read_tensors(folder, [f"{out_name}.weight", f"{in_name}.weight"]
                            + ([f"{norm_name}.weight"] if norm_name else []))
    head = tensors.get(f"{out_name}.weight", tensors.get(f"{in_name}.weight"))  # tied embeddings: the input one
    if head is None:
        raise KeyError(f"neither {out_name}.weight nor {in_name}.weight is in the folder's weights")
    weight = tensors.get(f"{norm_name}.weight") if norm_name else None
    offset = _norm_offset(skeleton.get_submodule(norm_name)) if weight is not None else 0.0
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return LensSource(W_U=head.float().numpy().T, norm_weight=None if weight is None else weight.float().numpy(),
                      norm_kind=None if norm_name is None else ("rmsnorm" if "RMS" in norm_type else "layernorm"),
                      norm_offset=offset, tokenizer=tokenizer, origin=f"{folder.name} ({out_name}, {norm_name})")


def _norm_offset(norm: Any) -> float:
    """1.0 when the norm module scales by ``1 + weight`` (Gemma's RMSNorm), 0.0 when by ``weight``. torch's own
    LayerNorm and RMSNorm scale by their weight; for any other class a CPU copy of the (weightless, ``meta``)
    module runs alone on a random vector with its weight and bias set to zero, and gives zeros only when it scales
    by ``weight``: read from what the module does, not from its class name (no forward pass of the model)."""
    import copy

    import torch

    weight = getattr(norm, "weight", None)
    if weight is None or weight.dim() != 1 or type(norm) in (torch.nn.LayerNorm, torch.nn.RMSNorm):
        return 0.0
    probe = copy.deepcopy(norm).to_empty(device="cpu").float()
    with torch.no_grad():
        for tensor in [*probe.parameters(), *probe.buffers()]:
            tensor.zero_()
        out = probe(torch.randn(1, 2, weight.shape[0], generator=torch.Generator().manual_seed(0)))
    out = out[0] if isinstance(out, tuple) else out
    return 1.0 if bool(out.abs().max() > 0) else 0.0


def _read_tensors(folder: Path, wanted: list[str]) -> dict[str, Any]:
    """The tensors named ``wanted`` (those present) from a folder's safetensors (one file or an index) or
    ``pytorch_model.bin``."""
    import torch

    found: dict[str, Any] = {}
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = {weight_map[n] for n in wanted if n in weight_map}
    elif (folder / "model.safetensors").is_file():
        files = {"model.safetensors"}
    else:
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", mmap=True, weights_only=True)
        return {n: state[n] for n in wanted if n in state}
    from safetensors import safe_open

    for name in files:
        with safe_open(str(folder / name), framework="pt") as f:
            keys = set(f.keys())
            found.update({n: f.get_tensor(n) for n in wanted if n in keys})
    return found


def logit_lens(source: LensSource, direction: Any, *, k: int = 10) -> dict[str, Any]:
    """The ``k`` tokens a direction [d_model] promotes most and suppresses most through ``source``, as
    ``{"promoted": [{"token", "id", "logit"}...], "suppressed": [...], "how": ...}``; ``{"note": ...}`` when there is
    no unembedding or no direction."""
    if source.note or source.W_U is None:
        return {"note": source.note or "logit lens skipped: no unembedding."}
    if direction is None:
        return {"note": "logit lens skipped: the SAE's decoder is not at hand (its spec in the manifest could not be "
                        "loaded; pass sae= to personas.card)."}
    d = np.asarray(direction, dtype=np.float64).ravel()
    if d.shape[0] != source.W_U.shape[0]:
        return {"note": f"logit lens skipped: the decoder direction has {d.shape[0]} dims, the unembedding "
                        f"{source.W_U.shape[0]}."}
    if source.norm_kind == "layernorm":
        d = d - d.mean()
    if source.norm_weight is not None:
        d = d * (source.norm_offset + source.norm_weight.astype(np.float64))
    logits = d @ source.W_U.astype(np.float64)
    order = np.argsort(-logits, kind="stable")

    def side(ids: np.ndarray) -> list[dict[str, Any]]:
        texts = source.tokenizer.convert_ids_to_tokens([int(i) for i in ids]) if source.tokenizer is not None else ids
        readable = [source.tokenizer.convert_tokens_to_string([t]) if source.tokenizer is not None else str(t)
                    for t in texts]
        return [{"token": t, "id": int(i), "logit": float(logits[i])} for t, i in zip(readable, ids, strict=False)]

    how = ("decoder direction" + (" centred," if source.norm_kind == "layernorm" else "")
           + ((" times the final norm's scale (1 + weight)," if source.norm_offset else
               " times the final norm's weight,") if source.norm_weight is not None else "")
           + f" through the unembedding of {source.origin}")
    return {"promoted": side(order[:k]), "suppressed": side(order[::-1][:k]), "how": how}
