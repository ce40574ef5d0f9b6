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

The top latents get a feature card each (`personas.report.cards`: statistics, confound flags, examples at
activation quantiles, logit lens, histogram, nearest latents). The page is the Jinja2 template ``templates/report.html.j2`` (package data), autoescaped; this module gathers what
it shows. The ranking table scrolls sideways in its own box, so every column stays reachable on a narrow screen.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from personas.artifacts import REPORT_FILE, TOKEN_CODES_FILE, atomic_write_text
from personas.errors import PersonasError
from personas.explaining.table import read_explanations
from personas.report import plots as plot
from personas.report.cards import cards_html
from personas.report.examples import (
    EXAMPLES_FILE,
    examples_html,
    load_examples,
    neuronpedia_url,
    top_examples,
)
from personas.report.run_data import read_json, read_run
from personas.report.style import PALETTE

logger = logging.getLogger(__name__)


def _template() -> Any:
    """The report's Jinja2 template, read from the package (``templates/report.html.j2``), autoescaped."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("personas.report", "templates"), autoescape=True,
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
    )
    return env.get_template("report.html.j2")


_TABLE_COLUMNS = (
    ("feature", None), ("name", None), ("auroc", "{:.3f}"), ("auroc_lo", "{:.3f}"), ("auroc_hi", "{:.3f}"),
    ("group_auroc", "{:.3f}"), ("cohens_d", "{:.2f}"), ("mean_diff", "{:.3g}"), ("frac_active_pos", "{:.2f}"),
    ("frac_active_neg", "{:.2f}"), ("kind", None), ("length_corr", "{:.2f}"), ("punct_corr", "{:.2f}"),
    ("top_token_share", "{:.2f}"), ("p_value", "{:.2e}"), ("q_value", "{:.2e}"),
)
_COLUMN_HELP = {
    "length_corr": "correlation with response length: a feature that tracks length can separate classes of unequal length",
    "punct_corr": "correlation with the response's share of punctuation tokens (a style feature)",
    "top_token_share": "share of the feature's activation mass on its single most frequent token",
    "kind": "confound flag: length, style (punctuation) or single-token; empty for a candidate persona feature",
    "auroc": "P(a misaligned response scores above an aligned one); 0.5 = chance",
    "auroc_lo": "lower end of the AUROC confidence interval", "auroc_hi": "upper end of the AUROC confidence interval",
    "group_auroc": "AUROC within questions (responses to the same question compared)",
    "cohens_d": "standardised mean difference, misaligned - aligned",
    "mean_diff": "mean pooled activation, misaligned - aligned",
    "frac_active_pos": "fraction of misaligned responses where the feature is non-zero",
    "frac_active_neg": "fraction of aligned responses where the feature is non-zero",
    "p_value": "test p-value", "q_value": "Benjamini-Hochberg q-value (false discovery rate)",
}

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
    payload = read_json(path, "rerun `personas rank --report`")
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


def _summary_cards(manifest: dict[str, Any], ranking: Any, alpha: float) -> list[tuple[str, Any]]:
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
    return [(k, v) for k, v in cards if v is not None]


def _feature_links(f: int, sae: Mapping[str, Any] | None, with_examples: set[int]) -> list[dict[str, Any]]:
    links = []
    if f in with_examples:
        links.append({"href": f"#feature-{f}", "text": "examples", "title": "top-activating examples", "external": False})
    url = safe_url(neuronpedia_url(sae, f))
    if url:
        links.append({"href": url, "text": "Neuronpedia", "title": None, "external": True})
    return links


def _table(ranking: Any, top: int, sae: Mapping[str, Any] | None, with_examples: set[int]) -> dict[str, Any]:
    """The columns (name, help) and the first ``top`` rows of the ranking, formatted for the template."""
    columns = [(c, fmt) for c, fmt in _TABLE_COLUMNS if c in ranking.columns]
    rows = []
    sig_col = ranking["significant"].astype(bool).to_numpy() if "significant" in ranking.columns else None
    for i in range(min(top, len(ranking))):
        cells = []
        for c, fmt in columns:
            v = ranking[c].iloc[i]
            if c == "feature":
                f = int(v)
                cells.append({"text": f, "v": f, "cls": None, "links": _feature_links(f, sae, with_examples)})
            elif fmt is None:  # text; a CSV reads an empty kind back as NaN
                text = "" if isinstance(v, float) and v != v else v
                cells.append({"text": text, "v": None, "cls": "kind" if c == "kind" and text else None, "links": ()})
            else:
                try:
                    text = fmt.format(float(v))
                except (TypeError, ValueError):
                    text = str(v)
                cls = None
                if c in ("auroc", "group_auroc"):
                    cls = "up" if float(v) > 0.5 else "down"
                cells.append({"text": text, "v": v, "cls": cls, "links": ()})
        rows.append({"rank": i + 1, "significant": bool(sig_col[i]) if sig_col is not None else False,
                     "cells": cells})
    return {"columns": [(c, _COLUMN_HELP.get(c, c)) for c, _ in columns], "rows": rows,
            "more": max(0, len(ranking) - top)}


def _figure(make: Any, caption: str) -> dict[str, str] | None:
    try:
        fig = make()
    except PersonasError as exc:  # a ranking without the columns a plot needs
        logger.info("skipped a plot in the report: %s", exc)
        return None
    return {"uri": plot.figure_to_base64(fig, "png"), "caption": caption}


def _figures(ranking: Any, alpha: float, result: Any, n_dist: int) -> list[dict[str, str]]:
    specs = [
        (lambda: plot.volcano(ranking, alpha=alpha),
         "Volcano plot: Cohen's d against -log10 q. Red: higher in misaligned responses; blue: higher in aligned; "
         "grey: not significant. The best significant features are labelled."),
        (lambda: plot.auroc_intervals(ranking, n=min(20, len(ranking))),
         "AUROC of the top features with their confidence intervals; outlined points are significant."),
    ]
    if "group_auroc" in ranking.columns:
        specs[1] = (lambda: plot.auroc_intervals(ranking, n=min(20, len(ranking))),
                    "AUROC within questions (the ranking's statistic) of the top features with their confidence "
                    "intervals; outlined points are significant.")
        specs.append((lambda: plot.group_auroc_scatter(ranking),
                      "Pooled against within-question AUROC: features far off the diagonal, near 0.5 on the y axis, "
                      "track which question was asked rather than how it was answered."))
    if result is not None and n_dist > 0:
        top = [int(f) for f in ranking["feature"].head(n_dist)]
        specs.append((lambda: plot.feature_distributions(result.features, result.responses.labels, top),
                      f"Pooled activations of the top {len(top)} features in each class (dashed: class means)."))
    return [f for f in (_figure(make, caption) for make, caption in specs) if f]


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


def _cards_section(run_dir: Path, manifest: dict[str, Any], ranking: Any, result: Any, n: int) -> str:
    """The feature cards of the top ``n`` latents, from the result or the run folder; a note when there is no
    per-token data to make them from."""
    if n < 1 or not manifest.get("sae"):
        return '<p class="sub">No feature cards: they are made for SAE latents of runs that kept per-token codes.</p>'
    has_tokens = result is not None and getattr(result.capture, "token_codes", None) is not None
    source = result if has_tokens else run_dir
    if not has_tokens and not ((run_dir / TOKEN_CODES_FILE).is_file() or (manifest.get("source") or {}).get("cache")):
        return ('<p class="sub">No feature cards: this run kept no per-token codes. Rerun with <code>personas rank '
                "... --report</code>.</p>")
    top = [int(f) for f in ranking["feature"].head(n)]
    try:
        return cards_html(source, top)
    except PersonasError as exc:
        logger.warning("no feature cards in the report: %s", exc)
        return f'<p class="sub">No feature cards: {html.escape(str(exc))}</p>'


def _explanations_section(run_dir: Path, manifest: dict[str, Any]) -> str:
    """The table of ``explanations.csv`` (`personas explain`): one latent per row, the baselines' scores beside
    each explanation's; a note when the run has none."""
    try:
        table = read_explanations(run_dir, manifest)
    except PersonasError as exc:
        logger.warning("no explanations in the report: %s", exc)
        return f'<p class="sub">No explanations: {html.escape(str(exc))}</p>'
    if table is None:
        return ('<p class="sub">No explanations in this run: <code>personas explain RUN_DIR</code> writes them '
                "(what each latent responds to, in words, scored on held-out windows).</p>")
    intro = ('<p class="sub">What each latent responds to, in words, and whether the words predict where it fires '
             "on windows they were not written from: AUROC of the prediction for activating against silent windows "
             "(0.5 = chance), bootstrap 95% interval. Beside it the same score of two baselines: another latent's "
             "explanation (random-latent) and the class alone (class-only, 'misaligned answers' or 'aligned "
             "answers'). <i>beats both</i>: the paired intervals of both gains lie above 0. The offline explainer "
             "only counts words; an LLM's explanations (<code>--explainer http://HOST:PORT/v1:MODEL</code>) can say "
             "more.</p>")
    return intro + table.summary().to_html(index=False, escape=True, na_rep="", classes="ranking",
                                           table_id="explanations-table", border=0)


def _provenance(manifest: dict[str, Any]) -> list[tuple[str, Any]]:
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
    return [(k, v) for k, v in rows if v not in (None, "")]


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
    cards: int = 5,
) -> str:
    """The report of the ranking run in ``run_dir`` as an HTML string (see `write_report`)."""
    run_dir = Path(run_dir)
    ranking, manifest = read_run(run_dir)
    alpha = float((manifest.get("ranking") or {}).get("alpha", 0.05))
    model = (manifest.get("model") or {}).get("model", "?")
    sae = manifest.get("sae")
    sae_text = "none (raw activations)" if not sae else f"{sae.get('spec')} ({sae.get('d_sae')} latents)"
    title = title or "personas ranking report"
    examples_part, with_examples = _examples_section(
        run_dir, manifest, ranking, result, examples, example_features, examples_per_feature
    )
    from markupsafe import Markup

    return _template().render(
        title=title, model=model, hook=manifest.get("hook"), sae_text=sae_text, pooling=manifest.get("pooling"),
        created_at=manifest.get("created_at", ""), cards=_summary_cards(manifest, ranking, alpha),
        key=(manifest.get("ranking") or {}).get("key", "auroc"), alpha=f"{alpha:g}", palette=PALETTE,
        table=_table(ranking, top, sae, with_examples), figures=_figures(ranking, alpha, result, distributions),
        examples=Markup(examples_part),  # examples_html escapes every text itself
        feature_cards=Markup(_cards_section(run_dir, manifest, ranking, result, cards)),  # escaped by the cards
        explanations=Markup(_explanations_section(run_dir, manifest)),  # pandas escapes the table's text
        provenance=_provenance(manifest), manifest_json=json.dumps(manifest, indent=2, default=str),
    )


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
    cards: int = 5,
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
        cards: the top latents that get a feature card (`personas.report.cards`; needs per-token codes: the result's,
            the folder's ``token_codes.npz`` or the cache of a ``--cache`` run).
    """
    path = Path(out) if out else Path(run_dir) / REPORT_FILE
    text = render_report(
        run_dir, top=top, result=result, examples=examples, example_features=example_features,
        examples_per_feature=examples_per_feature, distributions=distributions, title=title, cards=cards,
    )
    atomic_write_text(path, text)
    logger.info("wrote %s (%.0f kB)", path, len(text) / 1024)
    return path


