"""The rank job: responses -> capture -> SAE codes -> scores -> ``ranking.csv`` + ``manifest.json``.

`rank` is what ``personas rank`` runs; every step is also usable on its own (`load_responses`, `load_model`,
`capture`, `load_sae`, `rank_features`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from personas.artifacts import MANIFEST_FILE, RANKING_FILE, manifest_header, output_dir, write_csv, write_json
from personas.cache.store import ActivationCache, open_cache, rank_cache
from personas.capturing import capture as run_capture
from personas.config import CacheRankConfig, CaptureConfig, DataConfig, RankConfig, SAEConfig
from personas.data.responses import load_responses
from personas.report.examples import EXAMPLES_FILE, save_examples, top_activating
from personas.saes import sae_info
from personas.scoring import Ranking, covariate_correlation, has_mixed_group, rank_features
from personas.site import open_site

logger = logging.getLogger(__name__)

#: With per-token codes, ``examples.json`` holds this many top-activating responses of this many top features.
EXAMPLE_FEATURES = 10
EXAMPLES_PER_FEATURE = 5
#: Warn when response length alone reaches |AUROC - 0.5| of this much.
LENGTH_WARNING = 0.2


@dataclass
class RankResult:
    """The outcome of `rank`: the ranking, what was captured, and the provenance written next to it."""

    ranking: Any  # personas.scoring.Ranking, a pandas DataFrame
    responses: Any  # personas.data.Responses
    capture: Any  # personas.capture.Capture
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
        return self.ranking.head(n)

    def examples(self, feature: int, k: int = 10):
        """Top-activating responses of ``feature`` (needs ``rank(..., keep_tokens=True)``); see `personas.examples`."""

        return top_activating(self, feature, k=k)

    def _repr_html_(self) -> str:
        html = getattr(self.ranking, "_repr_html_", None)
        return html() if html else self.ranking.head(20).to_html()


def rank(
    data: Any,
    *,
    capture: CaptureConfig | None = None,
    sae: SAEConfig | str | None = None,
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
        sae: an `SAEConfig`, a spec string (``"default"``, a folder, ``"RELEASE:SAE_ID"``, or ``"none"`` to rank
            the raw activation dimensions), or a loaded sae-lens SAE; default ``"default"``.
        rank: ranking key, FDR level and filters (`RankConfig`).
        data_config: column names and judge-score thresholds (`DataConfig`).
        out: folder to write ``ranking.csv`` and ``manifest.json`` into (nothing is written when None).
        model: an already loaded model (`ModelHandle` or TransformerLens model), to skip loading.
        keep_tokens: keep per-token SAE codes in ``result.capture.token_codes`` (for top-activating examples).
    """

    capture_cfg = capture or CaptureConfig()
    rank_cfg = rank or RankConfig()
    responses = load_responses(data, data_config)
    site = open_site(capture_cfg, sae, model)
    handle, sae_obj, sae_cfg, hook = site.model, site.sae, site.sae_config, site.hook

    captured = run_capture(
        handle,
        responses.prompts,
        responses.texts,
        hooks=[hook],
        config=capture_cfg,
        sae=sae_obj,
        encode_batch_tokens=sae_cfg.encode_batch_tokens,
        keep_tokens=keep_tokens and sae_obj is not None,
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
    length = captured.n_tokens.astype(float)
    length_auroc = float(rank_features(length[:, None], responses.labels)["auroc"].iloc[0])
    if abs(length_auroc - 0.5) >= LENGTH_WARNING:
        logger.warning(
            "response length alone separates the classes (AUROC %.2f): features that track length can rank high; "
            "see the length_corr column", length_auroc,
        )
    ranking["length_corr"] = covariate_correlation(features, length)[ranking["feature"].to_numpy()]
    manifest = {
        **manifest_header("personas.rank"),
        "model": captured.model,
        "hook": hook,
        "sae": None if sae_obj is None else {"spec": str(sae_cfg.sae), **sae_info(sae_obj)},
        "pooling": capture_cfg.pool,
        "data": responses.summary(),
        "capture": captured.provenance(),
        "config": {
            "capture": asdict(capture_cfg),
            "sae": asdict(sae_cfg),
            "rank": asdict(rank_cfg),
            "data": asdict(responses.config),
        },
        "ranking": {
            "n_features": int(features.shape[1]),
            "n_significant": int(np.asarray(ranking["significant"]).sum()),
            "key": rank_cfg.key,
            "alpha": rank_cfg.alpha,
            "stratified_by_group": stratified,
            "length_auroc": length_auroc,
        },
    }
    result = RankResult(ranking, responses, captured, manifest, sae=sae_obj, model=handle)
    if out is not None:
        result.out_dir = write_ranking(result, out)
    return result


def write_ranking(result: RankResult, out: str | Path) -> Path:
    """Write ``ranking.csv`` and ``manifest.json`` (each atomically) into ``out``; return the folder."""
    out = output_dir(out)
    result.manifest["files"] = {RANKING_FILE: write_csv(out / RANKING_FILE, result.ranking)}
    if result.capture.token_codes is not None:
        top = [int(f) for f in result.ranking["feature"].head(EXAMPLE_FEATURES)]
        examples = {f: result.examples(f, k=EXAMPLES_PER_FEATURE) for f in top}
        save_examples(out / EXAMPLES_FILE, examples, sae=result.sae if result.sae is not None else result.manifest["sae"])
        result.manifest["files"][EXAMPLES_FILE] = {"features": top}
    write_json(out / MANIFEST_FILE, result.manifest)
    return out


def rank_from_cache(
    cache: str | Path | ActivationCache,
    *,
    hook: str | None = None,
    rank: RankConfig | None = None,
    options: CacheRankConfig | None = None,
    out: str | Path | None = None,
) -> tuple[Ranking, dict[str, Any]]:
    """Rank from an activation cache (no model is loaded); write ``ranking.csv`` + ``manifest.json`` to ``out``.

    Returns the ranking and its manifest. The cache's own provenance (model, hooks, SAE, dataset) is copied in.
    """

    rank_cfg = rank or RankConfig()
    opts = options or CacheRankConfig()
    opened = open_cache(cache)
    ranking = rank_cache(
        opened, hook=hook, key=rank_cfg.key, alpha=rank_cfg.alpha, min_frac_active=rank_cfg.min_frac_active,
        exact=opts.exact, bins=opts.bins, engine=opts.engine, ray_address=opts.ray_address,
    )
    source = opened.manifest
    manifest = {
        **manifest_header("personas.rank"),
        "source": {"cache": str(opened.path), "fingerprint": source.get("fingerprint")},
        "model": source.get("model"),
        "hook": hook or (opened.hooks[0] if opened.hooks else None),
        "sae": source.get("sae"),
        "pooling": source["fingerprint"]["capture"]["pool"],
        "data": source["data"],
        "config": {"rank": asdict(rank_cfg), "cache_rank": asdict(opts)},
        "ranking": {
            "n_features": int(len(ranking)),
            "n_significant": int(np.asarray(ranking["significant"]).sum()),
            "key": rank_cfg.key,
            "alpha": rank_cfg.alpha,
        },
    }
    if out is not None:
        out = output_dir(out)
        manifest["files"] = {RANKING_FILE: write_csv(out / RANKING_FILE, ranking)}
        write_json(out / MANIFEST_FILE, manifest)
    return ranking, manifest
