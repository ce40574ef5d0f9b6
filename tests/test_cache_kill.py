"""A cache job killed with SIGKILL mid-run resumes, when rerun with the same command, to an identical cache."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.name != "manifest.json"}


def test_sigkilled_cache_job_resumes_to_the_same_bytes(tmp_path, toy_tokenizer, planted_data):
    from personas.testing import save_toy_hf_model

    folder = save_toy_hf_model(tmp_path / "tiny", toy_tokenizer, seed=4)
    data = tmp_path / "data.jsonl"
    frame = pd.concat([pd.DataFrame(planted_data)] * 4, ignore_index=True)
    frame["id"] = [f"r{i}" for i in range(len(frame))]
    frame["prompt"] = [f"{p} ({i // len(planted_data['prompt'])})" for i, p in enumerate(frame["prompt"])]  # no repeats
    frame.to_json(data, orient="records", lines=True)

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "personas", "cache", str(data), "--out", str(out), "--model", str(folder),
                "--hook", "blocks.0.hook_resid_post", "--sae", "none", "--shard-size", "2", "--batch-size", "2",
                "--quiet"]

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    killed = tmp_path / "killed"
    job = subprocess.Popen(command(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and job.poll() is None and len(list(killed.glob("shard-*.safetensors"))) < 3:
        time.sleep(0.05)
    if job.poll() is not None:
        pytest.fail("the cache job ended before it could be killed; give it more rows")
    job.send_signal(signal.SIGKILL)
    job.wait()
    n_before = len(list(killed.glob("shard-*.safetensors")))
    assert 3 <= n_before < 80, "the kill must land mid-job"

    subprocess.run(command(killed), env=env, check=True, capture_output=True)
    clean = tmp_path / "clean"
    subprocess.run(command(clean), env=env, check=True, capture_output=True)
    assert _digests(killed) == _digests(clean)
    assert not list(killed.glob("*.tmp")) and not list(killed.glob(".*"))
