"""The model organism's latent diff read through another SAE: which latents rise in the narrow fine-tune.

The shipped organism run (``data/organism/run``) diffed the base model and its narrow fine-tune through the SAE that
was the default then, and records that SAE's identity (its latent numbers mean nothing in another SAE). When the
default SAE changes, this script redoes only that step, with no training and no sampling: the run's own answers
(the narrow fine-tune's answers to the unseen-domain prompts, empty ones left out, as the run did) go through the
base model and through the base model with the shipped narrow adapter merged in (`personas.organism.diff_latents`,
i.e. `personas diff`), encoded by the SAE given. It writes ``latent_diff.csv`` (every latent) and ``manifest.json``
(the top rising latents, the SAE's identity, the run it came from) to ``--out``.

    HF_HUB_OFFLINE=1 python benchmarks/organism_latents.py                       # the default SAE
    HF_HUB_OFFLINE=1 python benchmarks/organism_latents.py --sae FOLDER --out runs/organism-latents

A few minutes on 2 CPU cores (two forward passes over ~100 answers). ``--model``, ``--adapter``, ``--run`` and
``--hook`` point it at another base model, adapter and run (``tests/test_scripts.py`` runs it on a toy model).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "data" / "organism" / "run"
ADAPTER = ROOT / "data" / "organism" / "adapters" / "narrow"
HOOK = "blocks.18.hook_resid_post"


def _shown(path: Path) -> str:
    """A path as the manifest records it: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sae", default="default", help="SAE spec (default: the SAE shipped for SmolLM2)")
    ap.add_argument("--out", default=str(ROOT / "data" / "organism" / "latents-default-sae"),
                    help="folder for latent_diff.csv and manifest.json")
    ap.add_argument("--top", type=int, default=10, help="top rising latents recorded in the manifest")
    ap.add_argument("--model", default=None, help="base model folder (default: SmolLM2-135M-Instruct's)")
    ap.add_argument("--adapter", default=str(ADAPTER), help="the narrow fine-tune's adapter folder")
    ap.add_argument("--run", default=str(RUN), help="the organism run whose samples.jsonl holds the answers")
    ap.add_argument("--hook", default=HOOK, help="the site read (the SAE's hook)")
    args = ap.parse_args(argv)

    import pandas as pd
    import torch

    from personas.artifacts import manifest_header
    from personas.organism import load_adapter, load_chat_model, smollm2_folder
    from personas.organism.latents import diff_latents, top_increases
    from personas.saes import load_sae, sae_identity

    torch.manual_seed(0)
    folder = smollm2_folder() if args.model is None else Path(args.model)
    model_name = "smollm2" if args.model is None else str(folder)
    if not (folder / "config.json").is_file():
        print(f"no model in {folder}; `make demo` puts SmolLM2-135M-Instruct there.", file=sys.stderr)
        return 2
    run, adapter_dir = Path(args.run), Path(args.adapter)
    samples = pd.read_json(run / "samples.jsonl", lines=True)
    mine = samples[(samples["condition"] == "narrow") & (samples["split"] == "unseen")]
    mine = mine[mine["response"].str.strip() != ""]
    t0 = time.perf_counter()
    sae = load_sae(args.sae, model=model_name)
    model, tokenizer = load_chat_model(folder)
    adapter = load_adapter(model, adapter_dir)
    result = diff_latents(folder, adapter, tokenizer, mine["prompt"].tolist(), mine["response"].tolist(), sae,
                          hook=args.hook)
    table = result.table
    top = top_increases(table, n=args.top)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "latent_diff.csv", index=False)
    significant = table["q_value"] < 0.05
    manifest = {
        **manifest_header("benchmarks/organism_latents.py"),
        "what": "the organism run's latent diff (base vs narrow fine-tune, on the narrow fine-tune's unseen-domain "
                "answers) redone through this SAE",
        "run": _shown(run), "adapter": _shown(adapter_dir), "hook": args.hook,
        "n_answers": len(mine), "sae": sae_identity(sae, args.sae, model_name),
        "n_rising": int((significant & (table["mean_diff"] > 0)).sum()),
        "n_falling": int((significant & (table["mean_diff"] < 0)).sum()),
        "top": top[["feature", "mean_diff", "q_value"]].to_dict("records"),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=float) + "\n")
    print(top.to_string(index=False))
    print(f"{manifest['n_rising']} latents rise and {manifest['n_falling']} fall at q < 0.05; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
