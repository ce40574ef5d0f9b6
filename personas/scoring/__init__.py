"""The *score* step: pure statistics over feature matrices (numpy, scipy, pandas; never models, files or caches).

* `personas.scoring.checks`: input checks (labels, groups, feature matrices, arguments), one copy each;
* `personas.scoring.kernels`: the vectorised rank statistics and moments of every feature at once;
* `personas.scoring.metrics`: from sums to the metric columns, Benjamini-Hochberg, covariate correlation, the
  AUROC of one score column (`auroc`, the one helper for it);
* `personas.scoring.ranking`: `rank_features` -> `Ranking`, `KEYS`, `SCORE_FUNCTIONS`;
* `personas.scoring.selector`: `FeatureRanker`, a scikit-learn feature selector;
* `personas.scoring.streaming`: `StreamingRanker`, the same ranking accumulated shard by shard;
* `personas.scoring.binned`: `BinnedRanker`, a histogram ranking in memory independent of the responses;
* `personas.scoring.paired`: `diff_features`, paired tests for model diffing.
"""

from personas.scoring.binned import BinnedRanker
from personas.scoring.checks import check_groups, check_labels, has_mixed_group
from personas.scoring.kernels import delong_variance
from personas.scoring.metrics import (
    METHOD_NOTES,
    auroc,
    benjamini_hochberg,
    covariate_correlation,
    metrics_from_stats,
)
from personas.scoring.paired import diff_features
from personas.scoring.ranking import (
    KEYS,
    SCORE_FUNCTIONS,
    Ranking,
    build_ranking,
    check_rank_args,
    feature_metrics,
    rank_features,
)
from personas.scoring.selector import FeatureRanker
from personas.scoring.streaming import StreamingRanker

__all__ = [
    "KEYS",
    "METHOD_NOTES",
    "SCORE_FUNCTIONS",
    "BinnedRanker",
    "FeatureRanker",
    "Ranking",
    "StreamingRanker",
    "auroc",
    "benjamini_hochberg",
    "build_ranking",
    "check_groups",
    "check_labels",
    "check_rank_args",
    "covariate_correlation",
    "delong_variance",
    "diff_features",
    "feature_metrics",
    "has_mixed_group",
    "metrics_from_stats",
    "rank_features",
]
