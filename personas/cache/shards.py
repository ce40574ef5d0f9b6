"""The cache's shard format: one safetensors file per shard of responses, deterministic bytes, checked on read.

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

No pickle anywhere; shard files hold no timestamps, so a resumed cache is byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from personas.capturing import Capture, TokenCodes
from personas.errors import CacheError

FORMAT = "personas.cache.v1"




INDEX_FILE = "index.parquet"


SHARD_PATTERN = "shard-{:05d}.safetensors"


_SHARD_RE = re.compile(r"^shard-(\d{5})\.safetensors$")


_META_KEY = "personas"  # one metadata key: safetensors serializes its metadata map in no fixed order


_HASH_CHUNK = 1 << 22


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
