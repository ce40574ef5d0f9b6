"""personas: find the sparse-autoencoder features that mark a language model's misaligned persona.

The public API is re-exported here lazily, so `import personas` stays light: TransformerLens, sae-lens and
torch are imported only when a function that needs them is first used.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # data
    "load_responses": "personas.data",
    "Responses": "personas.data",
    # config
    "DataConfig": "personas.config",
    "CaptureConfig": "personas.config",
    "SAEConfig": "personas.config",
    "RankConfig": "personas.config",
    "TrainSAEConfig": "personas.config",
    # models and capture
    "load_model": "personas.models",
    "ModelHandle": "personas.models",
    "capture": "personas.capture",
    "Capture": "personas.capture",
    # SAEs
    "load_sae": "personas.saes",
    "check_site": "personas.saes",
    "train_sae": "personas.training",
    # scoring
    "rank_features": "personas.scoring",
    "Ranking": "personas.scoring",
    "FeatureRanker": "personas.scoring",
    # detect, steer, diff
    "PersonaDetector": "personas.detect",
    "DiffMeansProbe": "personas.detect",
    "fit_detector": "personas.detect",
    "load_detector": "personas.detect",
    "DetectorConfig": "personas.config",
    "auroc_with_ci": "personas.detect",
    "steer": "personas.steer",
    "steer_sweep": "personas.steer",
    "generate": "personas.steer",
    "SteerConfig": "personas.config",
    "diff_models": "personas.diff",
    "diff_features": "personas.diff",
    "load_prompts": "personas.diff",
    "DiffConfig": "personas.config",
    # caches
    "CacheConfig": "personas.config",
    "build_cache": "personas.cache",
    "open_cache": "personas.cache",
    "rank_cache": "personas.cache",
    "ActivationCache": "personas.cache",
    # examples and reports
    "top_activating": "personas.examples",
    "top_examples": "personas.examples",
    "FeatureExamples": "personas.examples",
    "write_report": "personas.report",
    # the whole job
    "rank": "personas.pipeline",
    "RankResult": "personas.pipeline",
    # errors
    "PersonasError": "personas.errors",
    "DataError": "personas.errors",
    "SiteMismatchError": "personas.errors",
    "ModelLoadError": "personas.errors",
    "CacheError": "personas.errors",
}

__all__ = sorted(_EXPORTS)


#: Submodules reachable as attributes (imported on first use).
_SUBMODULES = frozenset({"plot", "examples", "report", "toy", "scoring", "data", "models", "saes", "training",
                         "corpus", "detect", "diff", "cache", "config", "errors", "pipeline", "cli", "devices",
                         "provenance", "engines"})

#: Public functions named like the module that defines them: `personas.capture(...)`, `personas.steer(...)`.
_SHADOWED_MODULES = frozenset({"capture", "steer"})


class _Package(types.ModuleType):
    """Keeps `personas.capture` and `personas.steer` the functions after their modules are imported.

    Importing a submodule sets it as an attribute of its package, which would replace the function of the same
    name; those modules stay reachable in ``sys.modules`` and through ``from personas.capture import ...``.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED_MODULES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:  # personas.plot.volcano(...) without importing personas.plot first
        return importlib.import_module(f"personas.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'personas' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
