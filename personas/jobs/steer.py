"""Steering runs: generate with a latent added (or clamped) at several strengths, scored and judged.

`steer_job` checks the SAE spec before any model loads, loads the model and the SAE, and runs
`personas.steering.steer_sweep`: every prompt at every strength in one batched decode, each answer scored by an
optional saved detector and read by a judge (aligned, coherent, the EM verdict). With ``out`` it writes
``dose_response.csv`` and ``generations.csv`` (checksummed in the manifest) and ``manifest.json``. `personas
steer` parses its options, calls this job and prints the table.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from personas.artifacts import (
    DOSE_RESPONSE_FILE,
    GENERATIONS_FILE,
    MANIFEST_FILE,
    check_output_dir,
    manifest_header,
    output_dir,
    write_csv,
    write_json,
)
from personas.config import CaptureConfig, SteerConfig
from personas.data.prompts import load_prompts
from personas.devices import sae_dtype
from personas.errors import PersonasError
from personas.judging import load_optional_judge
from personas.judging.load import DEFAULT_JUDGE
from personas.logs import quiet_third_party
from personas.models import load_model
from personas.saes import check_sae_spec, load_sae, sae_entry
from personas.steering import parse_alphas, steer_sweep

logger = logging.getLogger(__name__)

__all__ = ["SteerResult", "steer_job", "write_steer"]


@dataclass
class SteerResult:
    """A steering run: the dose-response table (one row per strength), every generation, and the manifest."""

    table: Any
    generations: Any
    manifest: dict[str, Any]
    out_dir: Path | None = None

    def __repr__(self) -> str:
        m = self.manifest
        out = "" if self.out_dir is None else f"; out={str(self.out_dir)!r}"
        return (f"SteerResult({m['model']['model']} at {m['sae']['hook_name']}, latent {m['feature']}, strengths "
                f"{m['alphas']}, {len(self.generations)} generations{out})")


def steer_job(
    prompts: Any,
    feature: int,
    *,
    sae: Any = "default",
    alphas: str | Sequence[float] = "-8,0,8",
    capture: CaptureConfig | None = None,
    config: SteerConfig | None = None,
    detector: str | Path | None = None,
    judge: Any = DEFAULT_JUDGE,
    out: str | Path | None = None,
    allow_model_mismatch: bool = False,
    progress: bool = True,
) -> SteerResult:
    """Steer with latent ``feature`` of ``sae`` at each strength in ``alphas`` on ``prompts``; judge every answer.

    Args:
        prompts: anything `load_prompts` reads (a file, a list of strings, a DataFrame).
        feature: the latent whose decoder row is the direction.
        sae: an SAE spec (folder, ``"RELEASE:SAE_ID"``, ``"default"``) or a loaded SAE; its hook is the site.
        alphas: strengths (``mode="add"``) or clamp values, as a list or ``"-8,0,8"``.
        capture: the model, device and dtype (`CaptureConfig`); config: mode, positions, sampling (`SteerConfig`).
        detector: a saved detector's folder that scores every generation (optional).
        judge: a judge spec, a `Judge`, or ``None`` / ``"none"`` for no judge.
        out: folder for ``dose_response.csv``, ``generations.csv`` and ``manifest.json`` (checked before the
            model loads).
    """
    capture = capture or CaptureConfig()
    config = config or SteerConfig()
    strengths = parse_alphas(alphas)
    prompt_list = load_prompts(prompts).prompts
    spec = sae if isinstance(sae, (str, Path)) else None
    if spec is not None and check_sae_spec(spec, capture.model) is None:  # before the model loads
        raise PersonasError(f"--sae {str(spec)!r}: steering needs an SAE whose decoder row gives the direction; "
                            "give an SAE folder, 'RELEASE:SAE_ID' or 'default'.")
    if out is not None:
        check_output_dir(out, "personas.steer")
    reader = load_optional_judge(judge)
    with quiet_third_party():
        handle = load_model(capture.model, device=capture.device, dtype=capture.dtype)
        if spec is not None:
            sae = load_sae(spec, device=handle.device, dtype=sae_dtype(capture.dtype, handle.device),
                           model=handle.model_id)
    table = steer_sweep(handle, sae, feature, prompt_list, strengths, detector=detector, judge=reader, config=config,
                        capture=capture, allow_model_mismatch=allow_model_mismatch, progress=progress)
    generations = pd.DataFrame(table.attrs["generations"])
    manifest = {
        **manifest_header("personas.steer"), "model": handle.provenance(), "sae": sae_entry(sae, spec if spec is not None else "in memory"),
        "feature": int(feature), "alphas": strengths, "n_prompts": len(prompt_list),
        "config": {"steer": config.__dict__, "capture": capture.__dict__},
        "detector": None if detector is None else str(detector),
        "prompts": str(prompts) if isinstance(prompts, (str, Path)) else None,
        "spearman": table.attrs.get("spearman"), "judge": None if reader is None else reader.describe(),
        "judged_spearman": table.attrs.get("judged_spearman"),
    }
    result = SteerResult(table=table, generations=generations, manifest=manifest)
    if out is not None:
        result.out_dir = write_steer(result, out)
    return result


def write_steer(result: SteerResult, out: str | Path) -> Path:
    """Write ``dose_response.csv``, ``generations.csv`` and ``manifest.json`` (atomically) into ``out``."""
    folder = output_dir(out, "personas.steer")
    result.manifest["files"] = {DOSE_RESPONSE_FILE: write_csv(folder / DOSE_RESPONSE_FILE, result.table),
                                GENERATIONS_FILE: write_csv(folder / GENERATIONS_FILE, result.generations)}
    write_json(folder / MANIFEST_FILE, result.manifest)
    return folder
