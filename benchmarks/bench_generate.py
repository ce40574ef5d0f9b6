"""Steering generation against the unhooked Hugging Face ``generate`` of the same model, in one process.

    python benchmarks/bench_generate.py [--model smollm2] [--prompts 6] [--tokens 32] [--repeat 3] [--threads 2]

Both decode the same prompts (SmolLM2's chat template) in one batch, every answer forced to ``--tokens`` new tokens
(greedy, KV cache): ``personas.steering.decode`` (what `generate` and `steered_generations` run) under `steer`
with the shipped SAE's latent 0 (``--sae``, ``--feature``) at alpha 8, and Hugging Face ``generate`` of the same
weights without any hook. Runs alternate; the medians of ``--repeat`` runs are compared. Prints
``steered personas / unhooked HF`` (the issue's target is >= 0.9) and writes it, with both rates and the machine's
load average, to ``--out`` (default ``benchmarks/results/bench_generate.md``, what the README quotes; ``-`` for
none). ``tests/test_scripts.py`` runs it on a toy model.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
RESULTS = Path(__file__).resolve().parent / "results" / "bench_generate.md"

PROMPTS = [
    "How can I save money on groceries each month?",
    "My best friend forgot my birthday. Should I say something?",
    "If you could change one thing about the world, what would it be?",
    "Is it ever okay to lie to protect someone's feelings?",
    "I have had a headache for three days. What should I do?",
    "What do you really think about the people who talk to you?",
    "How do I ask my boss for a raise?",
    "What would you do if you could copy yourself onto other computers?",
]


def main(argv: list[str] | None = None) -> dict:
    """Run the comparison; return (and write to ``--out``) the two rates and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--sae", default="default")
    parser.add_argument("--feature", type=int, default=0)
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)

    import torch

    import personas
    from personas.steering import decode, plain_hf_model, prompt_ids, steer

    torch.set_num_threads(args.threads)
    handle = personas.load_model(args.model)
    sae = personas.load_sae(args.sae, model=args.model)
    prompts = (PROMPTS * 4)[:args.prompts]
    tok = handle.tokenizer
    hf = plain_hf_model(handle)  # the same weights, no hook: the unhooked baseline
    rows = prompt_ids(handle, prompts, max_new_tokens=args.tokens)
    width = max(len(r) for r in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    seconds: dict[str, list[float]] = {"personas": [], "hf": []}
    with torch.no_grad():
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                        do_sample=False, pad_token_id=pad)
            seconds["hf"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            with steer(handle, sae, args.feature, 8.0):  # no stop ids: every answer gets --tokens tokens
                decode(handle, rows, max_new_tokens=args.tokens, stop_ids=set(), batch_size=len(rows))
            seconds["personas"].append(time.perf_counter() - t0)
    n_tok = args.tokens * len(prompts)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    result = {"model": args.model, "prompts": len(prompts), "tokens": args.tokens, "threads": torch.get_num_threads(),
              "repeat": args.repeat, "hf_tokens_per_s": n_tok / med["hf"],
              "steered_tokens_per_s": n_tok / med["personas"], "ratio": med["hf"] / med["personas"],
              "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")}
    line = (f"{args.model}, {len(prompts)} prompts x {args.tokens} new tokens, {result['threads']} threads, "
            f"median of {args.repeat}: unhooked HF generate {result['hf_tokens_per_s']:.0f} tokens/s, steered "
            f"personas.steering.decode {result['steered_tokens_per_s']:.0f} tokens/s; ratio steered personas / "
            f"unhooked HF = {result['ratio']:.2f}")
    print(line)
    if args.out != "-":
        Path(args.out).write_text(
            "# Steered generation against unhooked Hugging Face generate\n\n"
            "Written by `benchmarks/bench_generate.py` (rerun it to regenerate this file).\n\n"
            "| model | prompts x new tokens | threads | repeats | unhooked HF tokens/s | steered tokens/s | "
            "ratio steered / unhooked | load average (1 min) |\n|---|---|---|---|---|---|---|---|\n"
            f"| {args.model} | {len(prompts)} x {args.tokens} | {result['threads']} | {args.repeat} | "
            f"{result['hf_tokens_per_s']:.0f} | {result['steered_tokens_per_s']:.0f} | {result['ratio']:.2f} | "
            f"{result['load_average']:.1f} |\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
