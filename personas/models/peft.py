"""LoRA fine-tunes in PEFT's folder layout, merged into their base model on load.

The public emergent-misalignment fine-tunes ship as PEFT adapter folders (often rank 1): ``adapter_config.json``
(``peft_type: LORA``, ``base_model_name_or_path``, ``r``, ``lora_alpha``, ``target_modules``...) and
``adapter_model.safetensors`` with ``base_model.model.<module>.lora_A.weight`` [r, in] and ``lora_B.weight``
[out, r] per adapted linear layer. `personas.models.load_model` recognises such a folder and loads the base model
with every adapted weight replaced by ``W + scale * B A`` (``scale = lora_alpha / r``, or ``lora_alpha / sqrt(r)``
with rsLoRA; transposed for GPT-2's ``Conv1D`` / ``fan_in_fan_out``), so that TransformerLens reads the fine-tune
as one model. The ``peft`` package is not needed. Adapters that are not plain LoRA of linear layers (DoRA, extra
trained modules, other PEFT types) are refused with a message saying how to merge them with PEFT instead.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personas.errors import ModelLoadError

logger = logging.getLogger(__name__)

CONFIG_FILE = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
#: The weights file of the organism's earlier adapter format (``personas.organism.adapter.convert_adapter``).
LEGACY_ADAPTER_FILE = "adapter.safetensors"
_MERGE_HINT = ("merge it with PEFT first (PeftModel.from_pretrained(base, folder).merge_and_unload()"
               ".save_pretrained(MERGED)) and pass the merged folder")


@dataclass
class LoraAdapter:
    """A PEFT LoRA adapter read from its folder: the base it adapts, its scale, and ``{module: (A, B)}``."""

    folder: Path
    base_model: str
    rank: int
    scale: float
    fan_in_fan_out: bool
    weights: dict[str, tuple[Any, Any]]


def is_peft_adapter(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a PEFT adapter (``adapter_config.json`` with a ``peft_type``)."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        return False
    try:
        return "peft_type" in json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError):
        return False


def read_lora(folder: str | os.PathLike) -> LoraAdapter:
    """Read and check a PEFT LoRA adapter folder; a `ModelLoadError` says what is wrong and how to fix it."""
    import torch

    folder = Path(folder)
    try:
        cfg = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{str(folder / CONFIG_FILE)!r} is not readable JSON ({exc}); expected PEFT's adapter "
                             "config.") from exc
    kind = cfg.get("peft_type")
    unsupported = []
    if kind != "LORA":
        unsupported.append(f"peft_type {kind!r} (only LORA is merged here)")
    if cfg.get("use_dora"):
        unsupported.append("use_dora")
    if cfg.get("modules_to_save"):
        unsupported.append(f"modules_to_save {cfg['modules_to_save']}")
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        unsupported.append("per-module rank_pattern / alpha_pattern")
    if unsupported:
        raise ModelLoadError(f"the adapter in {str(folder)!r} uses {', '.join(unsupported)}, which personas cannot "
                             f"merge on load; {_MERGE_HINT}.")
    base = cfg.get("base_model_name_or_path")
    rank, alpha = cfg.get("r"), cfg.get("lora_alpha")
    if not base or not isinstance(rank, int) or rank < 1 or not isinstance(alpha, (int, float)):
        raise ModelLoadError(f"{str(folder / CONFIG_FILE)!r} lacks base_model_name_or_path, a positive integer r or "
                             f"a numeric lora_alpha (got {base!r}, {rank!r}, {alpha!r}); expected PEFT's LoRA config.")
    weight_file = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if weight_file is None:
        raise ModelLoadError(f"the adapter folder {str(folder)!r} has {CONFIG_FILE} but no {' or '.join(WEIGHT_FILES)}; "
                             "copy the adapter's weights file next to its config.")
    try:
        if weight_file.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(weight_file))
        else:
            tensors = torch.load(weight_file, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated download
        raise ModelLoadError(f"{str(weight_file)!r} could not be read ({type(exc).__name__}: {exc}); it may be "
                             "truncated. Download the adapter again.") from exc
    pairs: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        for part in ("lora_A", "lora_B"):
            marker = f".{part}."
            if marker in key:
                module = key.split(marker)[0].removeprefix("base_model.model.")
                pairs.setdefault(module, {})[part] = value
    incomplete = sorted(m for m, p in pairs.items() if len(p) != 2)
    if not pairs or incomplete:
        found = "no LoRA weights" if not pairs else f"unpaired lora_A/lora_B weights for {incomplete[:5]}"
        raise ModelLoadError(f"{str(weight_file)!r} holds {found}; expected base_model.model.<module>.lora_A.weight "
                             "and lora_B.weight for every adapted module.")
    scale = alpha / math.sqrt(rank) if cfg.get("use_rslora") else alpha / rank
    return LoraAdapter(folder=folder, base_model=str(base), rank=rank, scale=float(scale),
                       fan_in_fan_out=bool(cfg.get("fan_in_fan_out")),
                       weights={m: (p["lora_A"], p["lora_B"]) for m, p in sorted(pairs.items())})


def merge_lora(model: Any, adapter: LoraAdapter) -> int:
    """Add ``scale * B A`` to every adapted weight of the Hugging Face ``model``, in place; return how many.

    A module the adapter names that the model lacks, or a shape that does not fit, is a `ModelLoadError` (the
    adapter belongs to another base model).
    """
    import torch

    modules = dict(model.named_modules())
    missing = [m for m in adapter.weights if m not in modules]
    if missing:
        raise ModelLoadError(
            f"the adapter in {str(adapter.folder)!r} adapts modules that the base model {adapter.base_model!r} does "
            f"not have (e.g. {missing[:3]}); it was made for another model. Check base_model_name_or_path in "
            f"{CONFIG_FILE}."
        )
    with torch.no_grad():
        for name, (a, b) in adapter.weights.items():
            weight = modules[name].weight
            delta = (b.to(torch.float32) @ a.to(torch.float32)) * adapter.scale
            transposed = adapter.fan_in_fan_out or type(modules[name]).__name__ == "Conv1D"
            if transposed:
                delta = delta.T
            if tuple(delta.shape) != tuple(weight.shape):
                raise ModelLoadError(
                    f"the adapter's update of {name} has shape {list(delta.shape)} but the base model's weight has "
                    f"{list(weight.shape)}; the adapter was made for another model than {adapter.base_model!r}."
                )
            weight.add_(delta.to(device=weight.device, dtype=weight.dtype))
    logger.info("merged a rank-%d LoRA adapter into %d modules of %s", adapter.rank, len(adapter.weights),
                adapter.base_model)
    return len(adapter.weights)
