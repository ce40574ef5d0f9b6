"""The explain job: a rank run's stored token codes -> explanations of its latents, scored -> ``explanations.csv``.

`explain` is what ``personas explain RUN_DIR [FEATURE...]`` runs and what ``personas.explain(result_or_run, ...)``
is. It reads the run, never the model: the asked latents' per-token codes from the `RankResult` (made with
``keep_tokens=True``) or from the folder's ``token_codes.npz`` (``personas rank --report``) or its activation
cache (``rank --cache``); the tokenizer alone, to turn token ids into text; and the answers themselves (their text
and their question) from the data the run was ranked from, which the manifest names (or ``data=``), checked
against the run's dataset hash. Without them it still works, from decoded tokens, splitting by answer.

Latents: those named, else the ranking's top ``n_features`` rows without a confound flag (``kind`` empty). With
``score_on`` (another rank run of the same model, hook and SAE, e.g. on held-out questions), the scoring windows
come from that run. Intervention figures come from the ``personas validate`` / ``steer`` runs inside the folder
and the folders named in ``interventions``. The table (`personas.explaining.Explanations`) is written as
``explanations.csv`` into the run folder and listed in its manifest (with the explain run's provenance), where the
feature cards and ``report.html`` find it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from personas.artifacts import TOKEN_CODES_FILE, manifest_header
from personas.config import API_SCORERS, DataConfig, ExplainConfig
from personas.data.responses import load_responses
from personas.errors import DataError, PersonasError
from personas.explaining.evidence import Corpus
from personas.explaining.explainers import ApiExplainer, OfflineExplainer
from personas.explaining.interventions import intervention_figures
from personas.explaining.latents import explain_latents
from personas.explaining.llm import CachedLLM
from personas.explaining.scorers import DetectionScorer, EmbeddingScorer, FuzzingScorer
from personas.explaining.table import Explanations, write_explanations
from personas.report.run_data import open_run_data, read_run

__all__ = ["default_features", "explain"]

logger = logging.getLogger(__name__)


def default_features(ranking: Any, n: int) -> list[int]:
    """The ranking's first ``n`` latents without a confound flag (``kind`` empty), best first."""
    kind = ranking["kind"].fillna("").astype(str) if "kind" in ranking else None
    rows = ranking if kind is None else ranking[kind == ""]
    return [int(f) for f in rows["feature"].head(n)]


def explain(
    source: Any,
    features: Sequence[int] | None = None,
    *,
    explainer: str | Any | None = None,
    scorers: str | Sequence[Any] | None = None,
    config: ExplainConfig | None = None,
    data: Any = None,
    score_on: Any = None,
    interventions: Sequence[str | os.PathLike] = (),
    tokenizer: Any = None,
    embedder: Any = None,
    write: bool = True,
    progress: bool = False,
) -> Explanations:
    """Explain latents of a rank run in words and score the explanations on held-out windows.

    Args:
        source: a `RankResult` made with ``keep_tokens=True``, or the ``--out`` folder of ``personas rank
            --report`` (or of ``personas rank --cache``).
        features: latent indices; default the ranking's top ``config.n_features`` latents without a confound flag.
        explainer: ``"offline"``, ``"openai:MODEL"``, ``"http://HOST:PORT/v1:MODEL"`` or an explainer object
            (overrides ``config.explainer``).
        scorers: ``"embedding,detection,fuzzing"`` (any of them) or scorer objects (overrides ``config.scorers``).
        config: `ExplainConfig` (windows, set sizes, seed, bootstrap, API options).
        data: the answers the run was ranked from (a file or anything `load_responses` reads), for their text and
            questions; default the file the manifest names.
        score_on: another rank run (folder or `RankResult`) of the same model, hook and SAE to score on.
        interventions: folders of ``personas validate`` / ``steer`` runs of these latents.
        tokenizer: the model's tokenizer, when the run's model folder is not at hand.
        embedder: a sentence embedder for the embedding scorer (default: the offline MiniLM).
        write: write ``explanations.csv`` into the run folder (when there is one).
        progress: show a progress bar while the API explainer and scorers wait for replies.

    Returns:
        the `Explanations` table; ``.attrs["path"]`` is the file written (or None), ``.attrs["explain"]`` the
        provenance written into the run's manifest.
    """
    config = _config(config, explainer, scorers)
    start, cpu = time.perf_counter(), time.process_time()
    ranking, manifest, run_dir = _open(source)
    chosen = _features(features, ranking, config.n_features)
    candidates = _spare(chosen, ranking)
    corpus, texts_from = _corpus(source, chosen + candidates, manifest, data, tokenizer)
    spare = [f for f in candidates if corpus.column(f).any()][:1]
    other = None
    if score_on is not None:
        other_ranking, other_manifest, _ = _open(score_on)
        _same_site(manifest, other_manifest)
        other, _ = _corpus(score_on, chosen + spare, other_manifest, None, tokenizer or corpus.tokenizer)
    the_explainer, the_scorers, llms = _build(config, explainer, scorers, embedder, progress)
    ranks = {int(f): i + 1 for i, f in enumerate(ranking["feature"].to_numpy())}
    figures = intervention_figures(run_dir, interventions)
    table = explain_latents(corpus, chosen, explainer=the_explainer, scorers=the_scorers, config=config,
                            score_on=other, spare=spare, ranks={f: ranks.get(f) for f in chosen},
                            interventions=figures)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    provenance = {
        **manifest_header("personas.explain"),
        "config": dataclasses.asdict(config), "features": chosen, "spare": spare,
        "explainer": the_explainer.describe(), "scorers": [s.describe() for s in the_scorers],
        "answers_from": texts_from, "score_on": None if score_on is None else _describe_source(score_on),
        "interventions": [str(p) for p in interventions], "seconds": round(seconds, 2),
        "seconds_per_latent": round(seconds / len(chosen), 3), "cpu_seconds": round(cpu, 2),
        "cpu_seconds_per_latent": round(cpu / len(chosen), 3),
        "api": {llm.name: dict(llm.stats) for llm in llms}, "notes": list(table.notes),
    }
    path = None
    if write and run_dir is not None:
        path = write_explanations(run_dir, table, provenance)
        logger.info("wrote %s", path)
    table.attrs = {"path": None if path is None else str(path), "explain": provenance}
    return table


# ---------------------------------------------------------------------------------------------------- inputs


def _config(config: ExplainConfig | None, explainer: Any, scorers: Any) -> ExplainConfig:
    config = config or ExplainConfig()
    if config is not None and not isinstance(config, ExplainConfig):
        raise DataError(f"explain(config={type(config).__name__}); expected an ExplainConfig.")
    changes = {}
    if isinstance(explainer, str):
        changes["explainer"] = explainer
    if isinstance(scorers, str):
        changes["scorers"] = scorers
    return dataclasses.replace(config, **changes) if changes else config


def _open(source: Any) -> tuple[Any, dict[str, Any], Path | None]:
    """(ranking, manifest, run folder or None) of a `RankResult` or a rank folder that holds per-token codes."""
    if hasattr(source, "ranking") and hasattr(source, "capture"):
        if source.capture.token_codes is None:
            raise PersonasError("this RankResult kept no per-token codes; rank with personas.rank(..., "
                                "keep_tokens=True) (or `personas rank --report`) to explain its latents.")
        return source.ranking, source.manifest, getattr(source, "out_dir", None)
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(f"explain got a {type(source).__name__}; expected a rank run folder or a RankResult made "
                        "with keep_tokens=True.")
    run_dir = Path(source)
    ranking, manifest = read_run(run_dir)
    if not (run_dir / TOKEN_CODES_FILE).is_file() and not (manifest.get("source") or {}).get("cache"):
        raise PersonasError(
            f"{str(run_dir)!r} holds no per-token codes ({TOKEN_CODES_FILE}); explanations are drawn from the "
            f"answers' token codes, never from a new forward pass. Rerun `personas rank DATA --report --out "
            f"{run_dir}`, or rank a cache built with an SAE and tokens (--cache).")
    if not manifest.get("sae"):
        raise PersonasError(f"{str(run_dir)!r} ranked raw activation dimensions (no SAE); `personas explain` "
                            "explains SAE latents. Rank with an SAE.")
    return ranking, manifest, run_dir


def _features(features: Sequence[int] | None, ranking: Any, n: int) -> list[int]:
    if features is None or (not isinstance(features, (str, bytes)) and len(features) == 0):
        chosen = default_features(ranking, n)
        if not chosen:
            raise PersonasError("the ranking has no latent without a confound flag to explain; name latents.")
        return chosen
    if isinstance(features, (str, bytes, int)):
        features = [features]
    out = []
    for f in features:
        text = str(f).strip()
        if isinstance(f, bool) or not text.isdigit():
            raise DataError(f"feature {f!r} is not a latent index; expected non-negative integers such as 3382.")
        out.append(int(text))
    return list(dict.fromkeys(out))


def _spare(chosen: list[int], ranking: Any, n: int = 5) -> list[int]:
    """With one latent, the candidates for one more (the next unflagged ones in the ranking, the first that fires is
    taken) to lend its explanation to the random-latent baseline."""
    if len(chosen) > 1:
        return []
    order = default_features(ranking, n + 1) + [int(f) for f in ranking["feature"].head(n + 1)]
    return [f for f in dict.fromkeys(order) if f not in chosen][:n]


def _corpus(source: Any, features: list[int], manifest: dict[str, Any], data: Any, tokenizer: Any
            ) -> tuple[Corpus, str]:
    run = open_run_data(source, features, tokenizer=tokenizer)
    n = int(np.asarray(run.offsets).size - 1)
    texts = groups = None
    answers_from = "decoded tokens (the answers were not found: no questions known)"
    responses = getattr(source, "responses", None) if run.texts is not None else None
    if responses is None:
        responses = _responses(data, manifest, n)
    if responses is not None:
        texts = list(responses.texts)
        groups = np.asarray(responses.groups) if responses.has_groups else None
        answers_from = str(responses.source)
    name = str(run.run_dir) if run.run_dir is not None else "the RankResult"
    corpus = Corpus(run.codes, run.columns, run.offsets, run.token_ids, run.labels, run.tokenizer, groups=groups,
                    texts=texts, name=name)
    return corpus, answers_from


def _responses(data: Any, manifest: dict[str, Any], n: int) -> Any:
    """The run's answers (their text and question), read from ``data`` or the file its manifest names, when
    they are the ones ranked (same dataset hash); else None."""
    recorded = manifest.get("data") or {}
    source = data if data is not None else recorded.get("source")
    if source is None or (isinstance(source, (str, os.PathLike)) and not Path(source).is_file()):
        if data is not None:
            raise DataError(f"data={str(data)!r} is not a file; expected the answers the run was ranked from.")
        logger.warning("the answers this run ranked (%s) are not at hand: windows are decoded from the tokens and "
                       "split by answer, not by question. Pass data= (--data) to use them.", source)
        return None
    cfg = (manifest.get("config") or {}).get("data") or {}
    fields = {f.name for f in dataclasses.fields(DataConfig)}
    responses = load_responses(source, DataConfig(**{k: v for k, v in cfg.items() if k in fields}))
    expected = recorded.get("dataset_hash")
    if len(responses) != n or (expected and responses.dataset_hash != expected):
        message = (f"the answers in {str(source)!r} are not the ones this run ranked ({len(responses)} answers, "
                   f"dataset hash {responses.dataset_hash[:12]}; the run: {n} answers, {str(expected)[:12]})")
        if data is not None:
            raise DataError(message + "; pass the file the run was ranked from.")
        logger.warning("%s: windows are decoded from the tokens and split by answer.", message)
        return None
    return responses


def _describe_source(source: Any) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__


def _site(manifest: dict[str, Any]) -> tuple[Any, Any, Any]:
    model = manifest.get("model")
    model = model.get("model") if isinstance(model, dict) else model
    sae = manifest.get("sae") or {}
    return model, manifest.get("hook"), sae.get("spec") or sae.get("sae_id")


def _same_site(a: dict[str, Any], b: dict[str, Any]) -> None:
    if _site(a) != _site(b):
        raise DataError(f"score_on is a run of another model, hook or SAE ({_site(b)}) than the run explained "
                        f"({_site(a)}); its latents are other latents. Score on a run of the same site.")


# ---------------------------------------------------------------------------------------------------- parts


def _build(config: ExplainConfig, explainer: Any, scorers: Any, embedder: Any, progress: bool = False
           ) -> tuple[Any, list[Any], list[Any]]:
    """The explainer, the scorers and the API models they ask (one per spec, shared)."""
    llms: dict[str, CachedLLM] = {}

    def llm(spec: str) -> CachedLLM:
        if spec not in llms:
            llms[spec] = CachedLLM(spec, progress=progress, **config.api_options())
        return llms[spec]

    if explainer is not None and not isinstance(explainer, str):
        the_explainer = explainer
    elif config.explainer.strip() == "offline":
        the_explainer = OfflineExplainer()
    else:
        the_explainer = ApiExplainer(llm(config.explainer.strip()))
    if scorers is not None and not isinstance(scorers, str):
        the_scorers = list(scorers)
    else:
        the_scorers = []
        for name in config.scorer_list():
            if name == "embedding":
                the_scorers.append(EmbeddingScorer(embedder))
            elif name in API_SCORERS:
                cls = DetectionScorer if name == "detection" else FuzzingScorer
                the_scorers.append(cls(llm(config.api_model()), config.batch_windows, config.seed))
    if not the_scorers:
        raise DataError("explain got no scorer; name at least one (embedding, detection, fuzzing).")
    return the_explainer, the_scorers, list(llms.values())
