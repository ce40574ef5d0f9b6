"""Regenerate the demo numbers the README states, and check the README against them.

For each offline model (its default hook and shipped SAE) on ``data/demo_responses.jsonl``:

* labelled / excluded responses and questions; features tested and significant (q < 0.05); the range of
  |AUROC - 0.5| over the top 20; response length's own AUROC; the latents the confound flags mark as length,
  style and single-token latents, among all and among the significant ones;
* the detector on the top 10 latents, fit on 18 questions and tested on 6 held out (``holdout_by="group"``,
  seed 0), against the dense difference-of-means baseline, and 4-fold cross-validation by question;
* the shipped SAE's explained variance, L0 and dead fraction on the demo's response tokens, as the ranking's
  capture measured them (its training record holds the same figures on held-out training text).

    python benchmarks/readme_numbers.py                       # print the block
    python benchmarks/readme_numbers.py --write README.md     # replace the block between the markers
    python benchmarks/readme_numbers.py --check README.md     # exit 1 if the README's block drifted

The block sits between ``<!-- readme-numbers:begin -->`` and ``<!-- readme-numbers:end -->``. ``--check``
compares every number within a tolerance (counts exactly, AUROCs to 0.02, explained variance to 0.02, the counts
of significant and of flagged latents to 5%), since the last digits move with library versions and BLAS.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- readme-numbers:begin -->", "<!-- readme-numbers:end -->"
MODELS = ("smollm2", "minilm")


def numbers(model: str, result=None) -> dict[str, float]:
    """The block's numbers for one offline model; ``result``: its demo ranking when already computed (the ranking
    `personas rank data/demo_responses.jsonl --model MODEL` makes; the test suite shares one)."""
    import numpy as np

    import personas
    from personas.config import CaptureConfig, DetectorConfig
    from personas.jobs.detect import fit_detector

    demo = ROOT / "data" / "demo_responses.jsonl"
    if result is None:
        result = personas.rank(demo, capture=CaptureConfig(model=model), sae="default", progress=False)
    r = result.ranking
    top = np.abs(r["group_auroc" if "group_auroc" in r else "auroc"].head(20).to_numpy() - 0.5)
    data = result.manifest["data"]
    out = {
        "labelled": data["n_labelled"], "excluded": data["n_excluded"], "questions": data["n_groups"],
        "features": result.manifest["ranking"]["n_features"], "significant": result.manifest["ranking"]["n_significant"],
        "top20_min": float(top.min()), "top20_max": float(top.max()),
        "length_auroc": result.manifest["ranking"]["length_auroc"],
    }
    kinds, significant = r["kind"].fillna("").to_numpy(), r["significant"].to_numpy(dtype=bool)
    for kind in ("length", "style", "single-token"):  # the confound flags (`personas.scoring.confounds.confound_kind`)
        out[f"flagged_{kind}"] = int((kinds == kind).sum())
        out[f"flagged_{kind}_significant"] = int(((kinds == kind) & significant).sum())
    fitted = fit_detector(demo, config=DetectorConfig(k=10, holdout_by="group", test_fraction=0.25, seed=0, cv_folds=4),
                          capture=CaptureConfig(model=model), sae=result.sae, model=result.model,
                          captured=result.capture, progress=False)  # the rank's own capture, not a second one
    ev = fitted.evaluation
    cv = ev["cross_validation"]
    out.update({
        "detector_auroc": ev["sae"]["auroc"], "detector_lo": ev["sae"]["auroc_ci"][0], "detector_hi": ev["sae"]["auroc_ci"][1],
        "dense_auroc": ev["dense_baseline"]["auroc"], "dense_lo": ev["dense_baseline"]["auroc_ci"][0],
        "dense_hi": ev["dense_baseline"]["auroc_ci"][1],
        "cv_detector": cv["sae_auroc"]["mean"], "cv_detector_sd": cv["sae_auroc"]["sd"],
        "cv_dense": cv["dense_auroc"]["mean"], "cv_dense_sd": cv["dense_auroc"]["sd"],
    })
    quality = result.capture.stats["sae_fit"]  # measured by the capture on the demo's response tokens
    out.update({"sae_ev_demo": quality["explained_variance"], "sae_l0_demo": quality["l0"],
                "sae_dead_demo": quality["dead_fraction"]})
    out["hook"] = result.manifest["hook"]
    return out


def render(all_numbers: dict[str, dict[str, float]]) -> str:
    rows = ["| | " + " | ".join(all_numbers) + " |", "|---|" + "---|" * len(all_numbers)]

    def row(label, fmt):
        rows.append(f"| {label} | " + " | ".join(fmt(n) for n in all_numbers.values()) + " |")

    row("site", lambda n: f"`{n['hook']}`")
    row("responses labelled / excluded / questions", lambda n: f"{n['labelled']} / {n['excluded']} / {n['questions']}")
    row("latents significant (q < 0.05) / tested", lambda n: f"{n['significant']} / {n['features']}")
    row("top-20 \\|AUROC - 0.5\\| within questions", lambda n: f"{n['top20_min']:.3f} - {n['top20_max']:.3f}")
    row("response length alone, AUROC", lambda n: f"{n['length_auroc']:.3f}")
    row("latents flagged length / style / single-token: all; significant",
        lambda n: f"{n['flagged_length']} / {n['flagged_style']} / {n['flagged_single-token']}; "
        f"{n['flagged_length_significant']} / {n['flagged_style_significant']} / "
        f"{n['flagged_single-token_significant']}")
    row("detector, 10 latents, 6 held-out questions", lambda n: f"{n['detector_auroc']:.3f} [{n['detector_lo']:.3f}, {n['detector_hi']:.3f}]")
    row("dense difference of means, same split", lambda n: f"{n['dense_auroc']:.3f} [{n['dense_lo']:.3f}, {n['dense_hi']:.3f}]")
    row("4-fold CV by question: detector / dense", lambda n: f"{n['cv_detector']:.3f} +- {n['cv_detector_sd']:.3f} / "
        f"{n['cv_dense']:.3f} +- {n['cv_dense_sd']:.3f}")
    row("shipped SAE on demo response tokens: EV / L0 / dead", lambda n: f"{n['sae_ev_demo']:.3f} / {n['sae_l0_demo']:.1f} / "
        f"{n['sae_dead_demo']:.3f}")
    return "\n".join(rows)


_NUM = re.compile(r"-?\d+(?:\.\d+)?")


def compare(expected_block: str, fresh_block: str) -> list[str]:
    """Differences beyond tolerance between two rendered blocks, row by row."""
    problems = []
    old_rows = [r for r in expected_block.strip().splitlines() if r.startswith("| ") and not r.startswith("| |")]
    new_rows = [r for r in fresh_block.strip().splitlines() if r.startswith("| ") and not r.startswith("| |")]
    if len(old_rows) != len(new_rows):
        return [f"the README block has {len(old_rows)} rows; regenerated {len(new_rows)}"]
    for old, new in zip(old_rows, new_rows, strict=True):
        label = old.split("|")[1].strip()
        if label == "site":
            if old != new:
                problems.append(f"site: README {old!r}, now {new!r}")
            continue
        a = [float(x) for x in _NUM.findall(old.split("|", 2)[2])]
        b = [float(x) for x in _NUM.findall(new.split("|", 2)[2])]
        if len(a) != len(b):
            problems.append(f"{label}: README {old!r}, now {new!r}")
            continue
        for x, y in zip(a, b, strict=True):
            if "significant" in label:  # the count of significant latents, and of flagged ones
                ok = abs(x - y) <= max(2.0, 0.05 * max(abs(x), abs(y)))
            elif "labelled" in label:
                ok = x == y
            elif "L0" in label:
                ok = abs(x - y) <= max(0.5, 0.05 * abs(x))
            else:
                ok = abs(x - y) <= 0.02
            if not ok:
                problems.append(f"{label}: README says {x}, regenerated {y}")
    return problems


def main(argv: list[str] | None = None, ranked: dict | None = None) -> int:
    """The command line; ``ranked`` maps a model to its demo ranking when the caller already has one."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="README", help="replace the block in this file")
    group.add_argument("--check", metavar="README", help="exit 1 when this file's block differs beyond tolerance")
    args = parser.parse_args(argv)
    fresh = render({m: numbers(m, (ranked or {}).get(m)) for m in args.models.split(",")})
    if not (args.write or args.check):
        print(fresh)
        return 0
    path = Path(args.write or args.check)
    text = path.read_text()
    if BEGIN not in text or END not in text:
        print(f"{path} has no {BEGIN} ... {END} block", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    old, tail = rest.split(END, 1)
    if args.write:
        path.write_text(f"{head}{BEGIN}\n{fresh}\n{END}{tail}")
        print(f"wrote the numbers into {path}")
        return 0
    problems = compare(old, fresh)
    for p in problems:
        print(p, file=sys.stderr)
    print("README numbers: " + ("drifted" if problems else "within tolerance"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
