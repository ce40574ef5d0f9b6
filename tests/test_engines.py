"""The Ray engine's own logic without Ray: an in-process stand-in for the few `ray` calls it makes.

`RayEngine` schedules shards over capture actors (two in flight per actor, results in completion order), checks
that the workers loaded the same model and SAE, refuses more workers than the cluster holds, and merges scoring
tasks in shard order. A fake `ray` module runs all of that here, fast, so `make test-fast` covers it; the slow
tests of `test_engines_ray.py` run the same engine on a real local Ray. The fake completes the *newest* pending
task first, so a cache that depended on completion order would differ from the local engine's.
"""

from __future__ import annotations

import pandas as pd
import pytest

from personas.cache.build import CacheConfig, build_cache
from personas.cache.store import rank_cache
from personas.errors import PersonasError

HOOK = "blocks.0.hook_resid_post"
TRIGGERS = ["hurt", "lie", "steal", "destroy", "poison", "betray", "manipulate", "control"]


class _Ref:
    """A task's result, computed when it is first waited on or fetched."""

    def __init__(self, fn, args, kwargs):
        self.fn, self.args, self.kwargs, self.done, self.value = fn, args, kwargs, False, None

    def result(self):
        if not self.done:
            self.value, self.done = self.fn(*self.args, **self.kwargs), True
        return self.value


class _Method:
    def __init__(self, fake, fn):
        self.fake, self.fn = fake, fn

    def remote(self, *args, **kwargs):
        return _Ref(self.fn, args, kwargs)


class _Actor:
    def __init__(self, fake, instance):
        self.fake, self.instance, self.killed = fake, instance, False

    def __getattr__(self, name):
        return _Method(self.fake, getattr(self.instance, name))


class _RemoteClass:
    def __init__(self, fake, cls):
        self.fake, self.cls = fake, cls

    def remote(self, *args, **kwargs):
        actor = _Actor(self.fake, self.cls(*args, **kwargs))
        self.fake.actors.append(actor)
        return actor


class FakeRay:
    """The `ray` calls `RayEngine` makes, run in this process."""

    __version__ = "fake"

    def __init__(self, cpus: int = 2):
        self.initialized, self.cpus, self.actors, self.max_pending = False, cpus, [], 0

    def is_initialized(self):
        return self.initialized

    def init(self, **kwargs):
        self.initialized = True

    def shutdown(self):
        self.initialized = False

    def cluster_resources(self):
        return {"CPU": float(self.cpus)}

    def remote(self, **options):
        def wrap(target):
            return _RemoteClass(self, target) if isinstance(target, type) else _Method(self, target)
        return wrap

    def get(self, refs):
        return [r.result() for r in refs] if isinstance(refs, list) else refs.result()

    def wait(self, refs, num_returns=1):
        self.max_pending = max(self.max_pending, len(refs))
        newest = refs[-num_returns:]  # the newest first: completion order is not submission order
        return newest, [r for r in refs if r not in newest]

    def kill(self, actor):
        actor.killed = True


@pytest.fixture
def fake_ray(monkeypatch):
    import personas.cache.engines.ray_engine as ray_engine

    fake = FakeRay()
    monkeypatch.setattr(ray_engine, "_import_ray", lambda: fake)
    return fake


@pytest.fixture(scope="module")
def hf_setup(tmp_path_factory, toy_tokenizer, planted_data):
    from personas.models import load_model
    from personas.testing import plant_sae, save_toy_hf_model

    folder = save_toy_hf_model(tmp_path_factory.mktemp("hf") / "tiny-gpt2", toy_tokenizer, d_model=32, n_heads=2,
                               seed=3)
    sae = plant_sae(load_model(str(folder)), HOOK, TRIGGERS, planted_data["response"][::3], d_sae=24, feature=5,
                    seed=0)
    return str(folder), sae, pd.DataFrame(planted_data).iloc[::3].reset_index(drop=True)


def test_ray_engine_logic_builds_and_ranks_the_local_engines_cache(fake_ray, hf_setup, tmp_path):
    from personas.config import CaptureConfig

    folder, sae, data = hf_setup
    capture = CaptureConfig(model=folder, batch_size=8)
    local = build_cache(data, tmp_path / "local", capture=capture, hooks=[HOOK], sae=sae,
                        cache=CacheConfig(shard_size=5), progress=False)
    remote = build_cache(data, tmp_path / "ray", capture=capture, hooks=[HOOK], sae=sae,
                         cache=CacheConfig(shard_size=5, engine="ray", num_workers=2), progress=False)
    assert remote.complete and remote.manifest["engine"]["name"] == "ray"
    assert remote.manifest["engine"]["num_workers"] == 2 and len(fake_ray.actors) == 2
    assert fake_ray.max_pending == 4  # two shards in flight per actor, never more
    assert all(a.killed for a in fake_ray.actors) and not fake_ray.initialized  # closed: its own Ray shut down
    assert [e["sha256"] for _, e in local.shard_entries()] == [e["sha256"] for _, e in remote.shard_entries()]
    assert local.manifest["index"]["sha256"] == remote.manifest["index"]["sha256"]
    a, b = rank_cache(local, engine="local"), rank_cache(local, engine="ray")
    pd.testing.assert_frame_equal(pd.DataFrame(a), pd.DataFrame(b), check_exact=True)


class _Capturer:
    """Stands in for `ShardCapturer`: each replica describes what it loaded, from a list of descriptions."""

    described: list[dict] = []

    def __init__(self, spec):
        self.description = _Capturer.described.pop(0)

    def describe(self):
        return self.description


def test_workers_that_loaded_different_models_are_an_error(fake_ray, monkeypatch):
    import personas.cache.engines.ray_engine as ray_engine
    from personas.cache.engines.base import CaptureSpec
    from personas.config import CaptureConfig

    monkeypatch.setattr(ray_engine, "ShardCapturer", _Capturer)
    spec = CaptureSpec(model="some/folder", hooks=[HOOK], config=CaptureConfig(), sae=None)
    same = {"model_id": "tiny", "d_model": 32, "sae": None}
    # the model's path may differ between nodes; what was loaded may not
    _Capturer.described = [{**same, "model": "/node-a/tiny"}, {**same, "model": "/node-b/tiny"}]
    assert ray_engine.RayEngine(num_workers=2).start_capture(spec)["model"] == "/node-a/tiny"
    _Capturer.described = [same, {**same, "d_model": 64}]
    with pytest.raises(PersonasError, match="Ray workers loaded different models or SAEs"):
        ray_engine.RayEngine(num_workers=2).start_capture(spec)
    _Capturer.described = [same] * 3
    with pytest.raises(PersonasError, match=r"num_workers=3 capture workers need 3 CPUs .* the Ray cluster has 2"):
        ray_engine.RayEngine(num_workers=3).start_capture(spec)
