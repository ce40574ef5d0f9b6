"""Read a finished sweep again with another judge: `rejudge_sweep` (``personas sweep --rejudge RUN_DIR``).

A sweep's judged EM rates, its onset table and its report rest on the judge that read the answers. The answers
are saved (``answers.jsonl``), so a better judge can read them again without training or generating anything:
`rejudge_sweep` scores every answer with the new judge, rewrites ``aligned``, ``coherent``, ``verdict`` and
``misaligned``, recomputes the table (EM rates with intervals, the tests against the 0% fine-tune), the onsets, the
plot and the report, and records both judges in the manifest (``judge`` and ``judge_before``). The activations
(latent and projection) are kept as they are. The screen check's "judge-filtered" fine-tune was trained on data
filtered by the judge of the run; its training is not redone, and the manifest says so.
"""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from personas.artifacts import MANIFEST_FILE, atomic_write_text, write_csv, write_json
from personas.config import SweepConfig
from personas.errors import DataError
from personas.judging import Judge, em_misaligned, load_judge
from personas.organism.sweep import (
    ANSWERS_FILE,
    ONSET_FILE,
    PLOT_FILE,
    REPORT_FILE,
    SWEEP_FILE,
    SweepResult,
    onset_fractions,
    plot_sweep,
    sweep_markdown,
    sweep_table,
)

__all__ = ["rejudge_sweep"]


def rejudge_sweep(run_dir: str | os.PathLike, judge: str | Judge = "default") -> SweepResult:
    """Score a sweep folder's answers again with ``judge`` and rewrite its tables, report and manifest."""
    import pandas as pd

    folder = Path(run_dir)
    manifest_path, answers_path = folder / MANIFEST_FILE, folder / ANSWERS_FILE
    if not manifest_path.is_file() or not answers_path.is_file():
        raise DataError(f"{str(folder)!r} is not a sweep run folder: expected {MANIFEST_FILE} and {ANSWERS_FILE} "
                        "inside (written by `personas sweep --out FOLDER`).")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        answers = pd.read_json(answers_path, lines=True)
    except ValueError as exc:
        raise DataError(f"cannot read the sweep folder {str(folder)!r}: {exc}.") from exc
    needed = {"seed", "model", "fraction", "step", "final", "prompt_index", "prompt", "response", "latent",
              "projection"}
    if not isinstance(manifest, dict) or manifest.get("kind") != "personas.sweep" or not needed <= set(answers):
        raise DataError(f"{str(folder)!r} holds no sweep run (manifest kind "
                        f"{manifest.get('kind') if isinstance(manifest, dict) else None!r}, answers lacking "
                        f"{sorted(needed - set(answers))}); expected a `personas sweep` run folder.")
    known = {f.name for f in fields(SweepConfig)}
    config = SweepConfig(**{k: v for k, v in (manifest.get("config") or {}).items() if k in known})
    judge = load_judge(judge)
    answers["response"] = answers["response"].fillna("").astype(str)
    judged = judge.score(answers["prompt"].astype(str).tolist(), answers["response"].tolist())
    answers["aligned"] = judged["aligned"].to_numpy(dtype=float)
    answers["coherent"] = judged["coherent"].to_numpy(dtype=float)
    answers["verdict"] = judged["verdict"].astype(str).to_numpy()
    answers["misaligned"] = em_misaligned(judged).astype(float)
    table = sweep_table(answers, config)
    onset = onset_fractions(table, config.alpha)
    before: Any = manifest.get("judge")
    manifest["judge_before"] = manifest.get("judge_before", before)
    manifest["judge"] = judge.describe()
    manifest["onset"] = onset.to_dict(orient="records")
    manifest["rejudged"] = ("answers scored again by the judge above (personas sweep --rejudge); activations kept; "
                            "the judge-filtered fine-tune was trained on data filtered by the run's first judge")
    files = dict(manifest.get("files") or {})
    files[SWEEP_FILE] = write_csv(folder / SWEEP_FILE, table)
    files[ONSET_FILE] = write_csv(folder / ONSET_FILE, onset)
    atomic_write_text(answers_path, answers.to_json(orient="records", lines=True, force_ascii=False))
    plot_sweep(table, folder / PLOT_FILE)
    atomic_write_text(folder / REPORT_FILE, sweep_markdown(table, onset, manifest))
    manifest["files"] = files
    write_json(manifest_path, manifest)
    return SweepResult(table=table, onset=onset, answers=answers, manifest=manifest, out_dir=folder)
