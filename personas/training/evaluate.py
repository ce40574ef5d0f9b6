"""Evaluate SAEs on a model: reconstruction, the language-model loss with the SAE spliced in, and what it detects.

The figures SAELens's and SAEBench's evaluations report, on a CPU, for one or several SAEs of the same model:

* **Reconstruction** over the scored tokens (every non-special token of plain texts; the response tokens of
  conversations): ``explained_variance`` (``1 - SSE / SST``, SST around the tokens' mean, as
  `personas.saes.ReconstructionStats` defines it), ``mse``, ``l0`` (mean active latents per token),
  ``dead_fraction`` (latents that never fire on these tokens) and ``dense_fraction`` (latents active on more than
  `EvalSAEConfig.dense_threshold` of them).
* **Language-model loss** (causal models only): the mean next-token cross-entropy of the scored tokens with the
  model as it is (``ce_clean``), with the activation at the SAE's site replaced by the SAE's reconstruction
  (``ce_sae``) and by zeros (``ce_zero``), and ``ce_recovered = (ce_zero - ce_sae) / (ce_zero - ce_clean)``: 1 for
  a perfect reconstruction, 0 for one no better than deleting the site. The replacement is made at every
  non-special token of the sequence (prompt included); special tokens (BOS, the chat template's markers) keep
  their clean activation, as the SAE never saw them in training (attention sinks, norms 100x the median).
* **Downstream**, on labelled answers with question groups (`personas.load_responses`), judged leave-one-question-
  out: for each question the fits below are made on the other questions' answers and score the held-out
  question's; the out-of-fold scores of all questions give one pooled AUROC with a DeLong interval. The fits: the
  10-latent detector (`personas.detect.PersonaDetector`, mean-pooled codes; ``EvalSAEConfig.k``, and the sizes of
  ``EvalSAEConfig.k_curve`` in ``detector_by_k``), the best single latent (the same
  detector with ``k=1, method="single"``: the latent and its sign are chosen on the training questions), and two
  dense probes on the mean-pooled activations at the same site: `personas.detect.DiffMeansProbe` (the baseline of
  `personas detect`) and a class-balanced logistic model on standardised activations (C chosen from
  `DENSE_CS` by leave-one-question-out AUROC inside the training questions, as in ``benchmarks/bench_em_dev.py``,
  unless `EvalSAEConfig.dense_C` fixes it; they do not depend on the SAE, so they are fitted once per site).
  Two in-sample counts describe the dictionary: ``n_latents_auroc`` (latents whose AUROC over all answers is at
  least `EvalSAEConfig.auroc_threshold` in either direction) and ``top_style`` (how many of the top
  `EvalSAEConfig.top` latents by |AUROC - 0.5| `personas.scoring.confounds.flag_confounds` flags as length, punctuation
  or one-token latents).

One forward pass per batch serves every SAE (their sites are read together); each SAE then costs one spliced
forward per batch, and each distinct site one zero-ablated forward.

    >>> results = evaluate_saes(model, {"old": old_sae, "new": new_sae}, texts=docs, responses=load_responses(d))
    >>> print(format_eval_table(results))
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from personas.capturing import Tokenized, pool_segments, pool_sparse_codes, tokenize_conversations
from personas.config import CaptureConfig, EvalSAEConfig
from personas.detect import DiffMeansProbe, PersonaDetector, auroc_with_ci
from personas.errors import DataError, PersonasError
from personas.models import as_model_handle
from personas.saes import ReconstructionStats, check_site, encode_sparse
from personas.scoring import auroc, rank_features
from personas.scoring.confounds import confound_table, flag_confounds, punctuation_token_ids

if TYPE_CHECKING:
    import torch

__all__ = ["DENSE_CS", "ce_recovered", "dense_probe_metrics", "downstream_metrics", "evaluate_saes", "format_eval_table",
           "lm_fit_metrics", "text_sequences"]

logger = logging.getLogger(__name__)

#: Inverse regularisation strengths the dense logistic probe chooses from (inside the training questions).
DENSE_CS = (0.01, 0.1, 1.0)


def ce_recovered(ce_clean: float, ce_sae: float, ce_zero: float) -> float:
    """``(ce_zero - ce_sae) / (ce_zero - ce_clean)``: 1 when the SAE costs nothing, 0 when it is as bad as zeros."""
    gap = ce_zero - ce_clean
    return float((ce_zero - ce_sae) / gap) if gap != 0 else float("nan")


def text_sequences(model: Any, texts: Sequence[str], max_length: int = 256) -> list[Tokenized]:
    """Plain documents as `Tokenized` sequences whose scored tokens are all of the text's own tokens.

    Each text is tokenized without special tokens, cut at ``max_length - 1`` tokens and put behind the model's BOS
    (or its end-of-text token, as a causal model's documents are separated in pre-training), unless it opens with
    a special token itself (a conversation rendered with the chat template).
    """
    handle = as_model_handle(model)
    tok = handle.tokenizer
    lead = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    special = set(tok.all_special_ids)
    out = []
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"][: max_length - 1]
        if len(ids) < 2:
            continue
        head = [lead] if lead is not None and ids[0] not in special else []  # a rendered chat opens itself
        seq = head + list(ids)
        out.append(Tokenized(input_ids=seq, start=len(seq) - len(ids), end=len(seq)))
    if not out:
        raise DataError(f"none of the {len(texts)} texts has 2 tokens or more; pass longer documents.")
    return out


def _batch_tensors(items: Sequence[Tokenized], pad_id: int, special: torch.Tensor):
    """ids, attention mask, scored-token mask and splice mask (non-special real tokens) of a right-padded batch."""
    import torch

    width = max(len(t.input_ids) for t in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(items), width), dtype=torch.long)
    scored = torch.zeros((len(items), width), dtype=torch.bool)
    for row, t in enumerate(items):
        ids[row, : len(t.input_ids)] = torch.tensor(t.input_ids)
        attn[row, : len(t.input_ids)] = 1
        scored[row, t.start : t.end] = True
    splice = attn.bool() & ~torch.isin(ids, special)
    scored &= splice
    return ids, attn, scored, splice


def _nll(logits: torch.Tensor, ids: torch.Tensor, scored: torch.Tensor) -> tuple[float, int]:
    """Summed next-token negative log-likelihood of the scored tokens (position p predicted at p - 1)."""
    import torch

    target = scored[:, 1:]
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, ids[:, 1:, None].to(logp.device))[..., 0]
    return float(-picked[target.to(picked.device)].double().sum()), int(target.sum())


def _reconstruct(sae: Any, x: torch.Tensor) -> torch.Tensor:
    param = next(iter(sae.parameters()))
    return sae.decode(sae.encode(x.to(param.device, param.dtype))).to(x.device, x.dtype)


def lm_fit_metrics(
    model: Any,
    saes: Mapping[str, Any],
    sequences: Sequence[Tokenized],
    *,
    config: EvalSAEConfig | None = None,
    keep_codes: bool = False,
    progress: bool = False,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Reconstruction and LM-loss figures of each SAE over the scored tokens of ``sequences``.

    Returns ``(metrics, extras)``: ``metrics[name]`` as in the module docstring; ``extras`` holds, per sequence,
    the mean-pooled activation at each site (``extras["pooled"][hook]``, [N, d_model]) and, with ``keep_codes``,
    each SAE's per-token codes of the scored tokens (``extras["codes"][name]``: a CSR [T, d_sae]), their
    ``extras["offsets"]`` [N+1], ``extras["token_ids"]`` [T] and the pooled codes ``extras["features"][name]``.
    """
    import scipy.sparse
    import torch
    from tqdm.auto import tqdm

    config = config or EvalSAEConfig()
    handle = as_model_handle(model)
    if not saes:
        raise PersonasError("lm_fit_metrics needs at least one SAE.")
    hooks = {name: sae.cfg.metadata.hook_name for name, sae in saes.items()}
    for name, sae in saes.items():
        check_site(sae, hooks[name], handle, allow_model_mismatch=config.allow_model_mismatch)
    sites = list(dict.fromkeys(hooks.values()))
    ce = config.ce_loss and not handle.is_encoder
    tok = handle.tokenizer
    special = torch.tensor(sorted(set(tok.all_special_ids)), dtype=torch.long)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    totals = {name: ReconstructionStats(int(sae.cfg.d_sae)) for name, sae in saes.items()}  # every token decoded
    nll = {"clean": [0.0, 0], **{f"zero:{h}": [0.0, 0] for h in sites}, **{f"sae:{n}": [0.0, 0] for n in saes}}
    pooled = {h: np.zeros((len(sequences), handle.d_model), dtype=np.float32) for h in sites}
    feature_parts: dict[str, list] = {name: [] for name in saes}
    code_parts: dict[str, list] = {name: [] for name in saes}
    order = np.argsort([-len(t.input_ids) for t in sequences], kind="stable")
    device = handle.device
    bar = tqdm(total=len(sequences), desc="eval-sae", unit="seq", disable=not progress, leave=False)
    token_ids: list[np.ndarray] = []
    counts: list[int] = []

    def add(key: str, value_n: tuple[float, int]) -> None:
        nll[key][0] += value_n[0]
        nll[key][1] += value_n[1]

    def run(ids, attn, fwd_hooks):
        with torch.no_grad():
            return handle.model.run_with_hooks(ids.to(device), attention_mask=attn.to(device), fwd_hooks=fwd_hooks)

    for lo in range(0, len(sequences), config.batch_size):
        batch = order[lo : lo + config.batch_size]
        items = [sequences[i] for i in batch]
        ids, attn, scored, splice = _batch_tensors(items, pad_id, special)
        if ce:
            cache: dict[str, torch.Tensor] = {}

            def keeper(site: str, cache: dict = cache):
                def keep(act, hook):  # keyed by the name asked for: a bridge may name its hook points otherwise
                    cache[site] = act.detach()
                return keep

            add("clean", _nll(run(ids, attn, [(h, keeper(h)) for h in sites]), ids, scored))
        else:
            cache = handle.run_hooks(ids.to(device), attn.to(device), sites)
        mask = scored.to(device)
        segments = mask.nonzero()[:, 0]
        for h in sites:
            flat = cache[h][mask].float()
            pooled[h][batch] = pool_segments(flat, segments, len(items), "mean").cpu().numpy()
        seg_np = segments.cpu().numpy()
        counts.extend(np.bincount(seg_np, minlength=len(items)).tolist())
        token_ids.append(ids[scored].numpy())
        for name, sae in saes.items():
            x = cache[hooks[name]][mask].float()
            codes = encode_sparse(sae, x, batch_tokens=config.encode_batch_tokens, stats=totals[name])
            if keep_codes:
                code_parts[name].append(codes.to_csr())
                feature_parts[name].append(pool_sparse_codes(codes, seg_np, len(items), "mean"))
        if ce:
            smask = splice.to(device)

            def zero(act, hook, smask=smask):
                act = act.clone()
                act[smask] = 0.0
                return act

            for h in sites:
                add(f"zero:{h}", _nll(run(ids, attn, [(h, zero)]), ids, scored))
            for name, sae in saes.items():

                def patch(act, hook, sae=sae, smask=smask):
                    act = act.clone()
                    act[smask] = _reconstruct(sae, act[smask])
                    return act

                add(f"sae:{name}", _nll(run(ids, attn, [(hooks[name], patch)]), ids, scored))
        bar.update(len(items))
    bar.close()

    metrics: dict[str, dict[str, Any]] = {}
    for name in saes:
        if totals[name].n < 2:
            raise DataError(f"only {totals[name].n} scored token(s) to evaluate SAE {name!r} on; pass more text.")
        m = totals[name].summary(config.dense_threshold)
        if ce:
            clean = nll["clean"][0] / nll["clean"][1]
            zero_ce = nll[f"zero:{hooks[name]}"][0] / nll[f"zero:{hooks[name]}"][1]
            sae_ce = nll[f"sae:{name}"][0] / nll[f"sae:{name}"][1]
            m.update(ce_clean=clean, ce_sae=sae_ce, ce_zero=zero_ce, ce_delta=sae_ce - clean,
                     ce_recovered=ce_recovered(clean, sae_ce, zero_ce))
        m["hook"] = hooks[name]
        metrics[name] = m
    extras: dict[str, Any] = {"pooled": pooled, "n_tokens": np.asarray(counts, dtype=np.int64)}
    if keep_codes:
        inverse = np.argsort(order, kind="stable")
        lengths = np.asarray(counts, dtype=np.int64)  # in batch order
        starts = np.concatenate([[0], np.cumsum(lengths)])
        rows = np.concatenate([np.arange(starts[j], starts[j + 1]) for j in inverse]) if len(lengths) else []
        extras["offsets"] = np.concatenate([[0], np.cumsum(lengths[inverse])])
        extras["token_ids"] = np.concatenate(token_ids)[rows]
        extras["n_tokens"] = lengths[inverse]
        extras["codes"] = {n: scipy.sparse.vstack(p, format="csr")[rows] for n, p in code_parts.items()}
        extras["features"] = {n: scipy.sparse.vstack(p, format="csr")[inverse] for n, p in feature_parts.items()}
    else:
        extras["n_tokens"] = np.asarray(counts, dtype=np.int64)[np.argsort(order, kind="stable")]
    return metrics, extras


# ---------------------------------------------------------------------------------------------------------------
# Downstream: leave-one-question-out detection
# ---------------------------------------------------------------------------------------------------------------


def _dense_logistic(Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, C: float) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(Xtr)
    clf = LogisticRegression(C=C, class_weight="balanced", max_iter=1000)
    return clf.fit(scaler.transform(Xtr), ytr).decision_function(scaler.transform(Xte))


def _inner_C(X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    """The C of `DENSE_CS` with the best pooled leave-one-question-out AUROC inside these rows."""

    best, best_auc = DENSE_CS[-1], -1.0
    for C in DENSE_CS:
        pred = np.zeros(len(y))
        for g in np.unique(groups):
            te = groups == g
            if len(np.unique(y[~te])) < 2:
                continue
            pred[te] = _dense_logistic(X[~te], y[~te], X[te], C)
        value = auroc(pred, y, one_class=0.5)
        if value > best_auc:
            best, best_auc = C, value
    return best


def _leave_questions_out(fit, y: np.ndarray, groups: np.ndarray, ci_level: float) -> dict[str, Any]:
    """Pooled out-of-fold AUROC (DeLong interval) and the mean per-question AUROC of ``fit(train, test) -> scores``."""

    pred = np.zeros(len(y))
    per_q = []
    for g in np.unique(groups):
        te = groups == g
        pred[te] = fit(np.flatnonzero(~te), np.flatnonzero(te))
        if len(np.unique(y[te])) == 2:
            per_q.append(auroc(pred[te], y[te], one_class=0.5))
    value, lo, hi = auroc_with_ci(pred, y, ci_level)
    return {"auroc": value, "auroc_ci": [lo, hi], "per_question_mean": float(np.mean(per_q)) if per_q else None}


def _check_groups(y: np.ndarray, groups: np.ndarray | None) -> str | None:
    """Why leave-one-question-out cannot run on these rows, or None when it can."""
    if groups is None:
        return "the labelled data has no question groups (a 'group' or 'question_id' column)"
    unique = np.unique(groups)
    if unique.size < 2:
        return f"the labelled data has {unique.size} question group; leave-questions-out needs at least 2"
    for g in unique:
        if len(np.unique(y[groups != g])) < 2:
            return f"without question {g!r} the other questions' answers lack a class"
    return None


def _checked_labels(y: Any, groups: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(np.int8)
    groups = np.asarray(groups).astype(str)
    why = _check_groups(y, groups)
    if why is not None:
        raise DataError(f"cannot judge detectors on held-out questions: {why}.")
    return y, groups


def dense_probe_metrics(dense: np.ndarray, y: np.ndarray, groups: np.ndarray, *,
                        config: EvalSAEConfig | None = None) -> dict[str, Any]:
    """The two dense baselines of the downstream figures, leave-one-question-out on the mean-pooled activations
    ``dense`` [N, d_model]: ``dense_diff_means`` and ``dense_logistic`` (see the module docstring)."""
    config = config or EvalSAEConfig()
    y, groups = _checked_labels(y, groups)
    dense = np.asarray(dense, dtype=np.float64)

    def diff_means(tr, te):
        return DiffMeansProbe().fit(dense[tr], y[tr]).decision_function(dense[te])

    def dense_logistic(tr, te):
        C = config.dense_C if config.dense_C is not None else _inner_C(dense[tr], y[tr], groups[tr])
        return _dense_logistic(dense[tr], y[tr], dense[te], C)

    return {"dense_diff_means": _leave_questions_out(diff_means, y, groups, config.ci_level),
            "dense_logistic": _leave_questions_out(dense_logistic, y, groups, config.ci_level)}


def downstream_metrics(
    features: Any,
    dense: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    *,
    codes: Any,
    offsets: np.ndarray,
    token_ids: np.ndarray,
    punctuation_ids: Sequence[int] = (),
    config: EvalSAEConfig | None = None,
    dense_figures: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The downstream figures of one SAE (see the module docstring) from its mean-pooled codes ``features``
    [N, d_sae], the mean-pooled activations ``dense`` [N, d_model] at its site, labels ``y`` and question
    ``groups``, and its per-token ``codes`` with ``offsets`` and ``token_ids`` (for the confound flags).

    ``dense_figures``: `dense_probe_metrics` of the same ``dense``, ``y`` and ``groups`` when already computed (they
    do not depend on the SAE: `evaluate_saes` fits them once per site)."""
    import scipy.sparse

    config = config or EvalSAEConfig()
    y, groups = _checked_labels(y, groups)
    X = scipy.sparse.csr_matrix(features)

    def detector(k: int, method: str):
        def fit(tr, te):
            det = PersonaDetector(k=k, method=method, selection=config.selection)
            return det.fit(X[tr], y[tr], groups[tr]).decision_function(X[te])
        return fit

    out: dict[str, Any] = {
        "n_answers": int(len(y)), "n_misaligned": int(y.sum()), "n_questions": int(np.unique(groups).size),
        "k": config.k,
        "detector": _leave_questions_out(detector(config.k, "logistic"), y, groups, config.ci_level),
        "detector_by_k": {str(k): _leave_questions_out(detector(k, "logistic"), y, groups, config.ci_level)
                          for k in config.k_curve_list()},
        "single_latent": _leave_questions_out(detector(1, "single"), y, groups, config.ci_level),
        **(dense_figures if dense_figures is not None else dense_probe_metrics(dense, y, groups, config=config)),
    }
    ranking = rank_features(X, y)  # in-sample, over all answers: a description of the dictionary, not a test
    auc = ranking["auroc"].to_numpy()
    out["n_latents_auroc"] = int((np.maximum(auc, 1.0 - auc) >= config.auroc_threshold).sum())
    out["best_latent_in_sample"] = {"feature": int(ranking["feature"].iloc[0]), "auroc": float(auc[0])}
    top = ranking["feature"].to_numpy()[: config.top]
    table = confound_table(codes, offsets, token_ids, pooled=X, punctuation_ids=punctuation_ids)
    flags = flag_confounds(table)
    out["top_style"] = int(flags[top].sum())
    out["top_features"] = [int(f) for f in top]
    return out


# ---------------------------------------------------------------------------------------------------------------
# The whole evaluation and its table
# ---------------------------------------------------------------------------------------------------------------


def evaluate_saes(
    model: Any,
    saes: Mapping[str, Any],
    *,
    texts: Sequence[str] | None = None,
    responses: Any = None,
    config: EvalSAEConfig | None = None,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """Every figure of the module docstring for each SAE in ``saes`` (name -> sae-lens SAE) on ``model``.

    ``texts``: plain documents (e.g. held-out conversations rendered with the chat template); ``responses``: a
    `personas.data.Responses` of labelled answers (reconstruction and loss on their response tokens, and, when
    they carry question groups, the downstream figures). Returns ``{name: {"text": {...}, "answers": {...},
    "downstream": {...}}}`` with the parts that had data.
    """

    config = config or EvalSAEConfig()
    if texts is None and responses is None:
        raise PersonasError("evaluate_saes needs texts=..., responses=... or both; got neither.")
    handle = as_model_handle(model)
    results: dict[str, dict[str, Any]] = {name: {} for name in saes}
    if texts is not None:
        metrics, _ = lm_fit_metrics(handle, saes, text_sequences(handle, texts, config.max_length), config=config,
                                    progress=progress)
        for name, m in metrics.items():
            results[name]["text"] = {**m, "n_texts": len(texts)}
    if responses is not None:
        frame = responses.frame
        capture_config = CaptureConfig(max_length=config.max_length, system_prompt=config.system_prompt)
        sequences = tokenize_conversations(handle, frame["prompt"].tolist(), frame["response"].tolist(),
                                           capture_config)
        metrics, extras = lm_fit_metrics(handle, saes, sequences, config=config, keep_codes=True, progress=progress)
        y = frame["label"].to_numpy()
        groups = frame["group"].to_numpy() if "group" in frame else None
        why = _check_groups(y, groups)
        punct = punctuation_token_ids(handle.tokenizer)
        dense_by_hook: dict[str, dict[str, Any]] = {}  # the dense probes do not depend on the SAE: once per site
        for name, m in metrics.items():
            results[name]["answers"] = {**m, "n_answers": len(frame)}
            if why is not None:
                results[name]["downstream"] = {"skipped": why}
                logger.warning("downstream figures skipped: %s", why)
                continue
            dense = extras["pooled"][m["hook"]]
            if m["hook"] not in dense_by_hook:
                dense_by_hook[m["hook"]] = dense_probe_metrics(dense, y, groups, config=config)
            results[name]["downstream"] = downstream_metrics(
                extras["features"][name], dense, y, groups, codes=extras["codes"][name], offsets=extras["offsets"],
                token_ids=extras["token_ids"], punctuation_ids=punct, config=config,
                dense_figures=dense_by_hook[m["hook"]])
    return results


_ROWS = tuple((part, key, f"{label} ({part})", fmt) for part in ("text", "answers") for key, label, fmt in (
    ("explained_variance", "EV", "{:.3f}"), ("ce_recovered", "CE recovered", "{:.3f}"),
    ("ce_clean", "CE clean / SAE / zero", None), ("l0", "L0", "{:.1f}"), ("dead_fraction", "dead latents", "{:.1%}"),
    ("dense_fraction", "dense latents", "{:.1%}")))
_DOWNSTREAM = (("detector", "AUROC 10-latent detector (LOQO)"), ("single_latent", "AUROC best single latent (LOQO)"),
               ("dense_logistic", "AUROC dense logistic probe (LOQO)"), ("dense_diff_means", "AUROC dense diff-means (LOQO)"))
#: What the downstream cells hold; the pooled figure of the single latent mixes the latents chosen in each fold.
_DOWNSTREAM_NOTE = ("AUROC cells: mean over held-out questions / pooled over all out-of-fold scores [95% DeLong]; "
                    "read the single latent per question (its pooled figure pools different latents).")


def format_eval_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """The results of `evaluate_saes` as a plain-text table, one column per SAE."""
    names = list(results)
    rows: list[tuple[str, list[str]]] = []
    for part, key, label, fmt in _ROWS:
        if not any(key in results[n].get(part, {}) for n in names):
            continue
        cells = []
        for n in names:
            m = results[n].get(part, {})
            if m.get(key) is None:
                cells.append("-")
            elif fmt is None:
                cells.append(f"{m['ce_clean']:.3f} / {m['ce_sae']:.3f} / {m['ce_zero']:.3f}")
            else:
                cells.append(fmt.format(m[key]))
        rows.append((label, cells))
    if any("downstream" in results[n] for n in names):
        downstream = [results[n].get("downstream", {}) for n in names]

        def cell(figure: Mapping[str, Any] | None) -> str:
            if not figure:
                return "-"
            per_q = figure.get("per_question_mean")
            return (("-" if per_q is None else f"{per_q:.3f}") + f" / {figure['auroc']:.3f} "
                    f"[{figure['auroc_ci'][0]:.3f}, {figure['auroc_ci'][1]:.3f}]")

        for key, label in _DOWNSTREAM:
            if key == "detector":
                ks = {d.get("k", 10) for d in downstream if key in d}
                label = label.replace("10", str(ks.pop()) if len(ks) == 1 else "k")
            rows.append((label, [cell(d.get(key)) for d in downstream]))
        curve = sorted({int(k) for d in downstream for k in d.get("detector_by_k", {})})
        for k in curve:
            rows.append((f"AUROC {k}-latent detector (LOQO)", [cell(d.get("detector_by_k", {}).get(str(k)))
                                                             for d in downstream]))
        rows.append(("latents reaching the AUROC threshold (in-sample)",
                     [str(results[n].get("downstream", {}).get("n_latents_auroc", "-")) for n in names]))
        rows.append(("style-flagged among the top latents",
                     [str(results[n].get("downstream", {}).get("top_style", "-")) for n in names]))
        skipped = {results[n]["downstream"]["skipped"] for n in names if "skipped" in results[n].get("downstream", {})}
        for why in skipped:
            rows.append((f"downstream skipped: {why}", ["" for _ in names]))
    width = max(len(label) for label, _ in rows) if rows else 10
    widths = [max(len(n), *(len(cells[i]) for _, cells in rows)) for i, n in enumerate(names)]
    lines = [" " * width + "  " + "  ".join(n.rjust(w) for n, w in zip(names, widths, strict=True))]
    for label, cells in rows:
        lines.append(label.ljust(width) + "  " + "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))
    if any("detector" in results[n].get("downstream", {}) for n in names):
        lines.append(_DOWNSTREAM_NOTE)
    return "\n".join(lines)
