"""Where the cache jobs run: in this process (``local``, the default) or on a Ray cluster (``ray``).

An engine does two things for `personas.cache`:

* ``start_capture(spec) -> dict`` then ``run_capture(tasks) -> iterator of ShardResult``: capture shards of
  responses with one model replica per worker and return each shard serialized (the driver alone writes files);
* ``score(tasks, rank_args) -> StreamingRanker``: score shards of a cache and merge the per-shard accumulators in
  shard order, so every engine returns the same numbers.

``close()`` releases the workers. Engines are context managers.

The local engine needs nothing beyond the core install; the Ray engine needs the optional extra
(``pip install personas[ray]``) and is imported only when asked for.
"""

from __future__ import annotations

from typing import Any

from personas.cache.engines.local import LocalEngine
from personas.cache.engines.ray_engine import RayEngine
from personas.errors import PersonasError

ENGINES = ("local", "ray")


def get_engine(name: str = "local", *, address: str | None = None, num_workers: int | None = None,
               **kwargs: Any) -> LocalEngine | RayEngine:
    """An engine by name: ``"local"`` or ``"ray"`` (``address``: a Ray cluster, default a local Ray)."""
    if name == "local":
        if address:
            raise PersonasError(f"ray_address={address!r} was given with engine='local'; use engine='ray' for a cluster.")
        return LocalEngine()
    if name == "ray":
        return RayEngine(address=address, num_workers=num_workers, **kwargs)
    raise PersonasError(f"engine={name!r}; expected one of {ENGINES}.")


__all__ = ["ENGINES", "get_engine"]
