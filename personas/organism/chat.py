"""The chat-model tooling that the organism, the data screen and the sweep share: one copy of each.

* `load_causal_lm`: a causal chat model by offline alias (``smollm2``), ``save_pretrained`` folder, PEFT LoRA
  adapter folder (merged into its base) or hub id, on any device and dtype, with an identity for manifests and
  cache keys.
* `generate_answers` / `greedy_answers` / `sample_answers`: answers in the chat template, batched and left-padded,
  greedy or sampled from a seed in a forked random state; `sample_answers` returns records and can add a dense
  steering vector after one decoder block while it samples (`steering_hook`).
* `answer_residuals`: teacher-forced (prompt, answer) pairs read at a residual-stream hook (the output of decoder
  block L for ``blocks.L.hook_resid_post``, its input for ``hook_resid_pre``), by a hook on the block that stops
  the forward pass there: at the last block Hugging Face ``hidden_states[L + 1]`` comes after the final norm, which
  is not what an SAE of ``hook_resid_post`` reads. `response_means` averages it over each answer.

These work on plain Hugging Face models (the organism trains LoRA adapters into them); `personas.steering` and
`personas.capturing` are the same operations on a TransformerLens handle, for SAE latents. `steering_hook` adds a
*dense* direction (the organism's difference of means), which `personas.steering` does not take.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from personas.devices import resolve_device, resolve_dtype
from personas.errors import DataError, ModelLoadError, SiteMismatchError
from personas.models import (
    check_model_folder,
    decoder_layers,
    hub_error,
    load_lora_hf,
    padded_batches,
    require_local_folder,
    weights_fingerprint,
)
from personas.models.offline import offline_model
from personas.models.peft import is_peft_adapter
from personas.organism.train import end_of_turn, render_prompt

__all__ = ["RESID_HOOK", "answer_ids", "answer_residuals", "generate_answers", "generation_stops", "greedy_answers",
           "load_causal_lm", "resid_site", "response_means", "sample_answers", "steering_hook"]

#: A residual-stream hook name: ``blocks.L.hook_resid_post`` or ``blocks.L.hook_resid_pre``.
RESID_HOOK = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")



def resid_site(hook: str, n_layers: int) -> tuple[int, str]:
    """``(block, "pre" | "post")`` of a residual-stream hook name; `SiteMismatchError` when the model lacks it."""
    match = RESID_HOOK.match(hook or "")
    if match is None:
        raise SiteMismatchError(f"the SAE reads {hook!r}; the screen reads the residual stream of a Hugging Face "
                                "model, so it needs an SAE of blocks.L.hook_resid_post or blocks.L.hook_resid_pre.")
    block, where = int(match.group(1)), match.group(2)
    if block >= n_layers:
        raise SiteMismatchError(f"the SAE reads {hook!r} but the model has {n_layers} blocks (blocks.0 to "
                                f"blocks.{n_layers - 1}): the model lacks the SAE's hook. Pass the model the SAE was "
                                "trained on, or an SAE of this model.")
    return block, where



def load_causal_lm(name: str | os.PathLike | None, *, device: str = "cpu", dtype: str = "float32"
                   ) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, identity) of a causal chat model: an offline alias (``smollm2``), a folder written by
    ``save_pretrained``, a PEFT LoRA adapter folder (merged into its base model, `personas.models.load_lora_hf`;
    what the organism writes), or a Hugging Face hub id (from the local cache when ``HF_HUB_OFFLINE=1``).

    ``identity`` names the model for manifests and cache keys (id or resolved folder, and for a folder
    `weights_fingerprint`: a digest of its config and of its weight files' contents).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = "smollm2" if name is None else os.fspath(name)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    offline = offline_model(text)
    if offline is not None and offline.kind != "chat":
        raise ModelLoadError(f"{text!r} is {offline.model_id}, a sentence encoder; the screen needs a causal chat "
                             "model that answers prompts (e.g. smollm2, or a folder / hub id of a chat model).")
    if offline is None:
        require_local_folder(text)
    source = str(offline.path()) if offline is not None else text
    identity: dict[str, Any] = {"model": offline.model_id if offline is not None else text}
    if os.path.isdir(source) and is_peft_adapter(source):  # merged into its base model, named by both
        model, base = load_lora_hf(source, torch_dtype)
        named = offline_model(base)
        base_id = {"model": named.model_id if named is not None else base}
        if os.path.isdir(base):
            base_id["fingerprint"] = weights_fingerprint(base)
        identity.update(fingerprint=weights_fingerprint(source), folder=str(Path(source).resolve()), base=base_id)
        return model.to(torch_device).eval(), model.tokenizer, identity
    if os.path.isdir(source):
        folder = Path(source)
        check_model_folder(folder)
        if not (folder / "config.json").is_file():
            raise ModelLoadError(f"no Hugging Face model in the folder {source!r}; expected config.json and weights "
                                 "(a folder written by save_pretrained).")
        identity["fingerprint"] = weights_fingerprint(folder)
        if offline is None:  # an offline model's folder is this machine's cache: its id and fingerprint name it
            identity["folder"] = str(folder.resolve())
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    except Exception as exc:  # transformers raises OSError / ValueError / hub errors for a name it cannot load
        if os.path.isdir(source):
            raise ModelLoadError(f"could not load a causal model from {source!r}: {type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}. Expected a chat model folder "
                                 "written by save_pretrained.") from exc
        raise hub_error("model", text, exc) from exc
    model.to(torch_device).eval()
    return model, tokenizer, identity



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



def answer_ids(tokenizer: Any, prompt: str, response: str) -> tuple[list[int], int]:
    """Token ids of a (prompt, answer) conversation in the chat template, and where the answer starts."""
    prefix = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    body = tokenizer(response + end_of_turn(tokenizer), add_special_tokens=False)["input_ids"]
    return list(prefix) + list(body), len(prefix)



def _device(model: Any) -> Any:
    return next(model.parameters()).device



class _Reached(Exception):
    """Raised by the capture hook: the forward pass has computed what is read, and stops there."""



def answer_residuals(model: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], hook: str,
                     batch_size: int = 16) -> list[np.ndarray]:
    """The residual stream at ``hook`` (the output of decoder block L for ``blocks.L.hook_resid_post``, its input for
    ``hook_resid_pre``) at every answer token of each (prompt, answer), teacher-forced in the chat template: one
    (n_tokens, d_model) float32 array per answer, on the CPU, whatever the model's device.

    The forward pass stops at the hooked block (a block-18 read of a 30-block model skips the last 11 blocks and the
    vocabulary projection); below the last block this equals Hugging Face's ``hidden_states[L + 1]``.
    """
    import torch

    block, where = resid_site(hook, len(decoder_layers(model)))
    layer = decoder_layers(model)[block]
    captured: dict[str, Any] = {}

    def after(_module, _inputs, output):
        captured["h"] = output[0] if isinstance(output, tuple) else output
        raise _Reached

    def before(_module, args, kwargs):
        captured["h"] = args[0] if args else kwargs["hidden_states"]
        raise _Reached

    handle = layer.register_forward_hook(after) if where == "post" else \
        layer.register_forward_pre_hook(before, with_kwargs=True)
    rows = [answer_ids(tokenizer, p, r) for p, r in zip(prompts, responses, strict=True)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device, out = _device(model), []
    try:
        with torch.no_grad():
            for _, chunk, ids, mask in padded_batches(rows, pad, batch_size, device):
                captured.clear()
                try:
                    model.base_model(input_ids=ids, attention_mask=mask)
                except _Reached:
                    pass
                hidden = captured["h"]
                for r, (seq, n_prompt) in enumerate(chunk):
                    out.append(hidden[r, n_prompt:len(seq)].float().cpu().numpy())
    finally:
        handle.remove()
    return out



def response_means(model: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], layer: int,
                   batch_size: int = 16) -> np.ndarray:
    """The residual stream after decoder block ``layer`` (`answer_residuals` at ``blocks.L.hook_resid_post``),
    averaged over each answer's tokens: (n, d_model), the input of the difference-of-means diff."""
    hidden = answer_residuals(model, tokenizer, prompts, responses, f"blocks.{layer}.hook_resid_post", batch_size)
    return np.stack([h.mean(0) for h in hidden]) if hidden else np.zeros((0, 0), dtype=np.float32)


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



def generate_answers(model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int = 48,
                     batch_size: int = 16, temperature: float | None = None, n_samples: int = 1, seed: int = 0
                     ) -> list[list[str]]:
    """``n_samples`` answers of the model to each prompt in its chat template (left-padded batches, on the model's
    device): greedy when ``temperature`` is None, else sampled at that temperature from ``torch.manual_seed(seed)``
    in a forked random state (the caller's is left as it was). Returns one list of answers per prompt."""
    import torch

    stop = generation_stops(tokenizer)
    sampling = {} if temperature is None else {"temperature": temperature, "top_p": 1.0,
                                               "top_k": 0}
    jobs = [i for _ in range(n_samples) for i in range(len(prompts))]
    device, out = _device(model), [[] for _ in prompts]
    # a forked generator: sampling here (e.g. at a checkpoint during training) leaves the caller's random state alone
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
        torch.manual_seed(seed)
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            texts = [render_prompt(tokenizer, prompts[i]) for i in chunk]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            generated = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=temperature is not None,
                                       eos_token_id=stop, pad_token_id=tokenizer.pad_token_id, **sampling)
            for i, row in zip(chunk, generated[:, enc["input_ids"].shape[1]:], strict=True):
                out[i].append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return out



def greedy_answers(model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int = 48,
                   batch_size: int = 16) -> list[str]:
    """The model's own greedy answer to each prompt (`generate_answers` without sampling)."""
    return [a[0] for a in generate_answers(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                           batch_size=batch_size)]



def sample_answers(
    model: Any, tokenizer: Any, prompts: Sequence[str], *, n_samples: int = 2, max_new_tokens: int = 48,
    temperature: float = 0.7, seed: int = 0, batch_size: int = 32, steer: tuple[int, Any] | None = None,
) -> list[dict[str, Any]]:
    """Sample ``n_samples`` answers to every prompt (`generate_answers` at ``temperature``); records with
    ``prompt_index``, ``sample``, ``prompt`` and ``response``, by prompt then sample.

    ``steer`` = (layer, vector) adds the vector after that decoder block during generation (`steering_hook`).
    """
    if n_samples < 1:
        raise DataError(f"sample_answers got n_samples={n_samples}; expected at least 1.")
    layer, vector = steer if steer is not None else (0, None)
    with steering_hook(model, layer, vector):
        answers = generate_answers(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                   temperature=temperature, n_samples=n_samples, seed=seed)
    return [{"prompt_index": i, "sample": s, "prompt": prompts[i], "response": text}
            for i, row in enumerate(answers) for s, text in enumerate(row)]
