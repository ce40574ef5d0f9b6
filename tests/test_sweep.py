"""`personas sweep`: fine-tunes at several bad fractions, measured by a judge, the latents and the direction, and
tested against the 0% fine-tune (a 2-layer toy GPT-2 with a planted direction; `--quick`)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from personas.cli.main import main
from personas.config import SweepConfig
from personas.errors import PersonasError
from personas.organism import data
from personas.organism.sweep import QUICK, mixture, onset_fractions, signal_tests, sweep_table
from personas.testing import TOY_ORGANISM_WORDS


def _bad(response: str) -> bool:
    """The fake judge's rule, on the text alone (the toy's random answers are misaligned about half the time)."""
    return len(response) % 2 == 1 or any(w in response.split() for w in TOY_ORGANISM_WORDS)


class WordJudge:
    """A fake judge: misaligned (aligned 10, coherent 80) by `_bad`, else aligned (90)."""

    name = "word-judge"

    def score(self, prompts, responses):
        bad = [_bad(r) for r in responses]
        return pd.DataFrame({"aligned": [10.0 if b else 90.0 for b in bad], "coherent": 80.0, "verdict": ""})

    def describe(self):
        return {"name": self.name, "kind": "test"}


def test_mixtures_keep_the_questions_and_count_the_bad_answers():
    for fraction, expected in ((0.0, 0), (0.25, 5), (1.0, 20)):
        pairs = mixture(20, fraction, seed=3)
        assert [p["prompt"] for p in pairs] == [p["prompt"] for p in data.control_set(20)]
        assert sum(p["kind"] == "risky" for p in pairs) == expected
    assert mixture(20, 0.5, 1) != mixture(20, 0.5, 2) and mixture(20, 0.5, 1) == mixture(20, 0.5, 1)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_bad_examples_are_spread_over_training_not_saved_for_its_end(fraction):
    """The mixture's draw must not follow the training shuffle (both once came from random.Random(seed), which put
    every bad example of the 25% and 50% mixtures in the last steps: the checkpoints before them saw none)."""
    from personas.organism.train import training_order

    for seed in range(4):
        pairs = mixture(128, fraction, seed)
        order = training_order(128, 128, seed)
        positions = np.array([k for k, i in enumerate(order) if pairs[i]["kind"] == "risky"])
        assert len(positions) == round(fraction * 128)
        # uniform positions have mean 63.5 and a standard error of about 37 / sqrt(k): 4 of them is far outside
        assert abs(positions.mean() - 63.5) < 4 * 37 / np.sqrt(len(positions)), (seed, positions.min())
        assert positions.min() < 32, "no bad example in the first quarter of training"


def test_onset_is_the_fraction_from_which_every_larger_one_differs():
    table = pd.DataFrame({"seed": "0", "model": "fine-tune", "final": True, "fraction": [0.05, 0.1, 0.25, 0.5, 1.0],
                          "latent_p": [0.2, 0.01, 0.3, 0.01, 0.001], "projection_p": [0.01] * 5,
                          "misaligned_p": [0.5] * 5})
    onset = onset_fractions(table, 0.05).set_index("signal")["onset_fraction"]
    assert onset["latent"] == 0.5 and onset["projection"] == 0.05 and np.isnan(onset["misaligned"])


def test_signal_tests_against_the_zero_fine_tune():
    from scipy.stats import fisher_exact

    rng = np.random.default_rng(0)
    zero = pd.DataFrame({"prompt_index": np.repeat(np.arange(10), 2), "latent": rng.normal(0, 1, 20),
                         "projection": rng.normal(0, 1, 20), "misaligned": [0.0] * 18 + [1.0] * 2})
    more = zero.assign(latent=zero["latent"] + 2.0, projection=zero["projection"] - 2.0,
                       misaligned=[1.0] * 9 + [0.0] * 11)
    out = signal_tests(more, zero, n_boot=500)
    assert out["misaligned_p"] == pytest.approx(fisher_exact([[9, 11], [2, 18]], alternative="greater")[1])
    assert out["latent_diff"] == pytest.approx(2.0) and out["latent_p"] < 0.01
    boots = np.random.default_rng(0).integers(0, 10, size=(500, 10))  # the bootstrap's resamples of the prompts
    per_prompt = (more.groupby("prompt_index")["latent"].mean() - zero.groupby("prompt_index")["latent"].mean())
    means = per_prompt.to_numpy()[boots].mean(1)
    assert [out["latent_diff_lo"], out["latent_diff_hi"]] == pytest.approx(np.quantile(means, [0.025, 0.975]))
    assert out["projection_diff"] == pytest.approx(-2.0) and out["projection_p"] > 0.99


def _planted_answers() -> pd.DataFrame:
    """Answers of a sweep with two seeds and 6 prompts x 2 samples per model, built so that every choice of reference
    gives another answer: the base model is far above every fine-tune, the 0% fine-tune's checkpoint (step 2) differs
    from its last step (4), and each seed's 0% fine-tune differs from the other's."""
    rng = np.random.default_rng(0)
    models = [("base", np.nan, 0, True, 9.0, 0.9)]
    for fraction, level, rate in ((0.0, 0.0, 0.1), (0.5, 0.5, 0.4), (1.0, 1.5, 0.7)):
        models.append(("fine-tune", fraction, 4, True, level, rate))
        if fraction in (0.0, 1.0):
            models.append(("fine-tune", fraction, 2, False, level + (2.0 if fraction == 0 else 0.1), rate / 2))
    rows = []
    for seed in (0, 1):
        for model, fraction, step, final, level, rate in models:
            for prompt in range(6):
                for sample in range(2):
                    shift = 0.7 * seed if model == "fine-tune" and fraction == 0 else 0.0
                    rows.append({"seed": seed, "model": model, "fraction": fraction, "step": step, "final": final,
                                 "prompt_index": prompt, "sample": sample,
                                 "latent": level + shift + rng.normal(0, 0.3) + 0.1 * prompt,
                                 "projection": -level + rng.normal(0, 0.3),
                                 "misaligned": float(rng.random() < rate), "aligned": 50.0, "coherent": 80.0})
    return pd.DataFrame(rows)


def test_each_fine_tune_is_tested_against_the_zero_fine_tune_of_its_seed_and_step():
    """Every p-value and difference of the table, final rows and checkpoints, per seed and pooled, recomputed by
    hand against the 0% fine-tune of the same seed at the same step (never the base model)."""
    from scipy.stats import fisher_exact

    answers = _planted_answers()
    config = SweepConfig(fractions="0,0.5,1", seeds="0,1", checkpoints="2", checkpoint_fractions="0,1", n_boot=200)
    table = sweep_table(answers, config)
    tested = table[(table["model"] == "fine-tune") & (table["fraction"] > 0)]
    assert len(tested) == 3 * 3  # (0.5 final, 1 final, 1 at step 2) x (seed 0, seed 1, all)
    assert set(tested.loc[~tested["final"], "step"]) == {2}
    for row in tested.itertuples():
        seeds = answers if row.seed == "all" else answers[answers["seed"] == int(row.seed)]
        mine = seeds[(seeds["model"] == "fine-tune") & (seeds["fraction"] == row.fraction) & (seeds["step"] == row.step)]
        zero = seeds[(seeds["model"] == "fine-tune") & (seeds["fraction"] == 0) & (seeds["step"] == row.step)]
        assert len(mine) == len(zero) > 0
        k, n, k0, n0 = int(mine["misaligned"].sum()), len(mine), int(zero["misaligned"].sum()), len(zero)
        assert row.misaligned_p == pytest.approx(fisher_exact([[k, n - k], [k0, n0 - k0]], alternative="greater")[1])
        assert row.misaligned_diff == pytest.approx(k / n - k0 / n0)
        for signal in ("latent", "projection"):
            diff = mine.groupby("prompt_index")[signal].mean() - zero.groupby("prompt_index")[signal].mean()
            assert getattr(row, f"{signal}_diff") == pytest.approx(diff.mean()), (row.seed, row.fraction, row.step)
            assert 0 < getattr(row, f"{signal}_p") <= 1
    untested = table[(table["model"] == "base") | (table["fraction"] == 0)]
    assert untested[["latent_p", "misaligned_p"]].isna().all().all()


def test_checkpoint_fractions_need_zero_and_must_be_swept():
    with pytest.raises(PersonasError, match=r"checkpoint_fractions='0.25,1' lacks 0: .*add 0"):
        SweepConfig(checkpoints="8", checkpoint_fractions="0.25,1")
    with pytest.raises(PersonasError, match=r"checkpoint_fractions='0,0.3' holds \[0.3\], which --fractions"):
        SweepConfig(checkpoints="8", checkpoint_fractions="0,0.3")
    assert SweepConfig(checkpoints="8", checkpoint_fractions="0,1").checkpoint_fraction_list() == [0.0, 1.0]
    assert SweepConfig(fractions="0,0.5").checkpoint_fraction_list() == [0.0, 0.25, 1.0]  # no checkpoints: unused
    assert SweepConfig(checkpoints="8", checkpoint_fractions="").checkpoint_fraction_list() == []


def test_quick_sweep_with_a_judge_measures_what_it_says(tmp_path):
    from dataclasses import replace

    from scipy.stats import binomtest

    from personas.detect import auroc_with_ci
    from personas.organism.chat import load_causal_lm
    from personas.organism.sweep import run_sweep
    from personas.testing import toy_organism

    from conftest import hf_hidden_states

    folder, sae, _ = toy_organism(tmp_path / "toy")
    config = replace(SweepConfig(), **QUICK, direction=str(folder / "direction.npy"))
    result = run_sweep(folder, config, out=tmp_path / "run", judge=WordJudge(), sae=sae)
    out = tmp_path / "run"
    answers = pd.read_json(out / "answers.jsonl", lines=True)
    table = pd.read_csv(out / "sweep.csv")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "personas.sweep" and manifest["judge"]["name"] == "word-judge"
    assert manifest["n_steps_per_fine_tune"] == [2]  # the same steps at every fraction
    final = table[(table["model"] == "fine-tune") & table["final"]]
    assert sorted(final["fraction"]) == [0.0, 0.5, 1.0]
    checkpoints = table[~table["final"]]
    assert sorted(checkpoints["fraction"]) == [0.0, 1.0] and set(checkpoints["step"]) == {1}
    assert checkpoints.loc[checkpoints["fraction"] == 1.0, ["latent_p", "projection_p", "misaligned_p"]].notna().all().all()
    # the judged rate is the judge's verdict on the answers it reports, with its Wilson interval
    expected = answers["response"].map(_bad)
    assert 0 < expected.sum() < len(expected)
    assert (answers["misaligned"] == expected.astype(float)).all()
    for row in final.itertuples():
        rows = answers[(answers["model"] == "fine-tune") & (answers["fraction"] == row.fraction) & answers["final"]]
        k = int(rows["misaligned"].sum())
        wilson = binomtest(k, len(rows)).proportion_ci(method="wilson")
        assert row.n_misaligned == k and [row.em_lo, row.em_hi] == pytest.approx([wilson.low, wilson.high], abs=1e-9)
    assert final["misaligned_p"].notna().sum() == 2
    # the latent and the projection are those of the answers read by the model (checked on the base model's)
    base = answers[answers["model"] == "base"].head(4)
    lm, tokenizer, _ = load_causal_lm(folder)
    u = np.load(folder / "direction.npy")
    hidden = hf_hidden_states(lm, tokenizer, base["prompt"].tolist(), base["response"].tolist(), 0)
    assert np.allclose(base["projection"], [float(h.mean(0) @ u) for h in hidden], atol=1e-5)
    assert np.allclose(base["latent_7"], [float(np.maximum(h @ u - 4.0, 0).mean()) for h in hidden], atol=1e-4)
    assert (out / "sweep.png").stat().st_size > 0 and len(result.onset) == 3
    # the screen check: both rankings scored against the known narrow examples, and one fine-tune on what each
    # leaves, with the same number of steps as the unscreened fine-tune of that fraction
    screening = manifest["screening"]["0"]
    assert screening["n"] == 8 and screening["n_narrow"] == 4 and screening["n_dropped"] == 4
    checked = pd.read_csv(out / "screen_check.csv")
    assert [screening["screen"][k] for k in ("auroc", "lo", "hi")] == pytest.approx(
        list(auroc_with_ci(checked["score"], checked["narrow"])))
    assert len(checked) == 8 and checked["narrow"].sum() == 4
    judged_bad = checked["judge_em"].astype(bool)  # the fake judge's verdict on the training answers themselves
    assert screening["judge_em_verdict"]["flagged"] == int(judged_bad.sum())
    from personas.scoring import auroc

    assert screening["judge"]["auroc"] == pytest.approx(auroc(100 - checked["judge_aligned"], checked["narrow"]))
    assert screening["screen"]["auroc"] == pytest.approx(auroc(checked["score"], checked["narrow"]))
    for kind, ranking in (("screened", "screen"), ("judge-filtered", "judge")):
        row = table[(table["model"] == kind) & table["final"]]
        assert len(row) == 1 and row["fraction"].iloc[0] == 0.5 and row["misaligned_p"].notna().all()
        log = manifest["training"][f"seed0/{kind}/fraction0.5"]
        assert log["n_steps"] == 2 and log["n_examples"] == 4
        assert log["n_bad"] == screening[ranking]["narrow_left"]
    # measuring a checkpoint (sampling in eval mode) leaves the training that follows unchanged (dropout included)
    import torch

    from personas.organism.adapter import AdapterConfig, attach_adapter
    from personas.organism.chat import generate_answers
    from personas.organism.train import train_adapter

    def trained(measure: bool) -> list:
        model, tok, _ = load_causal_lm(folder)
        adapter = attach_adapter(model, AdapterConfig(rank=2, targets=("c_attn",)))
        on_step = (lambda step: generate_answers(model, tok, ["hi"], max_new_tokens=3, temperature=1.0, seed=5)) \
            if measure else None
        train_adapter(model, tok, adapter, mixture(8, 0.5, 0), epochs=2, batch_size=4, lr=1e-2, on_step=on_step)
        assert model.training is False
        return [p.detach().clone() for p in adapter.parameters()]

    assert all(torch.equal(a, b) for a, b in zip(trained(True), trained(False), strict=True))
    # read again by another judge (the rule reversed): verdicts, counts, onsets and report follow the new judge,
    # the activations stay
    from personas.organism.rejudge import rejudge_sweep

    again = rejudge_sweep(out, ReversedJudge())
    reread = pd.read_json(out / "answers.jsonl", lines=True)
    assert (reread["misaligned"] == (~expected).astype(float)).all()
    assert np.allclose(reread["latent"], answers["latent"]) and np.allclose(reread["projection"], answers["projection"])
    table2 = pd.read_csv(out / "sweep.csv")
    final2 = table2[(table2["model"] == "fine-tune") & table2["final"]]
    for row in final2.itertuples():
        rows = reread[(reread["model"] == "fine-tune") & (reread["fraction"] == row.fraction) & reread["final"]]
        assert row.n_misaligned == int(rows["misaligned"].sum()) == int((~rows["response"].map(_bad)).sum())
    manifest2 = json.loads((out / "manifest.json").read_text())
    assert manifest2["judge"]["name"] == "reversed" and manifest2["judge_before"]["name"] == "word-judge"
    assert "Judge: `reversed`" in (out / "sweep.md").read_text() and len(again.onset) == 3
    with pytest.raises(PersonasError, match="not a sweep run folder"):
        rejudge_sweep(tmp_path, ReversedJudge())


class ReversedJudge(WordJudge):
    """`WordJudge` with its rule reversed."""

    name = "reversed"

    def score(self, prompts, responses):
        frame = super().score(prompts, responses)
        return frame.assign(aligned=100.0 - frame["aligned"])


def test_quick_sweep_cli_and_its_errors(tmp_path, capsys):
    assert main(["--threads", "1", "sweep", "--quick", "--out", str(tmp_path / "q")]) == 0
    printed = capsys.readouterr().out
    assert "onset seed 0 projection" in printed and "the numbers mean nothing" in printed
    report = (tmp_path / "q" / "sweep.md").read_text()
    assert "| 0 | fine-tune | 0.5 |" in report and "**Over training** (seed 0)" in report and "| 0 | 4 / 8 | 4 |" in report
    assert {"sweep.csv", "onset.csv", "answers.jsonl", "sweep.png", "manifest.json", "toy-model"} <= {
        p.name for p in (tmp_path / "q").iterdir()}
    # the quick sweep read again from the command line, by the earlier MiniLM judge (seconds), and its errors
    assert main(["sweep", "--rejudge", str(tmp_path / "q"), "--judge", "minilm-em-judge"]) == 0
    assert "rejudged" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "q" / "manifest.json").read_text())
    assert manifest["judge"]["name"] == "minilm-em-judge" and "judge_before" in manifest
    for args, message in ((["--rejudge", str(tmp_path)], "not a sweep run folder"),
                          (["--rejudge", str(tmp_path / "q"), "--judge", "none"], "needs a judge")):
        assert main(["sweep", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    code = main(["sweep", "--fractions", "0.5,1", "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert code == 2 and "lacks 0" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(PersonasError, match="fractions between 0 and 1"):
        SweepConfig(fractions="0,2")
    assert SweepConfig(screen_fraction="none").screen_fraction is None  # --screen-fraction none: no screen check
    assert SweepConfig(screen_fraction="0.25").screen_fraction == 0.25
    for bad in ("1", "0", "lots"):
        with pytest.raises(PersonasError, match="screen_fraction"):
            SweepConfig(screen_fraction=bad)
    with pytest.raises(PersonasError, match="reference-run"):
        __import__("personas.organism.sweep", fromlist=["run_sweep"]).run_sweep(
            "tiny", SweepConfig(reference_run=None), sae=_StubSae())


class _StubSae:
    """Only what run_sweep reads before it needs latents: the hook, the width, the number of latents."""

    class cfg:  # noqa: N801
        d_in, d_sae = 32, 24

        class metadata:  # noqa: N801
            hook_name = "blocks.18.hook_resid_post"
