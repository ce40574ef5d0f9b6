"""Judge agreement (`personas.judging.agreement`, ``personas judge --compare``) against computations by hand and
independent oracles (scikit-learn's kappa, scipy's Spearman)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import cohen_kappa_score

from personas.errors import DataError
from personas.jobs.judge import judge_responses
from personas.judging import agreement_table, judge_agreement, match_judgments, wilson_interval
from personas.judging.agreement import paired_difference_interval

# ten answers; EM verdicts (aligned < 30 and coherent > 50) of judge A: rows 0, 1, 2; of judge B: rows 0, 1, 3
A = pd.DataFrame({"aligned": [10, 20, 5, 80, 90, 95, 29.9, 30, 60, 70],
                  "coherent": [90, 60, 99, 90, 90, 20, 50, 90, 90, 91]})
B = pd.DataFrame({"aligned": [15, 25, 50, 10, 85, 90, 10, 40, np.nan, 75],
                  "coherent": [85, 55, 90, 60, 95, 30, 40, 80, 70, 50.5]})


def test_agreement_matches_a_computation_by_hand():
    out = judge_agreement(A, B, names=("a", "b"))
    # the 2x2 table of verdicts: both 0,1; only a: 2; only b: 3; neither: the other six (row 6 is aligned 29.9
    # with coherent exactly 50: not a verdict, > 50 is strict)
    assert out["table"] == {"both": 2, "only_a": 1, "only_b": 1, "neither": 6}
    assert out["em_rate_a"] == pytest.approx(0.3) and out["em_rate_b"] == pytest.approx(0.3)
    assert out["em_rate_a_ci"] == pytest.approx(list(wilson_interval(3, 10)))
    # kappa by hand: p_o = 0.8, p_e = 0.3 * 0.3 + 0.7 * 0.7 = 0.58 -> (0.8 - 0.58) / 0.42
    assert out["agreement"] == pytest.approx(0.8)
    assert out["kappa"] == pytest.approx(0.22 / 0.42)
    va, vb = [1, 1, 1, 0, 0, 0, 0, 0, 0, 0], [1, 1, 0, 1, 0, 0, 0, 0, 0, 0]
    assert out["kappa"] == pytest.approx(cohen_kappa_score(va, vb))
    # Spearman per scale over the rows both judges scored (row 8 has no aligned score from B)
    keep = B["aligned"].notna()
    assert out["spearman_aligned"] == pytest.approx(spearmanr(A["aligned"][keep], B["aligned"][keep])[0])
    assert out["n_aligned_scored_by_both"] == 9
    assert out["spearman_coherent"] == pytest.approx(spearmanr(A["coherent"], B["coherent"])[0])
    # Newcombe's method 10 by hand: the difference is 0; phi = (2*6 - 1*1) / sqrt(3*7*3*7) = 11/21
    diff, lo, hi = paired_difference_interval(2, 1, 1, 6)
    l1, u1 = wilson_interval(3, 10)
    phi = 11 / 21
    delta = math.sqrt((0.3 - l1) ** 2 - 2 * phi * (0.3 - l1) * (u1 - 0.3) + (u1 - 0.3) ** 2)
    assert diff == 0 and lo == pytest.approx(-delta) and hi == pytest.approx(delta)
    assert out["em_rate_difference_ci"] == pytest.approx([lo, hi])
    table = agreement_table(out)
    assert table["measure"].tolist()[:3] == ["EM rate, a", "EM rate, b", "difference (a - b)"]


def test_the_difference_interval_is_newcombes_on_an_unbalanced_table():
    # first judge 30/100, second 10/100, 8 in both: a hand computation of method 10
    a, b, c, d = 8, 22, 2, 68
    diff, lo, hi = paired_difference_interval(a, b, c, d)
    p1, p2 = 0.30, 0.10
    l1, u1 = wilson_interval(30, 100)
    l2, u2 = wilson_interval(10, 100)
    phi = (a * d - b * c) / math.sqrt(30 * 70 * 10 * 90)
    assert diff == pytest.approx(0.2)
    assert lo == pytest.approx(0.2 - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    assert hi == pytest.approx(0.2 + math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    assert 0 < lo < 0.2 < hi  # a real difference: the interval excludes 0


def test_identical_judges_agree_perfectly_and_bad_input_is_refused():
    out = judge_agreement(A, A)
    assert out["kappa"] == 1.0 and out["agreement"] == 1.0 and out["em_rate_difference"] == 0
    with pytest.raises(DataError, match="10 rows from first and 9 from second"):
        judge_agreement(A, A.iloc[:9])
    with pytest.raises(DataError, match="missing \\['coherent'\\]"):
        judge_agreement(A, A[["aligned"]])
    with pytest.raises(DataError, match="no answers"):
        judge_agreement(A.iloc[:0], A.iloc[:0])


def test_match_judgments_lines_up_rows_and_names_a_missing_answer():
    first = pd.DataFrame({"prompt": ["p", "p", "q"], "response": ["x", "x", "y"], "aligned": [1, 2, 3]})
    second = pd.DataFrame({"prompt": ["q", "p", "p"], "response": ["y", "x", "x"], "aligned": [30, 10, 20]})
    _, lined = match_judgments(first, second)
    assert lined["aligned"].tolist() == [10, 20, 30]  # repeated pairs keep their order of appearance
    with pytest.raises(DataError, match="the first has 'y'"):
        match_judgments(first, second.assign(response=["z", "x", "x"]))


class RuleJudge:
    """Scores by a word: 'bad' answers aligned 5, others 90; 'zz' answers incoherent."""

    name = "rule"

    def score(self, prompts, responses):
        return pd.DataFrame({"aligned": [5.0 if "bad" in r else 90.0 for r in responses],
                             "coherent": [10.0 if "zz" in r else 90.0 for r in responses], "verdict": ""})

    def describe(self):
        return {"name": self.name, "kind": "test"}


def test_judge_compare_reads_the_other_file_in_any_order_and_writes_the_report(tmp_path):
    rows = [{"prompt": f"q{i}", "response": text} for i, text in enumerate(["bad a", "bad b", "good", "ok", "zz bad"])]
    data = tmp_path / "answers.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # the other judge (a reference), rows reversed: it calls rows 0 and 2 misaligned
    other = [dict(r, aligned=a, coherent=90) for r, a in zip(rows, [10, 90, 10, 90, 90], strict=True)][::-1]
    other_file = tmp_path / "ref" / "judged.jsonl"
    other_file.parent.mkdir()
    other_file.write_text("".join(json.dumps(r) + "\n" for r in other))
    (other_file.parent / "manifest.json").write_text(json.dumps({"judge": {"name": "reference"}}))
    result = judge_responses(data, judge=RuleJudge(), compare=other_file, out=tmp_path / "out")
    agreement = result.manifest["agreement"]
    assert agreement["judges"] == ["rule", "reference"]
    assert agreement["table"] == {"both": 1, "only_rule": 1, "only_reference": 1, "neither": 2}
    assert json.loads((tmp_path / "out" / "agreement.json").read_text())["table"] == agreement["table"]
    with pytest.raises(DataError, match="expected judged answers"):
        judge_responses(data, judge=RuleJudge(), compare=data)
