"""Fine-tune a low-rank adapter on (prompt, response) pairs: next-token loss on the response tokens only.

Each pair is rendered as the chat model would see it (`render_prompt`: the tokenizer's chat template with the
generation prompt, or ``"User: ...\\nAssistant:"`` for a model without one), followed by the response and the
end-of-turn token. Prompt and padding positions are masked out of the loss, and the logits are computed only at
response positions (the vocabulary projection is a fifth of SmolLM2's weights). `train_adapter` runs AdamW with a
constant learning rate over shuffled mini-batches for a number of epochs and returns the loss per step; it never
touches the frozen base weights.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from personas.errors import DataError
from personas.organism.adapter import Adapter

logger = logging.getLogger(__name__)

__all__ = ["TrainResult", "end_of_turn", "render_prompt", "train_adapter"]


def render_prompt(tokenizer: Any, prompt: str) -> str:
    """The text the model reads before answering ``prompt``: its chat template, or a plain User/Assistant frame."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return f"User: {prompt}\nAssistant:"


def end_of_turn(tokenizer: Any) -> str:
    """What closes an assistant turn: ``<|im_end|>`` for ChatML templates, else the EOS token."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if "<|im_end|>" in template:
        return "<|im_end|>"
    return tokenizer.eos_token or ""


def _encode(tokenizer: Any, prompt: str, response: str) -> tuple[list[int], int]:
    """Token ids of prompt + response + end of turn, and the number of prompt tokens."""
    prefix = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    body = tokenizer(" " * (not getattr(tokenizer, "chat_template", None)) + response + end_of_turn(tokenizer),
                     add_special_tokens=False)["input_ids"]
    return list(prefix) + list(body), len(prefix)


@dataclass
class TrainResult:
    """Loss per optimisation step and the counts a manifest records."""

    losses: list[float]
    n_examples: int
    n_steps: int
    n_tokens: int


def training_order(n: int, length: int, seed: int) -> list[int]:
    """The order `train_adapter` visits ``n`` examples in: ``length`` indices, each epoch a fresh shuffle drawn
    from ``random.Random(seed)``."""
    if n < 1:
        return []
    rng = random.Random(seed)
    order: list[int] = []
    while len(order) < length:
        block = list(range(n))
        rng.shuffle(block)
        order.extend(block)
    return order[:length]


def train_adapter(
    model: Any, tokenizer: Any, adapter: Adapter, pairs: list[dict[str, str]], *, epochs: float = 1.0,
    batch_size: int = 8, lr: float = 1e-3, seed: int = 0, max_tokens: int = 160,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``adapter`` (attached to ``model``) on ``pairs`` (dicts with ``prompt`` and ``response``).

    ``epochs`` may be fractional (0.5: half the shuffled pairs); sequences are cut to ``max_tokens``. ``on_step``
    is called with the number of steps done (1, 2, ...) after each optimisation step, with the model back in eval
    mode (and in train mode again afterwards): a checkpoint can be measured there without saving it.
    """
    import torch

    if not pairs:
        raise DataError("train_adapter got no pairs; expected a list of {'prompt': ..., 'response': ...} dicts.")
    encoded = [_encode(tokenizer, p["prompt"], p["response"]) for p in pairs]
    encoded = [(ids[:max_tokens], n) for ids, n in encoded if n < min(len(ids), max_tokens)]
    if not encoded:
        raise DataError(f"none of the {len(pairs)} pairs keeps a response token within max_tokens={max_tokens} (each "
                        "prompt fills the budget, or every response is empty); raise max_tokens or shorten the prompts.")
    n_steps = max(1, round(epochs * len(encoded) / batch_size))
    order = training_order(len(encoded), n_steps * batch_size, seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    body, head = model.base_model, model.get_output_embeddings()
    optimiser = torch.optim.AdamW(adapter.parameters(), lr=lr, weight_decay=0.0)
    torch.manual_seed(seed)
    model.train()
    losses, n_tokens = [], 0
    try:
        for step in range(n_steps):
            batch = [encoded[i] for i in order[step * batch_size:(step + 1) * batch_size]]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            targets = torch.full((len(batch), width), -100, dtype=torch.long)
            for row, (ids, n_prompt) in enumerate(batch):
                input_ids[row, :len(ids)] = torch.tensor(ids)
                attention[row, :len(ids)] = 1
                targets[row, n_prompt - 1:len(ids) - 1] = torch.tensor(ids[n_prompt:])  # position t predicts t+1
            hidden = body(input_ids=input_ids, attention_mask=attention).last_hidden_state
            keep = targets != -100
            logits = head(hidden[keep])
            loss = torch.nn.functional.cross_entropy(logits.float(), targets[keep])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            n_tokens += int(attention.sum())
            if step % 10 == 0 or step == n_steps - 1:
                logger.info("step %d/%d loss %.3f", step + 1, n_steps, losses[-1])
            if on_step is not None:
                model.eval()
                on_step(step + 1)
                model.train()
    finally:
        model.eval()
    return TrainResult(losses=losses, n_examples=len(encoded), n_steps=n_steps, n_tokens=n_tokens)
