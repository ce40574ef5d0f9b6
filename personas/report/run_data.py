"""What a feature card reads from a run, without running the model: the ranking, per-token codes, labels,
tokenizer, SAE decoder and steering runs.

Per-token codes come from a `RankResult` that kept them, from the run folder's ``token_codes.npz`` (written by
``personas rank --report``: `save_token_codes` / `load_token_codes`), or from the per-token codes of the activation
cache a ``personas rank --cache`` run read (only the asked latents' columns, one shard at a time). The SAE's
decoder comes from the result or is loaded from the spec the manifest records; the tokenizer alone is loaded from
the model's folder (never the model).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from personas.artifacts import MANIFEST_FILE, RANKING_FILE, TOKEN_CODES_FILE, atomic_write_bytes
from personas.cache.store import open_cache
from personas.capturing import TokenCodes
from personas.errors import PersonasError
from personas.report.lens import model_folder
from personas.saes import load_sae, sae_info
from personas.scoring.confounds import CONFOUND_THRESHOLDS

__all__ = ["TOKEN_CODES_FILE", "RunData", "load_token_codes", "open_run_data", "read_json", "read_run",
           "save_token_codes"]

logger = logging.getLogger(__name__)



def save_token_codes(path: str | Path, codes: TokenCodes, labels: Any, ids: Any = None) -> dict[str, Any]:
    """Write ``codes`` (and one label and id per response) as a compressed ``.npz``, atomically; return its entry
    for a manifest's ``files``."""
    csr = scipy.sparse.csr_matrix(codes.codes)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, data=csr.data.astype(np.float32), indices=csr.indices, indptr=csr.indptr,
                        shape=np.asarray(csr.shape), offsets=np.asarray(codes.offsets),
                        token_ids=np.asarray(codes.token_ids), labels=np.asarray(labels),
                        ids=np.asarray([] if ids is None else [str(i) for i in ids]))
    data = buffer.getvalue()
    atomic_write_bytes(path, data)
    return {"sha256": hashlib.sha256(data).hexdigest(), "n_tokens": int(csr.shape[0]), "nnz": int(csr.nnz)}


def load_token_codes(path: str | Path) -> tuple[TokenCodes, np.ndarray, np.ndarray | None]:
    """``(TokenCodes, labels, ids)`` from a file of `save_token_codes`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            codes = scipy.sparse.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
            ids = z["ids"] if z["ids"].size else None
            return TokenCodes(codes, z["offsets"].astype(np.int64), z["token_ids"].astype(np.int64)), z["labels"], ids
    except (OSError, KeyError, ValueError) as exc:
        raise PersonasError(f"{str(path)!r} is not a token-codes file of personas ({exc}); rerun "
                            "`personas rank --report` into the folder.") from exc


@dataclass
class RunData:
    """The columns of the asked latents over every response token, and what else a card reads about the run."""

    ranking: Any
    manifest: dict[str, Any]
    codes: scipy.sparse.csc_matrix  # [tokens, asked latents]
    columns: dict[int, int]
    offsets: np.ndarray
    token_ids: np.ndarray
    labels: np.ndarray
    ids: np.ndarray | None
    tokenizer: Any
    texts: Any = None
    handle: Any = None
    run_dir: Path | None = None
    sae: Any = None
    sae_info: dict[str, Any] | None = None
    _decoder: Any = field(default=None, repr=False)

    @property
    def model_name(self) -> str | None:
        model = self.manifest.get("model")
        return model.get("model") if isinstance(model, dict) else model

    @property
    def hook(self) -> str | None:
        return self.manifest.get("hook")

    @property
    def thresholds(self) -> dict[str, Any]:
        recorded = (self.manifest.get("ranking") or {}).get("confounds") or {}
        return {k: recorded.get(k, v) for k, v in CONFOUND_THRESHOLDS.items()}

    def column(self, feature: int) -> np.ndarray:
        """The latent's activation on every response token (float64)."""
        return np.asarray(self.codes[:, [self.columns[feature]]].toarray(), dtype=np.float64).ravel()

    def text(self, row: int) -> str | None:
        return None if self.texts is None else str(self.texts[row])

    def decoder(self) -> np.ndarray | None:
        """The SAE's decoder ``W_dec`` [d_sae, d_in] as float32, or None when the SAE cannot be had."""
        if self._decoder is None:
            sae = self.sae
            spec = (self.sae_info or {}).get("spec")
            if sae is None and spec and spec != "in-memory":
                try:
                    sae = load_sae(spec, model=self.model_name)
                except PersonasError as exc:
                    logger.warning("no decoder for the cards: %s", exc)
            if sae is not None:
                self._decoder = sae.W_dec.detach().float().cpu().numpy()
        return self._decoder

    def decoder_row(self, feature: int) -> np.ndarray | None:
        W = self.decoder()
        return None if W is None else W[feature]

    def steering(self, feature: int) -> list[dict[str, Any]]:
        """The ``personas steer`` runs of ``feature`` saved inside the run folder, one summary each."""
        if self.run_dir is None:
            return []
        found = []
        for manifest_path in sorted(self.run_dir.glob(f"*/{MANIFEST_FILE}")):
            try:
                m = json.loads(manifest_path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if not isinstance(m, dict) or m.get("kind") != "personas.steer" or m.get("feature") != feature:
                continue
            rho = m.get("spearman") or {}
            summary = (f"alphas {m.get('alphas')}, mode {((m.get('config') or {}).get('steer') or {}).get('mode')}"
                       + (f"; Spearman rho(score, alpha) {rho['rho']:.2f} (p {rho['p_value']:.1e}, n {rho['n']})"
                          if rho.get("rho") is not None else "; no score (no detector)"))
            found.append({"run": manifest_path.parent.name, "summary": summary})
        return found


def open_run_data(source: Any, features: Any, *, sae: Any = None, tokenizer: Any = None, model: Any = None
                  ) -> RunData:
    """`RunData` for ``features`` from a `RankResult` or a run folder (see the module docstring)."""
    chosen = [int(f) for f in features]
    if not chosen:
        raise PersonasError("no feature asked for; give one or more latent indices.")
    if hasattr(source, "ranking") and hasattr(source, "capture"):
        return _from_result(source, chosen, sae, tokenizer, model)
    return _from_folder(Path(source), chosen, sae, tokenizer)


def _select(codes: Any, chosen: list[int]) -> tuple[scipy.sparse.csc_matrix, dict[int, int]]:
    width = codes.shape[1]
    bad = [f for f in chosen if not 0 <= f < width]
    if bad:
        raise PersonasError(f"feature(s) {bad} are out of range; the SAE has {width} latents (0..{width - 1}).")
    unique = list(dict.fromkeys(chosen))
    return scipy.sparse.csr_matrix(codes)[:, unique].tocsc(), {f: j for j, f in enumerate(unique)}


def _from_result(result: Any, chosen: list[int], sae: Any, tokenizer: Any, model: Any) -> RunData:
    tc = result.capture.token_codes
    if tc is None:
        raise PersonasError("this result kept no per-token codes; rank with personas.rank(..., keep_tokens=True) "
                            "(or `personas rank --report`) to make feature cards.")
    codes, columns = _select(tc.codes, chosen)
    handle = model if model is not None else result.model
    sae = sae if sae is not None else result.sae
    info = result.manifest.get("sae") or (sae_info(sae) if sae is not None else None)
    responses = result.responses
    return RunData(
        ranking=result.ranking, manifest=result.manifest, codes=codes, columns=columns,
        offsets=np.asarray(tc.offsets, dtype=np.int64), token_ids=np.asarray(tc.token_ids), labels=responses.labels,
        ids=np.asarray(responses.ids), tokenizer=tokenizer if tokenizer is not None else handle.tokenizer,
        texts=responses.texts, handle=handle, run_dir=result.out_dir, sae=sae, sae_info=info,
    )


def _from_folder(run_dir: Path, chosen: list[int], sae: Any, tokenizer: Any) -> RunData:
    ranking, manifest = read_run(run_dir)
    path = run_dir / TOKEN_CODES_FILE
    cache_path = (manifest.get("source") or {}).get("cache")
    if path.is_file():
        tc, labels, ids = load_token_codes(path)
        codes, columns = _select(tc.codes, chosen)
        offsets, token_ids = tc.offsets, tc.token_ids
    elif cache_path:
        codes, columns, offsets, token_ids, labels, ids = _from_cache(cache_path, chosen)
    else:
        raise PersonasError(
            f"{str(run_dir)!r} holds no per-token codes for feature cards: rerun `personas rank DATA --report --out "
            f"{run_dir}` (writes {TOKEN_CODES_FILE}), or rank a cache built with an SAE and tokens (--cache).")
    if tokenizer is None:
        tokenizer = _tokenizer(manifest)
    info = dict(manifest.get("sae") or {}) or None
    if info is not None and not info.get("spec"):
        info["spec"] = ((manifest.get("source") or {}).get("fingerprint") or {}).get("sae", {}).get("spec")
    return RunData(ranking=ranking, manifest=manifest, codes=codes, columns=columns,
                   offsets=np.asarray(offsets, dtype=np.int64), token_ids=np.asarray(token_ids), labels=labels,
                   ids=ids, tokenizer=tokenizer, run_dir=run_dir, sae=sae, sae_info=info)


def _from_cache(path: str, chosen: list[int]) -> tuple[Any, dict[int, int], np.ndarray, np.ndarray, np.ndarray, Any]:
    """The asked latents' columns of a cache's per-token codes, one shard in memory at a time."""
    try:
        cache = open_cache(path)
    except PersonasError as exc:
        raise PersonasError(f"the cache this run was ranked from cannot be opened ({exc}); feature cards read its "
                            "per-token codes.") from exc
    if not cache.has_tokens:
        raise PersonasError(f"the cache {path} holds no per-token codes (built without an SAE or with --no-tokens); "
                            "feature cards need them. Rebuild the cache with an SAE and tokens.")
    parts, ids, lengths = [], [], []
    columns = None
    for shard in cache.iter_shards(want=("tokens",)):
        part, columns = _select(shard.token_codes.codes, chosen)
        parts.append(part)
        ids.append(np.asarray(shard.token_codes.token_ids))
        lengths.append(np.diff(np.asarray(shard.token_codes.offsets)))
    offsets = np.r_[0, np.cumsum(np.concatenate(lengths))].astype(np.int64)
    return (scipy.sparse.vstack(parts, format="csc"), columns or {}, offsets, np.concatenate(ids), cache.labels,
            cache.index["id"].astype(str).to_numpy())


def read_run(run_dir: Path) -> tuple[Any, dict[str, Any]]:
    """The ranking (``ranking.csv``, checked against the manifest's checksum) and the manifest of a rank folder."""
    import pandas as pd

    if not run_dir.is_dir():
        raise PersonasError(f"{str(run_dir)!r} is not a folder; expected the --out folder of `personas rank`.")
    ranking_path, manifest_path = run_dir / RANKING_FILE, run_dir / MANIFEST_FILE
    missing = [p.name for p in (ranking_path, manifest_path) if not p.exists()]
    if missing:
        raise PersonasError(
            f"{str(run_dir)!r} has no {' or '.join(missing)}; expected the --out folder of `personas rank` "
            "(ranking.csv and manifest.json)."
        )
    manifest = read_json(manifest_path, "rerun `personas rank`")
    if not isinstance(manifest, dict) or manifest.get("kind") != "personas.rank":
        kind = manifest.get("kind") if isinstance(manifest, dict) else type(manifest).__name__
        raise PersonasError(
            f"{str(manifest_path)!r} describes a {kind!r} run, not a 'personas.rank' run; `personas report` reads "
            "the --out folder of `personas rank`."
        )
    files = manifest.get("files")
    listed = files.get(RANKING_FILE) if isinstance(files, dict) else None
    if files is not None and not isinstance(listed, dict):
        raise PersonasError(
            f"the manifest in {str(run_dir)!r} does not list {RANKING_FILE} among its files; the folder mixes runs. "
            "Rerun `personas rank` into an empty folder."
        )
    raw = ranking_path.read_bytes()
    if listed and listed.get("sha256") and hashlib.sha256(raw).hexdigest() != listed["sha256"]:
        raise PersonasError(
            f"{str(ranking_path)!r} does not match the checksum its manifest records: it was written by another "
            "run (or changed by hand). Rerun `personas rank` into this folder, or into an empty one."
        )
    try:
        ranking = pd.read_csv(ranking_path)
    except (ValueError, UnicodeDecodeError) as exc:  # pandas' EmptyDataError and ParserError are ValueErrors
        raise PersonasError(f"{str(ranking_path)!r} cannot be read as CSV ({exc}); rerun `personas rank`.") from exc
    if "feature" not in ranking.columns:
        raise PersonasError(
            f"{str(ranking_path)!r} has no 'feature' column (columns: {list(ranking.columns)[:12]}); expected a "
            "ranking written by `personas rank`."
        )
    return ranking, manifest


def read_json(path: Path, fix: str) -> Any:
    """The JSON in ``path``, or a `PersonasError` naming the file and the ``fix``."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PersonasError(f"{str(path)!r} is not valid JSON ({exc}); {fix}.") from exc


def _tokenizer(manifest: dict[str, Any]) -> Any:
    """The tokenizer of the run's model, loaded alone from its folder (or the Hugging Face cache)."""
    from transformers import AutoTokenizer

    folder = model_folder(manifest)
    model = manifest.get("model")
    where = str(folder) if folder is not None else (model.get("model") if isinstance(model, dict) else model)
    try:
        return AutoTokenizer.from_pretrained(str(where))
    except Exception as exc:  # transformers raises OSError, ValueError or hub errors
        raise PersonasError(f"feature cards need the tokenizer of {where!r}, which could not be loaded "
                            f"({type(exc).__name__}); make the model folder available or pass tokenizer=.") from exc
