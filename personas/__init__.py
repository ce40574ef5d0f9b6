"""personas: find the sparse-autoencoder features that mark a language model's misaligned persona.

The public API is re-exported here lazily, so `import personas` stays light: TransformerLens, sae-lens and
torch are imported only when a function that needs them is first used. The package's layout follows the
pipeline (see the README's "How the code is laid out"): ``data`` -> ``models``/``saes`` ->
``capturing`` -> ``scoring`` -> ``detect``/``steering`` -> ``cache`` -> ``jobs`` -> ``report`` -> ``cli``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    # data
    "load_responses": "personas.data",
    "Responses": "personas.data",
    "load_prompts": "personas.data",
    "Prompts": "personas.data",
    # config
    "DataConfig": "personas.config",
    "CaptureConfig": "personas.config",
    "SAEConfig": "personas.config",
    "RankConfig": "personas.config",
    "TrainSAEConfig": "personas.config",
    "EvalSAEConfig": "personas.config",
    "DetectorConfig": "personas.config",
    "SteerConfig": "personas.config",
    "DiffConfig": "personas.config",
    "CacheConfig": "personas.config",
    "CacheRankConfig": "personas.config",
    "JudgeConfig": "personas.config",
    "ExplainConfig": "personas.config",
    # models, SAEs and capture
    "load_model": "personas.models",
    "ModelHandle": "personas.models",
    "load_sae": "personas.saes",
    "check_site": "personas.saes",
    "open_site": "personas.saes.site",
    "capture": "personas.capturing",
    "Capture": "personas.capturing",
    "train_sae": "personas.training",
    "evaluate_saes": "personas.training",
    # scoring
    "rank_features": "personas.scoring",
    "Ranking": "personas.scoring",
    "FeatureRanker": "personas.scoring",
    "StreamingRanker": "personas.scoring",
    "diff_features": "personas.scoring",
    # detect, steer
    "PersonaDetector": "personas.detect",
    "DiffMeansProbe": "personas.detect",
    "load_detector": "personas.detect",
    "auroc_with_ci": "personas.detect",
    "steer": "personas.steering",
    # monitoring
    "Monitor": "personas.monitoring",
    "load_monitor": "personas.monitoring",
    "MonitorConfig": "personas.config",
    "ServeConfig": "personas.config",
    "steer_sweep": "personas.steering",
    "generate": "personas.steering",
    # caches
    "build_cache": "personas.cache",
    "open_cache": "personas.cache",
    "rank_cache": "personas.cache",
    "ActivationCache": "personas.cache",
    # jobs
    "rank_responses": "personas.jobs",
    "rank_cache_job": "personas.jobs",
    "rank": "personas.jobs",
    "RankResult": "personas.jobs",
    "rank_from_cache": "personas.jobs",
    "load_run": "personas.jobs",
    "steer_job": "personas.jobs",
    "validate_job": "personas.jobs",
    "fit_detector": "personas.jobs",
    "diff_models": "personas.jobs",
    "judge_responses": "personas.jobs",
    # judges
    "load_judge": "personas.judging",
    "judge_agreement": "personas.judging",
    # explanations
    "explain": "personas.jobs",
    "Explanations": "personas.explaining",
    "calibrate_monitor": "personas.jobs",
    # examples and reports
    "top_activating": "personas.report",
    "top_examples": "personas.report",
    "FeatureExamples": "personas.report",
    "write_report": "personas.report",
    "card": "personas.report.cards",
    "FeatureCard": "personas.report.cards",
    # errors
    "PersonasError": "personas.errors",
    "DataError": "personas.errors",
    "SiteMismatchError": "personas.errors",
    "ModelLoadError": "personas.errors",
    "CacheError": "personas.errors",
}

__all__ = sorted(_EXPORTS)

#: Submodules reachable as attributes without importing them first (``personas.plots.volcano(...)``).
_SUBMODULES = {
    "artifacts": "personas.artifacts", "cache": "personas.cache", "capturing": "personas.capturing",
    "cli": "personas.cli", "config": "personas.config", "data": "personas.data", "detect": "personas.detect",
    "devices": "personas.devices", "errors": "personas.errors", "explaining": "personas.explaining",
    "jobs": "personas.jobs", "judging": "personas.judging", "logs": "personas.logs",
    "models": "personas.models", "monitoring": "personas.monitoring",
    "report": "personas.report", "saes": "personas.saes", "scoring": "personas.scoring", "site": "personas.saes.site",
    "steering": "personas.steering", "testing": "personas.testing", "training": "personas.training",
    # short names for the modules used most in notebooks
    "plots": "personas.report.plots", "examples": "personas.report.examples", "cards": "personas.report.cards",
}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(_SUBMODULES[name])
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'personas' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__ + list(_SUBMODULES))
