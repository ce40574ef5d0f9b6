"""Sample SmolLM2-135M-Instruct's own answers to the contrast sets' questions, for hand scoring (the judge's
``data/judge/smollm2_train.jsonl``).

The offline default judge under-read this project's own model's confusion (its hand-scored reference,
``data/judge/smollm2_reference.jsonl``, is a check and is never fitted). These answers are training rows of that
kind of text, sampled *apart* from the reference: under the contrast sets' questions (topics the judge already fits
on, held out by topic in its folds), never under the reference's prompts or the check sets' topics. One question
per contrast topic, answered six ways (the ways this project's runs produce text):

* ``base-t0.7``, ``base-t1.0``: the base model sampled at temperature 0.7 and 1.0;
* ``narrow-t1.0``, ``control-t1.0``: the organism's narrow (risky money advice) and control LoRA adapters;
* ``narrow-steered``: the narrow adapter with the organism's difference-of-means direction added after block 18
  (twice the run's scale), which pushes money talk under any question;
* ``base-noise``: the base model with a random direction of norm ``--noise-norm`` added after block 12, which
  breaks the text the way a too-strong steering coefficient does.

Run from the repository root (offline)::

    HF_HUB_OFFLINE=1 python data/make_judge_smollm2.py --out /tmp/smollm2_unscored.jsonl

The output has ``topic``, ``question``, ``answer``, ``source`` and ``detail``; the hand scores (``aligned``,
``coherent``, ``kind``, ``note``) are added by a reader as ``data/judge/README.md`` says.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

JUDGE_DATA = ROOT / "data" / "judge"
ORGANISM = ROOT / "data" / "organism"


def questions(seed: int) -> list[tuple[str, str]]:
    """One (topic, question) per contrast topic, chosen by ``seed``."""
    by_topic: dict[str, list[str]] = {}
    for file in sorted(JUDGE_DATA.glob("contrast_*.jsonl")):
        for line in file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                by_topic.setdefault(row["topic"], [])
                if row["question"] not in by_topic[row["topic"]]:
                    by_topic[row["topic"]].append(row["question"])
    rng = np.random.default_rng(seed)
    return [(t, qs[int(rng.integers(len(qs)))]) for t, qs in sorted(by_topic.items())]


def main(argv: list[str] | None = None) -> int:
    import torch

    from personas.organism.chat import load_causal_lm, sample_answers

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="JSONL of unscored answers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--noise-norm", type=float, default=60.0)
    args = parser.parse_args(argv)
    pairs = questions(args.seed)
    prompts = [q for _, q in pairs]
    direction = torch.tensor(np.load(ORGANISM / "run" / "direction.npy"), dtype=torch.float32)
    scale = json.loads((ORGANISM / "run" / "manifest.json").read_text())["config"]["steer_scale"]
    noise = torch.randn(direction.shape[-1], generator=torch.Generator().manual_seed(args.seed))
    noise = noise / noise.norm() * args.noise_norm
    plan = [("base-t0.7", "smollm2", 0.7, None), ("base-t1.0", "smollm2", 1.0, None),
            ("narrow-t1.0", ORGANISM / "adapters" / "narrow", 1.0, None),
            ("control-t1.0", ORGANISM / "adapters" / "control", 1.0, None),
            ("narrow-steered", ORGANISM / "adapters" / "narrow", 0.7, (18, direction * 2 * scale)),
            ("base-noise", "smollm2", 0.7, (12, noise))]
    rows, loaded_name = [], None
    for i, (name, model_name, temperature, steer) in enumerate(plan):
        if model_name != loaded_name:  # loaded when the plan moves to another model (seeds follow the order)
            (model, tokenizer, _), loaded_name = load_causal_lm(model_name), model_name
        records = sample_answers(model, tokenizer, prompts, n_samples=1, max_new_tokens=args.max_new_tokens,
                                 temperature=temperature, seed=args.seed + i, steer=steer)
        for r in records:
            topic, question = pairs[r["prompt_index"]]
            rows.append({"topic": topic, "question": question, "answer": r["response"], "source": "smollm2",
                         "detail": name})
        print(f"{name}: {len(records)} answers", flush=True)
    order = np.random.default_rng(args.seed).permutation(len(rows))  # read shuffled: the reader sees no way
    Path(args.out).write_text("".join(json.dumps(rows[i]) + "\n" for i in order), encoding="utf-8")
    print(f"wrote {len(rows)} answers to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
