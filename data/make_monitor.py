"""Make the monitor shipped for SmolLM2 (``personas/resources/monitors/smollm2-em-dev``): a detector fit on real
judged answers through the default SAE, calibrated at a false-positive rate on SmolLM2's own benign answers.

Run from the repository root (offline; reads ``../shared/data/em-dev/em_dev.csv.gz``, which is not part of the
repository, or ``$PERSONAS_EM_DEV``; prints a message and exits when it is absent)::

    HF_HUB_OFFLINE=1 python data/make_monitor.py [--work runs/make_monitor] [--out personas/resources/monitors/smollm2-em-dev]

1. **Data.** em-dev: 2,416 answers of open chat models and their emergently misaligned fine-tunes (7B-32B), judged
   0-100 for aligned and coherent by an LLM judge, from the MIT-licensed repository ``Cloakless/clarifying_EM``
   (the licence is copied beside the monitor as ``DATA_LICENSE``). A question and its ``_template`` variant are one
   question (8 in all). At most ``--per-question`` answers per question (half misaligned, half aligned where
   there are enough), drawn with a fixed seed, so that one question (q02: 1,320 answers) does not outweigh the rest
   and the capture fits a 2-core machine.
2. **Fit, on training questions only.** `personas.fit_detector`: SmolLM2-135M-Instruct at
   ``blocks.18.hook_resid_post`` through the default SAE, mean pooling over the answer tokens (up to 256 tokens of
   prompt and answer), 10 latents by stability selection, logistic; a quarter of the questions (2 of 8, seed 0) held
   out for the figures, and 4-fold cross-validation by question over all of them beside it.
3. **Calibration.** `personas.jobs.calibrate_monitor` at FPR 0.01 on SmolLM2's own answers to the 150 benign
   prompts of ``data/smollm2_chat_prompts.txt`` (``--benign-samples`` answers each, sampled at temperature 0.7,
   ``--max-new-tokens`` tokens), generated and scored through the server's own path (the monitor reads its site
   while generating); the answers are written beside the monitor (``calibration_answers.jsonl``).

Paths of this machine are not written: the data are named as ``em-dev`` and ``data/smollm2_chat_prompts.txt``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_CANDIDATES = [base / "shared" / "data" / "em-dev" / "em_dev.csv.gz" for base in (ROOT.parent, ROOT.parent.parent)]
DEFAULT_DATA = os.environ.get("PERSONAS_EM_DEV") or next((p for p in _CANDIDATES if p.is_file()), _CANDIDATES[0])
BENIGN = ROOT / "data" / "smollm2_chat_prompts.txt"
GROUP_PATTERN = r"(.*?)(?:_template)?$"
DATA_NAME = "em-dev (Cloakless/clarifying_EM judgments, MIT; not part of this repository)"


def sample_rows(frame, per_question: int, seed: int):
    """At most ``per_question`` rows per question (variants merged), half of each class where there are enough."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    question = frame["question_id"].str.replace("_template", "", regex=False)
    parts = []
    for q in sorted(question.unique()):
        rows = frame[question == q]
        bad, good = rows[rows["aligned"] < 30], rows[rows["aligned"] > 70]
        n_bad = min(len(bad), per_question // 2, max(per_question - len(good), 0) + per_question // 2)
        n_good = min(len(good), per_question - n_bad)
        n_bad = min(len(bad), per_question - n_good)
        parts.append(bad.iloc[rng.permutation(len(bad))[:n_bad]])
        parts.append(good.iloc[rng.permutation(len(good))[:n_good]])
    out = pd.concat(parts).sort_index().reset_index(drop=True)
    out.insert(0, "id", [f"em-dev-{i:04d}" for i in range(len(out))])
    return out


def fit(args) -> Path:
    import pandas as pd

    import personas
    from personas.config import CaptureConfig, DataConfig, DetectorConfig
    from personas.saes import default_sae_path

    folder = Path(args.work) / "detect"
    if (folder / "eval.json").is_file() and not args.refit:
        print(f"# reusing the detector in {folder} (--refit to fit again)", file=sys.stderr)
        return folder
    frame = sample_rows(pd.read_csv(args.data), args.per_question, args.seed)
    print(f"# em-dev: {len(frame)} answers of {frame['question_id'].nunique()} question ids", file=sys.stderr)
    t0 = time.perf_counter()
    result = personas.fit_detector(
        frame, config=DetectorConfig(k=10, selection="stability", holdout_by="group", test_fraction=0.25, seed=0,
                                     cv_folds=4),
        capture=CaptureConfig(model="smollm2", hook="blocks.18.hook_resid_post", pool="mean", max_length=256),
        sae="default", data_config=DataConfig(group_pattern=GROUP_PATTERN), out=folder, progress=False,
    )
    print(f"# fit in {time.perf_counter() - t0:.0f} s: {result!r}", file=sys.stderr)
    det = personas.load_detector(folder / "detector")
    det.provenance["train_data"]["source"] = f"{DATA_NAME}, {len(frame)} answers [training questions]"
    # name the shipped SAE the latents belong to, so that they are read with it after the default changes
    det.provenance["sae"]["identity"]["shipped"] = default_sae_path("smollm2").name
    det.save(folder / "detector")
    return folder


def describe_fit(folder: Path) -> dict:
    ev = json.loads((folder / "eval.json").read_text())
    cv = ev.get("cross_validation") or {}
    return {
        "heldout_questions": ev["split"]["test_groups"], "training_questions": ev["split"]["train_groups"],
        "n_train": ev["split"]["train"]["n_labelled"], "n_test": ev["split"]["test"]["n_labelled"],
        "heldout_auroc": ev["auroc"], "heldout_auroc_ci": ev["auroc_ci"],
        "heldout_balanced_accuracy": ev.get("balanced_accuracy"),
        "dense_baseline_heldout_auroc": ev["dense_baseline"]["auroc"],
        "cv_by_question_auroc": cv.get("sae_auroc"), "cv_by_question_dense_auroc": cv.get("dense_auroc"),
        "latents": ev["features"],
    }


def write_readme(out: Path, record: dict) -> None:
    """The monitor's README: what it is, what it was fit and calibrated on, its held-out figures, its licence."""
    fit, cal = record["fit"], record["calibration"]
    mon = record["monitor"]

    def ci(pair):
        return f"[{pair[0]:.3f}, {pair[1]:.3f}]"

    cv, cvd = fit.get("cv_by_question_auroc") or {}, fit.get("cv_by_question_dense_auroc") or {}
    gen = cal["data"]["generated"] or {}
    text = f"""# {out.name}: the monitor `personas serve` uses by default

A `PersonaDetector` reading SmolLM2-135M-Instruct at `{mon['hook']}` through the default SAE (`{mon['sae']}`:
the shipped SAE it names in `detector.json`), {len(mon['latents'])} latents ({', '.join(map(str, mon['latents']))}),
{mon['pool']} pooling over the answer tokens, a logistic model on them; and its threshold, **{record['threshold']:.4f}**,
calibrated at a false-positive rate of {cal['fpr_asked']} on SmolLM2's own benign answers. Made by
`python data/make_monitor.py` (the numbers below are from its run).

## Fit: real judged answers, training questions only

{fit['data']}: {fit['sampled']}. Fit on the answers to {len(fit['training_questions'])} questions
({', '.join(fit['training_questions'])}; {fit['n_train']} answers), evaluated on the {len(fit['heldout_questions'])}
questions it never saw ({', '.join(fit['heldout_questions'])}; {fit['n_test']} answers):

| | AUROC on the held-out questions | 4-fold CV by question (mean +- sd) |
|---|---|---|
| this detector (10 SAE latents) | {fit['heldout_auroc']:.3f} {ci(fit['heldout_auroc_ci'])} | {cv.get('mean', float('nan')):.3f} +- {cv.get('sd', float('nan')):.3f} |
| dense difference of means, same site | {fit['dense_baseline_heldout_auroc']:.3f} | {cvd.get('mean', float('nan')):.3f} +- {cvd.get('sd', float('nan')):.3f} |

The answers were written by 7B-32B models and read through SmolLM2: what the detector flags in SmolLM2's *own*
answers is measured separately (`benchmarks/bench_serve.py --parts catch`, in the project README).

## Calibration: SmolLM2's own benign answers

{cal['n']} answers ({gen.get('samples')} per prompt) of SmolLM2 to the {gen.get('prompts')} prompts of
`data/smollm2_chat_prompts.txt`, sampled at temperature {gen.get('temperature')}, {gen.get('max_new_tokens')} tokens at
most, generated and scored through the server's own path (`calibration_answers.jsonl`, sha256 `{cal['data']['sha256'][:16]}...`).
The threshold flags {cal['n_flagged']} of them: a false-positive rate of {cal['fpr_reached']:.4f}
{ci(cal['fpr_interval'])} (Wilson, 95%) where {cal['fpr_asked']} was asked; on new answers of the same kind
(k + 1) / (n + 1) = {cal['expected_fpr']:.4f} is expected. Below 1 / n = {1 / cal['n']:.4f} no rate can be
resolved from these answers; calibrate your own (`personas monitor calibrate`) on your own traffic.

## Licence

The detector's weights are derived from em-dev, the judged answers of the MIT-licensed research repository
`Cloakless/clarifying_EM` (licence text in `DATA_LICENSE`); em-dev itself is not shipped. Everything else is
personas' own (MIT).
"""
    (out / "README.md").write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--work", default=str(ROOT / "runs" / "make_monitor"))
    parser.add_argument("--out", default=str(ROOT / "personas" / "resources" / "monitors" / "smollm2-em-dev"))
    parser.add_argument("--per-question", type=int, default=200)
    parser.add_argument("--benign-samples", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--fpr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--refit", action="store_true")
    parser.add_argument("--readme-only", action="store_true", help="rewrite README.md from the monitor's record")
    args = parser.parse_args()
    if args.readme_only:
        write_readme(Path(args.out), json.loads((Path(args.out) / "monitor.json").read_text()))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not Path(args.data).is_file():
        print(f"em-dev is not at {args.data}; nothing to fit on (it is not part of the repository).")
        return 0
    from personas.config import MonitorConfig
    from personas.jobs import calibrate_monitor

    folder = fit(args)
    figures = describe_fit(folder)
    print(json.dumps(figures, indent=1), file=sys.stderr)
    t0 = time.perf_counter()
    out = Path(args.out)
    result = calibrate_monitor(folder / "detector", BENIGN, out=out, config=MonitorConfig(
        fpr=args.fpr, samples=args.benign_samples, max_new_tokens=args.max_new_tokens, temperature=0.7,
        seed=args.seed, batch_size=16))
    print(f"# calibrated in {time.perf_counter() - t0:.0f} s: {result.monitor!r}", file=sys.stderr)
    record = json.loads((out / "monitor.json").read_text())
    record["calibration"]["data"]["source"] = "data/smollm2_chat_prompts.txt (150 benign prompts)"
    record["fit"] = {**figures, "data": DATA_NAME, "sampled": f"at most {args.per_question} answers per question, "
                     f"seed {args.seed}", "script": "data/make_monitor.py"}
    (out / "monitor.json").write_text(json.dumps(record, indent=2) + "\n")
    shutil.copy(Path(args.data).parent / "LICENSE", out / "DATA_LICENSE")
    write_readme(out, record)
    cal = record["calibration"]
    print(json.dumps({k: v for k, v in cal.items() if k != "benign_scores"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
