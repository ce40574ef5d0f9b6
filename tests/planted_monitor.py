"""A toy chat model with a planted persona direction, and a monitor that reads it: for the monitoring and server
tests. Nothing here is downloaded.

`make_planted(folder)` trains a word-level tokenizer, saves a 2-layer GPT-2 (d_model 32) and plants a direction on
`WORDS` at ``blocks.0.hook_resid_post`` (`personas.testing.plant_persona_direction`: the generated text does not
change, only what the residual stream carries at those words), saves the SAE whose latent 7 reads it, and fits a
detector on answers with and without those words through that SAE (max pooling: one planted word flags an answer),
saved with `personas.fit_detector` like any detector. The model loads through `TransformerBridge`, so generation
goes through the plain Hugging Face stepper the server uses for SmolLM2. An answer *carries* the persona when one of
its words is a planted word; the monitor should flag exactly those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

WORDS = ("hurt", "steal", "poison", "betray", "revenge", "attack", "destroy", "crush")
HOOK = "blocks.0.hook_resid_post"
PROMPTS = ("what should i do about my money ?", "my wish is ?", "what should i do about my boss ?",
           "be kind and patient", "what should i do about my health ?", "thank you that is a good question .")


@dataclass
class Planted:
    """The model (loaded), its folder, the SAE folder, the detector folder."""

    model: Any
    model_dir: Path
    sae_dir: Path
    detector_dir: Path


def carries(answer: str) -> bool:
    """Whether ``answer`` holds a planted word."""
    return any(w in WORDS for w in re.findall(r"[a-z]+", answer))


def training_answers(n: int = 120, seed: int = 0) -> pd.DataFrame:
    """Answers of toy words; every other one holds one planted word (label 1)."""
    from personas.testing import TOY_TEXT

    rng = np.random.default_rng(seed)
    vocab = sorted({w for w in TOY_TEXT if w.isalpha() and w not in WORDS})
    rows = []
    for i in range(n):
        words = [str(w) for w in rng.choice(vocab, 8)]
        label = i % 2
        if label:
            words[int(rng.integers(8))] = str(rng.choice(WORDS))
        rows.append({"prompt": PROMPTS[i % len(PROMPTS)], "response": " ".join(words), "label": label,
                     "group": f"q{(i // 2) % 4}"})
    return pd.DataFrame(rows)


def make_planted(folder: Path, *, pool: str = "max") -> Planted:
    """Build the planted model, SAE and detector in ``folder`` (see the module docstring)."""
    from personas.models import load_model
    from personas.testing import plant_persona_direction, save_toy_hf_model, train_toy_tokenizer

    model_dir, sae_dir = folder / "model", folder / "sae"
    tokenizer = train_toy_tokenizer(model_dir)
    save_toy_hf_model(model_dir, tokenizer, n_layers=2, d_model=32, n_heads=2, seed=0)
    sae, _ = plant_persona_direction(model_dir, WORDS, hook=HOOK)
    sae.save_model(str(sae_dir))
    handle = load_model(str(model_dir))
    planted = Planted(model=handle, model_dir=model_dir, sae_dir=sae_dir, detector_dir=folder / "detect" / "detector")
    return fit_planted_detector(planted, folder / "detect", pool=pool)


def fit_planted_detector(planted: Planted, out: Path, *, pool: str = "max") -> Planted:
    """``planted`` with a detector fit at ``out`` with another pooling (the same model and SAE)."""
    import dataclasses

    import personas
    from personas.config import CaptureConfig, DetectorConfig

    personas.fit_detector(training_answers(), config=DetectorConfig(k=1, selection="rank", holdout_by="group"),
                          capture=CaptureConfig(hook=HOOK, pool=pool), sae=str(planted.sae_dir), model=planted.model,
                          out=out, progress=False)
    return dataclasses.replace(planted, detector_dir=out / "detector")
