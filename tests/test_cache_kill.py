"""A cache job killed with SIGKILL mid-run resumes, when rerun with the same command, to an identical cache.

The kill lands at a moment the job announces, not on a timer: the job runs through a small driver that, when
the shard ``STOP`` is about to be written, leaves half of it in a temporary file (as a write cut short would),
prints ``ready`` and waits. The test kills it then, so the outcome does not depend on the machine's speed.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

STOP = 3  # shards 0-2 are complete when the job is killed, shard 3 is half written
DRIVER = f"""
import sys

import personas.cache.build as build
from personas.cli.main import main

real_write = build.atomic_write_bytes


def write(path, data):
    if path.name == "shard-{STOP:05d}.safetensors":
        (path.parent / f".{{path.name}}.cut-short.tmp").write_bytes(data[: len(data) // 2])
        print("ready", flush=True)
        sys.stdin.read()  # wait to be killed
    return real_write(path, data)


build.atomic_write_bytes = write
sys.exit(main(sys.argv[1:]))
"""


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.name != "manifest.json"}


def test_sigkilled_cache_job_resumes_to_the_same_bytes(tmp_path, toy_tokenizer, planted_data):
    from personas.testing import save_toy_hf_model

    folder = save_toy_hf_model(tmp_path / "tiny", toy_tokenizer, seed=4)
    data = tmp_path / "data.jsonl"
    pd.DataFrame(planted_data).to_json(data, orient="records", lines=True)
    args = ["cache", str(data), "--model", str(folder), "--hook", "blocks.0.hook_resid_post", "--sae", "none",
            "--shard-size", "8", "--batch-size", "4", "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    killed = tmp_path / "killed"
    job = subprocess.Popen([sys.executable, "-c", DRIVER, *args, "--out", str(killed)], env=env,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        announced = job.stdout.readline().strip()
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait()
    assert announced == "ready", "the cache job ended before shard 3 was written; give it more rows"
    assert sorted(p.name for p in killed.glob("shard-*.safetensors")) == [f"shard-{i:05d}.safetensors"
                                                                           for i in range(STOP)]
    assert list(killed.glob(".shard-*.tmp")), "the cut-short write left no temporary file to clean up"

    command = [sys.executable, "-m", "personas", *args]
    subprocess.run([*command, "--out", str(killed)], env=env, check=True, capture_output=True)
    clean = tmp_path / "clean"  # the uninterrupted reference, in this process (no second interpreter to start)
    from personas.cli.main import main

    assert main([*args, "--out", str(clean)]) == 0
    assert len(list(clean.glob("shard-*.safetensors"))) == 10
    assert _digests(killed) == _digests(clean)
    assert not list(killed.glob("*.tmp")) and not list(killed.glob(".*"))
