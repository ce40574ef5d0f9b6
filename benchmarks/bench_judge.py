"""The offline default judge's speed and its dtype: ``benchmarks/results/bench_judge.json``.

Run from the repository root (offline, a few minutes on 2 cores)::

    HF_HUB_OFFLINE=1 python benchmarks/bench_judge.py [--n 200]

Scores the first ``--n`` answers of the judge's check sets (``data/judge/check_*.jsonl``) with the shipped judge
read at float32 (its default, the baseline), again at bfloat16 (the dtype its training set was read at; three
times faster on CPUs with bfloat16 units, several times slower on others), and with the earlier MiniLM judge; each
judge once for warm-up on a few answers. Reported: answers per second and the ratio to the float32 baseline in the
same process, the mean and largest absolute difference of each scale from the float32 scores, and the share of
answers whose EM verdict and incoherent verdict (coherent <= 50) agree with the float32 ones.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "benchmarks" / "results" / "bench_judge.json"


def main(argv: list[str] | None = None) -> int:
    from personas.judging import em_misaligned, load_judge

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="answers scored per judge")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    rows = pd.concat([pd.read_json(f, lines=True) for f in sorted((ROOT / "data" / "judge").glob("check_*.jsonl"))],
                     ignore_index=True)
    rows = rows.sample(frac=1.0, random_state=0).head(args.n)
    prompts, answers = rows["question"].tolist(), rows["answer"].tolist()
    judges = {"float32": load_judge("default", dtype="float32"), "bfloat16": load_judge("default", dtype="bfloat16"),
              "minilm-em-judge": load_judge("minilm-em-judge")}
    scores, speed = {}, {}
    for name, judge in judges.items():
        judge.score(prompts[:4], answers[:4])  # warm-up: loads the models
        started = time.perf_counter()
        scores[name] = judge.score(prompts, answers)
        speed[name] = len(answers) / (time.perf_counter() - started)
    base = scores["float32"]
    result = {"n": len(answers), "machine": platform.processor() or platform.machine(),
              "answers_per_second": {k: round(v, 2) for k, v in speed.items()},
              "speed_ratio_to_float32": {k: round(v / speed["float32"], 3) for k, v in speed.items()}}
    b = scores["bfloat16"]
    result["bfloat16_vs_float32"] = {
        **{f"{scale}_mean_abs_diff": float(np.mean(np.abs(b[scale] - base[scale]))) for scale in ("aligned", "coherent")},
        **{f"{scale}_max_abs_diff": float(np.max(np.abs(b[scale] - base[scale]))) for scale in ("aligned", "coherent")},
        "em_verdict_agreement": float((em_misaligned(b) == em_misaligned(base)).mean()),
        "incoherent_verdict_agreement": float(((b["coherent"] <= 50) == (base["coherent"] <= 50)).mean())}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
