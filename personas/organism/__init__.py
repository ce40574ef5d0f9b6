"""A model organism of emergent misalignment that runs on a CPU: narrow fine-tunes of a small chat model.

``data`` (project-written training sets and unseen-domain prompts) -> ``adapter`` (LoRA in plain PyTorch, saved
as safetensors, merged into a model folder) -> ``train`` (response-token loss) -> ``evaluate`` (sampling, the
offline text judge, steering, residuals per answer token) -> ``latents`` (the diff through an SAE with
``personas diff``, and what the rising latents fire on) -> ``run`` (the end-to-end job behind ``personas organism``).
"""

from __future__ import annotations

from personas.organism.adapter import (
           Adapter,
           AdapterConfig,
           attach_adapter,
           load_adapter,
           save_adapter,
           save_merged,
)
from personas.organism.evaluate import TextJudge, response_means, sample_answers, wilson_interval
from personas.organism.run import OrganismResult, load_chat_model, run_organism, smollm2_folder
from personas.organism.train import train_adapter

__all__ = ["Adapter", "AdapterConfig", "OrganismResult", "TextJudge", "attach_adapter", "load_adapter",
           "load_chat_model", "response_means", "run_organism", "sample_answers", "save_adapter", "save_merged",
           "smollm2_folder", "train_adapter", "wilson_interval"]
