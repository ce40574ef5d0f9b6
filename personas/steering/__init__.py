"""Steering: add an SAE latent's decoder direction (or clamp the latent) while a causal model generates.

* `hooks`: `steer`, the context manager that registers one forward hook at the SAE's site and removes exactly it.
* `generation`: batched, cached generation (`generate`, `decode`, `BatchDecoder`) that calls the hooks at the
  absolute positions one full, unpadded sequence would have.
* `sweep`: every prompt at every strength in one decode (`steered_generations`), scored (`steer_sweep`).
* `validation`: validation by steering, judged: candidates by rule, screening, confirmation, dose-response.

The names below are the public face; import them from ``personas.steering``.
"""

from personas.config import SteerConfig
from personas.steering.generation import (
    BatchDecoder,
    context_size,
    decode,
    decode_batch_limit,
    generate,
    plain_hf_model,
    prompt_ids,
    render_prompt,
    row_seed,
    stop_token_ids,
)
from personas.steering.hooks import Steering, active_steerings, steer
from personas.steering.sweep import parse_alphas, steer_sweep, steered_generations

__all__ = [
    "BatchDecoder", "SteerConfig", "Steering", "active_steerings", "context_size", "decode", "decode_batch_limit",
    "generate", "parse_alphas", "plain_hf_model", "prompt_ids", "render_prompt", "row_seed", "steer", "steer_sweep",
    "steered_generations", "stop_token_ids",
]
