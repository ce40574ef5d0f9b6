"""The *score* step: pure statistics over feature matrices (numpy, scipy, pandas; never models, files or caches).

* `personas.scoring.ranking`: `rank_features` -> `Ranking`, the score functions, `FeatureRanker`;
* `personas.scoring.streaming`: `StreamingRanker`, the same ranking accumulated shard by shard;
* `personas.scoring.paired`: `diff_features`, paired tests for model diffing.
"""

from personas.scoring.paired import diff_features
from personas.scoring.ranking import (
    KEYS,
    SCORE_FUNCTIONS,
    FeatureRanker,
    Ranking,
    StreamingRanker,
    benjamini_hochberg,
    build_ranking,
    check_rank_args,
    covariate_correlation,
    delong_variance,
    feature_metrics,
    has_mixed_group,
    metrics_from_stats,
    rank_features,
)

__all__ = [
    "KEYS",
    "SCORE_FUNCTIONS",
    "FeatureRanker",
    "Ranking",
    "StreamingRanker",
    "benjamini_hochberg",
    "build_ranking",
    "check_rank_args",
    "covariate_correlation",
    "delong_variance",
    "diff_features",
    "feature_metrics",
    "has_mixed_group",
    "metrics_from_stats",
    "rank_features",
]
