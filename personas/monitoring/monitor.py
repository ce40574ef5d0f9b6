"""`Monitor`: a saved detector watching a model, with a threshold calibrated at a false-positive rate.

A monitor is a detector (`personas detect --out`: SAE latents or the dense direction, with its site, SAE and pooling
in its provenance) plus the threshold it flags at. The threshold is calibrated on benign answers read through the
served model exactly as the server reads its own (`Monitor.calibrate`: the same site, the same per-token function,
the same pooling), at a false-positive rate (`personas.monitoring.thresholds.fpr_threshold`), and saved with its
calibration record: how many answers, where they came from and their checksum, the rate asked and the rate reached
with its interval, the benign scores themselves (so that a review threshold at another rate can be read off later).
A detector without a calibration flags at its training threshold (Youden's J on its labelled training answers), and
says so (``threshold_source``).

    monitor = personas.Monitor("smollm2", "default")            # the shipped monitor (see `DEFAULT_MONITOR`)
    table = monitor.generate(["How do I fix a flat tyre?"])     # answers, scores, flags
    monitor.score(prompts, responses)                           # text the model did not generate, read through it

A monitor folder holds ``detector.json`` and ``detector.safetensors`` (the detector, unchanged), ``monitor.json``
(the threshold and its calibration record) and, when the benign answers were generated for the calibration,
``calibration_answers.jsonl``. `load_monitor` reads one (or a bare detector folder, or ``"default"``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from personas.artifacts import atomic_write_text, manifest_header, write_json
from personas.capturing import tokenize_conversations
from personas.config import CaptureConfig
from personas.detect import load_detector
from personas.devices import sae_dtype
from personas.errors import PersonasError, SiteMismatchError
from personas.logs import quiet_third_party
from personas.models import as_model_handle, load_model
from personas.monitoring.generation import GenerationRequest, monitored_decode
from personas.monitoring.scorer import TokenScorer, Verdict
from personas.monitoring.thresholds import fpr_threshold
from personas.saes import check_site, data_dir, load_sae, recorded_sae_spec, same_model
from personas.steering import prompt_ids

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MONITOR", "MONITOR_FILE", "Monitor", "load_monitor", "monitor_path"]

MONITOR_FILE = "monitor.json"
ANSWERS_FILE = "calibration_answers.jsonl"
FORMAT_VERSION = 1
#: The monitor shipped for the offline default model (package data, ``personas/resources/monitors/``).
DEFAULT_MONITOR = "smollm2-em-dev"


def monitor_path(spec: str | os.PathLike) -> Path:
    """The folder ``spec`` names: ``"default"`` (or a shipped monitor's name) in the package data, else a folder."""
    text = os.fspath(spec)
    shipped = data_dir() / "monitors"
    name = DEFAULT_MONITOR if text == "default" else text
    if (shipped / name / MONITOR_FILE).is_file() and not Path(text).is_dir():
        return shipped / name
    path = Path(text).expanduser()
    if not path.is_dir():
        names = sorted(p.name for p in shipped.iterdir()) if shipped.is_dir() else []
        raise PersonasError(f"monitor {text!r} is not a folder; expected 'default', a shipped monitor {names}, a "
                            "folder written by `personas monitor calibrate --out`, or a detector folder "
                            "(`personas detect --out DIR`: DIR/detector).")
    return path


def _read_record(folder: Path) -> dict[str, Any] | None:
    path = folder / MONITOR_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PersonasError(f"{str(path)!r} is not valid JSON ({exc}); calibrate the monitor again.") from exc
    if not isinstance(record, dict) or record.get("kind") != "personas.monitor":
        raise PersonasError(f"{str(path)!r} is not a monitor record (kind {record.get('kind') if isinstance(record, dict) else None!r}); "
                            "expected one written by `personas monitor calibrate`.")
    if record.get("format_version") != FORMAT_VERSION:
        raise PersonasError(f"{path} has format_version {record.get('format_version')!r}; this personas reads "
                            f"{FORMAT_VERSION}.")
    threshold = record.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not np.isfinite(threshold):
        raise PersonasError(f"{path}: threshold={threshold!r}; expected a finite number. Calibrate again.")
    return record


class Monitor:
    """A detector reading a model's site while it generates, and the threshold it flags at.

    Args:
        model: the served model: a `ModelHandle` (or TransformerLens model) or a name `load_model` takes; default:
            the model the detector was fit on.
        detector: a fitted `PersonaDetector` / `DiffMeansProbe`, a detector or monitor folder, or ``"default"``.
        sae: the SAE the detector was fit on (loaded from its provenance when not given).
        threshold: flag at this score instead of the calibrated (or training) threshold.
        allow_model_mismatch: read the detector's site on a model other than the one it was fit on (a fine-tune
            of it); the site and width must still match.

    ``threshold``, ``threshold_source`` (``"fpr"``, ``"detector"`` or ``"given"``), ``calibration`` (the record, or
    None), ``scorer`` (the `TokenScorer`), ``capture`` (the detector's `CaptureConfig`: prompt rendering).
    """

    def __init__(self, model: Any = None, detector: Any = "default", *, sae: Any = None, threshold: float | None = None,
                 allow_model_mismatch: bool = False) -> None:
        record = None
        self.source: str | None = None
        if isinstance(detector, (str, os.PathLike)):
            folder = monitor_path(detector)
            self.source = str(folder)
            record = _read_record(folder)
            detector = load_detector(folder)
        prov = getattr(detector, "provenance", None) or {}
        cap = {k: v for k, v in (prov.get("capture") or {}).items() if k in CaptureConfig.__dataclass_fields__}
        self.capture = CaptureConfig(**cap)
        fit_model = (prov.get("model") or {}).get("model") or self.capture.model
        with quiet_third_party():
            handle = (as_model_handle(model) if model is not None and not isinstance(model, str)
                      else load_model(model or fit_model, device=self.capture.device, dtype=self.capture.dtype))
            uses_sae = detector.kind == "detector" and bool(prov.get("sae"))
            if uses_sae and sae is None:
                spec = prov["sae"].get("spec")
                if not spec or spec == "in-memory":
                    raise PersonasError("the detector was fit on an SAE loaded in memory, so its provenance names no "
                                        "SAE to load; pass sae= (the same SAE).")
                sae = load_sae(recorded_sae_spec(prov["sae"].get("identity"), spec), device=handle.device,
                               dtype=sae_dtype(self.capture.dtype, handle.device), model=fit_model)
        self.model = handle
        self.detector = detector
        self.scorer = TokenScorer(detector, sae if uses_sae else None)
        self.fit_model = fit_model
        handle.check_hooks([self.scorer.hook])
        if uses_sae:
            check_site(sae, self.scorer.hook, handle, allow_model_mismatch=True)
        if not allow_model_mismatch and not same_model(fit_model, handle.model_id):
            raise SiteMismatchError(
                f"the detector was fit on model {fit_model!r}, not {handle.model_id!r}; its scores and threshold "
                "belong to that model. Serve that model, or pass allow_model_mismatch=True (--allow-model-mismatch) "
                "to read the same site of a fine-tune of it.")
        self.calibration = (record or {}).get("calibration")
        if threshold is not None:
            self.threshold, self.threshold_source = float(threshold), "given"
        elif record is not None:
            self.threshold, self.threshold_source = float(record["threshold"]), record.get("threshold_source", "fpr")
        else:
            self.threshold, self.threshold_source = float(detector.threshold_), "detector"
            logger.info("the monitor flags at the detector's training threshold %.4g (Youden's J on its labelled "
                        "training answers), not at a false-positive rate: calibrate it with `personas monitor "
                        "calibrate`", self.threshold)

    def __repr__(self) -> str:
        where = f"{self.scorer.kind} at {self.scorer.hook} ({self.scorer.pool} pooling)"
        cal = ""
        if self.calibration:
            cal = f", FPR {self.calibration['fpr_reached']:.4f} on {self.calibration['n']} benign answers"
        return (f"Monitor({where} on {self.model.model_id!r}; threshold {self.threshold:.4g} "
                f"[{self.threshold_source}{cal}])")

    # ---------------------------------------------------------------------------------------------- reading

    def score(self, prompts: Sequence[str], responses: Sequence[str], *, batch_size: int | None = None) -> Any:
        """Read (prompt, response) pairs through the model and score them: a DataFrame with ``score``,
        ``flagged``, ``max_token_score`` and ``n_tokens`` per pair; ``attrs["verdicts"]`` holds the `Verdict`s."""
        import pandas as pd

        verdicts = self.verdicts(prompts, responses, batch_size=batch_size)
        table = pd.DataFrame([{"score": v.score, "flagged": v.flagged, "max_token_score": v.max_token_score,
                               "n_tokens": v.n_tokens} for v in verdicts],
                             columns=["score", "flagged", "max_token_score", "n_tokens"])
        table.attrs["verdicts"] = verdicts
        table.attrs["threshold"] = self.threshold
        return table

    def verdicts(self, prompts: Sequence[str], responses: Sequence[str], *, batch_size: int | None = None,
                 threshold: float | None = None) -> list[Verdict]:
        """The `Verdict` of each (prompt, response) pair, read through the model (teacher-forced)."""
        import torch

        handle = self.model
        tokenized = tokenize_conversations(handle, list(prompts), list(responses), self.capture)
        size = batch_size or self.capture.batch_size
        pad = handle.tokenizer.pad_token_id if handle.tokenizer.pad_token_id is not None else 0
        order = np.argsort([-len(t.input_ids) for t in tokenized], kind="stable")
        out: dict[int, Verdict] = {}
        at = self.threshold if threshold is None else float(threshold)
        for lo in range(0, len(order), size):
            batch = order[lo:lo + size]
            width = max(len(tokenized[i].input_ids) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attn = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                seq = tokenized[i].input_ids
                ids[row, :len(seq)] = torch.tensor(seq)
                attn[row, :len(seq)] = 1
            acts = handle.run_hooks(ids.to(handle.device), attn.to(handle.device), [self.scorer.hook])[self.scorer.hook]
            for row, i in enumerate(batch):
                t = tokenized[i]
                out[int(i)] = self.scorer.verdict(self.scorer.features(acts[row, t.start:t.end]), at)
        return [out[i] for i in range(len(tokenized))]

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 64, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int = 0, stop: Sequence[str] = (), batch_size: int = 16) -> Any:
        """Answer each prompt and watch the answers as they are generated (the server's path, in one process).

        Returns a DataFrame with ``prompt``, ``answer``, ``score``, ``flagged``, ``max_token_score``,
        ``n_tokens``, ``finish_reason``; ``attrs["verdicts"]`` holds the `Verdict`s. Prompt ``i`` is sampled with
        seed ``seed + i`` (greedy at ``temperature=0``), whatever its batch."""
        import pandas as pd

        ids = prompt_ids(self.model, list(prompts), max_new_tokens=max_new_tokens, config=self.capture)
        requests = [GenerationRequest(ids=row, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                      seed=seed + i, stop=tuple(stop)) for i, row in enumerate(ids)]
        results = []
        for lo in range(0, len(requests), batch_size):
            results += monitored_decode(self.model, requests[lo:lo + batch_size], scorer=self.scorer,
                                        threshold=self.threshold)
        table = pd.DataFrame([{"prompt": p, "answer": r.text, "score": r.verdict.score, "flagged": r.verdict.flagged,
                               "max_token_score": r.verdict.max_token_score, "n_tokens": r.verdict.n_tokens,
                               "finish_reason": r.finish_reason} for p, r in zip(prompts, results, strict=True)])
        table.attrs["verdicts"] = [r.verdict for r in results]
        table.attrs["threshold"] = self.threshold
        return table

    # ---------------------------------------------------------------------------------------------- calibration

    def calibrate(self, prompts: Sequence[str], responses: Sequence[str], fpr: float = 0.01, *,
                  ci_level: float = 0.95, source: str | None = None, data_sha256: str | None = None,
                  generated: dict[str, Any] | None = None, verdicts: Sequence[Verdict] | None = None) -> dict[str, Any]:
        """Set the threshold at false-positive rate ``fpr`` on benign (prompt, response) pairs read through the
        model, and return the calibration record (also kept as ``calibration``). Answers without a token to score
        are left out and counted. ``verdicts``: the pairs' verdicts when they are already known (answers this
        monitor generated: their verdicts are the server's own). ``source``, ``data_sha256`` and ``generated`` (how
        the answers were made) go into the record; the checksum defaults to one of the pairs themselves."""
        verdicts = list(verdicts) if verdicts is not None else self.verdicts(prompts, responses)
        scores = np.array([v.score for v in verdicts if v.score is not None], dtype=np.float64)
        chosen = fpr_threshold(scores, fpr, ci_level)
        if data_sha256 is None:
            digest = hashlib.sha256(b"personas.monitor.benign.v1")
            for pair in zip(prompts, responses, strict=True):
                digest.update(json.dumps(pair, ensure_ascii=False).encode("utf-8"))
            data_sha256 = digest.hexdigest()
        self.threshold, self.threshold_source = chosen.threshold, "fpr"
        self.calibration = {
            **chosen.to_dict(),
            "n_rows": len(verdicts),
            "n_unscored": int(sum(v.score is None for v in verdicts)),
            "data": {"source": source, "sha256": data_sha256, "generated": generated},
            "model": self.model.model_id,
            "score_quantiles": {str(q): float(np.quantile(scores, q)) for q in (0.5, 0.9, 0.95, 0.99)},
            "benign_scores": [float(s) for s in np.sort(scores)],  # unrounded: threshold_at reads them again
        }
        return self.calibration

    def threshold_at(self, fpr: float) -> float:
        """The threshold at another false-positive rate on the calibration's benign answers (e.g. a lower review
        threshold for the judge); needs a calibrated monitor."""
        if not self.calibration or not self.calibration.get("benign_scores"):
            raise PersonasError("this monitor has no calibration on benign answers, so no threshold at a "
                                "false-positive rate; calibrate it with `personas monitor calibrate` first.")
        return fpr_threshold(self.calibration["benign_scores"], fpr, self.calibration.get("ci_level", 0.95)).threshold

    def describe(self) -> dict[str, Any]:
        """What the monitor is, for manifests and the server's ``/v1/models``: detector, site, SAE, threshold and
        calibration (without the benign scores)."""
        prov = getattr(self.detector, "provenance", None) or {}
        calibration = None
        if self.calibration:
            calibration = {k: v for k, v in self.calibration.items() if k != "benign_scores"}
        return {
            "source": self.source,
            "detector": self.scorer.kind,
            "hook": self.scorer.hook,
            "pool": self.scorer.pool,
            "sae": (prov.get("sae") or {}).get("spec") if self.scorer.uses_sae else None,
            "latents": [int(f) for f in self.scorer.columns] if self.scorer.uses_sae else None,
            "fit_model": self.fit_model,
            "train_data": prov.get("train_data"),
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "calibration": calibration,
        }

    def save(self, folder: str | os.PathLike, answers: Sequence[dict[str, Any]] | None = None) -> Path:
        """Write the detector and ``monitor.json`` (threshold and calibration record) into ``folder``; with
        ``answers`` (the generated benign answers), also ``calibration_answers.jsonl``."""
        folder = Path(folder)
        self.detector.save(folder)
        if answers is not None:
            text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in answers)
            atomic_write_text(folder / ANSWERS_FILE, text)
        write_json(folder / MONITOR_FILE, {
            **manifest_header("personas.monitor"),
            "format_version": FORMAT_VERSION,
            "threshold": float(self.threshold),
            "threshold_source": self.threshold_source,
            "calibration": self.calibration,
            "monitor": {k: v for k, v in self.describe().items() if k not in ("calibration", "source")},
            "capture": asdict(self.capture),
        })
        return folder


def load_monitor(spec: str | os.PathLike = "default", model: Any = None, **options: Any) -> Monitor:
    """The monitor ``spec`` names (``"default"``, a monitor folder, a detector folder) on ``model``; ``options``
    go to `Monitor` (``sae``, ``threshold``, ``allow_model_mismatch``)."""
    return Monitor(model, spec, **options)
