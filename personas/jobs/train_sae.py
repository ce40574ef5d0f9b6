"""The train-sae job: a model's activations over a corpus -> a sae-lens SAE folder with its quality figures."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from personas.artifacts import check_output_dir, manifest_header
from personas.capturing import token_activations
from personas.config import DEFAULT_HOOK, TrainSAEConfig
from personas.errors import PersonasError
from personas.logs import quiet_third_party
from personas.models import load_model
from personas.training.corpus import build_corpus, describe_corpus
from personas.training.sae import save_trained_sae, train_sae
from personas.training.stream import check_row_cache, token_windows, train_sae_streaming

logger = logging.getLogger(__name__)

__all__ = ["train_sae_job"]


def train_sae_job(
    *,
    model: str | Any = "minilm",
    hook: str = DEFAULT_HOOK,
    config: TrainSAEConfig | None = None,
    out: str | Path,
    device: str = "cpu",
    command: str | None = None,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    row_cache: str | Path | None = None,
) -> tuple[Path | None, dict[str, Any]]:
    """Train an SAE for ``model`` at ``hook`` on the built-in corpus (or ``config.corpus``) and save it to ``out``.

    Returns the folder and the quality figures on held-out tokens (explained variance, L0, dead fraction). With
    ``config.stream``, activations are captured chunk by chunk while training (`personas.training.stream`), with
    checkpoints in ``checkpoint_dir`` (default: ``OUT-checkpoint`` beside ``out``, removed once the SAE is saved);
    when ``config.max_chunks`` stops the run early, returns ``(None, progress)`` and the same call resumes it.
    ``row_cache`` (streamed runs only) keeps the captured chunks at float16 for other runs over the same capture.
    """
    import time

    config = config or TrainSAEConfig()
    if row_cache is not None and not config.stream:
        raise PersonasError(f"row_cache={str(row_cache)!r} keeps streamed chunks; it needs --stream (stream=True).")
    if row_cache is not None:
        check_row_cache(row_cache)
    check_output_dir(out)  # before the model loads and the SAE trains: a folder that cannot be written fails now
    if config.corpus and not Path(config.corpus).is_file():
        raise PersonasError(f"--corpus {config.corpus!r} is not a file; expected a text file, one document per line.")
    with quiet_third_party():
        handle = load_model(model, device=device, dtype=config.capture_dtype)
    if config.corpus:
        path = Path(config.corpus)
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        corpus_description = f"user corpus {path} ({len(texts)} documents)"
    else:
        texts = build_corpus(config.corpus_tokens, tokenizer=handle.tokenizer, seed=config.seed)
        corpus_description = describe_corpus()
    if config.stream:
        return _train_streamed(handle, texts, corpus_description, hook=hook, config=config, out=Path(out),
                               checkpoint_dir=checkpoint_dir, command=command, progress=progress,
                               row_cache=row_cache)
    started = time.time()
    acts = token_activations(handle, texts, hook, progress=progress)
    capture_seconds = time.time() - started
    logger.info("captured %d token activations at %s in %.0fs", acts.shape[0], hook, capture_seconds)
    sae, metrics = train_sae(
        acts, hook_name=hook, model_id=handle.model_id, config=config, device=str(handle.device), progress=progress
    )
    provenance = _provenance(handle, hook, config, command, corpus_description, texts,
                             n_tokens=int(acts.shape[0]))
    provenance["capture_seconds"] = round(capture_seconds, 1)
    path = save_trained_sae(sae, metrics, out, provenance=provenance)
    return Path(path), metrics


def _provenance(handle, hook: str, config: TrainSAEConfig, command: str | None, corpus_description: str,
                texts: list[str], **corpus_counts: int) -> dict[str, Any]:
    """What `save_trained_sae` records of a train-sae job: the command, model, site, settings and corpus."""
    return {
        **manifest_header("personas.train-sae"),
        "command": command,
        "model": handle.provenance(),
        "hook": hook,
        "config": asdict(config),
        "corpus": {
            "description": corpus_description,
            "n_documents": len(texts),
            **corpus_counts,
            "sha256": hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest(),
        },
    }


def _train_streamed(handle, texts: list[str], corpus_description: str, *, hook: str, config: TrainSAEConfig, out: Path,
                    checkpoint_dir: str | Path | None, command: str | None, progress: bool,
                    row_cache: str | Path | None = None):
    """The streamed branch of `train_sae_job`: documents held out by a seeded draw, the rest streamed."""
    import random
    import shutil

    order = list(range(len(texts)))
    random.Random(config.seed).shuffle(order)
    n_eval = max(1, round(len(texts) * config.eval_fraction))
    if len(texts) - n_eval < 1:
        raise PersonasError(f"the corpus has {len(texts)} document(s): too few to hold out eval_fraction="
                            f"{config.eval_fraction} and train; add documents.")
    held = [texts[i] for i in sorted(order[:n_eval])]
    train = [texts[i] for i in sorted(order[n_eval:])]
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else out.parent / f"{out.name}-checkpoint"
    sae, metrics = train_sae_streaming(handle, token_windows(handle, train), hook_name=hook, config=config,
                                       checkpoint_dir=ckpt, eval_sequences=token_windows(handle, held),
                                       progress=progress, row_cache=row_cache)
    if sae is None:
        return None, {**metrics, "checkpoint_dir": str(ckpt)}
    provenance = _provenance(handle, hook, config, command, corpus_description, texts, n_heldout_documents=n_eval)
    path = save_trained_sae(sae, metrics, out, provenance=provenance)
    shutil.rmtree(ckpt, ignore_errors=True)
    return Path(path), metrics
