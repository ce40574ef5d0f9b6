"""Data screening before fine-tuning: how far each training answer moves the persona latents, against the base
model's own answer to the same prompt (the *projection difference* of the persona-vector work, with SAE latents).

For every (prompt, response) example of a training file:

1. the base model answers the prompt itself, greedily (`greedy_answers`; the answers are cached in the run folder,
   keyed by what they depend on: the model and its weights' contents, its dtype, the decoding settings and the
   prompt, so a rerun generates nothing);
2. both answers are teacher-forced in the chat template and the residual stream at the SAE's hook (the output of
   decoder block L for ``blocks.L.hook_resid_post``, its input for ``hook_resid_pre``) is read at every answer token
   (`answer_residuals`, which stops the forward pass there);
3. each chosen latent is encoded per token and averaged over the answer; its *shift* is the training answer's mean
   minus the base answer's mean. A dense direction (unit length) gives the same shift of the mean residual's
   projection.

``score`` (higher = more persona-shifting) is the mean shift of the chosen latents, or the dense shift when no latent
is chosen. `screen_examples` computes the table from loaded objects; `run_screen` (behind ``personas screen``) reads
the file, loads the model and the SAE, checks every input before any model runs, and writes ``screen.csv`` (ranked,
most persona-shifting first, with the texts) and ``manifest.json`` into a run folder. The model tooling (loading,
generation, reading residuals) is `personas.organism.chat`, shared with the organism and the sweep.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from personas.artifacts import (
    MANIFEST_FILE,
    atomic_write_text,
    check_output_dir,
    manifest_header,
    output_dir,
    write_csv,
    write_json,
)
from personas.config import ScreenConfig
from personas.data.readers import ID_COLUMN, read_table
from personas.errors import DataError, SiteMismatchError
from personas.models import (
    decoder_layers,
)
from personas.organism.chat import (
    RESID_HOOK,
    answer_residuals,
    generation_stops,
    greedy_answers,
    load_causal_lm,
    resid_site,
)
from personas.organism.train import render_prompt
from personas.saes import check_sae_identity, encode, load_sae, recorded_sae_spec, sae_info

logger = logging.getLogger(__name__)

__all__ = ["BASE_ANSWERS_FILE", "ORGANISM_RUN", "SCREEN_FILE", "ScreenResult", "parse_latents", "pool_answers",
           "read_direction", "run_latents", "run_sae_spec", "run_screen", "screen_examples"]

SCREEN_FILE = "screen.csv"
#: The organism run shipped in a checkout of the repository (its top diff latents and direction).
ORGANISM_RUN = Path(__file__).resolve().parents[2] / "data" / "organism" / "run"
BASE_ANSWERS_FILE = "base_answers.jsonl"
PROMPT_COLUMNS = ("prompt", "question")
RESPONSE_COLUMNS = ("response", "answer")


def parse_latents(text: str | Sequence[int] | None, d_sae: int) -> list[int]:
    """Latent indices from ``'3260,1317'`` (or a list), each checked against the SAE's ``d_sae``."""
    if text is None:
        return []
    items = [t.strip() for t in text.split(",")] if isinstance(text, str) else [str(t) for t in text]
    items = [t for t in items if t]
    try:
        values = [int(t) for t in items]
    except ValueError as exc:
        raise DataError(f"--latents {text!r}; expected comma-separated latent indices, e.g. '3260,1317'.") from exc
    bad = [v for v in values if not 0 <= v < d_sae]
    if bad:
        raise DataError(f"--latents {bad} out of range: the SAE has {d_sae} latents (0 to {d_sae - 1}).")
    if not values:
        raise DataError(f"--latents {text!r} names no latent; expected e.g. '3260,1317'.")
    return list(dict.fromkeys(values))


def read_direction(path: str | os.PathLike, d_model: int) -> np.ndarray:
    """A dense direction from a .npy or .pt file, checked to be one vector of width ``d_model``; returned unit-length."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no direction file at {str(path)!r}; expected a .npy or .pt file holding one vector of "
                        f"width {d_model} (e.g. the direction.npy of an organism run).")
    try:
        if path.suffix.lower() == ".pt":
            import torch

            value = torch.load(str(path), map_location="cpu", weights_only=True)
            value = value.detach().float().numpy() if hasattr(value, "detach") else np.asarray(value)
        else:
            value = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy / torch raise several types for a foreign or truncated file
        raise DataError(f"could not read {str(path)!r} as a direction ({type(exc).__name__}: {exc}); expected a .npy "
                        "array or a .pt tensor.") from exc
    vector = np.asarray(value, dtype=np.float64).squeeze()
    if vector.shape != (d_model,):
        raise DataError(f"the direction in {str(path)!r} has shape {tuple(np.shape(value))}; expected ({d_model},), "
                        "the width of the SAE's hook. Use a direction taken at the same site of the same model.")
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0.0:
        raise DataError(f"the direction in {str(path)!r} has norm {norm}; expected a finite, non-zero vector.")
    return (vector / norm).astype(np.float32)


def run_sae_spec(run: str | os.PathLike | None, spec: Any) -> Any:
    """The SAE to read an organism run's latents with (`personas.saes.recorded_sae_spec` of what it recorded)."""
    if run is None or spec != "default":
        return spec
    try:
        manifest = json.loads((Path(run) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return spec  # run_latents reports an unreadable run
    latent_diff = manifest.get("latent_diff") if isinstance(manifest, dict) else None
    return recorded_sae_spec(latent_diff.get("sae") if isinstance(latent_diff, dict) else None, spec)


def run_latents(run: str | os.PathLike, n: int, hook: str, sae: Any = None) -> tuple[list[int], Path | None]:
    """The top ``n`` rising latents of an organism run folder and its ``direction.npy`` (None if absent); the run's
    hook must be ``hook``, and its latents must index ``sae`` (the weights' hash the run recorded, when it did)."""
    manifest_path = Path(run) / MANIFEST_FILE
    if not manifest_path.is_file():
        raise DataError(f"--from-run {str(run)!r} has no {MANIFEST_FILE}; expected an organism run folder "
                        "(`personas organism --out RUN`, e.g. data/organism/run).")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    latent_diff = manifest.get("latent_diff") or {}
    if latent_diff and latent_diff.get("hook") != hook:
        raise SiteMismatchError(f"the run {str(run)!r} diffed latents at {latent_diff.get('hook')!r} but the SAE reads "
                                f"{hook!r}; use that run's SAE, or pass --latents.")
    features = [int(row["feature"]) for row in latent_diff.get("top", [])][:n]
    if features and sae is not None:
        check_sae_identity(latent_diff.get("sae"), sae, f"the run {str(run)!r}")
    direction = Path(run) / "direction.npy"
    diff_hook = (manifest.get("diff") or {}).get("hook")
    if direction.is_file() and diff_hook not in (None, hook):
        raise SiteMismatchError(f"the run's direction.npy was taken at {diff_hook!r} but the SAE reads {hook!r}; "
                                "pass --direction taken at the SAE's hook.")
    return features, direction if direction.is_file() else None


def pool_answers(sae: Any, hidden: list[np.ndarray], latents: list[int], unit: np.ndarray | None
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean over each answer's tokens (from `answer_residuals`) of the latents' SAE codes, (n, k), and of the
    projection on the unit vector ``unit``, (n,) (None without one)."""
    import torch

    cols = np.asarray(latents, dtype=np.int64)
    codes = np.zeros((len(hidden), cols.size), np.float32)
    if cols.size:
        for i, h in enumerate(hidden):
            if len(h):
                codes[i] = encode(sae, torch.as_tensor(h)).cpu().numpy()[:, cols].mean(axis=0)
    along = None if unit is None else np.asarray([float(h.mean(0) @ unit) if len(h) else 0.0 for h in hidden])
    return codes, along


def screen_examples(model: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str],
                    base_responses: Sequence[str], *, hook: str, sae: Any = None, latents: Sequence[int] = (),
                    direction: np.ndarray | None = None, batch_size: int = 16) -> Any:
    """The screen's table, one row per example in input order: ``latent_F`` (shift of latent F), ``direction``
    (shift along the unit direction) and ``score`` (mean latent shift, else the dense shift).

    A shift is the answer's mean over its tokens minus that of ``base_responses`` (the base model's answer to the
    same prompt).
    """
    import pandas as pd

    latents = list(latents)
    if not latents and direction is None:
        raise DataError("screen_examples needs latents or a direction to measure.")
    if latents and sae is None:
        raise DataError("screen_examples got latents but no SAE to encode them with.")
    unit = None if direction is None else np.asarray(direction, np.float32) / float(np.linalg.norm(direction))
    tuned = pool_answers(sae, answer_residuals(model, tokenizer, prompts, responses, hook, batch_size), latents,
                         unit)
    plain = pool_answers(sae, answer_residuals(model, tokenizer, prompts, base_responses, hook, batch_size),
                         latents, unit)
    frame = pd.DataFrame(index=range(len(prompts)))
    for j, f in enumerate(latents):
        frame[f"latent_{f}"] = tuned[0][:, j] - plain[0][:, j]
    if unit is not None:
        frame["direction"] = tuned[1] - plain[1]
    frame.insert(0, "score", frame[[f"latent_{f}" for f in latents]].mean(axis=1) if latents else frame["direction"])
    return frame


@dataclass
class ScreenResult:
    """The ranked table (most persona-shifting first), the manifest, and the run folder when one was written."""

    table: Any = field(repr=False)
    manifest: dict[str, Any]
    out_dir: Path | None = None


def _read_examples(path: str | os.PathLike, config: ScreenConfig) -> Any:
    """(id, prompt, response) of a training file, with one-line errors for an empty file or missing columns."""
    import pandas as pd

    raw = read_table(path)
    source = repr(str(path))
    if len(raw) == 0:
        raise DataError(f"{source} holds no examples; expected one (prompt, response) record per line.")
    found = list(map(str, raw.columns))
    columns = {}
    for role, configured, defaults in (("prompt", config.prompt_column, PROMPT_COLUMNS),
                                       ("response", config.response_column, RESPONSE_COLUMNS)):
        name = configured if configured is not None else next((c for c in defaults if c in found), None)
        if name is None or name not in found:
            wanted = repr(configured) if configured is not None else f"one of {list(defaults)}"
            raise DataError(f"{source} has no {role} column ({wanted}); columns found: {found}. Rename the column "
                            f"or pass --{role}-column NAME.")
        columns[role] = name
    frame = pd.DataFrame({"prompt": raw[columns["prompt"]], "response": raw[columns["response"]]})
    for role in ("prompt", "response"):
        bad = [i for i, v in enumerate(frame[role].tolist()) if not isinstance(v, str)]
        if bad:
            raise DataError(f"{source}: the {role} column {columns[role]!r} is not text in rows {bad[:8]} (0-based); "
                            "fill or drop those rows.")
    ids = raw[ID_COLUMN].astype(str).tolist() if ID_COLUMN in found else [str(i) for i in range(len(raw))]
    if len(set(ids)) != len(ids):
        raise DataError(f"{source}: the {ID_COLUMN!r} column repeats ids; expected unique ids (or drop the column to "
                        "use row numbers).")
    frame.insert(0, "id", ids)
    return frame.head(config.limit) if config.limit is not None else frame


def _cached_base_answers(model: Any, tokenizer: Any, identity: dict[str, Any], prompts: list[str],
                         config: ScreenConfig, cache: Path | None) -> tuple[list[str], dict[str, int]]:
    """The base model's greedy answer to each distinct prompt, reusing those in ``cache`` (JSONL) made under the
    same key: what the answer depends on (the model's identity with its weights' fingerprint, its dtype and device
    type, the decoding: greedy, ``max_new_tokens``, the stop tokens) and the prompt as the model reads it (the
    prompt and its rendering in the chat template). New answers are added to the cache."""
    param = next(model.parameters())
    settings = {**identity, "dtype": str(param.dtype).removeprefix("torch."), "device": param.device.type,
                "decoding": "greedy", "max_new_tokens": config.max_new_tokens,
                "stop": generation_stops(tokenizer)}

    def key(prompt: str) -> str:
        blob = json.dumps([settings, prompt, render_prompt(tokenizer, prompt)], sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    known: dict[str, dict[str, Any]] = {}
    if cache is not None and cache.is_file():
        for line in cache.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                known[record["key"]] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                logger.warning("skipping an unreadable line of the base-answer cache %s", cache)
    distinct = list(dict.fromkeys(prompts))
    missing = [p for p in distinct if key(p) not in known]
    if missing:
        logger.info("base model answers %d prompts (%d cached)", len(missing), len(distinct) - len(missing))
        answers = greedy_answers(model, tokenizer, missing, max_new_tokens=config.max_new_tokens,
                                 batch_size=config.batch_size)
        for prompt, answer in zip(missing, answers, strict=True):
            known[key(prompt)] = {"key": key(prompt), "prompt": prompt, "response": answer, **settings}
        if cache is not None:
            atomic_write_text(cache, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in known.values()))
    stats = {"distinct_prompts": len(distinct), "generated": len(missing), "cached": len(distinct) - len(missing)}
    return [known[key(p)]["response"] for p in prompts], stats


def run_screen(train: str | os.PathLike, model: str | os.PathLike | None = None, config: ScreenConfig | None = None,
               *, out: str | os.PathLike | None = None, sae: Any = None) -> ScreenResult:
    """Screen a training file (see the module docstring); write ``screen.csv`` and ``manifest.json`` into ``out``.

    Args:
        train: a .jsonl/.json/.csv/.parquet file with prompt and response columns (and ``id``, else row numbers).
        model: the base model about to be fine-tuned: offline alias, folder or hub id (default ``smollm2``).
        config: `ScreenConfig` (latents, direction or organism run, SAE, answer length, device); default: the
            latents and direction of the organism run shipped in the repository (``data/organism/run``).
        out: run folder; None keeps the result in memory (and caches no base answer).
        sae: a loaded sae-lens SAE instead of ``config.sae``.
    """
    config = config or ScreenConfig(from_run=str(ORGANISM_RUN))
    clock: dict[str, float] = {}
    started = time.perf_counter()
    examples = _read_examples(train, config)  # bad input fails before any model loads
    if out is not None:
        check_output_dir(out, "personas.screen")
    model_name = "smollm2" if model is None else os.fspath(model)
    spec = run_sae_spec(config.from_run if config.latents is None else None, config.sae)
    sae_obj = sae if sae is not None else load_sae(spec, device=config.device, dtype="float32",
                                                   model=model_name if spec == "default" else None)
    hook, d_sae, d_in = sae_obj.cfg.metadata.hook_name, int(sae_obj.cfg.d_sae), int(sae_obj.cfg.d_in)
    if RESID_HOOK.match(hook or "") is None:
        resid_site(hook, 0)  # the one-line error for a hook the screen cannot read
    latents = parse_latents(config.latents, d_sae)
    direction_path = config.direction
    if config.from_run is not None:
        run_features, run_direction = run_latents(config.from_run, config.n_run_latents, hook, sae_obj)
        if config.latents is None:
            latents = parse_latents(run_features, d_sae) if run_features else []
        if direction_path is None and run_direction is not None:
            direction_path = str(run_direction)
    direction = read_direction(direction_path, d_in) if direction_path is not None else None
    if not latents and direction is None:
        raise DataError(f"--from-run {config.from_run!r} has neither top latents nor a direction.npy; pass --latents "
                        "or --direction.")
    clock["read_s"] = time.perf_counter() - started

    t = time.perf_counter()
    lm, tokenizer, identity = load_causal_lm(model_name, device=config.device, dtype=config.dtype)
    width = int(lm.config.hidden_size)
    resid_site(hook, len(decoder_layers(lm)))
    if width != d_in:
        raise SiteMismatchError(f"the SAE reads vectors of width {d_in} but the model's residual stream is {width} "
                                "wide: the model lacks the SAE's hook. Pass the model the SAE was trained on.")
    clock["load_s"] = time.perf_counter() - t

    out_dir = output_dir(out, "personas.screen") if out is not None else None
    prompts, responses = examples["prompt"].tolist(), examples["response"].tolist()
    t = time.perf_counter()
    base, cache_stats = _cached_base_answers(lm, tokenizer, identity, prompts, config,
                                             out_dir / BASE_ANSWERS_FILE if out_dir is not None else None)
    clock["base_answers_s"] = time.perf_counter() - t
    t = time.perf_counter()
    shifts = screen_examples(lm, tokenizer, prompts, responses, base, hook=hook, sae=sae_obj, latents=latents,
                             direction=direction, batch_size=config.batch_size)
    clock["measure_s"] = time.perf_counter() - t
    table = examples[["id"]].join(shifts)
    table["prompt"], table["response"], table["base_response"] = prompts, responses, base
    table["position"] = range(len(table))
    table = table.sort_values(["score", "position"], ascending=[False, True], kind="stable").drop(columns="position")
    table.insert(0, "rank", range(1, len(table) + 1))
    table = table.reset_index(drop=True)
    clock = {k: round(v, 2) for k, v in clock.items()}
    clock["total_s"] = round(time.perf_counter() - started, 2)
    manifest = {
        **manifest_header("personas.screen"),
        "input": {"path": str(train), "sha256": hashlib.sha256(Path(train).read_bytes()).hexdigest(),
                  "n_examples": len(table), "limit": config.limit},
        "model": identity, "sae": sae_info(sae_obj), "hook": hook,
        "latents": latents, "direction": {"file": direction_path, "unit": True} if direction is not None else None,
        "score": ("mean over the latents of (mean code over the training answer's tokens - the same over the base "
                  "model's greedy answer to the prompt)") if latents else
                 "projection of the mean residual of the training answer minus that of the base answer, on the unit "
                 "direction",
        "base_answers": {"decoding": "greedy", "max_new_tokens": config.max_new_tokens, **cache_stats},
        "config": asdict(config), "time": clock,
    }
    if out_dir is not None:
        manifest["files"] = {SCREEN_FILE: write_csv(out_dir / SCREEN_FILE, table)}
        write_json(out_dir / MANIFEST_FILE, manifest)
    return ScreenResult(table=table, manifest=manifest, out_dir=out_dir)
