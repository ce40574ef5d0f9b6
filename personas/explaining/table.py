"""The results table of `personas explain`: one row per (latent, explanation), baselines in the same table.

`Explanations` is a pandas DataFrame (a formatted table in Jupyter) with, per latent and explainer, three rows:
the explanation (``kind`` "explanation") and its two baselines ("random-latent": another latent's explanation;
"class-only": "misaligned answers" or "aligned answers"). For each scorer ``S`` (embedding, detection, fuzzing):
``S`` (the AUROC on the held-out windows), ``S_lo`` and ``S_hi`` (bootstrap 95%); on the explanation's rows also
``S_vs_random`` and ``S_vs_class`` (the AUROC gained over each baseline on the same windows, with paired bootstrap
intervals ``_lo`` / ``_hi``) and ``S_beats_baselines`` (both gains' intervals above 0). Then the windows counted
(``n_explain_active``, ``n_explain_silent``, ``n_score_active``, ``n_score_silent``), how the sets were split
(``split``: question, answer, or run), the share of misaligned answers among the activating and silent windows,
the intervention figures of ``personas validate`` / ``steer`` where they exist, and the explainer's cost (seconds,
requests, tokens). `Explanations.summary` puts one latent per row.

It is saved as ``explanations.csv`` in the run folder (`write_explanations`, listed with its checksum in the run's
manifest); `read_explanations` reads it back for the feature cards and ``report.html``.
"""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from personas.artifacts import EXPLANATIONS_FILE, MANIFEST_FILE, write_csv, write_json
from personas.errors import PersonasError

__all__ = ["EXPLANATIONS_FILE", "Explanations", "read_explanations", "write_explanations"]

KINDS = ("explanation", "random-latent", "class-only")
SCORERS = ("embedding", "detection", "fuzzing")


class Explanations(pd.DataFrame):
    """Scored explanations of latents, baselines beside them (see the module docstring)."""

    _metadata = ["notes"]
    #: Notes on how the windows were drawn (fewer than asked for, no questions known), one per latent and note.
    notes: list[str] = []

    @property
    def _constructor(self):
        return Explanations

    @property
    def scorers(self) -> list[str]:
        """The scorers that scored these explanations."""
        return [s for s in SCORERS if s in self.columns]

    def summary(self) -> pd.DataFrame:
        """One row per (latent, explainer): the explanation, each score with its interval, the baselines' scores
        and whether the explanation beats both."""
        rows = []
        frame = pd.DataFrame(self)
        for (feature, explainer), part in frame.groupby(["feature", "explainer"], sort=False):
            main = part[part["kind"] == "explanation"]
            if main.empty:
                continue
            row = main.iloc[0]
            out: dict[str, Any] = {"feature": int(feature), "rank": row.get("rank"), "explainer": explainer,
                                   "explanation": row["explanation"]}
            for s in self.scorers:
                out[s] = _cell(row.get(s), row.get(f"{s}_lo"), row.get(f"{s}_hi"))
                for kind, name in (("random-latent", "random"), ("class-only", "class")):
                    base = part[part["kind"] == kind]
                    out[f"{s} ({name})"] = _cell(base.iloc[0][s]) if not base.empty else ""
                out[f"{s} beats both"] = bool(row.get(f"{s}_beats_baselines", False))
            out["windows"] = f"{int(row['n_score_active'])}+{int(row['n_score_silent'])}"
            out["split"] = row["split"]
            if isinstance(row.get("intervention"), str) and row.get("intervention"):
                out["intervention"] = row["intervention"]
            rows.append(out)
        return pd.DataFrame(rows)

    def _repr_html_(self) -> str:
        table = self.summary()
        body = table.to_html(index=False, escape=True, na_rep="")
        note = ("<p style='font-size:12px;color:#566573'>Scores: AUROC of the explanation's prediction for held-out "
                "activating against silent windows, with a bootstrap 95% interval; in brackets the two baselines "
                "(another latent's explanation, the class alone). <i>beats both</i>: the paired intervals of the "
                "gain over each baseline lie above 0.</p>")
        return f"<div>{body}{note}</div>"


def _cell(value: Any, lo: Any = None, hi: Any = None) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return ""
    if not np.isfinite(v):
        return ""
    if lo is None or hi is None or not np.isfinite(float(lo)) or not np.isfinite(float(hi)):
        return f"{v:.3f}"
    return f"{v:.3f} [{float(lo):.3f}, {float(hi):.3f}]"


def write_explanations(run_dir: str | Path, table: pd.DataFrame, provenance: dict[str, Any]) -> Path:
    """Write ``explanations.csv`` into the rank folder ``run_dir`` and list it (checksum and ``provenance``) in the
    folder's manifest; return the file's path."""
    run_dir = Path(run_dir)
    manifest_path = run_dir / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PersonasError(f"cannot read {str(manifest_path)!r} to list {EXPLANATIONS_FILE} in it ({exc}); "
                            "rerun `personas rank --report` into the folder.") from exc
    entry = write_csv(run_dir / EXPLANATIONS_FILE, pd.DataFrame(table))
    manifest.setdefault("files", {})[EXPLANATIONS_FILE] = {**entry, "features": sorted(
        {int(f) for f in table["feature"]})}
    manifest["explain"] = provenance
    write_json(manifest_path, manifest)
    return run_dir / EXPLANATIONS_FILE


def read_explanations(run_dir: str | Path, manifest: dict[str, Any] | None = None) -> Explanations | None:
    """The ``explanations.csv`` of a rank folder, checked against the checksum its manifest records; None when the
    folder has none."""
    run_dir = Path(run_dir)
    path = run_dir / EXPLANATIONS_FILE
    if not path.is_file():
        return None
    if manifest is None:
        try:
            manifest = json.loads((run_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            manifest = {}
    listed = ((manifest or {}).get("files") or {}).get(EXPLANATIONS_FILE)
    raw = path.read_bytes()
    if not isinstance(listed, dict) or hashlib.sha256(raw).hexdigest() != listed.get("sha256"):
        raise PersonasError(f"{str(path)!r} is not the one the folder's manifest lists (another run's, or edited); "
                            "rerun `personas explain` on the folder.")
    try:
        frame = pd.read_csv(path, keep_default_na=True)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PersonasError(f"{str(path)!r} cannot be read as CSV ({exc}); rerun `personas explain`.") from exc
    missing = [c for c in ("feature", "explainer", "kind", "explanation") if c not in frame.columns]
    if missing:
        raise PersonasError(f"{str(path)!r} lacks the columns {missing}; rerun `personas explain`.")
    frame["explanation"] = frame["explanation"].fillna("").astype(str)
    return Explanations(frame)


def card_entries(table: pd.DataFrame | None, feature: int) -> list[dict[str, Any]]:
    """The explanations of ``feature`` for its card: per explainer, the text, each score, the baselines' scores."""
    if table is None or len(table) == 0:
        return []
    part = pd.DataFrame(table)
    part = part[part["feature"].astype(int) == int(feature)]
    out = []
    for explainer, rows in part.groupby("explainer", sort=False):
        main = rows[rows["kind"] == "explanation"]
        if main.empty:
            continue
        row = main.iloc[0]
        scores = []
        for s in [s for s in SCORERS if s in part.columns]:
            if not np.isfinite(float(row.get(s, np.nan))):
                continue
            base = {k: float(rows[rows["kind"] == k].iloc[0][s]) for k in KINDS[1:]
                    if not rows[rows["kind"] == k].empty}
            scores.append({"scorer": s, "value": float(row[s]), "lo": float(row[f"{s}_lo"]),
                           "hi": float(row[f"{s}_hi"]), "baselines": base,
                           "beats": bool(row.get(f"{s}_beats_baselines", False))})
        out.append({"explainer": str(explainer), "text": str(row["explanation"]), "scores": scores,
                    "split": str(row.get("split", "")), "n_score": f"{int(row['n_score_active'])} activating, "
                                                                  f"{int(row['n_score_silent'])} silent",
                    "intervention": row.get("intervention") if isinstance(row.get("intervention"), str) else ""})
    return out


def card_html(entries: Sequence[dict[str, Any]]) -> str:
    """The explanations box of a feature card (all text escaped)."""
    e = html.escape
    if not entries:
        return ""
    parts = ['<div class="pc-box" style="flex-basis:100%"><b>explanations</b> '
             '<span class="pc-sub">(scored on held-out windows; AUROC, 0.5 = chance)</span><table>']
    for entry in entries:
        weaker = " (word counts: weaker than an LLM's)" if entry["explainer"] == "offline" else ""
        parts.append(f"<tr><th>{e(entry['explainer'])}{e(weaker)}</th><td>{e(entry['text'])}</td></tr>")
        for s in entry["scores"]:
            base = ", ".join(f"{k} {v:.3f}" for k, v in s["baselines"].items())
            verdict = "beats both baselines" if s["beats"] else "does not beat both baselines"
            parts.append(f"<tr><td class='pc-sub'>{e(s['scorer'])}</td><td>{s['value']:.3f} [{s['lo']:.3f}, "
                         f"{s['hi']:.3f}]; baselines: {e(base)}; {e(verdict)} "
                         f"<span class='pc-sub'>({e(entry['n_score'])}; split by {e(entry['split'])})</span>"
                         "</td></tr>")
        if entry.get("intervention"):
            parts.append(f"<tr><td class='pc-sub'>intervention</td><td>{e(entry['intervention'])}</td></tr>")
    parts.append("</table></div>")
    return "".join(parts)
