"""Train an SAE on activations streamed from the model, chunk by chunk, with checkpoints and resume.

`train_sae` needs every activation in memory; at millions of tokens that is gigabytes. Here the model runs while
the SAE trains: the training sequences (token ids) are cut into *chunks* of about `TrainSAEConfig.chunk_tokens`
tokens; each chunk is captured (the forward stops after the site's block, at the model's dtype, e.g. bfloat16 on a
CPU with AMX), its rows are shuffled and served to sae-lens's trainer in float32 batches, and the next chunk follows.
No activation is written to disk.

**Determinism, so that resume is exact.** Chunk ``i`` is a pure function of ``i``: epoch ``e`` visits the sequences
in a permutation seeded by ``(seed, e)``, chunk ``i`` takes the ``i``-th run of `sequences_per_chunk` sequences of
that endless stream, and its rows are shuffled with a generator seeded by ``(seed, i)``. A chunk's last rows that do
not fill a batch are dropped (counted in the metrics). A checkpoint, written after every
`TrainSAEConfig.checkpoint_every` chunks to a temporary name and renamed, holds the training SAE's weights, the
trainer's state (Adam moments, learning-rate schedule, counters, firing statistics; sae-lens's own
``save_trainer_state``), the index of the next chunk, and the scale and decoder-bias statistics fixed from chunk 0.
A run killed at any point and started again with the same arguments continues from the last checkpoint and ends with
the same weights as a run never stopped (on the same machine and thread count: floating-point sums are not
reproducible across them). ``max_chunks`` ends an invocation on purpose after that many chunks, checkpointed: work
in stretches.

    >>> sae, metrics = train_sae_streaming(handle, train_ids, hook_name="blocks.18.hook_resid_post",
    ...                                    config=TrainSAEConfig(n_tokens=5_000_000), checkpoint_dir="runs/ckpt",
    ...                                    eval_sequences=heldout_ids)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from personas.config import TrainSAEConfig
from personas.errors import DataError, PersonasError
from personas.models import as_model_handle
from personas.training.sae import (
    activation_statistics,
    final_metrics,
    finish_training,
    make_trainer,
    train_step,
)

if TYPE_CHECKING:
    import torch
    from sae_lens import SAE

__all__ = ["StreamPlan", "capture_rows", "token_windows", "train_sae_streaming"]

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
#: Sequences per forward pass while capturing a chunk (sorted by length inside the chunk: little padding).
FORWARD_BATCH = 16


def capture_rows(
    model: Any, sequences: Sequence[Sequence[int]], hook: str, *, batch_size: int = FORWARD_BATCH,
    norm_ratio: float = 0.0,
) -> torch.Tensor:
    """Float32 activations at ``hook`` of every non-special token of ``sequences`` (token ids, used as given), in
    the order of the sequences and their tokens. With ``norm_ratio > 0``, tokens whose norm exceeds that multiple of
    their batch's median are dropped (attention-sink guard). The forward stops after the hook's block."""
    import torch

    handle = as_model_handle(model)
    tok = handle.tokenizer
    special = torch.tensor(sorted(set(tok.all_special_ids)), dtype=torch.long)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    order = sorted(range(len(sequences)), key=lambda j: (-len(sequences[j]), j))
    parts: dict[int, torch.Tensor] = {}
    for lo in range(0, len(order), batch_size):
        batch = [sequences[j] for j in order[lo : lo + batch_size]]
        ids = torch.full((len(batch), max(map(len, batch))), pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
            attn[row, : len(seq)] = 1
        acts = handle.run_hooks(ids.to(handle.device), attn.to(handle.device), [hook])[hook].to("cpu")
        keep = attn.bool() & ~torch.isin(ids, special)
        if norm_ratio > 0 and keep.any():
            norms = acts.float().norm(dim=-1)
            keep &= norms <= norm_ratio * norms[keep].median()
        for row, j in enumerate(order[lo : lo + batch_size]):
            parts[j] = acts[row][keep[row]].float()
    if not parts:
        return torch.zeros((0, handle.d_model))
    return torch.cat([parts[j] for j in range(len(sequences))])


def token_windows(model: Any, texts: Sequence[str], window: int = 256) -> list[list[int]]:
    """Token-id sequences of plain texts for training: a causal model's text cut into pieces of ``window - 1``
    tokens, each behind its BOS (or end-of-text) token, pieces under 8 tokens dropped; an encoder's text encoded
    with its own special tokens and cut at ``window``."""
    handle = as_model_handle(model)
    tok = handle.tokenizer
    out: list[list[int]] = []
    if handle.is_encoder:
        for text in texts:
            out.append(list(tok(text, truncation=True, max_length=window)["input_ids"]))
        return out
    lead = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    head = [] if lead is None else [lead]
    step = window - len(head)
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        out.extend(head + ids[lo : lo + step] for lo in range(0, len(ids), step) if len(ids[lo : lo + step]) >= 8)
    return out


class StreamPlan:
    """Which sequences make chunk ``i``: epochs of seeded permutations cut into runs of `sequences_per_chunk`."""

    def __init__(self, n_sequences: int, mean_length: float, chunk_tokens: int, seed: int) -> None:
        if n_sequences < 1:
            raise DataError("no training sequences to stream; pass a corpus with at least one document.")
        self.n = n_sequences
        self.seed = seed
        self.sequences_per_chunk = max(1, min(n_sequences, round(chunk_tokens / max(mean_length, 1.0))))
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        import torch

        if epoch not in self._perms:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=generator).tolist()}
        return self._perms[epoch]

    def chunk(self, i: int) -> list[int]:
        """Indices of the sequences of chunk ``i`` (an epoch boundary may fall inside it)."""
        start, out = i * self.sequences_per_chunk, []
        for pos in range(start, start + self.sequences_per_chunk):
            out.append(self._perm(pos // self.n)[pos % self.n])
        return out


def _fingerprint(sequences: Sequence[Sequence[int]], hook: str, model_id: str, config: TrainSAEConfig) -> str:
    """What a checkpoint must match to be resumed: the data, the site, the model and every training setting."""
    digest = hashlib.sha256()
    run = {k: v for k, v in asdict(config).items() if k not in ("max_chunks", "checkpoint_every")}
    digest.update(json.dumps({"hook": hook, "model": model_id, "config": run}, sort_keys=True).encode())
    for seq in sequences:
        digest.update(len(seq).to_bytes(4, "little"))
        digest.update(b"".join(int(t).to_bytes(4, "little") for t in seq))
    return digest.hexdigest()


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch

    path.mkdir(parents=True, exist_ok=True)
    tmp = path / f".{CHECKPOINT_FILE}.tmp-{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path / CHECKPOINT_FILE)


def _trainer_state(trainer) -> dict[str, Any]:
    return {
        "optimizer": trainer.optimizer.state_dict(),
        "lr_scheduler": trainer.lr_scheduler.state_dict(),
        "n_training_samples": trainer.n_training_samples,
        "n_training_steps": trainer.n_training_steps,
        "act_freq_scores": trainer.act_freq_scores.clone(),
        "n_forward_passes_since_fired": trainer.n_forward_passes_since_fired.clone(),
        "n_frac_active_samples": trainer.n_frac_active_samples,
        "started_fine_tuning": trainer.started_fine_tuning,
        "coefficient_schedulers": {n: s.state_dict() for n, s in trainer.coefficient_schedulers.items()},
    }


def _load_trainer_state(trainer, state: dict[str, Any]) -> None:
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.lr_scheduler.load_state_dict(state["lr_scheduler"])
    for name in ("n_training_samples", "n_training_steps", "act_freq_scores", "n_forward_passes_since_fired",
                 "n_frac_active_samples", "started_fine_tuning"):
        setattr(trainer, name, state[name])
    for name, sched in state["coefficient_schedulers"].items():
        trainer.coefficient_schedulers[name].load_state_dict(sched)


def train_sae_streaming(
    model: Any,
    sequences: Sequence[Sequence[int]],
    *,
    hook_name: str,
    config: TrainSAEConfig,
    checkpoint_dir: str | Path | None = None,
    eval_sequences: Sequence[Sequence[int]] | None = None,
    norm_ratio: float = 0.0,
    progress: bool = True,
) -> tuple[SAE | None, dict[str, Any]]:
    """Train an SAE at ``hook_name`` on activations of ``sequences`` (token ids) captured chunk by chunk.

    With ``checkpoint_dir``, a checkpoint is written there every `TrainSAEConfig.checkpoint_every` chunks and a
    matching checkpoint found there is resumed (one of another run is refused). When the invocation stops at
    `TrainSAEConfig.max_chunks` before the token budget is spent, returns ``(None, progress)``; otherwise the
    inference SAE (raw activations in, as `train_sae` returns it) and its metrics on ``eval_sequences`` (required:
    the held-out documents).
    """
    import torch
    from tqdm.auto import tqdm

    handle = as_model_handle(model)
    handle.check_hooks([hook_name])
    if not eval_sequences:
        raise DataError("train_sae_streaming needs eval_sequences (held-out documents) for the quality figures.")
    if config.max_chunks is not None and checkpoint_dir is None:
        raise PersonasError("TrainSAEConfig.max_chunks stops a run to resume it later: give a checkpoint_dir too.")
    lengths = [len(s) for s in sequences]
    plan = StreamPlan(len(sequences), sum(lengths) / max(len(lengths), 1), config.chunk_tokens, config.seed)
    fingerprint = _fingerprint(sequences, hook_name, handle.model_id, config)
    device = str(handle.device)
    batch = config.batch_size_tokens
    ckpt = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None

    def chunk_rows(i: int) -> torch.Tensor:
        rows = capture_rows(handle, [sequences[j] for j in plan.chunk(i)], hook_name, norm_ratio=norm_ratio)
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + 7919 * i + 1)
        return rows[torch.randperm(rows.shape[0], generator=generator)]

    state = torch.load(ckpt, map_location=device, weights_only=False) if ckpt and ckpt.exists() else None
    if state is not None and state["fingerprint"] != fingerprint:
        raise PersonasError(
            f"the checkpoint {ckpt} belongs to another run (different data, site, model or settings); delete it to "
            "start afresh, or run with the settings it was written with."
        )
    first: torch.Tensor | None = None
    if state is None:
        first = chunk_rows(0)
        if first.shape[0] < batch:
            raise DataError(f"chunk 0 holds {first.shape[0]} tokens, fewer than one batch ({batch}); raise "
                            "chunk_tokens or lower batch_size_tokens.")
        if not bool(torch.isfinite(first).all()):
            raise DataError("activations contain NaN or infinite values; check the capture (dtype overflow?).")
        scaling_factor, median = activation_statistics(first[:65_536])
        next_chunk, dropped, capture_seconds = 0, 0, 0.0
    else:
        scaling_factor, median = state["scaling_factor"], state["median"]
        next_chunk, dropped, capture_seconds = state["next_chunk"], state["dropped"], state["capture_seconds"]
        logger.info("resuming from %s at chunk %d (%d samples seen)", ckpt, next_chunk,
                    state["trainer"]["n_training_samples"])
    trainer, sae, schedule = make_trainer(
        config, d_in=handle.d_model, hook_name=hook_name, model_id=handle.model_id, scaling_factor=scaling_factor,
        median=median, device=device, dtype="float32",
    )
    if state is not None:
        sae.load_state_dict(state["sae"])
        _load_trainer_state(trainer, state["trainer"])

    def checkpoint() -> None:
        if ckpt is not None:
            _save_checkpoint(ckpt.parent, {
                "fingerprint": fingerprint, "sae": sae.state_dict(), "trainer": _trainer_state(trainer),
                "next_chunk": next_chunk, "scaling_factor": scaling_factor, "median": median, "dropped": dropped,
                "capture_seconds": capture_seconds,
            })

    total = trainer.cfg.total_training_samples
    quiet = not progress or not sys.stderr.isatty()
    chunks_run, started = 0, time.perf_counter()
    with tqdm(total=schedule["steps"], initial=trainer.n_training_steps, desc="Training SAE (streamed)",
              disable=quiet, unit="step") as bar:
        while trainer.n_training_samples < total:
            if config.max_chunks is not None and chunks_run >= config.max_chunks:
                checkpoint()
                logger.info("stopped after %d chunks at %d of %d samples; run again to resume", chunks_run,
                            trainer.n_training_samples, total)
                return None, {"stopped_at_chunk": next_chunk, "n_training_samples": trainer.n_training_samples,
                              "n_tokens": total}
            t0 = time.perf_counter()
            rows = first if (first is not None and next_chunk == 0) else chunk_rows(next_chunk)
            capture_seconds += time.perf_counter() - t0
            first = None
            n_batches = rows.shape[0] // batch
            for b in range(n_batches):
                if trainer.n_training_samples >= total:
                    break
                losses = train_step(trainer, rows[b * batch : (b + 1) * batch].to(device))
                bar.set_postfix(mse=f"{losses['mse_loss']:.4g}", chunk=next_chunk)
                bar.update(1)
            dropped += rows.shape[0] - n_batches * batch
            next_chunk += 1
            chunks_run += 1
            if next_chunk % config.checkpoint_every == 0 and trainer.n_training_samples < total:
                checkpoint()
    train_seconds = time.perf_counter() - started
    inference, fired_train = finish_training(trainer, sae, scaling_factor, schedule["dead_window"])
    eval_rows = capture_rows(handle, eval_sequences, hook_name, norm_ratio=norm_ratio)
    metrics = final_metrics(inference, eval_rows, fired_train)
    metrics.update(
        n_eval_tokens=int(eval_rows.shape[0]),
        n_training_samples=int(trainer.n_training_samples),
        n_train_sequences=len(sequences),
        n_train_tokens_available=int(sum(lengths)),
        chunks=next_chunk,
        sequences_per_chunk=plan.sequences_per_chunk,
        epochs=next_chunk * plan.sequences_per_chunk / len(sequences),
        dropped_tokens=int(dropped),
        seconds_this_invocation=train_seconds,
        capture_seconds=capture_seconds,
        scaling_factor=scaling_factor,
        dead_window_tokens=schedule["dead_window"] * batch,
        lr_warm_up_steps=schedule["warmup"],
        lr_decay_steps=schedule["decay"],
        hook_name=hook_name,
        model_id=handle.model_id,
        norm_ratio=norm_ratio,
        streamed=True,
        config=asdict(config),
    )
    logger.info("streamed SAE trained: explained variance %.3f, L0 %.1f, dead %.1f%% (held-out)",
                metrics["explained_variance"], metrics["l0"], 100 * metrics["dead_fraction"])
    return inference, metrics
