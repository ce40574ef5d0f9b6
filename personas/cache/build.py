"""Building a cache: capture a dataset shard by shard, resume after an interruption, refuse a different job.

`build_cache` runs the model over a dataset in contiguous shards of ``shard_size`` responses (one forward pass per
batch, every hook at once, via `personas.capturing.capture`, on the local or the Ray engine) and writes each shard
(`personas.cache.shards`) to a temporary name, renamed when complete; the manifest is rewritten atomically after
each shard. Running the same job again resumes; a job whose *fingerprint* (model, hooks, SAE and its weights,
capture settings, shard size, dataset hash) differs from the folder's is refused with the fields that differ.

The steps, in order: normalise the request (`_Job`); lock the folder (`personas.cache.lock`, one writer at a
time); a rerun over a complete cache is settled without loading the model when it can be (`_settle_complete`);
else start the engine, compare fingerprints (`_open_manifest`), keep the shards whose sha256 still matches
(`_plan`), capture the rest (`_capture_shards`) and write the row index (`_finish`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from personas.artifacts import MANIFEST_FILE, atomic_write_bytes, manifest_header, now, write_json
from personas.cache.engines import get_engine
from personas.cache.engines.base import CaptureSpec, ShardTask
from personas.cache.lock import CacheLock
from personas.cache.shards import FORMAT, INDEX_FILE, SHARD_PATTERN, read_shard_file
from personas.cache.store import ActivationCache, bad_files, read_manifest
from personas.config import CacheConfig, CaptureConfig, DataConfig, SAEConfig
from personas.data.responses import load_responses
from personas.devices import sae_dtype
from personas.errors import CacheError, PersonasError
from personas.saes import default_sae_path, load_sae, release_config, sae_fingerprint
from personas.saes.site import default_hook

logger = logging.getLogger(__name__)


_CAPTURE_KEYS = ("pool", "batch_size", "max_length", "skip_first", "prompt_format", "system_prompt")


@dataclass
class _Job:
    """What a `build_cache` call asks for, normalised: configs, the SAE spec and the hooks to read."""

    capture: CaptureConfig
    cache: CacheConfig
    sae: Any  # None, a spec string, or a loaded sae-lens SAE
    encode_batch_tokens: int
    hooks: list[str]

    @classmethod
    def make(cls, capture: CaptureConfig | None, hooks: Sequence[str] | str | None, sae: Any,
             cache: CacheConfig | None) -> _Job:
        capture_cfg = capture or CaptureConfig()
        spec, encode_batch_tokens = (sae.sae, sae.encode_batch_tokens) if isinstance(sae, SAEConfig) else (sae, 8192)
        if isinstance(spec, str) and spec.lower() == "none":
            spec = None
        if isinstance(spec, os.PathLike):
            spec = str(spec)
        hook_list = [hooks] if isinstance(hooks, str) else list(dict.fromkeys(hooks or []))
        if not hook_list and capture_cfg.hook:
            hook_list = [capture_cfg.hook]
        if not hook_list and spec is not None:
            hook_list = _sae_hook(spec, capture_cfg.model)
        return cls(capture_cfg, cache or CacheConfig(), spec, encode_batch_tokens,
                   hook_list or [default_hook(capture_cfg.model)])

    def capture_spec(self, model: Any) -> CaptureSpec:
        return CaptureSpec(model=model if model is not None else self.capture.model, sae=self.sae, hooks=self.hooks,
                           config=self.capture, keep_tokens=self.cache.tokens,
                           encode_batch_tokens=self.encode_batch_tokens)

    def request_fingerprint(self, responses: Any) -> dict[str, Any]:
        """The fingerprint fields known without loading the model (everything but the model and the SAE)."""
        return {
            "format": FORMAT,
            "hooks": list(self.hooks),
            "capture": {k: getattr(self.capture, k) for k in _CAPTURE_KEYS},
            "tokens": bool(self.cache.tokens and self.sae is not None),
            "shard_size": self.cache.shard_size,
            "dataset_hash": responses.dataset_hash,
            "n_rows": len(responses),
        }

    def fingerprint(self, described: dict[str, Any], responses: Any) -> dict[str, Any]:
        sae = described["sae"]
        return {
            "model": described["model_id"],
            "d_model": described["model"]["d_model"],
            "dtype": described["model"]["dtype"],
            "sae": None if sae is None else {k: v for k, v in sae.items() if k != "spec"},
            "sae_hook": described["sae_hook"],
            **self.request_fingerprint(responses),
        }


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
            One job writes a folder at a time: a second one fails at once, naming the first (`CacheLock`).
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
        the `ActivationCache` (check ``.complete``). Every shard's sha256 is checked before a cache is called
        complete; a complete cache whose row index is missing or corrupt gets it rewritten.
    """
    job = _Job.make(capture, hooks, sae, cache)
    if model is not None and job.cache.engine != "local":
        raise PersonasError(
            "a model object can only be used with engine='local'; for engine='ray' give the model by name or "
            "folder (CaptureConfig.model) so that each worker loads its own replica."
        )
    responses = load_responses(data, data_config)
    out = Path(out)
    read_manifest(out)  # a file, or a folder that is not a cache, is refused before anything is created
    with CacheLock(out):
        existing = read_manifest(out)
        if existing is not None and _settle_complete(out, existing, job, responses, model):
            return ActivationCache(out)
        engine = get_engine(job.cache.engine, address=job.cache.ray_address, num_workers=job.cache.num_workers,
                            **(engine_options or {}))
        with engine:
            described = engine.start_capture(job.capture_spec(model))
            manifest = _open_manifest(out, existing, job, described, responses, command)
            manifest["engine"] = {"name": engine.name, **getattr(engine, "info", {})}
            todo = _plan(out, manifest, max_shards)
            write_json(out / MANIFEST_FILE, manifest)
            _capture_shards(engine, out, manifest, todo, responses, progress)
        if len(manifest["shards"]) == manifest["n_shards"] and not (manifest["complete"] and _index_ok(out, manifest)):
            _finish(out, manifest, responses)
    return ActivationCache(out)


def _settle_complete(out: Path, manifest: dict[str, Any], job: _Job, responses: Any, model: Any) -> bool:
    """True when ``manifest`` is a complete cache of this very job with every shard intact (index rewritten if
    needed), decided without loading the model; False when the model must be loaded to decide or to recapture.

    The model is identified by the name or folder asked for (with the dtype, when not "auto"), exactly as the first
    run recorded it; the SAE, when there is one, is loaded (no model needed) and its weights hash compared. Any
    doubt falls through to the full path, which loads the model and compares the whole fingerprint.
    """
    old = manifest["fingerprint"]
    recorded = (manifest.get("config") or {}).get("capture") or {}
    if not manifest["complete"] or model is not None or not isinstance(job.capture.model, str):
        return False
    if any(old.get(k) != v for k, v in job.request_fingerprint(responses).items()):
        return False
    if job.capture.model != recorded.get("model") or job.capture.dtype in ("auto", None) \
            or job.capture.dtype != recorded.get("dtype"):
        return False
    if job.sae is None:
        if old.get("sae") is not None:
            return False
    else:
        if (manifest.get("sae") or {}).get("spec") != (job.sae if isinstance(job.sae, str) else "in-memory"):
            return False
        try:
            sae = load_sae(job.sae, device="cpu", dtype=sae_dtype(job.capture.dtype, job.capture.device),
                           model=job.capture.model)
        except PersonasError:
            return False
        hook_name = sae.cfg.metadata.hook_name
        described = sae_fingerprint(sae, job.sae)
        if {k: v for k, v in described.items() if k != "spec"} != old.get("sae") \
                or (hook_name if hook_name in job.hooks else job.hooks[0]) != old.get("sae_hook"):
            return False
    bad = bad_files(out, {**manifest, "index": None})
    if bad:
        logger.warning("the complete cache %s has damaged shards (%s); they will be captured again", out,
                       ", ".join(bad))
        return False
    if not _index_ok(out, manifest):
        logger.warning("the row index of %s is missing or corrupt: rewriting it", out)
        _finish(out, manifest, responses)
    logger.info("cache %s is complete and every shard's sha256 matches; the model was not loaded", out)
    return True


def _open_manifest(out: Path, existing: dict[str, Any] | None, job: _Job, described: dict[str, Any],
                   responses: Any, command: str | None) -> dict[str, Any]:
    """The existing manifest when its fingerprint matches this job (else `CacheError`), or a new one."""
    fingerprint = job.fingerprint(described, responses)
    if existing is not None:
        diff = _fingerprint_diff(existing["fingerprint"], fingerprint)
        if diff:
            raise CacheError(
                f"{out} holds a cache of a different job; these differ: " + "; ".join(diff) + ". Use another "
                "--out folder for this job, or delete the folder to start over."
            )
        existing["updated_at"] = now()
        return existing
    n = len(responses)
    return {
        **manifest_header("personas.cache"),
        "format": FORMAT,
        "updated_at": None,
        "complete": False,
        "command": command,
        "fingerprint": fingerprint,
        "model": described["model"],
        "hooks": job.hooks,
        "sae_hook": described["sae_hook"],
        "sae": described["sae"],
        "stop_at_layer": described["stop_at_layer"],
        "config": {"capture": asdict(job.capture), "cache": asdict(job.cache), "data": asdict(responses.config)},
        "data": responses.summary(),
        "has_groups": responses.has_groups,
        "n_rows": n,
        "n_shards": -(-n // job.cache.shard_size),
        "shards": {},
        "index": None,
        "engine": {},
    }


def _bounds(manifest: dict[str, Any], i: int) -> tuple[int, int]:
    size = manifest["fingerprint"]["shard_size"]
    return i * size, min(manifest["n_rows"], (i + 1) * size)


def _plan(out: Path, manifest: dict[str, Any], max_shards: int | None) -> list[int]:
    """Drop temporary files and the manifest's shards whose file is missing or whose sha256 differs; return the
    shards to capture (at most ``max_shards``)."""
    for p in out.glob(".shard-*.tmp"):
        logger.info("removing %s, left by an interrupted job", p)
        p.unlink(missing_ok=True)
    kept = {}
    for key, entry in manifest["shards"].items():
        if bad_files(out, {"shards": {key: entry}}):
            logger.warning("shard %s is missing or its sha256 differs; it will be captured again", out / entry["file"])
            manifest["complete"] = False
        else:
            kept[key] = entry
    manifest["shards"] = dict(sorted(kept.items(), key=lambda kv: int(kv[0])))
    todo = [i for i in range(manifest["n_shards"]) if str(i) not in kept]
    if kept and todo:
        logger.info("resuming %s: %d of %d shards complete, %d to capture", out, len(kept), manifest["n_shards"],
                    len(todo))
    return todo if max_shards is None else todo[:max_shards]


def _capture_shards(engine: Any, out: Path, manifest: dict[str, Any], todo: list[int], responses: Any,
                    progress: bool) -> None:
    """Capture the shards ``todo`` on ``engine``; write each one and the manifest as it arrives."""
    from tqdm.auto import tqdm

    labels, prompts, texts = responses.labels, responses.prompts, responses.texts

    def tasks() -> Iterator[ShardTask]:
        for i in todo:
            lo, hi = _bounds(manifest, i)
            yield ShardTask(i, lo, hi, prompts[lo:hi], texts[lo:hi], labels[lo:hi])

    bar = tqdm(total=len(todo), desc="cache", unit="shard", disable=not progress, leave=False)
    for result in engine.run_capture(tasks()):
        path = out / SHARD_PATTERN.format(result.index)
        atomic_write_bytes(path, result.data)
        manifest["shards"][str(result.index)] = {
            "file": path.name,
            "rows": list(_bounds(manifest, result.index)),
            "bytes": len(result.data),
            "sha256": hashlib.sha256(result.data).hexdigest(),
            **result.stats,
        }
        manifest["shards"] = dict(sorted(manifest["shards"].items(), key=lambda kv: int(kv[0])))
        manifest["updated_at"] = now()
        write_json(out / MANIFEST_FILE, manifest)
        bar.update(1)
    bar.close()


def _index_ok(out: Path, manifest: dict[str, Any]) -> bool:
    return manifest.get("index") is not None and not bad_files(out, {"shards": {}, "index": manifest["index"]})


def _finish(out: Path, manifest: dict[str, Any], responses: Any) -> None:
    """Write the row index and mark the manifest complete."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    n_tokens = np.zeros(len(responses), dtype=np.int64)
    shard_of = np.zeros(len(responses), dtype=np.int32)
    for key, entry in manifest["shards"].items():
        lo, hi = entry["rows"]
        shard = read_shard_file(out / entry["file"], verify=False, want=(), expect=(int(key), lo, hi))
        n_tokens[lo:hi] = shard.n_tokens
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


def _sae_hook(sae_spec: Any, model: str | None = None) -> list[str]:
    """The hook an SAE reads, without loading the weights: from its cfg.json (a folder) or the release's config
    (``RELEASE:SAE_ID``), else []."""
    if isinstance(sae_spec, str):
        folder = default_sae_path(model) if sae_spec == "default" else Path(sae_spec)
        cfg_file = folder / "cfg.json"
        if cfg_file.is_file():
            try:
                cfg = json.loads(cfg_file.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                return []  # load_sae names the bad file
            hook = cfg.get("hook_name") or (cfg.get("metadata") or {}).get("hook_name") if isinstance(cfg, dict) \
                else None
            if isinstance(hook, str) and hook:
                return [hook]
        if ":" in sae_spec and not os.path.exists(sae_spec):  # RELEASE:SAE_ID: the release's config names it
            hook = release_config(*sae_spec.split(":", 1)).get("hook_name")
            return [hook] if hook else []
        return []
    return [sae_spec.cfg.metadata.hook_name]


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
