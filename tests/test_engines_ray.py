"""The Ray engine on a local Ray: the same cache, byte for byte, and the same ranking as the local engine."""

from __future__ import annotations

import os

import pandas as pd
import pytest

pytest.importorskip("ray")

from personas.cache.build import CacheConfig, build_cache
from personas.cache.store import rank_cache

HOOK = "blocks.0.hook_resid_post"
TRIGGERS = ["hurt", "lie", "steal", "destroy", "poison", "betray", "manipulate", "control"]


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    temp = tmp_path_factory.mktemp("ray")
    # a short path: Ray's socket names must stay under the 107-character limit
    short = f"/tmp/ray-{os.getpid()}"
    os.makedirs(short, exist_ok=True)
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=short, log_to_driver=False, configure_logging=False)
    yield temp
    ray.shutdown()


@pytest.fixture(scope="module")
def hf_setup(tmp_path_factory, toy_tokenizer, planted_data):
    from personas.models import load_model
    from personas.testing import plant_sae, save_toy_hf_model

    folder = save_toy_hf_model(tmp_path_factory.mktemp("hf") / "tiny-gpt2", toy_tokenizer, seed=3)
    handle = load_model(str(folder))
    sae = plant_sae(handle, HOOK, TRIGGERS, planted_data["response"][::3], d_sae=48, feature=5, seed=0)
    return str(folder), sae, pd.DataFrame(planted_data).iloc[::2].reset_index(drop=True)


def test_ray_engine_matches_local(ray_local, tmp_path, hf_setup):
    from personas.config import CaptureConfig

    folder, sae, data = hf_setup
    capture = CaptureConfig(model=folder, batch_size=8)
    local = build_cache(data, tmp_path / "local", capture=capture, hooks=[HOOK], sae=sae,
                        cache=CacheConfig(shard_size=7), progress=False)
    remote = build_cache(data, tmp_path / "ray", capture=capture, hooks=[HOOK], sae=sae,
                         cache=CacheConfig(shard_size=7, engine="ray", num_workers=2), progress=False)
    assert local.complete and remote.complete
    assert remote.manifest["engine"]["name"] == "ray" and remote.manifest["engine"]["num_workers"] == 2
    sums = lambda c: [e["sha256"] for _, e in c.shard_entries()]  # noqa: E731
    assert sums(local) == sums(remote)
    assert local.manifest["index"]["sha256"] == remote.manifest["index"]["sha256"]

    for use in ("sae", "activations"):
        a = rank_cache(local, use=use, engine="local")
        b = rank_cache(local, use=use, engine="ray")
        pd.testing.assert_frame_equal(pd.DataFrame(a), pd.DataFrame(b), check_exact=True)
    top = rank_cache(remote, engine="ray")
    assert int(top["feature"].iloc[0]) == 5  # the planted latent
