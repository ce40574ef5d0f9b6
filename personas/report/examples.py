"""Top-activating examples: the responses where a feature fires most, with each token coloured by activation.

Ranking says *which* features separate the classes; examples say *what* a feature is about. For a feature,
`top_activating` finds the responses with the highest activation on any of their tokens and keeps every token's
activation, so `examples_html` can render the text with a background that deepens with the activation (in a
notebook, a `FeatureExamples` displays itself that way). Tokens are shown as the original text they cover, cut at
the tokenizer's character offsets (`personas.report.highlight`). For SAEs from public sae-lens releases,
`neuronpedia_url` links to the feature's Neuronpedia page, which shows its activations on pre-training text.

Per-token SAE codes are needed: run ``capture(..., sae=sae, keep_tokens=True)`` (or pass the `Capture` /
`RankResult` that holds them). Examples are saved next to a ranking as ``examples.json`` (`save_examples`,
`load_examples`), which ``personas report`` embeds.
"""

from __future__ import annotations

import html
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from personas.artifacts import EXAMPLES_FILE, manifest_header, write_json
from personas.capturing import Capture, TokenCodes
from personas.errors import PersonasError
from personas.report.highlight import token_pieces, tokens_html
from personas.report.style import PALETTE
from personas.saes import sae_info

logger = logging.getLogger(__name__)

#: File name of saved examples in a run folder.
EXAMPLES_KIND = "personas.examples"
EXAMPLES_FORMAT_VERSION = 1
NEURONPEDIA = "https://www.neuronpedia.org"

_CSS = """
.personas-examples{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;font-size:13px;max-width:1000px}
.personas-examples h4{margin:10px 0 4px 0;font-size:14px}
.personas-examples .px-meta{color:#566573;font-size:12px;margin-bottom:6px}
.personas-examples table{border-collapse:collapse;width:100%}
.personas-examples td{border-top:1px solid #e5e8eb;padding:4px 6px;vertical-align:top}
.personas-examples td.px-num{white-space:nowrap;text-align:right;color:#34495e;font-variant-numeric:tabular-nums}
.personas-examples .px-text{white-space:pre-wrap;line-height:1.65;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
.personas-examples .px-prompt{color:#7b8a97;font-size:11px;margin-bottom:2px}
.personas-examples .personas-token{border-radius:2px}
.personas-examples .px-label{display:inline-block;border-radius:3px;padding:0 5px;font-size:11px;color:white}
.personas-examples .px-mis{background:MISALIGNED}.personas-examples .px-ali{background:ALIGNED}
""".replace("MISALIGNED", PALETTE["misaligned"]).replace("ALIGNED", PALETTE["aligned"])


# ---------------------------------------------------------------------------------------------- Neuronpedia


def neuronpedia_id(sae: Any) -> str | None:
    """The Neuronpedia id of an SAE (e.g. ``"gpt2-small/8-res-jb"``), or None for SAEs Neuronpedia does not host.

    ``sae`` is a sae-lens SAE, the dict of `personas.saes.sae_info`, or a manifest's ``"sae"`` entry. When the id is
    not recorded but the release and SAE id are, it is looked up in sae-lens' directory of pretrained SAEs
    (a file shipped with sae-lens; no network).
    """
    if sae is None:
        return None
    if not isinstance(sae, Mapping):
        sae = sae_info(sae)
    found = sae.get("neuronpedia_id")
    if found:
        return str(found)
    release, sae_id = sae.get("release"), sae.get("sae_id")
    if not release or not sae_id:
        return None
    try:
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

        lookup = get_pretrained_saes_directory().get(str(release))
    except Exception as exc:  # pragma: no cover - a broken sae-lens install should not break a report
        logger.debug("could not read the sae-lens directory: %s", exc)
        return None
    if lookup is None:
        return None
    value = (getattr(lookup, "neuronpedia_id", None) or {}).get(str(sae_id))
    return str(value) if value else None


def neuronpedia_url(sae: Any, feature: int) -> str | None:
    """``https://www.neuronpedia.org/{neuronpedia_id}/{feature}`` for SAEs of known public releases, else None.

    Local SAEs (the shipped default, ``personas train-sae`` output, planted toys) have no Neuronpedia page.
    """
    found = neuronpedia_id(sae)
    if found is None:
        return None
    if int(feature) < 0:
        raise PersonasError(f"feature={feature} is negative; expected a latent index >= 0.")
    return f"{NEURONPEDIA}/{found.strip('/')}/{int(feature)}"


# ---------------------------------------------------------------------------------------------- examples


@dataclass
class Example:
    """One response where a feature fires: every response token with its activation.

    ``row`` is the response's position in the captured data (and in `Responses`), ``position`` the index of the
    token with the highest activation.
    """

    row: int
    max_activation: float
    position: int
    tokens: list[str]
    activations: np.ndarray
    id: str | None = None
    label: int | None = None
    group: str | None = None
    prompt: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "row": int(self.row),
            "id": self.id,
            "label": None if self.label is None else int(self.label),
            "group": self.group,
            "max_activation": float(self.max_activation),
            "position": int(self.position),
            "prompt": self.prompt,
            "tokens": list(self.tokens),
            "activations": [round(float(a), 5) for a in self.activations],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Example:
        tokens = [str(t) for t in d["tokens"]]
        acts = np.asarray(d["activations"], dtype=np.float32)
        if acts.shape != (len(tokens),):
            raise PersonasError(
                f"an example of row {d.get('row')} has {len(tokens)} tokens but {acts.size} activations; "
                "expected one activation per token. Rewrite the file with personas.examples.save_examples."
            )
        return cls(
            row=int(d["row"]), max_activation=float(d["max_activation"]), position=int(d.get("position", 0)),
            tokens=tokens, activations=acts, id=d.get("id"), label=d.get("label"), group=d.get("group"),
            prompt=d.get("prompt"),
        )


@dataclass
class FeatureExamples:
    """The top-activating examples of one feature, best first; shows as highlighted HTML in a notebook."""

    feature: int
    examples: list[Example]
    n_responses: int = 0
    n_active: int = 0
    neuronpedia_url: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self):
        return iter(self.examples)

    def __getitem__(self, i: int) -> Example:
        return self.examples[i]

    def to_frame(self):
        """One row per example: row, id, label, group, max activation, the top token and the response text."""
        import pandas as pd

        return pd.DataFrame(
            {
                "row": [e.row for e in self.examples],
                "id": [e.id for e in self.examples],
                "label": [e.label for e in self.examples],
                "group": [e.group for e in self.examples],
                "max_activation": [e.max_activation for e in self.examples],
                "top_token": [e.tokens[e.position].strip() if e.tokens else "" for e in self.examples],
                "text": ["".join(e.tokens).strip() for e in self.examples],
            }
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": int(self.feature),
            "n_responses": int(self.n_responses),
            "n_active": int(self.n_active),
            "neuronpedia_url": self.neuronpedia_url,
            "stats": self.stats,
            "examples": [e.to_dict() for e in self.examples],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureExamples:
        return cls(
            feature=int(d["feature"]),
            examples=[Example.from_dict(e) for e in d.get("examples", [])],
            n_responses=int(d.get("n_responses", 0)),
            n_active=int(d.get("n_active", 0)),
            neuronpedia_url=d.get("neuronpedia_url"),
            stats=dict(d.get("stats") or {}),
        )

    def to_html(self, **kwargs: Any) -> str:
        """Highlighted HTML; see `examples_html`."""
        return examples_html(self, **kwargs)

    def _repr_html_(self) -> str:
        return examples_html(self)

    def __repr__(self) -> str:
        lines = [f"FeatureExamples(feature={self.feature}, {len(self)} examples, active in {self.n_active} of "
                 f"{self.n_responses} responses)"]
        for e in self.examples[:5]:
            text = "".join(e.tokens).strip().replace("\n", " ")
            lines.append(f"  row {e.row} label={e.label} max={e.max_activation:.3g} "
                         f"[{e.tokens[e.position].strip() if e.tokens else ''}] {text[:80]}")
        return "\n".join(lines)


def _unpack_source(source: Any, tokenizer: Any, responses: Any, sae: Any) -> tuple[Any, Any, Any, Any]:
    """(TokenCodes, tokenizer, responses, sae info) from a RankResult, a Capture or TokenCodes."""

    if hasattr(source, "ranking") and hasattr(source, "capture"):  # a RankResult
        if tokenizer is None and getattr(source, "model", None) is not None:
            tokenizer = source.model.tokenizer
        responses = responses if responses is not None else source.responses
        if sae is None:
            sae = source.sae if source.sae is not None else (source.manifest or {}).get("sae")
        source = source.capture
    if isinstance(source, Capture):
        codes = source.token_codes
        if codes is None:
            raise PersonasError(
                "this Capture has no per-token SAE codes (token_codes is None). Capture again with "
                "personas.capture(model, prompts, responses, sae=sae, keep_tokens=True) to get top-activating examples."
            )
        source = codes
    if not isinstance(source, TokenCodes):
        raise PersonasError(
            f"top_activating got a {type(source).__name__}; expected a Capture made with keep_tokens=True, its "
            "TokenCodes, or a RankResult whose capture kept tokens."
        )
    if tokenizer is None:
        raise PersonasError("top_activating needs a tokenizer to show tokens: pass tokenizer=handle.tokenizer.")
    if hasattr(tokenizer, "tokenizer") and not hasattr(tokenizer, "decode"):  # a ModelHandle
        tokenizer = tokenizer.tokenizer
    return source, tokenizer, responses, sae


def _response_max(column: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per response: the highest activation over its tokens (0 for a response without tokens)."""
    best = np.zeros(offsets.size - 1, dtype=np.float64)
    nonempty = np.diff(offsets) > 0
    starts = offsets[:-1][nonempty]
    if starts.size:
        best[nonempty] = np.maximum.reduceat(column, starts)
    return best


def top_examples(
    source: Any,
    features: Iterable[int],
    *,
    tokenizer: Any = None,
    responses: Any = None,
    k: int = 10,
    label: int | None = None,
    context: int | None = None,
    sae: Any = None,
) -> dict[int, FeatureExamples]:
    """`top_activating` for several features at once (the per-token codes are sliced once)."""
    codes, tokenizer, responses, sae = _unpack_source(source, tokenizer, responses, sae)
    chosen = [int(f) for f in features]
    d_sae = codes.codes.shape[1]
    bad = [f for f in chosen if not 0 <= f < d_sae]
    if bad:
        raise PersonasError(f"feature(s) {bad} are out of range; the SAE has {d_sae} latents (0..{d_sae - 1}).")
    if k < 1:
        raise PersonasError(f"k={k}; expected at least 1 example per feature.")
    offsets = np.asarray(codes.offsets, dtype=np.int64)
    n = offsets.size - 1
    labels = groups = ids = prompts = texts = None
    if responses is not None:
        if len(responses) != n:
            raise PersonasError(
                f"responses has {len(responses)} rows but the codes cover {n} responses; pass the Responses the "
                "capture was made from."
            )
        labels, ids, prompts = responses.labels, responses.ids, responses.prompts
        texts = getattr(responses, "texts", None)  # the response texts, for the tokenizer's offsets
        groups = responses.groups if responses.has_groups else None
    elif label is not None:
        raise PersonasError(f"label={label} filters by class, which needs responses=...; pass the Responses.")
    sliced = codes.codes[:, chosen].tocsc() if chosen else None
    out: dict[int, FeatureExamples] = {}
    cache: dict[int, list[str]] = {}
    for col, feature in enumerate(chosen):
        column = np.asarray(sliced[:, [col]].toarray(), dtype=np.float64).ravel()
        best = _response_max(column, offsets)
        eligible = best > 0
        if label is not None:
            eligible &= np.asarray(labels) == int(label)
        rows = np.flatnonzero(eligible)
        rows = rows[np.lexsort((rows, -best[rows]))][:k]
        examples = []
        for r in rows:
            acts = column[offsets[r]: offsets[r + 1]].astype(np.float32)
            if r not in cache:
                text = None if texts is None else str(texts[r])
                cache[r] = token_pieces(tokenizer, codes.token_ids[offsets[r]: offsets[r + 1]], text)
            tokens = cache[r]
            position = int(np.argmax(acts))
            if context is not None and len(tokens) > 2 * context + 1:
                lo, hi = max(0, position - context), min(len(tokens), position + context + 1)
                tokens_view = (["\u2026"] if lo else []) + tokens[lo:hi] + (["\u2026"] if hi < len(tokens) else [])
                acts_view = np.r_[[0.0] if lo else [], acts[lo:hi], [0.0] if hi < len(tokens) else []]
                position = position - lo + (1 if lo else 0)
                tokens, acts = tokens_view, acts_view.astype(np.float32)
            examples.append(
                Example(
                    row=int(r), max_activation=float(best[r]), position=position, tokens=list(tokens),
                    activations=acts,
                    id=None if ids is None else str(ids[r]),
                    label=None if labels is None else int(labels[r]),
                    group=None if groups is None else str(groups[r]),
                    prompt=None if prompts is None else str(prompts[r]),
                )
            )
        stats: dict[str, Any] = {}
        if labels is not None:
            lab = np.asarray(labels)
            for value, name in ((1, "misaligned"), (0, "aligned")):
                mask = lab == value
                stats[f"frac_active_{name}"] = float((best[mask] > 0).mean()) if mask.any() else None
            top = [e.label for e in examples]
            stats["top_k_misaligned"] = int(sum(1 for t in top if t == 1))
        out[feature] = FeatureExamples(
            feature=feature, examples=examples, n_responses=n, n_active=int((best > 0).sum()),
            neuronpedia_url=neuronpedia_url(sae, feature) if sae is not None else None, stats=stats,
        )
    return out


def top_activating(
    source: Any,
    feature: int,
    *,
    tokenizer: Any = None,
    responses: Any = None,
    k: int = 10,
    label: int | None = None,
    context: int | None = None,
    sae: Any = None,
) -> FeatureExamples:
    """The ``k`` responses where ``feature`` reaches its highest token activation, best first.

    Args:
        source: a `Capture` made with ``keep_tokens=True``, its `TokenCodes`, or a `RankResult` (which brings the
            tokenizer, the responses and the SAE along).
        feature: the SAE latent index.
        tokenizer: the model's tokenizer (or its `ModelHandle`), to turn token ids into text.
        responses: the `Responses` that were captured, to show ids, labels, groups and prompts.
        k: number of examples; responses where the feature never fires are left out.
        label: only responses of this class (1 misaligned, 0 aligned); needs ``responses``.
        context: keep only this many tokens on each side of the strongest token (default: the whole response).
        sae: the SAE (or its `sae_info` dict), for the Neuronpedia link.
    """
    return top_examples(
        source, [feature], tokenizer=tokenizer, responses=responses, k=k, label=label, context=context, sae=sae
    )[int(feature)]


# ---------------------------------------------------------------------------------------------- HTML


def examples_html(
    examples: FeatureExamples | Mapping[int, FeatureExamples] | Sequence[FeatureExamples],
    *,
    show_prompt: bool = True,
    style: bool = True,
    title: str | None = None,
) -> str:
    """Self-contained HTML of top-activating examples: tokens with a red background that deepens with activation.

    The colour scale of each feature is its highest activation among the shown examples; hovering a token shows its
    activation. All text is HTML-escaped. ``style=False`` leaves out the ``<style>`` block (when the page already
    has it, as in the report).
    """
    if isinstance(examples, FeatureExamples):
        groups = [examples]
    elif isinstance(examples, Mapping):
        groups = list(examples.values())
    else:
        groups = list(examples)
    blocks = [f"<style>{_CSS}</style>"] if style else []
    blocks.append('<div class="personas-examples">')
    if title:
        blocks.append(f"<h3>{html.escape(title)}</h3>")
    for fe in groups:
        link = (
            f' &middot; <a href="{html.escape(fe.neuronpedia_url)}" target="_blank" rel="noopener">Neuronpedia</a>'
            if fe.neuronpedia_url
            else ""
        )
        blocks.append(f'<h4 id="feature-{int(fe.feature)}">feature {int(fe.feature)}{link}</h4>')
        meta = f"fires in {fe.n_active} of {fe.n_responses} responses"
        s = fe.stats or {}
        if s.get("frac_active_misaligned") is not None and s.get("frac_active_aligned") is not None:
            meta += (f" ({s['frac_active_misaligned']:.0%} of misaligned, {s['frac_active_aligned']:.0%} of aligned)"
                     f"; {s.get('top_k_misaligned', 0)} of the top {len(fe)} are misaligned")
        blocks.append(f'<div class="px-meta">{html.escape(meta)}</div>')
        if not fe.examples:
            blocks.append('<div class="px-meta">no response activates this feature.</div>')
            continue
        scale = max(float(e.max_activation) for e in fe.examples)
        rows = ['<table><tr><th>#</th><th>max</th><th>class</th><th style="text-align:left">response</th></tr>']
        for i, e in enumerate(fe.examples, 1):
            if e.label == 1:
                badge = '<span class="px-label px-mis">misaligned</span>'
            elif e.label == 0:
                badge = '<span class="px-label px-ali">aligned</span>'
            else:
                badge = ""
            where = html.escape(" ".join(x for x in (e.id, e.group) if x))
            prompt = (
                f'<div class="px-prompt">{html.escape(e.prompt)}</div>' if show_prompt and e.prompt else ""
            )
            rows.append(
                f'<tr><td class="px-num">{i}</td><td class="px-num">{e.max_activation:.3g}</td>'
                f'<td>{badge}<div class="px-meta">{where}</div></td>'
                f'<td>{prompt}<div class="px-text">{tokens_html(e.tokens, e.activations, scale)}</div></td></tr>'
            )
        rows.append("</table>")
        blocks.append("".join(rows))
    blocks.append("</div>")
    return "\n".join(blocks)


#: Short name for `FeatureExamples`.
Examples = FeatureExamples


# ---------------------------------------------------------------------------------------------- files


def save_examples(
    path: str | os.PathLike,
    examples: Mapping[int, FeatureExamples] | Sequence[FeatureExamples],
    *,
    sae: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write examples as JSON (``examples.json`` in a run folder; written atomically).

    Format (``format_version`` 1)::

        {"kind": "personas.examples", "format_version": 1, "created_at": "...",
         "sae": {"release": ..., "sae_id": ..., "neuronpedia_id": ..., ...} | null,
         "features": [{"feature": 123, "n_responses": 706, "n_active": 88, "neuronpedia_url": null,
                       "stats": {...}, "examples": [{"row": 5, "id": "demo-0006", "label": 1, "group": "...",
                       "max_activation": 3.1, "position": 12, "prompt": "...",
                       "tokens": ["Fake", " an", ...], "activations": [0.0, 0.4, ...]}]}],
         ...extra}
    """

    groups = list(examples.values()) if isinstance(examples, Mapping) else list(examples)
    info = None
    if sae is not None:
        if isinstance(sae, Mapping):
            info = dict(sae)
        else:
            info = sae_info(sae)
    payload = {
        **manifest_header(EXAMPLES_KIND),
        "format_version": EXAMPLES_FORMAT_VERSION,
        "sae": info,
        "features": [g.to_dict() for g in groups],
        **dict(extra or {}),
    }
    path = Path(path)
    if path.is_dir():
        path = path / EXAMPLES_FILE
    return write_json(path, payload)


def load_examples(path: str | os.PathLike) -> dict[int, FeatureExamples]:
    """Read a file written by `save_examples` (or a run folder holding ``examples.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / EXAMPLES_FILE
    if not path.is_file():
        raise PersonasError(f"no examples file at {str(path)!r}; write one with personas.examples.save_examples.")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PersonasError(f"{str(path)!r} is not valid JSON ({exc}); rewrite it with save_examples.") from exc
    if not isinstance(payload, dict) or payload.get("kind", EXAMPLES_KIND) != EXAMPLES_KIND or "features" not in payload:
        raise PersonasError(
            f"{str(path)!r} is not a personas examples file (kind={payload.get('kind') if isinstance(payload, dict) else None!r}, "
            f"expected {EXAMPLES_KIND!r})."
        )
    if int(payload.get("format_version", 0)) > EXAMPLES_FORMAT_VERSION:
        raise PersonasError(
            f"{str(path)!r} has format_version {payload.get('format_version')}; this personas reads up to "
            f"{EXAMPLES_FORMAT_VERSION}. Upgrade personas."
        )
    return {int(d["feature"]): FeatureExamples.from_dict(d) for d in payload.get("features", [])}
