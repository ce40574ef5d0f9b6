"""Every subcommand over bad inputs: exit code 2, one clear line on stderr, never a traceback.

The cases run in-process through `personas.cli.main` (fast); a few run as real ``python -m personas`` processes,
where an uncaught exception would print a traceback. Nothing needs the network: models are the tiny offline ones
of `personas.testing`, and most cases fail before any model loads (the inputs, options, SAE and output folder are
checked first).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from personas.cli.main import main

from conftest import TOY_HOOK


@pytest.fixture(scope="module")
def files(tmp_path_factory, planted_data, planted_sae, toy_tokenizer):
    """Good and bad inputs, written once: data files, SAE folders, run folders, a tiny model folder."""
    from personas.testing import save_toy_hf_model

    root = tmp_path_factory.mktemp("cli_errors")
    f: dict[str, str] = {}

    def write(name: str, text: str) -> str:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        f[name] = str(path)
        return str(path)

    data = root / "data.jsonl"
    pd.DataFrame(planted_data).to_json(data, orient="records", lines=True)
    f["data"] = str(data)
    write("bad.jsonl", '{"prompt": "a", "response": "b", "label": 1}\n{"prompt": \n')
    write("wrong_columns.jsonl", '{"question_text": "a", "reply": "b", "label": 1}\n')
    write("one_class.jsonl", '{"prompt": "a", "response": "b", "label": 1}\n{"prompt": "a", "response": "c", "label": 1}\n')
    write("dup.jsonl", "".join(json.dumps({"id": i, "prompt": "q", "response": "same", "label": i % 2}) + "\n"
                               for i in range(4)))
    write("messages.jsonl", json.dumps({"messages": "[{'role': 'user'", "label": 1}) + "\n")
    write("long.jsonl", "".join(json.dumps({"prompt": "q", "response": "hurt " * (300 + i), "label": i % 2}) + "\n"
                                for i in range(4)))
    write("bad_labels.csv", "prompt,response,label\na,b,maybe\nc,d,1\n")
    write("prompts.txt", "what is your wish ?\nhow are you ?\n")
    write("other_prompts.txt", "what should i do about my debt ?\n")
    write("no_response.jsonl", '{"prompt": "a", "label": 1}\n')
    write("empty.jsonl", "")
    write("a_file", "not a folder")
    write("corrupt_manifest/manifest.json", "{not json")
    write("foreign_run/eval.json", json.dumps({"kind": "personas.detect"}))
    write("orphan_run/ranking.csv", "feature\n1\n")
    write("bad_ranking/manifest.json", json.dumps({"kind": "personas.rank"}))
    write("bad_ranking/ranking.csv", "")
    write("diff_run/manifest.json", json.dumps({"kind": "personas.diff"}))
    write("diff_run/ranking.csv", "feature\n1\n")
    for folder in ("corrupt_manifest", "foreign_run", "orphan_run", "bad_ranking", "diff_run"):
        f[folder] = str(root / folder)
    (root / "empty").mkdir()
    f["empty"] = str(root / "empty")
    f["missing"] = str(root / "missing.jsonl")
    f["missing_dir"] = str(root / "no-such-folder")

    sae = root / "sae"
    planted_sae.save_model(str(sae))
    f["sae"] = str(sae)
    for name, damage in (("sae_no_weights", "unlink"), ("sae_truncated", "truncate"), ("sae_bad_cfg", "cfg")):
        folder = root / name
        planted_sae.save_model(str(folder))
        weights = folder / "sae_weights.safetensors"
        if damage == "unlink":
            weights.unlink()
        elif damage == "truncate":
            weights.write_bytes(weights.read_bytes()[:100])
        else:
            (folder / "cfg.json").write_text("{")
        f[name] = str(folder)

    det = root / "detector"
    det.mkdir()
    (det / "detector.json").write_text("{")
    (det / "detector.safetensors").write_bytes(b"")
    f["bad_detector"] = str(det)

    f["model"] = str(save_toy_hf_model(root / "tiny", toy_tokenizer, seed=1))
    f["root"] = str(root)
    return f


#: An API judge at a loopback port nothing listens on: the judge cases below fail before any request.
JUDGE = "http://127.0.0.1:9/v1:m"
# (argv with {placeholders} from `files`, a fragment the one-line message must hold)
CASES = [
    # organism (fails before any model loads)
    (["organism", "--adapters", "{missing}", "--out", "{root}/o1"], "adapters"),
    (["organism", "--model", "{missing}", "--out", "{root}/o2"], "no Hugging Face model"),
    (["organism", "--sae", "{missing}", "--out", "{root}/o3"], "neither a folder, a shipped SAE"),
    (["organism", "--n-top-latents", "0", "--out", "{root}/o4"], "n_top_latents"),
    (["organism", "--rejudge", "{missing_dir}"], "is not an organism run folder"),
    (["organism", "--judge", "", "--out", "{root}/o5"], "empty spec"),
    # validate (fails before any model loads)
    (["validate", "--screen-prompts", "{prompts.txt}", "--confirm-prompts", "{prompts.txt}", "--out", "{root}/v1"],
     "needs the candidates"),
    (["validate", "--features", "3", "--ranking", "{empty}", "--screen-prompts", "{prompts.txt}",
      "--confirm-prompts", "{prompts.txt}", "--out", "{root}/v2"], "needs the candidates"),
    (["validate", "--features", "3", "--screen-prompts", "{missing}", "--confirm-prompts", "{prompts.txt}",
      "--out", "{root}/v3"], "does not exist"),
    (["validate", "--features", "3", "--screen-prompts", "{prompts.txt}", "--confirm-prompts", "{prompts.txt}",
      "--out", "{root}/v4"], "in both --screen-prompts and --confirm-prompts"),
    (["validate", "--features", "x,y", "--screen-prompts", "{prompts.txt}", "--confirm-prompts", "{other_prompts.txt}",
      "--out", "{root}/v5"], "is not a list of latent indices"),
    (["validate", "--features", "3", "--screen-prompts", "{prompts.txt}", "--confirm-prompts", "{other_prompts.txt}",
      "--multiples", "a,b", "--out", "{root}/v6"], "--multiples 'a,b' is not a list of numbers"),
    (["validate", "--ranking", "{missing_dir}", "--screen-prompts", "{prompts.txt}", "--confirm-prompts",
      "{other_prompts.txt}", "--out", "{root}/v7"], "is not a personas rank run"),
    (["validate", "--features", "3", "--screen-prompts", "{prompts.txt}", "--confirm-prompts", "{other_prompts.txt}",
      "--judge", "", "--out", "{root}/v8"], "empty spec"),
    # judge (every case fails before a judge is asked anything; the loopback address has no server)
    (["judge", "{missing}", "--judge", JUDGE, "--out", "{root}/j1"], "does not exist"),
    (["judge", "{no_response.jsonl}", "--judge", JUDGE, "--out", "{root}/j2"], "has no responses to judge"),
    (["judge", "{empty.jsonl}", "--judge", JUDGE, "--out", "{root}/j3"], "has no rows"),
    (["judge", "{data}", "--judge", JUDGE, "--response-column", "reply", "--out", "{root}/j4"], "no column 'reply'"),
    (["judge", "{data}", "--judge", JUDGE, "--out", "{a_file}/j"], "which is a file"),
    (["judge", "{data}", "--judge", JUDGE, "--out", "{foreign_run}"], "holds a 'personas.detect' run"),
    (["judge", "{data}", "--judge", "", "--out", "{root}/j5"], "JudgeConfig.judge is empty"),
    (["judge", "{data}", "--judge", "http://localhost:8000", "--out", "{root}/j6"], "is not an API judge spec"),
    (["judge", "{data}", "--judge", "openai:", "--out", "{root}/j7"], "names no model"),
    (["judge", "{data}", "--judge", JUDGE, "--concurrency", "0", "--out", "{root}/j8"], "concurrency=0"),
    # screen and sweep (fail before any model loads)
    (["screen", "{missing}", "--latents", "7"], "No file at"),
    (["screen", "{wrong_columns.jsonl}", "--latents", "7"], "has no prompt column"),
    (["screen", "{data}"], "needs something to measure"),
    (["screen", "{data}", "--latents", "7", "--out", "{a_file}"], "is a file"),
    (["screen", "{data}", "--latents", "7", "--limit", "0"], "ScreenConfig.limit=0"),
    (["sweep", "--fractions", "0.5,1", "--out", "{root}/w1"], "lacks 0"),
    (["sweep", "--seeds", "one", "--out", "{root}/w2"], "comma-separated int"),
    (["sweep", "--out", "{a_file}"], "is a file"),
    # rank
    (["rank", "{missing}"], "No file at"),
    (["rank", "{bad.jsonl}"], "not valid JSON"),
    (["rank", "{wrong_columns.jsonl}"], "has no prompt column"),
    (["rank", "{one_class.jsonl}", "--sae", "none"], "expected both classes"),
    (["rank", "{bad_labels.csv}"], "values that are not labels"),
    (["rank", "{dup.jsonl}"], "same prompt and response"),
    (["rank", "{messages.jsonl}"], "not JSON"),
    (["rank", "{data}", "--pool", "median"], "invalid choice"),
    (["rank", "{data}", "--batch-size", "many"], "invalid int value"),
    (["rank", "{data}", "--alpha", "2"], "RankConfig.alpha=2.0"),
    (["rank", "{data}", "--max-length", "1"], "max_length=1 must be at least 2"),
    (["rank", "{data}", "--label-column", "verdict"], "DataConfig.label_column='verdict'"),
    (["rank", "{data}", "--sae", "{empty}"], "has no cfg.json"),
    (["rank", "{data}", "--sae", "{sae_no_weights}"], "has no sae_weights.safetensors"),
    (["rank", "{data}", "--sae", "{sae_truncated}"], "truncated"),
    (["rank", "{data}", "--sae", "{sae_bad_cfg}"], "is not valid JSON"),
    (["rank", "{data}", "--sae", "no-such-sae"], "neither a folder, a shipped SAE's name nor 'RELEASE:SAE_ID'"),
    (["rank", "{data}", "--out", "{a_file}"], "is a file"),
    (["rank", "{data}", "--out", "{a_file}/run"], "which is a file"),
    (["rank", "{data}", "--out", "{foreign_run}"], "holds a 'personas.detect' run"),
    (["rank", "{data}", "--out", "{corrupt_manifest}"], "cannot be read as a manifest"),
    (["rank", "{data}", "--out", "{orphan_run}"], "but no manifest.json"),
    (["rank", "{data}", "--cache", "{empty}"], "got both DATA"),
    (["rank"], "no responses to rank"),
    (["rank", "--cache", "{missing_dir}"], "no-such-folder has no manifest.json; expected a folder written by"),
    (["rank", "--cache", "{corrupt_manifest}"], "corrupt_manifest/manifest.json cannot be read"),
    (["rank", "{long.jsonl}", "--model", "{model}", "--hook", TOY_HOOK, "--sae", "none", "--max-length", "1000",
      "--quiet"], "has 256 positions (n_ctx)"),
    (["rank", "{data}", "--model", "{model}", "--hook", "blocks.9.hook_resid_post", "--sae", "none", "--quiet"],
     "are not sites of model"),
    (["rank", "{data}", "--model", "{model}", "--sae", "{sae}", "--quiet"], "does not fit this site"),
    # card
    (["card", "{missing_dir}", "3"], "is not a folder"),
    (["card", "{empty}", "3"], "has no ranking.csv or manifest.json"),
    (["card", "{foreign_run}", "3"], "has no ranking.csv or manifest.json"),
    (["card", "{empty}", "three"], "invalid int value"),
    # cache, cache-info
    (["cache", "{missing}", "--out", "{root}/c1"], "No file at"),
    (["cache", "{data}", "--out", "{a_file}"], "is a file"),
    (["cache", "{data}", "--out", "{root}/c2", "--sae", "{sae_truncated}"], "truncated"),
    (["cache", "{data}", "--out", "{root}/c3", "--shard-size", "0"], "shard_size=0"),
    (["cache", "{data}"], "the following arguments are required: --out"),
    (["cache-info", "{missing_dir}"], "no-such-folder has no manifest.json"),
    (["cache-info", "{empty}"], "empty has no manifest.json"),
    (["cache-info", "{corrupt_manifest}"], "corrupt_manifest/manifest.json cannot be read"),
    # detect
    (["detect", "--train", "{missing}", "--holdout-by", "group"], "No file at"),
    (["detect", "--train", "{data}"], "needs held-out data"),
    (["detect", "--train", "{data}", "--holdout-by", "group", "--k", "0"], "DetectorConfig.k=0"),
    (["detect", "--train", "{data}", "--test", "{bad.jsonl}"], "not valid JSON"),
    (["detect", "--train", "{data}", "--holdout-by", "group", "--sae", "{sae_truncated}"], "truncated"),
    (["detect", "--train", "{data}", "--holdout-by", "group", "--out", "{diff_run}"], "holds a 'personas.diff' run"),
    (["detect", "--train", "{data}", "--holdout-by", "nothing"], "invalid choice"),
    # steer
    (["steer", "--sae", "{sae}", "--feature", "1", "--prompts", "{missing}"], "does not exist"),
    (["steer", "--sae", "{sae_bad_cfg}", "--feature", "1", "--prompts", "{prompts.txt}"], "is not valid JSON"),
    (["steer", "--sae", "{sae}", "--feature", "1", "--prompts", "{prompts.txt}", "--alphas", "a,b"],
     "is not a list of numbers"),
    (["steer", "--sae", "{sae}", "--feature", "1", "--prompts", "{prompts.txt}", "--max-new-tokens", "0"],
     "max_new_tokens=0"),
    (["steer", "--sae", "{sae}", "--feature", "one", "--prompts", "{prompts.txt}"], "invalid int value"),
    (["steer", "--sae", "{sae}", "--feature", "1", "--prompts", "{prompts.txt}", "--out", "{a_file}"], "is a file"),
    (["steer", "--sae", "none", "--feature", "1", "--prompts", "{prompts.txt}"], "steering needs an SAE"),
    # diff
    (["diff", "--base", "{model}", "--finetuned", "{model}", "--prompts", "{missing}", "--sae", "{sae}"], "does not exist"),
    (["diff", "--base", "{model}", "--finetuned", "{model}", "--prompts", "{prompts.txt}", "--sae", "none"],
     "needs an SAE"),
    (["diff", "--base", "{model}", "--finetuned", "{model}", "--prompts", "{prompts.txt}", "--sae", "{sae_no_weights}"],
     "has no sae_weights.safetensors"),
    (["diff", "--base", "{model}", "--finetuned", "{model}", "--prompts", "{prompts.txt}", "--sae", "{sae}",
      "--out", "{foreign_run}"], "holds a 'personas.detect' run"),
    (["diff", "--base", "{model}", "--finetuned", "{model}", "--prompts", "{prompts.txt}", "--test", "z"],
     "invalid choice"),
    # a mistyped local folder is named as such, not as a malformed hub repo id
    (["diff", "--base", "{model}", "--finetuned", "{missing_dir}", "--prompts", "{prompts.txt}", "--sae", "{sae}"],
     "no-such-folder' looks like a local folder, but no such folder exists"),
    # report
    (["report", "{missing_dir}"], "is not a folder"),
    (["report", "{empty}"], "has no ranking.csv or manifest.json"),
    (["report", "{corrupt_manifest}"], "has no ranking.csv"),
    (["report", "{bad_ranking}"], "cannot be read as CSV"),
    (["report", "{diff_run}"], "describes a 'personas.diff' run"),
    (["report", "{diff_run}", "--top", "0"], "expected at least 1 row"),
    # explain
    (["explain", "{missing_dir}"], "is not a folder"),
    (["explain", "{empty}"], "has no ranking.csv or manifest.json"),
    (["explain", "{diff_run}"], "describes a 'personas.diff' run"),
    (["explain", "{empty}", "--scorers", "embedding,vibes"], "expected a comma-separated list"),
    (["explain", "{empty}", "--explainer", "gpt-4o"], "expected 'offline', 'openai:MODEL'"),
    (["explain", "{empty}", "--scorers", "detection"], "asks an LLM, and none is named"),
    (["explain", "{empty}", "--n-score", "2"], "a score needs at least 4 activating windows"),
    # train-sae
    (["train-sae", "--out", "{a_file}"], "is a file"),
    (["train-sae", "--out", "{a_file}/sae"], "which is a file"),
    (["train-sae", "--out", "{root}/s1", "--k", "0"], "TrainSAEConfig.k=0"),
    (["train-sae", "--out", "{root}/s2", "--corpus", "{missing}"], "is not a file"),
    (["train-sae", "--out", "{root}/s3", "--d-sae", "wide"], "invalid int value"),
    (["train-sae"], "the following arguments are required: --out"),
    (["train-sae", "--out", "{root}/s4", "--stream", "--chunk-tokens", "10"], "chunk_tokens=10"),
    (["train-sae", "--out", "{root}/s5", "--row-cache", "{root}/rows"], "needs --stream"),
    (["train-sae", "--out", "{root}/s6", "--stream", "--row-cache", "{a_file}"], "is a file; expected a folder"),
    (["train-sae", "--out", "{root}/s7", "--stream", "--row-cache", "{root}"], "a folder of other files"),
    # eval-sae
    (["eval-sae", "{sae}", "--text", "{missing}"], "is not a file"),
    (["eval-sae", "{sae}"], "needs --text FILE"),
    (["eval-sae", "{sae}", "--text", "{prompts.txt}", "--dense-threshold", "2"], "dense_threshold=2"),
    (["eval-sae"], "the following arguments are required: saes"),
    # monitor (calibration fails before a model loads, except where a tiny model is named)
    (["monitor"], "the following arguments are required: monitor_command"),
    (["monitor", "calibrate", "default", "--benign", "{data}", "--fpr", "2", "--out", "{root}/m1"],
     "MonitorConfig.fpr=2.0; expected a rate strictly between 0 and 1"),
    (["monitor", "calibrate", "default", "--benign", "{missing}", "--out", "{root}/m2"], "does not exist"),
    (["monitor", "calibrate", "{bad_detector}", "--benign", "{data}", "--out", "{root}/m3"], "detector.json"),
    (["monitor", "calibrate", "{missing_dir}", "--benign", "{data}", "--out", "{root}/m4"], "no-such-folder"),
    (["monitor", "show", "{empty}"], "holds no monitor.json"),
    # serve (every case fails before anything listens; the last two load the tiny model and refuse the monitor)
    (["serve", "--port", "70000"], "expected a TCP port 0-65535"),
    (["serve", "--max-batch", "0"], "ServeConfig.max_batch=0 must be at least 1"),
    (["serve", "--webhook", "ftp://example.org/hook"], "expected an http:// or https:// URL"),
    (["serve", "--api-key-env", "sk-abc123"], "is not an environment variable name"),
    (["serve", "--api-key-env", "PERSONAS_UNSET_KEY_VAR", "--out", "{root}/s1"],
     "--api-key-env PERSONAS_UNSET_KEY_VAR: that environment variable is not set"),
    (["serve", "--out", "{a_file}/s"], "which is a file"),
    (["serve", "--monitor", "none", "--out", "{diff_run}"], "not a server's record"),
    (["serve", "--model", "{model}", "--out", "{root}/s2"], "the shipped monitor watches SmolLM2"),
    (["serve", "--model", "{model}", "--monitor", "{bad_detector}", "--out", "{root}/s3"], "detector.json"),
]


def _argv(template: list[str], files: dict[str, str]) -> list[str]:
    return [re.sub(r"\{([^{}]+)\}", lambda m: files[m.group(1)], part) for part in template]


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: a usage line and exit code 2
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.parametrize("template, fragment", CASES, ids=[" ".join(c[0])[:70] for c in CASES])
def test_bad_input_is_one_clear_line(template, fragment, files, capsys):
    assert fragment.strip(), "an empty expected fragment checks nothing: name what the message must say"
    argv = _argv(template, files)
    code, err = _run(argv, capsys)
    assert code == 2, f"personas {' '.join(argv)} exited {code}: {err[-2000:]}"
    assert "Traceback" not in err and f"personas {template[0]}: error:" in err, err[-2000:]
    if "(the serve extra), which is not installed" in err and _serve_extra_missing():
        pytest.skip("the serve extra is not installed: the case got the clear message saying so")
    assert fragment in err, err[-2000:]


def _serve_extra_missing() -> bool:
    from personas.serve.server import require_serve_extra

    try:
        require_serve_extra()
    except Exception:
        return True
    return False


def test_every_subcommand_is_tried():
    from personas.cli.main import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert {c[0][0] for c in CASES} == commands


def test_serve_without_its_extra_says_what_to_install(files, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # `import fastapi` now fails as if it were not installed
    code, err = _run(["serve", "--monitor", "none", "--out", files["root"] + "/s4"], capsys)
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert "needs fastapi (the serve extra)" in err and 'pip install "personas[serve]"' in err, err


# real processes: an exception the CLI does not catch would show as a traceback on stderr
PROCESS_CASES = [
    ["rank", "{missing}"],
    ["rank", "{data}", "--sae", "{sae_truncated}", "--out", "{root}/p1"],
    ["detect", "--train", "{data}", "--holdout-by", "group", "--k", "0"],
    ["report", "{diff_run}"],
    ["steer", "--sae", "{sae_bad_cfg}", "--feature", "1", "--prompts", "{prompts.txt}"],
]


@pytest.mark.parametrize("template", PROCESS_CASES, ids=[" ".join(c)[:60] for c in PROCESS_CASES])
def test_bad_input_in_a_real_process(template, files):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    result = subprocess.run([sys.executable, "-m", "personas", *_argv(template, files)], capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"personas {template[0]}: error:")]
    assert len(lines) == 1, result.stderr[-2000:]
