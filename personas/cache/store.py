"""Reading a cache: `open_cache` -> `ActivationCache`, and `rank_cache`, which ranks without loading the model.

`ActivationCache` gives the manifest, the row index (``index.parquet``: row, id, group, label, n_tokens,
shard), the shards one at a time (``.iter_shards()``, each checked against the manifest's size and sha256),
``.load_features()``, ``.token_codes(row)`` and ``.verify()``. `rank_cache` streams the shards: exact
(`personas.scoring.StreamingRanker`, equal to `rank_features` on the whole matrix) or, with ``exact=False``, in
memory that does not grow with the responses (`personas.cache.binned.BinnedRanker`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from personas.artifacts import MANIFEST_FILE
from personas.cache.binned import rank_binned
from personas.cache.engines import get_engine
from personas.cache.engines.base import ScoreTask
from personas.cache.shards import FORMAT, Shard, file_sha256, read_shard_file
from personas.errors import CacheError, PersonasError

if TYPE_CHECKING:
    import pandas as pd
    import scipy.sparse

    from personas.scoring.ranking import Ranking

logger = logging.getLogger(__name__)










class ActivationCache:
    """A cache folder written by `build_cache`: its manifest, row index, and shards read one at a time."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not (self.path / MANIFEST_FILE).is_file():
            raise CacheError(f"{self.path} has no {MANIFEST_FILE}; expected a folder written by `personas cache`.")
        manifest = read_manifest(self.path)
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

    cache = cache if isinstance(cache, ActivationCache) else open_cache(cache)
    hook, use = cache._resolve(hook, use)
    cache._require_complete()
    group_values = cache.groups if groups else None
    if not exact:
        ranking = rank_binned(cache, hook=hook, use=use, groups=group_values, key=key, alpha=alpha,
                              min_frac_active=min_frac_active, ci_level=ci_level, bins=bins, verify=verify)
        ranking.meta["cache"] = _rank_meta(cache, hook, use)
        return ranking
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






def read_manifest(out: Path) -> dict[str, Any] | None:
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
