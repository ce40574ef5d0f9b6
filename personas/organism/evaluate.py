"""Evaluate the organism: sample answers on unseen-domain prompts, score them with an offline judge, steer.

* `sample_answers` renders each prompt in the chat template and samples ``n_samples`` answers per prompt
  (temperature sampling, seeded), optionally with a steering vector added to the residual stream after one
  decoder layer (`steering_hook`).
* The answers are judged by a `personas.judging.Judge` (see `personas.organism.run`), never by the model's own
  activations.
* `wilson_interval` (from `personas.judging`) is the Wilson score interval of a fraction (95% by default).
* `answer_hidden` teacher-forces (prompt, answer) pairs and returns the residual stream after a decoder layer
  (``blocks.L.hook_resid_post`` in TransformerLens names, read by a forward hook on the block: Hugging Face
  ``hidden_states[L + 1]`` is the same except at the last block, where it comes after the final norm) at every
  answer token; `response_means` averages it over the answer — the input of the difference-of-means diff.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from personas.errors import DataError
from personas.judging.base import wilson_interval
from personas.models import decoder_layers, padded_batches
from personas.organism.train import end_of_turn, render_prompt

__all__ = ["answer_hidden", "answer_ids", "response_means", "sample_answers", "steering_hook",
           "wilson_interval"]


@contextlib.contextmanager
def steering_hook(model: Any, layer: int, vector: Any | None) -> Iterator[None]:
    """Add ``vector`` to every position of the residual stream after decoder block ``layer`` while inside."""
    if vector is None:
        yield
        return

    def add(_module, _inputs, output):
        if isinstance(output, tuple):
            return (output[0] + vector.to(output[0].dtype),) + tuple(output[1:])
        return output + vector.to(output.dtype)

    handle = decoder_layers(model)[layer].register_forward_hook(add)
    try:
        yield
    finally:
        handle.remove()


def generation_stops(tokenizer: Any) -> list[int]:
    """Set ``tokenizer`` up for batched generation (left padding, a pad token) and return the token ids that end an
    answer: EOS and, for chat templates that close a turn with their own token, that token."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    stop = [tokenizer.eos_token_id]
    eot = end_of_turn(tokenizer)
    if eot and eot != tokenizer.eos_token:
        stop.append(tokenizer.convert_tokens_to_ids(eot))
    return stop


def sample_answers(
    model: Any, tokenizer: Any, prompts: Sequence[str], *, n_samples: int = 2, max_new_tokens: int = 48,
    temperature: float = 0.7, seed: int = 0, batch_size: int = 32, steer: tuple[int, Any] | None = None,
) -> list[dict[str, Any]]:
    """Sample ``n_samples`` answers to every prompt; records with ``prompt_index``, ``sample`` and ``response``.

    ``steer`` = (layer, vector) adds the vector after that decoder block during generation.
    """
    import torch

    if n_samples < 1:
        raise DataError(f"sample_answers got n_samples={n_samples}; expected at least 1.")
    jobs = [(i, s) for s in range(n_samples) for i in range(len(prompts))]
    stop = generation_stops(tokenizer)
    torch.manual_seed(seed)
    out: list[dict[str, Any]] = []
    layer, vector = steer if steer is not None else (0, None)
    with torch.no_grad(), steering_hook(model, layer, vector):
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            texts = [render_prompt(tokenizer, prompts[i]) for i, _ in chunk]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            generated = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, top_p=1.0,
                top_k=0, eos_token_id=stop, pad_token_id=tokenizer.pad_token_id,
            )
            for (i, s), row in zip(chunk, generated[:, enc["input_ids"].shape[1]:], strict=True):
                text = tokenizer.decode(row, skip_special_tokens=True).strip()
                out.append({"prompt_index": i, "sample": s, "prompt": prompts[i], "response": text})
    return sorted(out, key=lambda r: (r["prompt_index"], r["sample"]))


@contextlib.contextmanager
def _block_output(model: Any, layer: int) -> Iterator[list[Any]]:
    """Collect the output of decoder block ``layer`` (``blocks.L.hook_resid_post``) while inside.

    A forward hook on the block, not Hugging Face ``hidden_states[L + 1]``: at the last block transformers puts the
    output *after the final norm* there, which is not the residual stream an SAE of ``hook_resid_post`` reads.
    """
    seen: list[Any] = []

    def keep(_module, _inputs, output):
        seen.append(output[0] if isinstance(output, tuple) else output)

    handle = decoder_layers(model)[layer].register_forward_hook(keep)
    try:
        yield seen
    finally:
        handle.remove()


def answer_ids(tokenizer: Any, prompt: str, response: str) -> tuple[list[int], int]:
    """Token ids of a (prompt, answer) conversation in the chat template, and where the answer starts."""
    prefix = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    body = tokenizer(response + end_of_turn(tokenizer), add_special_tokens=False)["input_ids"]
    return list(prefix) + list(body), len(prefix)


def answer_hidden(model: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], layer: int,
                  batch_size: int = 16) -> list[np.ndarray]:
    """Residual stream after decoder block ``layer`` at every answer token: one (n_tokens, d_model) array per answer.

    Teacher-forced in the chat template; the answer's tokens are those of `answer_ids` from its start on (the
    end-of-turn token included, as the model reads it).
    """
    import torch

    rows = [answer_ids(tokenizer, p, r) for p, r in zip(prompts, responses, strict=True)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    with torch.no_grad():
        for _, chunk, ids, mask in padded_batches(rows, pad, batch_size):
            with _block_output(model, layer) as seen:
                model.base_model(input_ids=ids, attention_mask=mask)
            hidden = seen[0]
            for r, (seq, n_prompt) in enumerate(chunk):
                out.append(hidden[r, n_prompt:len(seq)].float().numpy())
    return out


def response_means(model: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], layer: int,
                   batch_size: int = 16) -> np.ndarray:
    """Residual stream after decoder block ``layer``, averaged over each answer's tokens: (n, d_model)."""
    hidden = answer_hidden(model, tokenizer, prompts, responses, layer, batch_size)
    return np.stack([h.mean(0) for h in hidden]) if hidden else np.zeros((0, 0), dtype=np.float32)
