"""Activation caches: capture once into resumable shards, then rank (or read) many times without the model.

* `personas.cache.shards`: the shard file format (safetensors, deterministic, checksummed);
* `personas.cache.build`: `build_cache`, sharded capture that resumes after a kill and refuses a different job;
* `personas.cache.store`: `open_cache` -> `ActivationCache`, and `rank_cache`;
* `personas.cache.binned`: `BinnedRanker`, histogram ranking in flat memory;
* `personas.cache.spill`: `SpillRanker`, exact ranking in bounded memory (non-zeros spilled to disk by feature block);
* `personas.cache.lock`: `CacheLock`, one writing job per cache folder;
* `personas.cache.engines`: where shards are captured and scored (this process, or Ray).
"""

from personas.cache.binned import BinnedRanker
from personas.cache.build import build_cache
from personas.cache.shards import Shard, read_shard_file
from personas.cache.spill import SpillRanker
from personas.cache.store import ActivationCache, open_cache, rank_cache

__all__ = ["ActivationCache", "BinnedRanker", "Shard", "SpillRanker", "build_cache", "open_cache", "rank_cache",
           "read_shard_file"]
