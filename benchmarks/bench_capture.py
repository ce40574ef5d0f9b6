"""Capture throughput against a bare ``stop_at_layer`` forward and against ``run_with_cache`` on the full model.

All three run the same model over the same batches of the same tokenized responses (length-sorted, right
padded, as `personas.capture` forms them), in one process, interleaved ``--repeat`` times; the best time of each
is kept. Throughput counts input tokens (prompt + response) per second.

    python benchmarks/bench_capture.py [--model minilm] [--hook blocks.3.hook_resid_post] [--rows 706]

Prints ``capture / bare stop_at_layer forward`` (target >= 0.95), ``capture+SAE / (bare forward + sae.encode)``
(target >= 0.9), ``capture / full run_with_cache``, and the same
for `personas.cache.build_cache` (capture + writing shards) and for capture with an SAE (d_sae latents, TopK).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent


def _batches(handle, prompts, responses, config):
    import numpy as np
    import torch

    from personas.capturing import tokenize_conversations

    tokenized = tokenize_conversations(handle, prompts, responses, config)
    order = np.argsort([-len(t.input_ids) for t in tokenized], kind="stable")
    pad = handle.tokenizer.pad_token_id or 0
    out = []
    for lo in range(0, len(order), config.batch_size):
        items = [tokenized[i] for i in order[lo: lo + config.batch_size]]
        width = max(len(t.input_ids) for t in items)
        ids = torch.full((len(items), width), pad, dtype=torch.long)
        attn = torch.zeros((len(items), width), dtype=torch.long)
        types = torch.zeros_like(ids) if items[0].token_type_ids is not None else None
        for r, t in enumerate(items):
            ids[r, : len(t.input_ids)] = torch.tensor(t.input_ids)
            attn[r, : len(t.input_ids)] = 1
            if types is not None:
                types[r, : len(t.token_type_ids)] = torch.tensor(t.token_type_ids)
        out.append((ids.to(handle.device), attn.to(handle.device), None if types is None else types.to(handle.device)))
    n_tokens = sum(len(t.input_ids) for t in tokenized)
    return out, n_tokens


def _response_masks(handle, prompts, responses, config):
    """Boolean [batch, width] masks of the response tokens, batch by batch in `_batches`' order."""
    import numpy as np
    import torch

    from personas.capturing import tokenize_conversations

    tokenized = tokenize_conversations(handle, prompts, responses, config)
    order = np.argsort([-len(t.input_ids) for t in tokenized], kind="stable")
    out = []
    for lo in range(0, len(order), config.batch_size):
        items = [tokenized[i] for i in order[lo: lo + config.batch_size]]
        mask = torch.zeros((len(items), max(len(t.input_ids) for t in items)), dtype=torch.bool)
        for r, t in enumerate(items):
            mask[r, t.start + config.skip_first: t.end] = True
        out.append(mask.to(handle.device))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--hook", default="blocks.3.hook_resid_post")
    parser.add_argument("--data", default=str(ROOT / "data" / "demo_responses.jsonl"))
    parser.add_argument("--rows", type=int, default=706)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--d-sae", type=int, default=4096)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    from personas.cache.build import CacheConfig, build_cache
    from personas.capturing import capture
    from personas.config import CaptureConfig
    from personas.data.responses import load_responses
    from personas.models import load_model

    torch.manual_seed(0)
    responses = load_responses(args.data)
    responses = responses.subset(list(range(min(args.rows, len(responses)))))
    handle = load_model(args.model, device=args.device)
    config = CaptureConfig(model=args.model, hook=args.hook, batch_size=args.batch_size, device=args.device)
    batches, n_tokens = _batches(handle, responses.prompts, responses.texts, config)
    stop = handle.stop_layer([args.hook])
    model = handle.model
    sae = TopKSAE(TopKSAEConfig(d_in=handle.d_model, d_sae=args.d_sae, k=args.k,
                                metadata=SAEMetadata(hook_name=args.hook, model_name=handle.model_id)))
    sae.to(handle.device)
    tmp = Path(tempfile.mkdtemp(prefix="bench-capture-"))

    masks = _response_masks(handle, responses.prompts, responses.texts, config)

    def bare(encode: bool = False):
        """The least TransformerLens needs to read the site: run_with_cache(names_filter, stop_at_layer); with
        ``encode``, then `sae.encode` of the response tokens (what capture + SAE cannot beat)."""
        with torch.no_grad():
            for (ids, attn, types), mask in zip(batches, masks, strict=True):
                kw = {"attention_mask": attn, "names_filter": [args.hook]}
                if types is not None:
                    kw["token_type_ids"] = types
                if stop is not None:
                    kw["stop_at_layer"] = stop
                _, c = model.run_with_cache(ids, **kw)
                if encode:
                    sae.encode(c[args.hook][mask])
                del c

    def bare_encode():
        bare(encode=True)

    def full_cache():
        with torch.no_grad():
            for ids, attn, types in batches:
                kw = {"attention_mask": attn}
                if types is not None:
                    kw["token_type_ids"] = types
                _, c = model.run_with_cache(ids, **kw)
                del c

    def run_capture():
        capture(handle, responses.prompts, responses.texts, hooks=[args.hook], config=config, progress=False)

    def run_capture_sae():
        capture(handle, responses.prompts, responses.texts, hooks=[args.hook], config=config, sae=sae,
                keep_tokens=True, progress=False)

    def run_capture_sae_no_fit():
        capture(handle, responses.prompts, responses.texts, hooks=[args.hook], config=config, sae=sae,
                keep_tokens=True, progress=False, sae_fit_tokens=0)

    def run_cache():
        out = tmp / "cache"
        shutil.rmtree(out, ignore_errors=True)
        build_cache(responses, out, capture=config, hooks=[args.hook], model=handle, sae="none",
                    cache=CacheConfig(shard_size=256), progress=False)

    def run_cache_sae():
        out = tmp / "cache-sae"
        shutil.rmtree(out, ignore_errors=True)
        build_cache(responses, out, capture=config, hooks=[args.hook], model=handle, sae=sae,
                    cache=CacheConfig(shard_size=256), progress=False)

    jobs = {"bare stop_at_layer forward": bare, "bare forward + sae.encode": bare_encode,
            "full run_with_cache": full_cache, "capture": run_capture,
            "build_cache": run_cache, "capture + SAE (tokens kept)": run_capture_sae,
            "capture + SAE, no fit stats": run_capture_sae_no_fit,
            "build_cache + SAE": run_cache_sae}
    best = {name: float("inf") for name in jobs}
    bare()  # warm-up
    for _ in range(args.repeat):
        for name, fn in jobs.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    shutil.rmtree(tmp, ignore_errors=True)

    print(f"model {handle.model_id} | hook {args.hook} (stop_at_layer={stop}) | {len(responses)} responses, "
          f"{n_tokens} tokens, batch {args.batch_size} | torch threads {torch.get_num_threads()} | device "
          f"{handle.device} | SAE TopK {args.d_sae} k={args.k}")
    for name, seconds in best.items():
        print(f"  {name:30s} {seconds:7.2f} s  {n_tokens / seconds:9.0f} tokens/s")
    b, f = best["bare stop_at_layer forward"], best["full run_with_cache"]
    be = best["bare forward + sae.encode"]
    print(f"ratio capture / bare stop_at_layer forward:     {b / best['capture']:.3f}  (target >= 0.95)")
    print(f"ratio build_cache / bare stop_at_layer forward: {b / best['build_cache']:.3f}")
    print(f"ratio capture / full run_with_cache:            {f / best['capture']:.3f}")
    print(f"ratio build_cache / full run_with_cache:        {f / best['build_cache']:.3f}")
    print(f"ratio capture+SAE / bare forward:               {b / best['capture + SAE (tokens kept)']:.3f}")
    print(f"ratio capture+SAE / (bare forward + encode):    {be / best['capture + SAE (tokens kept)']:.3f}  "
          "(target >= 0.9)")
    fit, no_fit = best["capture + SAE (tokens kept)"], best["capture + SAE, no fit stats"]
    print(f"SAE-fit statistics' share of capture+SAE time:  {(fit - no_fit) / fit:.3f}  (target <= 0.05)")
    print(f"ratio build_cache+SAE / bare forward:           {b / best['build_cache + SAE']:.3f}")


if __name__ == "__main__":
    main()
