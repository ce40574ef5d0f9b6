"""The Ray engine on a local Ray: the same cache, byte for byte, and the same ranking as the local engine."""

from __future__ import annotations

import os
import shutil

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
    shutil.rmtree(short, ignore_errors=True)


@pytest.fixture(scope="module")
def hf_setup(tmp_path_factory, toy_tokenizer, planted_data):
    from personas.models import load_model
    from personas.testing import plant_sae, save_toy_hf_model

    folder = save_toy_hf_model(tmp_path_factory.mktemp("hf") / "tiny-gpt2", toy_tokenizer, seed=3)
    handle = load_model(str(folder))
    sae = plant_sae(handle, HOOK, TRIGGERS, planted_data["response"][::3], d_sae=48, feature=5, seed=0)
    return str(folder), sae, pd.DataFrame(planted_data).iloc[::2].reset_index(drop=True)


@pytest.mark.slow
@pytest.mark.ray
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


@pytest.mark.slow
@pytest.mark.ray
def test_more_workers_than_the_cluster_holds_is_an_error_not_a_hang(ray_local, hf_setup):
    from personas.cache.engines.base import CaptureSpec
    from personas.cache.engines.ray_engine import RayEngine
    from personas.config import CaptureConfig
    from personas.errors import PersonasError

    folder, _, _ = hf_setup
    engine = RayEngine(num_workers=3)  # the fixture's local Ray has 2 CPUs, one per worker
    with pytest.raises(PersonasError, match=r"num_workers=3 capture workers need 3 CPUs \(1 each\) but the Ray "
                                            r"cluster has 2. Use --num-workers 2"):
        engine.start_capture(CaptureSpec(model=folder, sae=None, hooks=[HOOK], config=CaptureConfig(model=folder)))
    engine.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.ray
def test_readme_cluster_recipe_on_a_two_node_local_cluster(tmp_path, hf_setup):
    """The README's recipe: ``ray start --head`` plus ``ray start --address=HEAD:PORT`` on a second node (here a
    second raylet on this machine, one CPU each), then ``personas cache`` and ``personas rank --cache`` with
    ``--engine ray --ray-address HEAD:PORT``: the same shards, byte for byte, and the same ranking as the local
    engine. Only the processes this test started are stopped (by process group), never ``ray stop``."""
    import signal
    import subprocess
    import sys
    import time

    ray_bin = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    assert ray_bin, "the ray CLI is installed with ray"
    folder, sae, data = hf_setup
    sae_dir = tmp_path / "sae"
    sae.save_model(str(sae_dir))
    data_file = tmp_path / "data.jsonl"
    data.to_json(data_file, orient="records", lines=True)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    temp = f"/tmp/ray2n-{os.getpid()}"  # Ray's socket paths must stay short
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus", "1", "--disable-usage-stats", "--block", "--node-ip-address", "127.0.0.1"]
    nodes = []

    def start(args: list[str]) -> subprocess.Popen:
        node = subprocess.Popen([ray_bin, "start", *args, *common], env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        nodes.append(node)
        return node

    def alive_nodes() -> int:
        probe = (f"import ray; ray.init(address={address!r}, log_to_driver=False, configure_logging=False); "
                 "print(sum(1 for n in ray.nodes() if n['Alive']))")
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
        return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0

    try:
        start(["--head", "--port", str(port), "--temp-dir", temp, "--include-dashboard", "false"])
        start(["--address", address])  # `ray start --address` retries until the head answers
        deadline, alive = time.time() + 120, 0
        while time.time() < deadline:  # each probe is a driver process (seconds): as few as needed
            alive = alive_nodes()
            if alive >= 2:
                break
            time.sleep(1)
        assert alive == 2, f"the two-node cluster did not come up ({alive} alive nodes)"

        def personas(*args: str) -> subprocess.CompletedProcess:
            done = subprocess.run([sys.executable, "-m", "personas", *args], env=env, capture_output=True, text=True,
                                  timeout=300)
            assert done.returncode == 0, done.stderr[-2000:]
            return done

        capture = [str(data_file), "--model", folder, "--hook", HOOK, "--sae", str(sae_dir), "--shard-size", "7",
                   "--batch-size", "8", "--quiet"]
        personas("cache", *capture, "--out", str(tmp_path / "ray"), "--engine", "ray", "--ray-address", address,
                 "--num-workers", "2")
        # the local engine in this process: no second interpreter to import torch into
        from personas.cli.main import main as personas_main

        assert personas_main(["cache", *capture, "--out", str(tmp_path / "local")]) == 0
        from personas.cache.store import open_cache

        remote, local = open_cache(tmp_path / "ray"), open_cache(tmp_path / "local")
        assert remote.manifest["engine"]["num_workers"] == 2 and remote.manifest["engine"]["cluster_cpus"] == 2
        assert [e["sha256"] for _, e in remote.shard_entries()] == [e["sha256"] for _, e in local.shard_entries()]
        personas("rank", "--cache", str(tmp_path / "ray"), "--engine", "ray", "--ray-address", address, "--out",
                 str(tmp_path / "rank-ray"), "--quiet")
        assert personas_main(["rank", "--cache", str(tmp_path / "local"), "--out", str(tmp_path / "rank-local"),
                              "--quiet"]) == 0
        a = pd.read_csv(tmp_path / "rank-ray" / "ranking.csv")
        b = pd.read_csv(tmp_path / "rank-local" / "ranking.csv")
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        assert int(a["feature"].iloc[0]) == 5  # the planted latent
    finally:
        for node in reversed(nodes):  # our own process groups only
            try:
                os.killpg(node.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for node in reversed(nodes):  # a node busy stopping its workers gets a few seconds, then SIGKILL
            try:
                node.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait()
        shutil.rmtree(temp, ignore_errors=True)
