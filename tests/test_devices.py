"""Threads, devices and dtypes are resolved in one place (`personas.devices`)."""

from __future__ import annotations

import pytest
import torch

from personas.cli import main
from personas.devices import default_threads, set_threads
from personas.errors import PersonasError


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_set_threads_sets_torch_threads(restore_threads):
    assert set_threads(1) == 1 and torch.get_num_threads() == 1


def test_default_threads_reads_the_environment(monkeypatch):
    monkeypatch.setenv("PERSONAS_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.setenv("PERSONAS_THREADS", "many")
    with pytest.raises(PersonasError, match="PERSONAS_THREADS='many' is not a whole number"):
        default_threads()
    monkeypatch.delenv("PERSONAS_THREADS")
    monkeypatch.setattr("personas.devices.available_cpus", lambda: 6)
    assert default_threads() == 6  # every CPU: the fastest on an idle machine (bench_dtype.py measures it)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(PersonasError, match="expected a whole number >= 1"):
        set_threads(bad)


def test_threads_option_before_or_after_the_command(restore_threads, capsys):
    assert main(["rank", "--threads", "0", "missing.jsonl"]) == 2
    assert "threads=0" in capsys.readouterr().err
    assert main(["--threads", "0", "report", "nowhere"]) == 2
