"""Benchmark `personas.scoring.rank_features` against references, as ratios measured in one process.

For each case (sparse CSR float32 activations, non-negative like ReLU/TopK SAE codes, a few planted features):

- ``rank_features`` (full metric set: AUROC + DeLong CI, effect sizes, firing rates, Mann-Whitney, Welch, BH)
  against a per-feature scikit-learn ``roc_auc_score`` loop (timed on ``--loop-features`` sampled columns and
  extrapolated linearly to all columns; the output says so);
- against a *plain vectorised reference*: AUROC and the tie-corrected Mann-Whitney p-value of every column from
  one ``np.lexsort`` of the non-zeros by (column, value) and average ranks (the textbook vectorisation);
- the grouped path (``groups=``: van Elteren + within-question AUROC) against a *plain vectorised grouped
  reference*: the same reference run on every question's rows (a loop over questions, vectorised over columns),
  plus the global statistics once, combined into the van Elteren test;
- time and peak traced memory (tracemalloc: numpy buffers included) of each call.

Cases: 20,000 x 24,576 at 1% (the base case) and the scale cases 20,000 x 131,072 at 0.5% (plain and with 40
questions) and 100,000 x 24,576 at 1%. ``--device cuda`` moves the input to the GPU as a torch tensor (the
scoring arithmetic runs in numpy; the column blocks are copied to the host); cpu is the default.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_scoring.py`` (``--quick`` runs the base case only).
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc
from collections.abc import Callable
from typing import Any


def _make_data(n: int, f: int, density: float, seed: int):
    import numpy as np
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    x = sp.random(n, f, density=density, format="csr", dtype=np.float32, random_state=rng)
    x.data = rng.exponential(1.0, size=x.nnz).astype(np.float32)
    x = x.tocsc()
    for j in rng.choice(f, size=10, replace=False):  # planted: larger values on misaligned rows
        a, b = x.indptr[j], x.indptr[j + 1]
        x.data[a:b] += 2.0 * y[x.indices[a:b]]
    return x.tocsr(), y.astype(np.int8)


def reference_mann_whitney(x: Any, y: Any) -> tuple[Any, Any, Any]:
    """Plain vectorised AUROC, U and tie term of every column (non-negative sparse input, zeros as one tie block)."""
    import numpy as np

    csc = x.tocsc()
    n, f = csc.shape
    n1 = float(y.sum())
    cols = np.repeat(np.arange(f), np.diff(csc.indptr))
    order = np.lexsort((csc.data, cols))
    v, c, lab = csc.data[order], cols[order], y[csc.indices[order]].astype(np.float64)
    new = np.r_[True, (v[1:] != v[:-1]) | (c[1:] != c[:-1])]
    run = np.cumsum(new) - 1
    start = np.flatnonzero(new)
    size = np.diff(np.r_[start, v.size]).astype(np.float64)
    nnz = np.diff(csc.indptr).astype(np.float64)
    zeros = n - nnz
    first = csc.indptr[:-1]
    pos_in_col = np.arange(v.size) - first[c]
    avg_rank = zeros[c] + (pos_in_col - (np.arange(v.size) - start[run])) + (size[run] + 1) / 2.0
    zpos = n1 - np.bincount(c, lab, minlength=f)
    r1 = zpos * (zeros + 1) / 2.0 + np.bincount(c, lab * avg_rank, minlength=f)
    u = r1 - n1 * (n1 + 1) / 2.0
    t = np.bincount(c[start], size**3 - size, minlength=f) + zeros**3 - zeros
    return u, t, n1 * (n - n1)


def reference_plain(x: Any, y: Any) -> Any:
    """AUROC and two-sided Mann-Whitney p-values (tie-corrected, continuity-corrected) of every column."""
    import numpy as np
    from scipy import special

    n = x.shape[0]
    u, t, pairs = reference_mann_whitney(x, y)
    s = np.sqrt(pairs / 12.0 * ((n + 1) - t / (n * (n - 1.0))))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (np.maximum(u, pairs - u) - pairs / 2 - 0.5) / s
    return u / pairs, np.where(s > 0, np.minimum(2 * special.ndtr(-z), 1.0), 1.0)


def reference_grouped(x: Any, y: Any, groups: Any) -> Any:
    """The plain reference per question, combined into van Elteren p-values and the within-question AUROC."""
    import numpy as np
    from scipy import special

    auc, _ = reference_plain(x, y)  # the global statistics are part of the output too
    csr = x.tocsr()
    num = var = gu = gp = 0.0
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        yg = y[rows]
        n1, ng = float(yg.sum()), float(rows.size)
        if n1 == 0 or n1 == ng:
            continue
        u, t, pairs = reference_mann_whitney(csr[rows], yg)
        w = 1.0 / (ng + 1.0)
        num = num + (u - pairs / 2.0) * w
        var = var + pairs / 12.0 * ((ng + 1.0) - t / (ng * (ng - 1.0))) * w * w
        gu, gp = gu + u, gp + pairs
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(var > 0, np.minimum(2 * special.ndtr(-np.abs(num / np.sqrt(var))), 1.0), 1.0)
    return auc, gu / gp, p


def _measure(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(seconds, peak traced MiB, result) of one call."""
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak, out


def run_case(name: str, n: int, f: int, density: float, n_groups: int, args: argparse.Namespace) -> list[str]:
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from personas.scoring import rank_features

    x, y = _make_data(n, f, density, args.seed)
    inp: Any = x
    if args.device != "cpu":
        import torch

        inp = torch.sparse_csr_tensor(x.indptr, x.indices, x.data, size=x.shape, device=args.device)
    mib = (x.data.nbytes + x.indices.nbytes + x.indptr.nbytes) / 2**20
    lines = [f"{name}: {n:,} x {f:,} CSR float32, nnz {x.nnz:,} ({x.nnz / (n * f):.2%}, input {mib:.0f} MiB)"]
    groups = np.random.default_rng(args.seed + 2).integers(0, n_groups, n) if n_groups else None
    rank_features(x[:, :256], y, None if groups is None else groups)  # warm-up
    if groups is None:
        t_ours, m_ours, ours = _measure(lambda: rank_features(inp, y))
        t_ref, m_ref, (auc, p) = _measure(lambda: reference_plain(x, y))
        by = ours.sort_values("feature")
        err = max(np.abs(by["auroc"].to_numpy() - auc).max(), np.abs(by["p_value"].to_numpy() - p).max())
        lines.append(f"  rank_features {t_ours:7.2f} s {m_ours:6.0f} MiB | plain vectorised reference "
                     f"{t_ref:7.2f} s {m_ref:6.0f} MiB | ratio {t_ref / t_ours:5.2f}x faster (max |diff| {err:.1e})")
        if args.loop_features:
            cols = np.sort(np.random.default_rng(args.seed + 1).choice(f, min(args.loop_features, f), replace=False))
            csc = x.tocsc()
            dense = [csc[:, j].toarray().ravel() for j in cols]
            t0 = time.perf_counter()
            for c in dense:
                roc_auc_score(y, c)
            t_loop = (time.perf_counter() - t0) * f / cols.size
            lines.append(f"  sklearn roc_auc_score loop: {t_loop:7.1f} s EXTRAPOLATED from {cols.size} columns | "
                         f"ratio {t_loop / t_ours:5.0f}x faster")
    else:
        t_ours, m_ours, ours = _measure(lambda: rank_features(inp, y, groups))
        t_ref, m_ref, (auc, gauc, p) = _measure(lambda: reference_grouped(x, y, groups))
        by = ours.sort_values("feature")
        err = max(np.abs(by["group_auroc"].to_numpy() - gauc).max(), np.abs(by["p_value"].to_numpy() - p).max())
        lines.append(f"  grouped ({n_groups} questions) rank_features {t_ours:7.2f} s {m_ours:6.0f} MiB | plain "
                     f"vectorised grouped reference {t_ref:7.2f} s {m_ref:6.0f} MiB | ratio {t_ref / t_ours:5.2f}x "
                     f"faster (max |diff| {err:.1e})")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: where the input tensor lives")
    parser.add_argument("--loop-features", type=int, default=100, help="columns timed in the sklearn loop")
    parser.add_argument("--quick", action="store_true", help="the 20,000 x 24,576 case only")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cases = [
        ("base", 20_000, 24_576, 0.01, 0),
        ("base, grouped", 20_000, 24_576, 0.01, 40),
    ]
    if not args.quick:
        cases += [
            ("scale: 131k latents", 20_000, 131_072, 0.005, 0),
            ("scale: 131k latents, grouped", 20_000, 131_072, 0.005, 40),
            ("scale: 100k responses", 100_000, 24_576, 0.01, 0),
        ]
    print(f"cores: {os.cpu_count()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"device: {args.device}")
    for case in cases:
        for line in run_case(*case, args):
            print(line, flush=True)


if __name__ == "__main__":
    main()
