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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from personas.capturing import Capture, TokenCodes
from personas.errors import CacheError

#: The cache format written into every manifest and shard.
FORMAT = "personas.cache.v1"
#: The row index of a cache (row, id, group, label, n_tokens, shard).
INDEX_FILE = "index.parquet"
#: Shard file names: ``shard-00000.safetensors``, ...
SHARD_PATTERN = "shard-{:05d}.safetensors"

_META_KEY = "personas"  # one metadata key: safetensors serializes its metadata map in no fixed order
_HASH_CHUNK = 1 << 22
_FIX = "Delete the file and rerun the cache job with the same arguments to recapture it."


def check_file_name(name: Any, key: str, manifest: str | os.PathLike) -> str:
    """``name`` if it is a plain file name inside the cache folder; else a `CacheError` naming the manifest key.

    A manifest stores file names only: a path with a folder (``../x``, ``/abs/x``, ``sub/x``) would let a manifest
    read data from outside its cache.
    """
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
            or "\0" in name or Path(name).is_absolute() or Path(name).name != name):
        raise CacheError(
            f"{manifest}: key {key!r} is {name!r}; expected a plain file name inside the cache folder (no folder, "
            "no '..', not absolute). The manifest was edited or is corrupt: delete the cache folder and rerun the "
            "cache job."
        )
    return name


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
    expect: tuple[int, int, int] | None = None,
) -> Shard:
    """Read a shard file and check its contents; `CacheError` naming the file on any fault.

    With ``verify``, its size and sha256 are checked against ``size`` / ``sha256`` first. ``expect`` =
    ``(shard, start, stop)`` is what the manifest says the file holds; the file's own metadata must agree. Every
    tensor read is checked for its length, and sparse codes for their index ranges, so a tampered file never
    reaches the statistics.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CacheError(f"shard {path} is missing; rerun the cache job with the same arguments to recapture it.")
    if verify:
        actual_size = path.stat().st_size
        if size is not None and actual_size != size:
            raise CacheError(f"shard {path} is truncated or corrupt: {actual_size} bytes, the manifest says {size}. "
                             + _FIX)
        if sha256 is not None and file_sha256(path) != sha256:
            raise CacheError(f"shard {path} is corrupt: its sha256 differs from the manifest's. " + _FIX)
    try:
        with safe_open(str(path), framework="np") as fh:
            meta = _shard_meta(path, fh.metadata(), expect)
            reader = _Reader(path, fh, set(fh.keys()))
            start, stop = meta["rows"]
            n, width = stop - start, meta["n_features"]
            rows = reader.get("rows", (n,))
            if not np.array_equal(rows, np.arange(start, stop)):
                raise CacheError(f"shard {path}: its 'rows' tensor is not {start}..{stop - 1} as its metadata says. "
                                 + _FIX)
            labels = reader.get("labels", (n,))
            if not np.isin(labels, (0, 1)).all():
                raise CacheError(f"shard {path}: labels {np.unique(labels)[:5].tolist()}; expected 0 or 1. " + _FIX)
            n_tokens = reader.get("n_tokens", (n,))
            pooled = {}
            if "pooled" in want:
                for h in meta["hooks"]:
                    if hook is None or h == hook:
                        pooled[h] = reader.get(f"pooled.{h}", (n, None))
            features = None
            if "features" in want and "features.indptr" in reader.keys:
                features = scipy.sparse.csr_matrix(reader.csr("features", n, width), shape=(n, width))
            token_codes = None
            if "tokens" in want and "tokens.indptr" in reader.keys:
                t = meta["n_token_rows"]
                codes = scipy.sparse.csr_matrix(reader.csr("tokens", t, width), shape=(t, width))
                offsets = reader.get("tokens.offsets", (n + 1,))
                if offsets[0] != 0 or offsets[-1] != t or (np.diff(offsets) < 0).any():
                    raise CacheError(f"shard {path}: tokens.offsets do not split its {t} token rows into {n} "
                                     "responses. " + _FIX)
                token_codes = TokenCodes(codes, offsets, reader.get("tokens.token_ids", (t,)))
            return Shard(meta["shard"], start, stop, labels, n_tokens, pooled, features, token_codes)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        if isinstance(exc, CacheError):
            raise
        raise CacheError(
            f"shard {path} cannot be read ({type(exc).__name__}: {exc}); it is corrupt or truncated. " + _FIX
        ) from exc


def check_shard_against_index(shard: Shard, labels: np.ndarray, n_tokens: np.ndarray | None,
                              path: str | os.PathLike) -> None:
    """A shard's labels (and token counts) must equal the row index's for its rows (`CacheError` otherwise)."""
    pairs = [("labels", shard.labels, labels)] + ([] if n_tokens is None else [("n_tokens", shard.n_tokens, n_tokens)])
    for name, ours, theirs in pairs:
        ours, theirs = np.asarray(ours, dtype=np.int64), np.asarray(theirs, dtype=np.int64)
        if ours.shape != theirs.shape or not np.array_equal(ours, theirs):
            differ = int((ours != theirs).sum()) if ours.shape == theirs.shape else len(theirs)
            raise CacheError(
                f"shard {path}: its {name} differ from the row index's for {differ} of rows {shard.start}:{shard.stop}; "
                "the shard or the index was swapped or edited. Delete the cache folder and rerun the cache job."
            )


def _shard_meta(path: Path, metadata: dict[str, str] | None, expect: tuple[int, int, int] | None) -> dict[str, Any]:
    """The shard's own metadata, checked for its keys and types, and against what the manifest ``expect``s."""
    meta = json.loads((metadata or {}).get(_META_KEY, "null"))
    ok = (
        isinstance(meta, dict) and meta.get("format") == FORMAT and _is_int(meta.get("shard"))
        and isinstance(meta.get("rows"), list) and len(meta["rows"]) == 2 and all(map(_is_int, meta["rows"]))
        and 0 <= meta["rows"][0] <= meta["rows"][1]
        and isinstance(meta.get("hooks"), list) and all(isinstance(h, str) for h in meta["hooks"])
        and (meta.get("n_features") is None or (_is_int(meta["n_features"]) and meta["n_features"] > 0))
        and _is_int(meta.get("n_token_rows")) and meta["n_token_rows"] >= 0
    )
    if not ok:
        raise CacheError(
            f"shard {path} has no valid {FORMAT} metadata (got {_short(meta)}); expected format, shard, rows, hooks, "
            "n_features and n_token_rows. " + _FIX
        )
    if expect is not None and (meta["shard"], *meta["rows"]) != tuple(expect):
        raise CacheError(
            f"shard {path} holds shard {meta['shard']}, rows {meta['rows'][0]}:{meta['rows'][1]} (its own metadata); "
            f"the manifest lists it as shard {expect[0]}, rows {expect[1]}:{expect[2]}. The manifest or the file was "
            "edited or swapped: delete the cache folder and rerun the cache job."
        )
    return meta


class _Reader:
    """Tensors of an open shard, each checked for its shape (`CacheError` naming the file and the tensor)."""

    def __init__(self, path: Path, fh: Any, keys: set[str]) -> None:
        self.path, self.fh, self.keys = path, fh, keys

    def get(self, name: str, shape: tuple[int | None, ...]) -> np.ndarray:
        if name not in self.keys:
            raise CacheError(f"shard {self.path} has no tensor {name!r}; it is not a complete {FORMAT} shard. " + _FIX)
        value = self.fh.get_tensor(name)
        if value.ndim != len(shape) or any(
            want is not None and got != want for got, want in zip(value.shape, shape, strict=True)
        ):
            raise CacheError(f"shard {self.path}: tensor {name!r} has shape {tuple(value.shape)}; expected "
                             f"{tuple('any' if s is None else s for s in shape)}. " + _FIX)
        return value

    def csr(self, prefix: str, n_rows: int, width: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(values, indices, indptr) of a CSR matrix with ``n_rows`` rows and ``width`` columns, checked."""
        if width is None:
            raise CacheError(f"shard {self.path} holds {prefix} codes but no n_features in its metadata. " + _FIX)
        indptr = self.get(f"{prefix}.indptr", (n_rows + 1,))
        nnz = int(indptr[-1]) if indptr.size else 0
        indices = self.get(f"{prefix}.indices", (None,))
        values = self.get(f"{prefix}.values", (indices.shape[0],))
        if indptr[0] != 0 or nnz != indices.shape[0] or (np.diff(indptr) < 0).any():
            raise CacheError(f"shard {self.path}: {prefix}.indptr does not describe its {indices.shape[0]} values "
                             f"(starts at {indptr[0]}, ends at {nnz}, must not decrease). " + _FIX)
        if indices.size and (indices.min() < 0 or indices.max() >= width):
            raise CacheError(
                f"shard {self.path}: {prefix}.indices range {int(indices.min())}..{int(indices.max())}; expected "
                f"latent indices in 0..{width - 1} (n_features {width}). " + _FIX
            )
        return values, indices, indptr


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
