"""Reading a cache: `open_cache` -> `ActivationCache`, and `rank_cache`, which ranks without loading the model.

`ActivationCache` gives the manifest, the row index (``index.parquet``: row, id, group, label, n_tokens,
shard), the shards one at a time (``.iter_shards()``, each checked against the manifest's size and sha256),
``.load_features()``, ``.token_codes(row)`` and ``.verify()``. `rank_cache` streams the shards: exact
(`personas.scoring.StreamingRanker`, equal to `rank_features` on the whole matrix; with ``spill_budget``, the same
statistics in bounded memory, `personas.cache.spill.SpillRanker`) or, with ``exact=False``, histogram AUROCs in
memory that does not grow with the responses (`personas.cache.binned.BinnedRanker`).

Nothing read from a cache folder is trusted: `read_manifest` checks every key, type and file name of the manifest
(file names only, never paths), `read_index` checks the row index against the manifest, and each shard is checked
against its manifest entry (sha256, rows) and the index (labels, token counts) as it is read.
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
from personas.cache.shards import (
    FORMAT,
    Shard,
    check_file_name,
    check_shard_against_index,
    file_sha256,
    read_shard_file,
)
from personas.cache.spill import SpillRanker
from personas.errors import CacheError, PersonasError
from personas.scoring import has_mixed_group

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
        """One row per response: row, id, group, label, n_tokens, shard (checked against the manifest)."""
        if self._index is None:
            self._require_complete()
            entry = self.manifest["index"]
            path = self.path / entry["file"]
            if not path.is_file() or path.stat().st_size != entry["bytes"] or file_sha256(path) != entry["sha256"]:
                raise CacheError(f"the row index {path} is missing or corrupt; rerun the cache job with the same "
                                 "arguments to rewrite it.")
            self._index = read_index(path, self.manifest)
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
        """One shard, checked against the manifest (file, rows) and, once the cache is complete, the row index."""
        entry = self.manifest["shards"].get(str(index))
        if entry is None:
            raise CacheError(f"shard {index} is not in the cache {self.path} ({self.n_shards} shards, "
                             f"{len(self.manifest['shards'])} complete).")
        shard = read_shard_file(self.path / entry["file"], sha256=entry["sha256"], size=entry["bytes"],
                                verify=verify, want=want, hook=hook, expect=(index, *entry["rows"]))
        if self.complete:
            rows = self.index.iloc[shard.start:shard.stop]
            check_shard_against_index(shard, rows["label"].to_numpy(), rows["n_tokens"].to_numpy(),
                                      self.path / entry["file"])
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
        bad = bad_files(self.path, self.manifest)
        if bad:
            raise CacheError(f"the cache {self.path} has corrupt files: {', '.join(bad)}. Delete them and rerun the "
                             "cache job with the same arguments to recapture them.")
        for i, _ in self.shard_entries():  # contents: metadata, shapes, index ranges, labels against the index
            self.read_shard(i, want=("features", "tokens"), verify=False)

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
        if not 0 <= int(row) < self.n_rows:
            raise PersonasError(f"row={row} is out of range; the cache holds rows 0..{self.n_rows - 1}.")
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
    spill_budget: int | None = None,
) -> Ranking:
    """Rank features from a cache without loading the model, streaming its shards.

    Args:
        use: ``"sae"`` (pooled SAE codes), ``"activations"`` (pooled activations at ``hook``), or ``"auto"``.
        groups: stratify by the question (``group``) when the cache has groups.
        exact: True: exact statistics (`StreamingRanker`, equal to `rank_features` on the whole matrix; memory
            grows with the number of non-zero values). False: `BinnedRanker`, histogram AUROC in memory independent
            of the number of responses (column ``auroc_max_err`` bounds the AUROC error).
        spill_budget: with ``exact``, hold at most this many non-zero values in memory and spill the rest to a
            temporary folder (`personas.cache.spill.SpillRanker`): the same exact statistics in memory that does
            not grow with the responses (local engine only).
        engine: ``"local"`` or ``"ray"`` (shards scored in parallel; the cache folder must be readable by every
            worker, e.g. a shared file system); both give identical results.
    """

    cache = cache if isinstance(cache, ActivationCache) else open_cache(cache)
    hook, use = cache._resolve(hook, use)
    cache._require_complete()
    group_values = cache.groups if groups else None
    if group_values is not None and not has_mixed_group(group_values, cache.labels):
        logger.warning("no question has both misaligned and aligned responses: ranking without stratification")
        group_values = None
    if exact and spill_budget is not None:
        if engine != "local":
            raise PersonasError(f"spill_budget={spill_budget} ranks in this process; it cannot run on engine={engine!r}. "
                                "Drop one of them.")
        ranking = SpillRanker(spill_budget).fit_cache(cache, hook=hook, use=use, groups=group_values, key=key,
                                                      alpha=alpha, min_frac_active=min_frac_active, ci_level=ci_level,
                                                      verify=verify)
        ranking.meta["cache"] = _rank_meta(cache, hook, use)
        return ranking
    if not exact:
        ranking = rank_binned(cache, hook=hook, use=use, groups=group_values, key=key, alpha=alpha,
                              min_frac_active=min_frac_active, ci_level=ci_level, bins=bins, verify=verify)
        ranking.meta["cache"] = _rank_meta(cache, hook, use)
        return ranking
    labels = cache.labels
    tasks = [
        ScoreTask(i, str(cache.path / e["file"]), e["sha256"], e["bytes"],
                  None if group_values is None else group_values[e["rows"][0]:e["rows"][1]], hook, use, verify,
                  rows=(e["rows"][0], e["rows"][1]), labels=labels[e["rows"][0]:e["rows"][1]])
        for i, e in cache.shard_entries()
    ]
    with get_engine(engine, address=ray_address, num_workers=num_workers) as eng:
        ranker = eng.score(tasks)
    ranking = ranker.result(key=key, alpha=alpha, min_frac_active=min_frac_active, ci_level=ci_level)
    ranking.meta["cache"] = _rank_meta(cache, hook, use)
    return ranking


def cache_covariate_correlation(cache: ActivationCache, covariate: Any, *, hook: str | None = None,
                                use: str = "auto", verify: bool = True) -> np.ndarray:
    """Pearson correlation of every feature with one covariate per response (e.g. ``index["n_tokens"]``), streamed.

    Equal, up to summation order, to `personas.scoring.covariate_correlation` on the whole matrix, in memory of one
    shard plus three float64 sums per feature; constant features get 0.
    """
    hook, use = cache._resolve(hook, use)
    z = np.asarray(covariate, dtype=np.float64).ravel()
    if z.shape[0] != cache.n_rows:
        raise PersonasError(f"covariate has {z.shape[0]} values for {cache.n_rows} responses; expected one per response.")
    zc = z - z.mean()
    sums = squares = cross = None
    for shard in cache.iter_shards(want=("features",) if use == "sae" else ("pooled",), hook=hook, verify=verify):
        x = shard.features if use == "sae" else shard.pooled[hook]
        x = x.astype(np.float64)
        part = (np.asarray(x.sum(axis=0)).ravel(), np.asarray(x.multiply(x).sum(axis=0)).ravel() if use == "sae"
                else (x**2).sum(axis=0), np.asarray(x.T @ zc[shard.start:shard.stop]).ravel())
        sums, squares, cross = part if sums is None else (sums + part[0], squares + part[1], cross + part[2])
    n, z_norm = len(z), np.sqrt((zc**2).sum())
    x_norm = np.sqrt(np.maximum(squares - sums**2 / n, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = cross / (x_norm * z_norm)
    return np.where((x_norm > 1e-12 * np.maximum(1.0, np.abs(sums) / n)) & (z_norm > 0), np.clip(r, -1, 1), 0.0)


def _rank_meta(cache: ActivationCache, hook: str, use: str) -> dict[str, Any]:
    return {"path": str(cache.path), "hook": hook, "use": use, "model": cache.fingerprint["model"],
            "sae": cache.manifest.get("sae"), "dataset_hash": cache.fingerprint["dataset_hash"]}


def bad_files(path: Path, manifest: dict[str, Any]) -> list[str]:
    """Shard and index files of a manifest that are missing, truncated or whose sha256 differs, in words."""
    bad = []
    entries = [entry for _, entry in sorted(manifest["shards"].items(), key=lambda kv: int(kv[0]))]
    if manifest.get("index") is not None:
        entries.append(manifest["index"])
    for entry in entries:
        file = path / entry["file"]
        if not file.is_file():
            bad.append(f"{entry['file']} (missing)")
        elif file.stat().st_size != entry["bytes"]:
            bad.append(f"{entry['file']} (truncated: {file.stat().st_size} of {entry['bytes']} bytes)")
        elif file_sha256(file) != entry["sha256"]:
            bad.append(f"{entry['file']} (sha256 differs)")
    return bad


INDEX_COLUMNS = ["row", "id", "group", "label", "n_tokens", "shard"]


def read_index(path: Path, manifest: dict[str, Any]) -> pd.DataFrame:
    """Read ``index.parquet`` and check it against the manifest: one row per response, labels, groups, shards."""
    import pandas as pd
    import pyarrow as pa

    fix = "Delete it and rerun the cache job with the same arguments to rewrite it."
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise CacheError(f"the row index {path} is not a Parquet file ({type(exc).__name__}: {exc}). {fix}") from exc
    n = manifest["n_rows"]
    if list(frame.columns) != INDEX_COLUMNS or len(frame) != n:
        raise CacheError(f"the row index {path} has columns {list(frame.columns)} and {len(frame)} rows; expected "
                         f"{INDEX_COLUMNS} and {n} rows. {fix}")
    size = manifest["fingerprint"]["shard_size"]
    labels = frame["label"].to_numpy()
    data = manifest["data"]
    groups_given = frame["group"].notna()
    problems = [
        (not np.array_equal(frame["row"].to_numpy(), np.arange(n)), f"its rows are not 0..{n - 1}"),
        (not np.array_equal(frame["shard"].to_numpy(), np.arange(n) // size),
         f"its shard column does not match shards of {size} responses"),
        (not np.isin(labels, (0, 1)).all(), "its labels are not 0 or 1"),
        (data.get("n_misaligned") is not None and int((labels == 1).sum()) != data["n_misaligned"],
         f"it has {int((labels == 1).sum())} misaligned responses, the manifest {data.get('n_misaligned')}"),
        (bool(groups_given.any()) != bool(manifest["has_groups"]) or (manifest["has_groups"] and not groups_given.all()),
         f"its groups do not match the manifest's has_groups={manifest['has_groups']}"),
        (manifest["has_groups"] and data.get("n_groups") is not None
         and frame["group"].nunique() != data["n_groups"],
         f"it has {frame['group'].nunique()} groups, the manifest {data.get('n_groups')}"),
        ((frame["n_tokens"].to_numpy() < 0).any(), "it has negative token counts"),
    ]
    for failed, what in problems:
        if failed:
            raise CacheError(f"the row index {path} does not match the manifest: {what}. {fix}")
    return frame


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The checked manifest of the cache folder ``out``; None for a new or empty folder (`CacheError` otherwise)."""
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
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CacheError(f"{manifest_path} cannot be read ({exc}); delete the folder to start the cache over.") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise CacheError(f"{manifest_path} has format {found!r}; expected {FORMAT!r}.")
    check_manifest(manifest, manifest_path)
    return manifest


_TAMPERED = "The manifest was edited or is corrupt: delete the cache folder and rerun the cache job."

# key -> (types, what a value must be): the manifest fields the store and the build read
_MANIFEST_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "complete": ((bool,), "true or false"),
    "fingerprint": ((dict,), "an object"),
    "hooks": ((list,), "a list of hook names"),
    "n_rows": ((int,), "a number of responses"),
    "n_shards": ((int,), "a number of shards"),
    "shards": ((dict,), "an object of shard entries"),
    "index": ((dict, type(None)), "an object or null"),
    "has_groups": ((bool,), "true or false"),
    "data": ((dict,), "an object"),
    "sae": ((dict, type(None)), "an object or null"),
    "sae_hook": ((str, type(None)), "a hook name or null"),
}
_FINGERPRINT_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "model": ((str,), "a model id"),
    "hooks": ((list,), "a list of hook names"),
    "capture": ((dict,), "an object"),
    "tokens": ((bool,), "true or false"),
    "shard_size": ((int,), "a positive number"),
    "dataset_hash": ((str,), "a hash"),
    "n_rows": ((int,), "a number of responses"),
}


def check_manifest(manifest: dict[str, Any], path: str | os.PathLike) -> None:
    """Check a cache manifest's keys, types, file names and shard rows; `CacheError` naming the first bad key."""

    def bad(key: str, value: Any, expected: str) -> CacheError:
        return CacheError(f"{path}: key {key!r} is {_short(value)}; expected {expected}. {_TAMPERED}")

    def check(where: dict[str, Any], spec: dict[str, tuple[tuple[type, ...], str]], prefix: str) -> None:
        for key, (types, expected) in spec.items():
            if key not in where:
                raise CacheError(f"{path}: key {prefix + key!r} is missing; expected {expected}. {_TAMPERED}")
            value = where[key]
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                raise bad(prefix + key, value, expected)

    check(manifest, _MANIFEST_KEYS, "")
    fingerprint = manifest["fingerprint"]
    check(fingerprint, _FINGERPRINT_KEYS, "fingerprint.")
    n, size = manifest["n_rows"], fingerprint["shard_size"]
    if not manifest["hooks"] or not all(isinstance(h, str) for h in manifest["hooks"]):
        raise bad("hooks", manifest["hooks"], "a non-empty list of hook names")
    if size < 1:
        raise bad("fingerprint.shard_size", size, "a positive number")
    if n < 0 or fingerprint["n_rows"] != n:
        raise bad("n_rows", n, f"the fingerprint's n_rows ({fingerprint['n_rows']})")
    n_shards = -(-n // size)
    if manifest["n_shards"] != n_shards:
        raise bad("n_shards", manifest["n_shards"], f"{n_shards} ({n} responses in shards of {size})")
    if manifest["sae"] is not None and not _is_int(manifest["sae"].get("d_sae")):
        raise bad("sae.d_sae", manifest["sae"].get("d_sae"), "the SAE's number of latents")
    for key, entry in manifest["shards"].items():
        where = f"shards.{key}"
        if not key.isdigit() or not 0 <= int(key) < n_shards:
            raise bad("shards", key, f"shard numbers 0..{n_shards - 1} as keys")
        if not isinstance(entry, dict):
            raise bad(where, entry, "an object with file, rows, bytes and sha256")
        i = int(key)
        expected_rows = [i * size, min(n, (i + 1) * size)]
        check_file_name(entry.get("file"), f"{where}.file", path)
        if entry.get("rows") != expected_rows or not all(map(_is_int, entry["rows"])):
            raise bad(f"{where}.rows", entry.get("rows"), f"{expected_rows} (shard {i} of shards of {size} responses)")
        _check_checksum(entry, where, bad)
    if manifest["index"] is not None:
        check_file_name(manifest["index"].get("file"), "index.file", path)
        _check_checksum(manifest["index"], "index", bad)
    if manifest["complete"] and (manifest["index"] is None or len(manifest["shards"]) != n_shards):
        raise bad("complete", True, f"false while {len(manifest['shards'])} of {n_shards} shards or the index are "
                  "listed")


def _check_checksum(entry: dict[str, Any], where: str, bad: Any) -> None:
    if not _is_int(entry.get("bytes")) or entry["bytes"] < 0:
        raise bad(f"{where}.bytes", entry.get("bytes"), "a file size in bytes")
    digest = entry.get("sha256")
    if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise bad(f"{where}.sha256", digest, "a sha256 hex digest")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list, str, int, float, bool, type(None))) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
