"""Building a cache: capture a dataset shard by shard, resume after an interruption, refuse a different job.

`build_cache` runs the model over a dataset in contiguous shards of ``shard_size`` responses (one forward pass per
batch, every hook at once, via `personas.capturing.capture`, on the local or the Ray engine) and writes each shard
(`personas.cache.shards`) to a temporary name, renamed when complete; the manifest is rewritten atomically after
each shard. Running the same job again resumes; a job whose *fingerprint* (model, hooks, SAE and its weights,
capture settings, shard size, dataset hash) differs from the folder's is refused with the fields that differ.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from personas.artifacts import MANIFEST_FILE, atomic_write_bytes, manifest_header, now, write_json
from personas.cache.engines import get_engine
from personas.cache.engines.base import CaptureSpec, ShardTask
from personas.cache.shards import FORMAT, INDEX_FILE, SHARD_PATTERN
from personas.cache.store import ActivationCache, read_manifest
from personas.config import DEFAULT_HOOK, CacheConfig, CaptureConfig, DataConfig, SAEConfig
from personas.data.responses import load_responses
from personas.errors import CacheError, PersonasError
from personas.saes import default_sae_path

logger = logging.getLogger(__name__)


def _fingerprint(described: dict[str, Any], hooks: list[str], config: CaptureConfig, cache_config: CacheConfig,
                 responses: Any) -> dict[str, Any]:
    sae = described["sae"]
    return {
        "format": FORMAT,
        "model": described["model_id"],
        "d_model": described["model"]["d_model"],
        "dtype": described["model"]["dtype"],
        "hooks": list(hooks),
        "sae": None if sae is None else {k: v for k, v in sae.items() if k != "spec"},
        "sae_hook": described["sae_hook"],
        "capture": {k: getattr(config, k) for k in ("pool", "batch_size", "max_length", "skip_first",
                                                    "prompt_format", "system_prompt")},
        "tokens": bool(cache_config.tokens and sae is not None),
        "shard_size": cache_config.shard_size,
        "dataset_hash": responses.dataset_hash,
        "n_rows": len(responses),
    }


def _fingerprint_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            inner = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            out.append(f"{key} ({', '.join(f'{k}: cached {a.get(k)!r}, asked {b.get(k)!r}' for k in inner[:4])})")
        else:
            out.append(f"{key} (cached {_short(a)}, asked {_short(b)})")
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def build_cache(
    data: Any,
    out: str | os.PathLike,
    *,
    capture: CaptureConfig | None = None,
    hooks: Sequence[str] | str | None = None,
    sae: SAEConfig | str | Any | None = None,
    cache: CacheConfig | None = None,
    data_config: DataConfig | None = None,
    model: Any = None,
    progress: bool = True,
    max_shards: int | None = None,
    command: str | None = None,
    engine_options: dict[str, Any] | None = None,
) -> ActivationCache:
    """Capture a dataset into a sharded cache at ``out``, resuming a job that was interrupted.

    Args:
        data: anything `personas.load_responses` takes.
        out: the cache folder (created; an existing cache of the same job is resumed, of another job refused).
        capture: model, pooling, batching, device and dtype (`CaptureConfig`); ``capture.hook`` is used when
            ``hooks`` is not given.
        hooks: hook names to read, all in one forward pass; default ``capture.hook``, else the SAE's hook.
        sae: an `SAEConfig`, a spec string (``"default"``, folder, ``"RELEASE:SAE_ID"``, ``"none"``), or a loaded
            sae-lens SAE; default ``"none"`` (activations only).
        cache: shard size, per-token codes, engine (`CacheConfig`).
        model: a loaded model (`ModelHandle` / TransformerLens) to use instead of loading ``capture.model``
            (local engine only).
        max_shards: capture at most this many new shards, then return (the cache stays resumable).
    Returns:
        the `ActivationCache` (check ``.complete``).
    """
    from tqdm.auto import tqdm

    capture_cfg = capture or CaptureConfig()
    cache_cfg = cache or CacheConfig()
    sae_spec: Any
    encode_batch_tokens = 8192
    if isinstance(sae, SAEConfig):
        sae_spec, encode_batch_tokens = sae.sae, sae.encode_batch_tokens
    else:
        sae_spec = sae
    if isinstance(sae_spec, str) and sae_spec.lower() == "none":
        sae_spec = None
    if isinstance(sae_spec, os.PathLike):
        sae_spec = str(sae_spec)
    hook_list = [hooks] if isinstance(hooks, str) else list(dict.fromkeys(hooks or []))
    if not hook_list:
        if capture_cfg.hook:
            hook_list = [capture_cfg.hook]
        elif sae_spec is not None and not isinstance(sae_spec, str):
            hook_list = [sae_spec.cfg.metadata.hook_name]
    responses = load_responses(data, data_config)
    out = Path(out)
    existing = read_manifest(out)
    if model is not None and cache_cfg.engine != "local":
        raise PersonasError(
            "a model object can only be used with engine='local'; for engine='ray' give the model by name or "
            "folder (CaptureConfig.model) so that each worker loads its own replica."
        )

    engine = get_engine(cache_cfg.engine, address=cache_cfg.ray_address, num_workers=cache_cfg.num_workers,
                        **(engine_options or {}))
    with engine:
        if not hook_list and sae_spec is not None:
            hook_list = _sae_hook(sae_spec)
        if not hook_list:
            hook_list = [DEFAULT_HOOK]
        spec = CaptureSpec(
            model=model if model is not None else capture_cfg.model,
            sae=sae_spec,
            hooks=hook_list,
            config=capture_cfg,
            keep_tokens=cache_cfg.tokens,
            encode_batch_tokens=encode_batch_tokens,
        )
        described = engine.start_capture(spec)
        fingerprint = _fingerprint(described, hook_list, capture_cfg, cache_cfg, responses)
        n = len(responses)
        bounds = [(s, min(n, s + cache_cfg.shard_size)) for s in range(0, n, cache_cfg.shard_size)]
        if existing is not None:
            diff = _fingerprint_diff(existing["fingerprint"], fingerprint)
            if diff:
                raise CacheError(
                    f"{out} holds a cache of a different job; these differ: " + "; ".join(diff) + ". Use another "
                    "--out folder for this job, or delete the folder to start over."
                )
            manifest = existing
            manifest["updated_at"] = now()
        else:
            manifest = {
                **manifest_header("personas.cache"),
                "format": FORMAT,
                "updated_at": None,
                "complete": False,
                "command": command,
                "fingerprint": fingerprint,
                "model": described["model"],
                "hooks": hook_list,
                "sae_hook": described["sae_hook"],
                "sae": described["sae"],
                "stop_at_layer": described["stop_at_layer"],
                "config": {"capture": asdict(capture_cfg), "cache": asdict(cache_cfg),
                           "data": asdict(responses.config)},
                "data": responses.summary(),
                "has_groups": responses.has_groups,
                "n_rows": n,
                "n_shards": len(bounds),
                "shards": {},
                "index": None,
                "engine": {},
            }
            out.mkdir(parents=True, exist_ok=True)
        manifest["engine"] = {"name": engine.name, **getattr(engine, "info", {})}
        _remove_temp_files(out)
        done = _complete_shards(out, manifest)
        manifest["shards"] = {str(i): manifest["shards"][str(i)] for i in sorted(done)}
        todo = [i for i in range(len(bounds)) if i not in done]
        if max_shards is not None:
            todo = todo[:max_shards]
        if done:
            logger.info("resuming %s: %d of %d shards complete, %d to capture", out, len(done), len(bounds),
                        len(todo))
        write_json(out / MANIFEST_FILE, manifest)

        labels = responses.labels
        prompts, texts = responses.prompts, responses.texts

        def tasks() -> Iterator[ShardTask]:
            for i in todo:
                lo, hi = bounds[i]
                yield ShardTask(i, lo, hi, prompts[lo:hi], texts[lo:hi], labels[lo:hi])

        bar = tqdm(total=len(todo), desc="cache", unit="shard", disable=not progress, leave=False)
        for result in engine.run_capture(tasks()):
            path = out / SHARD_PATTERN.format(result.index)
            atomic_write_bytes(path, result.data)
            lo, hi = bounds[result.index]
            manifest["shards"][str(result.index)] = {
                "file": path.name,
                "rows": [lo, hi],
                "bytes": len(result.data),
                "sha256": hashlib.sha256(result.data).hexdigest(),
                **result.stats,
            }
            manifest["shards"] = dict(sorted(manifest["shards"].items(), key=lambda kv: int(kv[0])))
            manifest["updated_at"] = now()
            write_json(out / MANIFEST_FILE, manifest)
            bar.update(1)
        bar.close()

    if len(manifest["shards"]) == len(bounds) and not manifest["complete"]:
        _finish(out, manifest, responses)
    return ActivationCache(out)


def _sae_hook(sae_spec: Any) -> list[str]:
    """The hook an SAE spec reads, from its cfg.json when it is a folder (without loading the weights)."""
    if isinstance(sae_spec, str):
        folder = default_sae_path() if sae_spec == "default" else Path(sae_spec)
        cfg_file = folder / "cfg.json"
        if cfg_file.is_file():
            cfg = json.loads(cfg_file.read_text())
            hook = cfg.get("hook_name") or (cfg.get("metadata") or {}).get("hook_name")
            if hook:
                return [hook]
        return []
    return [sae_spec.cfg.metadata.hook_name]


def _remove_temp_files(out: Path) -> None:
    for p in out.glob(".shard-*.tmp"):
        logger.info("removing %s, left by an interrupted job", p)
        p.unlink(missing_ok=True)


def _complete_shards(out: Path, manifest: dict[str, Any]) -> set[int]:
    """Shards listed in the manifest whose file is there with the right size (others are recaptured)."""
    done = set()
    for key, entry in manifest["shards"].items():
        path = out / entry["file"]
        if path.is_file() and path.stat().st_size == entry["bytes"]:
            done.add(int(key))
        else:
            logger.warning("shard %s is missing or has the wrong size; it will be captured again", path)
    return done


def _finish(out: Path, manifest: dict[str, Any], responses: Any) -> None:
    """Write the row index and mark the manifest complete."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from safetensors import safe_open

    n_tokens = np.zeros(len(responses), dtype=np.int64)
    shard_of = np.zeros(len(responses), dtype=np.int32)
    for key, entry in manifest["shards"].items():
        lo, hi = entry["rows"]
        with safe_open(str(out / entry["file"]), framework="np") as fh:
            n_tokens[lo:hi] = fh.get_tensor("n_tokens")
        shard_of[lo:hi] = int(key)
    frame = pd.DataFrame({
        "row": np.arange(len(responses), dtype=np.int64),
        "id": responses.ids,
        "group": list(responses.groups) if responses.has_groups else [None] * len(responses),
        "label": responses.labels.astype(np.int8),
        "n_tokens": n_tokens,
        "shard": shard_of,
    })
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    data = sink.getvalue().to_pybytes()
    atomic_write_bytes(out / INDEX_FILE, data)
    manifest["index"] = {"file": INDEX_FILE, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest["stats"] = {
        "n_response_tokens": int(n_tokens.sum()),
        "n_truncated": int(sum(e.get("n_truncated") or 0 for e in manifest["shards"].values())),
        "n_norm_outlier_tokens": int(sum(e.get("n_norm_outlier_tokens") or 0 for e in manifest["shards"].values())),
        "bytes": int(sum(e["bytes"] for e in manifest["shards"].values())),
    }
    manifest["complete"] = True
    manifest["updated_at"] = now()
    write_json(out / MANIFEST_FILE, manifest)
    logger.info("cache %s complete: %d responses in %d shards", out, len(responses), len(manifest["shards"]))
