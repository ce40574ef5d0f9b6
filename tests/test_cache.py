"""The sharded activation cache: contents, resume to an identical cache, refusals, corruption, ranking from it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from personas.cache.build import CacheConfig, build_cache
from personas.cache.store import open_cache, rank_cache
from personas.config import CaptureConfig
from personas.errors import CacheError, PersonasError

from conftest import TOY_HOOK

HOOK2 = "blocks.1.hook_resid_post"


def _build(data, out, model, sae, **kw):
    cfg = kw.pop("cache", CacheConfig(shard_size=16))
    return build_cache(pd.DataFrame(data), out, hooks=kw.pop("hooks", [TOY_HOOK, HOOK2]), sae=sae, model=model,
                       cache=cfg, capture=CaptureConfig(batch_size=8), progress=False, **kw)


def _checksums(cache):
    return [e["sha256"] for _, e in cache.shard_entries()] + [cache.manifest["index"]["sha256"]]


@pytest.fixture(scope="module")
def full_cache(tmp_path_factory, toy_model, planted_sae, planted_data):
    return _build(planted_data, tmp_path_factory.mktemp("cache") / "full", toy_model, planted_sae)


def test_cache_holds_what_capture_returns(full_cache, toy_model, planted_sae, planted_data):
    from personas.capturing import capture

    cache = full_cache
    assert cache.complete and cache.n_rows == 80 and cache.n_shards == 5
    files = sorted(p.name for p in cache.path.iterdir())
    assert files == ["index.parquet", "manifest.json"] + [f"shard-0000{i}.safetensors" for i in range(5)]
    assert not any(p.suffix in (".pkl", ".pickle") for p in cache.path.iterdir())
    index = cache.index
    assert list(index.columns) == ["row", "id", "group", "label", "n_tokens", "shard"]
    np.testing.assert_array_equal(index["label"], planted_data["label"])

    rows = slice(16, 32)  # the second shard, captured on its own
    ref = capture(toy_model, planted_data["prompt"][rows], planted_data["response"][rows], hooks=[TOY_HOOK, HOOK2],
                  config=CaptureConfig(batch_size=8), sae=planted_sae, keep_tokens=True, progress=False)
    shard = cache.read_shard(1)
    assert (shard.start, shard.stop) == (16, 32)
    for hook in (TOY_HOOK, HOOK2):
        np.testing.assert_array_equal(shard.pooled[hook], ref.pooled[hook])
    np.testing.assert_array_equal(shard.features.toarray(), ref.features.toarray())
    np.testing.assert_array_equal(shard.token_codes.offsets, ref.token_codes.offsets)
    np.testing.assert_array_equal(shard.token_codes.codes.toarray(), ref.token_codes.codes.toarray())
    ids, codes = cache.token_codes(17)
    np.testing.assert_array_equal(ids, ref.token_codes.response(1)[0])
    assert index["n_tokens"].iloc[17] == len(ids) == codes.shape[0]
    with pytest.raises(PersonasError, match=r"row=80 is out of range; the cache holds rows 0..79"):
        cache.token_codes(80)
    m = cache.manifest
    assert m["fingerprint"]["dataset_hash"] and m["sae"]["weights_sha256"] and m["versions"]["numpy"]
    assert m["stop_at_layer"] is None and m["sae_hook"] == TOY_HOOK
    cache.verify()


def test_rank_cache_equals_in_memory_ranking_and_finds_planted_feature(full_cache):
    from personas.scoring.ranking import rank_features

    ranking = rank_cache(full_cache)
    assert int(ranking["feature"].iloc[0]) == 7
    ref = rank_features(full_cache.load_features(), full_cache.labels, full_cache.groups)
    np.testing.assert_array_equal(ranking["feature"], ref["feature"])
    for col in ("auroc", "group_auroc", "p_value", "q_value", "mean_diff", "cohens_d"):
        np.testing.assert_allclose(ranking[col], ref[col], rtol=1e-12, atol=1e-12)
    acts = rank_cache(full_cache, use="activations", hook=HOOK2, groups=False)
    assert len(acts) == 128 and not acts.meta["grouped"]
    assert ranking.meta["cache"]["use"] == "sae"


def test_binned_ranking_is_close_and_bounded(full_cache):
    exact = rank_cache(full_cache).set_index("feature").sort_index()
    binned = rank_cache(full_cache, exact=False, bins=64).set_index("feature").sort_index()
    assert int(rank_cache(full_cache, exact=False)["feature"].iloc[0]) == 7
    err = np.abs(exact["auroc"] - binned["auroc"])
    assert (err <= binned["auroc_max_err"] + 1e-12).all()
    np.testing.assert_allclose(binned["mean_diff"], exact["mean_diff"], rtol=1e-9, atol=1e-12)
    acts_exact = rank_cache(full_cache, use="activations").set_index("feature").sort_index()
    acts_binned = rank_cache(full_cache, use="activations", exact=False, bins=256).set_index("feature").sort_index()
    assert (np.abs(acts_exact["auroc"] - acts_binned["auroc"]) <= acts_binned["auroc_max_err"] + 1e-12).all()


def test_interrupted_job_resumes_to_an_identical_cache(tmp_path, full_cache, toy_model, planted_sae, planted_data,
                                                       monkeypatch):
    out = tmp_path / "resumed"
    part = _build(planted_data, out, toy_model, planted_sae, max_shards=2)
    assert not part.complete and len(part.manifest["shards"]) == 2
    with pytest.raises(CacheError, match="incomplete .2 of 5"):
        rank_cache(part)

    # a crash while the fourth shard is being written: it leaves a temporary file and is never renamed
    import personas.cache.build as cache_mod

    real = cache_mod.atomic_write_bytes
    calls = {"n": 0}

    def crashing(path, data):
        if path.name.startswith("shard-"):
            calls["n"] += 1
            if calls["n"] == 2:
                (path.parent / f".{path.name}.crash.tmp").write_bytes(data[: len(data) // 2])
                raise KeyboardInterrupt
        return real(path, data)

    monkeypatch.setattr(cache_mod, "atomic_write_bytes", crashing)
    with pytest.raises(KeyboardInterrupt):
        _build(planted_data, out, toy_model, planted_sae)
    monkeypatch.setattr(cache_mod, "atomic_write_bytes", real)
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["shards"]) == ["0", "1", "2"] and not manifest["complete"]
    (out / "shard-00004.safetensors").write_bytes(b"half a shard")  # renamed but not yet in the manifest

    resumed = _build(planted_data, out, toy_model, planted_sae)
    assert resumed.complete
    assert _checksums(resumed) == _checksums(full_cache)
    for _, entry in resumed.shard_entries():
        assert (out / entry["file"]).read_bytes() == (full_cache.path / entry["file"]).read_bytes()
    assert not list(out.glob(".*.tmp"))
    again = _build(planted_data, out, toy_model, planted_sae)  # complete: nothing to do
    assert _checksums(again) == _checksums(full_cache)


@pytest.mark.parametrize("change", ["hook", "sae", "data", "pool"])
def test_a_different_job_in_the_same_folder_is_refused(change, full_cache, toy_model, planted_sae, planted_data,
                                                       tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(full_cache.path, out)
    data, sae, hooks, capture = planted_data, planted_sae, [TOY_HOOK, HOOK2], CaptureConfig(batch_size=8)
    if change == "hook":
        hooks, expected = [TOY_HOOK], "hooks"
    elif change == "sae":
        from personas.testing import plant_sae

        sae = plant_sae(toy_model, TOY_HOOK, ["hurt"], planted_data["response"][::3], d_sae=64, feature=3, seed=1)
        expected = "weights_sha256"
    elif change == "data":
        data = {k: v[:-1] for k, v in planted_data.items()}
        expected = "dataset_hash"
    else:
        capture, expected = CaptureConfig(batch_size=8, pool="max"), "pool"
    with pytest.raises(CacheError, match=f"different job.*{expected}"):
        build_cache(pd.DataFrame(data), out, hooks=hooks, sae=sae, model=toy_model, capture=capture,
                    cache=CacheConfig(shard_size=16), progress=False)


def test_corrupt_and_truncated_shards_are_named(full_cache, tmp_path):
    import shutil

    out = tmp_path / "bad"
    shutil.copytree(full_cache.path, out)
    shard = out / "shard-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CacheError, match="shard-00002.safetensors is corrupt"):
        rank_cache(out)
    with pytest.raises(CacheError, match=r"shard-00002.safetensors \(sha256 differs\)"):
        open_cache(out).verify()
    shard.write_bytes(bytes(data[:100]))
    with pytest.raises(CacheError, match="shard-00002.safetensors is truncated"):
        open_cache(out).load_features()
    with pytest.raises(CacheError, match="shard-00002.safetensors cannot be read"):
        open_cache(out).read_shard(2, verify=False)


def test_folders_that_are_not_caches_are_refused(tmp_path, toy_model, planted_data):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CacheError, match="not a personas cache"):
        build_cache(pd.DataFrame(planted_data), tmp_path, hooks=[TOY_HOOK], model=toy_model, progress=False)
    with pytest.raises(CacheError, match="no manifest.json"):
        open_cache(tmp_path)


def test_cli_cache_resumes_and_describes(tmp_path, toy_tokenizer, planted_data, capsys):
    from personas.cli.main import main
    from personas.testing import save_toy_hf_model

    folder = save_toy_hf_model(tmp_path / "tiny", toy_tokenizer, seed=2)
    data = tmp_path / "data.jsonl"
    pd.DataFrame(planted_data).iloc[::4].to_json(data, orient="records", lines=True)
    out = tmp_path / "cache"
    args = ["cache", str(data), "--out", str(out), "--model", str(folder), "--hook", "blocks.0.hook_resid_post",
            "--hook", "blocks.1.hook_resid_post", "--sae", "none", "--shard-size", "6", "--quiet"]
    assert main([*args, "--max-shards", "1"]) == 0
    assert "incomplete" in capsys.readouterr().out
    assert main(args) == 0
    assert "complete" in capsys.readouterr().out
    cache = open_cache(out)
    assert cache.complete and cache.n_shards == 4 and not cache.has_sae
    assert main(["cache-info", str(out), "--verify"]) == 0
    assert "all checksums match" in capsys.readouterr().out
    assert main([*args[:-3], "--pool", "max", "--quiet"]) == 2
    assert "different job" in capsys.readouterr().err


@pytest.mark.parametrize("budget", [1, 150, 10**9])
def test_spilled_exact_ranking_equals_the_in_memory_one(full_cache, budget):
    columns = ("auroc", "auroc_lo", "auroc_hi", "group_auroc", "p_value", "q_value", "mean_diff", "cohens_d",
               "frac_active", "welch_p", "mw_p")
    exact = rank_cache(full_cache)
    spilled = rank_cache(full_cache, spill_budget=budget)
    np.testing.assert_array_equal(spilled["feature"], exact["feature"])
    np.testing.assert_array_equal(spilled["significant"], exact["significant"])
    for col in columns:
        np.testing.assert_allclose(spilled[col], exact[col], rtol=1e-12, atol=1e-12, err_msg=col)
    info = spilled.meta["spill"]
    per_feature = np.diff(full_cache.load_features().tocsc().indptr)
    assert info["max_block_values"] <= max(budget, per_feature.max())  # a feature above the budget stands alone
    # the fewest consecutive feature blocks of at most `budget` non-zeros (a bigger feature alone): greedy packing
    expected_blocks, held = 1, 0
    for count in per_feature.tolist():
        if held and held + count > budget:
            expected_blocks, held = expected_blocks + 1, 0
        held += count
    assert info["blocks"] == expected_blocks
    assert (expected_blocks == 1) == (budget == 10**9)  # the small budgets do split the features
    acts = rank_cache(full_cache, use="activations", hook=HOOK2, groups=False, spill_budget=500)
    ref = rank_cache(full_cache, use="activations", hook=HOOK2, groups=False)
    np.testing.assert_array_equal(acts["feature"], ref["feature"])
    np.testing.assert_allclose(acts["p_value"], ref["p_value"], rtol=1e-12, atol=1e-300)
    assert acts.meta["spill"]["blocks"] > 1 and not acts.meta["grouped"]
