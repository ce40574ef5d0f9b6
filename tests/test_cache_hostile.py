"""Tampered caches: every edited manifest, shard or index is a clear `CacheError`, never a traceback or a silent
wrong ranking; and reruns of the cache job repair what they promise to (a lost index, a corrupt shard)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from personas.cache.build import CacheConfig, build_cache
from personas.cache.store import open_cache, rank_cache
from personas.config import CaptureConfig
from personas.errors import CacheError

from conftest import TOY_HOOK


@pytest.fixture(scope="module")
def clean_cache(tmp_path_factory, toy_model, planted_sae, planted_data):
    return build_cache(pd.DataFrame(planted_data), tmp_path_factory.mktemp("hostile") / "clean", hooks=[TOY_HOOK],
                       sae=planted_sae, model=toy_model, cache=CacheConfig(shard_size=16),
                       capture=CaptureConfig(batch_size=8), progress=False).path


# -- tampering helpers: each edits a copy of the clean cache --------------------------------------------------------
def _manifest(folder: Path, edit) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def _rewrite_file(folder: Path, name: str, data: bytes, key: str | None) -> None:
    """Replace a file and (like a careful forger) its manifest checksum, so only content checks can catch it."""
    import hashlib

    (folder / name).write_bytes(data)
    if key is None:
        return

    def fix(m):
        entry = m["index"] if key == "index" else m["shards"][key]
        entry["bytes"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()

    _manifest(folder, fix)


def _shard(folder: Path, i: int, edit_tensors=None, edit_meta=None) -> None:
    from safetensors import safe_open
    from safetensors.numpy import save

    name = f"shard-{i:05d}.safetensors"
    with safe_open(str(folder / name), framework="np") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        meta = dict(fh.metadata())
    if edit_tensors:
        edit_tensors(tensors)
    if edit_meta:
        meta = edit_meta(meta)
    _rewrite_file(folder, name, save(tensors, metadata=meta), str(i))


def _index(folder: Path, edit) -> None:
    import io

    frame = pd.read_parquet(folder / "index.parquet")
    frame = edit(frame)
    sink = io.BytesIO()
    frame.to_parquet(sink, index=False)
    _rewrite_file(folder, "index.parquet", sink.getvalue(), "index")


def _set(path: str, value):
    def edit(m):
        *parents, last = path.split(".")
        for p in parents:
            m = m[p]
        m[last] = value
    return edit


def _delete(key: str):
    return lambda m: m.pop(key)


def _swap_shards(m):
    a, b = m["shards"]["0"], m["shards"]["1"]
    for k in ("file", "bytes", "sha256"):
        a[k], b[k] = b[k], a[k]


def _flip(name: str, i: int = 0):
    def edit(t):
        t[name] = t[name].copy()
        t[name][i] = 1 - t[name][i]
    return edit


def _out_of_range(prefix: str):
    def edit(t):
        t[f"{prefix}.indices"] = t[f"{prefix}.indices"].copy()
        t[f"{prefix}.indices"][0] = 9999
    return edit


# (case, tamper(folder), action, message): action is what a user runs, message what the error must say
CASES = [
    ("shard path with ..", lambda f: _manifest(f, _set("shards.0.file", "../outside.safetensors")), "rank",
     r"key 'shards.0.file' is '../outside.safetensors'; expected a plain file name"),
    ("absolute shard path", lambda f: _manifest(f, _set("shards.1.file", "/etc/passwd")), "rank",
     r"key 'shards.1.file' is '/etc/passwd'; expected a plain file name"),
    ("shard in a subfolder", lambda f: _manifest(f, _set("shards.2.file", "sub/shard-00002.safetensors")), "rank",
     r"key 'shards.2.file' .*plain file name"),
    ("index path with ..", lambda f: _manifest(f, _set("index.file", "../../index.parquet")), "rank",
     r"key 'index.file' is '../../index.parquet'"),
    ("shard rows edited", lambda f: _manifest(f, _set("shards.1.rows", [0, 16])), "rank",
     r"key 'shards.1.rows' is \[0, 16\]; expected \[16, 32\]"),
    ("shard files swapped", lambda f: _manifest(f, _swap_shards), "rank",
     r"holds shard 1, rows 16:32 \(its own metadata\); the manifest lists it as shard 0, rows 0:16"),
    ("missing key", lambda f: _manifest(f, _delete("n_rows")), "rank", r"key 'n_rows' is missing"),
    ("missing fingerprint key", lambda f: _manifest(f, lambda m: m["fingerprint"].pop("shard_size")), "rank",
     r"key 'fingerprint.shard_size' is missing"),
    ("shards is a list", lambda f: _manifest(f, _set("shards", [])), "rank",
     r"key 'shards' is \[\]; expected an object of shard entries"),
    ("bytes is a string", lambda f: _manifest(f, _set("shards.2.bytes", "12")), "rank",
     r"key 'shards.2.bytes' is \"12\"; expected a file size"),
    ("complete is a string", lambda f: _manifest(f, _set("complete", "yes")), "rank",
     r"key 'complete' is \"yes\"; expected true or false"),
    ("n_shards edited", lambda f: _manifest(f, _set("n_shards", 7)), "rank", r"key 'n_shards' is 7; expected 5"),
    ("shard_size zero", lambda f: _manifest(f, _set("fingerprint.shard_size", 0)), "rank",
     r"key 'fingerprint.shard_size' is 0"),
    ("bad sha256", lambda f: _manifest(f, _set("shards.0.sha256", "x" * 64)), "rank", r"'shards.0.sha256'"),
    ("manifest is a list", lambda f: (f / "manifest.json").write_text("[1, 2]"), "rank", r"has format 'list'"),
    ("manifest not JSON", lambda f: (f / "manifest.json").write_text("{not json"), "rank", r"cannot be read"),
    ("complete without shards", lambda f: _manifest(f, lambda m: m["shards"].pop("4")), "rank",
     r"key 'complete' is true; expected false while 4 of 5 shards"),
    ("pooled codes out of range", lambda f: _shard(f, 1, _out_of_range("features")), "rank",
     r"shard-00001.safetensors: features.indices range 0..9999; expected latent indices in 0..63"),
    ("token codes out of range", lambda f: _shard(f, 3, _out_of_range("tokens")), "verify",
     r"shard-00003.safetensors: tokens.indices range .*9999; expected latent indices in 0..63"),
    ("indptr past the values", lambda f: _shard(f, 2, lambda t: t.__setitem__("features.indptr",
                                                                           t["features.indptr"] + 1)), "rank",
     r"features.indptr does not describe"),
    ("shard labels flipped", lambda f: _shard(f, 2, _flip("labels")), "rank",
     r"shard-00002.safetensors: its labels differ from the row index's for 1 of rows 32:48"),
    ("shard token counts edited", lambda f: _shard(f, 0, lambda t: t.__setitem__("n_tokens", t["n_tokens"] + 1)),
     "verify", r"its n_tokens differ from the row index's"),
    ("shard metadata gone", lambda f: _shard(f, 4, edit_meta=lambda m: {}), "rank",
     r"shard-00004.safetensors has no valid personas.cache.v1 metadata"),
    ("shard metadata rows edited", lambda f: _shard(f, 4, edit_meta=lambda m: {
        "personas": m["personas"].replace("[64, 80]", "[60, 80]")}), "rank",
     r"holds shard 4, rows 60:80 .*lists it as shard 4, rows 64:80"),
    ("shard tensor missing", lambda f: _shard(f, 1, lambda t: t.pop("labels")), "rank",
     r"shard-00001.safetensors has no tensor 'labels'"),
    ("shard tensor reshaped", lambda f: _shard(f, 1, lambda t: t.__setitem__("labels", t["labels"][:-1])), "rank",
     r"tensor 'labels' has shape \(15,\); expected \(16,\)"),
    ("index not Parquet", lambda f: _rewrite_file(f, "index.parquet", b"row,id\n0,a\n", "index"), "rank",
     r"index.parquet is not a Parquet file"),
    ("index label flipped", lambda f: _index(f, lambda x: x.assign(label=np.r_[1 - x["label"][:1], x["label"][1:]])
                                             .astype({"label": "int8"})), "rank",
     r"index.parquet does not match the manifest: it has \d+ misaligned responses, the manifest 40"),
    ("index row dropped", lambda f: _index(f, lambda x: x.iloc[:-1]), "rank", r"and 79 rows; expected .* 80 rows"),
    ("index groups edited", lambda f: _index(f, lambda x: x.assign(group=x["group"].where(x.index > 0, None))),
     "rank", r"its groups do not match the manifest's has_groups=True"),
    ("index gone", lambda f: (f / "index.parquet").unlink(), "rank",
     r"index.parquet is missing or corrupt; rerun the cache job with the same arguments to rewrite it"),
]


@pytest.mark.parametrize("case,tamper,action,message", CASES, ids=[c[0] for c in CASES])
def test_tampered_caches_are_clear_errors(case, tamper, action, message, clean_cache, tmp_path, capsys):
    from personas.cli.main import main

    folder = tmp_path / "cache"
    shutil.copytree(clean_cache, folder)
    tamper(folder)
    with pytest.raises(CacheError, match=message):
        if action == "rank":
            rank_cache(folder)
        else:
            open_cache(folder).verify()
    # the CLI: one line on stderr, exit 2, never a traceback (rank reads no per-token codes, verify reads all)
    commands = [["cache-info", str(folder), "--verify"]]
    if action == "rank":
        commands.append(["rank", "--cache", str(folder), "--out", str(tmp_path / "run")])
    for argv in commands:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.count("\n") == 1 and "error:" in err, err


def test_the_clean_copy_passes(clean_cache, tmp_path):
    folder = tmp_path / "cache"
    shutil.copytree(clean_cache, folder)
    open_cache(folder).verify()
    assert int(rank_cache(folder)["feature"].iloc[0]) == 7


# -- reruns --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folder_model(tmp_path_factory, toy_tokenizer):
    from personas.testing import save_toy_hf_model

    return str(save_toy_hf_model(tmp_path_factory.mktemp("tiny") / "tiny", toy_tokenizer, seed=5))


def _folder_job(data, out, model):
    return build_cache(pd.DataFrame(data).iloc[::4].reset_index(drop=True), out, hooks=["blocks.0.hook_resid_post"],
                       sae="none", capture=CaptureConfig(model=model, batch_size=8),
                       cache=CacheConfig(shard_size=6), progress=False)


def test_rerun_rewrites_a_lost_index_without_loading_the_model(tmp_path, folder_model, planted_data, monkeypatch):
    import personas.cache.build as build_mod

    first = _folder_job(planted_data, tmp_path / "c", folder_model)
    index_sha = first.manifest["index"]["sha256"]
    (first.path / "index.parquet").unlink()
    with pytest.raises(CacheError, match="rerun the cache job"):
        rank_cache(first.path)

    def no_engine(*args, **kwargs):
        raise AssertionError("the model was loaded for a complete cache")

    monkeypatch.setattr(build_mod, "get_engine", no_engine)
    again = _folder_job(planted_data, tmp_path / "c", folder_model)
    assert again.complete and again.manifest["index"]["sha256"] == index_sha
    again.verify()
    # another pooling is another job: settled only by loading the model and comparing the whole fingerprint
    with pytest.raises(AssertionError, match="model was loaded"):
        build_cache(pd.DataFrame(planted_data).iloc[::4].reset_index(drop=True), tmp_path / "c",
                    hooks=["blocks.0.hook_resid_post"], sae="none",
                    capture=CaptureConfig(model=folder_model, batch_size=8, pool="max"),
                    cache=CacheConfig(shard_size=6), progress=False)


def test_rerun_recaptures_a_shard_whose_sha256_differs(tmp_path, folder_model, planted_data):
    first = _folder_job(planted_data, tmp_path / "c", folder_model)
    original = {e["file"]: (first.path / e["file"]).read_bytes() for _, e in first.shard_entries()}
    victim = first.path / "shard-00001.safetensors"
    data = bytearray(victim.read_bytes())
    data[-3] ^= 0xFF  # same size: only the checksum can tell
    victim.write_bytes(bytes(data))
    again = _folder_job(planted_data, tmp_path / "c", folder_model)
    assert again.complete
    assert {e["file"]: (again.path / e["file"]).read_bytes() for _, e in again.shard_entries()} == original
    again.verify()
