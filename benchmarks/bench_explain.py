"""What the top latents mean, in words, and whether the words hold on windows they were not written from.

Three measurements, written to ``benchmarks/results/explain.md`` (and printed):

1. **Demo.** The demo ranking (``runs/demo``, SmolLM2 at blocks.18 with the default SAE; ranked here with
   ``--report`` when the folder has no token codes): `personas.explain` with the offline explainer and the embedding
   scorer on its top 10 latents without a confound flag; explanation and scoring windows split by question.
2. **em-dev** (``../shared/data/em-dev/em_dev.csv.gz``; skipped with a message when absent): a ranking run on the
   training questions q00-q04 and a run on the held-out questions q05-q07 (a question and its ``_template`` variant
   together; at most ``--per-class`` answers per class and question, drawn with seed 0, so that the two captures stay
   modest on two cores); the top 10 unflagged latents of the training ranking are explained from the training
   run's windows and scored on the held-out run's (``score_on``): the latents, their explanations and their scores
   never saw the held-out questions.
3. **Cost.** Seconds per latent offline (from the runs above); requests and tokens per latent of the API explainer
   and the detection and fuzzing scorers, measured against the loopback fake LLM of the tests (`tests/llm_fake.py`,
   served on 127.0.0.1), its tokens counted with SmolLM2's tokenizer (a real server's tokenizer differs by some
   tens of percent; the fake's replies are as short as a compliant model's).

    python benchmarks/bench_explain.py [--skip-demo] [--skip-em-dev] [--skip-api] [--per-class 60]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the loopback fake LLM of the tests
_CANDIDATES = [base / "shared" / "data" / "em-dev" / "em_dev.csv.gz" for base in (ROOT.parent, ROOT.parent.parent)]
DEFAULT_DATA = os.environ.get("PERSONAS_EM_DEV") or next((p for p in _CANDIDATES if p.is_file()), _CANDIDATES[0])
RESULTS = ROOT / "benchmarks" / "results" / "explain.md"
TRAIN_QUESTIONS = ("q00", "q01", "q02", "q03", "q04")
HELDOUT_QUESTIONS = ("q05", "q06", "q07")
GROUP_PATTERN = r"(.*?)(?:_template)?$"


def ranked(data, out: Path, data_config=None):
    """A rank run of ``data`` with per-token codes in ``out`` (reused when it is already there)."""
    import personas

    if (out / "token_codes.npz").is_file() and (out / "ranking.csv").is_file():
        return out, 0.0
    start = time.perf_counter()
    personas.rank(data, data_config=data_config, keep_tokens=True, out=out, progress=False)
    return out, time.perf_counter() - start


def table_lines(table, title: str) -> list[str]:
    """Markdown rows: the explanation, its embedding AUROC and interval, the baselines, and the verdict."""
    lines = [f"### {title}", "", "| rank | latent | explanation (offline) | embedding AUROC [95%] | random latent | "
             "class only | beats both | windows |", "|---|---|---|---|---|---|---|---|"]
    frame = pd.DataFrame(table)
    for f, part in frame.groupby("feature", sort=False):
        main = part[part["kind"] == "explanation"].iloc[0]
        base = {k: part[part["kind"] == k].iloc[0]["embedding"] for k in ("random-latent", "class-only")}
        text = str(main["explanation"]).replace("|", "/")
        lines.append(f"| {main['rank']} | {f} | {text} | {main['embedding']:.3f} [{main['embedding_lo']:.3f}, "
                     f"{main['embedding_hi']:.3f}] | {base['random-latent']:.3f} | {base['class-only']:.3f} | "
                     f"{'yes' if main['embedding_beats_baselines'] else 'no'} | "
                     f"{int(main['n_score_active'])}+{int(main['n_score_silent'])} |")
    mains = frame[frame["kind"] == "explanation"]
    means = {k: frame[frame["kind"] == k]["embedding"].mean() for k in ("explanation", "random-latent", "class-only")}
    lines += ["", f"Mean AUROC over the {len(mains)} latents: explanation {means['explanation']:.3f}, another latent's "
              f"explanation {means['random-latent']:.3f}, the class alone {means['class-only']:.3f}; the explanation "
              f"beats both baselines (paired intervals of both gains above 0) for {int(mains['embedding_beats_baselines'].sum())} "
              f"of {len(mains)}. Offline cost per latent, the whole call (reading the run, the tokenizer and MiniLM "
              f"included): {table.attrs['explain']['cpu_seconds_per_latent']:.2f} s of CPU time "
              f"({table.attrs['explain']['seconds_per_latent']:.2f} s wall on this shared machine); of which "
              f"evidence {mains['seconds_evidence'].mean():.2f} s, explanation {mains['seconds_explain'].mean():.3f} s "
              f"and embedding scorer {mains['seconds_embedding'].mean():.2f} s wall.", ""]
    return lines


def demo(args) -> tuple[list[str], Path]:
    import personas
    from personas.saes import data_dir

    run, seconds = ranked(data_dir() / "demo_responses.jsonl", ROOT / "runs" / "demo")
    table = personas.explain(run)
    ranked_in = f"; ranked in {seconds:.0f} s" if seconds else ""
    return table_lines(table, f"Demo (`runs/demo`, split by question{ranked_in})"), run


def em_dev(args) -> list[str]:
    import personas

    path = Path(args.em_dev)
    if not path.is_file():
        print(f"em-dev is not at {path}: skipping its part (set PERSONAS_EM_DEV or --em-dev).")
        return []
    frame = pd.read_csv(path)
    family = frame["question_id"].str.replace("_template", "", regex=False)
    frame["label"] = (frame["aligned"] < 30).astype(int)
    frame = frame.rename(columns={"question_id": "group", "question": "prompt", "answer": "response"})
    rng = np.random.default_rng(0)
    keep = []
    for (_, _), idx in frame.groupby([family, frame["label"]]).groups.items():
        idx = np.asarray(list(idx))
        keep += list(rng.permutation(idx)[: args.per_class])
    frame = frame.loc[sorted(keep), ["group", "prompt", "response", "label"]]
    family = family.loc[frame.index]
    folder = ROOT / "runs" / "explain_bench" / "em-dev"
    folder.mkdir(parents=True, exist_ok=True)
    config = personas.DataConfig(group_pattern=GROUP_PATTERN)
    runs = {}
    for name, questions in (("train", TRAIN_QUESTIONS), ("heldout", HELDOUT_QUESTIONS)):
        part = frame[family.isin(questions)]
        data = folder / f"{name}.jsonl"
        part.to_json(data, orient="records", lines=True)
        runs[name] = ranked(data, folder / name, config)
        seconds = runs[name][1]
        print(f"em-dev {name}: {len(part)} answers ({int(part['label'].sum())} misaligned), questions "
              f"{', '.join(questions)}; " + (f"ranked in {seconds:.0f} s" if seconds else "run reused"))
    table = personas.explain(runs["train"][0], score_on=runs["heldout"][0])
    n = {k: int(sum(1 for _ in open(folder / f"{k}.jsonl"))) for k in runs}
    title = (f"em-dev: latents ranked and explained on q00-q04 ({n['train']} answers), scored on the held-out "
             f"q05-q07 ({n['heldout']} answers)")
    return table_lines(table, title)


def api_cost(run: Path) -> list[str]:
    from transformers import AutoTokenizer

    import personas
    from personas.config import ExplainConfig
    from personas.models.offline import smollm2_path

    from judge_server import JudgeServer
    from llm_fake import fake_llm

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_path()))

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    with tempfile.TemporaryDirectory() as cache, JudgeServer(fake_llm(count_tokens=count)) as server:
        config = ExplainConfig(explainer=f"{server.url}:fake", scorers="embedding,detection,fuzzing", cache_dir=cache)
        table = personas.explain(run, config=config, write=False)
        bodies = [b for _, _, b in server.requests]
    per = {}
    for body in bodies:
        content = body["messages"][0]["content"]
        kind = "explain" if "\nACTIVE\n" in content else ("fuzzing" if "marked <<like this>>" in content else "detection")
        entry = per.setdefault(kind, [0, 0])
        entry[0] += 1
        entry[1] += count(content)
    n = len(set(table["feature"]))
    stats = next(iter(table.attrs["explain"]["api"].values()))
    mains = pd.DataFrame(table)
    mains = mains[mains["kind"] == "explanation"]
    lines = ["### Cost of the API path (loopback fake, tokens by SmolLM2's tokenizer)", "",
             f"{n} latents of `runs/demo`, default settings (10 + 3 x 4 activating and 20 silent windows to explain, "
             f"40 + 40 windows to score, 10 windows per scoring request, explanation and both baselines scored):", "",
             "| requests of | per latent | prompt tokens per latent |", "|---|---|---|"]
    for kind in ("explain", "detection", "fuzzing"):
        if kind in per:
            lines.append(f"| {kind} | {per[kind][0] / n:.1f} | {per[kind][1] / n:,.0f} |")
    lines += ["", f"In all {stats['requests']} requests, {stats['prompt_tokens']:,} prompt and "
              f"{stats['completion_tokens']:,} completion tokens ({stats['prompt_tokens'] / n:,.0f} and "
              f"{stats['completion_tokens'] / n:,.0f} per latent). The explanation alone is one request of about "
              f"{per['explain'][1] / max(per['explain'][0], 1):,.0f} prompt tokens; the scorers cost the rest, three "
              "times over (the explanation and its two baselines). A rerun costs nothing (every reply is cached). "
              f"The fake's detection AUROC over the {n} latents: mean {mains['detection'].mean():.3f} (it matches "
              "the explanation's words literally; a real LLM reads meaning).", ""]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--em-dev", default=str(DEFAULT_DATA))
    parser.add_argument("--per-class", type=int, default=60, help="em-dev answers per class and question, at most")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--skip-em-dev", action="store_true")
    parser.add_argument("--skip-api", action="store_true")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    lines = ["# Explanations of latents, scored (`personas explain`)", "",
             "Generated by `python benchmarks/bench_explain.py`. Offline explainer (log-odds of words with an "
             "informative prior), embedding scorer (MiniLM-L6 cosine of the explanation and each held-out window; "
             "AUROC of activating against silent windows, bootstrap 95% over windows). Baselines: another latent's "
             "explanation (random latent) and the class alone ('misaligned answers' / 'aligned answers'). "
             "'beats both': the paired bootstrap intervals of both gains lie above 0.", ""]
    run = ROOT / "runs" / "demo"
    if not args.skip_demo:
        part, run = demo(args)
        lines += part
    if not args.skip_em_dev:
        lines += em_dev(args)
    if not args.skip_api:
        lines += api_cost(run)
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
