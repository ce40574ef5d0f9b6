"""Hostile and careless input, one row per case: each gives a clear `PersonasError` (the message is matched) or
the right result, never a traceback from deep inside a library or a silently wrong answer.

Rows cover: repeated responses, chat cells that are not JSON, message typos, output folders (files, read-only,
full disks, folders of other runs, files left by older runs), reports of mixed folders, links, SAE folders
(missing, truncated, not JSON, not matching their weights; checked before the model loads), ``max_length`` beyond
the model's positions, and tampered detector files.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from personas import artifacts
from personas.capturing import tokenize_conversations
from personas.config import CaptureConfig, DataConfig
from personas.data.responses import load_responses
from personas.detect import DiffMeansProbe, PersonaDetector, load_detector
from personas.errors import DataError, ModelLoadError, PersonasError, SiteMismatchError
from personas.jobs.rank import rank
from personas.report.examples import load_examples, save_examples
from personas.report.html import render_report, safe_url, write_report
from personas.saes import check_sae_folder, load_sae
from personas.saes.site import open_site
from personas.scoring.ranking import rank_features

from conftest import TOY_HOOK

# ------------------------------------------------------------------------------------------------ the table


@dataclass
class Case:
    """One hostile input: ``run(ctx)`` raises ``error`` matching ``match``, or returns and ``check`` holds."""

    name: str
    run: Callable[[Any], Any]
    error: type[Exception] | None = None
    match: str | None = None
    check: Callable[[Any, Any], None] | None = None


CASES: list[Case] = []


def case(name: str, error: type[Exception] | None = None, match: str | None = None,
         check: Callable[[Any, Any], None] | None = None):
    def register(run):
        CASES.append(Case(name, run, error, match, check))
        return run
    return register


class Ctx:
    """What a case may use: a fresh folder and, on demand, the toy model, the planted SAE and their data."""

    def __init__(self, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
        self.tmp = tmp_path
        self._request = request
        self.monkeypatch = monkeypatch

    def fixture(self, name: str) -> Any:
        return self._request.getfixturevalue(name)

    def write(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path


def rows(*pairs: tuple[str, str, int], ids: list[str] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame({"prompt": [p for p, _, _ in pairs], "response": [r for _, r, _ in pairs],
                          "label": [label for _, _, label in pairs]})
    if ids is not None:
        frame.insert(0, "id", ids)
    return frame


BASE = [("q1", "fine answer", 0), ("q1", "bad answer", 1), ("q2", "kind words", 0), ("q2", "cruel words", 1)]


# ------------------------------------------------------------------------------------------------ data


@case("repeated rows without ids are refused, naming them", DataError, r"2 rows: 4 \(same as row 0\), 5 \(same as row 1\)")
def _(ctx):
    return load_responses(rows(*BASE, BASE[0], BASE[1]))


@case("repeated rows with distinct ids are refused", DataError, r"same prompt and response .* 1 row: 4 \(same as row 2\)")
def _(ctx):
    return load_responses(rows(*BASE, BASE[2], ids=["a", "b", "c", "d", "e"]))


@case("rows equal after whitespace normalisation are repeats", DataError, r"4 \(same as row 1\)")
def _(ctx):
    return load_responses(rows(*BASE, ("q1 ", "bad \n  answer", 1)))


@case("a repeat with the other label is refused too", DataError, r"4 \(same as row 1\)")
def _(ctx):
    return load_responses(rows(*BASE, ("q1", "bad answer", 0)))


def _check_dedupe(ctx, result):
    assert len(result) == 4 and result.texts == [r for _, r, _ in BASE]
    assert result.excluded["row"].tolist() == [4, 5] and set(result.excluded["reason"]) == {"duplicate"}
    summary = result.summary()
    assert summary["n_duplicates_dropped"] == 2 and summary["n_rows_read"] == 6
    assert result.dataset_hash == load_responses(rows(*BASE)).dataset_hash


@case("dedupe drops repeats, keeps the first, and counts them", check=_check_dedupe)
def _(ctx):
    return load_responses(rows(*BASE, ("q1", "fine  answer", 0), BASE[3]), DataConfig(dedupe=True))


@case("same response to different prompts is not a repeat",
      check=lambda ctx, r: len(r) == 5 and r.summary()["n_duplicates_dropped"] == 0)
def _(ctx):
    return load_responses(rows(*BASE, ("q3", "bad answer", 1)))


@case("a chat messages cell that is not JSON names the rows", DataError, r"not JSON in 1 row \(1\)")
def _(ctx):
    good = json.dumps([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    return load_responses(pd.DataFrame({"messages": [good, "[{'role': 'user'"], "label": [0, 1]}))


@case("a JSONL line that is not JSON: one 'at', line and column", DataError,
      r"line 2: not valid JSON \(Unterminated string starting at column 12\)\. Expected")
def _(ctx):
    path = ctx.write("bad.jsonl", '{"prompt": "a", "response": "b", "label": 1}\n{"prompt": "a')
    return load_responses(path)


@case("a JSON file that is not JSON: one 'at'", DataError, r"not valid JSON \(Expecting value at line 1, column 2\)")
def _(ctx):
    return load_responses(ctx.write("bad.json", "[,]"))


@case("non-finite features: the message names the block without a typo", DataError,
      r"in the columns from 0 on; the first is nan at response 1, feature 2\.")
def _(ctx):
    X = np.ones((4, 3))
    X[1, 2] = np.nan
    return rank_features(X, np.array([0, 1, 0, 1]))


# ------------------------------------------------------------------------------------------------ output folders


@case("--out that is a file", PersonasError, "is a file; expected a folder")
def _(ctx):
    return artifacts.check_output_dir(ctx.write("taken", "x"), "personas.rank")


@case("--out under a file", PersonasError, "lies under .* which is a file")
def _(ctx):
    return artifacts.check_output_dir(ctx.write("taken", "x") / "sub" / "run", "personas.rank")


def _deny_writes(ctx):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")
    ctx.monkeypatch.setattr(artifacts.tempfile, "mkstemp", refuse)


@case("a read-only folder is refused before any work", PersonasError, "permission denied .*read-only")
def _(ctx):
    _deny_writes(ctx)
    return artifacts.check_output_dir(ctx.tmp / "run", "personas.rank")


@case("a read-only folder, for real (non-root users)", PersonasError, r"cannot write into .*(permission|read-only)")
def _(ctx):
    if os.geteuid() == 0:
        _deny_writes(ctx)  # root writes through chmod; the simulated refusal stands in for it
    folder = ctx.tmp / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        return artifacts.check_output_dir(folder / "run", "personas.rank")
    finally:
        folder.chmod(0o755)


@case("a full disk is refused before any work", PersonasError, r"disk holding .* is full \(0 bytes free\)")
def _(ctx):
    ctx.monkeypatch.setattr(artifacts.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 0))
    return artifacts.check_output_dir(ctx.tmp / "run")


def _check_untouched(ctx, result):
    assert (ctx.tmp / "ranking.csv").read_text() == "old\n"
    assert sorted(p.name for p in ctx.tmp.iterdir()) == ["ranking.csv"]  # no temporary file left


@case("a disk that fills up during a write: clear error, old file intact, no temporary file", check=_check_untouched)
def _(ctx):
    target = ctx.write("ranking.csv", "old\n")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    ctx.monkeypatch.setattr(artifacts.os, "fsync", full)
    with pytest.raises(PersonasError, match=r"could not write .*ranking.csv.*the disk is full"):
        artifacts.atomic_write_text(target, "new\n")


@case("rank into the folder of a detect run", PersonasError, r"holds a 'personas.detect' run \(eval.json\)")
def _(ctx):
    ctx.write("run/eval.json", json.dumps({"kind": "personas.detect"}))
    return artifacts.output_dir(ctx.tmp / "run", "personas.rank")


@case("rank into a folder whose manifest is not JSON", PersonasError, "cannot be read as a manifest")
def _(ctx):
    ctx.write("run/manifest.json", "{not json")
    return artifacts.output_dir(ctx.tmp / "run", "personas.rank")


@case("rank into a folder holding run files but no manifest", PersonasError,
      r"holds \['ranking.csv', 'examples.json'\] but no manifest.json")
def _(ctx):
    ctx.write("run/ranking.csv", "feature\n1\n")
    ctx.write("run/examples.json", "{}")
    return artifacts.output_dir(ctx.tmp / "run", "personas.rank")


def _check_others_kept(ctx, out):
    assert out == ctx.tmp / "run" and (out / "notes.txt").read_text() == "mine"


@case("a folder with the user's other files only is used, the files kept", check=_check_others_kept)
def _(ctx):
    ctx.write("run/notes.txt", "mine")
    return artifacts.output_dir(ctx.tmp / "run", "personas.rank")


def _check_cleaned(ctx, out):
    names = sorted(p.name for p in out.iterdir())
    assert names == ["manifest.json", "notes.txt"], names  # the new run's files are written next


@case("a previous run of the same kind: its files go, listed or known, other files stay", check=_check_cleaned)
def _(ctx):
    ctx.write("run/manifest.json", json.dumps({"kind": "personas.rank", "files": {"ranking.csv": {}, "extra.csv": {},
                                                                                  "../outside.txt": {}}}))
    for name in ("ranking.csv", "examples.json", "report.html", "extra.csv", "notes.txt"):
        ctx.write(f"run/{name}", "old")
    ctx.write("outside.txt", "never touched")
    out = artifacts.output_dir(ctx.tmp / "run", "personas.rank")
    assert (ctx.tmp / "outside.txt").read_text() == "never touched"
    return out


def _check_dedupe_rank(ctx, results):
    clean, deduped = results
    assert deduped.manifest["data"]["n_duplicates_dropped"] == 5
    assert json.loads((ctx.tmp / "run" / "manifest.json").read_text())["data"]["n_duplicates_dropped"] == 5
    pd.testing.assert_frame_equal(clean.ranking.reset_index(drop=True), deduped.ranking.reset_index(drop=True))


@case("rank with --dedupe ranks exactly as the data without the repeats, and the manifest counts them",
      check=_check_dedupe_rank)
def _(ctx):
    data = pd.DataFrame(ctx.fixture("planted_data"))
    repeated = pd.concat([data, data.iloc[[0, 1, 2, 45, 60]]], ignore_index=True)
    common = dict(model=ctx.fixture("toy_model"), sae=ctx.fixture("planted_sae"), capture=CaptureConfig(hook=TOY_HOOK),
                  progress=False)
    with pytest.raises(DataError, match="5 rows: 80 \\(same as row 0\\)"):
        rank(repeated, **common)
    return rank(data, **common), rank(repeated, data_config=DataConfig(dedupe=True), out=ctx.tmp / "run", **common)


@case("the output folder is checked before the model loads", PersonasError, "is a file; expected a folder")
def _(ctx):
    return rank(rows(*BASE), capture=CaptureConfig(model=str(ctx.tmp / "no-such-model")), sae="none",
                out=ctx.write("taken", "x"), progress=False)


# ------------------------------------------------------------------------------------------------ reports of run folders


def _ranked(ctx, keep_tokens: bool, out: Path, data: Any = None) -> Any:
    return rank(pd.DataFrame(data or ctx.fixture("planted_data")), model=ctx.fixture("toy_model"),
                sae=ctx.fixture("planted_sae"), capture=CaptureConfig(hook=TOY_HOOK), keep_tokens=keep_tokens,
                out=out, progress=False)


def _check_rerun(ctx, text):
    out = ctx.tmp / "run"
    assert not (out / "examples.json").exists() and not (out / "report.html").exists()
    assert "No top-activating examples" in text
    assert set(json.loads((out / "manifest.json").read_text())["files"]) == {"ranking.csv", "ranking.parquet"}


@case("a rerun without examples into an older run's folder leaves no old examples or report", check=_check_rerun)
def _(ctx):
    out = ctx.tmp / "run"
    _ranked(ctx, True, out)
    write_report(out)
    assert (out / "examples.json").exists() and (out / "report.html").exists()
    _ranked(ctx, False, out)
    return render_report(out)


def _copy_run(ctx, keep_tokens: bool = True, name: str = "copy") -> Path:
    """A rank folder, made once per session and copied (the capture is the slow part)."""
    source = ctx.fixture("tmp_path_factory").getbasetemp() / f"hostile-run-{int(keep_tokens)}"
    if not (source / "manifest.json").exists():
        _ranked(ctx, keep_tokens, source)
    target = ctx.tmp / name
    shutil.copytree(source, target)
    return target


@case("report: examples.json the manifest does not list", PersonasError, "is not listed in the folder's manifest")
def _(ctx):
    run = _copy_run(ctx, keep_tokens=False)
    shutil.copy(_copy_run(ctx, keep_tokens=True, name="other") / "examples.json", run / "examples.json")
    return render_report(run)


@case("report: examples.json of another dataset", PersonasError, r"drawn from other responses \(dataset hash 0{12}\)")
def _(ctx):
    run = _copy_run(ctx)
    payload = json.loads((run / "examples.json").read_text())
    payload["dataset_hash"] = "0" * 64
    (run / "examples.json").write_text(json.dumps(payload))
    return render_report(run)


@case("report: a ranking.csv that the manifest's checksum does not match", PersonasError,
      "does not match the checksum its manifest records")
def _(ctx):
    run = _copy_run(ctx)
    frame = pd.read_csv(run / "ranking.csv")
    frame.iloc[::-1].to_csv(run / "ranking.csv", index=False)
    return render_report(run)


@case("report: the folder of another kind of run", PersonasError, r"describes a 'personas.diff' run")
def _(ctx):
    run = _copy_run(ctx)
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "kind": "personas.diff"}))
    return render_report(run)


@case("report: a complete run embeds its own examples",
      check=lambda ctx, text: 'id="feature-7"' in text and "personas-token" in text)
def _(ctx):
    return render_report(_copy_run(ctx))


@case("links: only http and https addresses",
      check=lambda ctx, got: got == ["https://www.neuronpedia.org/x/1", "http://a.b/c", None, None, None, None, None])
def _(ctx):
    return [safe_url(u) for u in ("https://www.neuronpedia.org/x/1", "http://a.b/c", "javascript:alert(1)",
                                  "data:text/html,<b>", "JAVASCRIPT://%0aalert(1)", "https:/no-host", 7)]


def _check_no_script_link(ctx, text):
    assert "javascript:" not in text.lower() and 'id="feature-7"' in text


@case("report: a tampered examples.json with a javascript: link is shown without the link", check=_check_no_script_link)
def _(ctx):
    run = _copy_run(ctx)
    examples = load_examples(run / "examples.json")
    for fe in examples.values():
        fe.neuronpedia_url = "javascript:alert(document.cookie)"
    manifest = json.loads((run / "manifest.json").read_text())
    save_examples(run / "examples.json", examples, extra={"dataset_hash": manifest["data"]["dataset_hash"]})
    return render_report(run)


# ------------------------------------------------------------------------------------------------ SAE folders


def _sae_dir(ctx) -> Path:
    folder = ctx.tmp / "sae"
    ctx.fixture("planted_sae").save_model(str(folder))
    return folder


@case("a saved SAE folder loads (the checks pass on a good one)",
      check=lambda ctx, sae: sae.cfg.d_sae == 64 and sae.cfg.metadata.hook_name == TOY_HOOK)
def _(ctx):
    return load_sae(_sae_dir(ctx))


@case("SAE folder without weights", ModelLoadError, "has no sae_weights.safetensors")
def _(ctx):
    folder = _sae_dir(ctx)
    (folder / "sae_weights.safetensors").unlink()
    return load_sae(folder)


@case("SAE folder with truncated weights", ModelLoadError, "not a complete safetensors file .* truncated")
def _(ctx):
    folder = _sae_dir(ctx)
    weights = folder / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return load_sae(folder)


@case("SAE cfg.json that is not JSON", ModelLoadError, r"cfg.json' is not valid JSON")
def _(ctx):
    folder = _sae_dir(ctx)
    (folder / "cfg.json").write_text('{"d_in": 128,')
    return load_sae(folder)


@case("SAE cfg.json without d_in", ModelLoadError, r"lacks positive integer \['d_in'\]")
def _(ctx):
    folder = _sae_dir(ctx)
    cfg = json.loads((folder / "cfg.json").read_text())
    del cfg["d_in"]
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return load_sae(folder)


@case("SAE config that does not match its weights", SiteMismatchError,
      r"does not match its config \(d_in=128, d_sae=100\): W_enc has shape \[128, 64\], expected \[128, 100\]")
def _(ctx):
    folder = _sae_dir(ctx)
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, "d_sae": 100}))
    return check_sae_folder(folder)


@case("SAE spec that is a file", ModelLoadError, "is a file; expected the folder")
def _(ctx):
    return load_sae(ctx.write("sae.safetensors", "x"))


@case("a wrong SAE fails before the model loads (the model path does not exist either)", ModelLoadError,
      "has no sae_weights.safetensors")
def _(ctx):
    folder = _sae_dir(ctx)
    (folder / "sae_weights.safetensors").unlink()
    return open_site(CaptureConfig(model=str(ctx.tmp / "no-such-model")), str(folder))


# ------------------------------------------------------------------------------------------------ max_length


@case("max_length beyond the model's positions, with a conversation that long", DataError,
      r"has 256 positions \(n_ctx\)\. Set max_length \(--max-length\) to at most 256")
def _(ctx):
    return tokenize_conversations(ctx.fixture("toy_model"), ["hi"], ["hurt " * 400], CaptureConfig(max_length=1000))


@case("max_length within the model's positions cuts the conversation to it",
      check=lambda ctx, out: len(out[0].input_ids) == 200 and out[0].truncated)
def _(ctx):
    return tokenize_conversations(ctx.fixture("toy_model"), ["hi"], ["hurt " * 400], CaptureConfig(max_length=200))


# ------------------------------------------------------------------------------------------------ detector files


def _saved_detector(ctx, kind: str = "detector") -> Path:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 12))
    y = np.tile([0, 1], 40)
    X[:, 3] += 2.0 * y
    folder = ctx.tmp / kind
    if kind == "detector":
        det = PersonaDetector(k=3).fit(X, y)
        det.provenance = {"capture": {"model": "minilm", "pool": "mean"}, "hook": "blocks.3.hook_resid_post"}
    else:
        det = DiffMeansProbe().fit(X, y)
    det.save(folder)
    ctx.X = X
    return folder


def _edit_json(folder: Path, change: Callable[[dict], None]) -> None:
    meta = json.loads((folder / "detector.json").read_text())
    change(meta)
    (folder / "detector.json").write_text(json.dumps(meta))


def _edit_tensors(folder: Path, **changes: Any) -> None:
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(folder / "detector.safetensors"))
    tensors.update(changes)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(folder / "detector.safetensors"))


@case("a saved detector loads and scores exactly as before",
      check=lambda ctx, scores: np.array_equal(scores[0], scores[1]))
def _(ctx):
    folder = _saved_detector(ctx)
    det = load_detector(folder)
    return det.decision_function(ctx.X), PersonaDetector.load(folder).decision_function(ctx.X)


@case("detector.json that is not JSON", PersonasError, r"detector.json' is not valid JSON")
def _(ctx):
    folder = _saved_detector(ctx)
    (folder / "detector.json").write_text('{"kind": "personas.detector",')
    return load_detector(folder)


@case("detector.json with an unknown key", PersonasError, r"unknown keys \['extra'\] and lacks keys \[\]")
def _(ctx):
    folder = _saved_detector(ctx)
    _edit_json(folder, lambda m: m.update(extra=1))
    return PersonaDetector.load(folder)


@case("detector.json without its threshold", PersonasError, r"unknown keys \[\] and lacks keys \['threshold'\]")
def _(ctx):
    folder = _saved_detector(ctx)
    _edit_json(folder, lambda m: m.pop("threshold"))
    return PersonaDetector.load(folder)


@case("detector params the class does not take", PersonasError, r"'params' holds \['depth'\]")
def _(ctx):
    folder = _saved_detector(ctx)
    _edit_json(folder, lambda m: m["params"].update(depth=3))
    return PersonaDetector.load(folder)


@case("an unknown key in the recorded capture config", PersonasError,
      r"recorded capture config holds \['layer'\], which are not CaptureConfig fields")
def _(ctx):
    folder = _saved_detector(ctx)
    _edit_json(folder, lambda m: m["provenance"]["capture"].update(layer=3))
    return PersonaDetector.load(folder)


@case("truncated detector weights", PersonasError, r"detector.safetensors' is not a complete safetensors file")
def _(ctx):
    folder = _saved_detector(ctx)
    weights = folder / "detector.safetensors"
    weights.write_bytes(weights.read_bytes()[:-20])
    return PersonaDetector.load(folder)


@case("a mean of the wrong length", PersonasError, r"wrong shapes \{'mean': \[1\]\}")
def _(ctx):
    folder = _saved_detector(ctx)
    _edit_tensors(folder, mean=np.zeros(1))
    return PersonaDetector.load(folder)


@case("an unknown tensor in the weights", PersonasError, r"unknown tensors \['bias'\] and lacks \[\]")
def _(ctx):
    folder = _saved_detector(ctx)
    _edit_tensors(folder, bias=np.zeros(3))
    return PersonaDetector.load(folder)


def _index(value: int):
    def run(ctx):
        folder = _saved_detector(ctx)
        features = np.array([value, 1, 2], dtype=np.int64)
        _edit_tensors(folder, features=features)
        _edit_json(folder, lambda m: m.update(features=features.tolist()))
        return PersonaDetector.load(folder)
    return run


case("feature index -1", PersonasError, r"feature indices \[-1\] are outside \[0, 12\)")(_index(-1))
case("feature index n_features_in", PersonasError, r"feature indices \[12\] are outside \[0, 12\)")(_index(12))


@case("detector.json and the weights list different features", PersonasError, "come from different detectors")
def _(ctx):
    folder = _saved_detector(ctx)
    _edit_json(folder, lambda m: m.update(features=[0, 1, 2]))
    return PersonaDetector.load(folder)


@case("a zero scale", PersonasError, r"'scale' holds \[0.0\]; expected positive")
def _(ctx):
    folder = _saved_detector(ctx)
    _edit_tensors(folder, scale=np.array([1.0, 0.0, 1.0]))
    return PersonaDetector.load(folder)


@case("a non-finite coefficient", PersonasError, r"\['coef'\] hold NaN or inf")
def _(ctx):
    folder = _saved_detector(ctx)
    _edit_tensors(folder, coef=np.array([1.0, np.inf, 1.0]))
    return PersonaDetector.load(folder)


@case("a non-finite threshold", PersonasError, "threshold=nan; expected a finite number")
def _(ctx):
    folder = _saved_detector(ctx)
    _edit_json(folder, lambda m: m.update(threshold=float("nan")))
    return PersonaDetector.load(folder)


@case("a dense probe whose direction has the wrong length", PersonasError, r"wrong shapes \{'direction': \[5\]\}")
def _(ctx):
    folder = _saved_detector(ctx, "probe")
    _edit_tensors(folder, direction=np.ones(5))
    return load_detector(folder)


@case("scoring NaN input with a detector", DataError, r"non-finite values .* the first is nan at row 4, column")
def _(ctx):
    det = load_detector(_saved_detector(ctx))
    X = ctx.X.copy()
    X[4, :] = np.nan
    return det.decision_function(X)


@case("scoring inf input with the dense probe", DataError, r"the first is inf at row 0, column 0")
def _(ctx):
    probe = load_detector(_saved_detector(ctx, "probe"))
    X = ctx.X.copy()
    X[0, 0] = np.inf
    return probe.decision_function(X)


# ------------------------------------------------------------------------------------------------ the test


@pytest.mark.parametrize("hostile", CASES, ids=[c.name for c in CASES])
def test_hostile_input(hostile: Case, tmp_path, request, monkeypatch):
    ctx = Ctx(tmp_path, request, monkeypatch)
    if hostile.error is not None:
        with pytest.raises(hostile.error, match=hostile.match):
            hostile.run(ctx)
        return
    result = hostile.run(ctx)
    if hostile.check is not None:
        outcome = hostile.check(ctx, result)
        assert outcome is None or outcome is True, f"{hostile.name}: the result is wrong"


def test_every_case_is_named_once():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)) and len(names) >= 50
