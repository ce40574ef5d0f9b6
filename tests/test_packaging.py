"""The built wheel, installed non-editable in a fresh virtual environment, ranks the demo from another folder.

This is what a new user does (`pip install personas`, then `personas rank`): the default SAE and the demo data
must come with the wheel as package data, not be looked up beside a clone. The new environment sees the test
environment's site-packages through a ``.pth`` line, so torch and the other dependencies are not reinstalled;
its own site-packages come first, so ``import personas`` finds the wheel, never the source tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def _run(args, cwd, **kwargs):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PERSONAS_DATA", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"))
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python of the fresh venv, the wheel's path) with the wheel built from a copy of the sources."""
    base = tmp_path_factory.mktemp("packaging")
    source = base / "source"  # a copy, so the build writes no build/ or egg-info into the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "personas", source / "personas", ignore=shutil.ignore_patterns("__pycache__"))
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
          "--wheel-dir", str(base / "dist"), str(source)], cwd=base)
    (wheel,) = (base / "dist").glob("personas-*.whl")

    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=base)
    python = venv / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=base)
                   .strip())
    (purelib / "_personas_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index",
          str(wheel)], cwd=base)
    return python, wheel


def test_the_wheel_holds_the_shipped_files(installed):
    _, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    sae = "personas/resources/saes/minilm-l6-blocks.3.hook_resid_post-topk-4096/"
    for name in ("personas/resources/demo_responses.jsonl", sae + "cfg.json", sae + "sae_weights.safetensors",
                 "personas/training/phrases.txt", "personas/report/templates/report.html.j2",
                 "personas/serve/templates/dashboard.html.j2"):
        assert name in names, name
    from personas.monitoring.monitor import DEFAULT_MONITOR

    for part in ("detector.json", "detector.safetensors", "monitor.json", "calibration_answers.jsonl", "README.md",
                 "DATA_LICENSE"):  # the shipped monitor, whole, with its data's licence
        assert f"personas/resources/monitors/{DEFAULT_MONITOR}/{part}" in names, part
    from personas.saes import default_sae_path, shipped_saes

    # every shipped SAE (the SmolLM2 default and the earlier one kept by name) is in the wheel, whole
    assert default_sae_path("smollm2").name in shipped_saes()
    for folder in shipped_saes():
        for part in ("cfg.json", "sae_weights.safetensors", "training.json"):
            assert f"personas/resources/saes/{folder}/{part}" in names, (folder, part)


def test_installed_wheel_ranks_the_demo_from_another_folder(installed, tmp_path):
    python, _ = installed
    venv = python.parent.parent
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    found = json.loads(_run([str(python), "-c", (
        "import json, personas, personas.saes as s; "
        "print(json.dumps([personas.__file__, str(s.data_dir()), str(s.default_sae_path())]))")], cwd=elsewhere))
    assert all(Path(path).is_relative_to(venv) for path in found), found  # the wheel's files, not the clone's
    demo = Path(found[1]) / "demo_responses.jsonl"

    # MiniLM-L6 (the `offline` extra) with the SAE shipped for it: the fastest real model that runs offline
    _run([str(venv / "bin" / "personas"), "rank", str(demo), "--model", "minilm", "--out", "run", "--quiet"],
         cwd=elsewhere)
    ranking = pd.read_csv(elsewhere / "run" / "ranking.csv")
    assert len(ranking) == 4096 and ranking["feature"].is_unique
    manifest = json.loads((elsewhere / "run" / "manifest.json").read_text())
    assert manifest["sae"]["spec"] == "default" and manifest["data"]["n_rows_read"] == 706
    _run([str(venv / "bin" / "personas"), "report", "run"], cwd=elsewhere)  # its template is package data too
    assert 'id="ranking-table"' in (elsewhere / "run" / "report.html").read_text(encoding="utf-8")


def test_the_dev_extra_holds_every_other_extra():
    """`make install` installs ``.[dev]`` only: every other extra (the server's among them) must be in it, or the
    tests of what needs that extra are skipped in CI instead of run."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    dev = set(extras["dev"])
    for name, requirements in extras.items():
        assert set(requirements) <= dev, f"the {name} extra's {sorted(set(requirements) - dev)} are not in dev"
    assert {"openai>=1.40", "httpx>=0.27"} <= dev  # the server's tests use both clients
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert '-e ".[dev]"' in makefile
