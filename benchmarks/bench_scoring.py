"""Benchmark `personas.scoring.rank_features` against a per-feature scikit-learn / scipy loop.

Data: N = 20,000 responses x F = 24,576 SAE features, scipy CSR at 1% density (float32, non-negative like
ReLU/TopK SAE activations), with a few planted separating features. Reported in one run:

- wall time of `rank_features` for the full metric set (AUROC + DeLong CI, mean difference, Cohen's d, firing
  rates, log odds, Mann-Whitney and Welch p-values, BH q-values), median of ``--repeats`` runs;
- wall time of the grouped (stratified) variant with ``--groups`` random questions, one run;
- wall time of a per-feature ``sklearn.metrics.roc_auc_score`` loop, timed on ``--loop-features`` columns and
  extrapolated linearly to all F columns (the extrapolation is said so in the output), and the ratio;
- peak traced Python memory of one `rank_features` call (tracemalloc: numpy buffers included);
- the largest deviation from scikit-learn's AUROC and the largest relative deviation from
  ``scipy.stats.mannwhitneyu`` p-values on the timed subset.

Run: ``python benchmarks/bench_scoring.py`` (``--threads 2`` pins BLAS/OpenMP threads; numpy sorting is
single-threaded anyway). Targets: >= 100x faster than the loop, < 1 s, AUROC equal to 1e-9, p to 1e-6 relative.
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc


def _make_data(n: int, f: int, density: float, seed: int):
    import numpy as np
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    x = sp.random(n, f, density=density, format="csr", dtype=np.float32, random_state=rng)
    x.data = rng.exponential(1.0, size=x.nnz).astype(np.float32)
    # plant 10 features that fire more often and more strongly on misaligned responses
    planted = rng.choice(f, size=10, replace=False)
    lil = x.tolil()
    for j in planted:
        rows = np.flatnonzero(y & (rng.random(n) < 0.05))
        lil[rows, j] = rng.exponential(2.0, size=rows.size).astype(np.float32) + 0.5
    return lil.tocsr(), y.astype(np.int8), planted


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="responses")
    parser.add_argument("--f", type=int, default=24_576, help="features")
    parser.add_argument("--density", type=float, default=0.01, help="fraction of non-zero activations")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs of rank_features (median reported)"
    )
    parser.add_argument("--loop-features", type=int, default=200, help="columns timed in the sklearn loop")
    parser.add_argument(
        "--threads", type=int, default=2, help="BLAS/OpenMP threads (set before numpy import)"
    )
    parser.add_argument("--groups", type=int, default=100, help="questions for the grouped timing")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))

    import numpy as np
    from scipy.stats import mannwhitneyu
    from sklearn.metrics import roc_auc_score

    from personas.scoring.ranking import rank_features

    x, y, planted = _make_data(args.n, args.f, args.density, args.seed)
    print(
        f"data: {args.n} x {args.f} CSR float32, nnz={x.nnz} ({x.nnz / (args.n * args.f):.2%}), "
        f"{int(y.sum())} misaligned / {int((1 - y).sum())} aligned; cores available: {os.cpu_count()}, "
        f"threads: {args.threads}"
    )

    rank_features(x[:, :256], y)  # warm-up (imports, allocator)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result = rank_features(x, y)
        times.append(time.perf_counter() - t0)
    t_rank = float(np.median(times))

    groups = np.random.default_rng(args.seed + 2).integers(0, args.groups, args.n)
    t0 = time.perf_counter()
    rank_features(x, y, groups)
    t_grouped = time.perf_counter() - t0

    tracemalloc.start()
    rank_features(x, y)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    rng = np.random.default_rng(args.seed + 1)
    cols = np.sort(rng.choice(args.f, size=min(args.loop_features, args.f), replace=False))
    csc = x.tocsc()
    dense_cols = [np.asarray(csc[:, j].todense(), dtype=np.float64).ravel() for j in cols]
    yb = y.astype(bool)
    t0 = time.perf_counter()
    auc_ref = [roc_auc_score(y, c) for c in dense_cols]
    t_loop_subset = time.perf_counter() - t0
    t_loop = t_loop_subset * args.f / len(cols)
    p_ref = np.array([mannwhitneyu(c[yb], c[~yb]).pvalue for c in dense_cols])

    by_feature = result.set_index("feature").loc[cols]
    auc_err = float(np.max(np.abs(by_feature["auroc"].to_numpy() - np.asarray(auc_ref))))
    p_ours = by_feature["p_value"].to_numpy()
    p_ref = np.nan_to_num(p_ref, nan=1.0)
    p_rel = float(np.max(np.abs(p_ours - p_ref) / np.maximum(p_ref, 1e-300)))
    top10 = set(result["feature"].head(10).tolist())

    print(
        f"rank_features (full metric set): {t_rank:.3f} s  (median of {args.repeats}: "
        f"{', '.join(f'{t:.3f}' for t in times)})"
    )
    print(
        f"rank_features with groups ({args.groups} questions, van Elteren + group AUROC): {t_grouped:.3f} s"
    )
    print(
        f"sklearn roc_auc_score loop: {t_loop_subset:.3f} s for {len(cols)} features, "
        f"EXTRAPOLATED linearly to {args.f} features: {t_loop:.1f} s"
    )
    print(f"speed-up vs loop: {t_loop / t_rank:.0f}x (target >= 100x); under 1 s: {t_rank < 1.0}")
    print(
        f"peak traced memory of one rank_features call: {peak / 2**20:.0f} MiB "
        f"(input CSR: {(x.data.nbytes + x.indices.nbytes + x.indptr.nbytes) / 2**20:.0f} MiB)"
    )
    print(f"max |AUROC - sklearn| on the subset: {auc_err:.2e} (target 1e-9)")
    print(f"max relative |p - scipy mannwhitneyu| on the subset: {p_rel:.2e} (target 1e-6)")
    print(
        f"planted features in the top 10: {len(top10 & set(planted.tolist()))} of {len(planted)}; "
        f"significant at q < 0.05: {int(result['significant'].sum())}"
    )


if __name__ == "__main__":
    main()
