"""`import personas` and its step modules stay light: no torch, TransformerLens or sae-lens until used."""

from __future__ import annotations

import subprocess
import sys

import personas

HEAVY = ("torch", "transformer_lens", "sae_lens", "matplotlib", "ray")


def test_import_personas_and_its_modules_imports_nothing_heavy():
    modules = ["personas", "personas.cli", "personas.config", "personas.data", "personas.scoring",
               "personas.pipeline", "personas.capture", "personas.saes", "personas.models", "personas.detect",
               "personas.steer", "personas.diff"]
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + f"print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"heavy modules imported at import time: {out}"


def test_every_exported_name_resolves():
    for name in personas.__all__:
        assert getattr(personas, name) is not None, name


def test_functions_named_like_their_modules_stay_functions():
    import personas.capture  # noqa: F401  (imports the module personas.capture)
    from personas.steer import render_prompt  # noqa: F401

    assert callable(personas.capture) and personas.capture.__module__ == "personas.capture"
    assert callable(personas.steer) and personas.steer.__name__ == "steer"


def test_submodules_are_reachable_as_attributes():
    import importlib

    assert personas.plot is importlib.import_module("personas.plot")
    assert callable(personas.plot.volcano) and callable(personas.examples.top_activating)
