"""Do <= k SAE features detect misaligned answers on questions they never saw? One table on em-dev.

Data: the development set ``../shared/data/em-dev/em_dev.csv.gz`` (2,416 real judged answers, 8 questions; not in
the repository: the benchmark prints a message and exits 0 when it is absent). Each model is captured once, all
sites in one forward pass, into a personas activation cache under ``runs/em_dev_cache/<model>`` (per-token SAE
codes kept), so reruns only re-fit. Everything is judged leave-one-question-out: a question and its ``_template``
variant are held out together, and every choice (features, C, sign) is made on the training questions only.

Rows of the table (per model and site):
- ``sae k=K <selection> <pooling>``: `personas.scoring.selection.select_features` on the SAE codes pooled per response by
  `personas.scoring.confounds.pool_codes` (mean, max, frac = fraction of tokens active, topq = mean of the top 25% tokens;
  per-latent = all four side by side, so the selection picks each latent's pooling on the training questions),
  then a class-balanced logistic model (C=1) on the chosen standardised latents;
  ``-conf`` excludes latents flagged by `personas.scoring.confounds.flag_confounds` (length, punctuation, one token type;
  flags use no labels, so they are computed once from all answers' tokens); ``|resid`` residualises every latent
  on length and punctuation share (fitted on the training answers) first;
- ``sae all latents``: logistic on every latent (mean pooling), C by grouped CV inside the training questions;
- ``dense probe``: logistic on all dimensions (mean pooling), C by grouped CV inside the training questions;
- ``dense diff-means``: the difference-of-means direction (`personas.DiffMeansProbe`);
- ``tfidf``: TF-IDF (words 1-2 grams) logistic, C by grouped CV inside the training questions;
- ``length``: answer length in tokens alone, sign chosen on the training questions;
- ``diff k=K`` (SmolLM2, block 18): the K latents that rose most in the organism's model diff
  (``--organism-run``, default ``data/organism/run``), chosen without any em-dev label: a logistic fit on them, and
  their standardised mean (no label at all). The label-free selection of the persona-features paper.

Columns: mean +- sd of the per-question AUROC over the 8 held-out questions, the pooled out-of-fold AUROC with its
DeLong 95% interval, and ``shift``: the same leave-one-question-out fit on the answers of one group of experiments
(``source``: the medical-data fine-tunes vs all others) scored on the other group's answers of the held-out
question, averaged over both directions (the distribution-shift check of issue 12).

    python benchmarks/bench_em_dev.py [--models minilm,smollm2] [--smollm2-sae FOLDER] [--smollm2-blocks 18]
        [--k 10] [--methods stability] [--poolings mean] [--organism-run RUN] [--quick]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# ../shared/data/em-dev from the project's root (or from its parent folder, for a git worktree one level down)
_CANDIDATES = [base / "shared" / "data" / "em-dev" / "em_dev.csv.gz" for base in (ROOT.parent, ROOT.parent.parent)]
DEFAULT_DATA = os.environ.get("PERSONAS_EM_DEV") or next((p for p in _CANDIDATES if p.is_file()), _CANDIDATES[0])
SHIFT_A = re.compile(r"med")  # sources of the medical-data experiments form one side of the shift split


# ------------------------------------------------------------------------------------------------ data and caches


def model_specs(args):
    """(name, model spec, hooks, SAE spec) of each model to benchmark."""
    specs = []
    for name in args.models.split(","):
        if name == "minilm":
            hooks = [f"blocks.{i}.hook_resid_post" for i in (1, 3, 5)]
            specs.append(("minilm", "minilm", hooks, args.minilm_sae))
        elif name == "smollm2":
            hooks = [f"blocks.{int(i)}.hook_resid_post" for i in args.smollm2_blocks.split(",")]
            specs.append(("smollm2", "smollm2", hooks, args.smollm2_sae))
        else:
            raise SystemExit(f"unknown model {name!r}; expected minilm or smollm2")
    return specs


def read_cache(path):
    """Per-hook pooled activations, per-token SAE codes (codes, offsets, token ids), n_tokens and labels."""
    import personas

    cache = personas.open_cache(path)
    out = read_shards(cache.iter_shards(want=("pooled", "tokens")), cache.manifest)
    out["labels"] = cache.labels
    return out


def read_shards(shards, manifest):
    """The arrays of `read_cache` from shards in row order (per-token offsets made global)."""
    import numpy as np
    import scipy.sparse

    pooled, codes, offsets, token_ids, n_tokens = {}, [], [np.zeros(1, np.int64)], [], []
    base = 0
    for shard in shards:
        for h, a in shard.pooled.items():
            pooled.setdefault(h, []).append(a)
        n_tokens.append(shard.n_tokens)
        if shard.token_codes is not None:
            tc = shard.token_codes
            codes.append(tc.codes)
            offsets.append(np.asarray(tc.offsets[1:], np.int64) + base)
            base += int(tc.offsets[-1])
            token_ids.append(tc.token_ids)
    out = {
        "pooled": {h: np.concatenate(v).astype(np.float64) for h, v in pooled.items()},
        "n_tokens": np.concatenate(n_tokens).astype(np.float64),
        "sae_hook": manifest.get("sae_hook"),
    }
    if codes:
        out["codes"] = scipy.sparse.vstack(codes, format="csr")
        out["offsets"] = np.concatenate(offsets)
        out["token_ids"] = np.concatenate(token_ids)
    return out


def capture(name, model, hooks, sae, frame, cache_dir):
    import personas
    from personas.config import CacheConfig, CaptureConfig

    out = Path(cache_dir) / name
    t0 = time.perf_counter()
    cache = personas.build_cache(frame, out, capture=CaptureConfig(model=model, max_length=256), hooks=hooks,
                                 sae=sae, cache=CacheConfig(tokens=True), progress=False)
    if not cache.complete:
        raise SystemExit(f"the cache {out} is incomplete; rerun to resume it")
    print(f"# {name}: cache {out} ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    feats = read_cache(out)
    if len(feats["labels"]) != len(frame) or (feats["labels"] != (frame["aligned"] < 30).to_numpy()).any():
        raise SystemExit(f"the cache {out} does not hold em-dev's rows in order; delete it and rerun")
    return feats


def punctuation_ids(model):
    """Token ids whose text is only punctuation/whitespace, from the model's tokenizer."""
    from transformers import AutoTokenizer

    from personas.models.offline import offline_model
    from personas.scoring.confounds import punctuation_token_ids

    path = offline_model(model).path() if offline_model(model) is not None else model
    return punctuation_token_ids(AutoTokenizer.from_pretrained(str(path)))


# ------------------------------------------------------------------------------------------------ evaluation


def inner_C(fit_score, X, y, groups, Cs):
    """C with the best pooled leave-one-group-out AUROC inside the training rows."""
    import numpy as np

    from personas.scoring import auroc

    best, best_auc = Cs[0], -1.0
    for C in Cs:
        pred = np.zeros(len(y))
        for g in np.unique(groups):
            te = groups == g
            pred[te] = fit_score(X[~te], y[~te], X[te], C)
        a = auroc(pred, y, one_class=0.5)
        if a > best_auc:
            best, best_auc = C, a
    return best


def logistic_scores(Xtr, ytr, Xte, C):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if hasattr(Xtr, "toarray"):
        clf = LogisticRegression(C=C, class_weight="balanced", max_iter=500, solver="liblinear")
        return clf.fit(Xtr, ytr).decision_function(Xte)
    sc = StandardScaler().fit(Xtr)
    clf = LogisticRegression(C=C, class_weight="balanced", max_iter=500)
    return clf.fit(sc.transform(Xtr), ytr).decision_function(sc.transform(Xte))


class Data:
    def __init__(self, y, qid, source, text):
        import numpy as np

        self.y, self.qid, self.source, self.text = y, qid, source, text
        self.side = np.array([bool(SHIFT_A.search(s)) for s in source])


def evaluate(method, data, fit, shift_too):
    """Leave-one-question-out: per-question AUROCs, pooled AUROC (DeLong), shift AUROC."""
    import numpy as np

    from personas.detect import auroc_with_ci
    from personas.scoring import auroc

    y, q = data.y, data.qid
    pred = np.zeros(len(y))
    per_q = []
    for g in np.unique(q):
        te = q == g
        pred[te] = fit(np.flatnonzero(~te), np.flatnonzero(te))
        per_q.append(auroc(pred[te], y[te], one_class=0.5))
    pooled = auroc_with_ci(pred, y)
    shift = []
    if shift_too:
        for a_side in (True, False):
            sp = np.zeros(len(y))
            mask = np.zeros(len(y), bool)
            for g in np.unique(q):
                tr = np.flatnonzero((q != g) & (data.side == a_side))
                te = np.flatnonzero((q == g) & (data.side != a_side))
                if len(np.unique(y[te])) < 2 or len(np.unique(y[tr])) < 2:
                    continue
                sp[te] = fit(tr, te)
                mask[te] = True
            shift.append(auroc(sp[mask], y[mask], one_class=0.5))
    shift_auc = float(np.mean(shift)) if shift else float("nan")
    print(f"# {method}: {np.mean(per_q):.3f} pooled {pooled[0]:.3f} shift {shift_auc:.3f}",
          file=sys.stderr, flush=True)
    return {"method": method, "mean": float(np.mean(per_q)), "sd": float(np.std(per_q)), "pooled": pooled,
            "shift": shift_auc, "per_q": per_q}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--models", default="minilm")
    ap.add_argument("--minilm-sae", default="default")
    ap.add_argument("--smollm2-sae", default="default", help="SAE for SmolLM2 (default: the shipped one)")
    ap.add_argument("--smollm2-blocks", default="6,12,18,24",
                    help="SmolLM2 blocks whose residual stream is read (the SAE's must be among them)")
    ap.add_argument("--cache-dir", default=str(ROOT / "runs" / "em_dev_cache"))
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--methods", default="auroc,stability,l1,forward")
    ap.add_argument("--poolings", default="mean,max,frac,topq")
    ap.add_argument("--organism-run", default=str(ROOT / "data" / "organism" / "run"),
                    help="an organism run whose diff latents are scored too (''  to skip)")
    ap.add_argument("--quick", action="store_true", help="no shift column, fewer rows (development)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    args.main_hook = {"minilm": "blocks.3.hook_resid_post", "smollm2": "blocks.18.hook_resid_post"}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not Path(args.data).is_file():
        print(f"bench_em_dev: the development set {args.data} is absent; nothing to measure (skipped).")
        return
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    import numpy as np
    import pandas as pd

    frame = pd.read_csv(args.data)
    data = Data((frame["aligned"] < 30).to_numpy(np.int8), frame["question_id"].str.replace("_template", "").to_numpy(),
                frame["source"].astype(str).to_numpy(), frame["answer"].astype(str).tolist())
    rows = []
    t0 = time.perf_counter()
    rows += text_rows(data, args.quick)
    for name, model, hooks, sae in model_specs(args):
        feats = capture(name, model, hooks, sae, frame, args.cache_dir)
        rows += model_rows(name, model, hooks, feats, data, args)
    print_table(rows, data, time.perf_counter() - t0)


def text_rows(data, quick):
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer

    text = np.asarray(data.text, dtype=object)

    def fit(tr, te):
        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        Xtr = vec.fit_transform(text[tr])
        Xte = vec.transform(text[te])
        C = inner_C(logistic_scores, Xtr, data.y[tr], data.qid[tr], [1.0, 10.0])
        return logistic_scores(Xtr, data.y[tr], Xte, C)

    return [("text", "-", evaluate("tfidf logistic", data, fit, not quick))]


def model_rows(name, model, hooks, feats, data, args):
    import numpy as np

    from personas.detect import DiffMeansProbe
    from personas.scoring.confounds import (
        confound_table,
        flag_confounds,
        pool_codes,
        residualize,
        response_covariates,
    )
    from personas.scoring.selection import fit_logistic, select_features

    y, q = data.y, data.qid
    rows = []
    n_tok = feats["n_tokens"]

    def length_fit(tr, te):
        sign = 1.0 if np.corrcoef(n_tok[tr], y[tr])[0, 1] >= 0 else -1.0
        return sign * n_tok[te]

    main_hook = feats.get("sae_hook") or args.main_hook.get(name)
    rows.append((name, "-", evaluate("length (tokens)", data, length_fit, not args.quick)))
    for h in hooks:
        X = feats["pooled"][h]

        def dense_fit(tr, te, X=X):
            C = inner_C(logistic_scores, X[tr], y[tr], q[tr], [0.01, 0.1, 1.0])
            return logistic_scores(X[tr], y[tr], X[te], C)

        def dm_fit(tr, te, X=X):
            return DiffMeansProbe().fit(X[tr], y[tr]).decision_function(X[te])

        shift_too = not args.quick and h == main_hook
        rows.append((name, h, evaluate("dense probe (all dims)", data, dense_fit, shift_too)))
        rows.append((name, h, evaluate("dense diff-means", data, dm_fit, shift_too)))
    if "codes" not in feats:
        return rows
    h = feats.get("sae_hook") or "sae"
    codes, offsets, tids = feats["codes"], feats["offsets"], feats["token_ids"]
    punct = punctuation_ids(model)
    cov = response_covariates(offsets, tids, punct)
    covariates = np.column_stack([cov["length"], cov["punctuation"]])
    pooled = {p: pool_codes(codes, offsets, p).tocsc() for p in args.poolings.split(",")}
    if len(pooled) > 1:
        # every (latent, pooling) pair as a column: the selection picks each latent's pooling on training questions
        import scipy.sparse

        pooled["per-latent"] = scipy.sparse.hstack(list(pooled.values()), format="csc")
    table = confound_table(codes, offsets, tids, pooled=pooled.get("mean"), punctuation_ids=punct)
    flags = flag_confounds(table)
    print(f"# {name} {h}: {int(flags.sum())} of {flags.size} latents flagged as confounds "
          f"(length/punctuation |r|>0.5 or one token >50% of mass)", file=sys.stderr)

    def sae_all_fit(tr, te):
        Xm = pooled["mean"].tocsr()
        C = inner_C(logistic_scores, Xm[tr], y[tr], q[tr], [0.1, 1.0])
        return logistic_scores(Xm[tr], y[tr], Xm[te], C)

    rows.append((name, h, evaluate("sae all latents (mean)", data, sae_all_fit, False)))
    chosen_log = {}

    def sparse_fit(method, pooling, k, control=None):
        X = pooled[pooling]

        def fit(tr, te):
            Xtr = X[tr]
            exclude = None
            if control == "conf":
                exclude = np.flatnonzero(flags)
            if control == "resid":
                keep = np.flatnonzero(np.asarray((Xtr != 0).sum(axis=0)).ravel() >= 5)
                R = residualize(X[:, keep], covariates, tr)
                sel = select_features(R[tr], y[tr], q[tr], k=k, method=method)
                Z = R[:, sel.features]
                chosen = keep[sel.features]
            else:
                sel = select_features(Xtr, y[tr], q[tr], k=k, method=method, exclude=exclude)
                Z = X[:, sel.features].toarray()
                chosen = sel.features
            chosen_log.setdefault((method, pooling, k, control), []).append(chosen)
            return fit_logistic(Z[tr], y[tr])(Z[te])

        return fit

    # every selection method on mean pooling (with the shift check); the cheap ones on every other pooling
    methods = args.methods.split(",")
    for pooling in pooled:
        for method in methods:
            if pooling != "mean" and method in ("l1", "forward"):
                continue
            label = f"sae k={args.k} {method} {pooling}"
            rows.append((name, h, evaluate(label, data, sparse_fit(method, pooling, args.k),
                                           not args.quick and pooling == "mean")))
    for control in ("conf", "resid"):
        label = f"sae k={args.k} stability mean {'-conf' if control == 'conf' else '|resid'}"
        rows.append((name, h, evaluate(label, data, sparse_fit("stability", "mean", args.k, control), False)))
    for k in (1, 3, 5, 20):
        rows.append((name, h, evaluate(f"sae k={k} stability mean", data, sparse_fit("stability", "mean", k), False)))
    if name == "smollm2" and args.organism_run and h == "blocks.18.hook_resid_post":
        rows += diff_selected_rows(name, h, pooled["mean"], data, args)
    # what the chosen latents are: confound flags of the latents chosen in most folds
    for key, lists in chosen_log.items():
        if key[0] == "stability" and key[1] == "mean" and key[2] == args.k and key[3] is None:
            ids, counts = np.unique(np.concatenate(lists), return_counts=True)
            top = ids[np.argsort(-counts)][:10]
            print(f"# {name} stability/mean k={args.k}: latents chosen most often (fits out of 8 held-out + 16 "
                  "shift, |r_len|, |r_punct|, top-token share):", file=sys.stderr)
            for j in top:
                print(f"#   latent {j}: {counts[ids == j][0]} fits, {abs(table['length_corr'][j]):.2f}, "
                      f"{abs(table['punct_corr'][j]):.2f}, {table['top_token_share'][j]:.2f}", file=sys.stderr)
    return rows


def organism_latents(run, k):
    """The ``k`` latents that rose most in an organism run's model diff (``latent_diff.csv``: significant and rising,
    by effect size): chosen by diffing the base and the narrow fine-tune, without a single em-dev label."""
    import pandas as pd

    table = pd.read_csv(Path(run) / "latent_diff.csv")
    rising = table[(table["mean_diff"] > 0) & table["significant"].astype(bool)]
    return rising.sort_values("effect_size", ascending=False)["feature"].astype(int).head(k).tolist()


def diff_selected_rows(name, h, mean_codes, data, args):
    """The latents of the organism's model diff against em-dev: the label-free selection of the persona paper.

    ``diff k=K logistic``: those K latents, weighted by a logistic fit on the training questions (labels pick the
    weights, never the latents); ``diff k=K mean``: their plain mean, no label used at all. Compare with
    ``sae k=K stability mean`` (latents chosen on em-dev's labels)."""
    import json

    import personas
    from personas.errors import SiteMismatchError
    from personas.saes import check_sae_identity
    from personas.scoring.selection import fit_logistic

    manifest = json.loads((Path(args.organism_run) / "manifest.json").read_text())
    try:
        check_sae_identity((manifest.get("latent_diff") or {}).get("sae"),
                           personas.load_sae(args.smollm2_sae, model="smollm2"), f"the run {args.organism_run}")
    except SiteMismatchError as exc:
        print(f"# diff rows skipped: {exc}", file=sys.stderr)
        return []
    y = data.y
    rows = []
    for k in sorted({1, 3, args.k}):
        chosen = organism_latents(args.organism_run, k)
        if len(chosen) < k:
            print(f"# the organism run has {len(chosen)} rising latents; k={k} skipped", file=sys.stderr)
            continue
        Z = mean_codes[:, chosen].toarray()
        print(f"# {name} {h}: organism diff latents k={k}: {chosen}", file=sys.stderr)

        def logistic_fit(tr, te, Z=Z):
            return fit_logistic(Z[tr], y[tr])(Z[te])

        def mean_fit(tr, te, Z=Z):
            scale = Z[tr].std(axis=0) + 1e-9  # standardised on the training rows only, so no latent dominates
            return (Z[te] / scale).mean(axis=1)

        rows.append((name, h, evaluate(f"diff k={k} logistic (organism)", data, logistic_fit, not args.quick)))
        rows.append((name, h, evaluate(f"diff k={k} mean, no labels", data, mean_fit, False)))
    return rows


def print_table(rows, data, seconds):
    import numpy as np

    print(f"em-dev leave-one-question-out: {len(data.y)} answers, {len(np.unique(data.qid))} questions "
          f"(+ _template variants held out with them); shift = train on one experiment group, test on the other "
          f"(source ~ /med/ vs rest), both directions averaged; {seconds:.0f} s")
    head = f"{'model':8} {'site':25} {'method':34} {'AUROC mean+-sd':>15} {'pooled [95% DeLong]':>22} {'shift':>6}"
    print(head)
    print("-" * len(head))
    for model, site, r in rows:
        auc, lo, hi = r["pooled"]
        print(f"{model:8} {site:25} {r['method']:34} {r['mean']:7.3f}+-{r['sd']:.3f} "
              f"{auc:7.3f} [{lo:.3f},{hi:.3f}] {r['shift']:6.3f}")


if __name__ == "__main__":
    main()
