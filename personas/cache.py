"""A sharded on-disk store of captured activations and SAE codes that survives interruption.

Capture once, rank many times: `build_cache` runs the model over a dataset in contiguous shards of
``shard_size`` responses (one forward pass per batch, every hook at once, stopping after the deepest one, via
`personas.capture.capture`) and writes, per shard, one safetensors file:

====================== ===================================================================================
tensor                 content
====================== ===================================================================================
``rows``               int64 [n]: dataset row numbers ``start .. stop-1``
``labels``             int8 [n]: 1 misaligned, 0 aligned
``n_tokens``           int64 [n]: response tokens pooled
``pooled.<hook>``      float32 [n, d_model]: pooled activations at each hook
``features.indptr``    int64 [n+1] |
``features.indices``   int32 [nnz] | pooled SAE codes, CSR (responses x latents), when an SAE is given
``features.values``    float32     |
``tokens.indptr``      int64 [T+1] |
``tokens.indices``     int32       | per-token SAE codes, CSR (response tokens x latents), when ``tokens=True``
``tokens.values``      float32     |
``tokens.offsets``     int64 [n+1]: tokens ``offsets[i]:offsets[i+1]`` belong to response i of the shard
``tokens.token_ids``   int64 [T]: the token ids
====================== ===================================================================================

No pickle anywhere. Next to the shards: ``index.parquet`` (row, id, group, label, n_tokens, shard) and
``manifest.json`` (provenance, the job's *fingerprint*, and the size and sha256 of every shard).

Interruption: a shard is written to a temporary name and renamed when complete, and the manifest is rewritten
(atomically) after each shard. Running the same job again resumes: complete shards are kept, the rest are
captured. Shard files hold no timestamps, so a resumed cache is byte-identical to an uninterrupted one (on the
same device and library versions). A job whose fingerprint (model, hooks, SAE and its weights, capture settings,
shard size, dataset hash) differs from the folder's is refused with the fields that differ. On read, each shard's
size and sha256 are checked, and a corrupt or truncated shard is named.

Reading: `open_cache` -> `ActivationCache` (``.index``, ``.iter_shards()``, ``.load_features()``,
``.token_codes(row)``, ``.verify()``); `rank_cache` ranks straight from the shards without loading the model,
one shard in memory at a time (exact, `personas.scoring.StreamingRanker`), or with ``exact=False`` in memory
that does not grow with the number of responses (`BinnedRanker`, histogram AUROC).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from personas.config import DEFAULT_HOOK, CacheConfig, CaptureConfig, DataConfig, SAEConfig
from personas.errors import CacheError, PersonasError
from personas.provenance import atomic_write_bytes, library_versions, now, write_json

if TYPE_CHECKING:
    import pandas as pd
    import scipy.sparse

    from personas.capture import Capture, TokenCodes
    from personas.scoring import Ranking

logger = logging.getLogger(__name__)

FORMAT = "personas.cache.v1"
MANIFEST_FILE = "manifest.json"
INDEX_FILE = "index.parquet"
SHARD_PATTERN = "shard-{:05d}.safetensors"
_SHARD_RE = re.compile(r"^shard-(\d{5})\.safetensors$")
_META_KEY = "personas"  # one metadata key: safetensors serializes its metadata map in no fixed order
_HASH_CHUNK = 1 << 22



# ============================================================================================ shard format


def encode_shard(
    index: int, start: int, stop: int, labels: np.ndarray, captured: Capture, hooks: Sequence[str]
) -> bytes:
    """Serialize one captured shard to safetensors bytes (deterministic: no timestamps, fixed key order)."""
    from safetensors.numpy import save

    n = stop - start
    if len(captured) != n:
        raise CacheError(f"shard {index} captured {len(captured)} responses; expected {n} (rows {start}:{stop}).")
    tensors: dict[str, np.ndarray] = {
        "rows": np.arange(start, stop, dtype=np.int64),
        "labels": np.asarray(labels, dtype=np.int8),
        "n_tokens": np.asarray(captured.n_tokens, dtype=np.int64),
    }
    for hook in hooks:
        tensors[f"pooled.{hook}"] = np.ascontiguousarray(captured.pooled[hook], dtype=np.float32)
    n_features = None
    if captured.features is not None:
        n_features = int(captured.features.shape[1])
        _put_csr(tensors, "features", captured.features)
    n_token_rows = 0
    if captured.token_codes is not None:
        tc = captured.token_codes
        _put_csr(tensors, "tokens", tc.codes)
        tensors["tokens.offsets"] = np.asarray(tc.offsets, dtype=np.int64)
        tensors["tokens.token_ids"] = np.asarray(tc.token_ids, dtype=np.int64)
        n_token_rows = int(tc.codes.shape[0])
    meta = {"format": FORMAT, "shard": index, "rows": [start, stop], "hooks": list(hooks),
            "n_features": n_features, "n_token_rows": n_token_rows}
    return save(tensors, metadata={_META_KEY: json.dumps(meta, sort_keys=True)})


def _put_csr(tensors: dict[str, np.ndarray], prefix: str, matrix: Any) -> None:
    import scipy.sparse

    csr = scipy.sparse.csr_matrix(matrix)
    csr.sum_duplicates()
    csr.eliminate_zeros()
    tensors[f"{prefix}.indptr"] = csr.indptr.astype(np.int64)
    tensors[f"{prefix}.indices"] = csr.indices.astype(np.int32)
    tensors[f"{prefix}.values"] = csr.data.astype(np.float32)


@dataclass
class Shard:
    """One shard read back: rows ``start:stop`` of the dataset."""

    index: int
    start: int
    stop: int
    labels: np.ndarray
    n_tokens: np.ndarray
    pooled: dict[str, np.ndarray]
    features: scipy.sparse.csr_matrix | None = None
    token_codes: TokenCodes | None = None
    groups: np.ndarray | None = None
    ids: list[str] | None = None

    def __len__(self) -> int:
        return self.stop - self.start


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_shard_file(
    path: str | os.PathLike,
    *,
    sha256: str | None = None,
    size: int | None = None,
    verify: bool = True,
    want: Sequence[str] = ("pooled", "features", "tokens"),
    hook: str | None = None,
) -> Shard:
    """Read a shard file; with ``verify`` check its size and sha256 first (`CacheError` naming the file)."""
    import scipy.sparse
    from safetensors import SafetensorError, safe_open

    from personas.capture import TokenCodes

    path = Path(path)
    if not path.is_file():
        raise CacheError(f"shard {path} is missing; rerun the cache job with the same arguments to recapture it.")
    if verify:
        actual_size = path.stat().st_size
        if size is not None and actual_size != size:
            raise CacheError(
                f"shard {path} is truncated or corrupt: {actual_size} bytes, the manifest says {size}. "
                "Delete the file and rerun the cache job with the same arguments to recapture it."
            )
        if sha256 is not None and file_sha256(path) != sha256:
            raise CacheError(
                f"shard {path} is corrupt: its sha256 differs from the manifest's. "
                "Delete the file and rerun the cache job with the same arguments to recapture it."
            )
    try:
        with safe_open(str(path), framework="np") as fh:
            meta = json.loads((fh.metadata() or {}).get(_META_KEY, "{}"))
            keys = set(fh.keys())

            def get(name: str) -> np.ndarray:
                return fh.get_tensor(name)

            start, stop = meta["rows"]
            pooled = {}
            if "pooled" in want:
                for h in meta["hooks"]:
                    if hook is None or h == hook:
                        pooled[h] = get(f"pooled.{h}")
            features = None
            if "features" in want and "features.indptr" in keys:
                features = scipy.sparse.csr_matrix(
                    (get("features.values"), get("features.indices"), get("features.indptr")),
                    shape=(stop - start, int(meta["n_features"])),
                )
            token_codes = None
            if "tokens" in want and "tokens.indptr" in keys:
                codes = scipy.sparse.csr_matrix(
                    (get("tokens.values"), get("tokens.indices"), get("tokens.indptr")),
                    shape=(int(meta["n_token_rows"]), int(meta["n_features"])),
                )
                token_codes = TokenCodes(codes, get("tokens.offsets"), get("tokens.token_ids"))
            return Shard(int(meta["shard"]), int(start), int(stop), get("labels"), get("n_tokens"), pooled,
                         features, token_codes)
    except (SafetensorError, OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise CacheError(
            f"shard {path} cannot be read ({type(exc).__name__}: {exc}); it is corrupt or truncated. Delete it and "
            "rerun the cache job with the same arguments to recapture it."
        ) from exc


# ============================================================================================ fingerprint


def sae_fingerprint(sae: Any, spec: Any = None) -> dict[str, Any]:
    """What identifies an SAE in a cache fingerprint: `sae_info` plus a hash of (a sample of) its weights."""
    import torch

    from personas.saes import sae_info

    digest = hashlib.sha256()
    sample = 1 << 20
    for name, tensor in sorted(sae.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        part = flat if flat.numel() <= 2 * sample else torch.cat([flat[:sample], flat[-sample:]])
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(part.to("cpu", torch.float32).contiguous().numpy().tobytes())
    return {"spec": spec if isinstance(spec, str) else "in-memory", **sae_info(sae), "weights_sha256": digest.hexdigest()}


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


# ============================================================================================ writing


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

    from personas.data import load_responses
    from personas.engines import get_engine
    from personas.engines.base import CaptureSpec, ShardTask

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
    existing = _read_existing(out)
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
                "kind": "personas.cache",
                "format": FORMAT,
                "created_at": now(),
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
                "versions": library_versions(),
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

        bar = tqdm(total=len(todo), desc="cache", unit="shard", disable=not progress or None, leave=False)
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
        from personas.saes import default_sae_path

        folder = default_sae_path() if sae_spec == "default" else Path(sae_spec)
        cfg_file = folder / "cfg.json"
        if cfg_file.is_file():
            cfg = json.loads(cfg_file.read_text())
            hook = cfg.get("hook_name") or (cfg.get("metadata") or {}).get("hook_name")
            if hook:
                return [hook]
        return []
    return [sae_spec.cfg.metadata.hook_name]


def _read_existing(out: Path) -> dict[str, Any] | None:
    if out.exists() and not out.is_dir():
        raise CacheError(f"--out {str(out)!r} is a file; expected a folder for the cache.")
    manifest_path = out / MANIFEST_FILE
    if not manifest_path.exists():
        if out.is_dir() and any(p for p in out.iterdir() if not p.name.startswith(".")):
            raise CacheError(
                f"{out} is not empty and has no {MANIFEST_FILE}: it is not a personas cache. Choose an empty or new "
                "folder for --out."
            )
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CacheError(f"{manifest_path} cannot be read ({exc}); delete the folder to start the cache over.") from exc
    if manifest.get("format") != FORMAT:
        raise CacheError(f"{manifest_path} has format {manifest.get('format')!r}; expected {FORMAT!r}.")
    return manifest


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


# ============================================================================================ reading


class ActivationCache:
    """A cache folder written by `build_cache`: its manifest, row index, and shards read one at a time."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not (self.path / MANIFEST_FILE).is_file():
            raise CacheError(f"{self.path} has no {MANIFEST_FILE}; expected a folder written by `personas cache`.")
        manifest = _read_existing(self.path)
        assert manifest is not None
        self.manifest: dict[str, Any] = manifest
        self._index: pd.DataFrame | None = None

    def __repr__(self) -> str:
        state = "complete" if self.complete else f"incomplete, {len(self.manifest['shards'])}/{self.n_shards} shards"
        return (f"ActivationCache({str(self.path)!r}, {self.n_rows} responses, hooks={self.hooks}, "
                f"sae={'yes' if self.has_sae else 'no'}, {state})")

    # -- description -------------------------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    @property
    def n_rows(self) -> int:
        return int(self.manifest["n_rows"])

    def __len__(self) -> int:
        return self.n_rows

    @property
    def n_shards(self) -> int:
        return int(self.manifest["n_shards"])

    @property
    def hooks(self) -> list[str]:
        return list(self.manifest["hooks"])

    @property
    def has_sae(self) -> bool:
        return self.manifest.get("sae") is not None

    @property
    def has_tokens(self) -> bool:
        return bool(self.manifest["fingerprint"].get("tokens"))

    @property
    def d_sae(self) -> int | None:
        return int(self.manifest["sae"]["d_sae"]) if self.has_sae else None

    @property
    def fingerprint(self) -> dict[str, Any]:
        return self.manifest["fingerprint"]

    def _require_complete(self) -> None:
        if not self.complete:
            raise CacheError(
                f"the cache {self.path} is incomplete ({len(self.manifest['shards'])} of {self.n_shards} shards); "
                "rerun the cache job with the same arguments to finish it."
            )

    @property
    def index(self) -> pd.DataFrame:
        """One row per response: row, id, group, label, n_tokens, shard."""
        if self._index is None:
            import pandas as pd

            self._require_complete()
            entry = self.manifest["index"]
            path = self.path / entry["file"]
            if not path.is_file() or path.stat().st_size != entry["bytes"] or file_sha256(path) != entry["sha256"]:
                raise CacheError(f"the row index {path} is missing or corrupt; rerun the cache job to rewrite it.")
            self._index = pd.read_parquet(path)
        return self._index

    @property
    def labels(self) -> np.ndarray:
        return self.index["label"].to_numpy(np.int8)

    @property
    def groups(self) -> np.ndarray | None:
        return self.index["group"].to_numpy(str) if self.manifest.get("has_groups") else None

    def shard_entries(self) -> list[tuple[int, dict[str, Any]]]:
        return sorted(((int(k), v) for k, v in self.manifest["shards"].items()), key=lambda kv: kv[0])

    # -- shards ------------------------------------------------------------------------------------------------
    def read_shard(self, index: int, *, want: Sequence[str] = ("pooled", "features", "tokens"), hook: str | None = None,
                   verify: bool = True) -> Shard:
        entry = self.manifest["shards"].get(str(index))
        if entry is None:
            raise CacheError(f"shard {index} is not in the cache {self.path} ({self.n_shards} shards, "
                             f"{len(self.manifest['shards'])} complete).")
        shard = read_shard_file(self.path / entry["file"], sha256=entry["sha256"], size=entry["bytes"],
                                verify=verify, want=want, hook=hook)
        if self.complete:
            rows = self.index.iloc[shard.start:shard.stop]
            shard.ids = rows["id"].astype(str).tolist()
            shard.groups = rows["group"].to_numpy(str) if self.manifest.get("has_groups") else None
        return shard

    def iter_shards(self, *, want: Sequence[str] = ("pooled", "features", "tokens"), hook: str | None = None,
                    verify: bool = True) -> Iterator[Shard]:
        """Shards in dataset order, one in memory at a time; ``want`` picks the parts read."""
        self._require_complete()
        for i, _ in self.shard_entries():
            yield self.read_shard(i, want=want, hook=hook, verify=verify)

    def verify(self) -> None:
        """Check every shard and the row index against the manifest; `CacheError` names each bad file."""
        self._require_complete()
        bad = []
        for _, entry in self.shard_entries():
            path = self.path / entry["file"]
            if not path.is_file():
                bad.append(f"{entry['file']} (missing)")
            elif path.stat().st_size != entry["bytes"]:
                bad.append(f"{entry['file']} (truncated: {path.stat().st_size} of {entry['bytes']} bytes)")
            elif file_sha256(path) != entry["sha256"]:
                bad.append(f"{entry['file']} (sha256 differs)")
        entry = self.manifest["index"]
        path = self.path / entry["file"]
        if not path.is_file() or file_sha256(path) != entry["sha256"]:
            bad.append(f"{entry['file']} (missing or sha256 differs)")
        if bad:
            raise CacheError(f"the cache {self.path} has corrupt files: {', '.join(bad)}. Delete them and rerun the "
                             "cache job with the same arguments to recapture them.")

    # -- whole matrices ----------------------------------------------------------------------------------------
    def _resolve(self, hook: str | None, use: str) -> tuple[str, str]:
        if use == "auto":
            use = "sae" if self.has_sae else "activations"
        if use not in ("sae", "activations"):
            raise PersonasError(f"use={use!r}; expected 'sae', 'activations' or 'auto'.")
        if use == "sae":
            if not self.has_sae:
                raise CacheError(f"the cache {self.path} holds no SAE codes (made without an SAE); use='activations'.")
            sae_hook = self.manifest["sae_hook"]
            if hook is not None and hook != sae_hook:
                raise PersonasError(f"hook={hook!r} but the cache's SAE codes are of {sae_hook!r}.")
            return sae_hook, use
        hook = hook or self.hooks[0]
        if hook not in self.hooks:
            raise PersonasError(f"hook={hook!r} is not in the cache; it holds {self.hooks}.")
        return hook, use

    def load_features(self, *, hook: str | None = None, use: str = "auto"):
        """The whole pooled matrix: SAE codes (CSR, responses x latents) or activations (dense [N, d_model])."""
        import scipy.sparse

        hook, use = self._resolve(hook, use)
        parts = []
        for shard in self.iter_shards(want=("features",) if use == "sae" else ("pooled",), hook=hook):
            parts.append(shard.features if use == "sae" else shard.pooled[hook])
        return scipy.sparse.vstack(parts, format="csr") if use == "sae" else np.concatenate(parts)

    def token_codes(self, row: int) -> tuple[np.ndarray, scipy.sparse.csr_matrix]:
        """(token ids, per-token SAE codes) of one response, reading only its shard."""
        if not self.has_tokens:
            raise CacheError(f"the cache {self.path} holds no per-token codes (made without an SAE or tokens=False).")
        shard_index = int(self.index["shard"].iloc[row])
        shard = self.read_shard(shard_index, want=("tokens",))
        return shard.token_codes.response(row - shard.start)


def open_cache(path: str | os.PathLike) -> ActivationCache:
    """Open a cache folder written by `build_cache` / ``personas cache``."""
    return ActivationCache(path)


# ============================================================================================ ranking


def rank_cache(
    cache: str | os.PathLike | ActivationCache,
    *,
    hook: str | None = None,
    use: str = "auto",
    key: str = "auroc",
    alpha: float = 0.05,
    min_frac_active: float = 0.0,
    groups: bool = True,
    ci_level: float = 0.95,
    exact: bool = True,
    bins: int = 64,
    engine: str = "local",
    ray_address: str | None = None,
    num_workers: int | None = None,
    verify: bool = True,
) -> Ranking:
    """Rank features from a cache without loading the model, streaming its shards.

    Args:
        use: ``"sae"`` (pooled SAE codes), ``"activations"`` (pooled activations at ``hook``), or ``"auto"``.
        groups: stratify by the question (``group``) when the cache has groups.
        exact: True: exact statistics (`StreamingRanker`, equal to `rank_features` on the whole matrix; memory
            grows with the number of non-zero values). False: `BinnedRanker`, histogram AUROC in memory independent
            of the number of responses (column ``auroc_max_err`` bounds the AUROC error).
        engine: ``"local"`` or ``"ray"`` (shards scored in parallel; the cache folder must be readable by every
            worker, e.g. a shared file system); both give identical results.
    """
    from personas.engines import get_engine
    from personas.engines.base import ScoreTask

    cache = cache if isinstance(cache, ActivationCache) else open_cache(cache)
    hook, use = cache._resolve(hook, use)
    cache._require_complete()
    group_values = cache.groups if groups else None
    if not exact:
        return BinnedRanker(bins).fit_cache(cache, hook=hook, use=use, groups=group_values, key=key, alpha=alpha,
                                            min_frac_active=min_frac_active, ci_level=ci_level, verify=verify)
    tasks = [
        ScoreTask(i, str(cache.path / e["file"]), e["sha256"], e["bytes"],
                  None if group_values is None else group_values[e["rows"][0]:e["rows"][1]], hook, use, verify)
        for i, e in cache.shard_entries()
    ]
    with get_engine(engine, address=ray_address, num_workers=num_workers) as eng:
        ranker = eng.score(tasks)
    ranking = ranker.result(key=key, alpha=alpha, min_frac_active=min_frac_active, ci_level=ci_level)
    ranking.meta["cache"] = _rank_meta(cache, hook, use)
    return ranking


def _rank_meta(cache: ActivationCache, hook: str, use: str) -> dict[str, Any]:
    return {"path": str(cache.path), "hook": hook, "use": use, "model": cache.fingerprint["model"],
            "sae": cache.manifest.get("sae"), "dataset_hash": cache.fingerprint["dataset_hash"]}


class BinnedRanker:
    """Feature ranking in memory that does not grow with the number of responses (two passes over shards).

    Pass 1 finds each feature's range of non-zero values and its moments (exact). Pass 2 counts values per
    (feature, group, bin, class) in ``bins`` bins over that range, with exact zeros in a slot of their own (SAE
    codes are mostly exactly zero). Ties within a bin are treated as ties, so the AUROC is off by at most
    ``auroc_max_err`` = half the share of (misaligned, aligned) pairs that fall in the same non-zero bin; p-values
    and DeLong intervals are computed from the same counts with the formulas of `personas.scoring`. Memory:
    ``n_features x n_groups x (bins + 1) x 2`` int64 counts.
    """

    def __init__(self, bins: int = 64) -> None:
        if bins < 2:
            raise PersonasError(f"bins={bins} must be at least 2.")
        self.bins = bins

    def fit_cache(self, cache: ActivationCache, *, hook: str, use: str, groups: np.ndarray | None, key: str,
                  alpha: float, min_frac_active: float, ci_level: float, verify: bool = True) -> Ranking:
        import pandas as pd

        from personas.scoring import build_ranking, check_rank_args, metrics_from_stats

        check_rank_args(key, alpha, min_frac_active, ci_level)
        want = ("features",) if use == "sae" else ("pooled",)
        y_all = cache.labels
        if groups is not None:
            gcodes, uniques = pd.factorize(groups)
            n_groups = len(uniques)
        else:
            gcodes, n_groups = np.zeros(len(y_all), dtype=np.int64), 1

        def coo(shard: Shard) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
            x = shard.features if use == "sae" else shard.pooled[hook]
            if use == "sae":
                rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
                cols, vals = x.indices.astype(np.int64), x.data.astype(np.float64)
            else:
                rows, cols = np.nonzero(x)
                vals = x[rows, cols].astype(np.float64)
            keep = vals != 0
            return rows[keep] + shard.start, cols[keep].astype(np.int64), vals[keep], int(x.shape[1])

        f = None
        for shard in cache.iter_shards(want=want, hook=hook, verify=verify):
            rows, cols, vals, width = coo(shard)
            if f is None:
                f = width
                lo = np.full(f, np.inf)
                hi = np.full(f, -np.inf)
                moments = {k: np.zeros(f) for k in ("sum_pos", "sum_neg", "sumsq_pos", "sumsq_neg")}
                moments.update(nnz_pos=np.zeros(f, np.int64), nnz_neg=np.zeros(f, np.int64))
            if not np.isfinite(vals).all():
                raise PersonasError(f"shard {shard.index} holds non-finite values; the cache is unusable for ranking.")
            np.minimum.at(lo, cols, vals)
            np.maximum.at(hi, cols, vals)
            lab = y_all[rows].astype(bool)
            for name, sel in (("pos", lab), ("neg", ~lab)):
                moments[f"sum_{name}"] += np.bincount(cols[sel], vals[sel], minlength=f)
                moments[f"sumsq_{name}"] += np.bincount(cols[sel], vals[sel] ** 2, minlength=f)
                moments[f"nnz_{name}"] += np.bincount(cols[sel], minlength=f)
        assert f is not None
        lo = np.where(np.isfinite(lo), lo, 0.0)
        hi = np.where(np.isfinite(hi), hi, 0.0)
        b = self.bins
        zero_slot = np.where(lo >= 0, 0, np.where(hi <= 0, b, np.clip(np.round(b * -lo / np.where(hi > lo, hi - lo, 1)),
                                                                      1, b - 1))).astype(np.int64)
        slots = b + 1
        counts = np.zeros(f * n_groups * slots * 2, dtype=np.int64)
        for shard in cache.iter_shards(want=want, hook=hook, verify=verify):
            rows, cols, vals, _ = coo(shard)
            z = zero_slot[cols]
            with np.errstate(divide="ignore", invalid="ignore"):
                neg_bin = np.floor((vals - lo[cols]) / -lo[cols] * z)
                pos_bin = z + 1 + np.floor(vals / hi[cols] * (b - z))
            slot = np.where(vals < 0, np.clip(neg_bin, 0, np.maximum(z - 1, 0)), np.clip(pos_bin, z + 1, b))
            slot = np.nan_to_num(slot).astype(np.int64)
            flat = ((cols * n_groups + gcodes[rows]) * slots + slot) * 2 + y_all[rows].astype(np.int64)
            keys, hits = np.unique(flat, return_counts=True)  # no temporary of the size of counts
            counts[keys] += hits
        counts = counts.reshape(f, n_groups, slots, 2)
        # exact zeros: every response of (group, class) not counted in a non-zero slot
        per_gc = np.zeros((n_groups, 2), dtype=np.int64)
        np.add.at(per_gc, (gcodes, y_all.astype(np.int64)), 1)
        zeros = per_gc[None] - counts.sum(axis=2)
        counts[np.arange(f), :, zero_slot, :] += zeros

        n1 = int(y_all.sum())
        n0 = len(y_all) - n1
        rank: dict[str, np.ndarray] = {}
        max_err = np.zeros(f)
        step = max(1, (1 << 20) // (n_groups * slots))  # features per block of the final computation
        for j0 in range(0, f, step):
            j1 = min(f, j0 + step)
            block = counts[j0:j1].astype(np.float64)
            pooled = block.sum(axis=1)
            parts = _hist_rank_stats(pooled)
            pooled[np.arange(j1 - j0), zero_slot[j0:j1], :] = 0.0
            max_err[j0:j1] = 0.5 * (pooled[..., 0] * pooled[..., 1]).sum(axis=1) / (n1 * n0)
            if groups is not None:
                parts.update(_hist_group_stats(block, per_gc.astype(np.float64)))
            for name, value in parts.items():
                rank.setdefault(name, np.zeros(f))[j0:j1] = value
        metrics = metrics_from_stats(moments, rank, n1, n0, ci_level, groups is not None)
        ranking = build_ranking(metrics, n1, n0, key=key, alpha=alpha, min_frac_active=min_frac_active,
                                 feature_names=None, ci_level=ci_level,
                                 n_groups=n_groups if groups is not None else None)
        ranking["auroc_max_err"] = max_err[ranking["feature"].to_numpy()]
        ranking.meta["binned"] = {"bins": b, "max_auroc_err": float(max_err.max()) if f else 0.0}
        ranking.meta["methods"]["auroc"] = (f"AUROC from {b}-bin histograms per feature (exact zeros apart); "
                                            "values within a bin count as ties; error <= auroc_max_err")
        ranking.meta["cache"] = _rank_meta(cache, hook, use)
        return ranking


def _hist_rank_stats(h: np.ndarray) -> dict[str, np.ndarray]:
    """U, tie term and DeLong placement sums from class counts per ordered slot, ``h[..., slot, class]``."""
    neg, pos = h[..., 0], h[..., 1]
    pz = np.cumsum(neg, axis=-1) - neg + 0.5 * neg
    qz = pos.sum(axis=-1, keepdims=True) - np.cumsum(pos, axis=-1) + 0.5 * pos
    c = pos + neg
    return {"u": (pos * pz).sum(-1), "sp2": (pos * pz * pz).sum(-1), "sq2": (neg * qz * qz).sum(-1),
            "t": (c**3 - c).sum(-1)}


def _hist_group_stats(counts: np.ndarray, per_gc: np.ndarray) -> dict[str, np.ndarray]:
    """The stratified statistics of `personas.scoring` (group AUROC, van Elteren) from per-group histograms."""
    from personas.scoring import delong_variance

    s = _hist_rank_stats(counts)  # [f, g]
    n0g, n1g = per_gc[:, 0], per_gc[:, 1]
    var = delong_variance(s["u"], s["sp2"], s["sq2"], n1g[None, :], n0g[None, :])
    pairs = n1g * n0g
    ng = n1g + n0g
    valid = pairs > 0
    w = np.where(valid, 1.0 / (ng + 1.0), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        tie_frac = np.where(valid, s["t"] / np.where(valid, ng * (ng - 1.0), 1.0), 0.0)
    f = counts.shape[0]
    return {
        "g_u": s["u"].sum(axis=1),
        "g_pairs": np.full(f, pairs.sum()),
        "g_var": (var * pairs**2).sum(axis=1),
        "ve_num": ((s["u"] - pairs / 2.0) * w).sum(axis=1),
        "ve_var": (pairs / 12.0 * ((ng + 1.0) - tie_frac) * w * w).sum(axis=1),
    }


# ============================================================================================ CLI


def register_cli(subparsers: Any) -> None:
    """``personas cache DATA --out CACHE ...`` and ``personas cache-info CACHE [--verify]``."""
    from personas.cli import add_config_options

    p = subparsers.add_parser("cache", help="capture activations (and SAE codes) into a sharded, resumable cache")
    p.add_argument("data", help="responses: JSONL, CSV or Parquet file")
    p.add_argument("--out", required=True, help="cache folder (an interrupted job in it is resumed)")
    p.add_argument("--hook", action="append", dest="hooks", metavar="HOOK",
                   help="hook name to read; repeat for several sites (one forward pass). Default: the SAE's hook")
    p.add_argument("--max-shards", type=int, default=None, help="stop after this many new shards (resume later)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_options(p, CaptureConfig, skip=("hook",))
    add_config_options(p, SAEConfig)
    add_config_options(p, CacheConfig)
    add_config_options(p, DataConfig)
    p.set_defaults(func=_cmd_cache)

    p = subparsers.add_parser("cache-info", help="describe a cache and optionally verify every shard's checksum")
    p.add_argument("cache", help="cache folder")
    p.add_argument("--verify", action="store_true", help="check the sha256 of every shard and of the index")
    p.set_defaults(func=_cmd_cache_info)


def _cmd_cache(args: Any) -> int:
    from personas.cli import config_from_args

    capture_cfg = config_from_args(CaptureConfig, args)
    sae_cfg = config_from_args(SAEConfig, args)
    result = build_cache(
        args.data,
        args.out,
        capture=capture_cfg,
        hooks=args.hooks,
        sae=sae_cfg,
        cache=config_from_args(CacheConfig, args),
        data_config=config_from_args(DataConfig, args),
        progress=not args.quiet,
        max_shards=args.max_shards,
        command=" ".join(["personas", *sys.argv[1:]]),
    )
    _print_info(result)
    if not result.complete:
        print("incomplete: rerun the same command to capture the remaining shards")
    return 0


def _cmd_cache_info(args: Any) -> int:
    cache = open_cache(args.cache)
    _print_info(cache)
    if args.verify:
        cache.verify()
        print(f"verified {len(cache.manifest['shards'])} shards and the row index: all checksums match")
    return 0


def _print_info(cache: ActivationCache) -> None:
    m = cache.manifest
    sae = m.get("sae") or {}
    print(f"cache {cache.path} | model {m['fingerprint']['model']} | hooks {', '.join(cache.hooks)} | "
          f"SAE {sae.get('spec', 'none')}{'' if not sae else ' (' + str(sae.get('d_sae')) + ' latents)'}")
    done = len(m["shards"])
    size = sum(e["bytes"] for e in m["shards"].values())
    print(f"responses {cache.n_rows} | shards {done}/{cache.n_shards} | {size / 2**20:.1f} MiB | "
          f"{'complete' if cache.complete else 'incomplete'}")


__all__ = [
    "ActivationCache",
    "BinnedRanker",
    "CacheConfig",
    "Shard",
    "build_cache",
    "open_cache",
    "rank_cache",
    "read_shard_file",
]
