"""`personas serve`: the official `openai` client against the server on 127.0.0.1, plain and streamed, with the
``persona`` verdict; a planted persona direction flagged through the whole path (batch, stream, scored text); every
bad request a clear 4xx that leaves the server up; metrics, the dashboard, the API key, the webhook, disconnects,
the judge cascade and the command line."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

# the serve extra and the clients of the tests (all in the dev extra): without them these tests are skipped
pytest.importorskip("fastapi", reason='the server needs the serve extra: pip install "personas[serve]"')
pytest.importorskip("uvicorn", reason='the server needs the serve extra: pip install "personas[serve]"')
pytest.importorskip("prometheus_client", reason='the server needs the serve extra: pip install "personas[serve]"')
pytest.importorskip("httpx", reason="the server's tests send requests with httpx (pip install httpx)")
pytest.importorskip("openai", reason="the server's tests use the official openai client (pip install openai)")

import httpx
import openai

from personas.config import ServeConfig
from personas.monitoring import Monitor, read_events
from personas.serve import ServerThread, build_state

from planted_monitor import carries, make_planted

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
KEY = "sk-personas-test-Zq81xLw0"


class WordJudge:
    """A judge that calls an answer misaligned exactly when it holds a planted word."""

    name = "words"

    def score(self, prompts, responses):
        return pd.DataFrame({"aligned": [10.0 if carries(r) else 90.0 for r in responses],
                             "coherent": [80.0] * len(responses), "verdict": [""] * len(responses)})

    def describe(self):
        return {"name": "words", "kind": "test"}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return make_planted(tmp_path_factory.mktemp("planted"))


@pytest.fixture(scope="module")
def monitor(planted):
    return Monitor(planted.model, planted.detector_dir)


@pytest.fixture(scope="module")
def server(planted, monitor, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve")
    config = ServeConfig(out=str(out), monitor="none", max_messages=8, max_tokens_limit=64, default_max_tokens=10,
                         max_body_bytes=20_000, batch_window_ms=50)
    state = build_state(config, model=planted.model, monitor=monitor, judge=WordJudge())
    with ServerThread(state) as srv:
        yield srv


def _client(srv, key="unused"):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0, timeout=60)


def _ask(client, model, seed, stream=False, **extra):
    messages = [{"role": "user", "content": "what should i do about my money ?"}]
    if not stream:
        reply = client.chat.completions.create(model=model, messages=messages, max_tokens=10, temperature=1.0,
                                               seed=seed, **extra)
        return reply.choices[0].message.content, reply.persona, reply
    chunks = list(client.chat.completions.create(model=model, messages=messages, max_tokens=10, temperature=1.0,
                                                 seed=seed, stream=True, **extra))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(final) == 1
    return text, final[0].persona, chunks


# ------------------------------------------------------------------------------------------------ the API


def test_openai_client_plain_and_streamed(server):
    client = _client(server)
    name = server.state.served_name
    listed = client.models.list().data
    assert [m.id for m in listed] == [name] and listed[0].persona_monitor["hook"] == "blocks.0.hook_resid_post"
    text, persona, reply = _ask(client, name, seed=7)
    assert reply.object == "chat.completion" and reply.choices[0].finish_reason in ("stop", "length") and text
    assert reply.usage.completion_tokens >= 1 and reply.usage.prompt_tokens > 5
    assert set(persona) >= {"score", "flagged", "threshold", "max_token_score", "top_latents", "token_scores"}
    assert persona["flagged"] == (persona["score"] >= persona["threshold"]) == carries(text)
    streamed, streamed_persona, chunks = _ask(client, name, seed=7, stream=True,
                                              stream_options={"include_usage": True})
    assert streamed == text  # the same seed: the same answer, whether streamed or not
    assert streamed_persona["score"] == pytest.approx(persona["score"])
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].usage.completion_tokens >= 1


def test_planted_persona_is_flagged_through_batch_and_stream(server):
    """Concurrent clients are batched; every answer that carries the planted direction is flagged, every other not,
    whether streamed or not; text the server did not generate is scored through the same model."""
    client = _client(server)
    name = server.state.served_name
    before = server.state.engine.batches
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda s: _ask(client, name, seed=s, stream=s % 2 == 0)[:2], range(100, 124)))
    assert server.state.engine.batches - before < len(answers)  # some requests shared a batch
    assert [p["flagged"] for _, p in answers] == [carries(t) for t, _ in answers]
    assert 0 < sum(p["flagged"] for _, p in answers) < len(answers)
    reply = httpx.post(server.url + "/v1/persona/score", timeout=60, json={"pairs": [
        {"prompt": "hi", "response": "you should steal it and hide"}, {"prompt": "hi", "response": "rest and sleep"}]})
    assert reply.status_code == 200
    assert [d["persona"]["flagged"] for d in reply.json()["data"]] == [True, False]


BAD = [  # (what, request kwargs, status, error code)
    ("malformed JSON", {"content": b"{not json"}, 400, "invalid_json"),
    ("empty body", {"content": b""}, 400, "invalid_body"),
    ("a JSON array", {"json": [1, 2]}, 400, "invalid_body"),
    ("oversized body", {"content": b'{"model": "' + b"a" * 30_000 + b'"}'}, 413, "request_too_large"),
    ("unknown model", {"json": {"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}}, 404,
     "model_not_found"),
    ("no messages", {"json": {"model": "M"}}, 400, "missing"),
    ("messages not a list", {"json": {"model": "M", "messages": "hi"}}, 400, "invalid_type"),
    ("too many messages", {"json": {"model": "M", "messages": [{"role": "user", "content": "hi"}] * 9}}, 400,
     "too_many_messages"),
    ("content not text", {"json": {"model": "M", "messages": [{"role": "user", "content": 5}]}}, 400, "invalid_type"),
    ("unknown role", {"json": {"model": "M", "messages": [{"role": "robot", "content": "hi"}]}}, 400,
     "invalid_value"),
    ("max_tokens too large", {"json": {"model": "M", "messages": [{"role": "user", "content": "hi"}],
                                       "max_tokens": 10_000}}, 400, "invalid_value"),
    ("max_tokens not an integer", {"json": {"model": "M", "messages": [{"role": "user", "content": "hi"}],
                                            "max_tokens": 1.5}}, 400, "invalid_type"),
    ("temperature a string", {"json": {"model": "M", "messages": [{"role": "user", "content": "hi"}],
                                       "temperature": "hot"}}, 400, "invalid_type"),
    ("top_p zero", {"json": {"model": "M", "messages": [{"role": "user", "content": "hi"}], "top_p": 0}}, 400,
     "invalid_value"),
    ("stop a number", {"json": {"model": "M", "messages": [{"role": "user", "content": "hi"}], "stop": 5}}, 400,
     "invalid_type"),
    ("stream a string", {"json": {"model": "M", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}},
     400, "invalid_type"),
    ("n = 2", {"json": {"model": "M", "messages": [{"role": "user", "content": "hi"}], "n": 2}}, 400,
     "unsupported_value"),
    ("tools", {"json": {"model": "M", "messages": [{"role": "user", "content": "hi"}], "tools": [{"x": 1}]}}, 400,
     "unsupported_parameter"),
    ("prompt too long for the context", {"json": {"model": "M", "messages": [
        {"role": "user", "content": " ".join(["money"] * 300)}]}}, 400, "context_length_exceeded"),
]


@pytest.mark.parametrize("what,kwargs,status,code", BAD, ids=[b[0] for b in BAD])
def test_every_bad_request_gets_a_clear_4xx(server, what, kwargs, status, code):
    kwargs = json.loads(json.dumps(kwargs).replace('"M"', json.dumps(server.state.served_name))) \
        if "json" in kwargs else kwargs
    reply = httpx.post(server.url + "/v1/chat/completions", timeout=30, **kwargs)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["code"] == code and len(error["message"]) > 20 and "Traceback" not in reply.text
    assert httpx.get(server.url + "/health").json()["status"] == "ok"  # the server is still up


def test_other_bad_requests_and_the_server_stays_up(server):
    url = server.url
    assert httpx.get(url + "/nowhere").status_code == 404 and "error" in httpx.get(url + "/nowhere").json()
    assert httpx.get(url + "/v1/chat/completions").status_code == 405
    assert httpx.post(url + "/v1/persona/score", json={"pairs": [{"prompt": "a", "response": ""}]}).status_code == 400
    assert httpx.post(url + "/v1/persona/score", json={"prompts": ["a"]}).status_code == 400
    assert httpx.get(url + "/v1/models/gpt-9").status_code == 404
    text, persona, _ = _ask(_client(server), server.state.served_name, seed=1)
    assert text and persona is not None


def test_an_oversized_body_without_its_length_is_refused_as_it_streams(server):
    """A chunked body names no Content-Length: the server counts the bytes as they come and stops at its limit."""

    def pieces():
        yield b'{"model": "'
        for _ in range(30):
            yield b"a" * 1_000
        yield b'"}'

    reply = httpx.post(server.url + "/v1/chat/completions", content=pieces(), timeout=30)
    assert reply.status_code == 413 and reply.json()["error"]["code"] == "request_too_large", reply.text
    assert httpx.get(server.url + "/health").json()["status"] == "ok"


def test_metrics_parse_as_prometheus_text(server):
    from prometheus_client.parser import text_string_to_metric_families

    _ask(_client(server), server.state.served_name, seed=3)
    httpx.post(server.url + "/v1/chat/completions", content=b"{bad")
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(server.url + "/metrics").text)}
    for name in ("personas_requests", "personas_answers", "personas_flagged", "personas_persona_score",
                 "personas_request_latency_seconds", "personas_queue_depth", "personas_generated_tokens"):
        assert name in families, sorted(families)

    def value(family, sample_name, **labels):
        return sum(s.value for s in families[family].samples
                   if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()))

    rec = server.state.recorder
    answers = value("personas_answers", "personas_answers_total")
    assert answers == rec.n_answers and value("personas_flagged", "personas_flagged_total") == rec.n_flagged
    assert value("personas_persona_score", "personas_persona_score_count") == answers
    assert value("personas_requests", "personas_requests_total", endpoint="/v1/chat/completions", status="400") >= 1
    assert value("personas_flag_threshold", "personas_flag_threshold") == pytest.approx(server.state.monitor.threshold)


def test_judge_cascade_and_event_log(server):
    state = server.state
    _ask(_client(server), state.served_name, seed=104)
    assert state.recorder.cascade.drain(30)
    stats = httpx.get(server.url + "/v1/persona/stats").json()
    review = stats["judge"]["review"]
    assert review["n"] == state.recorder.n_flagged >= 1  # every flagged answer was reviewed
    assert review["agreement"]["rate"] == 1.0 and review["precision"]["rate"] == 1.0
    assert stats["answers"]["n"] == state.recorder.n_answers
    events, bad = read_events(state.recorder.events.path)
    flags = [e for e in events if e["type"] == "flag"]
    judged = [e for e in events if e["type"] == "judge"]
    assert bad == 0 and len(flags) == state.recorder.n_flagged and all(carries(e["answer"]) for e in flags)
    assert {e["id"] for e in judged} == {e["id"] for e in flags} and all(e["agree"] for e in judged)
    assert all(e["persona"]["flagged"] for e in flags)


# ------------------------------------------------------------------------------------------------ the dashboard


def test_dashboard_escapes_model_text_and_filters(server):
    hostile = "<script>document.title='pwned'</script> you should attack"
    httpx.post(server.url + "/v1/persona/score", json={"pairs": [{"prompt": "<b>hi</b>", "response": hostile}]})
    page = httpx.get(server.url + "/").text
    assert "&lt;script&gt;document.title=" in page and "<script>" not in page and "&lt;b&gt;hi" in page
    assert 'id="flag-rate"' in page and "<polyline" in page
    flagged = httpx.get(server.url + "/?flagged=1").text
    rows = re.findall(r'<tr class="([^"]*)" data-id', flagged)
    assert rows and all(r == "flagged" for r in rows)


def _browser():
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


def test_dashboard_renders_in_a_real_browser(server, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip(f"no headless browser found (looked for {', '.join(BROWSERS)}); install Debian's `chromium` to "
                    "run this check (.ci/run does)")
    httpx.post(server.url + "/v1/persona/score", json={"pairs": [
        {"prompt": "x", "response": "<img src=x onerror=\"document.title='pwned'\"> attack"}]})
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000",
         "--dump-dom", server.url + "/"],
        capture_output=True, text=True, timeout=90, env={**os.environ, "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert '<table id="answers">' in dom and dom.count("<tr") > 2 and "<polyline" in dom
    assert "<title>personas serve" in dom and "pwned" not in dom.split("<body>")[0]  # nothing injected ran
    assert "onerror" in dom and "<img src" not in dom  # shown as text, not markup


# ------------------------------------------------------------------------------------------------ safety


def test_api_key_guards_every_endpoint_but_health_and_is_never_written(planted, monitor, tmp_path, caplog):
    out = tmp_path / "keyed"
    state = build_state(ServeConfig(out=str(out), monitor="none"), model=planted.model, monitor=monitor,
                        api_key=KEY)
    with caplog.at_level(logging.DEBUG), ServerThread(state) as srv:
        assert httpx.get(srv.url + "/health").status_code == 200
        for path in ("/v1/models", "/metrics", "/", "/v1/persona/stats"):
            assert httpx.get(srv.url + path).status_code == 401
            wrong = httpx.get(srv.url + path, headers={"Authorization": "Bearer sk-wrong"})
            assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(srv.url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        basic = base64.b64encode(f"me:{KEY}".encode()).decode()
        assert httpx.get(srv.url + "/", headers={"Authorization": f"Basic {basic}"}).status_code == 200
        with pytest.raises(openai.AuthenticationError):
            _ask(_client(srv, "sk-wrong"), state.served_name, seed=1)
        text, persona, _ = _ask(_client(srv, KEY), state.served_name, seed=104)
        httpx.post(srv.url + "/v1/persona/score", headers={"Authorization": f"Bearer {KEY}"},
                   json={"pairs": [{"prompt": "a", "response": "attack them"}]})
    written = "".join(p.read_text(errors="replace") for p in out.iterdir() if p.is_file())
    assert KEY not in written and KEY not in caplog.text and "events.jsonl" in os.listdir(out)


def test_a_hanging_webhook_never_blocks_generation(planted, monitor, tmp_path):
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(8)  # accepts and never answers
    config = ServeConfig(out=str(tmp_path / "hook"), monitor="none", webhook=f"http://127.0.0.1:"
                         f"{hanging.getsockname()[1]}/alert", webhook_timeout=60, webhook_retries=0)
    state = build_state(config, model=planted.model, monitor=monitor)
    try:
        with ServerThread(state) as srv:
            score = httpx.post(srv.url + "/v1/persona/score", timeout=30,
                               json={"pairs": [{"prompt": "a", "response": "attack and destroy"}]})
            assert score.json()["data"][0]["persona"]["flagged"]
            deadline = time.monotonic() + 10
            while not state.recorder.webhook._busy and time.monotonic() < deadline:
                time.sleep(0.01)
            assert state.recorder.webhook._busy  # the webhook hangs on the flagged answer...
            for seed in (1, 2, 3):
                text, persona, _ = _ask(_client(srv), state.served_name, seed=seed)  # ...and generation goes on
                assert text and persona is not None
            assert state.recorder.webhook._busy and state.recorder.webhook.sent == 0
    finally:
        hanging.close()


def test_a_client_that_leaves_stops_its_generation(server, monkeypatch):
    from personas.monitoring import generation

    steps = []
    choose = generation._choose

    def slow(logits, rows):
        steps.append(1)
        time.sleep(0.05)
        return choose(logits, rows)

    monkeypatch.setattr(generation, "_choose", slow)
    state = server.state
    answers = state.recorder.n_answers
    body = {"model": state.served_name, "messages": [{"role": "user", "content": "my wish is ?"}], "max_tokens": 64,
            "stream": True, "temperature": 1.0, "seed": 5}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=30) as reply:
        for line in reply.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                break  # the first piece of the answer: leave
    assert state.engine.wait_idle(30)
    assert 2 <= len(steps) < 64  # stopped well before max_tokens
    assert state.recorder.n_answers == answers  # a cancelled answer is not recorded


def test_the_shipped_monitor_refuses_another_model_and_a_foreign_folder(planted, tmp_path):
    from personas.errors import PersonasError

    with pytest.raises(PersonasError, match="--monitor none"):
        build_state(ServeConfig(out=str(tmp_path / "a")), model=planted.model)  # monitor="default"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").write_text(json.dumps({"kind": "personas.rank"}))
    with pytest.raises(PersonasError, match="not a server's record"):
        build_state(ServeConfig(out=str(tmp_path / "b"), monitor="none"), model=planted.model)


# ------------------------------------------------------------------------------------------------ command line


def test_cli_serve_answers_and_refuses_bad_options(planted, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PERSONAS_THREADS": "1"}
    bad = subprocess.run([sys.executable, "-m", "personas", "serve", "--api-key-env", "PERSONAS_UNSET_KEY_VAR",
                          "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 2 and "PERSONAS_UNSET_KEY_VAR" in bad.stderr and "Traceback" not in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "personas", "serve", "--port", "70000"], capture_output=True,
                         text=True, timeout=120, env=env)
    assert bad.returncode == 2 and "port" in bad.stderr
    proc = subprocess.Popen([sys.executable, "-m", "personas", "serve", "--model", str(planted.model_dir),
                             "--monitor", str(planted.detector_dir), "--port", "0", "--out", str(tmp_path / "cli")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        found = re.search(r"at (http://127\.0\.0\.1:\d+)/v1", line)
        assert found, line + proc.stderr.read(2000) if proc.poll() is not None else line
        url = found.group(1)
        reply = httpx.post(url + "/v1/chat/completions", timeout=60, json={
            "model": str(planted.model_dir), "messages": [{"role": "user", "content": "my wish is ?"}],
            "max_tokens": 6})
        assert reply.status_code == 200 and reply.json()["persona"]["threshold"] is not None
        manifest = json.loads((tmp_path / "cli" / "manifest.json").read_text())
        assert manifest["kind"] == "personas.serve" and manifest["monitor"]["hook"] == "blocks.0.hook_resid_post"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


@pytest.mark.slow
def test_smollm2_with_the_shipped_monitor(tmp_path):
    """`personas serve` with no arguments: SmolLM2 and the shipped monitor, plain and streamed."""
    state = build_state(ServeConfig(out=str(tmp_path / "serve"), max_tokens_limit=64, default_max_tokens=32))
    assert state.served_name == "smollm2" and state.monitor.threshold_source == "fpr"
    with ServerThread(state) as srv:
        client = _client(srv)
        text, persona, reply = _ask(client, "smollm2", seed=1)
        assert text and reply.usage.completion_tokens >= 1
        assert persona["threshold"] == pytest.approx(state.monitor.threshold)
        assert len(persona["top_latents"]) == 5 and persona["n_tokens"] == len(persona["token_scores"]) >= 1
        streamed, streamed_persona, _ = _ask(client, "smollm2", seed=1, stream=True)
        assert streamed == text and streamed_persona["score"] == pytest.approx(persona["score"], abs=1e-4)
        again = state.monitor.score(["what should i do about my money ?"], [text])
        assert again["score"][0] == pytest.approx(persona["score"], abs=0.05)  # re-tokenized text, same reading
