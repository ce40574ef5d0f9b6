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
    "explain-sets-overlap": Mutant(
        "personas/explaining/evidence.py", '            return np.flatnonzero(~side), np.flatnonzero(side), "question"',
        '            return np.arange(n), np.flatnonzero(side), "question"  # MUTANT',
        ("tests/test_explaining.py", "-k", "disjoint"),
        "the explanation set takes every answer, the held-out ones included"),
    "explain-truth-swapped": Mutant(
        "personas/explaining/scorers.py",
        "    return np.r_[np.ones(len(evidence.score_active)), np.zeros(len(evidence.score_silent))]",
        "    return np.r_[np.zeros(len(evidence.score_active)), np.ones(len(evidence.score_silent))]  # MUTANT",
        ("tests/test_explaining.py", "-k", "true_description"), "the scorers' labels are swapped"),
    "explain-baseline-is-itself": Mutant(
        "personas/explaining/scorers.py", '            entry["random-latent"] = (texts[other], other)',
        '            entry["random-latent"] = (texts[f], f)  # MUTANT',
        ("tests/test_explaining.py", "-k", "beat_both_baselines"),
        "the random-latent baseline is the latent's own explanation"),
    "explain-silent-any-question": Mutant(
        "personas/explaining/evidence.py", "            rows = rows[np.isin(self.corpus.groups[rows], list(questions))]",
        "            pass  # MUTANT", ("tests/test_explaining.py", "-k", "disjoint"),
        "silent windows come from any question, not the activating windows' questions"),
    "explain-silent-length-unmatched": Mutant(
        "personas/explaining/evidence.py", "        if len(near) != n:\n",
        "        if True:  # MUTANT\n", ("tests/test_explaining.py", "-k", "disjoint"),
        "silent scoring windows are not drawn as long as the activating ones"),
    "explain-cache-ignored": Mutant(
        "personas/explaining/llm.py", "            found = cache.get_many(sorted(set(keys.values())))",
        "            found = {}  # MUTANT", ("tests/test_explaining.py", "-k", "api"),
        "the API explainer asks again for what its cache holds"),
    "explain-cards-show-nothing": Mutant(
        "personas/report/cards.py", "        explanations=card_entries(explained, feature),",
        "        explanations=[],  # MUTANT", ("tests/test_explaining.py", "-k", "run_folder"),
        "the feature cards leave out the run's explanations"),
    "explain-report-drops-table": Mutant(
        "personas/report/html.py", "    return intro + table.summary().to_html(",
        "    return intro + 0 * table.summary().to_html(  # MUTANT", ("tests/test_explaining.py", "-k", "run_folder"),
        "report.html says what the explanations are but shows no table of them"),
    "explain-cli-keeps-old-report": Mutant(
        "personas/cli/explain.py", "        if report.is_file() and not args.keep_report:",
        "        if False:  # MUTANT", ("tests/test_explaining.py", "-k", "run_folder"),
        "`personas explain` leaves the folder's report.html without the explanations"),
    "explain-beats-on-a-point": Mutant(
        "personas/explaining/latents.py", "            beats.append(bool(np.isfinite(lo) and lo > 0))",
        "            beats.append(bool(gain > 0))  # MUTANT", ("tests/test_explaining.py", "-k", "beating"),
        "an explanation beats a baseline on a higher point estimate, whatever the paired interval"),
    "explain-log-odds-reversed": Mutant(
        "personas/explaining/explainers.py", "        z_peak = log_odds_z(peak, silent_words, self.prior)",
        "        z_peak = log_odds_z(silent_words, peak, self.prior)  # MUTANT",
        ("tests/test_explaining.py", "-k", "beat_both_baselines"),
        "the offline explainer names the words of the silent windows, not of the firing tokens"),
    "explain-stale-file-shown": Mutant(
        "personas/explaining/table.py",
        "    if not isinstance(listed, dict) or hashlib.sha256(raw).hexdigest() != listed.get(\"sha256\"):",
        "    if False:  # MUTANT",
        ("tests/test_explaining.py", "-k", "does_not_list"),
        "an explanations.csv the manifest does not list (edited, another run's) goes on the cards and the report"),
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
