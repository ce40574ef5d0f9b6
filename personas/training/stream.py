"""Train an SAE on activations streamed from the model, chunk by chunk, with checkpoints and resume.

`train_sae` needs every activation in memory; at millions of tokens that is gigabytes. Here the model runs while
the SAE trains: the training sequences (token ids) are cut into *chunks* of about `TrainSAEConfig.chunk_tokens`
tokens; each chunk is captured (the forward stops after the site's block, at the model's dtype, e.g. bfloat16 on a
CPU with AMX), its rows are shuffled and served to sae-lens's trainer in float32 batches, and the next chunk follows.
No activation is written to disk, unless ``row_cache`` names a folder: then each chunk's shuffled rows are kept
there at float16 (about 1.2 kB a token at d_model 576) and read back by any later run over the same data, site,
model, dtype, chunk size and seed, whatever its SAE settings. That is how a grid (widths, k) pays the capture once:
the first cell captures, the others only train. With a row cache the rows are always trained at their float16
values, so a cell that captured and a cell that read the cache see the same numbers.

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

__all__ = ["RowCache", "StreamPlan", "capture_rows", "check_row_cache", "token_windows", "train_sae_streaming"]

ROW_CACHE_FILE = "rows.json"

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


def _add_sequences(digest: Any, sequences: Sequence[Sequence[int]]) -> None:
    """Feed token-id sequences to a hashlib digest, lengths included (so that splits differ)."""
    for seq in sequences:
        digest.update(len(seq).to_bytes(4, "little"))
        digest.update(b"".join(int(t).to_bytes(4, "little") for t in seq))


def _fingerprint(sequences: Sequence[Sequence[int]], hook: str, model_id: str, config: TrainSAEConfig,
                 rows: str = "float32") -> str:
    """What a checkpoint must match to be resumed: the data, the site, the model, every training setting, and the
    precision of the rows trained on (float16 with a row cache)."""
    digest = hashlib.sha256()
    run = {k: v for k, v in asdict(config).items() if k not in ("max_chunks", "checkpoint_every")}
    ident = {"hook": hook, "model": model_id, "config": run, **({"rows": rows} if rows != "float32" else {})}
    digest.update(json.dumps(ident, sort_keys=True).encode())
    _add_sequences(digest, sequences)
    return digest.hexdigest()


class RowCache:
    """A folder of captured chunks (float16 rows, already shuffled) that any run over the same capture may reuse.

    What the rows depend on is fingerprinted in ``rows.json`` (the sequences, the site, the model and its dtype,
    the chunk size, the seed, the norm filter); a folder written for another capture is refused, never mixed in.
    """

    def __init__(self, folder: str | Path, fingerprint: str) -> None:
        self.folder = Path(folder)
        check_row_cache(self.folder)
        meta = self.folder / ROW_CACHE_FILE
        if meta.exists():
            try:
                found = json.loads(meta.read_text())["fingerprint"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise PersonasError(f"row cache {meta} is unreadable ({exc}); delete the folder to capture afresh.") \
                    from exc
            if found != fingerprint:
                raise PersonasError(
                    f"the row cache {self.folder} holds another capture (different data, site, model, dtype, "
                    "chunk size or seed); point row_cache at a new folder, or delete this one."
                )
        else:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                meta.write_text(json.dumps({"fingerprint": fingerprint, "dtype": "float16"}))
            except OSError as exc:
                raise PersonasError(f"cannot write the row cache {str(self.folder)!r} ({exc.strerror or exc}); "
                                    "point row_cache at a folder you can write.") from exc

    def path(self, i: int) -> Path:
        return self.folder / f"chunk-{i:06d}.pt"

    def get(self, i: int) -> torch.Tensor | None:
        """Chunk ``i``'s rows as float32 (their float16 values), or None when it was never captured or its file
        cannot be read (then it is captured and written again)."""
        import torch

        path = self.path(i)
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True).float()
        except Exception as exc:  # a truncated or foreign file: torch raises several kinds
            logger.warning("row cache: %s is unreadable (%s); capturing chunk %d again", path, exc, i)
            return None

    def put(self, i: int, rows: torch.Tensor) -> torch.Tensor:
        """Keep chunk ``i`` (written under a temporary name, then renamed) and return the rows as they will be read:
        rounded to float16, back in float32."""
        return self._put(self.path(i), rows, f"chunk {i}")

    def eval_path(self, sequences: Sequence[Sequence[int]]) -> Path:
        """Where the held-out rows of ``sequences`` are kept (named by their digest: other held-out sets coexist)."""
        digest = hashlib.sha256()
        _add_sequences(digest, sequences)
        return self.folder / f"eval-{digest.hexdigest()[:16]}.pt"

    def _put(self, path: Path, rows: torch.Tensor, what: str) -> torch.Tensor:
        import torch

        half = rows.to(torch.float16)
        if not bool(torch.isfinite(half).all()):
            raise DataError(f"{what} has activations beyond float16's range (|x| > 65504); train without "
                            "row_cache, or at another site.")
        tmp = self.folder / f".{path.name}.tmp-{os.getpid()}"
        torch.save(half.contiguous(), tmp)
        os.replace(tmp, path)
        return half.float()

    def eval_rows(self, sequences: Sequence[Sequence[int]], capture) -> torch.Tensor:
        """The held-out rows of ``sequences``: read when kept, else ``capture()`` and kept (float16 values)."""
        import torch

        path = self.eval_path(sequences)
        if path.exists():
            return torch.load(path, map_location="cpu", weights_only=True).float()
        return self._put(path, capture(), "the held-out capture")


def check_row_cache(folder: str | Path) -> None:
    """Refuse a row-cache path that is a file, or a folder of something else, before any model runs."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PersonasError(f"row_cache {str(folder)!r} is a file; expected a folder (new, or one this kind of run "
                            "wrote) to keep the captured chunks in.")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / ROW_CACHE_FILE).is_file():
        raise PersonasError(f"row_cache {str(folder)!r} is a folder of other files (no {ROW_CACHE_FILE}); give an "
                            "empty or new folder, so that nothing of yours is mixed in or overwritten.")


def _capture_fingerprint(sequences: Sequence[Sequence[int]], hook: str, handle: Any, config: TrainSAEConfig,
                         norm_ratio: float) -> str:
    """What a chunk's rows depend on: not the SAE's settings, so that a grid shares one capture."""
    digest = hashlib.sha256()
    dtype = handle.provenance()["dtype"]
    run = {"hook": hook, "model": handle.model_id, "dtype": dtype, "chunk_tokens": config.chunk_tokens,
           "seed": config.seed, "norm_ratio": norm_ratio}
    digest.update(json.dumps(run, sort_keys=True).encode())
    _add_sequences(digest, sequences)
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
    row_cache: str | Path | None = None,
) -> tuple[SAE | None, dict[str, Any]]:
    """Train an SAE at ``hook_name`` on activations of ``sequences`` (token ids) captured chunk by chunk.

    With ``checkpoint_dir``, a checkpoint is written there every `TrainSAEConfig.checkpoint_every` chunks and a
    matching checkpoint found there is resumed (one of another run is refused). When the invocation stops at
    `TrainSAEConfig.max_chunks` before the token budget is spent, returns ``(None, progress)``; otherwise the
    inference SAE (raw activations in, as `train_sae` returns it) and its metrics on ``eval_sequences`` (required:
    the held-out documents). ``row_cache``: a folder where captured chunks are kept and from which they are read
    (see `RowCache`).
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
    fingerprint = _fingerprint(sequences, hook_name, handle.model_id, config,
                               rows="float32" if row_cache is None else "float16")
    device = str(handle.device)
    batch = config.batch_size_tokens
    ckpt = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None

    cache = (RowCache(row_cache, _capture_fingerprint(sequences, hook_name, handle, config, norm_ratio))
             if row_cache is not None else None)
    cached_chunks = 0

    def chunk_rows(i: int) -> torch.Tensor:
        nonlocal cached_chunks
        if cache is not None and (kept := cache.get(i)) is not None:
            cached_chunks += 1
            return kept
        rows = capture_rows(handle, [sequences[j] for j in plan.chunk(i)], hook_name, norm_ratio=norm_ratio)
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + 7919 * i + 1)
        rows = rows[torch.randperm(rows.shape[0], generator=generator)]
        return cache.put(i, rows) if cache is not None else rows

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

    def capture_eval() -> torch.Tensor:
        return capture_rows(handle, eval_sequences, hook_name, norm_ratio=norm_ratio)

    eval_rows = cache.eval_rows(eval_sequences, capture_eval) if cache is not None else capture_eval()
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
        chunks_read_from_row_cache=cached_chunks,
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
