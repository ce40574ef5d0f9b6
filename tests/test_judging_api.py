"""The API judge against a chat-completions server the tests start on 127.0.0.1 (`judge_server`): scores from
logprobs checked against hand-computed oracles, verdicts, the text fallback, retries, timeouts, malformed replies,
the cache, the concurrency bound, and a key that is sent but never written anywhere."""

from __future__ import annotations

import json
import math
import socket
import time

import pytest

from personas.errors import DataError, PersonasError
from personas.judging import load_judge
from personas.judging.api import ApiError, ApiJudge, logprob_score, parse_spec, text_score, verdict_of
from personas.judging.judgment_cache import JudgmentCache

from judge_server import JudgeServer, answer_of, completion, metric_of

OK = 200
#: Canned first-token distributions per answer and metric, and the scores they must give (computed by hand).
CANNED = {
    # aligned: (80*.5 + 90*.2 + 100*.1) / (.5+.2+.1) = 68/.8 = 85; "150" and "-5" are not 0-100, "REF" no number
    "weighted": {"aligned": [("80", .5), ("90", .2), (" 100", .1), ("REF", .1), ("150", .05), ("-5", .05)],
                 # coherent: (40*.3 + 60*.3) / .6 = 50
                 "coherent": [("40", .3), ("60", .3), ("hello", .4)]},
    # aligned: 10 alone -> 10 (mass .3 >= .25); coherent: mass .2 < .25 -> no score
    "low": {"aligned": [("10", .3), ("I", .7)], "coherent": [("95", .2), ("The", .8)]},
    "refusal": {"aligned": [("REF", .9), ("0", .05), ("I", .05)], "coherent": [("90", 1.0)]},
    "code": {"aligned": [("CODE", .8), ("50", .1), ("```", .1)], "coherent": [("70", .6), ("80", .4)]},
}
EXPECTED = {"weighted": (85.0, 50.0, ""), "low": (10.0, math.nan, ""), "refusal": (math.nan, 90.0, "REFUSAL"),
            "code": (math.nan, 74.0, "CODE")}


def canned(body, index):
    top = CANNED[answer_of(body)][metric_of(body)]
    return OK, {}, completion(max(top, key=lambda t: t[1])[0], top), 0.0


def judge(server, tmp_path, **options):
    options = {"cache_dir": tmp_path / "cache", "backoff": 0.01, "max_retries": 3, "timeout": 5.0, **options}
    return ApiJudge.from_spec(f"{server.url}:judge-model", **options)


def assert_frame(frame, names):
    for row, name in zip(frame.itertuples(), names, strict=True):
        aligned, coherent, verdict = EXPECTED[name]
        for got, want in ((row.aligned, aligned), (row.coherent, coherent)):
            assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, abs=1e-9), (name, got, want)
        assert row.verdict == verdict, name


def test_scores_are_the_probability_weighted_mean_of_number_tokens(tmp_path):
    names = list(CANNED)
    with JudgeServer(canned) as server:
        frame = judge(server, tmp_path).score(["q?"] * len(names), names)
    assert list(frame.columns) == ["aligned", "coherent", "verdict"]
    assert_frame(frame, names)
    assert len(server.requests) == 2 * len(names)
    path, headers, body = server.requests[0]
    assert path == "/v1/chat/completions" and "Authorization" not in headers  # no key for a local server
    assert body["model"] == "judge-model" and body["max_tokens"] == 1 and body["logprobs"] is True
    assert body["top_logprobs"] == 20 and body["temperature"] == 0


def test_the_pure_scoring_helpers():
    assert logprob_score([("1", math.log(.25)), ("x", math.log(.75))]) == (1.0, pytest.approx(.25))
    assert math.isnan(logprob_score([("1", math.log(.24)), ("x", math.log(.76))])[0])
    assert [verdict_of(t, "aligned") for t in ("REF", "REFUSAL.", " CODE", "CO", "Coherent", "85")] == \
        ["REFUSAL", "REFUSAL", "CODE", "", "", ""]
    assert verdict_of("REFUSAL", "coherent") == ""
    assert [text_score(t) for t in ("85", "Score: 72.5/100", "3.")] == [85.0, 72.5, 3.0]
    assert math.isnan(text_score("no idea")) and math.isnan(text_score("250"))


def script_failing_first(status, headers=None, body=None):
    def script(body_in, index):
        if index == 0:
            return status, headers or {}, body or {"error": {"message": "slow down"}}, 0.0
        return canned(body_in, index)
    return script


def test_a_429_is_retried_after_its_retry_after(tmp_path):
    with JudgeServer(script_failing_first(429, {"Retry-After": "0.3"})) as server:
        start = time.monotonic()
        frame = judge(server, tmp_path, concurrency=1, backoff=0.001).score(["q?"], ["weighted"])
        elapsed = time.monotonic() - start
    assert_frame(frame, ["weighted"])
    assert len(server.requests) == 3  # the 429, its retry, the other metric
    assert elapsed >= 0.3  # the Retry-After, not the 1 ms back-off


def test_a_500_is_retried(tmp_path):
    with JudgeServer(script_failing_first(500, body=b"upstream exploded")) as server:
        frame = judge(server, tmp_path, concurrency=1).score(["q?"], ["code"])
    assert_frame(frame, ["code"])
    assert len(server.requests) == 3


def test_retries_run_out_with_a_clear_error(tmp_path):
    with JudgeServer(lambda body, index: (503, {}, {"error": "overloaded"}, 0.0)) as server:
        with pytest.raises(ApiError, match=r"gave up after 3 tries; the last: HTTP 503 \(overloaded\)"):
            judge(server, tmp_path, max_retries=2, concurrency=1).score(["q?"], ["weighted"])
    assert len(server.requests) == 3  # the first failure stops the other metric's request


@pytest.mark.parametrize("reply, message", [
    (b"<html>gateway</html>", "a body that is not a JSON object ('<html>gateway</html>')"),
    ({"object": "list", "data": []}, "a JSON body without 'choices'"),
])
def test_a_malformed_body_is_a_clear_error(tmp_path, reply, message):
    with JudgeServer(lambda body, index: (OK, {}, reply, 0.0)) as server:
        with pytest.raises(ApiError, match="expected an OpenAI chat completion") as info:
            judge(server, tmp_path, concurrency=1).score(["q?"], ["weighted"])
    assert message in str(info.value)
    assert len(server.requests) == 1  # not retried


def test_a_4xx_shows_the_servers_message_and_is_not_retried(tmp_path):
    reply = {"error": {"message": "The model `judge-model` does not exist", "type": "invalid_request_error"}}
    with JudgeServer(lambda body, index: (404, {}, reply, 0.0)) as server:
        with pytest.raises(ApiError, match=r"HTTP 404: The model `judge-model` does not exist\. .*check the URL"):
            judge(server, tmp_path, concurrency=1).score(["q?"], ["weighted"])
    assert len(server.requests) == 1


def test_a_slow_reply_times_out_then_is_retried_or_ends_in_a_clear_error(tmp_path):
    def slow_first(body, index):
        status, headers, payload, _ = canned(body, index)
        return status, headers, payload, 0.6 if index == 0 else 0.0
    with JudgeServer(slow_first) as server:
        frame = judge(server, tmp_path, timeout=0.2, concurrency=1).score(["q?"], ["low"])
    assert_frame(frame, ["low"])
    assert len(server.requests) == 3
    with JudgeServer(lambda body, index: (OK, {}, completion("1", [("1", 1.0)]), 0.6)) as server:
        with pytest.raises(ApiError, match=r"gave up after 2 tries; the last: no reply within 0\.2 s"):
            judge(server, tmp_path / "b", timeout=0.2, max_retries=1, concurrency=1).score(["q?"], ["x"])


def test_an_unreachable_server_is_a_clear_error(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(ApiError, match=r"gave up after 2 tries; the last: could not reach http://127\.0\.0\.1"):
        ApiJudge.from_spec(f"http://127.0.0.1:{port}/v1:m", cache_dir=tmp_path, max_retries=1,
                           backoff=0.01).score(["q?"], ["a"])


def text_only(body, index):
    """A server without logprobs: the number (or word) is in the text, when asked for enough tokens."""
    if body["max_tokens"] == 1:
        return OK, {}, completion("8"), 0.0  # one digit of "85": must not be read as a score
    return OK, {}, completion({"weighted": "Score: 85", "refusal": "REFUSAL", "low": "I cannot say"}[answer_of(body)]
                              if metric_of(body) == "aligned" else "40"), 0.0


def test_without_logprobs_the_score_is_read_from_the_text(tmp_path, caplog):
    names = ["weighted", "refusal", "low"]
    with JudgeServer(text_only) as server:
        j = judge(server, tmp_path, concurrency=1)
        frame = j.score(["q?"] * 3, names)
    assert frame["aligned"].tolist()[0] == 85.0 and math.isnan(frame["aligned"].tolist()[1])
    assert math.isnan(frame["aligned"].tolist()[2]) and frame["verdict"].tolist() == ["", "REFUSAL", ""]
    assert frame["coherent"].tolist() == [40.0] * 3
    # one logprobs request finds none; every later request asks for text straight away
    assert [b["max_tokens"] for b in server.bodies()] == [1] + [8] * 6
    assert j.stats["modes"] == {"text": 6} and "returned no logprobs" in caplog.text


def test_a_server_that_refuses_logprobs_is_read_as_text(tmp_path):
    def refuses(body, index):
        if body.get("logprobs"):
            return 400, {}, {"error": {"message": "logprobs is not supported by this model"}}, 0.0
        return OK, {}, completion("62"), 0.0
    with JudgeServer(refuses) as server:
        frame = judge(server, tmp_path, concurrency=1).score(["q?"], ["a"])
    assert frame["aligned"].tolist() == [62.0] and frame["coherent"].tolist() == [62.0]


def test_the_cache_makes_a_rerun_free_and_a_broken_run_resumes(tmp_path):
    names = list(CANNED)
    with JudgeServer(canned) as server:
        first = judge(server, tmp_path).score(["q?"] * 4, names)
        assert len(server.requests) == 8
        again = judge(server, tmp_path).score(["q?"] * 4, names)
        assert len(server.requests) == 8  # nothing asked twice
    assert first.equals(again)

    broken = {"on": True}

    def fails_on_code(body, index):
        if broken["on"] and answer_of(body) == "code":
            return 400, {}, {"error": {"message": "bad request"}}, 0.0
        return canned(body, index)
    with JudgeServer(fails_on_code) as server:
        other = [f"{n}" for n in names]
        with pytest.raises(ApiError):
            judge(server, tmp_path / "other", concurrency=1).score(["another q?"] * 4, other)
        with JudgmentCache(tmp_path / "other" / "cache") as cache:
            kept = len(cache)
        assert 0 < kept < 8  # the judgments made before the failure were kept
        broken["on"] = False
        n_before = len(server.requests)
        frame = judge(server, tmp_path / "other").score(["another q?"] * 4, other)
        assert len(server.requests) - n_before == 8 - kept  # only the missing ones
    assert_frame(frame, names)


def test_the_key_is_sent_but_never_written(tmp_path, monkeypatch, caplog):
    secret = "sk-test-NEVER-WRITE-ME-0123456789"
    monkeypatch.setenv("PERSONAS_TEST_JUDGE_KEY", secret)
    caplog.set_level("DEBUG")
    with JudgeServer(canned) as server:
        j = judge(server, tmp_path, api_key_env="PERSONAS_TEST_JUDGE_KEY")
        j.score(["q?"] * 2, ["weighted", "code"])
        assert {h["Authorization"] for _, h, _ in server.requests} == {f"Bearer {secret}"}
    with JudgeServer(lambda body, index: (401, {}, {"error": f"Incorrect API key provided: {secret}"}, 0.0)) as server:
        with pytest.raises(ApiError) as info:
            judge(server, tmp_path, api_key_env="PERSONAS_TEST_JUDGE_KEY").score(["q?"], ["new"])
    assert "HTTP 401: Incorrect API key provided: [api key]" in str(info.value)
    written = b"".join(p.read_bytes() for p in (tmp_path / "cache").iterdir())
    assert written and secret.encode() not in written
    for text in (json.dumps(j.describe()), repr(j), str(info.value), caplog.text):
        assert secret not in text
    assert j.describe()["api_key_env"] == "PERSONAS_TEST_JUDGE_KEY"


def test_an_openai_spec_without_its_key_is_refused_before_any_request(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(PersonasError, match=r"needs an API key in the environment variable \$OPENAI_API_KEY"):
        load_judge("openai:gpt-4o", cache_dir=tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    j = load_judge("openai:gpt-4o", cache_dir=tmp_path)
    assert j.name == "openai:gpt-4o" and j.describe()["endpoint"] == "https://api.openai.com/v1"


def test_concurrency_is_bounded(tmp_path):
    def slowish(body, index):
        status, headers, payload, _ = canned(body, index)
        return status, headers, payload, 0.05
    with JudgeServer(slowish) as server:
        judge(server, tmp_path, concurrency=3).score(["q?"] * 8, list(CANNED) * 2)
    # 8 answers x 2 metrics, but 4 distinct answers: repeated pairs are asked once
    assert len(server.requests) == 8
    assert server.max_in_flight == 3


@pytest.mark.parametrize("spec, fragment", [
    ("http://localhost:8000/v1", "is not an API judge spec"),
    ("http://localhost:8000:qwen", "is not an API judge spec"),
    ("openai:", "names no model"),
    ("http://user:hunter2@localhost/v1", "'http://localhost/v1' is not"),
])
def test_malformed_specs(spec, fragment):
    with pytest.raises(DataError, match="expected 'openai:MODEL'") as info:
        parse_spec(spec)
    assert fragment in str(info.value) and "hunter2" not in str(info.value)


def test_specs_and_options(tmp_path):
    assert parse_spec("http://localhost:11434/v1:llama3.1:8b") == ("http://localhost:11434/v1", "llama3.1:8b")
    j = load_judge("http://127.0.0.1:9/v1:m", cache_dir=tmp_path, concurrency=2)
    assert isinstance(j, ApiJudge) and j.concurrency == 2 and j.describe()["kind"] == "api"
    with pytest.raises(DataError, match=r"unknown option\(s\) \['batch_size'\]"):
        load_judge("http://127.0.0.1:9/v1:m", batch_size=3)
    with pytest.raises(DataError, match="concurrency=0"):
        load_judge("http://127.0.0.1:9/v1:m", concurrency=0)


def test_a_killed_run_resumes_with_the_missing_judgments_only(tmp_path):
    """A process killed (SIGKILL) while waiting on its fifth request keeps the four judgments it had."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    names = list(CANNED)

    def hangs_after_four(body, index):
        status, headers, payload, _ = canned(body, index)
        return status, headers, payload, 60.0 if index >= 4 else 0.0
    code = ("import sys; from personas.judging.api import ApiJudge; "
            "ApiJudge.from_spec(sys.argv[1], cache_dir=sys.argv[2], concurrency=1).score(['q?'] * 4, sys.argv[3:])")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    with JudgeServer(hangs_after_four) as server:
        child = subprocess.Popen([sys.executable, "-c", code, f"{server.url}:judge-model", str(tmp_path), *names],
                                 env=env)
        try:
            deadline = time.monotonic() + 60
            while len(server.requests) < 5 and time.monotonic() < deadline and child.poll() is None:
                time.sleep(0.05)
            time.sleep(0.3)  # the fourth judgment's commit
        finally:
            child.kill()
            child.wait()
    assert len(server.requests) == 5
    with JudgmentCache(tmp_path) as cache:
        assert len(cache) == 4
    with JudgeServer(canned) as server:
        frame = ApiJudge.from_spec(f"{server.url}:judge-model", cache_dir=tmp_path).score(["q?"] * 4, names)
    assert len(server.requests) == 4
    assert_frame(frame, names)
