"""One writer per cache folder: a second job fails at once naming the first; stale locks are taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import personas.cache.lock as lock_mod
from personas.cache.lock import LOCK_FILE, CacheLock
from personas.errors import CacheError


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(params=["flock", "exclusive file"])
def mode(request, monkeypatch):
    if request.param == "exclusive file":
        monkeypatch.setattr(lock_mod, "fcntl", None)
    return request.param


def test_a_held_lock_names_its_holder_and_is_removed_on_release(tmp_path, mode):
    with CacheLock(tmp_path / "c") as held:
        holder = json.loads((tmp_path / "c" / LOCK_FILE).read_text())
        assert holder == {"pid": os.getpid(), "host": socket.gethostname()}
        with pytest.raises(CacheError, match=f"locked by a running cache job: pid {os.getpid()} on host "):
            CacheLock(tmp_path / "c").acquire()
        assert held.path.exists()
    assert not (tmp_path / "c" / LOCK_FILE).exists()
    with CacheLock(tmp_path / "c"):  # free again
        pass


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, mode, caplog):
    folder = tmp_path / "c"
    folder.mkdir()
    dead = _dead_pid()
    (folder / LOCK_FILE).write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
    with CacheLock(folder):
        assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert f"pid {dead}" in caplog.text and "stale" in caplog.text


def test_without_flock_a_live_holder_or_another_host_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(lock_mod, "fcntl", None)
    folder = tmp_path / "c"
    folder.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (folder / LOCK_FILE).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        with pytest.raises(CacheError, match=f"pid {sleeper.pid} on host"):
            CacheLock(folder).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    (folder / LOCK_FILE).write_text(json.dumps({"pid": _dead_pid(), "host": "another-node"}))
    with pytest.raises(CacheError, match=r"host another-node.*If that job is gone .*delete .*\.lock"):
        CacheLock(folder).acquire()


def test_a_folder_that_cannot_be_written_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(CacheError, match=r"cannot write the cache folder .*file/cache .*Choose another --out"):
        CacheLock(tmp_path / "file" / "cache").acquire()


@pytest.mark.slow
def test_a_second_cache_job_on_one_folder_fails_at_once_and_the_first_finishes(tmp_path, toy_tokenizer,
                                                                                planted_data):
    from personas.cache.store import open_cache
    from personas.data.responses import load_responses
    from personas.testing import save_toy_hf_model

    model = save_toy_hf_model(tmp_path / "tiny", toy_tokenizer, seed=4)
    first_data, second_data = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    frame = pd.concat([pd.DataFrame(planted_data)] * 2, ignore_index=True)
    frame["id"] = [f"r{i}" for i in range(len(frame))]
    frame["prompt"] = [f"{p} ({i // len(planted_data['prompt'])})" for i, p in enumerate(frame["prompt"])]  # no repeats
    frame.to_json(first_data, orient="records", lines=True)
    frame.iloc[::2].to_json(second_data, orient="records", lines=True)  # other data: a mixed cache if both wrote
    out = tmp_path / "cache"

    def command(data: Path) -> list[str]:
        return [sys.executable, "-m", "personas", "cache", str(data), "--out", str(out), "--model", str(model),
                "--hook", "blocks.0.hook_resid_post", "--sae", "none", "--shard-size", "4", "--batch-size", "2",
                "--quiet"]

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(command(first_data), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and first.poll() is None and not list(out.glob("shard-*.safetensors")):
        time.sleep(0.05)
    assert first.poll() is None, "the first job ended before the second started; give it more rows"
    first.send_signal(signal.SIGSTOP)  # paused mid-job, still holding the lock: no race with its finishing
    try:
        second = subprocess.run(command(second_data), env=env, capture_output=True, text=True, timeout=120)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2
    last = second.stderr.strip().splitlines()[-1]
    assert f"is locked by a running cache job: pid {first.pid} on host {socket.gethostname()}" in last
    assert "Traceback" not in second.stderr and last.startswith("personas cache: error:")
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert "complete" in stdout
    cache = open_cache(out)
    assert cache.complete and cache.n_rows == len(frame)
    assert cache.fingerprint["dataset_hash"] == load_responses(str(first_data)).dataset_hash
    cache.verify()
    assert not (out / LOCK_FILE).exists()
