"""The jobs: one function per run that reads inputs, runs the steps, and writes a run folder with its manifest.

* `personas.jobs.rank`: `rank_responses` (and `rank_cache_job`; `rank` and `rank_from_cache` are their names
  before 0.3) -> ``ranking.csv``, ``ranking.parquet``, ``manifest.json``;
  `load_run` reads such a folder back as a `Ranking`;
* `personas.jobs.detect`: `fit_detector` -> ``eval.json``, the detector, the dense baseline;
* `personas.jobs.diff`: `diff_models` -> ``diff.csv`` (model diffing);
* `personas.jobs.explain`: `explain` -> ``explanations.csv`` in a rank folder (latents explained in words, scored);
* `personas.jobs.judge`: `judge_responses` -> ``judged.jsonl`` (answers scored by a judge, ready to rank);
* `personas.jobs.train_sae`: `train_sae_job` -> a sae-lens SAE folder;
* `personas.jobs.eval_sae`: `eval_sae_job` -> SAEs side by side (`personas.training.evaluate`), as JSON;
* `personas.jobs.steer`: `steer_job` -> ``dose_response.csv``, ``generations.csv`` (steering at several strengths,
  judged);
* `personas.jobs.validate`: `validate_job` -> ``screening.csv``, ``confirmation.csv``, ``generations.csv`` (the
  persona-features protocol: candidates screened by steering, the best confirmed on other prompts);
* `personas.jobs.monitor`: `calibrate_monitor` -> a monitor folder (the detector, ``monitor.json``: its threshold at
  a false-positive rate on benign answers and the calibration record).
"""

from personas.jobs.detect import DetectResult, fit_detector, write_detect
from personas.jobs.diff import DiffResult, diff_models, write_diff
from personas.jobs.eval_sae import eval_sae_job
from personas.jobs.explain import explain
from personas.jobs.judge import JudgeResult, judge_responses
from personas.jobs.monitor import CalibrateResult, calibrate_monitor
from personas.jobs.rank import (
    RankResult,
    load_run,
    rank,
    rank_cache_job,
    rank_from_cache,
    rank_responses,
    write_ranking,
)
from personas.jobs.steer import SteerResult, steer_job
from personas.jobs.train_sae import train_sae_job
from personas.jobs.validate import ValidateResult, validate_job

__all__ = ["CalibrateResult", "DetectResult", "DiffResult", "JudgeResult", "RankResult", "SteerResult",
           "ValidateResult", "calibrate_monitor", "diff_models", "eval_sae_job", "explain", "fit_detector",
           "judge_responses", "load_run", "rank", "rank_cache_job", "rank_from_cache", "rank_responses", "steer_job",
           "train_sae_job", "validate_job", "write_detect", "write_diff", "write_ranking"]
