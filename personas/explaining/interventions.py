"""Intervention figures of a latent, where steering results exist: what `personas validate` and `personas steer`
measured when the latent was added to the model's activations.

`intervention_figures` reads run folders of those commands (the subfolders of a rank folder, as the feature cards
do, and any folder named): a ``personas.validate`` manifest gives each candidate's screening effect (the mean
persona score of the steered generations minus the unsteered ones, bootstrap 95% over prompts) and, for the latent
it confirmed, the dose-response Spearman rho; a ``personas.steer`` manifest gives the Spearman rho of the
detector's (or judge's) score against the strength. Nothing is steered here: a latent without such a run has no
figure.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from personas.artifacts import MANIFEST_FILE
from personas.errors import PersonasError

__all__ = ["intervention_figures"]

logger = logging.getLogger(__name__)


def _manifests(folders: Iterable[Path]) -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for folder in folders:
        for path in [folder / MANIFEST_FILE, *sorted(folder.glob(f"*/{MANIFEST_FILE}"))]:
            try:
                m = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(m, dict) and m.get("kind") in ("personas.validate", "personas.steer"):
                found.append((path.parent, m))
    return found


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def intervention_figures(run_dir: str | Path | None, extra: Iterable[str | Path] = ()) -> dict[int, dict[str, Any]]:
    """``{feature: {"text", "effect", "lo", "hi", "source"}}`` from the validate and steer runs inside ``run_dir``
    and in the folders ``extra`` (see the module docstring)."""
    folders = []
    for folder in extra:
        path = Path(folder)
        if not path.is_dir():
            raise PersonasError(f"--interventions {str(path)!r} is not a folder; expected the --out folder of "
                                "`personas validate` or `personas steer`.")
        folders.append(path)
    if run_dir is not None:
        folders.insert(0, Path(run_dir))
    out: dict[int, dict[str, Any]] = {}
    for folder, m in _manifests(dict.fromkeys(folders)):
        if m["kind"] == "personas.validate":
            for row in m.get("screening") or []:
                f, effect = row.get("feature"), _number(row.get("effect"))
                if f is None or effect is None:
                    continue
                lo, hi = _number(row.get("effect_lo")), _number(row.get("effect_hi"))
                text = (f"validate screening ({folder.name}): persona-score effect {effect:+.3f}"
                        + (f" [{lo:+.3f}, {hi:+.3f}]" if lo is not None and hi is not None else ""))
                dose = m.get("dose_response") or {}
                if m.get("chosen") == f and _number(dose.get("rho")) is not None:
                    p = _number(dose.get("p_value"))
                    text += (f"; confirmed, dose-response rho {float(dose['rho']):.3f}"
                             + (f" (p {p:.2g})" if p is not None else ""))
                _add(out, int(f), text, effect, lo, hi, str(folder))
        else:
            f, rho = m.get("feature"), (m.get("judged_spearman") or m.get("spearman") or {})
            if f is None or _number(rho.get("rho")) is None:
                continue
            text = f"steer ({folder.name}): Spearman rho(score, alpha) {float(rho['rho']):.3f}" + (
                f" (p {float(rho['p_value']):.2g}, n {rho.get('n')})" if _number(rho.get("p_value")) is not None else "")
            _add(out, int(f), text, None, None, None, str(folder))
    return out


def _add(out: dict[int, dict[str, Any]], f: int, text: str, effect: float | None, lo: float | None,
         hi: float | None, source: str) -> None:
    entry = out.setdefault(f, {"text": "", "effect": None, "lo": None, "hi": None, "source": ""})
    entry["text"] = "; ".join(t for t in (entry["text"], text) if t)
    entry["source"] = "; ".join(t for t in (entry["source"], source) if t)
    if entry["effect"] is None and effect is not None:
        entry.update(effect=effect, lo=lo, hi=hi)
