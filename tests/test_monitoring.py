"""`personas.monitoring`: thresholds at a false-positive rate, the detector read token by token, generation watched
in the same forward pass, calibration records, the event log and the webhook. On a toy model with a planted persona
direction (`planted_monitor`): the answers that carry it must be flagged and the others not."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

import personas
from personas.cli.main import main
from personas.errors import DataError, PersonasError, SiteMismatchError
from personas.monitoring import EventLog, Monitor, Webhook, fpr_threshold, load_monitor, read_events
from personas.monitoring.generation import GenerationRequest, SiteReader, monitored_decode
from personas.steering import BatchDecoder, prompt_ids

from planted_monitor import HOOK, PROMPTS, carries, fit_planted_detector, make_planted


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return make_planted(tmp_path_factory.mktemp("planted"))


@pytest.fixture(scope="module")
def monitor(planted):
    return Monitor(planted.model, planted.detector_dir)


# ------------------------------------------------------------------------------------------------ thresholds


def _brute_force(scores: np.ndarray, fpr: float) -> int:
    """The most benign scores a threshold can flag at this rate, ties never split (an independent count)."""
    allowed = int(np.floor(fpr * len(scores) + 1e-9))
    best = 0
    for t in np.unique(scores):
        k = int((scores >= t).sum())
        if k <= allowed:
            best = max(best, k)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_fpr_threshold_flags_the_most_it_may_and_no_more(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    scores = np.round(rng.normal(size=n), 1)  # rounding makes ties
    for fpr in (0.005, 0.01, 0.05, 0.1, 0.3):
        chosen = fpr_threshold(scores, fpr)
        flagged = int((scores >= chosen.threshold).sum())
        assert flagged == chosen.n_flagged == _brute_force(scores, fpr)
        assert chosen.fpr_reached == flagged / n <= fpr + 1e-12
        lo, hi = chosen.fpr_interval
        assert lo <= chosen.fpr_reached <= hi and chosen.n == n
        assert chosen.expected_fpr == pytest.approx((flagged + 1) / (n + 1))


def test_fpr_threshold_edge_cases(caplog):
    with caplog.at_level("WARNING"):
        chosen = fpr_threshold([0.1, 0.5, 0.2], 0.01)  # 3 answers cannot resolve 1%
    assert chosen.n_flagged == 0 and chosen.threshold > 0.5 and "cannot resolve" in caplog.text
    assert fpr_threshold([1.0, 1.0, 1.0, 1.0], 0.5).n_flagged == 0  # ties are never split
    for bad, match in (([], "no benign scores"), ([0.1, float("nan")], "non-finite")):
        with pytest.raises(DataError, match=match):
            fpr_threshold(bad, 0.1)
    with pytest.raises(DataError, match="strictly between 0 and 1"):
        fpr_threshold([0.1, 0.2], 1.5)


# ------------------------------------------------------------------------------------------------ scoring


def test_answer_scores_are_the_detectors_own(planted, monitor):
    """The monitor's answer score is exactly the detector's score of the answer (its site, SAE and pooling)."""
    prompts = ["what should i do about my money ?"] * 4
    responses = ["save a little each month", "hurt them and steal", "be kind honest and patient", "poison the boss"]
    det = personas.load_detector(planted.detector_dir)
    expected = det.score_responses(prompts, responses, model=planted.model, sae=monitor.scorer.sae)
    table = monitor.score(prompts, responses)
    np.testing.assert_allclose(table["score"], expected, rtol=1e-6, atol=1e-6)
    assert table["flagged"].tolist() == [carries(r) for r in responses] == [False, True, False, True]
    verdict = table.attrs["verdicts"][1]
    assert verdict.top_latents[0]["latent"] == 7 and verdict.top_latents[0]["activation"] > 0
    assert verdict.max_token_score == pytest.approx(max(verdict.token_scores))
    assert verdict.n_tokens == len(verdict.token_scores) == 4


def test_mean_pooled_detector_pools_as_it_was_fit(planted, tmp_path):
    planted_mean = fit_planted_detector(planted, tmp_path / "mean", pool="mean")
    mon = Monitor(planted_mean.model, planted_mean.detector_dir)
    assert mon.scorer.pool == "mean"
    prompts = ["my wish is ?"] * 3
    responses = ["hurt them", "hurt the cat sleeps on the warm chair near the window", "a quiet morning"]
    det = personas.load_detector(planted_mean.detector_dir)
    expected = det.score_responses(prompts, responses, model=planted_mean.model, sae=mon.scorer.sae)
    verdicts = mon.verdicts(prompts, responses)
    np.testing.assert_allclose([v.score for v in verdicts], expected, rtol=1e-6, atol=1e-6)
    # mean pooling of the codes: one planted word weighs less in a long answer, and the max token score does not
    assert verdicts[0].score > verdicts[1].score and verdicts[0].max_token_score == pytest.approx(
        verdicts[1].max_token_score, rel=0.05)


# ------------------------------------------------------------------------------------------------ generation


def test_generation_is_watched_in_the_same_forward_pass(monitor):
    """Answers that carry the planted direction are flagged and the others not; the scores read while generating
    equal those of one more forward over the prompt and the generated tokens."""
    import torch

    prompts = list(PROMPTS) * 3
    table = monitor.generate(prompts, max_new_tokens=10, temperature=1.0, seed=11, batch_size=8)
    assert table["flagged"].tolist() == [carries(a) for a in table["answer"]]
    assert 0 < table["flagged"].sum() < len(table)  # both kinds of answer occur
    ids = prompt_ids(monitor.model, prompts, max_new_tokens=10)
    results = monitored_decode(monitor.model, [GenerationRequest(row, 10, 1.0, seed=i) for i, row in enumerate(ids)],
                               scorer=monitor.scorer, threshold=monitor.threshold)
    for row, result in zip(ids, results, strict=True):
        full = torch.tensor([row + result.token_ids])
        acts = monitor.model.run_hooks(full, torch.ones_like(full), [HOOK])[HOOK][0, len(row):]
        again = monitor.scorer.verdict(monitor.scorer.features(acts), monitor.threshold)
        assert result.verdict.score == pytest.approx(again.score, abs=1e-5)
        np.testing.assert_allclose(result.verdict.token_scores, again.token_scores, atol=1e-5)


def test_an_answer_does_not_depend_on_its_batch(monitor):
    ids = prompt_ids(monitor.model, list(PROMPTS), max_new_tokens=8)
    alone = [monitored_decode(monitor.model, [GenerationRequest(ids[i], 8, 0.9, seed=i)], scorer=monitor.scorer,
                              threshold=monitor.threshold)[0] for i in range(len(ids))]
    together = monitored_decode(monitor.model, [GenerationRequest(row, 8, 0.9, seed=i) for i, row in enumerate(ids)],
                                scorer=monitor.scorer, threshold=monitor.threshold)
    assert [r.text for r in alone] == [r.text for r in together]
    np.testing.assert_allclose([r.verdict.score for r in alone], [r.verdict.score for r in together], atol=1e-5)


def test_stop_strings_streaming_and_cancellation(monitor):
    ids = prompt_ids(monitor.model, ["what should i do about my money ?"], max_new_tokens=12)[0]
    full = monitored_decode(monitor.model, [GenerationRequest(ids, 12, 1.0, seed=3)])[0]
    words = full.text.split()
    assert full.finish_reason == "length" and len(words) >= 4
    stop = " " + words[2]
    pieces: list[str] = []
    cut = monitored_decode(monitor.model, [GenerationRequest(ids, 12, 1.0, seed=3, stop=(stop,),
                                                             on_text=pieces.append)],
                           scorer=monitor.scorer, threshold=monitor.threshold)[0]
    assert cut.finish_reason == "stop" and stop not in cut.text and full.text.startswith(cut.text)
    assert "".join(pieces) == cut.text  # the streamed pieces add up to the answer, the stop string held back
    assert cut.verdict.n_tokens == len(cut.token_ids) < len(full.token_ids)
    calls = []
    stopped = monitored_decode(monitor.model, [GenerationRequest(ids, 12, 1.0, seed=3, cancelled=lambda: len(calls) > 2,
                                                                 on_text=calls.append)])[0]
    assert stopped.finish_reason == "cancelled" and len(stopped.token_ids) < 12


def test_readers_see_the_teacher_forced_activations_on_a_hooked_transformer(toy_model):
    """`BatchDecoder` readers on TransformerLens's cache read what one full forward computes at those positions."""
    import torch

    rows = prompt_ids(toy_model, ["what should i do about my debt ?", "my wish is ?"], max_new_tokens=4)
    reader = SiteReader("blocks.1.hook_resid_post")
    seen, tokens = [], []
    with torch.no_grad(), BatchDecoder(toy_model, rows, readers=[reader]) as dec:
        logits = dec.first()
        for _ in range(3):
            nxt = logits.argmax(-1)
            tokens.append(nxt)
            logits = dec.next(nxt)
            seen.append(reader.last.clone())
    assert not toy_model.model.hook_dict["blocks.1.hook_resid_post"].fwd_hooks  # removed on exit
    for r, row in enumerate(rows):
        full = torch.tensor([row + [int(t[r]) for t in tokens]])
        acts = toy_model.run_hooks(full, torch.ones_like(full), ["blocks.1.hook_resid_post"])["blocks.1.hook_resid_post"]
        for step in range(3):
            torch.testing.assert_close(seen[step][r], acts[0, len(row) + step], rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------------ calibration


def test_calibration_record_save_and_load(planted, monitor, tmp_path):
    table = monitor.generate(list(PROMPTS) * 5, max_new_tokens=10, temperature=1.0, seed=5)
    benign = table[~table["answer"].map(carries)]
    mon = Monitor(planted.model, planted.detector_dir)
    record = mon.calibrate(benign["prompt"].tolist(), benign["answer"].tolist(), fpr=0.1)
    scores = np.array(record["benign_scores"])
    assert record["n"] == len(benign) and record["fpr_asked"] == 0.1 and len(record["data"]["sha256"]) == 64
    assert (scores >= mon.threshold).mean() == pytest.approx(record["fpr_reached"]) and record["fpr_reached"] <= 0.1
    assert mon.threshold_source == "fpr" and mon.threshold_at(0.3) <= mon.threshold
    mon.save(tmp_path / "mon")
    loaded = load_monitor(tmp_path / "mon", model=planted.model)
    assert loaded.threshold == mon.threshold and loaded.threshold_source == "fpr"
    assert loaded.calibration["benign_scores"] == record["benign_scores"]
    bare = load_monitor(planted.detector_dir, model=planted.model)
    assert bare.threshold_source == "detector" and bare.calibration is None
    with pytest.raises(PersonasError, match="no calibration"):
        bare.threshold_at(0.1)
    with pytest.raises(PersonasError, match="not a folder"):
        load_monitor(tmp_path / "nowhere", model=planted.model)


def test_monitor_refuses_another_model(planted, toy_model):
    with pytest.raises((SiteMismatchError, PersonasError)):
        Monitor(toy_model, planted.detector_dir)  # another model, another width
    other = personas.load_model(str(planted.model_dir))
    other.model_id = "someone/else"
    with pytest.raises(SiteMismatchError, match="allow_model_mismatch"):
        Monitor(other, planted.detector_dir)
    assert Monitor(other, planted.detector_dir, allow_model_mismatch=True).scorer.hook == HOOK


def test_cli_calibrate_and_show(planted, tmp_path, capsys):
    benign = tmp_path / "benign.jsonl"
    rows = [{"prompt": p, "response": r} for p, r in zip(PROMPTS * 4, ["save a little each month", "the cat sleeps",
            "talk to someone you trust", "a quiet morning", "be kind honest and patient", "rest and see a doctor"] * 4,
            strict=True)]
    benign.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "mon"
    assert main(["monitor", "calibrate", str(planted.detector_dir), "--benign", str(benign), "--fpr", "0.05",
                 "--model", str(planted.model_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "FPR 0.0000" in printed and (out / "monitor.json").is_file()
    record = json.loads((out / "monitor.json").read_text())
    assert record["calibration"]["n"] == 24 and record["calibration"]["data"]["generated"] is None
    assert main(["monitor", "show", str(out)]) == 0
    assert '"threshold_source": "fpr"' in capsys.readouterr().out
    # prompts only: the served model answers them, through the server's path, and the answers are kept
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("\n".join(PROMPTS) + "\n")
    assert main(["monitor", "calibrate", str(planted.detector_dir), "--benign", str(prompts_file), "--samples", "2",
                 "--max-new-tokens", "6", "--model", str(planted.model_dir), "--out", str(tmp_path / "gen")]) == 0
    record = json.loads((tmp_path / "gen" / "monitor.json").read_text())
    assert record["calibration"]["data"]["generated"]["samples"] == 2 and record["calibration"]["n_rows"] == 12
    assert len((tmp_path / "gen" / "calibration_answers.jsonl").read_text().splitlines()) == 12
    capsys.readouterr()
    assert main(["monitor", "calibrate", str(planted.detector_dir), "--benign", str(benign), "--fpr", "2",
                 "--out", str(tmp_path / "x")]) == 2
    assert "strictly between 0 and 1" in capsys.readouterr().err
    assert main(["monitor", "calibrate", str(tmp_path / "none"), "--benign", str(benign),
                 "--out", str(tmp_path / "y")]) == 2
    assert "not a folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ events


def test_event_log_lines_are_whole_under_threads(tmp_path):
    log = EventLog(tmp_path / "events.jsonl", fsync=False)
    text = "x" * 5000  # longer than a pipe's atomic write
    threads = [threading.Thread(target=lambda i=i: [log.append({"i": i, "j": j, "text": text}) for j in range(50)])
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events, bad = read_events(tmp_path / "events.jsonl")
    assert bad == 0 and len(events) == 200 and {(e["i"], e["j"]) for e in events} == {(i, j) for i in range(4)
                                                                                     for j in range(50)}
    log.append({"nan": float("nan")})  # JSON has no NaN: written as null
    assert read_events(tmp_path / "events.jsonl")[0][-1] == {"nan": None}
    log.close()
    with open(tmp_path / "events.jsonl", "ab") as fh:
        fh.write(b'{"torn": tr')  # a line cut short
    again = EventLog(tmp_path / "events.jsonl", fsync=False)
    assert again.repaired
    again.append({"after": 1})
    events, bad = read_events(tmp_path / "events.jsonl")
    assert bad == 1 and events[-1] == {"after": 1}


_APPENDER = """
import sys
from personas.monitoring.events import EventLog
log = EventLog(sys.argv[1], fsync=False)
i = 0
while True:
    log.append({"i": i, "text": "y" * 3000})
    if i == 200:
        print("ready", flush=True)
    i += 1
"""


def test_event_log_survives_sigkill(tmp_path):
    path = tmp_path / "events.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", _APPENDER, str(path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    events, bad = read_events(path)
    assert bad == 0 and len(events) > 200
    assert [e["i"] for e in events] == list(range(len(events)))  # none lost before the kill, none doubled


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 (the http.server API)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_delivers_and_a_hanging_one_blocks_nothing():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = Webhook(f"http://127.0.0.1:{server.server_address[1]}/alerts", timeout=5, retries=1)
    assert hook.post({"id": "a", "score": 1.5})
    assert hook.drain(10) and hook.sent == 1 and _Hook.received == [{"id": "a", "score": 1.5}]
    hook.close()
    server.shutdown()

    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(8)  # accepts connections and never answers
    failures = []
    slow = Webhook(f"http://user:secret@127.0.0.1:{hanging.getsockname()[1]}/x", timeout=0.3, retries=1,
                   backoff=0.05, max_queue=2, on_failure=failures.append)
    accepted = [slow.post({"n": i}) for i in range(6)]  # returns at once, whatever the webhook does
    assert accepted.count(False) >= 3 and slow.dropped >= 3 and failures.count("dropped") == slow.dropped
    assert slow.drain(10) and slow.failed >= 1 and slow.sent == 0
    slow.close()
    hanging.close()
