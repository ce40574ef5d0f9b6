"""Validation runs: the persona-features protocol on a model, written to a folder.

`validate_job` takes candidate latents (given, or the top of a `personas rank` run by rule:
`personas.steering.validation.candidate_latents`), measures each latent's strength unit on reference answers (given,
or the model's own unsteered answers to the screening prompts), screens the candidates by steering, confirms the
best on other prompts at strengths fixed in advance, and has every generation judged (aligned, coherent, the EM
verdict). With ``out`` it writes ``screening.csv``, ``confirmation.csv`` and ``generations.csv`` (checksummed in
the manifest) and ``manifest.json``. The prompts, the candidates, the SAE spec and the output folder are checked
before any model loads. `personas validate` parses its options, calls this job and prints.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from personas.artifacts import (
    CONFIRMATION_FILE,
    GENERATIONS_FILE,
    MANIFEST_FILE,
    SCREENING_FILE,
    check_output_dir,
    manifest_header,
    output_dir,
    write_csv,
    write_json,
)
from personas.config import CaptureConfig, SteerConfig
from personas.data.prompts import load_prompts
from personas.devices import sae_dtype
from personas.errors import DataError, PersonasError
from personas.jobs.rank import load_run
from personas.judging import load_optional_judge
from personas.judging.load import DEFAULT_JUDGE
from personas.logs import quiet_third_party
from personas.models import load_model
from personas.saes import check_sae_spec, load_sae, sae_entry
from personas.steering import generate, parse_alphas
from personas.steering.validation import (
    CONFIRM_MULTIPLES,
    SCREEN_MULTIPLES,
    Validation,
    candidate_latents,
    strength_units,
    validate,
)

__all__ = ["ValidateResult", "validate_job", "write_validation"]


@dataclass
class ValidateResult:
    """A validation run: the `Validation` (screening, chosen latent, confirmation, dose-response, generations), the
    latents left out because they never fire on the reference, and the manifest."""

    validation: Validation
    left_out: list[int] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None

    def __repr__(self) -> str:
        v = self.validation
        out = "" if self.out_dir is None else f"; out={str(self.out_dir)!r}"
        return (f"ValidateResult({len(self.manifest.get('candidates', []))} candidates, chosen latent {v.chosen}, "
                f"dose-response {v.dose_response.get('rho') if v.dose_response else None}{out})")


def parse_features(features: str | Sequence[int]) -> list[int]:
    """``"341,3260"`` (or a list) -> ``[341, 3260]``; a `DataError` for anything that is not non-negative indices."""
    text = features if isinstance(features, str) else ",".join(str(f) for f in features)
    try:
        values = [int(v) for v in re.split(r"[,\s]+", text.strip()) if v]
    except ValueError as exc:
        raise DataError(f"--features {text!r} is not a list of latent indices; expected e.g. 341,3260.") from exc
    if not values or min(values) < 0:
        raise DataError(f"--features {text!r}: expected one or more non-negative latent indices, e.g. 341,3260.")
    return values


def _multiples(values: str | Sequence[float], option: str) -> list[float]:
    try:
        return parse_alphas(values)
    except (PersonasError, TypeError, ValueError) as exc:
        raise DataError(f"{option} {values!r} is not a list of numbers; expected e.g. 0,2,4.") from exc


def validate_job(
    screen_prompts: Any,
    confirm_prompts: Any,
    *,
    out: str | Path,
    features: str | Sequence[int] | None = None,
    ranking: str | Path | None = None,
    n_candidates: int = 3,
    sae: str = "default",
    reference: Any = None,
    screen_multiples: str | Sequence[float] = SCREEN_MULTIPLES,
    multiples: str | Sequence[float] = CONFIRM_MULTIPLES,
    judge: Any = DEFAULT_JUDGE,
    capture: CaptureConfig | None = None,
    config: SteerConfig | None = None,
    allow_model_mismatch: bool = False,
    progress: bool = True,
) -> ValidateResult:
    """Screen candidate latents by steering, confirm the best on other prompts, every generation judged.

    Args:
        screen_prompts, confirm_prompts: anything `load_prompts` reads; no prompt may be in both.
        out: the run folder (checked before the model loads).
        features / ranking: the candidates, one of the two: latent indices, or a `personas rank` run folder whose
            top ``n_candidates`` latents by rule (higher in misaligned answers, significant, not a confound) are taken.
        sae: an SAE spec (folder, ``"RELEASE:SAE_ID"``, ``"default"``); its hook is the site.
        reference: answers (a file or table with prompt and response) on which each latent's strength unit is
            measured; default the model's unsteered answers to the screening prompts.
        screen_multiples, multiples: strengths of the screening and of the confirmation, in units.
        judge: a judge spec or a `Judge`.
        capture: the model, device and dtype; config: mode, positions, sampling, answer length.
    """
    capture = capture or CaptureConfig()
    config = config or SteerConfig()
    if (features is None) == (ranking is None):
        raise DataError("personas validate needs the candidates: --features F1,F2,... or --ranking RUN_DIR (a "
                        "personas rank run folder; the top --n-candidates latents by rule), not both.")
    screen = load_prompts(screen_prompts).prompts
    confirm = load_prompts(confirm_prompts).prompts
    overlap = sorted(set(screen) & set(confirm))
    if overlap:
        raise DataError(f"{len(overlap)} prompt(s) are in both --screen-prompts and --confirm-prompts (e.g. "
                        f"{overlap[0]!r}); the confirmation must use prompts the choice of latent never saw.")
    screen_ks = _multiples(screen_multiples, "--screen-multiples")
    confirm_ks = _multiples(multiples, "--multiples")
    if ranking is not None:
        candidates = candidate_latents(load_run(ranking), n_candidates)
        if not candidates:
            raise DataError(f"the ranking in {str(ranking)!r} has no latent that is higher in misaligned answers, "
                            "significant and not a confound; pass --features to choose candidates by hand.")
    else:
        candidates = parse_features(features)
    check_sae_spec(sae, capture.model)  # before the model loads
    check_output_dir(out, "personas.validate")
    reader = load_optional_judge(judge)
    if reader is None:
        raise DataError("personas validate judges every generation (the EM verdict is its measure); --judge none is "
                        "not accepted. Give a judge spec, e.g. 'default'.")
    with quiet_third_party():
        handle = load_model(capture.model, device=capture.device, dtype=capture.dtype)
        sae_obj = load_sae(sae, device=handle.device, dtype=sae_dtype(capture.dtype, handle.device),
                           model=handle.model_id)
    d_sae = int(sae_obj.cfg.d_sae)
    bad = [f for f in candidates if f >= d_sae]
    if bad:
        raise DataError(f"latents {bad} are out of range for an SAE of {d_sae} latents; expected 0..{d_sae - 1}.")
    if reference is not None:
        ref = load_prompts(reference)
        if ref.responses is None:
            raise DataError(f"--reference {str(reference)!r} has prompts but no responses; expected a file with a "
                            "prompt and a response column (the answers on which the latents' units are measured).")
        ref_prompts, ref_responses = ref.prompts, ref.responses
        ref_name = str(reference) if isinstance(reference, (str, Path)) else "the reference answers given"
    else:  # the model's own unsteered answers to the screening prompts
        ref_prompts = screen
        ref_responses = generate(handle, screen, max_new_tokens=config.max_new_tokens, config=capture)
        ref_name = "unsteered answers to the screening prompts"
    kept = [i for i, r in enumerate(ref_responses) if r.strip()]
    if not kept:
        raise DataError(f"the {ref_name} are all empty, so no latent's strength unit can be measured; pass --reference "
                        "DATA with answers (e.g. the data you ranked).")
    ref_prompts, ref_responses = [ref_prompts[i] for i in kept], [ref_responses[i] for i in kept]
    units = strength_units(handle, sae_obj, candidates, ref_prompts, ref_responses, capture=capture,
                           allow_model_mismatch=allow_model_mismatch)
    silent = [f for f in candidates if units[f][0] <= 0]
    if len(silent) == len(candidates):
        raise DataError(f"none of the latents {candidates} fires on the reference ({ref_name}), so no strength unit "
                        "can be measured; pass --reference DATA with answers where they fire (e.g. the ranked data).")
    firing = [f for f in candidates if f not in silent]
    validation = validate(handle, sae_obj, firing, {f: units[f][0] for f in firing}, screen_prompts=screen,
                          confirm_prompts=confirm, judge=reader, screen_multiples=screen_ks,
                          confirm_multiples=confirm_ks, config=config, capture=capture,
                          allow_model_mismatch=allow_model_mismatch, progress=progress)
    manifest = {
        **manifest_header("personas.validate"), "model": handle.provenance(), "sae": sae_entry(sae_obj, sae),
        "candidates": firing, "left_out": silent,
        "units": {str(f): {"unit": units[f][0], "fires_in": units[f][1]} for f in firing},
        "reference": ref_name, "n_confirm_prompts": len(confirm),
        "screen_prompts": str(screen_prompts) if isinstance(screen_prompts, (str, Path)) else None,
        "confirm_prompts": str(confirm_prompts) if isinstance(confirm_prompts, (str, Path)) else None,
        "screen_multiples": screen_ks, "confirm_multiples": confirm_ks,
        "config": {"steer": config.__dict__, "capture": capture.__dict__}, **validation.summary(),
    }
    result = ValidateResult(validation=validation, left_out=silent, manifest=manifest)
    result.out_dir = write_validation(result, out)
    return result


def write_validation(result: ValidateResult, out: str | Path) -> Path:
    """Write ``screening.csv``, ``confirmation.csv``, ``generations.csv`` and ``manifest.json`` into ``out``."""
    folder = output_dir(out, "personas.validate")
    v = result.validation
    result.manifest["files"] = {name: write_csv(folder / name, frame) for name, frame in (
        (SCREENING_FILE, v.screening), (CONFIRMATION_FILE, v.confirmation), (GENERATIONS_FILE, v.generations))}
    write_json(folder / MANIFEST_FILE, result.manifest)
    return folder
