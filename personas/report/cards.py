"""Feature cards: what one latent is, at a glance, from what a run already holds.

A card puts on one page what the tools for reading SAE latents show (Neuronpedia's feature pages, SAE dashboards)
and what only this project knows about the latent:

- the ranking's statistics (AUROC with its interval, within-question AUROC, Cohen's d, firing rate per class, q);
- its confound flags (``kind``, correlation with length and with punctuation, share of its mass on one token);
- top-activating responses at several activation quantiles, not only the maximum (tokens highlighted);
- the logit lens of a causal model: the tokens its decoder direction promotes and suppresses through the final
  norm's weight (centred first for a LayerNorm) and the unembedding, as SAE dashboards do; skipped for encoders;
- the histogram of each response's highest activation per class, and the latent's density (share of tokens and of
  responses where it fires);
- its nearest latents by decoder cosine, with their rank in this ranking;
- the steering runs of the latent kept inside the run folder (``personas steer --feature F --out RUN_DIR/...``);
- its explanations in words and their scores against the baselines, when ``personas explain`` wrote
  ``explanations.csv`` into the run folder (`personas.explaining`);
- a Neuronpedia link for SAEs of public releases.

Entry points: `card` (``personas.card(result_or_run_dir, feature)``, an HTML repr in Jupyter), `cards` (several),
`write_cards` (``personas card RUN_DIR FEATURE... --out DIR``: one standalone HTML file per latent) and
`cards_html` (the cards of ``report.html``). Nothing runs the model: per-token codes come from the `RankResult`,
from the run folder's ``token_codes.npz`` (written by ``personas rank --report``) or from the activation cache a
``rank --cache`` run read; the SAE's decoder from the result or its spec in the manifest; the logit lens reads the
unembedding and the final norm's weight alone (`personas.report.lens`).
"""

from __future__ import annotations

import html
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from personas.artifacts import MANIFEST_FILE, atomic_write_text
from personas.errors import PersonasError
from personas.explaining.table import card_entries, card_html, read_explanations
from personas.report.examples import neuronpedia_url
from personas.report.highlight import token_pieces, tokens_html
from personas.report.lens import LensSource, logit_lens
from personas.report.run_data import RunData, open_run_data
from personas.report.style import PALETTE

__all__ = ["FeatureCard", "card", "cards", "cards_html", "write_cards"]

logger = logging.getLogger(__name__)

#: Activation quantiles (of the responses where the latent fires) the examples are drawn at, after the top ones.
QUANTILES = (0.75, 0.5, 0.25)
#: Nearest latents shown, and tokens per side of the logit lens.
N_NEIGHBOURS = 5
N_LENS = 10
_STATS = (("auroc", "AUROC", "{:.3f}"), ("group_auroc", "within-question AUROC", "{:.3f}"),
          ("cohens_d", "Cohen's d", "{:.2f}"), ("frac_active_pos", "fires in misaligned", "{:.0%}"),
          ("frac_active_neg", "fires in aligned", "{:.0%}"), ("q_value", "q (BH)", "{:.2e}"))

CARD_CSS = """
.personas-card{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;font-size:13px;color:#1b2631;
  border:1px solid #d5d8dc;border-radius:8px;padding:12px 16px;margin:14px 0;max-width:1040px;box-sizing:border-box;
  overflow-wrap:anywhere}
.personas-card h3{margin:0 0 6px 0;font-size:16px}
.personas-card .pc-sub{color:#566573;font-size:12px}
.personas-card .pc-grid{display:flex;flex-wrap:wrap;gap:14px}
.personas-card .pc-box{flex:1 1 300px;min-width:0}
.personas-card table{border-collapse:collapse;font-size:12.5px;max-width:100%}
.personas-card td,.personas-card th{padding:2px 8px 2px 0;text-align:left;vertical-align:top}
.personas-card .pc-kind{display:inline-block;border-radius:3px;padding:0 6px;background:#f5cba7;font-size:12px}
.personas-card .pc-ok{background:#d5f5e3}
.personas-card .pc-tok{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap}
.personas-card .pc-text{white-space:pre-wrap;line-height:1.6;font-family:ui-monospace,Menlo,Consolas,monospace;
  font-size:12px}
.personas-card svg{max-width:100%;height:auto}
"""


@dataclass
class FeatureCard:
    """Everything a card shows about one latent; `to_html` renders it, `to_dict` keeps it as JSON."""

    feature: int
    rank: int | None
    stats: dict[str, Any]
    confounds: dict[str, Any]
    examples: list[dict[str, Any]]
    histogram: dict[str, Any]
    neighbours: list[dict[str, Any]]
    lens: dict[str, Any]
    steering: list[dict[str, Any]] = field(default_factory=list)
    neuronpedia_url: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    explanations: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The card as plain JSON-serialisable data."""
        return json.loads(json.dumps(self.__dict__, default=_jsonable))

    def to_html(self, *, standalone: bool = False) -> str:
        """The card as HTML (all text escaped); ``standalone`` wraps it in a whole page with its style."""
        body = _card_html(self)
        if not standalone:
            return f"<style>{CARD_CSS}</style>{body}"
        title = html.escape(f"feature {self.feature}: personas card")
        return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                '<meta name="viewport" content="width=device-width,initial-scale=1">'
                f"<title>{title}</title><style>body{{margin:16px}}{CARD_CSS}</style></head><body>\n{body}\n"
                "</body></html>\n")

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        s, c, lens = self.stats, self.confounds, self.lens
        promoted = ", ".join(repr(t["token"]) for t in (lens.get("promoted") or [])[:5])
        return (f"FeatureCard(feature={self.feature}, rank={self.rank}, AUROC {s.get('auroc', float('nan')):.3f}, "
                f"kind={c.get('kind') or 'none'!r}, {len(self.examples)} examples"
                + (f", promotes {promoted}" if promoted else "") + ")")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value).__name__)


# ---------------------------------------------------------------------------------------------------- building


def card(source: Any, feature: int, **kwargs: Any) -> FeatureCard:
    """The card of ``feature`` from a `RankResult` or a ``personas rank`` run folder (see `cards`)."""
    return cards(source, [feature], **kwargs)[0]


def cards(source: Any, features: Any, *, model: Any = None, sae: Any = None, tokenizer: Any = None,
          lens: bool = True) -> list[FeatureCard]:
    """The cards of ``features`` (latent indices) from a `RankResult` or a ``personas rank`` run folder.

    Args:
        source: a `RankResult` that kept per-token codes (``rank(..., keep_tokens=True)``), or the ``--out`` folder
            of ``personas rank --report`` (its ``token_codes.npz``) or of ``personas rank --cache`` (the cache's
            per-token codes).
        model, sae, tokenizer: already loaded objects to use instead of those the run names (the model only for its
            unembedding: the logit lens never runs a forward pass).
        lens: compute the logit lens (it reads the unembedding from the model's folder).
    """
    data = open_run_data(source, features, sae=sae, tokenizer=tokenizer, model=model)
    lens_source = LensSource.for_run(data, model=model) if lens else None
    explained = _explanations(data)
    return [_build(data, int(f), lens_source, explained) for f in features]


def _explanations(data: RunData) -> Any:
    """The run folder's ``explanations.csv`` (`personas explain`), or None; a stale file is left out, logged."""
    if data.run_dir is None:
        return None
    try:
        return read_explanations(data.run_dir, data.manifest)
    except PersonasError as exc:
        logger.warning("no explanations on the cards: %s", exc)
        return None


def _build(data: RunData, feature: int, lens_source: LensSource | None, explained: Any = None) -> FeatureCard:
    ranking = data.ranking
    rows = np.flatnonzero(ranking["feature"].to_numpy() == feature)
    if rows.size == 0:
        raise PersonasError(f"feature {feature} is not in this ranking ({len(ranking)} features tested); pick one of "
                            "its rows (a feature dropped by min_frac_active has no statistics).")
    row = ranking.iloc[int(rows[0])]
    stats = {c: _num(row.get(c)) for c in ("auroc", "auroc_lo", "auroc_hi", "group_auroc", "cohens_d",
                                           "frac_active_pos", "frac_active_neg", "q_value", "p_value")}
    stats["significant"] = bool(row.get("significant", False))
    kind = row.get("kind")
    confounds = {"kind": "" if not isinstance(kind, str) else kind,
                 **{c: _num(row.get(c)) for c in ("length_corr", "punct_corr", "top_token_share")},
                 "top_token": str(row.get("top_token_text")) if isinstance(row.get("top_token_text"), str) else None,
                 "thresholds": data.thresholds}
    column, offsets = data.column(feature), data.offsets
    best = _response_max(column, offsets)
    lens_part = ({"note": "logit lens not computed (lens=False)."} if lens_source is None
                 else logit_lens(lens_source, data.decoder_row(feature), k=N_LENS))
    return FeatureCard(
        feature=feature, rank=int(rows[0]) + 1, stats=stats, confounds=confounds,
        examples=_quantile_examples(data, column, best), histogram=_histogram(column, best, data.labels),
        neighbours=_neighbours(data, feature), lens=lens_part, steering=data.steering(feature),
        neuronpedia_url=neuronpedia_url(data.sae_info, feature) if data.sae_info else None,
        source={"model": data.model_name, "hook": data.hook, "sae": (data.sae_info or {}).get("spec")},
        explanations=card_entries(explained, feature),
    )


def _num(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if out != out else out


def _response_max(column: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    best = np.zeros(offsets.size - 1)
    nonempty = np.diff(offsets) > 0
    if nonempty.any():
        best[nonempty] = np.maximum.reduceat(column, offsets[:-1][nonempty])
    return best


def _quantile_examples(data: RunData, column: np.ndarray, best: np.ndarray, per: int = 2) -> list[dict[str, Any]]:
    """The top ``per + 1`` responses, then ``per`` responses nearest each of `QUANTILES` of the active ones."""
    active = np.flatnonzero(best > 0)
    if active.size == 0:
        return []
    order = active[np.lexsort((active, -best[active]))]
    picked: list[tuple[str, int]] = [("top", int(r)) for r in order[: per + 1]]
    seen = {r for _, r in picked}
    for q in QUANTILES:
        target = np.quantile(best[active], q)
        for r in order[np.argsort(np.abs(best[order] - target), kind="stable")]:
            if int(r) in seen:
                continue
            picked.append((f"q{int(q * 100)}", int(r)))
            seen.add(int(r))
            if sum(1 for lab, _ in picked if lab == f"q{int(q * 100)}") >= per:
                break
    out = []
    for bucket, r in picked:
        lo, hi = data.offsets[r], data.offsets[r + 1]
        out.append({"bucket": bucket, "row": r, "max": float(best[r]), "label": int(data.labels[r]),
                    "id": None if data.ids is None else str(data.ids[r]),
                    "tokens": token_pieces(data.tokenizer, data.token_ids[lo:hi], data.text(r)),
                    "activations": column[lo:hi].astype(float).round(4).tolist()})
    return out


def _histogram(column: np.ndarray, best: np.ndarray, labels: np.ndarray, bins: int = 20) -> dict[str, Any]:
    """Counts of each response's highest activation per class (responses where it never fires counted apart)."""
    top = float(best.max()) if best.size else 0.0
    edges = np.linspace(0.0, top if top > 0 else 1.0, bins + 1)
    out: dict[str, Any] = {"edges": edges.round(5).tolist(),
                           "token_density": float((column != 0).mean()) if column.size else 0.0,
                           "response_density": float((best > 0).mean()) if best.size else 0.0}
    for value, name in ((1, "misaligned"), (0, "aligned")):
        b = best[labels == value]
        out[name] = np.histogram(b[b > 0], bins=edges)[0].tolist()
        out[f"{name}_silent"] = int((b <= 0).sum())
    return out


def _neighbours(data: RunData, feature: int) -> list[dict[str, Any]]:
    W = data.decoder()
    if W is None:
        return []
    norms = np.linalg.norm(W, axis=1)
    cos = W @ W[feature] / np.maximum(norms * norms[feature], 1e-12)
    cos[feature] = -np.inf
    nearest = np.argsort(-cos, kind="stable")[:N_NEIGHBOURS]
    ranks = {int(f): i + 1 for i, f in enumerate(data.ranking["feature"].to_numpy())}
    kinds = dict(zip(data.ranking["feature"].to_numpy().tolist(),
                     data.ranking["kind"].fillna("").tolist() if "kind" in data.ranking else [], strict=False))
    return [{"feature": int(f), "cosine": float(cos[f]), "rank": ranks.get(int(f)), "kind": kinds.get(int(f), "")}
            for f in nearest]


# ---------------------------------------------------------------------------------------------------- HTML


def _fmt(value: Any, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


def _card_html(c: FeatureCard) -> str:
    e = html.escape
    s, conf = c.stats, c.confounds
    kind = conf.get("kind") or ""
    badge = (f'<span class="pc-kind">{e(kind)}</span>' if kind else '<span class="pc-kind pc-ok">no confound flag</span>')
    link = (f' &middot; <a href="{e(c.neuronpedia_url)}" target="_blank" rel="noopener">Neuronpedia</a>'
            if c.neuronpedia_url and c.neuronpedia_url.startswith("https://") else "")
    rank = f"rank {c.rank}" if c.rank else "not ranked"
    parts = [f'<div class="personas-card" id="card-{c.feature}"><h3>feature {c.feature} {badge}</h3>',
             f'<div class="pc-sub">{e(rank)}{" &middot; significant" if s.get("significant") else ""}'
             f' &middot; {e(str(c.source.get("model")))} at {e(str(c.source.get("hook")))}{link}</div>',
             '<div class="pc-grid"><div class="pc-box"><table>']
    interval = (f" [{_fmt(s.get('auroc_lo'), '{:.3f}')}, {_fmt(s.get('auroc_hi'), '{:.3f}')}]"
                if s.get("auroc_lo") is not None else "")
    for key, label, fmt in _STATS:
        text = _fmt(s.get(key), fmt) + (interval if key == "auroc" else "")
        parts.append(f"<tr><th>{e(label)}</th><td>{e(text)}</td></tr>")
    thr = conf.get("thresholds") or {}
    parts.append(f"<tr><th>length corr.</th><td>{e(_fmt(conf.get('length_corr'), '{:+.2f}'))}</td></tr>"
                 f"<tr><th>punctuation corr.</th><td>{e(_fmt(conf.get('punct_corr'), '{:+.2f}'))}</td></tr>"
                 f"<tr><th>top-token share</th><td>{e(_fmt(conf.get('top_token_share'), '{:.0%}'))}"
                 + (f' (<span class="pc-tok">{e(repr(conf["top_token"]))}</span>)' if conf.get("top_token") else "")
                 + "</td></tr>")
    if thr:
        parts.append(f'<tr><td colspan="2" class="pc-sub">flags: |corr| &gt; {e(str(thr.get("max_corr")))}, '
                     f'token share &gt; {e(str(thr.get("max_token_share")))}</td></tr>')
    parts.append("</table></div>")
    parts.append(f'<div class="pc-box"><b>logit lens</b>{_lens_html(c.lens)}</div>')
    parts.append(f'<div class="pc-box"><b>activation per class</b>{_histogram_svg(c.histogram)}</div>')
    parts.append('<div class="pc-box"><b>nearest latents (decoder cosine)</b>' + _neighbours_html(c.neighbours)
                 + "</div></div>")
    if c.steering:
        rows = "".join(f"<tr><td>{e(str(r.get('run')))}</td><td>{e(str(r.get('summary')))}</td></tr>"
                       for r in c.steering)
        parts.append(f"<b>steering</b><table>{rows}</table>")
    if c.explanations:
        parts.append(f'<div class="pc-grid">{card_html(c.explanations)}</div>')
    parts.append(_examples_html(c.examples))
    parts.append("</div>")
    return "\n".join(parts)


def _lens_html(lens: dict[str, Any]) -> str:
    e = html.escape
    if lens.get("note"):
        return f'<div class="pc-sub">{e(lens["note"])}</div>'
    rows = []
    for side in ("promoted", "suppressed"):
        tokens = " ".join(f'<span class="pc-tok" title="{t["logit"]:+.3f}">{e(repr(t["token"]))}</span>'
                          for t in lens.get(side) or [])
        rows.append(f"<tr><th>{side}</th><td>{tokens}</td></tr>")
    return f'<table>{"".join(rows)}</table><div class="pc-sub">{e(lens.get("how", ""))}</div>'


def _neighbours_html(neighbours: list[dict[str, Any]]) -> str:
    if not neighbours:
        return '<div class="pc-sub">no SAE decoder at hand.</div>'
    rows = "".join(
        f"<tr><td>{n['feature']}</td><td>{n['cosine']:.2f}</td><td>{'rank ' + str(n['rank']) if n['rank'] else 'not tested'}"
        f"</td><td>{html.escape(n.get('kind') or '')}</td></tr>" for n in neighbours)
    return f"<table><tr><th>latent</th><th>cos</th><th>rank</th><th>kind</th></tr>{rows}</table>"


def _histogram_svg(h: dict[str, Any], width: int = 300, height: int = 110) -> str:
    """Bars of both classes (misaligned above the axis, aligned below), as inline SVG."""
    mis, ali = h.get("misaligned") or [], h.get("aligned") or []
    peak = max([1, *mis, *ali])
    n = max(len(mis), 1)
    bw, mid = width / n, height / 2
    bars = []
    for i, (a, b) in enumerate(zip(mis, ali, strict=False)):
        ha, hb = a / peak * (mid - 4), b / peak * (mid - 4)
        bars.append(f'<rect x="{i * bw:.1f}" y="{mid - ha:.1f}" width="{bw - 1:.1f}" height="{ha:.1f}" '
                    f'fill="{PALETTE["misaligned"]}"/>'
                    f'<rect x="{i * bw:.1f}" y="{mid:.1f}" width="{bw - 1:.1f}" height="{hb:.1f}" '
                    f'fill="{PALETTE["aligned"]}"/>')
    top = (h.get("edges") or [0, 0])[-1]
    svg = (f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'aria-label="histogram of the highest activation per response, by class">'
           f'<line x1="0" y1="{mid}" x2="{width}" y2="{mid}" stroke="#aab7b8"/>{"".join(bars)}</svg>')
    return (svg + f'<div class="pc-sub">highest activation per response, 0 to {top:.3g}; red: misaligned (up), '
            f'blue: aligned (down); silent: {h.get("misaligned_silent")} misaligned, {h.get("aligned_silent")} '
            f'aligned. Density: fires on {h.get("token_density", 0):.2%} of tokens, '
            f'{h.get("response_density", 0):.0%} of responses.</div>')


def _examples_html(examples: list[dict[str, Any]]) -> str:
    e = html.escape
    if not examples:
        return '<div class="pc-sub">no response activates this latent.</div>'
    scale = max(x["max"] for x in examples)
    names = {"top": "top activations"}
    rows = ['<b>examples at activation quantiles</b><table>']
    for x in examples:
        label = {1: "misaligned", 0: "aligned"}.get(x["label"], "")
        bucket = names.get(x["bucket"], f"near the {x['bucket'][1:]}th percentile")
        rows.append(f'<tr><td class="pc-sub">{e(bucket)}<br>{x["max"]:.3g} &middot; {e(label)}</td>'
                    f'<td><div class="pc-text">{tokens_html(x["tokens"], np.asarray(x["activations"]), scale)}'
                    "</div></td></tr>")
    rows.append("</table>")
    return "".join(rows)


# ---------------------------------------------------------------------------------------------------- files


def cards_html(source: Any, features: Any, **kwargs: Any) -> str:
    """The cards of ``features`` as one HTML fragment (one style block), for ``report.html``."""
    built = cards(source, features, **kwargs)
    return f"<style>{CARD_CSS}</style>" + "\n".join(_card_html(c) for c in built)


def write_cards(source: Any, features: Any, out: str | os.PathLike | None = None, **kwargs: Any) -> list[Path]:
    """Write one standalone HTML file per latent, ``card-FEATURE.html``, into ``out`` (default: the run folder's
    ``cards/``); return their paths."""
    if out is None:
        if not isinstance(source, (str, os.PathLike)):
            raise PersonasError("write_cards needs out= when the source is not a run folder.")
        out = Path(source) / "cards"
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PersonasError(f"--out {str(out)!r} is a file; expected a folder for the card files.")
    paths = []
    for built in cards(source, features, **kwargs):
        path = out / f"card-{built.feature}.html"
        atomic_write_text(path, built.to_html(standalone=True))
        paths.append(path)
    return paths


def is_run_folder(path: Any) -> bool:
    """True for a folder with a manifest (what `cards` reads as a run)."""
    return isinstance(path, (str, os.PathLike)) and (Path(path) / MANIFEST_FILE).is_file()
