"""The rank job: responses -> capture -> SAE codes -> scores -> ``ranking.csv``, ``ranking.parquet`` and
``manifest.json``; and `load_run`, which reads such a folder back as a `Ranking`.

`rank_responses` is what ``personas rank`` runs (`rank_cache_job` with ``--cache``); every step is also usable on
its own (`load_responses`, `load_model`, `capture`, `load_sae`, `rank_features`). The ranking is written twice:
CSV for people and spreadsheets, Parquet for exact types and fast reading; the manifest records both checksums
and the ranking's metadata.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from personas.artifacts import (
    EXAMPLES_FILE,
    MANIFEST_FILE,
    RANKING_FILE,
    RANKING_PARQUET,
    atomic_write_bytes,
    check_output_dir,
    manifest_header,
    output_dir,
    write_csv,
    write_json,
)
from personas.cache.store import ActivationCache, cache_covariate_correlation, open_cache, rank_cache
from personas.capturing import TokenCodes
from personas.capturing import capture as run_capture
from personas.config import CacheRankConfig, CaptureConfig, DataConfig, RankConfig, SAEConfig
from personas.data.responses import load_responses
from personas.errors import CacheError, DataError, PersonasError
from personas.jobs.confounds import cache_confounds, capture_confounds, token_texts
from personas.logs import quiet_third_party
from personas.models.offline import offline_model
from personas.report.examples import save_examples, top_activating, top_examples
from personas.report.run_data import TOKEN_CODES_FILE, save_token_codes
from personas.saes import sae_entry
from personas.saes.site import open_site
from personas.scoring import Ranking, has_mixed_group, rank_features
from personas.scoring.confounds import CONFOUND_THRESHOLDS, add_confound_columns

__all__ = ["RANKING_PARQUET", "RankResult", "load_run", "rank", "rank_cache_job", "rank_from_cache", "rank_responses",
           "write_ranking", "write_ranking_tables"]

logger = logging.getLogger(__name__)

#: With per-token codes, ``examples.json`` holds this many top-activating responses of this many top features.
EXAMPLE_FEATURES = 10
EXAMPLES_PER_FEATURE = 5
#: Warn when response length alone reaches |AUROC - 0.5| of this much.
LENGTH_WARNING = 0.2
RUN_KIND = "personas.rank"


@dataclass
class RankResult:
    """The outcome of `rank`: the ranking, what was captured, and the provenance written next to it."""

    ranking: Any  # personas.scoring.Ranking, a pandas DataFrame
    responses: Any  # personas.data.Responses
    capture: Any  # personas.capturing.Capture
    manifest: dict[str, Any]
    out_dir: Path | None = None
    sae: Any = field(default=None, repr=False)
    model: Any = field(default=None, repr=False)

    @property
    def features(self):
        """The matrix that was ranked: pooled SAE codes, or pooled activations when no SAE was used."""
        if self.capture.features is not None:
            return self.capture.features
        return self.capture.pooled[self.manifest["hook"]]

    def top(self, n: int = 20):
        """The ``n`` best features."""
        return self.ranking.head(n)

    def examples(self, feature: int, k: int = 10):
        """Top-activating responses of ``feature`` (needs ``rank(..., keep_tokens=True)``); see `personas.examples`."""

        return top_activating(self, feature, k=k)

    def __repr__(self) -> str:
        m, stats = self.manifest, self.manifest.get("ranking", {})
        sae = m.get("sae")
        what = f"SAE {sae.get('spec')} ({stats.get('n_features')} latents)" if sae else (
            f"no SAE ({stats.get('n_features')} activation dims)")
        top = ", ".join(f"{int(r.feature)} (AUROC {r.auroc:.2f})" for r in self.ranking.head(3).itertuples())
        out = "" if self.out_dir is None else f"; out={str(self.out_dir)!r}"
        return (f"RankResult({len(self.responses)} responses, {(m.get('model') or {}).get('model')} at {m.get('hook')}, "
                f"{what}; {stats.get('n_significant')} significant at q < {stats.get('alpha')}; top: {top}{out})")

    def _repr_html_(self) -> str:
        html = getattr(self.ranking, "_repr_html_", None)
        return html() if html else self.ranking.head(20).to_html()


def _length_auroc(length: np.ndarray, labels: Any) -> float:
    """The AUROC of response length alone (a confound check), with a warning when it tells the classes apart."""
    length_auroc = float(rank_features(np.asarray(length)[:, None], labels)["auroc"].iloc[0])
    if abs(length_auroc - 0.5) >= LENGTH_WARNING:
        logger.warning(
            "response length alone separates the classes (AUROC %.2f): features that track length can rank high; "
            "see the length_corr column", length_auroc,
        )
    return length_auroc


def _ranking_block(ranking: Any, n_features: int, rank_cfg: RankConfig, stratified: bool, length_auroc: float,
                   confounds: Any) -> dict[str, Any]:
    """The manifest's ``ranking`` entry of a run ranked from activations or from a cache."""
    return {
        "n_features": n_features,
        "n_significant": int(np.asarray(ranking["significant"]).sum()),
        "key": rank_cfg.key,
        "alpha": rank_cfg.alpha,
        "stratified_by_group": stratified,
        "length_auroc": length_auroc,
        "confounds": confounds,
        "meta": dict(getattr(ranking, "meta", None) or {}),
    }


def rank_responses(
    data: Any,
    *,
    capture: CaptureConfig | None = None,
    sae: SAEConfig | str | Any | None = "default",
    rank: RankConfig | None = None,
    data_config: DataConfig | None = None,
    out: str | Path | None = None,
    model: Any = None,
    keep_tokens: bool = False,
    progress: bool = True,
) -> RankResult:
    """Rank the features that separate misaligned from aligned responses.

    Args:
        data: anything `personas.load_responses` takes (a file, a DataFrame, a Dataset, a `Responses`).
        capture: model, hook, pooling and batching (`CaptureConfig`); default: MiniLM at blocks.3.hook_resid_post.
        sae: an `SAEConfig`, a spec string (``"default"``, a folder, ``"RELEASE:SAE_ID"``), a loaded sae-lens SAE,
            or ``None`` / ``"none"`` to rank the raw activation dimensions; default ``"default"``, the SAE shipped
            for the default model.
        rank: ranking key, FDR level and filters (`RankConfig`).
        data_config: column names and judge-score thresholds (`DataConfig`).
        out: folder to write ``ranking.csv`` and ``manifest.json`` into (nothing is written when None).
        model: an already loaded model (`ModelHandle` or TransformerLens model), to skip loading.
        keep_tokens: keep per-token SAE codes in ``result.capture.token_codes`` (for top-activating examples).
    """

    capture_cfg = capture or CaptureConfig()
    rank_cfg = rank or RankConfig()
    responses = load_responses(data, data_config)
    if out is not None:
        check_output_dir(out, RUN_KIND)  # before the model loads: a folder that cannot take the run fails now
    with quiet_third_party():
        site = open_site(capture_cfg, "none" if sae is None else sae, model)
    handle, sae_obj, sae_cfg, hook = site.model, site.sae, site.sae_config, site.hook

    captured = run_capture(
        handle,
        responses.prompts,
        responses.texts,
        hooks=[hook],
        config=capture_cfg,
        sae=sae_obj,
        encode_batch_tokens=sae_cfg.encode_batch_tokens,
        keep_tokens=sae_obj is not None,  # the confound columns read them; dropped below unless asked for
        allow_model_mismatch=sae_cfg.allow_model_mismatch,
        progress=progress,
    )
    features = captured.features if sae_obj is not None else captured.pooled[hook]
    groups = responses.groups if responses.has_groups else None
    stratified = groups is not None and has_mixed_group(groups, responses.labels)
    if groups is not None and not stratified:
        logger.warning("no question has both misaligned and aligned responses: ranking without stratification")
    ranking = rank_features(
        features,
        responses.labels,
        groups if stratified else None,
        key=rank_cfg.key,
        alpha=rank_cfg.alpha,
        min_frac_active=rank_cfg.min_frac_active,
    )
    # a confound check: does response length alone tell the classes apart, and which features track it?
    length_auroc = _length_auroc(captured.n_tokens.astype(float), responses.labels)
    table = capture_confounds(captured, features, handle, responses.prompts, responses.texts)
    confounds = add_confound_columns(ranking, table, token_text=token_texts(handle.tokenizer), **CONFOUND_THRESHOLDS)
    if not keep_tokens:
        captured.token_codes = None
    manifest = {
        **manifest_header(RUN_KIND),
        "model": captured.model,
        "hook": hook,
        "sae": None if sae_obj is None else sae_entry(sae_obj, sae_cfg.sae),
        "pooling": capture_cfg.pool,
        "data": responses.summary(),
        "capture": captured.provenance(),
        "config": {
            "capture": asdict(capture_cfg),
            "sae": asdict(sae_cfg),
            "rank": asdict(rank_cfg),
            "data": asdict(responses.config),
        },
        "ranking": _ranking_block(ranking, int(features.shape[1]), rank_cfg, stratified, length_auroc, confounds),
    }
    result = RankResult(ranking, responses, captured, manifest, sae=sae_obj, model=handle)
    if out is not None:
        result.out_dir = write_ranking(result, out)
    return result


def write_ranking_tables(out: str | Path, ranking: Any) -> dict[str, dict[str, str]]:
    """Write ``ranking.csv`` and ``ranking.parquet`` (each atomically) into the folder ``out``; return their
    checksum entries for a manifest's ``files``."""
    out = Path(out)
    frame = pd.DataFrame(ranking, copy=True)
    frame.attrs = {}  # the metadata lives in the manifest; Parquet would need it JSON-serialisable
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    data = buffer.getvalue()
    atomic_write_bytes(out / RANKING_PARQUET, data)
    return {RANKING_FILE: write_csv(out / RANKING_FILE, frame),
            RANKING_PARQUET: {"sha256": hashlib.sha256(data).hexdigest()}}


def write_ranking(result: RankResult, out: str | Path) -> Path:
    """Write ``ranking.csv``, ``ranking.parquet`` and ``manifest.json`` (each atomically) into ``out``, and with
    per-token codes ``examples.json`` and ``token_codes.npz`` (what feature cards read); return the folder."""
    out = output_dir(out, RUN_KIND)
    result.manifest["files"] = write_ranking_tables(out, result.ranking)
    if result.capture.token_codes is not None:
        top = [int(f) for f in result.ranking["feature"].head(EXAMPLE_FEATURES)]
        examples = {f: result.examples(f, k=EXAMPLES_PER_FEATURE) for f in top}
        dataset_hash = result.manifest["data"]["dataset_hash"]
        save_examples(out / EXAMPLES_FILE, examples, sae=result.sae if result.sae is not None else result.manifest["sae"],
                      extra={"dataset_hash": dataset_hash})
        result.manifest["files"][EXAMPLES_FILE] = {"features": top, "dataset_hash": dataset_hash}
        # every latent's per-token codes, for feature cards without a second capture
        result.manifest["files"][TOKEN_CODES_FILE] = save_token_codes(
            out / TOKEN_CODES_FILE, result.capture.token_codes, result.responses.labels, result.responses.ids)
    write_json(out / MANIFEST_FILE, result.manifest)
    return out


def rank_cache_job(
    cache: str | Path | ActivationCache,
    *,
    hook: str | None = None,
    rank: RankConfig | None = None,
    options: CacheRankConfig | None = None,
    out: str | Path | None = None,
    examples: bool = False,
    tokenizer: Any = None,
) -> tuple[Ranking, dict[str, Any]]:
    """Rank from an activation cache (no model is loaded); write ``ranking.csv`` + ``manifest.json`` to ``out``.

    Like `rank`: the ranking has a ``length_corr`` column (each feature's correlation with the response's token
    count, streamed over the shards) and the manifest the ``length_auroc`` of length alone. With ``examples``,
    ``examples.json`` holds the top-activating responses of the top features, read from the cached per-token codes
    (the model's tokenizer is loaded, not the model; or pass ``tokenizer``). Returns the ranking and its manifest;
    the cache's own provenance (model, hooks, SAE, dataset) is copied in.
    """

    rank_cfg = rank or RankConfig()
    opts = options or CacheRankConfig()
    if out is not None:
        check_output_dir(out, RUN_KIND)
    opened = cache if isinstance(cache, ActivationCache) else open_cache(cache)
    if examples and not opened.has_tokens:
        raise CacheError(f"examples need per-token SAE codes, and the cache {opened.path} holds none (made without an "
                         "SAE or with --no-tokens). Rebuild it with an SAE and tokens, or rank without --report.")
    ranking = rank_cache(
        opened, hook=hook, key=rank_cfg.key, alpha=rank_cfg.alpha, min_frac_active=rank_cfg.min_frac_active,
        exact=opts.exact, bins=opts.bins, engine=opts.engine, ray_address=opts.ray_address,
        spill_budget=opts.spill_budget,
    )
    used = ranking.meta["cache"]
    length = opened.index["n_tokens"].to_numpy(np.float64)
    length_auroc = _length_auroc(length, opened.labels)
    corr = cache_covariate_correlation(opened, length, hook=used["hook"], use=used["use"])
    ranking["length_corr"] = corr[ranking["feature"].to_numpy()]
    if tokenizer is None and opened.has_tokens:
        try:
            tokenizer = _cache_tokenizer(opened)
        except PersonasError as exc:
            logger.warning("no punct_corr column: %s", exc)
    table = cache_confounds(opened, hook=used["hook"], use=used["use"], tokenizer=tokenizer, length_corr=corr)
    confounds = add_confound_columns(ranking, table, token_text=token_texts(tokenizer), **CONFOUND_THRESHOLDS)
    source = opened.manifest
    manifest = {
        **manifest_header(RUN_KIND),
        "source": {"cache": str(opened.path), "fingerprint": source.get("fingerprint")},
        "model": source.get("model"),
        "hook": used["hook"],
        "sae": source.get("sae") if used["use"] == "sae" else None,
        "pooling": source["fingerprint"]["capture"]["pool"],
        "data": source["data"],
        "config": {"rank": asdict(rank_cfg), "cache_rank": asdict(opts)},
        "ranking": _ranking_block(ranking, int(len(ranking)), rank_cfg, bool(ranking.meta.get("grouped")),
                                  length_auroc, confounds),
    }
    if out is not None:
        out = output_dir(out, RUN_KIND)
        manifest["files"] = write_ranking_tables(out, ranking)
        if examples:
            top = [int(f) for f in ranking["feature"].head(EXAMPLE_FEATURES)]
            found = _cache_examples(opened, top, tokenizer=tokenizer if tokenizer is not None else
                                    _cache_tokenizer(opened), k=EXAMPLES_PER_FEATURE)
            dataset_hash = source["data"].get("dataset_hash")
            save_examples(out / EXAMPLES_FILE, found, sae=source.get("sae"), extra={"dataset_hash": dataset_hash})
            manifest["files"][EXAMPLES_FILE] = {"features": top, "dataset_hash": dataset_hash}
        write_json(out / MANIFEST_FILE, manifest)
    return ranking, manifest


def load_run(folder: str | Path) -> Ranking:
    """The `Ranking` of a ``personas rank`` run folder, with the metadata it was written with.

    Reads ``ranking.parquet`` when the folder has one, else ``ranking.csv`` (folders written before Parquet), and
    checks the file against the checksum in ``manifest.json``. The metadata is the frame's ``attrs`` (also
    ``ranking.meta``): the ranking's own (``n_pos``, ``n_neg``, ``key``, ``alpha``, ``n_features``, ...; rebuilt from
    the manifest for older folders) and, under ``"manifest"``, the run's whole manifest (model, hook, SAE, data,
    configuration, versions)::

        ranking = personas.load_run("runs/demo")
        ranking.attrs["manifest"]["hook"], ranking.meta["n_pos"], ranking.head(10)

    Works for ``personas rank --cache`` folders too. Raises `DataError` when the folder is not a rank run or a
    file does not match its checksum.
    """
    folder = Path(folder)
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise DataError(f"{str(folder)!r} is not a personas rank run: expected {MANIFEST_FILE} and {RANKING_FILE} "
                        "in it (written by `personas rank --out` or personas.rank(out=...)).")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{manifest_path} is not valid JSON ({exc}); the run folder is damaged.") from exc
    if not isinstance(manifest, dict) or manifest.get("kind") != RUN_KIND:
        kind = manifest.get("kind") if isinstance(manifest, dict) else type(manifest).__name__
        raise DataError(f"{manifest_path} describes a {kind!r} run, not 'personas.rank'; load_run reads rank runs "
                        "(a detect run's detector loads with personas.load_detector).")
    files = manifest.get("files") or {}
    for name in (RANKING_PARQUET, RANKING_FILE):
        path = folder / name
        if path.is_file():
            break
    else:
        raise DataError(f"{str(folder)!r} has a rank manifest but neither {RANKING_PARQUET} nor {RANKING_FILE}.")
    data = path.read_bytes()
    expected = (files.get(name) or {}).get("sha256")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise DataError(f"{path} does not match the checksum in {MANIFEST_FILE}: it was changed after the run "
                        "wrote it. Rerun `personas rank`, or restore the file.")
    frame = pd.read_parquet(io.BytesIO(data)) if name == RANKING_PARQUET else pd.read_csv(io.BytesIO(data))
    ranking = Ranking(frame)
    ranking.meta = _run_meta(manifest, frame)
    ranking.attrs["manifest"] = manifest
    return ranking


def _run_meta(manifest: dict[str, Any], frame: pd.DataFrame) -> dict[str, Any]:
    """The ranking's metadata: as saved, or rebuilt from the manifest of a folder written before it was saved."""
    stats = manifest.get("ranking") or {}
    if stats.get("meta"):
        return dict(stats["meta"])
    data = manifest.get("data") or {}
    return {
        "n_pos": data.get("n_misaligned"),
        "n_neg": data.get("n_aligned"),
        "key": stats.get("key"),
        "alpha": stats.get("alpha"),
        "n_features": stats.get("n_features"),
        "n_features_tested": int(len(frame)),
        "grouped": bool(stats.get("stratified_by_group", "group_auroc" in frame)),
    }


@dataclass
class _IndexRows:
    """The rows of a cache's index in the shape `top_examples` reads from `Responses` (prompts are not cached)."""

    labels: np.ndarray
    ids: list[str]
    groups: np.ndarray | None
    prompts: None = None

    @property
    def has_groups(self) -> bool:
        return self.groups is not None

    def __len__(self) -> int:
        return len(self.labels)


def _cache_examples(cache: ActivationCache, features: list[int], *, tokenizer: Any, k: int = EXAMPLES_PER_FEATURE):
    """`personas.examples.top_examples` over a whole cache, one shard in memory at a time.

    Pass 1 reads each shard's per-token codes and keeps, per feature, every response's highest token activation;
    pass 2 reads only the shards that hold a top-``k`` response and has `top_examples` render those responses.
    The examples equal `top_examples` on the whole cache's codes (rows are dataset rows), without prompts.
    """
    import scipy.sparse

    chosen = [int(f) for f in features]
    best = np.zeros((len(chosen), cache.n_rows))
    for shard in cache.iter_shards(want=("tokens",)):
        codes, offsets = shard.token_codes.codes[:, chosen].tocsc(), np.asarray(shard.token_codes.offsets)
        nonempty = np.diff(offsets) > 0
        for j in range(len(chosen)):
            column = np.asarray(codes[:, [j]].toarray(), dtype=np.float64).ravel()
            if nonempty.any():
                best[j, shard.start + np.flatnonzero(nonempty)] = np.maximum.reduceat(column, offsets[:-1][nonempty])
    tops = {f: _top_rows(best[j], k) for j, f in enumerate(chosen)}
    wanted = np.unique(np.concatenate([np.zeros(0, np.int64), *tops.values()]))
    # the wanted responses' codes, in dataset order, as one small TokenCodes
    parts, ids_parts, offsets = [], [], [0]
    index = cache.index
    for shard_no in np.unique(index["shard"].to_numpy()[wanted]) if wanted.size else []:
        shard = cache.read_shard(int(shard_no), want=("tokens",))
        for row in wanted[(wanted >= shard.start) & (wanted < shard.stop)]:
            token_ids, codes = shard.token_codes.response(int(row - shard.start))
            parts.append(codes)
            ids_parts.append(token_ids)
            offsets.append(offsets[-1] + codes.shape[0])
    width = cache.d_sae
    sub = TokenCodes(scipy.sparse.vstack(parts, format="csr") if parts else scipy.sparse.csr_matrix((0, width)),
                     np.asarray(offsets, dtype=np.int64),
                     np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int64))
    rows = index.iloc[wanted]
    subset = _IndexRows(rows["label"].to_numpy(), rows["id"].astype(str).tolist(),
                        rows["group"].to_numpy(str) if cache.manifest.get("has_groups") else None)
    found = top_examples(sub, chosen, tokenizer=tokenizer, responses=subset, k=k, sae=cache.manifest.get("sae"))
    labels = cache.labels
    for j, f in enumerate(chosen):
        fe = found[f]
        for example in fe.examples:
            example.row = int(wanted[example.row])
        active = best[j] > 0
        fe.n_responses, fe.n_active = cache.n_rows, int(active.sum())
        for value, name in ((1, "misaligned"), (0, "aligned")):
            mask = labels == value
            fe.stats[f"frac_active_{name}"] = float(active[mask].mean()) if mask.any() else None
    return found


def _top_rows(best: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` rows with the highest positive values, ties broken by row (as `top_examples` orders them)."""
    rows = np.flatnonzero(best > 0)
    return rows[np.lexsort((rows, -best[rows]))][:k]


def _cache_tokenizer(cache: ActivationCache) -> Any:
    """The tokenizer of the model a cache was captured with, loaded without the model (offline-aware)."""
    from transformers import AutoTokenizer

    asked = str(((cache.manifest.get("config") or {}).get("capture") or {}).get("model") or "")
    model_id = str(cache.fingerprint.get("model"))
    offline = offline_model(asked) or offline_model(model_id)
    if offline is not None:  # minilm, smollm2: the tokenizer is in the folder the package provides
        where = str(offline.path())
    elif Path(model_id).is_dir():
        where = model_id
    elif asked and Path(asked).is_dir():
        where = asked
    else:
        where = model_id
    try:
        return AutoTokenizer.from_pretrained(where)
    except Exception as exc:  # transformers raises OSError, ValueError or hub errors for a tokenizer it cannot find
        raise PersonasError(
            f"top-activating examples need the tokenizer of {model_id!r}, which could not be loaded from {where!r} "
            f"({type(exc).__name__}). Make the model folder (or the Hugging Face cache) available, pass tokenizer= "
            "to rank_from_cache, or rank without --report."
        ) from exc


#: The names before 0.3, kept for one release: the job's name now says what it ranks (responses, a cache), beside
#: `personas.scoring.rank_features` (a feature matrix) and `personas.cache.rank_cache` (a cache, in memory).
rank = rank_responses
rank_from_cache = rank_cache_job
