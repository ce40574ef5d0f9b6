"""Does SmolLM2 at bfloat16 rank the same latents as at float32, and how much faster is it, at 1 and 2 threads?

The decision this answers (issue 23): bfloat16 becomes the CPU default only if it gives the same top-20 latents and
AUROCs within 0.005 of float32 on the demo set and on em-dev, and is faster. For each data set the default SAE ranks
the answers with `personas.rank` at both dtypes (the model loaded once per dtype, the load not timed); the capture
is timed at each thread count asked for (best of ``--repeat``), interleaved so that a busy neighbour hurts both
dtypes alike.

Printed first: torch's CPU capability and one SmolLM2-sized linear layer at both dtypes (a CPU without bfloat16
units, e.g. AVX2 only, runs bfloat16 several times slower than float32, and the rest is moot there). Printed per
data set: capture seconds and tokens/s per (dtype, threads), speed ratios against float32 at the same
thread count, the overlap of the two top-20 lists (as sets and position by position), the largest AUROC difference
among float32's top 20 and among every latent active on >= 1% of answers, and the Spearman correlation of the two
AUROC columns. em-dev (``../shared/data/em-dev/em_dev.csv.gz``, not in the repository) is skipped when absent.

    python benchmarks/bench_dtype.py [--data demo,em-dev] [--threads 1,2] [--repeat 1] [--rows N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
_EM_DEV = [base / "shared" / "data" / "em-dev" / "em_dev.csv.gz" for base in (ROOT.parent, ROOT.parent.parent)]
EM_DEV = os.environ.get("PERSONAS_EM_DEV") or next((p for p in _EM_DEV if p.is_file()), _EM_DEV[0])
DTYPES = ("float32", "bfloat16")
TOP = 20


def load_data(name: str, rows: int | None):
    """(responses frame or path, max_length) of a named data set, or None when it is not on this machine."""
    import pandas as pd

    if name == "demo":
        frame = pd.read_json(ROOT / "data" / "demo_responses.jsonl", lines=True)
        max_length = 512
    elif name == "em-dev":
        if not Path(EM_DEV).is_file():
            print(f"# em-dev: {EM_DEV} is absent; skipped", file=sys.stderr)
            return None
        frame = pd.read_csv(EM_DEV)
        frame["question_id"] = frame["question_id"].str.replace("_template", "")  # a question and its variant
        max_length = 256
    else:
        raise SystemExit(f"unknown data set {name!r}; expected demo or em-dev")
    if rows:
        frame = frame.sample(n=min(rows, len(frame)), random_state=0).reset_index(drop=True)
    return frame, max_length


def compare(tables: dict[str, object]) -> dict[str, float]:
    """Top-20 agreement and AUROC differences of the bfloat16 ranking against the float32 one."""
    import numpy as np
    from scipy.stats import spearmanr

    f32, b16 = (tables[d].set_index("feature") for d in DTYPES)
    top32 = list(tables["float32"]["feature"].head(TOP))
    top16 = list(tables["bfloat16"]["feature"].head(TOP))
    common = f32.index.intersection(b16.index)
    active = common[(f32.loc[common, "frac_active"] >= 0.01).to_numpy()] if "frac_active" in f32 else common
    diff_all = np.abs(f32.loc[active, "auroc"].to_numpy() - b16.loc[active, "auroc"].to_numpy())
    diff_top = np.abs(f32.loc[top32, "auroc"].to_numpy() - b16.reindex(top32)["auroc"].to_numpy())
    return {
        "top20_same_set": len(set(top32) & set(top16)),
        "top20_same_position": int(sum(a == b for a, b in zip(top32, top16, strict=True))),
        "max_abs_auroc_diff_top20": float(np.nanmax(diff_top)),
        "max_abs_auroc_diff_active": float(diff_all.max()) if diff_all.size else float("nan"),
        "n_active": int(len(active)),
        "auroc_spearman": float(spearmanr(f32.loc[active, "auroc"], b16.loc[active, "auroc"]).statistic),
    }


def matmul_ratio(threads: int, repeat: int = 5) -> dict[str, float]:
    """Seconds of one SmolLM2-sized linear layer (576 -> 1536, 2,048 tokens) at float32 and bfloat16 (median of
    ``repeat``): whether this CPU has native bfloat16 units (AMX, AVX-512 BF16) shows here first."""
    import statistics

    import torch

    torch.set_num_threads(threads)
    out = {}
    for name in DTYPES:
        dtype = getattr(torch, name)
        layer, x = torch.nn.Linear(576, 1536).to(dtype), torch.randn(2048, 576).to(dtype)
        times = []
        with torch.no_grad():
            layer(x)
            for _ in range(repeat):
                t0 = time.perf_counter()
                layer(x)
                times.append(time.perf_counter() - t0)
        out[f"linear_s_{name}"] = statistics.median(times)
    out["linear_bf16_speedup"] = out["linear_s_float32"] / out["linear_s_bfloat16"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="demo,em-dev")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--dtypes", default=",".join(DTYPES), help="float32 alone measures threads only")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--rows", type=int, default=None, help="a seeded sample of this many answers per data set")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")

    import torch

    import personas
    from personas.config import CaptureConfig
    from personas.models import load_model

    threads = [int(t) for t in args.threads.split(",")]
    dtypes = [d for d in DTYPES if d in args.dtypes.split(",")]
    results = {"cpu": {"capability": torch.backends.cpu.get_cpu_capability(), **matmul_ratio(max(threads))}}
    print(f"# CPU: {results['cpu']}", file=sys.stderr)
    handles = {d: load_model("smollm2", dtype=d) for d in dtypes}
    for name in args.data.split(","):
        loaded = load_data(name, args.rows)
        if loaded is None:
            continue
        frame, max_length = loaded
        times: dict[tuple[str, int], float] = {}
        tables, tokens = {}, 0
        for _ in range(args.repeat):
            for n_threads in threads:
                for dtype in dtypes:
                    torch.set_num_threads(n_threads)
                    cfg = CaptureConfig(model="smollm2", dtype=dtype, max_length=max_length)
                    t0 = time.perf_counter()
                    result = personas.rank(frame, capture=cfg, model=handles[dtype], progress=False)
                    elapsed = time.perf_counter() - t0
                    times[dtype, n_threads] = min(elapsed, times.get((dtype, n_threads), float("inf")))
                    tables[dtype] = result.ranking
                    tokens = int(result.capture.stats["n_response_tokens"])
                    print(f"# {name} {dtype} threads={n_threads}: {elapsed:.1f} s", file=sys.stderr)
        row = {"rows": len(frame), "response_tokens": tokens, **(compare(tables) if len(tables) == 2 else {})}
        for (dtype, n_threads), seconds in sorted(times.items()):
            row[f"seconds_{dtype}_t{n_threads}"] = round(seconds, 2)
        for n_threads in threads if len(dtypes) == 2 else []:
            row[f"speedup_bf16_t{n_threads}"] = round(times["float32", n_threads] / times["bfloat16", n_threads], 2)
        if len(threads) > 1:
            lo, hi = min(threads), max(threads)
            for dtype in dtypes:
                row[f"speedup_{dtype}_t{hi}_vs_t{lo}"] = round(times[dtype, lo] / times[dtype, hi], 2)
        results[name] = row
        print(f"\n## {name}")
        for key, value in row.items():
            print(f"{key:32s} {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
