"""A self-contained HTML report of a ranking run: summary, table, plots, examples and provenance.

``personas report DIR`` reads ``DIR/ranking.csv``, ``DIR/manifest.json`` and, when the run kept per-token codes
(``personas rank --report`` or ``rank(..., keep_tokens=True, out=DIR)``), ``DIR/examples.json``; it writes
``DIR/report.html``: one file, plots embedded as PNG data, a few lines of inline JavaScript to sort the table, no
external resources. It opens in a browser without a server; the only links out are optional Neuronpedia pages,
and only ``http``/``https`` addresses are ever written as links.

A run folder holds the files of one run: the report reads ``ranking.csv`` only when its checksum matches the
manifest's, and embeds ``examples.json`` only when the manifest lists it and the examples were drawn from the same
responses (their ``dataset_hash`` equals the manifest's); anything else is refused with the fix.

From Python, ``write_report(DIR, result=rank_result)`` also draws the activation distributions of the top features
and takes the examples straight from the result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from personas.artifacts import MANIFEST_FILE, RANKING_FILE, REPORT_FILE, atomic_write_text
from personas.errors import PersonasError
from personas.report import plots as plot
from personas.report.examples import (
    EXAMPLES_FILE,
    examples_html,
    load_examples,
    neuronpedia_url,
    top_examples,
)

logger = logging.getLogger(__name__)


_TABLE_COLUMNS = (
    ("feature", None), ("name", None), ("auroc", "{:.3f}"), ("auroc_lo", "{:.3f}"), ("auroc_hi", "{:.3f}"),
    ("group_auroc", "{:.3f}"), ("cohens_d", "{:.2f}"), ("mean_diff", "{:.3g}"), ("frac_active_pos", "{:.2f}"),
    ("frac_active_neg", "{:.2f}"), ("length_corr", "{:.2f}"), ("p_value", "{:.2e}"), ("q_value", "{:.2e}"),
)
_COLUMN_HELP = {
    "length_corr": "correlation with response length: a feature that tracks length can separate classes of unequal length",
    "auroc": "P(a misaligned response scores above an aligned one); 0.5 = chance",
    "auroc_lo": "lower end of the AUROC confidence interval", "auroc_hi": "upper end of the AUROC confidence interval",
    "group_auroc": "AUROC within questions (responses to the same question compared)",
    "cohens_d": "standardised mean difference, misaligned - aligned",
    "mean_diff": "mean pooled activation, misaligned - aligned",
    "frac_active_pos": "fraction of misaligned responses where the feature is non-zero",
    "frac_active_neg": "fraction of aligned responses where the feature is non-zero",
    "p_value": "test p-value", "q_value": "Benjamini-Hochberg q-value (false discovery rate)",
}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1120px;color:#1b2631;padding:0 16px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:30px;border-bottom:1px solid #e5e7e9;padding-bottom:4px}
.sub{color:#566573;font-size:13px} .cards{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.card{border:1px solid #e5e7e9;border-radius:6px;padding:8px 12px;min-width:110px}
.card b{display:block;font-size:18px} .card span{color:#566573;font-size:12px}
table.ranking{border-collapse:collapse;font-size:12.5px;width:100%}
table.ranking th{background:#f4f6f7;text-align:right;padding:4px 6px;border-bottom:2px solid #d5d8dc;position:sticky;top:0;cursor:pointer;user-select:none;white-space:nowrap}
table.ranking th:after{content:" \\2195";color:#aab7b8;font-size:10px}
table.ranking td{white-space:nowrap;text-align:right;padding:3px 6px;border-bottom:1px solid #eef0f1;font-variant-numeric:tabular-nums}
table.ranking tr.sig td{font-weight:600;background:#fdf2e9} td.up{color:#b03a2e} td.down{color:#1f618d}
td.mark{color:#d68910;text-align:center}
.figs{display:flex;flex-wrap:wrap;gap:14px} .figs figure{margin:0;max-width:540px} .figs img{max-width:100%;border:1px solid #eef0f1}
figcaption{font-size:12px;color:#566573;margin-top:4px} pre{background:#f8f9f9;padding:10px;font-size:11.5px;overflow:auto;max-height:460px}
table.prov{border-collapse:collapse;font-size:12.5px} table.prov td{padding:2px 10px 2px 0;vertical-align:top}
table.prov td:first-child{color:#566573;white-space:nowrap}
"""

# Sorts the ranking table when a header is clicked (numbers numerically); no external code.
_SORT_JS = """
document.querySelectorAll("table.ranking").forEach(function(t){
  t.querySelectorAll("th").forEach(function(th,i){th.addEventListener("click",function(){
    var b=t.tBodies[0],rows=Array.from(b.rows),asc=th.dataset.asc!=="1";th.dataset.asc=asc?"1":"0";
    rows.sort(function(a,c){var x=a.cells[i].dataset.v||a.cells[i].textContent,y=c.cells[i].dataset.v||c.cells[i].textContent;
      var nx=parseFloat(x),ny=parseFloat(y);var r=(isNaN(nx)||isNaN(ny))?x.localeCompare(y):nx-ny;return asc?r:-r;});
    rows.forEach(function(r){b.appendChild(r);});});});});
"""


def _read_run(run_dir: Path) -> tuple[Any, dict[str, Any]]:
    import pandas as pd

    if not run_dir.is_dir():
        raise PersonasError(f"{str(run_dir)!r} is not a folder; expected the --out folder of `personas rank`.")
    ranking_path, manifest_path = run_dir / RANKING_FILE, run_dir / MANIFEST_FILE
    missing = [p.name for p in (ranking_path, manifest_path) if not p.exists()]
    if missing:
        raise PersonasError(
            f"{str(run_dir)!r} has no {' or '.join(missing)}; expected the --out folder of `personas rank` "
            "(ranking.csv and manifest.json)."
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PersonasError(f"{str(manifest_path)!r} is not valid JSON ({exc}); rerun `personas rank`.") from exc
    if not isinstance(manifest, dict) or manifest.get("kind") != "personas.rank":
        kind = manifest.get("kind") if isinstance(manifest, dict) else type(manifest).__name__
        raise PersonasError(
            f"{str(manifest_path)!r} describes a {kind!r} run, not a 'personas.rank' run; `personas report` reads "
            "the --out folder of `personas rank`."
        )
    files = manifest.get("files")
    listed = files.get(RANKING_FILE) if isinstance(files, dict) else None
    if files is not None and not isinstance(listed, dict):
        raise PersonasError(
            f"the manifest in {str(run_dir)!r} does not list {RANKING_FILE} among its files; the folder mixes runs. "
            "Rerun `personas rank` into an empty folder."
        )
    raw = ranking_path.read_bytes()
    if listed and listed.get("sha256") and hashlib.sha256(raw).hexdigest() != listed["sha256"]:
        raise PersonasError(
            f"{str(ranking_path)!r} does not match the checksum its manifest records: it was written by another "
            "run (or changed by hand). Rerun `personas rank` into this folder, or into an empty one."
        )
    try:
        ranking = pd.read_csv(ranking_path)
    except (ValueError, UnicodeDecodeError) as exc:  # pandas' EmptyDataError and ParserError are ValueErrors
        raise PersonasError(f"{str(ranking_path)!r} cannot be read as CSV ({exc}); rerun `personas rank`.") from exc
    if "feature" not in ranking.columns:
        raise PersonasError(
            f"{str(ranking_path)!r} has no 'feature' column (columns: {list(ranking.columns)[:12]}); expected a "
            "ranking written by `personas rank`."
        )
    return ranking, manifest


def _run_examples(run_dir: Path, manifest: dict[str, Any]) -> Any:
    """The examples of ``run_dir/examples.json`` when they belong to the run of ``manifest``; None when absent."""
    path = run_dir / EXAMPLES_FILE
    if not path.exists():
        return None
    files = manifest.get("files")
    if not isinstance(files, dict) or EXAMPLES_FILE not in files:
        raise PersonasError(
            f"{str(path)!r} is not listed in the folder's manifest: it was left by another run. Remove it, or rerun "
            "`personas rank --report` into this folder."
        )
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PersonasError(f"{str(path)!r} is not valid JSON ({exc}); rerun `personas rank --report`.") from exc
    expected = (manifest.get("data") or {}).get("dataset_hash")
    found = payload.get("dataset_hash") if isinstance(payload, dict) else None
    if found != expected:
        raise PersonasError(
            f"{str(path)!r} was drawn from other responses (dataset hash {str(found)[:12]}) than the ranking "
            f"(dataset hash {str(expected)[:12]}); the report would show another dataset's examples. Rerun "
            "`personas rank --report` into this folder."
        )
    return load_examples(path)


def safe_url(url: Any) -> str | None:
    """``url`` when it is an absolute ``http``/``https`` address, else None (never a ``javascript:`` link)."""
    if not isinstance(url, str):
        return None
    text = url.strip()
    scheme = text.split(":", 1)[0].lower() if ":" in text else ""
    if scheme not in ("http", "https") or not text[len(scheme) + 1:].startswith("//") or any(
        c in text for c in "\"<>\x00\n\r\t "
    ):
        return None
    return text


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _summary_cards(manifest: dict[str, Any], ranking: Any, alpha: float) -> str:
    data = manifest.get("data") or {}
    n_sig = int(ranking["significant"].astype(bool).sum()) if "significant" in ranking.columns else None
    cards = [
        ("misaligned responses", data.get("n_misaligned")),
        ("aligned responses", data.get("n_aligned")),
        ("excluded", data.get("n_excluded")),
        ("questions", data.get("n_groups")),
        ("features tested", len(ranking)),
        (f"significant (q < {alpha:g})", n_sig),
    ]
    return '<div class="cards">' + "".join(
        f'<div class="card"><b>{_esc(v)}</b><span>{_esc(k)}</span></div>' for k, v in cards if v is not None
    ) + "</div>"


def _table(ranking: Any, top: int, sae: Mapping[str, Any] | None, with_examples: set[int]) -> str:
    columns = [(c, fmt) for c, fmt in _TABLE_COLUMNS if c in ranking.columns]
    head = '<th title="rank">#</th><th title="significant at the FDR level">sig</th>' + "".join(
        f'<th title="{_esc(_COLUMN_HELP.get(c, c))}">{_esc(c)}</th>' for c, _ in columns
    )
    rows = []
    sig_col = ranking["significant"].astype(bool).to_numpy() if "significant" in ranking.columns else None
    for i in range(min(top, len(ranking))):
        sig = bool(sig_col[i]) if sig_col is not None else False
        cells = [f'<td data-v="{i + 1}">{i + 1}</td>', f'<td class="mark">{"&#9733;" if sig else ""}</td>']
        for c, fmt in columns:
            v = ranking[c].iloc[i]
            if c == "feature":
                f = int(v)
                links = []
                if f in with_examples:
                    links.append(f'<a href="#feature-{f}" title="top-activating examples">examples</a>')
                url = safe_url(neuronpedia_url(sae, f))
                if url:
                    links.append(f'<a href="{_esc(url)}" target="_blank" rel="noopener">Neuronpedia</a>')
                extra = f' <span class="sub">({" &middot; ".join(links)})</span>' if links else ""
                cells.append(f'<td data-v="{f}">{f}{extra}</td>')
            elif fmt is None:
                cells.append(f"<td>{_esc(v)}</td>")
            else:
                try:
                    text = fmt.format(float(v))
                except (TypeError, ValueError):
                    text = str(v)
                cls = ""
                if c in ("auroc", "group_auroc"):
                    cls = ' class="up"' if float(v) > 0.5 else ' class="down"'
                cells.append(f'<td{cls} data-v="{_esc(v)}">{_esc(text)}</td>')
        rows.append(f'<tr{" class=sig" if sig else ""}>{"".join(cells)}</tr>')
    more = (f'<p class="sub">{len(ranking) - top} more rows in ranking.csv.</p>' if len(ranking) > top else "")
    return (f'<table class="ranking" id="ranking-table"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>{more}")


def _figure(make: Any, caption: str) -> str | None:
    try:
        fig = make()
    except PersonasError as exc:  # a ranking without the columns a plot needs
        logger.info("skipped a plot in the report: %s", exc)
        return None
    uri = plot.figure_to_base64(fig, "png")
    return (f'<figure><img class="plot" alt="{_esc(caption)}" src="{uri}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def _figures(ranking: Any, alpha: float, result: Any, n_dist: int) -> str:
    specs = [
        (lambda: plot.volcano(ranking, alpha=alpha),
         "Volcano plot: Cohen's d against -log10 q. Red: higher in misaligned responses; blue: higher in aligned; "
         "grey: not significant. The best significant features are labelled."),
        (lambda: plot.auroc_intervals(ranking, n=min(20, len(ranking))),
         "AUROC of the top features with their confidence intervals; outlined points are significant."),
    ]
    if "group_auroc" in ranking.columns:
        specs.append((lambda: plot.group_auroc_scatter(ranking),
                      "Pooled against within-question AUROC: features far off the diagonal, near 0.5 on the y axis, "
                      "track which question was asked rather than how it was answered."))
    if result is not None and n_dist > 0:
        top = [int(f) for f in ranking["feature"].head(n_dist)]
        specs.append((lambda: plot.feature_distributions(result.features, result.responses.labels, top),
                      f"Pooled activations of the top {len(top)} features in each class (dashed: class means)."))
    made = [f for f in (_figure(make, caption) for make, caption in specs) if f]
    return '<div class="figs">' + "".join(made) + "</div>"


def _examples_section(run_dir: Path, manifest: dict[str, Any], ranking: Any, result: Any, examples: Any,
                      n_features: int, k: int) -> tuple[str, set[int]]:
    found = None
    if examples is not None:
        found = examples
    elif result is not None and getattr(result.capture, "token_codes", None) is not None:
        top = [int(f) for f in ranking["feature"].head(n_features)]
        found = top_examples(result, top, k=k)
    elif (run_dir / EXAMPLES_FILE).exists():
        found = _run_examples(run_dir, manifest)
    if not found:
        return ('<p class="sub">No top-activating examples in this run: they need per-token SAE codes. Rerun with '
                "<code>personas rank ... --report</code> or <code>rank(..., keep_tokens=True, out=DIR)</code>, "
                "or pass <code>result=</code> to <code>write_report</code>.</p>"), set()
    groups = list(found.values()) if isinstance(found, Mapping) else list(found)
    groups = [g if safe_url(g.neuronpedia_url) == g.neuronpedia_url else dataclasses.replace(g, neuronpedia_url=None)
              for g in groups]
    intro = ('<p class="sub">For each feature, the responses where it reaches its highest token activation. Each '
             "token's background deepens with its activation (hover for the value).</p>")
    return intro + examples_html(groups), {int(g.feature) for g in groups}


def _provenance(manifest: dict[str, Any]) -> str:
    model = manifest.get("model") or {}
    sae = manifest.get("sae") or {}
    data = manifest.get("data") or {}
    ranking = manifest.get("ranking") or {}
    versions = manifest.get("versions") or {}
    rows = [
        ("created", manifest.get("created_at")),
        ("model", model.get("model") if isinstance(model, Mapping) else model),
        ("hook", manifest.get("hook")),
        ("SAE", sae.get("spec") if sae else "none (raw activation dimensions)"),
        ("SAE release / id", " / ".join(str(x) for x in (sae.get("release"), sae.get("sae_id")) if x) or None),
        ("SAE architecture", f"{sae.get('architecture')} {sae.get('d_in')} -> {sae.get('d_sae')}" if sae else None),
        ("pooling", manifest.get("pooling")),
        ("data", data.get("source")),
        ("dataset sha256", data.get("dataset_hash")),
        ("labels", data.get("label_source")),
        ("ranking key / alpha", f"{ranking.get('key')} / {ranking.get('alpha')}" if ranking else None),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v)),
    ]
    table = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in rows if v not in (None, ""))
    return (f'<table class="prov">{table}</table><details><summary>full manifest.json</summary>'
            f"<pre>{_esc(json.dumps(manifest, indent=2, default=str))}</pre></details>")


def render_report(
    run_dir: str | Path,
    *,
    top: int = 30,
    result: Any = None,
    examples: Any = None,
    example_features: int = 8,
    examples_per_feature: int = 5,
    distributions: int = 6,
    title: str | None = None,
) -> str:
    """The report of the ranking run in ``run_dir`` as an HTML string (see `write_report`)."""
    run_dir = Path(run_dir)
    ranking, manifest = _read_run(run_dir)
    alpha = float((manifest.get("ranking") or {}).get("alpha", 0.05))
    model = (manifest.get("model") or {}).get("model", "?")
    sae = manifest.get("sae")
    sae_text = "none (raw activations)" if not sae else f"{sae.get('spec')} ({sae.get('d_sae')} latents)"
    title = title or "personas ranking report"
    examples_part, with_examples = _examples_section(
        run_dir, manifest, ranking, result, examples, example_features, examples_per_feature
    )
    key = (manifest.get("ranking") or {}).get("key", "auroc")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{_esc(title)}</title><style>{_CSS}</style></head><body>
<h1>{_esc(title)}</h1>
<div class="sub">model <b>{_esc(model)}</b> &middot; hook <b>{_esc(manifest.get("hook"))}</b>
&middot; SAE <b>{_esc(sae_text)}</b> &middot; pooling <b>{_esc(manifest.get("pooling"))}</b>
&middot; {_esc(manifest.get("created_at", ""))}</div>
{_summary_cards(manifest, ranking, alpha)}
<h2 id="table">Top features</h2>
<p class="sub">Sorted by the ranking key <code>{_esc(key)}</code>; click a header to sort. &#9733; and shading:
significant at q &lt; {alpha:g} after Benjamini-Hochberg correction. AUROC above 0.5 (red): the feature is higher in
misaligned responses; below 0.5 (blue): higher in aligned ones. Hover a header for its meaning.</p>
{_table(ranking, top, sae, with_examples)}
<h2 id="plots">Plots</h2>
{_figures(ranking, alpha, result, distributions)}
<h2 id="examples">Top-activating examples</h2>
{examples_part}
<h2 id="provenance">Provenance</h2>
{_provenance(manifest)}
<script>{_SORT_JS}</script>
</body></html>
"""


def write_report(
    run_dir: str | Path,
    *,
    out: str | Path | None = None,
    top: int = 30,
    result: Any = None,
    examples: Any = None,
    example_features: int = 8,
    examples_per_feature: int = 5,
    distributions: int = 6,
    title: str | None = None,
) -> Path:
    """Write a self-contained HTML report of the ranking run in ``run_dir``; return its path.

    Args:
        run_dir: the ``out`` folder of `personas.rank` / ``personas rank`` (``ranking.csv``, ``manifest.json``,
            optionally ``examples.json``).
        out: the HTML file (default ``run_dir/report.html``); written atomically.
        top: rows of the ranking table.
        result: the `RankResult` of that run, if at hand: adds the activation distributions of the top features
            and, when it kept per-token codes, the top-activating examples.
        examples: examples to show instead (``{feature: FeatureExamples}`` from `personas.examples.top_examples`).
        example_features, examples_per_feature: how many features and responses per feature when examples are
            computed from ``result``.
        distributions: features whose distributions are drawn (needs ``result``).
    """
    path = Path(out) if out else Path(run_dir) / REPORT_FILE
    text = render_report(
        run_dir, top=top, result=result, examples=examples, example_features=example_features,
        examples_per_feature=examples_per_feature, distributions=distributions, title=title,
    )
    atomic_write_text(path, text)
    logger.info("wrote %s (%.0f kB)", path, len(text) / 1024)
    return path


