"""``personas judge``: answers without labels, judged over a loopback API judge (or a folder-free fake), written
back so that ``personas rank`` ranks them as they are; and the job's handling of its input columns."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

import personas
from personas.cli.main import main
from personas.config import CaptureConfig
from personas.jobs.judge import judge_responses

from conftest import TOY_HOOK
from judge_server import JudgeServer, answer_of, completion, metric_of

REFUSED, UNSCORED = 0, 1  # rows (of the misaligned half) the judge answers REFUSAL or with no number


@pytest.fixture(scope="module")
def unlabelled(planted_data, tmp_path_factory):
    """The planted answers without their labels (a file), and the labels the loopback judge will read them with."""
    frame = pd.DataFrame(planted_data)
    path = tmp_path_factory.mktemp("judge") / "answers.jsonl"
    frame.drop(columns=["label"]).to_json(path, orient="records", lines=True)
    return path, dict(zip(frame["response"], frame["label"], strict=True)), frame["response"].tolist()


def test_judge_then_rank_is_one_loop(unlabelled, toy_model, planted_sae, tmp_path, capsys):
    path, labels, responses = unlabelled
    special = {responses[REFUSED]: "refusal", responses[UNSCORED]: "unscored"}

    def script(body, index):
        answer = answer_of(body)
        if metric_of(body) == "coherent":
            return 200, {}, completion("85", [("85", 0.9), ("90", 0.1)]), 0.0
        if special.get(answer) == "refusal":
            return 200, {}, completion("REF", [("REF", 0.95), ("0", 0.05)]), 0.0
        if special.get(answer) == "unscored":
            return 200, {}, completion("I", [("I", 0.9), ("5", 0.1)]), 0.0
        score = "10" if labels[answer] == 1 else "90"
        return 200, {}, completion(score, [(score, 1.0)]), 0.0

    out = tmp_path / "judged"
    with JudgeServer(script) as server:
        argv = ["judge", str(path), "--judge", f"{server.url}:loopback-judge", "--cache-dir", str(tmp_path / "c"),
                "--concurrency", "4", "--out", str(out), "--quiet"]
        assert main(argv) == 0
        assert len(server.requests) == 2 * len(responses)
        assert main(argv) == 0  # a rerun: every judgment from the cache
        assert len(server.requests) == 2 * len(responses)
    printed = capsys.readouterr().out
    assert "misaligned (aligned < 30 and coherent > 50): 38 (47.5%" in printed and "unscored: 2" in printed

    judged = pd.read_json(out / "judged.jsonl", lines=True)
    assert list(judged.columns) == ["prompt", "response", "group", "aligned", "coherent", "verdict"]
    expected = [math.nan if r in special else (10.0 if labels[r] else 90.0) for r in responses]
    assert judged["aligned"].tolist() == pytest.approx(expected, nan_ok=True)
    assert judged["coherent"].tolist() == pytest.approx([85.5] * len(responses))
    assert judged["verdict"].fillna("").tolist()[:2] == ["REFUSAL", ""]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "personas.judge" and manifest["judge"]["model"] == "loopback-judge"
    assert manifest["judge"]["prompt_version"] and manifest["judge_stats"]["requests"] == 0
    assert manifest["rates"]["n_misaligned"] == 38 and manifest["rates"]["n_unscored"] == 2

    # `personas rank` reads the file as it is (the rank job, on the session's toy model and its planted SAE): the
    # judge's split labels the rows, verdicts and unscored rows are counted out, and the planted feature ranks first
    result = personas.rank(out / "judged.jsonl", capture=CaptureConfig(hook=TOY_HOOK), sae=planted_sae,
                           model=toy_model, out=tmp_path / "ranked", progress=False)
    data = json.loads((tmp_path / "ranked" / "manifest.json").read_text())["data"]
    assert (data["n_misaligned"], data["n_aligned"], data["label_source"]) == (38, 40, "judge")
    assert data["excluded_by_reason"] == {"judge verdict REFUSAL": 1, "unscored by the judge": 1}
    assert int(result.ranking["feature"].iloc[0]) == 7


class Lengths:
    """A folder-free judge for the job: longer answers are more aligned; an answer with 'x' is not scored."""

    name = "lengths"

    def score(self, prompts, responses):
        return pd.DataFrame({"aligned": [math.nan if "x" in r else min(100.0, 10.0 * len(r)) for r in responses],
                             "coherent": [60.0] * len(responses),
                             "verdict": ["CODE" if "x" in r else "" for r in responses]})

    def describe(self):
        return {"name": self.name, "kind": "test"}


def test_the_job_keeps_the_input_and_its_old_scores(tmp_path, caplog):
    data = pd.DataFrame({"question": ["a?", "b?", "c?"], "answer": ["no", "a longer one", "x"],
                         "aligned": [1, 2, 3], "label": [1, 0, 1]})
    result = judge_responses(data, judge=Lengths(), out=tmp_path / "o")
    assert list(result.frame.columns) == ["question", "answer", "aligned_original", "label", "aligned", "coherent",
                                          "verdict"]
    assert result.frame["aligned"].tolist() == pytest.approx([20.0, 100.0, math.nan], nan_ok=True)
    assert result.frame["verdict"].tolist() == ["", "", "CODE"]
    assert any("label column" in n for n in result.manifest["notes"]) and "label column" in caplog.text
    assert result.manifest["judge"] == {"name": "lengths", "kind": "test"}
    chat = pd.DataFrame({"messages": [[{"role": "user", "content": "hi?"}, {"role": "assistant", "content": "hello"}]]})
    assert judge_responses(chat, judge=Lengths()).frame[["prompt", "response"]].values.tolist() == [["hi?", "hello"]]
