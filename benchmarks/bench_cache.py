"""Cache size, `rank_cache` memory, and the cache job on Ray against the local engine.

1. Bytes per token of the sparse per-token SAE-code cache against dense float32 codes of the same SAE
   (target <= 2% for a TopK SAE with k = 64 of 24,576 latents), on real MiniLM activations.
2. Peak memory of `rank_cache` on a cache of N responses and of 4N responses (target: flat), for the exact
   streaming ranker in memory, the exact ranker spilled to disk (``spill_budget``) and the histogram ranker
   (``exact=False``), on SAE codes and on raw activations. Each measurement runs in a fresh subprocess; the peak
   is `tracemalloc`'s (numpy and Python allocations made while ranking), and the process's peak RSS above its RSS
   at the start is printed beside it.
3. The cache job (`build_cache`, MiniLM, no SAE) on a local Ray with 2 workers against the local engine, on the
   same rows: wall time of each, and the ratio local / Ray (above 1: Ray is faster). The Ray time includes
   starting Ray and loading one model replica per worker, as a user would wait for it; the shards are checked to
   be byte-identical. On a 2-core machine the two workers share the cores with the driver.

    python benchmarks/bench_cache.py [--only size,memory,ray] [--rows 400] [--d-sae 24576] [--k 64]
        [--spill-budget 65536] [--ray-rows 192] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
HOOK = "blocks.3.hook_resid_post"


def _topk_sae(d_in: int, d_sae: int, k: int, model_id: str):
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(0)
    return TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, metadata=SAEMetadata(hook_name=HOOK, model_name=model_id)))


def _measure(cache: str, exact: bool, use: str, spill: int | None = None) -> dict:
    code = f"""
import json, tracemalloc, time
from personas.cache import rank_cache
import personas.scoring, scipy.sparse, pandas, pyarrow.parquet, safetensors  # imports outside the measurement
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
rss0 = status("VmRSS:")
tracemalloc.start()
t0 = time.perf_counter()
r = rank_cache({cache!r}, exact={exact}, use={use!r}, spill_budget={spill!r})
sec = time.perf_counter() - t0
peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({{"peak": peak, "rss": status("VmHWM:") - rss0,
                   "seconds": sec, "top": int(r["feature"].iloc[0])}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_size(args, handle, base, config, tmp: Path) -> None:
    from safetensors import safe_open

    from personas.cache.build import CacheConfig, build_cache

    sae = _topk_sae(handle.d_model, args.d_sae, args.k, handle.model_id)
    small = base.subset(list(range(min(120, len(base)))))
    cache = build_cache(small, tmp / "size", capture=config, hooks=[HOOK], model=handle, sae=sae,
                        cache=CacheConfig(shard_size=64), progress=False)
    token_bytes = 0
    n_token_rows = 0
    for _, entry in cache.shard_entries():
        with safe_open(str(cache.path / entry["file"]), framework="np") as fh:
            for key in fh.keys():
                if key.startswith("tokens."):
                    token_bytes += fh.get_tensor(key).nbytes
            n_token_rows += len(fh.get_tensor("tokens.token_ids"))
    shard_bytes = sum(e["bytes"] for _, e in cache.shard_entries())
    dense = args.d_sae * 4
    print(f"[size] MiniLM {HOOK}, TopK SAE k={args.k} of {args.d_sae}: {n_token_rows} response tokens")
    print(f"  sparse per-token codes: {token_bytes / n_token_rows:.1f} bytes/token "
          f"(indices int32 + values float32 + indptr + offsets + token id)")
    print(f"  whole shards (pooled activations and codes too): {shard_bytes / n_token_rows:.1f} bytes/token")
    print(f"  dense float32 codes: {dense} bytes/token")
    print(f"ratio sparse token codes / dense float32: {token_bytes / n_token_rows / dense:.4f}  (target <= 0.02)")


def bench_memory(args, handle, base, config, tmp: Path) -> None:
    import pandas as pd

    from personas.cache.build import CacheConfig, build_cache

    rows = min(args.rows, len(base))
    one = base.frame.iloc[:rows]
    four = pd.concat([one.assign(id=one["id"].astype(str) + f"-{i}") for i in range(4)], ignore_index=True)
    rank_sae = _topk_sae(handle.d_model, args.rank_d_sae, args.rank_k, handle.model_id)
    caches = {}
    for name, frame in (("1x", one), ("4x", four)):
        caches[name] = build_cache(frame, tmp / name, capture=config, hooks=[HOOK], model=handle, sae=rank_sae,
                                   cache=CacheConfig(shard_size=128, tokens=False), progress=False)
    print(f"[memory] rank_cache on {rows} and {4 * rows} responses (TopK SAE {args.rank_d_sae}, k={args.rank_k}; "
          f"activations {handle.d_model}-d); shards of 128 responses")
    for use in ("sae", "activations"):
        for mode, exact, spill in (("exact", True, None), ("spill", True, args.spill_budget), ("binned", False, None)):
            m1 = _measure(str(caches["1x"].path), exact, use, spill)
            m4 = _measure(str(caches["4x"].path), exact, use, spill)
            label = f"{use:11s} {mode:6s}"
            print(f"  {label} peak 1x {m1['peak'] / 2**20:7.1f} MiB  4x {m4['peak'] / 2**20:7.1f} MiB  "
                  f"ratio 4x/1x {m4['peak'] / m1['peak']:.2f} | peak RSS above start 1x {m1['rss'] / 2**20:6.1f} MiB "
                  f"4x {m4['rss'] / 2**20:6.1f} MiB | {m1['seconds']:.1f}s / {m4['seconds']:.1f}s")
    print("ratio target: flat (4x/1x close to 1) for the binned and the spilled exact ranker (--spill-budget "
          f"{args.spill_budget} values); the in-memory exact ranker keeps every non-zero value")


def bench_ray(args, base, config, tmp: Path) -> None:
    import time

    from personas.cache.build import CacheConfig, build_cache

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    rows = base.subset(list(range(min(args.ray_rows, len(base)))))
    shard_size = max(1, len(rows) // 8)
    temp = f"/tmp/bench-ray-{os.getpid()}"  # Ray's socket paths must stay short
    seconds = {}
    caches = {}
    for engine in ("local", "ray"):
        options = {"init_kwargs": {"num_cpus": 2, "_temp_dir": temp}} if engine == "ray" else None
        t0 = time.perf_counter()
        caches[engine] = build_cache(rows, tmp / f"engine-{engine}", capture=config, hooks=[HOOK], sae="none",
                                     cache=CacheConfig(shard_size=shard_size, engine=engine, num_workers=2),
                                     engine_options=options, progress=False)
        seconds[engine] = time.perf_counter() - t0
    shutil.rmtree(temp, ignore_errors=True)
    same = [e["sha256"] for _, e in caches["local"].shard_entries()] == \
        [e["sha256"] for _, e in caches["ray"].shard_entries()]
    tokens = caches["local"].manifest["stats"]["n_response_tokens"]
    print(f"[ray] cache job, MiniLM {HOOK}, {len(rows)} responses ({tokens} response tokens) in shards of "
          f"{shard_size}; {os.cpu_count()} CPUs")
    print(f"  local engine (1 replica):            {seconds['local']:6.1f} s")
    print(f"  local Ray, 2 workers (2 replicas):   {seconds['ray']:6.1f} s  (Ray start and model loads included)")
    print(f"ratio local / ray (speed-up of Ray with 2 workers): {seconds['local'] / seconds['ray']:.2f} | shards "
          f"byte-identical: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "data" / "demo_responses.jsonl"))
    parser.add_argument("--only", default="size,memory,ray", help="comma-separated sections: size, memory, ray")
    parser.add_argument("--rows", type=int, default=400, help="N: rows of the 1x cache (the 4x cache has 4N)")
    parser.add_argument("--d-sae", type=int, default=24576)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--rank-d-sae", type=int, default=4096, help="SAE width of the memory benchmark")
    parser.add_argument("--rank-k", type=int, default=32)
    parser.add_argument("--spill-budget", type=int, default=1 << 16,
                        help="non-zero values the spilled exact ranker holds in memory")
    parser.add_argument("--ray-rows", type=int, default=192, help="responses of the Ray benchmark")
    parser.add_argument("--device", default="cpu", help="capture device: cpu, cuda, ...")
    parser.add_argument("--tmp", default=None)
    args = parser.parse_args()
    sections = {x.strip() for x in args.only.split(",") if x.strip()}
    unknown = sections - {"size", "memory", "ray"}
    if unknown:
        parser.error(f"--only {sorted(unknown)}; expected size, memory and/or ray")

    from personas.config import CaptureConfig
    from personas.data.responses import load_responses
    from personas.models import load_model

    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="bench-cache-"))
    base = load_responses(args.data)
    config = CaptureConfig(model="minilm", hook=HOOK, batch_size=16, device=args.device)
    if sections & {"size", "memory"}:
        handle = load_model("minilm", device=args.device)
        if "size" in sections:
            bench_size(args, handle, base, config, tmp)
        if "memory" in sections:
            bench_memory(args, handle, base, config, tmp)
    if "ray" in sections:
        bench_ray(args, base, config, tmp)


if __name__ == "__main__":
    main()
