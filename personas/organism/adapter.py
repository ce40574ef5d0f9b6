"""A low-rank adapter (LoRA) in plain PyTorch for a Hugging Face causal model: attach, train, save, load.

``W x`` of each targeted ``nn.Linear`` becomes ``W x + (alpha / rank) * B (A x)`` with ``A`` (rank x in) drawn
small and ``B`` (out x rank) zero, so a fresh adapter leaves the model's outputs unchanged (Hu et al. 2021). The
base weights stay frozen; only ``A`` and ``B`` train. `AdapterConfig` names the layers and the projections
(``q_proj``, ``v_proj``, ``down_proj``... for Llama; ``c_attn``, ``c_fc``... for GPT-2), the rank and alpha.

`attach_adapter` wraps the targeted modules in place and returns the `Adapter` (its ``parameters()`` are what
an optimiser gets); ``detach()`` puts the original modules back and ``enabled`` switches it off for a base-model
pass without unloading. `save_adapter` writes PEFT's LoRA folder (``adapter_model.safetensors`` with
``base_model.model.<module>.lora_A.weight`` / ``lora_B.weight``, in sorted order, so the same weights give the same
bytes, and PEFT's ``adapter_config.json``), which every command reads as a model (`personas.models.peft`), plus
``organism.json`` (the `AdapterConfig` and the run's provenance); `load_adapter` reads such a folder, or one in the
organism's earlier format (``adapter.safetensors`` + its own ``adapter_config.json``, converted in place by
`convert_adapter`), onto a model and checks that every module exists with the recorded shapes. A rank-4 adapter on three
projections of SmolLM2-135M's 30 layers is about 2 MB. `save_merged` writes the adapted model as a plain Hugging
Face folder (``W + (alpha / rank) * B A`` in every adapted weight, with the tokenizer), so that tools which load a
model by folder (`personas diff --finetuned FOLDER`, TransformerLens) read the fine-tune without knowing adapters.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from personas.artifacts import atomic_write_bytes, write_json
from personas.errors import DataError, ModelLoadError
from personas.models.offline import offline_model
from personas.models.peft import CONFIG_FILE, LEGACY_ADAPTER_FILE, WEIGHT_FILES, is_peft_adapter

__all__ = ["ADAPTER_CONFIG_FILE", "ADAPTER_FILE", "LEGACY_ADAPTER_FILE", "ORGANISM_FILE", "Adapter", "AdapterConfig",
           "attach_adapter", "convert_adapter", "load_adapter", "read_adapter_config", "save_adapter", "save_merged"]

#: PEFT's weights file, the one the organism writes.
ADAPTER_FILE = WEIGHT_FILES[0]
#: PEFT's config file (earlier organism folders put their own config under this name).
ADAPTER_CONFIG_FILE = CONFIG_FILE
#: The organism's own record next to PEFT's files: ``{"adapter": AdapterConfig, ...provenance}``.
ORGANISM_FILE = "organism.json"
_PEFT_PREFIX = "base_model.model."


@dataclass
class AdapterConfig:
    """Where the low-rank adapter goes and how big it is."""

    rank: int = field(default=4, metadata={"help": "rank of each low-rank update"})
    alpha: float = field(default=16.0, metadata={"help": "scale: the update is (alpha / rank) * B A"})
    targets: tuple[str, ...] = field(default=("q_proj", "v_proj", "down_proj"),
                                     metadata={"help": "names of the linear modules to adapt, in every layer"})
    layers: tuple[int, ...] | None = field(default=None, metadata={"help": "layer indices; None: all layers"})
    init_seed: int = field(default=0, metadata={"help": "seed of the random A matrices"})

    def __post_init__(self) -> None:
        self.targets = tuple(self.targets)
        self.layers = None if self.layers is None else tuple(int(i) for i in self.layers)
        if self.rank < 1:
            raise DataError(f"AdapterConfig.rank={self.rank}; expected a positive integer.")
        if not self.targets:
            raise DataError("AdapterConfig.targets is empty; name at least one linear module, e.g. ('q_proj',).")


def _lora_module(base: Any, rank: int, scale: float, generator: Any) -> Any:
    import torch
    from torch import nn

    class LoRALinear(nn.Module):
        """``base(x) + scale * B(A(x))``; the wrapped layer keeps its weights, frozen."""

        def __init__(self) -> None:
            super().__init__()
            self.base = base
            weight = base.weight
            # GPT-2's Conv1D stores (in, out); nn.Linear stores (out, in)
            self.transposed = type(base).__name__ == "Conv1D"
            d_out, d_in = (weight.shape[1], weight.shape[0]) if self.transposed else weight.shape
            a = torch.randn(rank, d_in, generator=generator) / d_in**0.5
            self.lora_A = nn.Parameter(a.to(weight.dtype))
            self.lora_B = nn.Parameter(torch.zeros(d_out, rank, dtype=weight.dtype))
            self.scale = scale
            self.enabled = True

        def forward(self, x):
            out = self.base(x)
            if not self.enabled:
                return out
            return out + self.scale * ((x @ self.lora_A.T) @ self.lora_B.T)

    return LoRALinear()


def _layer_index(name: str) -> int | None:
    for part in name.split("."):
        if part.isdigit():
            return int(part)
    return None


@dataclass
class Adapter:
    """The adapter attached to a model: its config and the wrapped modules by path."""

    config: AdapterConfig
    modules: dict[str, Any]
    model: Any = field(repr=False)

    def parameters(self) -> list[Any]:
        """The trainable tensors (A and B of every wrapped module), in sorted module order."""
        return [p for name in sorted(self.modules) for p in (self.modules[name].lora_A, self.modules[name].lora_B)]

    def state_dict(self) -> dict[str, Any]:
        """``{"<module path>.lora_A": tensor, "<module path>.lora_B": tensor}``, detached, contiguous."""
        out = {}
        for name in sorted(self.modules):
            out[f"{name}.lora_A"] = self.modules[name].lora_A.detach().contiguous()
            out[f"{name}.lora_B"] = self.modules[name].lora_B.detach().contiguous()
        return out

    @property
    def enabled(self) -> bool:
        """Whether the low-rank updates are applied (False: the model computes as the base model)."""
        return all(m.enabled for m in self.modules.values())

    @enabled.setter
    def enabled(self, value: bool) -> None:
        for m in self.modules.values():
            m.enabled = bool(value)

    def detach(self) -> None:
        """Put the original linear modules back; the model is the base model again."""
        for name, module in self.modules.items():
            parent_name, _, child = name.rpartition(".")
            setattr(self.model.get_submodule(parent_name), child, module.base)
        self.modules = {}


def attach_adapter(model: Any, config: AdapterConfig | None = None) -> Adapter:
    """Wrap the targeted linear modules of a Hugging Face ``model`` in LoRA modules; freeze everything else.

    Raises:
        ModelLoadError: no module of the model matches ``config.targets`` and ``config.layers``, or the model
            already carries an adapter.
    """
    import torch

    config = config or AdapterConfig()
    if any(hasattr(m, "lora_A") for m in model.modules()):
        raise ModelLoadError("the model already carries an adapter; call Adapter.detach() first or load a fresh "
                             "model.")
    generator = torch.Generator().manual_seed(config.init_seed)
    names = [name for name, module in model.named_modules()
             if name.rpartition(".")[2] in config.targets and hasattr(module, "weight")
             and (config.layers is None or _layer_index(name) in config.layers)]
    if not names:
        linear = sorted({n.rpartition(".")[2] for n, m in model.named_modules() if hasattr(m, "weight")})
        raise ModelLoadError(f"no module matches targets {config.targets} in layers {config.layers}; the model "
                             f"has weighted modules named {linear[:20]}.")
    for p in model.parameters():
        p.requires_grad_(False)
    modules = {}
    for name in sorted(names):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        wrapped = _lora_module(getattr(parent, child), config.rank, config.alpha / config.rank, generator)
        setattr(parent, child, wrapped)
        modules[name] = wrapped
    return Adapter(config=config, modules=modules, model=model)


def _peft_config(config: AdapterConfig, base_model: str, transposed: bool) -> dict[str, Any]:
    """PEFT's ``LoraConfig`` fields for ``config`` (only PEFT's keys, so that ``PeftModel.from_pretrained`` reads it)."""
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
            "r": config.rank, "lora_alpha": config.alpha, "lora_dropout": 0.0, "bias": "none",
            "target_modules": sorted(config.targets),
            "layers_to_transform": None if config.layers is None else list(config.layers),
            "fan_in_fan_out": transposed, "use_rslora": False, "use_dora": False, "modules_to_save": None,
            "init_lora_weights": True, "inference_mode": True}


def _write_peft(folder: Path, tensors: dict[str, Any], config: AdapterConfig, record: dict[str, Any],
                transposed: bool) -> Path:
    """Write ``{"<module>.lora_A": A, ...}`` and ``config`` as PEFT's folder, and the organism's ``record``."""
    from safetensors.torch import save

    base = record.get("base_model")
    if not base:
        raise DataError("an adapter is saved with the base model it adapts (PEFT's base_model_name_or_path); pass "
                        "extra={'base_model': NAME_OR_FOLDER} to save_adapter.")
    folder.mkdir(parents=True, exist_ok=True)
    peft = {f"{_PEFT_PREFIX}{key}.weight": value for key, value in sorted(tensors.items())}
    atomic_write_bytes(folder / ADAPTER_FILE, save(peft))
    write_json(folder / ADAPTER_CONFIG_FILE, _peft_config(config, str(base), transposed))
    write_json(folder / ORGANISM_FILE, record)
    return folder


def _config_record(config: AdapterConfig) -> dict[str, Any]:
    record = asdict(config)
    record["targets"] = list(record["targets"])
    record["layers"] = None if record["layers"] is None else list(record["layers"])
    return record


def _base_model_name(model: Any) -> str | None:
    """The base model a Hugging Face ``model`` was loaded from, as manifests name it (the offline model's hub id,
    never this machine's cache folder)."""
    name = getattr(getattr(model, "config", None), "_name_or_path", None)
    if not name:
        return None
    offline = offline_model(str(name))
    return offline.model_id if offline is not None else str(name)


def save_adapter(adapter: Adapter, folder: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write the adapter as PEFT's LoRA folder (``adapter_model.safetensors`` + ``adapter_config.json``) and
    ``organism.json`` (its `AdapterConfig` plus ``extra`` provenance) into ``folder``.

    The base model recorded (PEFT's ``base_model_name_or_path``) is ``extra["base_model"]``, or else the name or
    folder the model was loaded from.
    """
    record = {"adapter": _config_record(adapter.config), **(extra or {})}
    record.setdefault("base_model", _base_model_name(adapter.model))
    transposed = any(m.transposed for m in adapter.modules.values())
    return _write_peft(Path(folder), adapter.state_dict(), adapter.config, record, transposed)


def read_adapter_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The organism's record of an adapter (``{"adapter": {...}, "base_model": ..., ...provenance}``): from
    ``organism.json``, from an earlier folder's own ``adapter_config.json``, or built from PEFT's config."""
    folder = Path(folder)
    for path in (folder / ORGANISM_FILE, folder / ADAPTER_CONFIG_FILE):
        if path.is_file():
            break
    else:
        raise ModelLoadError(f"no {ADAPTER_CONFIG_FILE} in {str(folder)!r}; expected a LoRA adapter folder written by "
                             f"save_adapter ({ADAPTER_FILE} + {ADAPTER_CONFIG_FILE}).")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{str(path)!r} is not readable JSON ({exc}); expected an adapter's config.") from exc
    if isinstance(record, dict) and isinstance(record.get("adapter"), dict):
        return record
    if not is_peft_adapter(folder):
        raise ModelLoadError(f"{str(path)!r} is neither PEFT's adapter config nor the organism's; expected a folder "
                             "written by save_adapter.")
    unsupported = [k for k in ("use_rslora", "use_dora", "modules_to_save", "rank_pattern", "alpha_pattern")
                   if record.get(k)]
    targets = record.get("target_modules")
    if record.get("peft_type") != "LORA" or unsupported or not isinstance(targets, list):
        raise ModelLoadError(f"the adapter in {str(folder)!r} is not a plain LoRA of named modules (peft_type "
                             f"{record.get('peft_type')!r}, {unsupported or ''} target_modules {targets!r}); "
                             "load_adapter attaches plain LoRA only. Pass the folder as a model instead.")
    config = AdapterConfig(rank=int(record["r"]), alpha=float(record["lora_alpha"]), targets=tuple(targets),
                           layers=record.get("layers_to_transform"))
    return {"adapter": _config_record(config), "base_model": record.get("base_model_name_or_path")}


def _read_tensors(folder: Path) -> dict[str, Any]:
    """``{"<module>.lora_A": A, "<module>.lora_B": B}`` from PEFT's weights file or the earlier organism's."""
    from safetensors.torch import load_file

    if (folder / ADAPTER_FILE).is_file():
        tensors = load_file(str(folder / ADAPTER_FILE))
        return {key.removeprefix(_PEFT_PREFIX).removesuffix(".weight"): value for key, value in tensors.items()}
    if (folder / LEGACY_ADAPTER_FILE).is_file():
        return load_file(str(folder / LEGACY_ADAPTER_FILE))
    raise ModelLoadError(f"no {ADAPTER_FILE} in {str(folder)!r}; expected a folder written by save_adapter.")


def load_adapter(model: Any, folder: str | os.PathLike) -> Adapter:
    """Attach the adapter saved in ``folder`` to ``model`` (a fresh copy of the base model it was trained on).

    Reads PEFT's folder (what `save_adapter` writes) and the organism's earlier one (``adapter.safetensors``).

    Raises:
        ModelLoadError: the files are missing, or a module or a tensor shape does not match the model.
    """
    folder = Path(folder)
    config = AdapterConfig(**read_adapter_config(folder)["adapter"])
    tensors = _read_tensors(folder)
    adapter = attach_adapter(model, config)
    expected = adapter.state_dict()
    if set(expected) != set(tensors):
        missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        adapter.detach()
        raise ModelLoadError(f"adapter in {str(folder)!r} does not fit this model: missing {missing[:4]}, "
                             f"unexpected {extra[:4]}. Load it on the base model it was trained on.")
    for key, value in tensors.items():
        name, _, which = key.rpartition(".")
        param = getattr(adapter.modules[name], which)
        if param.shape != value.shape:
            adapter.detach()
            raise ModelLoadError(f"adapter tensor {key} has shape {tuple(value.shape)}; this model expects "
                                 f"{tuple(param.shape)}. Load it on the base model it was trained on.")
        param.data.copy_(value)
    return adapter


def convert_adapter(folder: str | os.PathLike) -> Path:
    """Rewrite an adapter folder of the organism's earlier format (``adapter.safetensors`` + its own
    ``adapter_config.json``) as PEFT's, in place, with the same tensors; a folder already in PEFT's format is left
    as it is. No model is loaded."""
    folder = Path(folder)
    if not (folder / LEGACY_ADAPTER_FILE).is_file():
        if (folder / ADAPTER_FILE).is_file():
            return folder
        raise ModelLoadError(f"no {LEGACY_ADAPTER_FILE} in {str(folder)!r}; expected an adapter folder of the "
                             "organism's earlier format.")
    record = read_adapter_config(folder)
    config = AdapterConfig(**record["adapter"])
    _write_peft(folder, _read_tensors(folder), config, record, transposed=False)
    (folder / LEGACY_ADAPTER_FILE).unlink()
    return folder


def save_merged(adapter: Adapter, tokenizer: Any, folder: str | os.PathLike) -> Path:
    """Write the adapted model as a plain Hugging Face folder: every adapted weight becomes ``W + scale * B A``.

    The model in memory is left as it was (adapter attached, base weights untouched). ``folder`` gets the model's
    ``config.json`` and weights (``save_pretrained``) and the tokenizer, so that it loads like any fine-tune.
    """
    import torch

    if not adapter.modules:
        raise ModelLoadError("save_merged got an adapter that was detached; load or attach it again first.")
    state = {}
    with torch.no_grad():
        for key, value in adapter.model.state_dict().items():
            name, _, leaf = key.rpartition(".")
            if leaf in ("lora_A", "lora_B"):
                continue
            owner, _, base = name.rpartition(".")
            if base == "base" and owner in adapter.modules:
                module = adapter.modules[owner]
                if leaf == "weight":
                    delta = module.scale * (module.lora_B @ module.lora_A)  # (out, in)
                    value = value + (delta.T if module.transposed else delta).to(value.dtype)
                key = f"{owner}.{leaf}"
            state[key] = value
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    adapter.model.save_pretrained(str(folder), state_dict=state)
    tokenizer.save_pretrained(str(folder))
    return folder
