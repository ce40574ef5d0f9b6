"""A model organism of emergent misalignment that runs on a CPU: narrow fine-tunes of a small chat model.

``data`` (project-written training sets and unseen-domain prompts) -> ``adapter`` (LoRA in plain PyTorch, saved
as safetensors, merged into a model folder) -> ``train`` (response-token loss) -> ``chat`` (the chat-model
tooling the screen and the sweep share: loading, sampling, a dense steering vector, residuals per answer token) ->
``latents`` (the diff through an SAE with ``personas diff``, and what the rising latents fire on) -> ``run`` (the
end-to-end job behind ``personas organism``).
Beside it: ``screen`` (training examples ranked by their persona-latent shift, ``personas screen``) and ``sweep``
(the early-warning dose-response and checkpoint sweep, ``personas sweep``).
"""

from __future__ import annotations

from personas.judging import wilson_interval
from personas.organism.adapter import (
           Adapter,
           AdapterConfig,
           attach_adapter,
           load_adapter,
           save_adapter,
           save_merged,
)
from personas.organism.chat import load_causal_lm, response_means, sample_answers
from personas.organism.run import OrganismResult, load_chat_model, run_organism, smollm2_folder
from personas.organism.screen import ScreenResult, run_screen
from personas.organism.sweep import SweepResult, plot_sweep, run_sweep
from personas.organism.train import train_adapter

__all__ = ["Adapter", "AdapterConfig", "OrganismResult", "ScreenResult", "SweepResult", "attach_adapter",
           "load_adapter", "load_causal_lm", "load_chat_model", "plot_sweep", "response_means", "run_organism",
           "run_screen", "run_sweep", "sample_answers", "save_adapter", "save_merged", "smollm2_folder",
           "train_adapter", "wilson_interval"]
