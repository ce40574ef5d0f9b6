"""Plant known bugs one at a time in a copy of the repository and check that the tests aimed at each one fail.

    python tests/mutants.py [--list] [--keep DIR] [--jobs N] [NAME ...]

Each mutant is one textual edit of one file (``old``, which must occur exactly once, becomes ``new``) and the pytest
arguments of the tests that must then fail. The repository is never edited: its files (``git ls-files``: tracked
and untracked-but-not-ignored, as they are on disk) are copied to a temporary folder (``--keep DIR``: that folder,
kept), one copy per job (``--jobs``, default 2 or the CPUs if fewer), and each mutant is planted in a free copy,
its tests run, and the file is put back. A mutant whose ``old`` text no longer occurs once is an
error of the harness, not a pass: the list cannot go stale silently.

Speed: the tests of all mutants run from one process. It imports the heavy third-party libraries once (torch,
transformers, TransformerLens, sae-lens, scikit-learn, pandas, pytest) without running anything, then forks one
child per mutant (one per job at a time, the CPUs shared between them); the child puts its copy first on
``sys.path`` and runs ``pytest.main`` there, so it imports ``personas`` (and the conftest) from the mutated copy. Output: one line per mutant, ``caught`` or ``SURVIVED``,
with its file, the seconds its tests took and pytest's last line; the exit code is 1 when any survived, 2 on a
harness error (a stale mutant, a selection that collects no test, a mutant that breaks collection instead of a
test). ``tests/test_mutants.py`` (marked slow) runs every mutant this way. Not collected by pytest itself (no
``test_`` prefix).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOT_SLOW = ("-m", "not slow")


@dataclass(frozen=True)
class Mutant:
    """``old`` (which must occur exactly once in ``path``) is replaced by ``new``; ``tests`` must then fail."""

    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    why: str


@dataclass
class Result:
    """What planting one mutant gave: pytest's exit code (1: its tests failed, the mutant is caught)."""

    name: str
    path: str
    code: int
    seconds: float
    summary: str

    @property
    def caught(self) -> bool:
        return self.code == 1


MUTANTS = {
    # ------------------------------------------------------------------------------------ earlier rounds
    "organism-steering-noop": Mutant(
        "personas/organism/chat.py", "    if vector is None:\n        yield\n        return\n",
        "    if True:  # MUTANT: never steer\n        yield\n        return\n",
        ("tests/test_organism.py", *NOT_SLOW, "-k", "steer"), "the organism's steering_hook registers nothing"),
    "organism-steering-adds-nothing": Mutant(
        "personas/organism/chat.py", "return (output[0] + vector.to(output[0].dtype),) + tuple(output[1:])\n"
        "        return output + vector.to(output.dtype)",
        "return output  # MUTANT\n        return output",
        ("tests/test_organism.py", *NOT_SLOW, "-k", "steer"), "the organism's hook is registered but adds nothing"),
    "organism-reads-final-norm": Mutant(
        "personas/organism/chat.py", "                try:\n                    model.base_model(input_ids=ids, attention_mask=mask)\n"
        "                except _Reached:\n                    pass\n                hidden = captured[\"h\"]\n",
        "                handle.remove()  # MUTANT: no stop at the block; Hugging Face's hidden_states instead\n"
        "                hidden = model.base_model(input_ids=ids, attention_mask=mask, output_hidden_states=True"
        ").hidden_states[block + 1]\n",
        ("tests/test_organism.py", *NOT_SLOW, "-k", "answer_residuals"),
        "answer_residuals reads Hugging Face hidden_states (after the final norm at the last block)"),
    "diff-swapped": Mutant(
        "personas/jobs/diff.py", "table = diff_features(captures[\"base\"].features, captures[\"finetuned\"].features,",
        "table = diff_features(captures[\"finetuned\"].features, captures[\"base\"].features,  # MUTANT",
        ("tests/test_diff.py", *NOT_SLOW, "-k", "planted_change"),
        "personas diff compares the fine-tune with the base, not the reverse"),
    "ranking-ignores-labels": Mutant(
        "personas/scoring/ranking.py", "    y = check_labels(labels, (n, f))\n",
        "    y = np.random.default_rng(0).permutation(check_labels(labels, (n, f)))  # MUTANT\n",
        ("tests/test_scoring.py", *NOT_SLOW), "the ranking ignores its labels"),
    "confounds-flag-nothing": Mutant(
        "personas/scoring/confounds.py",
        "    return confound_kind(table, max_corr=max_corr, max_token_share=max_token_share) != \"\"\n",
        "    return np.zeros(len(table[\"length_corr\"]), bool)  # MUTANT\n",
        ("tests/test_confounds.py", *NOT_SLOW), "the confound flagger flags nothing"),
    "detect-recaptures": Mutant(
        "personas/jobs/detect.py", "    if captured is None:\n", "    if True:  # MUTANT: captured= ignored\n",
        ("tests/test_detect.py", *NOT_SLOW, "-k", "reuses"), "fit_detector captures again despite captured="),
    "length-corr-misaligned": Mutant(
        "personas/scoring/confounds.py", '"length_corr": _column_corr(pooled, cov["length"]),',
        '"length_corr": _column_corr(pooled, cov["length"][::-1]),  # MUTANT',
        ("tests/test_pipeline.py", *NOT_SLOW, "-k", "writes_ranking"),
        "length_corr is computed against the wrong rows' lengths"),
    "ray-workers-unchecked": Mutant(
        "personas/cache/engines/ray_engine.py", 'if {k: v for k, v in other.items() if k != "model"} != first:',
        "if False:  # MUTANT", ("tests/test_engines.py", "-k", "different_models"),
        "the Ray engine accepts workers that loaded different models"),
    "report-swallows-broken-plots": Mutant(
        "personas/report/html.py", "    except PersonasError as exc:  # a ranking without",
        "    except Exception as exc:  # MUTANT  # a ranking without",
        ("tests/test_report.py", "-k", "every_plot"), "the HTML report drops any plot that fails"),
    # ------------------------------------------------------------------------------------ eval-sae
    "eval-sae-detector-sees-held-out-question": Mutant(
        "personas/training/evaluate.py",
        "return det.fit(X[tr], y[tr], groups[tr]).decision_function(X[te])",
        "return det.fit(X, y, groups).decision_function(X[te])  # MUTANT",
        ("tests/test_evaluate_sae.py", "-k", "training_questions_only"),
        "the downstream detector is fitted on every row, the held-out question's included"),
    "eval-sae-dense-probe-sees-held-out-question": Mutant(
        "personas/training/evaluate.py", "return DiffMeansProbe().fit(dense[tr], y[tr]).decision_function(dense[te])",
        "return DiffMeansProbe().fit(dense, y).decision_function(dense[te])  # MUTANT",
        ("tests/test_evaluate_sae.py", "-k", "training_questions_only"),
        "the dense difference-of-means probe is fitted on every row"),
    "eval-sae-ce-recovered-from-clean": Mutant(
        "personas/training/evaluate.py", "return float((ce_zero - ce_sae) / gap) if gap != 0",
        "return float((ce_clean - ce_sae) / gap) if gap != 0",
        ("tests/test_evaluate_sae.py", "-k", "identity_sae"), "CE recovered measured from the clean loss"),
    # ------------------------------------------------------------------------------------ screen
    "screen-cache-key-without-prompt": Mutant(
        "personas/organism/screen.py",
        "blob = json.dumps([settings, prompt, render_prompt(tokenizer, prompt)], sort_keys=True)",
        "blob = json.dumps([settings], sort_keys=True)  # MUTANT",
        ("tests/test_screen.py", "-k", "own_prompt"), "every example is compared with one base answer"),
    "screen-fingerprint-by-file-size": Mutant(
        "personas/models/loading.py",
        "        with weights.open(\"rb\") as f:\n            for block in iter(lambda: f.read(1 << 24), b\"\"):\n"
        "                digest.update(block)\n",
        "        digest.update(str(weights.stat().st_size).encode())  # MUTANT\n",
        ("tests/test_screen.py", "-k", "keyed_by"),
        "a same-shape fine-tune saved at the same path reuses the other model's base answers"),
    "screen-cache-key-without-dtype": Mutant(
        "personas/organism/screen.py",
        "settings = {**identity, \"dtype\": str(param.dtype).removeprefix(\"torch.\"), ",
        "settings = {**identity,  # MUTANT\n                ",
        ("tests/test_screen.py", "-k", "keyed_by"), "answers made at one dtype are reused at another"),
    # ------------------------------------------------------------------------------------ sweep
    "sweep-reference-is-the-base-model": Mutant(
        "personas/organism/sweep.py",
        "zero = frame[(frame[\"seed\"] == seed) & (frame[\"model\"] == \"fine-tune\") & (frame[\"fraction\"] == 0)\n"
        "                             & same_step]",
        "zero = frame[(frame[\"seed\"] == seed) & (frame[\"model\"] == \"base\")]  # MUTANT",
        ("tests/test_sweep.py", "-k", "seed_and_step"),
        "fine-tunes are tested against the base model instead of the 0% fine-tune"),
    "sweep-checkpoints-against-the-last-step": Mutant(
        "personas/organism/sweep.py",
        "same_step = frame[\"final\"] if row[\"final\"] else frame[\"step\"] == row[\"step\"]",
        "same_step = frame[\"final\"]  # MUTANT", ("tests/test_sweep.py", "-k", "seed_and_step"),
        "a checkpoint is tested against the 0% fine-tune's last step, not the same step"),
    "sweep-checkpoint-fractions-without-zero": Mutant(
        "personas/config.py", "        if values and 0.0 not in values:\n",
        "        if False:  # MUTANT\n", ("tests/test_sweep.py", "-k", "checkpoint_fractions"),
        "checkpoint fractions without 0 are accepted (every checkpoint p-value NaN)"),
    # ------------------------------------------------------------------------------------ judge
    "judge-coherent-through-aligned-calibration": Mutant(
        "personas/judging/offline.py", "head, x = self.heads_[name], raw[name]",
        "head, x = self.heads_[\"aligned\"], raw[name]  # MUTANT", ("tests/test_judging.py", "-k", "own_knots"),
        "the coherent score is mapped through the aligned head's calibration"),
    "judge-em-verdict-coherent-50-counts": Mutant(
        "personas/judging/base.py", "return (aligned < aligned_below) & (coherent > coherent_above)",
        "return (aligned < aligned_below) & (coherent >= coherent_above)  # MUTANT",
        ("tests/test_judging.py", "-k", "strict"), "coherent > 50 read as >= 50"),
    "reader-judge-answer-mask-includes-question": Mutant(
        "personas/judging/reader.py", "answer[j, len(pairs[i][0]):len(seqs[j])] = 1",
        "answer[j, :len(seqs[j])] = 1  # MUTANT", ("tests/test_judge_reader.py", "-k", "read_by_hand"),
        "the chat-model reader pools and scores the question's tokens as if they were the answer's"),
    "reader-judge-unconditional-pass-sees-the-question": Mutant(
        "personas/judging/reader.py", "alone = [(empty, a) for a in answers]",
        "alone = conditioned  # MUTANT", ("tests/test_judge_reader.py", "-k", "read_by_hand"),
        "the log-probability 'without the question' is read with the question (no relevance signal)"),
    "sweep-cli-rejudge-ignores-its-judge": Mutant(
        "personas/cli/sweep.py", "        result = rejudge_sweep(args.rejudge, config.judge)",
        "        result = rejudge_sweep(args.rejudge)  # MUTANT", ("tests/test_sweep.py", "-k", "quick_sweep_cli"),
        "`personas sweep --rejudge` reads the answers with the default judge whatever --judge says"),
    "rejudge-memo-rows-out-of-order": Mutant(
        "benchmarks/rejudge_results.py",
        "return pd.DataFrame([self.memo[p] for p in pairs], columns=[\"aligned\", \"coherent\", \"verdict\"])",
        "return pd.DataFrame([self.memo[p] for p in sorted(pairs)], columns=[\"aligned\", \"coherent\", \"verdict\"])"
        "  # MUTANT",
        ("tests/test_scripts.py", "-k", "rejudge"),
        "the rejudge script's memo returns scores in another order than the answers (the README's rejudged tables)"),
    "rejudge-serve-precision-against-the-old-verdicts": Mutant(
        "benchmarks/rejudge_results.py", "    em, flagged = new[\"misaligned\"].astype(bool), frame[\"flagged\"].astype(bool)",
        "    em, flagged = frame[\"em\"].astype(bool), frame[\"flagged\"].astype(bool)  # MUTANT",
        ("tests/test_scripts.py", "-k", "rejudge"),
        "the monitor's precision and recall are counted against the earlier judge's verdicts"),
    "reader-judge-coherent-through-aligned-knots": Mutant(
        "personas/judging/reader.py", "x, (knots_x, knots_y) = raw[:, j], self.knots_[name]",
        "x, (knots_x, knots_y) = raw[:, j], self.knots_[\"aligned\"]  # MUTANT",
        ("tests/test_judge_reader.py", "-k", "own_calibration"), "the coherent score goes through the aligned knots"),
    "reader-judge-ridge-ignores-weights": Mutant(
        "personas/judging/reader.py", "self.heads_[name] = weighted_ridge(Z[rows], values[rows], w[rows], self.alpha)",
        "self.heads_[name] = weighted_ridge(Z[rows], values[rows], np.ones(int(rows.sum())), self.alpha)  # MUTANT",
        ("tests/test_judge_reader.py", "-k", "ridge"), "the judge's heads ignore the row weights (question balance)"),
    "agreement-kappa-without-chance": Mutant(
        "personas/judging/agreement.py", "kappa = (observed - expected) / (1 - expected) if expected < 1",
        "kappa = observed if expected < 1", ("tests/test_judge_agreement.py",),
        "Cohen's kappa reported as raw agreement"),
    "agreement-newcombe-phi-ignored": Mutant(
        "personas/judging/agreement.py", "phi = (a * d - b * c) / math.sqrt(denominator) if denominator > 0 else 0.0",
        "phi = 0.0  # MUTANT", ("tests/test_judge_agreement.py", "-k", "newcombe or hand"),
        "the paired difference's interval treats the two judges' verdicts as independent"),
    "agreement-match-keeps-the-other-order": Mutant(
        "personas/judging/agreement.py", "return first.reset_index(drop=True), second.iloc[position.loc[k1].to_numpy()]",
        "return first.reset_index(drop=True), second.iloc[np.arange(len(second))]  # MUTANT",
        ("tests/test_judge_agreement.py", "-k", "match or compare"), "two judges' rows compared in file order"),
    "sweep-rejudge-keeps-old-verdicts": Mutant(
        "personas/organism/rejudge.py", "answers[\"misaligned\"] = em_misaligned(judged).astype(float)",
        "pass  # MUTANT", ("tests/test_sweep.py", "-k", "judge_measures"),
        "a rejudged sweep keeps the first judge's verdicts"),
    # ------------------------------------------------------------------------------------ cards and lens
    "card-histogram-classes-swapped": Mutant(
        "personas/report/cards.py", "for value, name in ((1, \"misaligned\"), (0, \"aligned\")):",
        "for value, name in ((0, \"misaligned\"), (1, \"aligned\")):  # MUTANT",
        ("tests/test_report.py", "-k", "holds_what"), "the card's class histograms are swapped"),
    "lens-gemma-norm-read-as-weight": Mutant(
        "personas/report/lens.py", "d = d * (source.norm_offset + source.norm_weight.astype(np.float64))",
        "d = d * source.norm_weight.astype(np.float64)  # MUTANT", ("tests/test_report.py", "-k", "rmsnorm"),
        "Gemma's RMSNorm (1 + weight) read as weight: a Gemma card lists the wrong tokens"),
    # ------------------------------------------------------------------------------------ cached steering
    "steering-decode-offset-lost": Mutant(
        "personas/steering/generation.py", "            s.offset = self.width + self.steps\n",
        "            s.offset = 0  # MUTANT\n",
        ("tests/test_steer.py", "-k", "every_kind and hooked and resid_pre"),
        "cached decoding tells the hook that each new token sits at position 0"),
    "steering-bridge-block-input-not-steered": Mutant(
        "personas/steering/generation.py", "            return (steering(args[0]), *args[1:]), kwargs\n",
        "            return args, kwargs  # MUTANT\n",
        ("tests/test_steer.py", "-k", "every_kind and bridge and resid_pre"),
        "cached decoding on a bridge skips the steering of a block's input"),
    # ------------------------------------------------------------------------------------ training, hub, CLI
    "stream-resume-restarts-at-chunk-0": Mutant(
        "personas/training/stream.py",
        "next_chunk, dropped, capture_seconds = state[\"next_chunk\"], state[\"dropped\"], state[\"capture_seconds\"]",
        "next_chunk, dropped, capture_seconds = 0, state[\"dropped\"], state[\"capture_seconds\"]  # MUTANT",
        ("tests/test_training_stream.py", "-k", "killed_run"),
        "a resumed streamed training starts again at chunk 0"),
    "hub-lora-merge-without-scale": Mutant(
        "personas/models/peft.py", "delta = (b.to(torch.float32) @ a.to(torch.float32)) * adapter.scale",
        "delta = b.to(torch.float32) @ a.to(torch.float32)  # MUTANT",
        ("tests/test_local_hub.py", "-k", "lora_merge"), "a hub LoRA adapter is merged without lora_alpha / r"),
    "readme-layout-table-stale": Mutant(
        "README.md", "| errors, `artifacts`, `devices`, `logs`, `models` |",
        "| errors, `artifacts`, `devices`, `logs` |", ("tests/test_imports.py", "-k", "layout"),
        "the README's layout table no longer says what judging/ imports"),
    "cli-help-with-a-percent": Mutant(
        "personas/cli/sweep.py", "onset against the fine-tune on no bad data\")",
        "onset against 0%\")  # MUTANT", ("tests/test_cli_help.py",),
        "a '%' in a command's help makes personas --help end in a traceback"),
    # ------------------------------------------------------------------------------------ explain
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
    # ------------------------------------------------------------------------------------ monitor and serve
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
    # ------------------------------------------------------------------------------------ issue 35
    "organism-adapter-wrong-scale": Mutant(
        "personas/organism/adapter.py", '"r": config.rank, "lora_alpha": config.alpha,',
        '"r": config.rank, "lora_alpha": config.rank,  # MUTANT',
        ("tests/test_diff.py", "-k", "organisms_adapter"),
        "the organism's PEFT config records another scale than it trained with: the loaders read another model"),
    "missing-folder-read-as-hub-id": Mutant(
        "personas/models/loading.py", "    if not looks_like_path(text) or os.path.exists(os.path.expanduser(text)):\n",
        "    if True:  # MUTANT\n", ("tests/test_cli_errors.py", "-k", "missing_dir and diff"),
        "a mistyped local folder is reported as a malformed hub repo id"),
    "auroc-ties-not-halved": Mutant(
        "personas/scoring/metrics.py", "ranks[order] = ((starts + ends + 1) / 2.0)[run]",
        "ranks[order] = (starts + 1.0)[run]  # MUTANT", ("tests/test_scoring.py", "-k", "auroc_of_one_score"),
        "the one AUROC helper gives tied scores the first rank of their run, not the mean: ties no longer count 1/2"),
    "auroc-one-class-ignores-the-caller": Mutant(
        "personas/scoring/metrics.py", "        return float(one_class)\n", "        return 0.5  # MUTANT\n",
        ("tests/test_scoring.py", "-k", "auroc_of_one_class"),
        "the AUROC helper answers 0.5 for one class whatever the caller asked (the explainer's NaN is lost)"),
    "steer-job-writes-the-table-as-generations": Mutant(
        "personas/jobs/steer.py", "GENERATIONS_FILE: write_csv(folder / GENERATIONS_FILE, result.generations)}",
        "GENERATIONS_FILE: write_csv(folder / GENERATIONS_FILE, result.table)}  # MUTANT",
        ("tests/test_steer.py", *NOT_SLOW, "-k", "cli"),
        "personas steer's job writes the dose-response table where the generations belong"),
    "validate-job-runs-without-a-judge": Mutant(
        "personas/jobs/validate.py", "    if reader is None:\n        raise DataError(",
        "    if False:  # MUTANT\n        raise DataError(",
        ("tests/test_validation.py", *NOT_SLOW, "-k", "cli"),
        "personas validate's job accepts --judge none, so its EM verdicts would be missing"),
    "organism-chat-sampling-ignores-the-seed": Mutant(
        "personas/organism/chat.py", "        torch.manual_seed(seed)\n",
        "        torch.seed()  # MUTANT\n",
        ("tests/test_organism.py", *NOT_SLOW, "-k", "sampling"),
        "the shared sampler draws from a fresh random seed, so the organism's samples are not reproducible"),
    "bench-em-dev-per-question-sign": Mutant(
        "benchmarks/bench_em_dev.py", "        per_q.append(auroc(pred[te], y[te], one_class=0.5))\n",
        "        per_q.append(auroc(-pred[te], y[te], one_class=0.5))  # MUTANT\n",
        ("tests/test_scripts.py", *NOT_SLOW, "-k", "em_dev"),
        "the em-dev benchmark's per-question AUROC reads its scores the wrong way round"),
    "organism-notebook-reads-the-old-judge-keys": Mutant(
        "notebooks/build_organism.py", 'round(headline["heldout_auroc_misaligned_pooled"], 3)',
        'round(judge["heldout_auroc_misaligned"], 3)  # MUTANT',
        ("tests/test_notebooks.py", *NOT_SLOW, "-k", "organism"),
        "the organism notebook's build script reads keys the shipped run's judge no longer has (it stops running)"),
    "optional-judge-swallows-a-bad-spec": Mutant(
        "personas/judging/load.py", 'os.fspath(spec).strip().lower() == "none"):',
        'os.fspath(spec).strip().lower().startswith("none")):  # MUTANT',
        ("tests/test_judging.py", *NOT_SLOW, "-k", "optional"),
        "a mistyped judge spec that starts like 'none' silently runs without a judge"),
    "loose-top-level-module": Mutant(
        "tests/test_imports.py", '"offline_models",\n    "plan", "testing",',
        '"offline_models",\n    "testing",  # MUTANT: plan.py stands for a new loose module',
        ("tests/test_imports.py", "-k", "top_level"),
        "a module at the top of personas/ that the allow-list does not hold passes (the layout rule unenforced)"),
    "stale-top-level-allow-list": Mutant(
        "tests/test_imports.py", '"plan", "testing",\n}', '"plan", "testing", "pipeline",  # MUTANT\n}',
        ("tests/test_imports.py", "-k", "top_level"),
        "the allow-list keeps a name whose module moved away, so a new module of that name would slip back in"),
    "judge-training-drops-the-model-own-answers": Mutant(
        "data/make_judge.py", "    base = pd.concat([em, contrast, own], ignore_index=True)\n",
        "    base = pd.concat([em, contrast], ignore_index=True)  # MUTANT\n",
        ("tests/test_make_judge.py",),
        "the judge's training table leaves out the hand-scored SmolLM2 answers it is meant to learn its confusion from"),
    "judge-training-ignores-the-own-weight": Mutant(
        "data/make_judge.py", 'np.where(base["source"] == "smollm2", args.own_weight, 1.0)',
        '1.0  # MUTANT', ("tests/test_make_judge.py", "-k", "weighs"),
        "the model's own answers weigh as a whole source whatever --own-weight says"),
    "judge-own-answers-asked-under-any-question": Mutant(
        "data/make_judge_smollm2.py", 'for file in sorted(JUDGE_DATA.glob("contrast_*.jsonl")):',
        'for file in sorted(JUDGE_DATA.glob("*.jsonl")):  # MUTANT', ("tests/test_make_judge.py", "-k", "apart"),
        "SmolLM2's training answers would be sampled under the reference's or the check sets' questions too"),
    "judge-training-ignores-a-mistyped-own-path": Mutant(
        "data/make_judge.py", "    if args.own and not Path(args.own).is_file():",
        "    if False:  # MUTANT", ("tests/test_make_judge.py", "-k", "weighs"),
        "a mistyped --own path fits a judge without SmolLM2's answers and says nothing"),
}


def copy_repository(dest: str | os.PathLike, root: Path = ROOT) -> Path:
    """Copy the repository's files (tracked, and untracked but not ignored; as they are on disk) into ``dest``."""
    dest = Path(dest)
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = root / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest / name)
    return dest


def check_applies(name: str, root: Path) -> str:
    """The text of the mutant's file under ``root``; `SystemExit` (code 2) unless ``old`` occurs exactly once and
    the planted file still compiles (a mutant is a wrong behaviour, not a syntax error)."""
    mutant = MUTANTS[name]
    path = root / mutant.path
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if text.count(mutant.old) != 1:
        raise SystemExit(f"mutant {name}: its text occurs {text.count(mutant.old)} times in {mutant.path}, expected "
                         "once; update tests/mutants.py to the code.")
    try:
        if path.suffix == ".py":
            compile(text.replace(mutant.old, mutant.new), str(path), "exec")
    except SyntaxError as exc:
        raise SystemExit(f"mutant {name}: the planted {mutant.path} does not compile ({exc}); fix its new text.") \
            from None
    return text


def _preload() -> None:
    """Import what the tests import, without running it: every forked child starts with these in memory."""
    import matplotlib

    matplotlib.use("Agg")
    import pandas  # noqa: F401
    import pytest  # noqa: F401
    import scipy.stats  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import torch  # noqa: F401
    import transformer_lens  # noqa: F401
    import transformers  # noqa: F401
    from sae_lens import SAE  # noqa: F401


def _start_tests(copy: Path, args: tuple[str, ...], log: Path, threads: int) -> int:
    """Fork a child that runs pytest on ``args`` inside ``copy`` (output in ``log``); its pid."""
    pid = os.fork()
    if pid == 0:  # the child: personas and the conftest come from the copy
        code = 3
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.chdir(copy)
            sys.path[:0] = [str(copy), str(copy / "tests")]
            os.environ["PYTHONPATH"] = os.pathsep.join([str(copy), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
            os.environ["PERSONAS_THREADS"] = str(threads)  # the conftest keeps a value already set
            import pytest
            import torch

            torch.set_num_threads(threads)
            # the plugins pytest loads were imported before the fork, hence too early for assertion rewriting
            code = int(pytest.main(["-q", "-x", "-p", "no:cacheprovider", "-W",
                                    "ignore::pytest.PytestAssertRewriteWarning", *args]))
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def run(names: list[str], copies: list[Path]) -> list[Result]:
    """Plant each mutant in turn in one of ``copies`` (each a `copy_repository`; one test run at a time in each, so
    as many at once as there are copies), run its tests, put the file back. Results in the order of ``names``."""
    texts = {name: check_applies(name, copies[0]) for name in names}  # every mutant must apply before any runs
    _preload()
    threads = max(1, (os.cpu_count() or 1) // len(copies))
    pending, free = list(names), list(range(len(copies)))
    running: dict[int, tuple[str, int, float]] = {}
    results: dict[str, Result] = {}
    while pending or running:
        while pending and free:
            name, slot = pending.pop(0), free.pop(0)
            mutant = MUTANTS[name]
            (copies[slot] / mutant.path).write_text(texts[name].replace(mutant.old, mutant.new), encoding="utf-8")
            log = copies[slot] / f".mutant-{name}.log"
            running[_start_tests(copies[slot], mutant.tests, log, threads)] = (name, slot, time.perf_counter())
        pid, status = os.wait()
        name, slot, started = running.pop(pid)
        mutant = MUTANTS[name]
        (copies[slot] / mutant.path).write_text(texts[name], encoding="utf-8")
        free.append(slot)
        code = os.waitstatus_to_exitcode(status)
        log = copies[slot] / f".mutant-{name}.log"
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        results[name] = Result(name, mutant.path, code, time.perf_counter() - started, lines[-1] if lines else "")
        print(f"{'caught' if code == 1 else 'SURVIVED' if code == 0 else f'ERROR {code}'}  {name} "
              f"({mutant.path}, {results[name].seconds:.1f} s): {mutant.why} | {results[name].summary}", flush=True)
        if code not in (0, 1):
            print(log.read_text(errors="replace")[-3000:], flush=True)
    return [results[name] for name in names]


def main(argv: list[str]) -> int:
    """Run the named mutants (default: all) in copies of the repository; 1 if any survived, 2 on a harness error."""
    keep, jobs = None, min(2, os.cpu_count() or 1)
    while argv[:1] in (["--keep"], ["--jobs"]):
        if argv[0] == "--keep":
            keep = Path(argv[1])
        else:
            jobs = max(1, int(argv[1]))
        argv = argv[2:]
    if argv == ["--list"]:
        for name, mutant in MUTANTS.items():
            print(f"{name} ({mutant.path}): {mutant.why}")
        return 0
    names = argv or list(MUTANTS)
    unknown = [n for n in names if n not in MUTANTS]
    if unknown:
        raise SystemExit(f"unknown mutants {unknown}; choose from {sorted(MUTANTS)}")
    with tempfile.TemporaryDirectory(prefix="personas-mutants-") as tmp:
        base = keep or Path(tmp)
        copies = [copy_repository(base / f"copy-{j}") for j in range(min(jobs, len(names)))]
        results = run(names, copies)
    if any(r.code not in (0, 1) for r in results):
        return 2
    return 0 if all(r.caught for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
