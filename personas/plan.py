"""Dry runs: what a capture job will need, from configs and tokenizers only (no weights are loaded).

`plan_job` resolves the model (offline alias, folder, PEFT adapter, official TransformerLens name or hub id: its
``config.json``, from the Hugging Face cache when offline), the site and the SAE (a folder's ``cfg.json`` or a
sae-lens release's config, `personas.saes.release_config`), tokenizes the data exactly as the capture will (chat
template, truncation, `personas.capturing.tokenize_conversations`), and estimates:

* **parameters**: counted on a copy of the architecture built on PyTorch's ``meta`` device (exact for the Hugging
  Face model; HookedTransformer adds an untied unembedding when the checkpoint ties it);
* **weights** = parameters x bytes of the dtype;
* **activations per batch** for the largest batch (``batch_size`` rows x the longest conversation, as the capture
  sorts by length): the residual stream ``R = B T d`` x bytes, a block's transient peak
  ``max(k_att B H T^2 + 4 R, k_mlp B T d_mlp) + 3 R`` (eager attention: k_att = 2 T x T tensors alive at once in
  Llama-style blocks, 3 in GPT-2's, as measured; a gated MLP
  holds gate, up and product, k_mlp = 3, else 2), ``R`` per hooked site kept in the cache, and float32 logits
  ``B T V x 4`` when the deepest hook is the last block (the forward cannot stop early);
* **SAE**: its weights (``2 d_in d_sae + d_in + d_sae``) and the codes of one encode chunk (``min(encode tokens,
  B T)`` x ``d_sae`` x 4 bytes x 3: pre-activations, selected values, output);
* **cache on disk** (``personas cache``): pooled float32 activations per hook and row, plus sparse per-token codes at
  8 bytes per non-zero (the SAE's k per token, else 64 assumed);
* **tokens**: all tokens the forward pass reads, and the response tokens that are pooled.

The peak is weights + activations + SAE. It is an estimate: allocator caching and library workspaces add a few
per cent on a GPU (`tests/test_plan.py` checks it against a measured peak).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from personas.capturing import tokenize_conversations
from personas.config import CaptureConfig
from personas.data import load_responses
from personas.errors import PersonasError
from personas.logs import quiet_third_party
from personas.models import ModelHandle, hook_layer, hub_error
from personas.models.loading import _official_name
from personas.models.offline import offline_model
from personas.models.peft import is_peft_adapter, read_lora
from personas.saes import check_sae_folder, check_sae_spec, release_config
from personas.saes.site import default_hook

_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


@dataclass
class JobPlan:
    """What a job will read and need; sizes in bytes (`format_plan` prints them in MiB / GiB)."""

    model: str
    source: str
    architecture: str
    dtype: str
    batch_size: int
    n_params: int
    d_model: int
    n_layers: int
    n_ctx: int
    hooks: list[str]
    sae: dict[str, Any] | None
    n_rows: int = 0
    n_tokens: int = 0
    n_response_tokens: int = 0
    longest: int = 0
    weights_bytes: int = 0
    activation_bytes: int = 0
    sae_weight_bytes: int = 0
    sae_code_bytes: int = 0
    cache_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def peak_bytes(self) -> int:
        """Estimated peak memory of the capture: weights, one batch's activations, the SAE and its codes."""
        return self.weights_bytes + self.activation_bytes + self.sae_weight_bytes + self.sae_code_bytes

    def to_dict(self) -> dict[str, Any]:
        """The plan's fields and its peak, for JSON."""
        return {**asdict(self), "peak_bytes": self.peak_bytes}


def human(n: float) -> str:
    """Bytes as MiB below 1 GiB, else GiB."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _dims(cfg: Any) -> dict[str, int]:
    get = lambda *names, default=0: next((int(getattr(cfg, n)) for n in names if getattr(cfg, n, None)), default)  # noqa: E731
    d = get("hidden_size", "n_embd", "d_model")
    heads = get("num_attention_heads", "n_head")
    return {"d_model": d, "n_layers": get("num_hidden_layers", "n_layer"), "n_heads": heads,
            "d_mlp": get("intermediate_size", "n_inner", default=4 * d), "vocab": get("vocab_size"),
            "n_ctx": get("max_position_embeddings", "n_positions", "n_ctx")}


def resolve_model_config(name: str) -> tuple[Any, str, str]:
    """``(transformers config, where it was read, backend)`` of a model name, without weights."""
    with quiet_third_party():
        from transformers import AutoConfig

    offline = offline_model(name)
    backend = "bridge"
    if offline is not None:
        source = str(offline.path())
    elif os.path.isdir(name) and is_peft_adapter(name):
        base = read_lora(name).base_model
        source = str(offline_model(base).path()) if offline_model(base) is not None else base
    elif os.path.isdir(name):
        source = name
    else:
        official = _official_name(name)
        source, backend = (official, "hooked") if official else (name, "bridge")
    try:
        with quiet_third_party():
            return AutoConfig.from_pretrained(source), source, backend
    except Exception as exc:
        if os.path.isdir(source):
            raise PersonasError(f"the folder {source!r} has no readable config.json ({type(exc).__name__}: {exc}); "
                                "expected a folder written by save_pretrained.") from exc
        raise hub_error("the config of model", source, exc) from exc


def count_parameters(config: Any, backend: str = "bridge") -> int:
    """Parameters of the architecture ``config`` describes, counted on PyTorch's meta device (no memory)."""
    import torch

    with quiet_third_party():
        from transformers import AutoModel, AutoModelForCausalLM

    with torch.device("meta"), quiet_third_party():
        try:
            model = AutoModelForCausalLM.from_config(config)
        except ValueError:  # encoders (MiniLM)
            model = AutoModel.from_config(config)
    n = sum(p.numel() for p in model.parameters())
    if backend == "hooked" and getattr(config, "tie_word_embeddings", False):
        dims = _dims(config)
        n += dims["vocab"] * dims["d_model"]  # HookedTransformer keeps W_U apart from W_E
    return int(n)


def _tokenizer_handle(source: str, model_id: str, n_ctx: int) -> ModelHandle:
    with quiet_third_party():
        from transformers import AutoTokenizer

    try:
        with quiet_third_party():
            tok = AutoTokenizer.from_pretrained(source)
    except Exception as exc:
        raise hub_error("the tokenizer of model", source, exc) from exc
    # what tokenize_conversations reads of a model: its tokenizer and context; no weights
    return ModelHandle(model=SimpleNamespace(tokenizer=tok, cfg=SimpleNamespace(n_ctx=n_ctx, default_prepend_bos=True)),
                       model_id=model_id, backend="plan")


def _sae_summary(spec: Any, model: str) -> dict[str, Any] | None:
    resolved = check_sae_spec(spec, model)
    if resolved is None:
        return None
    if isinstance(resolved, Path):
        cfg = check_sae_folder(resolved)
        meta = cfg.get("metadata") or {}
        hook = cfg.get("hook_name") or meta.get("hook_name")
        k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
        return {"spec": str(spec), "d_in": cfg["d_in"], "d_sae": cfg["d_sae"], "hook_name": hook, "k": k,
                "architecture": cfg.get("architecture")}
    cfg = release_config(*resolved)
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    return {"spec": str(spec), "d_in": int(cfg["d_in"]), "d_sae": int(cfg["d_sae"]), "hook_name": cfg.get("hook_name"),
            "k": k, "architecture": cfg.get("architecture")}


def plan_job(capture: CaptureConfig, sae: Any = "default", data: Any = None, *, hooks: list[str] | None = None,
             encode_batch_tokens: int = 8192, tokens: bool = False, prompts: list[str] | None = None,
             responses: list[str] | None = None) -> JobPlan:
    """Resolve model, site, SAE and data of a capture job and estimate what it needs (see the module docstring).

    ``data``: a responses file or frame (`personas.data.load_responses`); or ``prompts`` and ``responses``.
    ``tokens``: the job keeps per-token SAE codes (the cache's default) in its size on disk.
    """
    config, source, backend = resolve_model_config(capture.model)
    dims = _dims(config)
    dtype = "float32" if capture.dtype == "auto" else str(capture.dtype).replace("bf16", "bfloat16")
    size = _BYTES.get(dtype, 4)
    sae_info = _sae_summary(sae, capture.model)
    hook_list = list(hooks or ([capture.hook] if capture.hook else [])) or (
        [sae_info["hook_name"]] if sae_info and sae_info["hook_name"] else [default_hook(capture.model)])
    plan = JobPlan(model=capture.model, source=source, architecture=(getattr(config, "architectures", None) or
                   [type(config).__name__])[0], dtype=dtype, batch_size=capture.batch_size,
                   n_params=count_parameters(config, backend), d_model=dims["d_model"], n_layers=dims["n_layers"],
                   n_ctx=dims["n_ctx"], hooks=hook_list, sae=sae_info)
    for hook in hook_list:
        layer = hook_layer(hook)
        if layer is not None and not 0 <= layer < dims["n_layers"]:
            raise PersonasError(f"hook {hook!r} is not a site of model {capture.model!r} ({dims['n_layers']} blocks, "
                                f"blocks.0 .. blocks.{dims['n_layers'] - 1}).")
    if sae_info and sae_info["d_in"] != dims["d_model"]:
        plan.notes.append(f"the SAE reads {sae_info['d_in']} dimensions but the model's d_model is {dims['d_model']}: "
                          "the job will refuse it")
    plan.weights_bytes = plan.n_params * size
    if data is not None:
        loaded = load_responses(data)
        prompts, responses = loaded.prompts, loaded.texts
    if prompts is not None and responses is not None:
        handle = _tokenizer_handle(source, capture.model, dims["n_ctx"])
        tokenized = tokenize_conversations(handle, prompts, responses, capture)
        lengths = sorted((len(t.input_ids) for t in tokenized), reverse=True)
        plan.n_rows, plan.n_tokens, plan.longest = len(lengths), sum(lengths), lengths[0] if lengths else 0
        plan.n_response_tokens = sum(t.n_response - capture.skip_first for t in tokenized)
        batch_rows = min(capture.batch_size, plan.n_rows)
        response_in_batch = sum(sorted((t.n_response for t in tokenized), reverse=True)[:batch_rows])
    else:
        batch_rows, plan.longest = capture.batch_size, min(capture.max_length, dims["n_ctx"] or capture.max_length)
        response_in_batch = batch_rows * plan.longest
        plan.notes.append("no data given: the batch is sized at max_length tokens per row")
    rows, width = batch_rows, plan.longest
    resid = rows * width * dims["d_model"] * size
    gated = any(s in plan.architecture for s in ("Llama", "Qwen", "Gemma", "Mistral"))
    # eager attention: HF GPT-2 holds scores, masked scores and probabilities at once, Llama-style blocks two
    attn = (2 if gated else 3) * rows * dims["n_heads"] * width * width * size + 4 * resid
    mlp = (3 if gated else 2) * rows * width * dims["d_mlp"] * size
    deepest = max((hook_layer(h) for h in hook_list if hook_layer(h) is not None), default=dims["n_layers"] - 1)
    logits = rows * width * dims["vocab"] * 4 if deepest + 1 >= dims["n_layers"] else 0
    plan.activation_bytes = int(max(attn, mlp) + 3 * resid + len(hook_list) * resid + logits)
    if sae_info:
        d_in, d_sae = sae_info["d_in"], sae_info["d_sae"]
        plan.sae_weight_bytes = (2 * d_in * d_sae + d_in + d_sae) * size
        plan.sae_code_bytes = min(encode_batch_tokens, response_in_batch) * d_sae * 4 * 3
    if plan.n_rows:
        pooled = plan.n_rows * len(hook_list) * dims["d_model"] * 4
        k = int((sae_info or {}).get("k") or 64)
        codes = (plan.n_rows * min(k * 4, sae_info["d_sae"]) * 8
                 + (plan.n_response_tokens * k * 8 if tokens else 0)) if sae_info else 0
        plan.cache_bytes = pooled + codes
    return plan


def format_plan(plan: JobPlan) -> str:
    """The dry run's printout: model, site, SAE, data, and the memory figures."""
    sae = plan.sae
    lines = [
        f"dry run: nothing loaded | model {plan.model} ({plan.architecture}, {plan.n_layers} blocks, d_model "
        f"{plan.d_model}, context {plan.n_ctx}) from {plan.source}",
        f"site {', '.join(plan.hooks)} | SAE " + ("none" if not sae else
                                                 f"{sae['spec']} ({sae['d_in']} -> {sae['d_sae']}, "
                                                 f"{sae['architecture']}, hook {sae['hook_name']})"),
        f"parameters {plan.n_params / 1e6:,.1f}M | weights {human(plan.weights_bytes)} at {plan.dtype}",
    ]
    if plan.n_rows:
        lines.append(f"data {plan.n_rows} conversations | tokens to process {plan.n_tokens:,} (response tokens "
                     f"{plan.n_response_tokens:,}) | longest {plan.longest}")
    lines.append(f"per batch of {plan.batch_size} x {plan.longest} tokens: activations {human(plan.activation_bytes)}"
                 + (f", SAE weights {human(plan.sae_weight_bytes)}, SAE codes {human(plan.sae_code_bytes)}"
                    if sae else ""))
    lines.append(f"estimated peak memory {human(plan.peak_bytes)}"
                 + (f" | cache on disk about {human(plan.cache_bytes)}" if plan.cache_bytes else ""))
    lines += [f"note: {n}" for n in plan.notes]
    return "\n".join(lines)


def plan_train_sae(model: str, hook: str, d_sae: int, n_tokens: int, batch_size_tokens: int) -> tuple[JobPlan, str]:
    """What ``personas train-sae`` needs: the model in float32 (`token_activations` reads 32 texts of up to 256
    tokens at a time), every captured token's activation held in float32 (``n_tokens x d_model x 4``), and the SAE
    with Adam's two moments and its gradients (4 x its weights) plus one step's codes."""
    plan = plan_job(CaptureConfig(model=model, hook=hook, batch_size=32, max_length=256, dtype="float32"), sae=None)
    d = plan.d_model
    sae_weights = (2 * d * d_sae + d + d_sae) * 4
    stored = n_tokens * d * 4
    step = batch_size_tokens * d_sae * 4 * 4  # pre-activations, codes and their gradients
    total = plan.weights_bytes + plan.activation_bytes + stored + 4 * sae_weights + step
    text = "\n".join([
        format_plan(plan).splitlines()[0],
        f"site {hook} | parameters {plan.n_params / 1e6:,.1f}M | weights {human(plan.weights_bytes)} at float32",
        f"training an SAE {d} -> {d_sae} on {n_tokens:,} token activations ({human(stored)} held in memory), "
        f"{batch_size_tokens:,} tokens per step",
        f"SAE weights {human(sae_weights)} (x4 with gradients and Adam moments), codes per step {human(step)}",
        f"estimated peak memory {human(total)}",
    ])
    return plan, text
