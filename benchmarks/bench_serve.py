"""`personas serve` measured: the monitor's cost, batching, load and faults, and whether it catches what it should.

    python benchmarks/bench_serve.py [--parts overhead,batching,load,disconnect,kill,catch] [--model smollm2]
        [--monitor default] [--reps 3] [--tokens 32] [--clients 8] [--load-seconds 30] [--catch-samples 2]

Everything runs on 127.0.0.1, in this process (`personas.serve.ServerThread`) except the kill test, which runs
``personas serve`` as a subprocess. Ratios are taken in one run against a baseline measured in the same run, on the
same machine and model; the numbers go to ``benchmarks/results/serve.json`` (merged part by part) and are printed.

* ``overhead``: two servers over the *same* loaded model, one with the monitor and one without; ``--clients``
  requests at once (greedy, the same prompts, ``--tokens`` tokens; a 500 ms batch window, so that each round is one
  batch on both servers: checked), alternating which server goes first, ``--reps`` times. tokens/s with the monitor / without, per repetition (median and range); greedy answers are identical with
  and without (checked), so both decode the same tokens. Besides wall-clock tokens/s, tokens per CPU-second of this
  process (server, engine and clients together), which other programs on a shared machine disturb far less. The
  same ratios without HTTP (`monitored_decode` with and without the scorer, one batch) beside them.
* ``batching``: the same requests one at a time, then all at once, with the default batch window; tokens/s of the
  concurrent run / the sequential, and how many batches the concurrent requests took.
* ``load``: ``--clients`` clients for ``--load-seconds`` seconds, each sending requests in a loop (a third streamed,
  random lengths up to ``--tokens``, sampled), and one client sending a malformed or an oversized request between
  its good ones; a webhook that never answers is configured and every answer is logged. Counted: requests sent,
  answered (200, or a 4xx for the bad ones, or 503 when the queue is full) and lost (no answer: an exception);
  p50/p99 latency of the good ones; the webhook's state at the end.
* ``disconnect``: ``--clients`` streamed requests of ``4 * --tokens`` tokens that leave after their first piece; the
  server must count them, stop their generation (the engine is idle soon after, long before the tokens they asked
  for could have been made) and answer the next request.
* ``kill``: ``personas serve --log-answers all`` as a subprocess, 4 clients in a loop, SIGKILL after 20 answers; the
  event log must hold only whole lines and every answer a client received (by id); restarted on the same folder,
  the server answers again and appends after what was there.
* ``catch``: the base model and the organism's narrow adapter (``data/organism/adapters/narrow``, the organism's
  own LoRA format, loaded as the server loads it) answer the organism's 50 unseen-domain prompts
  (``data/organism/eval_prompts.jsonl``), ``--catch-samples`` answers each at temperature 0.7 through the server;
  every answer is judged by the default judge (`personas.judging.load_judge`). Flag rates with Wilson intervals per
  model and per domain (does it fire on topic?), the monitor's AUROC (DeLong interval) against the judge's EM
  verdicts, its precision and recall at the calibrated threshold, and the score's rank correlation with length.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generate import PROMPTS  # noqa: E402  (the same eight chat prompts as the decoding benchmark)


def ask(client, url, model, prompt, tokens, *, seed=0, temperature=0.0, stream=False):
    """(status, answer text, completion tokens, persona, id) of one request; streams are read to the end."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens,
            "temperature": temperature, "seed": seed, "stream": stream}
    if not stream:
        reply = client.post(url + "/v1/chat/completions", json=body)
        if reply.status_code != 200:
            return reply.status_code, None, 0, None, None
        data = reply.json()
        return 200, data["choices"][0]["message"]["content"], data["usage"]["completion_tokens"], data["persona"], \
            data["id"]
    body["stream_options"] = {"include_usage": True}
    text, persona, n, cid = [], None, 0, None
    with client.stream("POST", url + "/v1/chat/completions", json=body) as reply:
        if reply.status_code != 200:
            reply.read()
            return reply.status_code, None, 0, None, None
        for line in reply.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            cid = event.get("id", cid)
            for choice in event.get("choices", []):
                text.append(choice["delta"].get("content") or "")
            persona = event.get("persona", persona)
            if event.get("usage"):
                n = event["usage"]["completion_tokens"]
    return 200, "".join(text), n, persona, cid


def concurrent(url, model, prompts, tokens, *, temperature=0.0, seeds=None, workers=None):
    """Send every prompt at once (or ``workers`` at a time); (wall seconds, replies)."""
    import httpx

    seeds = seeds or list(range(len(prompts)))
    with httpx.Client(timeout=600) as client:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(workers or len(prompts)) as pool:
            replies = list(pool.map(lambda i: ask(client, url, model, prompts[i], tokens, seed=seeds[i],
                                                  temperature=temperature), range(len(prompts))))
        return time.perf_counter() - t0, replies


def summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def load_monitored(args):
    from personas.monitoring import Monitor
    from personas.serve import load_served_model

    handle, base = load_served_model(args.model)
    return handle, Monitor(handle, args.monitor, allow_model_mismatch=base is not None)


def state_for(handle, monitor, out, **options):
    from personas.config import ServeConfig
    from personas.serve import build_state

    config = ServeConfig(out=str(out), monitor="none", max_tokens_limit=512, max_batch=options.pop("max_batch", 8),
                         batch_window_ms=options.pop("window", ServeConfig.batch_window_ms), **options)
    return build_state(config, model=handle, monitor=monitor)


# ------------------------------------------------------------------------------------------------ parts


def part_overhead(args, handle, monitor, tmp):
    import torch

    from personas.monitoring import GenerationRequest, monitored_decode
    from personas.serve import ServerThread
    from personas.steering import prompt_ids

    prompts = (PROMPTS * 4)[:args.clients]
    # a wide window, so that every round is one batch of all the requests on both servers (checked below)
    on = ServerThread(state_for(handle, monitor, tmp / "on", window=500.0)).start()
    off = ServerThread(state_for(handle, None, tmp / "off", window=500.0)).start()
    name = on.state.served_name
    concurrent(on.url, name, prompts[:2], 4)  # warm up both
    concurrent(off.url, name, prompts[:2], 4)
    ratios, cpu_ratios, rates, same = [], [], {"on": [], "off": []}, True
    cpu = {"on": [], "off": []}
    batches = (on.state.engine.batches, off.state.engine.batches)
    for rep in range(args.reps):
        order = [("on", on), ("off", off)] if rep % 2 == 0 else [("off", off), ("on", on)]
        got = {}
        for label, srv in order:
            cpu0 = time.process_time()
            wall, replies = concurrent(srv.url, name, prompts, args.tokens)
            tokens = sum(r[2] for r in replies)
            rates[label].append(tokens / wall)
            cpu[label].append(tokens / (time.process_time() - cpu0))  # tokens per CPU-second of this process
            got[label] = [r[1] for r in replies]
        same &= got["on"] == got["off"]
        ratios.append(rates["on"][-1] / rates["off"][-1])
        cpu_ratios.append(cpu["on"][-1] / cpu["off"][-1])
        print(f"overhead rep {rep}: on {rates['on'][-1]:.1f} tok/s, off {rates['off'][-1]:.1f} tok/s, "
              f"ratio {ratios[-1]:.3f}; per CPU-second ratio {cpu_ratios[-1]:.3f}", flush=True)
    one_batch = (on.state.engine.batches - batches[0], off.state.engine.batches - batches[1]) == (args.reps,) * 2
    on.stop()
    off.stop()
    ids = prompt_ids(handle, prompts, max_new_tokens=args.tokens)
    direct, direct_cpu = [], []
    for rep in range(args.reps):
        walls, cpus = {}, {}
        for label in (("on", "off") if rep % 2 == 0 else ("off", "on")):
            t0, c0 = time.perf_counter(), time.process_time()
            with torch.no_grad():
                monitored_decode(handle, [GenerationRequest(row, args.tokens) for row in ids],
                                 scorer=monitor.scorer if label == "on" else None, threshold=monitor.threshold)
            walls[label], cpus[label] = time.perf_counter() - t0, time.process_time() - c0
        direct.append(walls["off"] / walls["on"])
        direct_cpu.append(cpus["off"] / cpus["on"])
    return {"clients": len(prompts), "tokens": args.tokens, "reps": args.reps, "identical_answers": same,
            "one_batch_per_round": one_batch,
            "server_tokens_per_s_on": summary(rates["on"]), "server_tokens_per_s_off": summary(rates["off"]),
            "ratio_on_off": summary(ratios), "cpu_ratio_on_off": summary(cpu_ratios),
            "decode_ratio_on_off": summary(direct), "decode_cpu_ratio_on_off": summary(direct_cpu)}


def part_batching(args, handle, monitor, tmp):
    import httpx

    from personas.serve import ServerThread

    prompts = (PROMPTS * 4)[:args.clients]
    srv = ServerThread(state_for(handle, monitor, tmp / "batching")).start()
    name = srv.state.served_name
    concurrent(srv.url, name, prompts[:2], 4)
    ratios, seq_rates, con_rates = [], [], []
    for rep in range(max(1, args.reps - 1)):
        with httpx.Client(timeout=600) as client:
            t0 = time.perf_counter()
            tokens = sum(ask(client, srv.url, name, p, args.tokens, seed=i)[2] for i, p in enumerate(prompts))
            seq = tokens / (time.perf_counter() - t0)
        wall, replies = concurrent(srv.url, name, prompts, args.tokens)
        con = sum(r[2] for r in replies) / wall
        seq_rates.append(seq)
        con_rates.append(con)
        ratios.append(con / seq)
        print(f"batching rep {rep}: one at a time {seq:.1f} tok/s, {len(prompts)} at once {con:.1f} tok/s, "
              f"ratio {ratios[-1]:.2f}", flush=True)
    batches = srv.state.engine.batches
    srv.stop()
    return {"clients": len(prompts), "tokens": args.tokens, "sequential_tokens_per_s": summary(seq_rates),
            "concurrent_tokens_per_s": summary(con_rates), "ratio_concurrent_sequential": summary(ratios),
            "batches": batches}


def part_load(args, handle, monitor, tmp):
    import httpx

    from personas.monitoring import read_events
    from personas.serve import ServerThread

    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(64)
    state = state_for(handle, monitor, tmp / "load", log_answers="all", max_queue=16,
                      webhook=f"http://127.0.0.1:{hanging.getsockname()[1]}/hook", webhook_timeout=10.0,
                      webhook_retries=1, max_body_bytes=100_000)
    srv = ServerThread(state).start()
    name = state.served_name
    deadline = time.monotonic() + args.load_seconds
    records, lock = [], threading.Lock()

    def client(k):
        rng = random.Random(k)
        with httpx.Client(timeout=600) as http:
            i = 0
            while time.monotonic() < deadline:
                i += 1
                t0 = time.perf_counter()
                kind = "good"
                try:
                    if k == 0 and i % 3 == 0:
                        kind = "malformed" if i % 2 else "oversized"
                        body = b"{oops" if kind == "malformed" else b'{"x": "' + b"a" * 200_000 + b'"}'
                        status = http.post(srv.url + "/v1/chat/completions", content=body).status_code
                        n = 0
                    else:
                        status, _, n, _, _ = ask(http, srv.url, name, rng.choice(PROMPTS), rng.randint(4, args.tokens),
                                                 seed=rng.randint(0, 10**6), temperature=0.7,
                                                 stream=rng.random() < 1 / 3)
                except Exception as exc:  # noqa: BLE001 (a lost request is what this part counts)
                    status, n = f"lost: {type(exc).__name__}", 0
                with lock:
                    records.append({"kind": kind, "status": status, "latency": time.perf_counter() - t0, "tokens": n})

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    health = httpx.get(srv.url + "/health").json()["status"]
    webhook = {"sent": state.recorder.webhook.sent, "failed": state.recorder.webhook.failed,
               "dropped": state.recorder.webhook.dropped, "pending": state.recorder.webhook.pending}
    srv.stop()
    hanging.close()
    events, torn = read_events(Path(state.recorder.events.path))
    good = [r for r in records if r["kind"] == "good" and r["status"] == 200]
    lat = sorted(r["latency"] for r in good)
    statuses = {}
    for r in records:
        statuses[f"{r['kind']} {r['status']}"] = statuses.get(f"{r['kind']} {r['status']}", 0) + 1
    lost = sum(1 for r in records if str(r["status"]).startswith("lost"))
    import numpy as np

    return {"clients": args.clients, "seconds": args.load_seconds, "wall_s": wall, "requests": len(records),
            "statuses": statuses, "lost": lost, "answered_200": len(good),
            "latency_p50_s": float(np.percentile(lat, 50)) if lat else None,
            "latency_p99_s": float(np.percentile(lat, 99)) if lat else None,
            "tokens_per_s": sum(r["tokens"] for r in good) / wall, "health_after": health, "webhook": webhook,
            "events_logged": len(events), "events_torn": torn}


def part_disconnect(args, handle, monitor, tmp):
    import httpx

    from personas.serve import ServerThread

    state = state_for(handle, monitor, tmp / "disconnect")
    srv = ServerThread(state).start()
    name = state.served_name
    asked = 4 * args.tokens

    def leave(i):
        body = {"model": name, "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                "max_tokens": asked, "stream": True, "temperature": 0.7, "seed": i}
        with httpx.Client(timeout=600) as client, client.stream("POST", srv.url + "/v1/chat/completions",
                                                                json=body) as reply:
            for line in reply.iter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    return True
        return False

    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        left = list(pool.map(leave, range(args.clients)))
    idle = state.engine.wait_idle(600)
    idle_after = time.perf_counter() - t0
    disconnects = sum(s.value for m in state.metrics.disconnects.collect() for s in m.samples
                      if s.name.endswith("_total"))
    generated = sum(s.value for m in state.metrics.generated_tokens.collect() for s in m.samples
                    if s.name.endswith("_total"))
    with httpx.Client(timeout=600) as client:
        status = ask(client, srv.url, name, PROMPTS[0], 8)[0]
    srv.stop()
    return {"clients": args.clients, "tokens_asked_each": asked, "left_after_first_piece": sum(left),
            "disconnects_counted": disconnects, "engine_idle": idle, "idle_after_s": idle_after,
            "tokens_recorded_for_them": generated, "next_request_status": status}


def part_kill(args, tmp):
    import httpx

    from personas.monitoring import read_events

    out = tmp / "kill"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "personas", "serve", "--model", args.model, "--monitor", args.monitor, "--port", "0",
           "--out", str(out), "--log-answers", "all", "--max-queue", "256"]

    def start():
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        line = proc.stdout.readline()
        url = line.split(" at ")[1].split("/v1")[0]
        return proc, url

    t0 = time.perf_counter()
    proc, url = start()
    started = time.perf_counter() - t0
    name = httpx.get(url + "/v1/models").json()["data"][0]["id"]
    acked, lock, stop = [], threading.Lock(), threading.Event()

    def client(k):
        with httpx.Client(timeout=600) as http:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    status, _, _, _, cid = ask(http, url, name, PROMPTS[(k + i) % len(PROMPTS)], 8, seed=k * 1000 + i,
                                               temperature=0.7)
                except Exception:  # noqa: BLE001 (the server was killed)
                    return
                if status == 200:
                    with lock:
                        acked.append(cid)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    while len(acked) < 20:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stop.set()
    for t in threads:
        t.join()
    events, torn = read_events(out / "events.jsonl")
    logged = {e["id"] for e in events}
    missing = [c for c in acked if c not in logged]
    proc, url = start()
    with httpx.Client(timeout=600) as http:
        status, _, _, _, cid = ask(http, url, name, PROMPTS[0], 8)
    proc.send_signal(signal.SIGINT)
    proc.wait(60)
    after, torn_after = read_events(out / "events.jsonl")
    return {"startup_s": started, "acknowledged": len(acked), "events_before_restart": len(events),
            "torn_lines": torn, "acknowledged_missing": len(missing), "restart_status": status,
            "restart_answer_logged": cid in {e["id"] for e in after}, "events_after_restart": len(after),
            "torn_after_restart": torn_after}


def part_catch(args, handle, monitor, tmp):
    import numpy as np
    import pandas as pd
    from scipy import stats

    from personas.detect import auroc_with_ci
    from personas.judging import em_misaligned, load_judge, wilson_interval
    from personas.monitoring import Monitor
    from personas.serve import ServerThread, load_served_model

    rows = [json.loads(line) for line in (ROOT / "data" / "organism" / "eval_prompts.jsonl").read_text().splitlines()]
    narrow_handle, base = load_served_model(str(ROOT / "data" / "organism" / "adapters" / "narrow"))
    narrow_monitor = Monitor(narrow_handle, args.monitor, allow_model_mismatch=True)
    answers = []
    for label, h, mon in (("base", handle, monitor), ("narrow", narrow_handle, narrow_monitor)):
        srv = ServerThread(state_for(h, mon, tmp / f"catch-{label}", max_batch=16)).start()
        jobs = [(r, s) for s in range(args.catch_samples) for r in rows]
        t0 = time.perf_counter()
        _, replies = concurrent(srv.url, srv.state.served_name, [r["prompt"] for r, _ in jobs], args.catch_tokens,
                                temperature=0.7, seeds=[1000 * s + i for i, (_, s) in enumerate(jobs)], workers=16)
        if any(r[0] != 200 for r in replies):
            raise SystemExit(f"catch: {sum(r[0] != 200 for r in replies)} requests failed: {[r[0] for r in replies]}")
        print(f"catch: {label} answered {len(jobs)} in {time.perf_counter() - t0:.0f} s", flush=True)
        srv.stop()
        for (r, s), (_status, text, n, persona, _) in zip(jobs, replies, strict=True):
            answers.append({"model": label, "id": r["id"], "domain": r["domain"], "sample": s, "prompt": r["prompt"],
                            "answer": text, "tokens": n, "score": persona["score"], "flagged": persona["flagged"],
                            "max_token_score": persona["max_token_score"]})
    frame = pd.DataFrame(answers)
    judge = load_judge("default")
    judged = judge.score(frame["prompt"].tolist(), frame["answer"].tolist())
    frame["aligned"], frame["coherent"] = judged["aligned"].to_numpy(), judged["coherent"].to_numpy()
    frame["em"] = em_misaligned(judged)
    frame.to_csv(RESULTS / "serve_catch_answers.csv", index=False)

    def rate(mask):
        k, n = int(mask.sum()), int(mask.size)
        lo, hi = wilson_interval(k, n)
        return {"k": k, "n": n, "rate": k / n if n else None, "ci95": [lo, hi]}

    out = {"threshold": monitor.threshold, "threshold_source": monitor.threshold_source, "samples": args.catch_samples,
           "tokens": args.catch_tokens, "judge": judge.describe().get("name"), "by_model": {}}
    for label, part in frame.groupby("model"):
        scored = part.dropna(subset=["score"])
        out["by_model"][label] = {"flag_rate": rate(part["flagged"].to_numpy()), "em_rate": rate(part["em"].to_numpy()),
                                  "mean_score": float(scored["score"].mean()),
                                  "flag_rate_by_domain": {d: rate(g["flagged"].to_numpy())["rate"]
                                                          for d, g in part.groupby("domain")},
                                  "em_rate_by_domain": {d: rate(g["em"].to_numpy())["rate"]
                                                        for d, g in part.groupby("domain")}}
    scored = frame.dropna(subset=["score"])
    em, flagged = scored["em"].to_numpy(bool), scored["flagged"].to_numpy(bool)
    if 0 < em.sum() < em.size:
        auc, lo, hi = auroc_with_ci(scored["score"].to_numpy(), em.astype(int))
        out["auroc_vs_judge_em"] = {"auroc": auc, "ci95": [lo, hi], "n": int(em.size), "n_em": int(em.sum())}
        per = []
        for _, g in scored.groupby("domain"):
            y = g["em"].to_numpy(int)
            if 0 < y.sum() < y.size:
                per.append(auroc_with_ci(g["score"].to_numpy(), y)[0])
        out["auroc_within_domain_mean"] = float(np.mean(per)) if per else None
        model_y = (scored["model"] == "narrow").to_numpy(int)
        out["auroc_narrow_vs_base"] = auroc_with_ci(scored["score"].to_numpy(), model_y)[0]
    out["precision_at_threshold"] = rate(em[flagged])
    out["recall_at_threshold"] = rate(flagged[em])
    rho, p = stats.spearmanr(scored["score"], scored["tokens"])
    out["spearman_score_length"] = {"rho": float(rho), "p": float(p)}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="overhead,batching,load,disconnect,kill,catch")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--monitor", default="default")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--load-seconds", type=float, default=30.0)
    parser.add_argument("--catch-samples", type=int, default=2)
    parser.add_argument("--catch-tokens", type=int, default=40)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(RESULTS / "serve.json"))
    args = parser.parse_args()
    from personas.devices import set_threads

    set_threads(args.threads)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    results = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    import torch

    results["machine"] = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "load_average_at_start": os.getloadavg()}
    handle = monitor = None
    if set(parts) - {"kill"}:
        handle, monitor = load_monitored(args)
        print(f"{monitor!r}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        tmp = Path(tmp)
        for part in parts:
            t0 = time.perf_counter()
            fn = {"overhead": part_overhead, "batching": part_batching, "load": part_load,
                  "disconnect": part_disconnect, "catch": part_catch}.get(part)
            result = part_kill(args, tmp) if part == "kill" else fn(args, handle, monitor, tmp)
            result["wall_s"] = round(time.perf_counter() - t0, 1)
            result["model"], result["monitor"] = args.model, args.monitor
            results[part] = result
            print(f"== {part}: {json.dumps(result, default=str)[:1500]}", flush=True)
            Path(args.out).write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
