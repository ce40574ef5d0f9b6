"""The eval-sae job: load a model and SAEs, read texts and/or labelled answers, run `evaluate_saes`, write JSON."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from personas.artifacts import manifest_header, write_json
from personas.config import DataConfig, EvalSAEConfig
from personas.data import load_responses
from personas.errors import DataError, PersonasError
from personas.logs import quiet_third_party
from personas.models import load_model
from personas.saes import check_sae_spec, load_sae, sae_entry
from personas.training.evaluate import evaluate_saes

logger = logging.getLogger(__name__)

__all__ = ["eval_sae_job", "read_texts", "sae_names"]


def read_texts(path: str | Path, limit: int | None = None) -> list[str]:
    """Documents from a text file (one per line) or a JSONL file whose records have a ``text`` field."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--text {str(path)!r} is not a file; expected a text file (one document per line) or a "
                        "JSONL file with a 'text' field per record.")
    texts: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            if path.suffix == ".jsonl":
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path} line {number} is not JSON ({exc.msg}); expected one object per "
                                    "line with a 'text' field.") from None
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise DataError(f"{path} line {number} has no string 'text' field; expected "
                                    '{"text": "..."} per line.')
                line = record["text"]
            texts.append(line)
            if limit is not None and len(texts) >= limit:
                break
    if not texts:
        raise DataError(f"--text {str(path)!r} holds no documents.")
    return texts


def sae_names(specs: Sequence[str]) -> list[str]:
    """Short, distinct column names for SAE specs (a folder's name, else the spec itself)."""
    names = [Path(s).name if Path(s).exists() else str(s) for s in specs]
    return [n if names.count(n) == 1 else f"{n} ({i + 1})" for i, n in enumerate(names)]


def eval_sae_job(
    saes: Sequence[str],
    *,
    model: str = "smollm2",
    text: str | Path | None = None,
    data: str | Path | None = None,
    config: EvalSAEConfig | None = None,
    data_config: DataConfig | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    out: str | Path | None = None,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Evaluate the SAEs ``saes`` (folders, 'RELEASE:SAE_ID' or 'default') on ``model`` over ``text`` and/or the
    labelled answers ``data``; with ``out``, also write the results with their provenance as JSON there."""
    config = config or EvalSAEConfig()
    if not saes:
        raise PersonasError("personas eval-sae needs at least one SAE (a folder, RELEASE:SAE_ID or 'default').")
    if text is None and data is None:
        raise PersonasError("personas eval-sae needs --text FILE (documents) and/or --data FILE (labelled answers).")
    for spec in saes:  # a wrong SAE fails in milliseconds, before the model loads
        check_sae_spec(spec, model)
    texts = read_texts(text, config.max_texts) if text is not None else None
    responses = load_responses(str(data), data_config) if data is not None else None
    with quiet_third_party():
        handle = load_model(model, device=device, dtype=dtype)
    loaded = {name: load_sae(spec, device=device, model=model)
              for name, spec in zip(sae_names(saes), saes, strict=True)}
    results = evaluate_saes(handle, loaded, texts=texts, responses=responses, config=config, progress=progress)
    if out is not None:
        from dataclasses import asdict

        record = {
            **manifest_header("personas.eval-sae"),
            "model": handle.provenance(),
            "saes": {name: sae_entry(loaded[name], spec)
                     for name, spec in zip(loaded, saes, strict=True)},
            "text": None if text is None else {"path": str(text), "n_texts": len(texts or [])},
            "data": None if data is None else {"path": str(data), "n_answers": len(responses.frame)},
            "config": asdict(config),
            "results": results,
        }
        write_json(out, record)
        logger.info("wrote %s", out)
    return results
