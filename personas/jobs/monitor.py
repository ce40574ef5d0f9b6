"""The calibrate job: a detector's threshold set at a false-positive rate on benign answers, written as a monitor.

`calibrate_monitor` reads the benign data (`personas.data.load_prompts`: JSONL, CSV, Parquet, a .txt of prompts).
With responses, each (prompt, response) pair is read through the served model (teacher-forced) at the detector's
site; with prompts only, the served model answers them (``samples`` answers per prompt, sampled at
``temperature`` with seeds from ``seed``), through the server's own generation path, and those answers' verdicts
are the calibration's (they are what the server would have said). The threshold is the lowest that flags at most
``fpr`` of the benign answers (`personas.monitoring.fpr_threshold`); the monitor folder gets the detector, the
record (``monitor.json``: data source and checksum, n, the rate asked and reached with its interval, the benign
scores) and, for generated answers, the answers themselves (``calibration_answers.jsonl``, checksummed in the
record).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from personas.artifacts import check_output_dir, output_dir
from personas.config import MonitorConfig
from personas.data.prompts import load_prompts
from personas.monitoring import Monitor

logger = logging.getLogger(__name__)

__all__ = ["CalibrateResult", "calibrate_monitor"]


@dataclass
class CalibrateResult:
    """The calibrated monitor, its record, and where it was written."""

    monitor: Monitor
    calibration: dict[str, Any]
    out_dir: Path | None


def _file_sha256(source: Any) -> str | None:
    if isinstance(source, (str, Path)) and Path(source).is_file():
        digest = hashlib.sha256()
        with open(source, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    return None


def calibrate_monitor(detector: Any, benign: Any, *, config: MonitorConfig | None = None, model: Any = None,
                      out: str | Path | None = None, allow_model_mismatch: bool | None = None) -> CalibrateResult:
    """Calibrate ``detector`` (a folder, ``"default"`` or a fitted detector) on ``benign`` answers read through the
    served model (``model``: loaded, or ``config.model``, or the detector's own) and write the monitor to ``out``.
    See the module docstring."""
    config = config or MonitorConfig()
    if out is not None:
        check_output_dir(out, "personas.monitor")  # before the model loads
    data = load_prompts(benign)
    allow = config.allow_model_mismatch if allow_model_mismatch is None else allow_model_mismatch
    monitor = Monitor(model if model is not None else config.model, detector, allow_model_mismatch=allow)
    answers = None
    verdicts = None
    if data.responses is None:
        prompts = [p for p in data.prompts for _ in range(config.samples)]
        logger.info("generating %d benign answers (%d prompts x %d) with %s", len(prompts), len(data.prompts),
                    config.samples, monitor.model.model_id)
        table = monitor.generate(prompts, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                 seed=config.seed, batch_size=config.batch_size)
        responses = table["answer"].tolist()
        verdicts = table.attrs["verdicts"]
        answers = [{"prompt": p, "response": r, "score": v.score} for p, r, v in zip(prompts, responses, verdicts,
                                                                                      strict=True)]
        text = "".join(json.dumps(a, ensure_ascii=False) + "\n" for a in answers)
        sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
        generated = {"model": monitor.model.model_id, "prompts": len(data.prompts), "prompts_sha256":
                     _file_sha256(benign) or data.hash, "samples": config.samples,
                     "max_new_tokens": config.max_new_tokens, "temperature": config.temperature,
                     "seed": config.seed, "answers_file": "calibration_answers.jsonl"}
    else:
        prompts, responses = data.prompts, data.responses
        sha, generated = _file_sha256(benign) or data.hash, None
    record = monitor.calibrate(prompts, responses, config.fpr, ci_level=config.ci_level, source=data.source,
                               data_sha256=sha, generated=generated, verdicts=verdicts)
    record["config"] = asdict(config)
    folder = None
    if out is not None:
        folder = output_dir(out, "personas.monitor")
        monitor.save(folder, answers=answers)
    return CalibrateResult(monitor=monitor, calibration=record, out_dir=folder)
