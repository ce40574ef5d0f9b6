"""The planted-bug harness (`tests/mutants.py`) runs in the suite, so it cannot go stale.

Every mutant's text must still occur once in the code and plant a file that compiles (fast: no test runs), and,
in the slow suite, every mutant planted in turn in a copy of the repository must make the tests aimed at it fail.
The real files are never edited: the harness copies the repository (``git ls-files``) into ``tmp_path`` and plants
each mutant there, in one process that forks a pytest run per mutant (see the harness's docstring).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import mutants  # noqa: E402

#: Every area of the last two rounds has a mutant (the harness must not shrink back to the old ones).
AREAS = ("personas/judging/", "personas/organism/screen.py", "personas/organism/sweep.py", "personas/report/cards.py",
         "personas/report/lens.py", "personas/training/evaluate.py", "personas/training/stream.py",
         "personas/steering/", "personas/models/peft.py", "personas/cli/")


def test_every_mutant_applies_to_the_code():
    for name in mutants.MUTANTS:
        mutants.check_applies(name, mutants.ROOT)  # SystemExit when the text is gone or the plant does not compile
    assert len(mutants.MUTANTS) >= 20
    for area in AREAS:
        assert any(m.path.startswith(area) for m in mutants.MUTANTS.values()), area


@pytest.mark.slow
def test_every_mutant_is_caught_by_its_tests(tmp_path):
    started = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, str(Path(mutants.__file__)), "--keep", str(tmp_path / "copy")],
                          cwd=mutants.ROOT, env=env, capture_output=True, text=True, timeout=590)
    lines = [line for line in proc.stdout.splitlines() if line.split(" ", 1)[0] in ("caught", "SURVIVED", "ERROR")]
    print(f"{len(lines)} mutants in {time.perf_counter() - started:.0f} s", *lines, sep="\n")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert len(lines) == len(mutants.MUTANTS) and all(line.startswith("caught") for line in lines)
