"""Train a sae-lens TopK / BatchTopK SAE on activations already captured in memory, evaluate it, save it.

The activations are a `(n_tokens, d_in)` tensor (see `personas.capture`). A seeded, random `eval_fraction`
of the rows is held out; the rest is served to `sae_lens.SAETrainer` in shuffled batches, epoch after epoch,
until `TrainSAEConfig.n_tokens` samples have been seen.

Two choices make a small CPU run train well:

* **Scale normalisation.** Activations are multiplied by one constant so that their mean squared norm
  (around the mean) is `d_in`, the scale sae-lens's "expected_average_only_in" aims for. Residual streams
  inside a BERT block are pre-LayerNorm, so their overall scale depends on the model; one constant makes a
  learning rate portable between models. The constant is folded into the weights when training ends, so the
  returned SAE encodes and reconstructs *raw* activations.
* **Decoder bias at the data's geometric median**, so the latents start out modelling deviations from a typical
  token instead of spending the first steps learning the offset.

    >>> sae, metrics = train_sae(acts, hook_name="blocks.3.hook_resid_post", model_id="minilm",
    ...                          config=TrainSAEConfig(n_tokens=1_000_000))
    >>> save_trained_sae(sae, metrics, "my_sae", provenance={"corpus": describe_corpus()})
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from personas.artifacts import manifest_header
from personas.config import TrainSAEConfig
from personas.devices import resolve_device, resolve_dtype
from personas.errors import DataError, PersonasError, SiteMismatchError

if TYPE_CHECKING:
    import torch
    from sae_lens import SAE

__all__ = ["activation_statistics", "evaluate_sae", "final_metrics", "finish_training", "make_trainer", "save_trained_sae",
           "train_sae", "train_step"]

logger = logging.getLogger(__name__)

#: Fraction of the training steps spent warming the learning rate up, and decaying it linearly to zero at the end.
WARMUP_FRACTION = 0.05
DECAY_FRACTION = 0.2
#: A latent that has not fired for this many training tokens counts as dead (it then gets the TopK auxiliary loss).
DEAD_WINDOW_TOKENS = 250_000
#: Rows used to estimate the scale and the geometric median.
_STATS_ROWS = 65_536
TRAINING_FILENAME = "training.json"


# ---------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------


def _check_activations(activations: Any, d_in: int | None = None, name: str = "activations") -> None:
    import torch

    if not isinstance(activations, torch.Tensor):
        raise DataError(
            f"{name} must be a torch.Tensor of shape (n_tokens, d_in); got {type(activations).__name__}."
        )
    if activations.ndim != 2:
        raise DataError(
            f"{name} has shape {tuple(activations.shape)}; expected (n_tokens, d_in). "
            "Flatten batch and position dimensions first, e.g. acts[mask] or acts.reshape(-1, d_in)."
        )
    if not activations.is_floating_point():
        raise DataError(f"{name} has dtype {activations.dtype}; expected a floating-point tensor.")
    if d_in is not None and activations.shape[1] != d_in:
        raise SiteMismatchError(
            f"{name} has shape {tuple(activations.shape)}, but the SAE expects d_in={d_in}. "
            "Check that the activations come from the hook the SAE was trained on."
        )


def _evaluate(
    sae: SAE, activations: torch.Tensor, batch_tokens: int
) -> tuple[dict[str, float], torch.Tensor]:
    """Quality figures and the per-latent "fired at least once" mask over `activations`."""
    import torch

    n, d_in = activations.shape
    d_sae = sae.cfg.d_sae
    device = sae.W_dec.device
    sse = 0.0
    sum_x = torch.zeros(d_in, dtype=torch.float64, device=device)
    sum_x2 = 0.0
    active = 0.0
    fired = torch.zeros(d_sae, dtype=torch.bool, device=device)
    was_training = sae.training
    sae.eval()
    with torch.no_grad():
        for start in range(0, n, batch_tokens):
            x = activations[start : start + batch_tokens].to(device=device, dtype=sae.dtype)
            feats = sae.encode(x)
            recon = sae.decode(feats)
            x64 = x.double()
            sse += (recon.double() - x64).pow(2).sum().item()
            sum_x += x64.sum(0)
            sum_x2 += x64.pow(2).sum().item()
            nonzero = feats != 0
            active += nonzero.sum().item()
            fired |= nonzero.any(0)
    sae.train(was_training)
    sst = sum_x2 - sum_x.pow(2).sum().item() / n
    metrics = {
        "explained_variance": 1.0 - sse / sst if sst > 0 else float("nan"),
        "mse": sse / (n * d_in),
        "l0": active / n,
        "dead_fraction": 1.0 - fired.float().mean().item(),
        "n_tokens": int(n),
    }
    return metrics, fired.cpu()


def evaluate_sae(sae: SAE, activations: torch.Tensor, batch_tokens: int = 8192) -> dict[str, float]:
    """Reconstruction quality of any sae-lens SAE on raw activations of shape (n_tokens, d_in).

    Returns `explained_variance` (1 - SSE/SST, SST taken around the activations' mean), `mse` (mean squared
    error per element), `l0` (mean number of active latents per token), `dead_fraction` (latents that never
    fire on these rows) and `n_tokens`.
    """
    _check_activations(activations, sae.cfg.d_in)
    if activations.shape[0] < 2:
        raise DataError(
            f"evaluate_sae needs at least 2 rows; got activations of shape {tuple(activations.shape)}."
        )
    if batch_tokens < 1:
        raise PersonasError(f"evaluate_sae(batch_tokens={batch_tokens}) must be at least 1.")
    metrics, _ = _evaluate(sae, activations, batch_tokens)
    return metrics


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------


def _batches(rows: torch.Tensor, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless shuffled float32 batches of exactly `batch_size` rows, one permutation per epoch."""
    import torch

    n = rows.shape[0]
    order = torch.randperm(n, generator=generator)
    pos = 0
    while True:
        if pos + batch_size <= n:
            index = order[pos : pos + batch_size]
            pos += batch_size
        else:  # the epoch ends inside this batch: finish it and start the next permutation
            parts = [order[pos:]]
            need = batch_size - (n - pos)
            while need > 0:
                order = torch.randperm(n, generator=generator)
                take = min(need, n)
                parts.append(order[:take])
                need -= take
                pos = take
            index = torch.cat(parts)
        yield rows[index.to(rows.device)].float()


def _geometric_median(x: torch.Tensor, iters: int = 30, eps: float = 1e-8) -> torch.Tensor:
    """Weiszfeld's algorithm, started at the mean."""
    median = x.mean(0)
    for _ in range(iters):
        weights = 1.0 / (x - median).norm(dim=1).clamp_min(eps)
        new = (weights[:, None] * x).sum(0) / weights.sum()
        if (new - median).norm() <= 1e-6 * median.norm().clamp_min(1.0):
            return new
        median = new
    return median


def _build_training_sae(
    config: TrainSAEConfig, d_in: int, hook_name: str, model_id: str, dtype: str, device: str
):
    from sae_lens import (
        BatchTopKTrainingSAE,
        BatchTopKTrainingSAEConfig,
        TopKTrainingSAE,
        TopKTrainingSAEConfig,
    )
    from sae_lens.saes.sae import SAEMetadata

    metadata = SAEMetadata(
        model_name=model_id,
        hook_name=hook_name,
        hook_head_index=None,
        prepend_bos=False,
        trained_with="personas",
    )
    common = dict(
        d_in=d_in,
        d_sae=config.d_sae,
        dtype=dtype,
        device=device,
        normalize_activations="expected_average_only_in",
        metadata=metadata,
    )
    if config.architecture == "batchtopk":
        return BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(k=float(config.k), **common))
    return TopKTrainingSAE(TopKTrainingSAEConfig(k=int(config.k), **common))


def _to_inference(training_sae) -> SAE:
    """The inference sae-lens SAE of a trained training SAE: what `save_inference_model` would write."""
    from sae_lens import SAE

    cfg_dict = training_sae.cfg.get_inference_sae_cfg_dict()
    state = {key: value.detach().clone() for key, value in training_sae.state_dict().items()}
    training_sae.process_state_dict_for_saving_inference(state)
    sae = SAE.from_dict(cfg_dict)
    sae.load_state_dict(state)
    return sae.to(device=training_sae.device, dtype=training_sae.dtype)


def activation_statistics(sample: torch.Tensor) -> tuple[float, torch.Tensor]:
    """The scale factor (mean squared distance to the mean becomes d_in) and the geometric median of the scaled rows
    of an activation ``sample`` [n, d_in]: the two quantities a training run fixes from its first data."""
    sample = sample.double()
    spread = (sample - sample.mean(0)).pow(2).sum(1).mean().sqrt().item()
    if not spread > 0:
        raise DataError("activations are constant across tokens; there is nothing for an SAE to learn.")
    scaling_factor = math.sqrt(sample.shape[1]) / spread
    return scaling_factor, _geometric_median(sample[:16_384] * scaling_factor)


def make_trainer(
    config: TrainSAEConfig,
    *,
    d_in: int,
    hook_name: str,
    model_id: str,
    scaling_factor: float,
    median: torch.Tensor,
    device: str,
    dtype: str,
    data_provider: Iterator[torch.Tensor] | None = None,
):
    """A sae-lens `SAETrainer` with its training SAE, set up as `train_sae` trains (seeded initialisation, decoder
    bias at ``median``, warm-up, constant rate, linear decay, scale folded in at the end by `finish_training`).

    Returns ``(trainer, sae, schedule)`` with ``schedule`` = steps, dead_window, warmup, decay.
    """
    import torch
    from sae_lens import SAETrainer
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the caller's RNG
        torch.manual_seed(config.seed)
        sae = _build_training_sae(config, d_in, hook_name, model_id, dtype, device)
    with torch.no_grad():
        sae.b_dec.data.copy_(median.to(sae.b_dec.dtype))
    batch = config.batch_size_tokens
    steps = config.n_tokens // batch
    dead_window = max(1, min(steps // 4, math.ceil(DEAD_WINDOW_TOKENS / batch)))
    warmup = int(steps * WARMUP_FRACTION)
    decay = int(steps * DECAY_FRACTION)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=config.n_tokens,
        train_batch_size_samples=batch,
        lr=config.lr,
        lr_end=config.lr,  # the main phase is constant; the linear decay below goes to zero
        lr_scheduler_name="constant",
        lr_warm_up_steps=warmup,
        lr_decay_steps=decay,
        device=device,
        dead_feature_window=dead_window,
        feature_sampling_window=max(1, steps),
        logger=LoggingConfig(log_to_wandb=False),
    )
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=data_provider or iter(()))
    trainer.activation_scaler.scaling_factor = scaling_factor
    return trainer, sae, {"steps": steps, "dead_window": dead_window, "warmup": warmup, "decay": decay}


def train_step(trainer, batch: torch.Tensor) -> dict[str, float]:
    """One optimisation step, as `SAETrainer.fit` takes it (sparsity window, step, step count); returns the losses."""
    trainer.maybe_reset_sparsity()
    output = trainer.step(batch)
    trainer.n_training_steps += 1
    return {name: float(value.item()) for name, value in output.losses.items()}


def finish_training(trainer, sae, scaling_factor: float, dead_window: int) -> tuple[SAE, torch.Tensor]:
    """Fold the scale into the weights and return the inference SAE (it takes raw activations) and the mask of
    latents that fired in the last ``dead_window`` steps."""
    fired_train = (trainer.n_forward_passes_since_fired < dead_window).cpu()
    trainer.set_final_sae_metadata()
    sae.fold_activation_norm_scaling_factor(scaling_factor)
    trainer.activation_scaler.scaling_factor = None
    inference = _to_inference(sae)
    inference.cfg.metadata.training_tokens = int(trainer.n_training_samples)
    return inference, fired_train


def final_metrics(inference: SAE, eval_rows: torch.Tensor, fired_train: torch.Tensor) -> dict[str, Any]:
    """Held-out figures of a trained SAE; a latent is dead when it fired neither on ``eval_rows`` nor lately in
    training (``dead_fraction``), ``dead_fraction_eval_only`` counting the held-out rows alone."""
    metrics, fired_eval = _evaluate(inference, eval_rows, batch_tokens=8192)
    metrics.pop("n_tokens")
    metrics["dead_fraction_eval_only"] = metrics["dead_fraction"]
    metrics["dead_fraction"] = 1.0 - (fired_eval | fired_train).float().mean().item()
    return metrics


def train_sae(
    activations: torch.Tensor,
    *,
    hook_name: str,
    model_id: str,
    config: TrainSAEConfig,
    device: str = "cpu",
    dtype: str = "float32",
    progress: bool = True,
) -> tuple[SAE, dict[str, Any]]:
    """Train a TopK or BatchTopK SAE (per `config.architecture`) on raw activations of shape (n_tokens, d_in).

    `config.eval_fraction` of the rows (random, seeded by `config.seed`) are held out. Training runs for
    `config.n_tokens` samples in batches of `config.batch_size_tokens`, reusing the rows in epochs.

    Returns the inference `sae_lens.SAE` (a `TopKSAE`, or a `JumpReLUSAE` for BatchTopK) whose metadata records
    `hook_name` and `model_name=model_id`, and which takes raw activations; and a metrics dict with the
    held-out `explained_variance`, `mse`, `l0`, `dead_fraction` (latents that fired neither on the held-out rows
    nor in the last `dead_window_tokens` of training), plus `n_train_tokens`, `n_eval_tokens`, `train_seconds`,
    `epochs`, `scaling_factor` and the settings used.
    """
    import torch
    from tqdm.auto import tqdm

    _check_activations(activations)
    n, d_in = activations.shape
    n_eval = max(1, int(round(n * config.eval_fraction)))
    n_train = n - n_eval
    if n_train < 2 * config.k or n_eval < 2:
        raise DataError(
            f"activations has shape {tuple(activations.shape)}: too few rows to hold out "
            f"eval_fraction={config.eval_fraction} and train; capture more tokens."
        )
    if not hook_name:
        raise PersonasError("train_sae needs a hook_name, e.g. 'blocks.3.hook_resid_post'.")
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    dtype_name = str(torch_dtype).removeprefix("torch.")

    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(n, generator=generator)
    eval_rows = activations[order[:n_eval]]
    train_rows = activations[order[n_eval:]].to(torch_device)
    if not bool(torch.isfinite(train_rows[: min(n_train, _STATS_ROWS)]).all()):
        raise DataError("activations contain NaN or infinite values; check the capture (dtype overflow?).")

    # One scale for all rows: the mean squared distance to the mean becomes d_in.
    sample = train_rows[torch.randperm(n_train, generator=generator)[:_STATS_ROWS].to(torch_device)]
    scaling_factor, median = activation_statistics(sample)
    batch = config.batch_size_tokens
    trainer, sae, schedule = make_trainer(
        config, d_in=d_in, hook_name=hook_name, model_id=model_id, scaling_factor=scaling_factor, median=median,
        device=str(torch_device), dtype=dtype_name, data_provider=_batches(train_rows, batch, generator),
    )
    steps = schedule["steps"]

    logger.info(
        "training a %s SAE %d -> %d (k=%s) on %d tokens (%d held out) for %d steps of %d",
        config.architecture,
        d_in,
        config.d_sae,
        config.k,
        n_train,
        n_eval,
        steps,
        batch,
    )
    quiet = not progress or not sys.stderr.isatty()
    start = time.perf_counter()
    with tqdm(total=steps, desc="Training SAE", disable=quiet, unit="step") as bar:
        # SAETrainer.fit() without its always-on progress bar: the same public steps, in the same order.
        while trainer.n_training_samples < trainer.cfg.total_training_samples:
            losses = train_step(trainer, next(trainer.data_provider))
            if trainer.n_training_steps % 10 == 0 or trainer.n_training_steps == steps:
                bar.set_postfix(mse=f"{losses['mse_loss']:.4g}")
            bar.update(1)
    train_seconds = time.perf_counter() - start
    inference, fired_train = finish_training(trainer, sae, scaling_factor, schedule["dead_window"])
    metrics = final_metrics(inference, eval_rows, fired_train)
    metrics.update(
        n_train_tokens=int(n_train),
        n_eval_tokens=int(n_eval),
        n_training_samples=int(trainer.n_training_samples),
        epochs=trainer.n_training_samples / n_train,
        train_seconds=train_seconds,
        scaling_factor=scaling_factor,
        dead_window_tokens=schedule["dead_window"] * batch,
        lr_warm_up_steps=schedule["warmup"],
        lr_decay_steps=schedule["decay"],
        hook_name=hook_name,
        model_id=model_id,
        config=asdict(config),
    )
    logger.info(
        "SAE trained in %.0f s: explained variance %.3f, L0 %.1f, dead %.1f%% (held-out)",
        train_seconds,
        metrics["explained_variance"],
        metrics["l0"],
        100 * metrics["dead_fraction"],
    )
    return inference, metrics


# ---------------------------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------------------------


def save_trained_sae(
    sae: SAE, metrics: dict[str, Any], path: str | Path, *, provenance: dict[str, Any]
) -> Path:
    """Write `sae` in sae-lens's disk format (`SAE.load_from_disk(path)` reads it) plus `training.json`.

    The folder is written under a temporary name next to `path` and renamed when complete. An existing SAE
    folder at `path` is replaced; any other existing, non-empty folder is refused.
    """
    from sae_lens.constants import SAE_CFG_FILENAME

    path = Path(path)
    if path.exists() and (
        not path.is_dir() or (any(path.iterdir()) and not (path / SAE_CFG_FILENAME).exists())
    ):
        raise PersonasError(
            f"save_trained_sae(path={str(path)!r}): that path exists and is not an SAE folder; "
            "pass a new folder name, or remove it first."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        sae.save_model(tmp)
        record = {
            **manifest_header("personas.sae"),
            "metrics": metrics,
            "provenance": provenance,
            "sae": {
                "architecture": sae.cfg.architecture(),
                "d_in": sae.cfg.d_in,
                "d_sae": sae.cfg.d_sae,
                "hook_name": sae.cfg.metadata.hook_name,
                "model_name": sae.cfg.metadata.model_name,
                "dtype": sae.cfg.dtype,
            },
        }
        (tmp / TRAINING_FILENAME).write_text(json.dumps(record, indent=2, default=str))
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("saved SAE to %s", path)
    return path
