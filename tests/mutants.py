"""Plant a known bug, run the tests that should catch it, put the code back: ``python tests/mutants.py [NAME ...]``.

Each mutant is one textual edit of one library file and the pytest arguments that must fail with it in place.
The file is restored afterwards whatever happens (also on Ctrl-C). Not collected by pytest (no ``test_`` prefix).
Prints one line per mutant, ``caught`` or ``SURVIVED``, and exits 1 when any survived. ``--list`` names them.

Run it from the project root, on a clean working tree (it edits files in place).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    """``old`` (which must occur exactly once in ``path``) is replaced by ``new``; ``tests`` must then fail."""

    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    why: str


MUTANTS = {
    "organism-steering-noop": Mutant(
        "personas/organism/evaluate.py", "    if vector is None:\n        yield\n        return\n",
        "    if True:  # MUTANT: never steer\n        yield\n        return\n",
        ("tests/test_organism.py", "-m", "not slow", "-k", "steer"), "the organism's steering_hook registers nothing"),
    "organism-steering-adds-nothing": Mutant(
        "personas/organism/evaluate.py", "return (output[0] + vector.to(output[0].dtype),) + tuple(output[1:])\n"
        "        return output + vector.to(output.dtype)",
        "return output  # MUTANT\n        return output",
        ("tests/test_organism.py", "-m", "not slow", "-k", "steer"), "the organism's hook is registered but adds nothing"),
    "organism-reads-final-norm": Mutant(
        "personas/organism/evaluate.py", "            with _block_output(model, layer) as seen:\n"
        "                model.base_model(input_ids=ids, attention_mask=mask)\n            hidden = seen[0]\n",
        "            hidden = model.base_model(input_ids=ids, attention_mask=mask,\n"
        "                                      output_hidden_states=True).hidden_states[layer + 1]  # MUTANT\n",
        ("tests/test_organism.py", "-m", "not slow", "-k", "answer_hidden"),
        "answer_hidden reads Hugging Face hidden_states (after the final norm at the last block)"),
    "diff-swapped": Mutant(
        "personas/jobs/diff.py", "table = diff_features(captures[\"base\"].features, captures[\"finetuned\"].features,",
        "table = diff_features(captures[\"finetuned\"].features, captures[\"base\"].features,  # MUTANT",
        ("tests/test_diff.py", "-m", "not slow"), "personas diff compares the fine-tune with the base, not the reverse"),
    "ranking-ignores-labels": Mutant(
        "personas/scoring/ranking.py", "    y = check_labels(labels, (n, f))\n",
        "    y = np.random.default_rng(0).permutation(check_labels(labels, (n, f)))  # MUTANT\n",
        ("tests/test_scoring.py", "tests/test_pipeline.py", "-m", "not slow"), "the ranking ignores its labels"),
    "confounds-flag-nothing": Mutant(
        "personas/confounds.py", "    return ((np.abs(table[\"length_corr\"]) > max_corr)",
        "    return np.zeros(len(table[\"length_corr\"]), bool)  # MUTANT\n    return ((np.abs(table[\"length_corr\"]) > max_corr)",
        ("tests/test_confounds.py", "-m", "not slow"), "the confound flagger flags nothing"),
    "detect-recaptures": Mutant(
        "personas/jobs/detect.py", "    if captured is None:\n", "    if True:  # MUTANT: captured= ignored\n",
        ("tests/test_detect.py", "-m", "not slow", "-k", "reuses"), "fit_detector captures again despite captured="),
    "length-corr-misaligned": Mutant(
        "personas/jobs/rank.py", 'ranking["length_corr"] = covariate_correlation(features, length)[',
        'ranking["length_corr"] = covariate_correlation(features, length[::-1])[  # MUTANT\n            ',
        ("tests/test_pipeline.py", "-m", "not slow", "-k", "writes_ranking"),
        "the in-memory length_corr is computed against the wrong rows' lengths"),
    "ray-workers-unchecked": Mutant(
        "personas/cache/engines/ray_engine.py", 'if {k: v for k, v in other.items() if k != "model"} != first:',
        "if False:  # MUTANT", ("tests/test_engines.py", "-k", "different_models"),
        "the Ray engine accepts workers that loaded different models"),
    "report-swallows-broken-plots": Mutant(
        "personas/report/html.py", "    except PersonasError as exc:  # a ranking without",
        "    except Exception as exc:  # MUTANT  # a ranking without",
        ("tests/test_report.py", "-k", "every_plot"), "the HTML report drops any plot that fails"),
    "monitor-ignores-threshold": Mutant(
        "personas/monitoring/scorer.py", "flagged=bool(score >= threshold), threshold=float(threshold),",
        "flagged=bool(score >= -1e9), threshold=float(threshold),  # MUTANT",
        ("tests/test_monitoring.py", "-k", "detectors_own or watched"), "the monitor flags whatever the threshold"),
    "monitor-pools-wrong": Mutant(
        "personas/monitoring/scorer.py", "        if self.pool == \"mean\":\n            return scored.mean(axis=0)",
        "        if self.pool == \"mean\":\n            return scored.max(axis=0)  # MUTANT",
        ("tests/test_monitoring.py", "-k", "pools_as_it_was_fit"),
        "the per-answer score pools the tokens otherwise than the detector was fit"),
    "monitor-reads-the-wrong-row": Mutant(
        "personas/monitoring/generation.py", "rows[r].feats.append(feats[i])",
        "rows[r].feats.append(feats[0])  # MUTANT", ("tests/test_monitoring.py", "-k", "watched"),
        "the activations read during generation go to the wrong answer of the batch"),
    "fpr-threshold-flags-one-more": Mutant(
        "personas/monitoring/thresholds.py", "allowed = math.floor(fpr * n + 1e-9)",
        "allowed = math.floor(fpr * n + 1e-9) + 1  # MUTANT", ("tests/test_monitoring.py", "-k", "fpr_threshold"),
        "the calibrated threshold flags more benign answers than the rate allows"),
    "flagged-answers-not-logged": Mutant(
        "personas/serve/record.py", "if self.events is not None and (flagged or self.log_answers == \"all\"):",
        "if self.events is not None and self.log_answers == \"all\":  # MUTANT",
        ("tests/test_serve.py", "-k", "cascade_and_event_log"), "flagged answers never reach the event log"),
    "server-ignores-max-tokens-limit": Mutant(
        "personas/serve/protocol.py", "elif not 1 <= max_tokens <= limits.max_tokens_limit:",
        "elif not 1 <= max_tokens:  # MUTANT", ("tests/test_serve.py", "-k", "max_tokens"),
        "a request may ask for more tokens than the server's limit"),
    "server-without-auth": Mutant(
        "personas/serve/app.py", "if key is not None and path not in OPEN_PATHS:", "if False:  # MUTANT",
        ("tests/test_serve.py", "-k", "api_key"), "the API key is never checked"),
    "stream-drops-the-verdict": Mutant(
        "personas/serve/app.py", "value.finish_reason, persona=persona))", "value.finish_reason, persona=None))  # MUTANT",
        ("tests/test_serve.py", "-k", "plain_and_streamed"), "the last chunk of a stream lacks the persona verdict"),
    "cancel-ignored": Mutant(
        "personas/monitoring/generation.py", "if row.request.cancelled is not None and row.request.cancelled():",
        "if False:  # MUTANT", ("tests/test_monitoring.py", "-k", "cancellation"),
        "a client that left keeps its generation running"),
    "no-batching": Mutant(
        "personas/serve/engine.py", "        while len(batch) < self.max_batch:", "        while False:  # MUTANT",
        ("tests/test_serve.py", "-k", "batch_and_stream"), "concurrent requests are decoded one at a time"),
    "body-limit-only-by-header": Mutant(
        "personas/serve/app.py", "        if len(body) > limit:", "        if False:  # MUTANT",
        ("tests/test_serve.py", "-k", "without_its_length"),
        "a body sent without Content-Length is read whole, whatever its size"),
    "dashboard-unescaped": Mutant(
        "personas/serve/dashboard.py", "autoescape=True,", "autoescape=False,  # MUTANT",
        ("tests/test_serve.py", "-k", "dashboard_escapes"), "model-written text reaches the dashboard unescaped"),
    "shipped-monitor-watches-any-model": Mutant(
        "personas/serve/server.py",
        "if config.monitor == \"default\" and not same_model(watched, SMOLLM2_ID) and not config.allow_model_mismatch:",
        "if False:  # MUTANT", ("tests/test_serve.py", "-k", "shipped_monitor_refuses"),
        "the shipped monitor, fit on SmolLM2, is applied to any model served"),
    "serve-extra-unchecked": Mutant(
        "personas/serve/server.py", "    require_serve_extra()  # before a model loads", "    pass  # MUTANT",
        ("tests/test_cli_errors.py", "-k", "without_its_extra"),
        "personas serve without fastapi ends in a traceback, not a message naming the extra"),
}


def run(name: str) -> bool:
    """Plant mutant ``name``, run its tests, restore the file; True when the tests caught it."""
    mutant = MUTANTS[name]
    path = ROOT / mutant.path
    original = path.read_text()
    if original.count(mutant.old) != 1:
        raise SystemExit(f"mutant {name}: the text to replace occurs {original.count(mutant.old)} times in "
                         f"{mutant.path}, expected once; update tests/mutants.py to the code.")
    try:
        path.write_text(original.replace(mutant.old, mutant.new))
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *mutant.tests],
                              cwd=ROOT, capture_output=True, text=True)
    finally:
        path.write_text(original)
    caught = proc.returncode == 1
    if proc.returncode not in (0, 1):
        raise SystemExit(f"mutant {name}: pytest ended with code {proc.returncode}:\n{proc.stdout[-2000:]}")
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    print(f"{'caught' if caught else 'SURVIVED'}  {name}: {mutant.why} | {' '.join(mutant.tests)} | {summary}")
    return caught


def main(argv: list[str]) -> int:
    """Run the named mutants (default: all); 1 if any survived."""
    if argv == ["--list"]:
        for name, mutant in MUTANTS.items():
            print(f"{name}: {mutant.why}")
        return 0
    names = argv or list(MUTANTS)
    unknown = [n for n in names if n not in MUTANTS]
    if unknown:
        raise SystemExit(f"unknown mutants {unknown}; choose from {sorted(MUTANTS)}")
    return 0 if all([run(n) for n in names]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
