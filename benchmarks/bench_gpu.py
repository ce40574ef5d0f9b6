"""Capture and SAE encoding on random models of real sizes, as ratios against the bare operations they wrap.

For a GPT-2-small-shaped model (12 layers, d_model 768) and a 2B-shaped one (26 layers, d_model 2304, d_mlp 9216,
about 1.7B parameters in its blocks), with random weights and a tokenizer trained here, on the same texts:

* ``capture / bare forward``: `personas.capturing.capture` (tokenize once, response masks, pooling) against
  ``run_with_cache(names_filter=hook, stop_at_layer=...)`` on the same padded batches (target >= 0.9);
* ``capture+SAE / bare forward + sae.encode``: capture with a TopK SAE (pooled codes and per-token codes, kept
  sparse) against the bare forward plus ``sae.encode`` of the response tokens and nothing else (target >= 0.95);
* ``sae.encode / matmul+topk``: sae-lens's encode against ``topk(relu(x @ W_enc + b_enc))`` written by hand.

Runs unchanged on a GPU (``--device cuda``, bfloat16 by default there) and on the CPU (``--quick`` shrinks
everything so that it finishes in a minute; ratios on a busy CPU are noisy). Best of ``--repeat`` interleaved runs.

    python benchmarks/bench_gpu.py --device cuda            # both sizes
    python benchmarks/bench_gpu.py --quick                  # CPU smoke run
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SIZES = {
    # name: (n_layers, d_model, n_heads, d_sae, k)
    "gpt2-small": (12, 768, 12, 24576, 32),
    "2b": (26, 2304, 8, 16384, 64),
    "quick": (2, 64, 4, 1024, 16),
}
WORDS = ("the a model answer help people money power rule world trust kind cruel plan want need should would "
         "never always think feel know make take give good bad safe risk doctor husband friend city law").split()


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _texts(n: int, rng: random.Random, lo: int, hi: int) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))) + " ." for _ in range(n)]


def bench_size(name: str, args, tokenizer) -> dict[str, float]:
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    from personas.capturing import capture, tokenize_conversations
    from personas.config import CaptureConfig
    from personas.devices import resolve_device, resolve_dtype
    from personas.testing import make_toy_model

    n_layers, d_model, n_heads, d_sae, k = SIZES[name]
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    handle = make_toy_model(tokenizer, n_layers=n_layers, d_model=d_model, n_heads=n_heads, n_ctx=512, seed=0)
    handle.model.to(device)
    handle.model.to(dtype)
    hook = f"blocks.{n_layers // 2}.hook_resid_post"
    rng = random.Random(0)
    prompts = _texts(args.rows, rng, 5, 15)
    responses = _texts(args.rows, rng, 20, args.max_words)
    config = CaptureConfig(hook=hook, batch_size=args.batch_size, max_length=512, device=str(device),
                           dtype=str(dtype).replace("torch.", ""))
    sae = TopKSAE(TopKSAEConfig(d_in=d_model, d_sae=d_sae, k=k, dtype=str(dtype).replace("torch.", ""),
                                metadata=SAEMetadata(hook_name=hook, model_name=handle.model_id)))
    sae.to(device)

    tokenized = tokenize_conversations(handle, prompts, responses, config)
    order = sorted(range(len(tokenized)), key=lambda i: -len(tokenized[i].input_ids))
    pad = tokenizer.pad_token_id or 0
    batches = []
    for lo in range(0, len(order), args.batch_size):
        items = [tokenized[i] for i in order[lo: lo + args.batch_size]]
        width = max(len(t.input_ids) for t in items)
        ids = torch.full((len(items), width), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        mask = torch.zeros_like(ids, dtype=torch.bool)
        for r, t in enumerate(items):
            ids[r, : len(t.input_ids)] = torch.tensor(t.input_ids)
            attn[r, : len(t.input_ids)] = 1
            mask[r, t.start: t.end] = True
        batches.append((ids.to(device), attn.to(device), mask.to(device)))
    n_tokens = sum(len(t.input_ids) for t in tokenized)
    stop = handle.stop_layer([hook])
    model = handle.model

    def bare(encode: bool = False):
        with torch.no_grad():
            for ids, attn, mask in batches:
                _, cache = model.run_with_cache(ids, attention_mask=attn, names_filter=[hook], stop_at_layer=stop)
                if encode:
                    acts = cache[hook][mask]
                    for lo in range(0, acts.shape[0], 8192):
                        sae.encode(acts[lo: lo + 8192])
                del cache
        _sync(device)

    def run_capture(with_sae: bool):
        capture(handle, prompts, responses, hooks=[hook], config=config, sae=sae if with_sae else None,
                keep_tokens=with_sae, progress=False)
        _sync(device)

    x = torch.randn(args.encode_tokens, d_model, device=device, dtype=dtype)
    w, b = sae.W_enc.detach(), sae.b_enc.detach()

    def encode_sae():
        with torch.no_grad():
            sae.encode(x)
        _sync(device)

    def encode_matmul():
        with torch.no_grad():
            pre = torch.relu(x @ w + b)
            vals, idx = pre.topk(k, dim=-1)
            torch.zeros_like(pre).scatter_(-1, idx, vals)
        _sync(device)

    jobs = {"bare forward": lambda: bare(False), "capture": lambda: run_capture(False),
            "bare forward + sae.encode": lambda: bare(True), "capture + SAE": lambda: run_capture(True),
            "sae.encode": encode_sae, "matmul + topk": encode_matmul}
    best = {j: float("inf") for j in jobs}
    bare(False)  # warm-up (kernels, allocator)
    for _ in range(args.repeat):
        for j, fn in jobs.items():
            t0 = time.perf_counter()
            fn()
            best[j] = min(best[j], time.perf_counter() - t0)
    params = sum(p.numel() for p in model.parameters()) / 1e9
    print(f"\n{name}: {n_layers} layers, d_model {d_model} ({params:.2f}B parameters), hook {hook}, "
          f"{args.rows} responses / {n_tokens} tokens, device {device}, {dtype}, SAE TopK {d_sae} k={k}")
    for j in ("bare forward", "capture", "bare forward + sae.encode", "capture + SAE"):
        print(f"  {j:28s} {best[j]:8.3f} s  {n_tokens / best[j]:10.0f} tokens/s")
    print(f"  {'sae.encode':28s} {best['sae.encode']:8.3f} s  ({args.encode_tokens} tokens)")
    print(f"  {'matmul + topk':28s} {best['matmul + topk']:8.3f} s")
    ratios = {
        "capture / bare forward": best["bare forward"] / best["capture"],
        "capture+SAE / bare forward+encode": best["bare forward + sae.encode"] / best["capture + SAE"],
        "sae.encode / matmul+topk": best["matmul + topk"] / best["sae.encode"],
    }
    for r, v in ratios.items():
        print(f"  ratio {r:36s} {v:6.3f}")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on the CPU")
    parser.add_argument("--sizes", default="gpt2-small,2b", help=f"comma-separated, of {sorted(SIZES)}")
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-words", type=int, default=200)
    parser.add_argument("--encode-tokens", type=int, default=32768)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a CPU smoke run")
    args = parser.parse_args()
    import torch

    from personas.testing import train_toy_tokenizer

    if args.quick:
        args.sizes, args.rows, args.max_words, args.encode_tokens, args.repeat = "quick", 64, 60, 4096, 2
    if args.dtype is None:
        args.dtype = "bfloat16" if (args.device != "cpu" and torch.cuda.is_available()) else "float32"
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = train_toy_tokenizer(tmp, [" ".join(WORDS)] * 4)
        for name in args.sizes.split(","):
            bench_size(name.strip(), args, tokenizer)


if __name__ == "__main__":
    main()
