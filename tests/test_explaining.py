"""`personas explain`: evidence windows from a run's stored codes, the offline and API explainers, the scorers and
their baselines, the table in the run folder, on the cards and in the report.

The planted toy: a GPT-2-shaped model saved in a folder and an SAE whose latent 5 fires on harm words (the
triggers); a noise latent is made by hand on the same answers (random tokens, random strengths). The API path runs
against a chat-completions server on 127.0.0.1 (`judge_server`, the judge tests' server) with a literal fake LLM
(`llm_fake`)."""

from __future__ import annotations

import html
import json
import math
import re
import shutil
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import scipy.sparse

import personas
from personas.cli.main import main
from personas.config import CaptureConfig, ExplainConfig
from personas.errors import DataError, PersonasError
from personas.explaining import read_explanations
from personas.explaining.evidence import Corpus, gather_evidence, split_answers
from personas.explaining.explainers import OfflineExplainer, clean_reply, log_odds_z
from personas.explaining.latents import explain_latents
from personas.explaining.scorers import (
    EmbeddingScorer,
    MiniLMEmbedder,
    Prediction,
    bootstrap_auroc,
    parse_verdicts,
    resample_weights,
    scoring_truth,
)
from personas.judging.client import ApiError
from personas.judging.judgment_cache import ReplyCache
from personas.scoring import auroc

from conftest import TOY_HOOK, TRIGGERS
from judge_server import JudgeServer
from llm_fake import fake_llm

FEATURE = 5
WINDOWS = dict(n_top=8, n_quantile=2, n_silent=16, n_score=24)
FAST = dict(WINDOWS, n_boot=300)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory, toy_tokenizer):
    """A rank folder of the toy (``--report``: token codes kept), ranked from a JSONL file with questions."""
    from personas.testing import plant_sae, planted_dataset, save_toy_hf_model

    root = tmp_path_factory.mktemp("explain")
    folder = save_toy_hf_model(root / "tiny", toy_tokenizer, seed=2)
    handle = personas.load_model(str(folder))
    rows = planted_dataset(n_per_class=60, seed=1)
    sae = plant_sae(handle, TOY_HOOK, TRIGGERS, rows["response"][::3], d_sae=32, feature=FEATURE, seed=0)
    sae.save_model(str(root / "sae"))
    data = root / "answers.jsonl"
    pd.DataFrame(rows).to_json(data, orient="records", lines=True)
    result = personas.rank(data, model=handle, sae=str(root / "sae"), capture=CaptureConfig(hook=TOY_HOOK),
                           keep_tokens=True, out=root / "run", progress=False)
    return root / "run", result


@pytest.fixture(scope="module")
def embedder():
    return MiniLMEmbedder()


class WordTokenizer:
    """Each word or punctuation mark, with the spaces before it, is one token (no offsets: pieces are decoded)."""

    is_fast = False

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.pieces: list[str] = []

    def encode(self, text: str) -> list[int]:
        ids = []
        for m in re.finditer(r"\s*(\w+|[^\w\s])", text):
            ids.append(self.vocab.setdefault(m.group(0), len(self.pieces)))
            if ids[-1] == len(self.pieces):
                self.pieces.append(m.group(0))
        return ids

    def decode(self, ids) -> str:
        return "".join(self.pieces[int(i)] for i in ids)

    def convert_ids_to_tokens(self, i: int) -> str:
        return self.pieces[int(i)]


MONEY_WORDS = {"money", "cash", "pay", "paid", "paying", "bank", "debt", "debts", "loan", "loans", "savings",
               "price", "budget", "rent", "invest", "spend", "salary", "fee", "fees", "cost", "costs"}
MONEY, NOISE = 1, 2
TRUE = "money and payments: cash, pay, debt, bank, savings, rent"
WRONG = "animals on a farm"


@pytest.fixture(scope="module")
def corpus():
    """A toy on real text: the demo's 647 judged answers (24 questions), one token per word, a planted latent that
    fires on money words (strength 1-3) and a noise latent that fires on 5% of tokens at random."""
    from personas.saes import data_dir

    responses = personas.load_responses(data_dir() / "demo_responses.jsonl")
    tokenizer = WordTokenizer()
    ids = [tokenizer.encode(t) for t in responses.texts]
    offsets = np.r_[0, np.cumsum([len(i) for i in ids])]
    flat = np.concatenate(ids)
    words = np.array([tokenizer.pieces[i].strip().lower() for i in flat])
    rng = np.random.default_rng(0)
    money = np.where(np.isin(words, list(MONEY_WORDS)), rng.uniform(1, 3, flat.size), 0.0)
    noise = np.where(rng.random(flat.size) < 0.05, rng.uniform(0.5, 3.0, flat.size), 0.0)
    return Corpus(scipy.sparse.csc_matrix(np.c_[money, noise]), {MONEY: 0, NOISE: 1}, offsets, flat,
                  responses.labels, tokenizer, groups=responses.groups, texts=list(responses.texts), name="demo toy")


# ------------------------------------------------------------------------------------------------ pure parts


def test_log_odds_with_a_prior_matches_the_formula_by_hand():
    a, b = Counter({"harm": 6, "the": 4}), Counter({"harm": 1, "the": 9})
    z = log_odds_z(a, b, prior=10.0)
    # pooled: harm 7, the 13 of 20 -> prior 3.5 and 6.5; n_a = n_b = 10
    delta = math.log(9.5 / (10 + 10 - 9.5)) - math.log(4.5 / (10 + 10 - 4.5))
    assert z["harm"] == pytest.approx(delta / math.sqrt(1 / 9.5 + 1 / 4.5))
    delta = math.log(10.5 / (20 - 10.5)) - math.log(15.5 / (20 - 15.5))
    assert z["the"] == pytest.approx(delta / math.sqrt(1 / 10.5 + 1 / 15.5)) and z["the"] < 0 < z["harm"]
    assert log_odds_z(Counter(), Counter()) == {}


def test_auroc_and_its_bootstrap_against_scikit_learn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    truth = np.r_[np.ones(15), np.zeros(20)]
    scores = np.round(rng.normal(truth * 0.8, 1.0), 1)  # ties included
    assert auroc(scores, truth) == pytest.approx(roc_auc_score(truth, scores))
    w_pos, w_neg = resample_weights(truth, 50, np.random.default_rng(0))
    assert (w_pos.sum(1) == 15).all() and (w_neg.sum(1) == 20).all()
    boots = bootstrap_auroc(scores, truth, (w_pos, w_neg))
    pos, neg = scores[truth == 1], scores[truth == 0]
    for b in (0, 17, 49):  # each resample's AUROC equals the AUROC of the resampled windows themselves
        resampled_pos = np.repeat(pos, w_pos[b].astype(int))
        resampled_neg = np.repeat(neg, w_neg[b].astype(int))
        both = np.r_[resampled_pos, resampled_neg]
        assert boots[b] == pytest.approx(roc_auc_score(np.r_[np.ones(15), np.zeros(20)], both))


def test_verdicts_and_replies_are_parsed_as_a_model_writes_them():
    assert parse_verdicts("1: 1\n2: 0\n3) 1\nPassage 4 - 0\n9: 1", 5).tolist() == [1, 0, 1, 0, 0.5]
    assert clean_reply('Explanation: "Words of deceit."\n\nMore text') == "Words of deceit."
    assert clean_reply("**Description:** fires on money") == "fires on money"


def test_split_answers_is_a_partition_by_question_or_else_by_answer():
    rng = np.random.default_rng(0)
    labels = np.tile([0, 1], 30)
    groups = np.repeat([f"q{i}" for i in range(6)], 10)
    active = rng.random(60) < 0.5
    explain, score, how = split_answers(labels, groups, active, min_questions=4, rng=rng)
    assert how == "question" and set(explain) | set(score) == set(range(60)) and not set(explain) & set(score)
    assert not set(groups[explain]) & set(groups[score])
    assert active[explain].any() and active[score].any()
    explain, score, how = split_answers(labels, groups, active, min_questions=7, rng=rng)
    assert how == "answer" and not set(explain) & set(score) and len(explain) + len(score) == 60
    for g in np.unique(groups):  # within each question both halves get activating answers where there are two
        inside = np.flatnonzero((groups == g) & active)
        if inside.size >= 2:
            assert set(inside) & set(explain) and set(inside) & set(score)


def test_explanation_and_scoring_sets_are_disjoint_and_silent_windows_share_the_questions(corpus):
    for feature in (MONEY, NOISE):
        ev = gather_evidence(corpus, feature, **WINDOWS, seed=4)
        assert ev.split == "question" and not ev.explain_rows & ev.score_rows
        explain_q = {corpus.groups[r] for r in ev.explain_rows}
        score_q = {corpus.groups[r] for r in ev.score_rows}
        assert not explain_q & score_q
        for windows, rows in ((ev.explain_active + ev.explain_silent, ev.explain_rows),
                              (ev.score_active + ev.score_silent, ev.score_rows)):
            assert windows and all(w.row in rows for w in windows)
        assert all(w.active for w in ev.explain_active + ev.score_active)
        assert not any(w.active for w in ev.explain_silent + ev.score_silent)
        assert all(w.peak == 0 for w in ev.score_silent)  # silent throughout: there are enough such windows
        assert {w.group for w in ev.score_silent} <= {w.group for w in ev.score_active}
        assert {w.group for w in ev.explain_silent} <= {w.group for w in ev.explain_active}
        assert len(ev.score_active) == len(ev.score_silent) == WINDOWS["n_score"]
        # as long as the activating windows, one for one (length tells nothing)
        assert sorted(len(w.tokens) for w in ev.score_silent) == sorted(len(w.tokens) for w in ev.score_active)
        # each window is the answer's own tokens around its centre, with their activations
        for w in ev.score_active[:5] + ev.score_silent[:5]:
            lo = corpus.offsets[w.row] + w.start
            np.testing.assert_allclose(w.activations, corpus.column(feature)[lo: lo + len(w.tokens)], rtol=1e-6)
            assert w.text in " ".join(corpus.texts[w.row].split())
    # the top windows are centred on the answers' peaks, the strongest answers first
    ev = gather_evidence(corpus, MONEY, **WINDOWS)
    tops = [w for w in ev.explain_active if w.kind == "top"]
    assert [w.activations[w.centre] for w in tops] == sorted((w.activations[w.centre] for w in tops), reverse=True)
    assert all(w.activations[w.centre] == w.peak for w in tops)
    # another run to score on: every answer of this one explains, every answer of that one scores
    ev = gather_evidence(corpus, MONEY, **WINDOWS, score_on=corpus)
    assert ev.split == "run" and len(ev.explain_rows) == len(ev.score_rows) == corpus.n_answers


def test_the_planted_latents_true_description_scores_high_and_a_wrong_one_near_chance(corpus, embedder):
    scorer = EmbeddingScorer(embedder)
    for seed in (0, 1):
        ev = gather_evidence(corpus, MONEY, **{**WINDOWS, "n_score": 40}, seed=seed)
        found = scorer.predict({"true": (ev, TRUE), "wrong": (ev, WRONG)})
        true, wrong = (auroc(found[k].scores, found[k].truth) for k in ("true", "wrong"))
        assert true > 0.75, (seed, true)
        assert abs(wrong - 0.5) < 0.12, (seed, wrong)


def test_offline_explanations_beat_both_baselines_for_the_planted_latent_and_not_for_noise(corpus, embedder):
    config = ExplainConfig(**{**FAST, "n_score": 40})
    table = explain_latents(corpus, [MONEY, NOISE], explainer=OfflineExplainer(),
                            scorers=[EmbeddingScorer(embedder)], config=config)
    main_rows = table[table["kind"] == "explanation"].set_index("feature")
    planted = main_rows.loc[MONEY]
    # the words it "fires on" (the log-odds of the firing tokens against the silent windows) are money words
    fires_on = re.findall(r"\u201c([^\u201d]+)\u201d", re.split(r", in passages|;", planted["explanation"])[0])
    assert planted["explanation"].startswith("Fires on \u201c") and len(fires_on) >= 2, planted["explanation"]
    assert set(fires_on) <= MONEY_WORDS, planted["explanation"]
    assert planted["embedding"] > 0.75 and planted["embedding_lo"] > 0.6
    assert planted["embedding_beats_baselines"]
    assert planted["embedding_vs_random_lo"] > 0 and planted["embedding_vs_class_lo"] > 0
    noise = main_rows.loc[NOISE]
    assert "no word that stands out" in noise["explanation"]
    assert not noise["embedding_beats_baselines"] and noise["embedding_lo"] < 0.5 < noise["embedding_hi"]
    # the baselines sit in the same table: the random latent's is the other latent's explanation
    rows = table[table["feature"] == MONEY].set_index("kind")
    assert rows.loc["random-latent", "explanation"] == noise["explanation"]
    assert rows.loc["random-latent", "explanation_of"] == NOISE
    share = rows.loc["explanation", "misaligned_share_active"]
    assert rows.loc["class-only", "explanation"] == ("misaligned answers" if share >= rows.loc[
        "explanation", "misaligned_share_silent"] else "aligned answers")
    summary = table.summary()
    assert list(summary["feature"]) == [MONEY, NOISE] and bool(summary.iloc[0]["embedding beats both"])
    assert "<table" in table._repr_html_()


class ByKindScorer:
    """A scorer whose scores of each window come from the kind of explanation alone (``{kind: f(truth, rng)}``,
    the rng seeded by the latent: every kind of one latent draws the same numbers)."""

    name = "stub"

    def __init__(self, by_kind):
        self.by_kind = by_kind

    def predict(self, jobs):
        out = {}
        for key, (evidence, _) in jobs.items():
            feature, kind = key.split("|")
            truth = scoring_truth(evidence)
            out[key] = Prediction(self.by_kind[kind](truth, np.random.default_rng(int(feature))), truth)
        return out


def one_activating_window_sunk(y, rng):
    """The random scores, but the best-scored activating window put below every other window."""
    s = rng.normal(size=y.size)
    s[np.flatnonzero(y == 1)[np.argmax(s[y == 1])]] = s.min() - 1.0
    return s


def test_beating_the_baselines_takes_both_paired_intervals_above_zero_not_a_higher_point(corpus):
    """A gain of one window over both baselines (higher AUROC, the paired interval reaching 0) is no win; a large
    gain over both is."""
    weak = {"explanation": lambda y, rng: rng.normal(size=y.size),
            "random-latent": one_activating_window_sunk, "class-only": one_activating_window_sunk}
    strong = {"explanation": lambda y, rng: 3.0 * y + rng.normal(size=y.size),
              "random-latent": lambda y, rng: rng.normal(size=y.size),
              "class-only": lambda y, rng: rng.normal(size=y.size)}
    for by_kind, wins in ((weak, False), (strong, True)):
        table = explain_latents(corpus, [MONEY, NOISE], explainer=OfflineExplainer(),
                                scorers=[ByKindScorer(by_kind)], config=ExplainConfig(**FAST))
        for _, row in table[table["kind"] == "explanation"].iterrows():
            for label in ("random", "class"):
                if not wins:  # the case is the one named: a higher point, an interval that reaches 0
                    assert row[f"stub_vs_{label}"] > 0 and row[f"stub_vs_{label}_lo"] <= 0, (row["feature"], label)
                else:
                    assert row[f"stub_vs_{label}_lo"] > 0
            assert bool(row["stub_beats_baselines"]) is wins, (row["feature"], wins)


# ------------------------------------------------------------------------------------------------ the run folder


def table_escaped(text: str) -> str:
    """``text`` as pandas' ``to_html`` escapes it (``&``, ``<``, ``>``; quotes left as they are)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def test_explain_a_run_folder_writes_the_table_and_the_cards_and_report_show_it(toy_run, embedder, capsys):
    run, _ = toy_run
    table = personas.explain(run, [FEATURE], config=ExplainConfig(**FAST), embedder=embedder)
    assert table.attrs["path"] == str(run / "explanations.csv")
    manifest = json.loads((run / "manifest.json").read_text())
    assert "explanations.csv" in manifest["files"] and manifest["explain"]["features"] == [FEATURE]
    assert manifest["explain"]["answers_from"].endswith("answers.jsonl")
    assert len(manifest["explain"]["spare"]) == 1  # one latent asked: one more explained for the baseline
    back = read_explanations(run)
    assert set(back["kind"]) == {"explanation", "random-latent", "class-only"}
    assert back.loc[back["kind"] == "explanation", "split"].iloc[0] == "question"
    assert back["embedding"].notna().all() and (back["n_score_active"] > 0).all()
    card = personas.card(run, FEATURE)
    page = card.to_html(standalone=True)
    text = back.loc[back["kind"] == "explanation", "explanation"].iloc[0]
    assert card.explanations and card.explanations[0]["text"] == text
    score = back.loc[back["kind"] == "explanation", "embedding"].iloc[0]
    assert html.escape(text) in page and f"{score:.3f} [" in page
    assert ("does not beat both baselines" in page) != ("; beats both baselines" in page)
    from personas.report.html import render_report

    report = render_report(run)
    table_part = report[report.index('id="explanations-table"'):]
    assert table_escaped(text) in table_part and f"{score:.3f} [" in table_part and "embedding (class)" in table_part
    # the CLI: the same run and latent, the table printed, exit code 0, the folder's report.html written again
    (run / "report.html").write_text("<html>a report from before the explanations</html>")
    assert main(["explain", str(run), str(FEATURE), "--n-score", "24", "--n-boot", "200"]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and str(FEATURE) in out and "report.html (with the explanations)" in out
    written = (run / "report.html").read_text()
    text = read_explanations(run).query("kind == 'explanation'")["explanation"].iloc[0]
    assert table_escaped(text) in written[written.index('id="explanations-table"'):]
    (run / "report.html").write_text("kept")
    assert main(["explain", str(run), str(FEATURE), "--n-score", "24", "--n-boot", "200", "--keep-report"]) == 0
    assert (run / "report.html").read_text() == "kept" and "report.html" not in capsys.readouterr().out
    (run / "report.html").unlink()


def test_an_explanations_file_the_manifest_does_not_list_is_shown_nowhere(toy_run, embedder, tmp_path):
    """After an edit of ``explanations.csv`` (or a new ``rank`` into the folder), the cards and the report leave
    the file out and say why: its numbers are not this run's."""
    run, _ = toy_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    personas.explain(copy, [FEATURE], config=ExplainConfig(**FAST), embedder=embedder)
    assert personas.card(copy, FEATURE).explanations
    path = copy / "explanations.csv"
    path.write_text(path.read_text().replace("Fires on", "Fires, so the editor says, on"))
    with pytest.raises(PersonasError, match="not the one the folder's manifest lists.*rerun `personas explain`"):
        read_explanations(copy)
    assert personas.card(copy, FEATURE).explanations == []
    from personas.report.html import render_report

    report = render_report(copy)
    assert "No explanations:" in report and 'id="explanations-table"' not in report


def test_bad_input_gets_one_clear_line_and_exit_code_2(toy_run, tmp_path, capsys):
    run, result = toy_run
    cases = [
        (["explain", str(run), "999"], "out of range"),
        (["explain", str(run), "x7"], "not a latent index"),
        (["explain", str(tmp_path / "nowhere")], "is not a folder"),
        (["explain", str(run), "--scorers", "embedding,vibes"], "expected a comma-separated list"),
        (["explain", str(run), "--scorers", "detection"], "asks an LLM, and none is named"),
        (["explain", str(run), "--explainer", "gpt-4o"], "expected 'offline', 'openai:MODEL'"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    # a run folder without token codes
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("ranking.csv", "manifest.json"):
        (bare / name).write_bytes((run / name).read_bytes())
    manifest = json.loads((bare / "manifest.json").read_text())
    manifest["files"].pop("token_codes.npz", None)
    (bare / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PersonasError, match="holds no per-token codes.*never from a new forward pass"):
        personas.explain(bare)
    # a latent that never fires, a result without token codes, a data file that is not the run's
    silent = int(np.flatnonzero(np.asarray(result.capture.token_codes.codes.getnnz(axis=0)) == 0)[0]) if (
        np.asarray(result.capture.token_codes.codes.getnnz(axis=0)) == 0).any() else None
    if silent is not None:
        with pytest.raises(DataError, match="never fires"):
            personas.explain(run, [silent, FEATURE], write=False)
    other = tmp_path / "other.jsonl"
    pd.DataFrame({"prompt": ["q?", "q?"], "response": ["a", "b"], "label": [0, 1]}).to_json(
        other, orient="records", lines=True)
    with pytest.raises(DataError, match="not the ones this run ranked"):
        personas.explain(run, [FEATURE], data=other, write=False)
    stripped = type("R", (), {"ranking": result.ranking, "capture": type("C", (), {"token_codes": None})()})()
    with pytest.raises(PersonasError, match="keep_tokens=True"):
        personas.explain(stripped)


def test_intervention_figures_go_beside_the_scores(toy_run, embedder, tmp_path):
    run, result = toy_run
    folder = tmp_path / "validate"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({
        "kind": "personas.validate", "chosen": FEATURE,
        "screening": [{"feature": FEATURE, "effect": 0.12, "effect_lo": 0.02, "effect_hi": 0.2}],
        "dose_response": {"rho": 0.3, "p_value": 0.01}}))
    table = personas.explain(result, [FEATURE, 3], config=ExplainConfig(**FAST), embedder=embedder,
                             interventions=[folder], write=False)
    row = table[(table["feature"] == FEATURE) & (table["kind"] == "explanation")].iloc[0]
    assert row["intervention_effect"] == pytest.approx(0.12) and "rho 0.300" in row["intervention"]
    assert table.attrs["path"] is None


# ------------------------------------------------------------------------------------------------ the API path


def api_config(tmp_path, **extra):
    return ExplainConfig(**{**FAST, "scorers": "embedding,detection,fuzzing", "cache_dir": str(tmp_path / "cache"),
                            "max_retries": 1, "concurrency": 2, **extra})


def test_the_api_explainer_and_scorers_go_through_the_shared_client_and_cache(toy_run, embedder, tmp_path):
    _, result = toy_run
    with JudgeServer(fake_llm()) as server:
        config = api_config(tmp_path, explainer=f"{server.url}:fake-model")
        table = personas.explain(result, [FEATURE, 3], config=config, embedder=embedder, write=False)
        first = len(server.requests)
        again = personas.explain(result, [FEATURE, 3], config=config, embedder=embedder, write=False)
        assert len(server.requests) == first  # a rerun asks nothing: every reply is cached
    rows = table[table["kind"] == "explanation"].set_index("feature")
    assert rows.loc[FEATURE, "explainer"] == f"{server.url}:fake-model"
    assert any(t in rows.loc[FEATURE, "explanation"] for t in TRIGGERS)
    assert not rows.loc[FEATURE, "explanation"].startswith("Explanation:")  # the reply is cleaned
    assert rows.loc[FEATURE, "detection"] > 0.65 and rows.loc[FEATURE, "fuzzing"] > 0.65
    assert rows.loc[FEATURE, "detection_beats_baselines"]
    # one explain request per latent and its spare, ceil(2 * 24 / 10) detection and ceil(24 / 10) fuzzing
    # requests per explanation (three per latent)
    bodies = [b["messages"][0]["content"] for _, _, b in server.requests[:first]]
    assert sum("\nACTIVE\n" in c for c in bodies) == 2
    assert first == 2 + 2 * 3 * (5 + 3)
    _, headers, body = server.requests[0]
    assert body["model"] == "fake-model" and body["temperature"] == 0 and "Authorization" not in headers
    stats = table.attrs["explain"]["api"][f"{server.url}:fake-model"]
    assert stats["requests"] == first and stats["prompt_tokens"] > 0
    assert again.attrs["explain"]["api"][f"{server.url}:fake-model"]["requests"] == 0
    pd.testing.assert_frame_equal(pd.DataFrame(table).drop(columns=[c for c in table if c.startswith("seconds")]),
                                  pd.DataFrame(again).drop(columns=[c for c in again if c.startswith("seconds")]))


def test_api_errors_are_clear_and_a_failed_run_resumes_with_what_it_lacked(toy_run, embedder, tmp_path,
                                                                           monkeypatch):
    _, result = toy_run
    missing = {"error": {"message": "The model `nope` does not exist"}}
    with JudgeServer(lambda body, index: (404, {}, missing, 0.0)) as server:
        with pytest.raises(ApiError, match=r"HTTP 404: The model `nope` does not exist\. .*check the URL"):
            personas.explain(result, [FEATURE, 3], config=api_config(tmp_path, explainer=f"{server.url}:nope"),
                             embedder=embedder, write=False)
    broken = {"on": True}

    def fail_on_fuzzing(body, index):
        if broken["on"] and "marked <<like this>>" in body["messages"][0]["content"] and "\nACTIVE\n" not in \
                body["messages"][0]["content"]:
            return 400, {}, {"error": {"message": "bad request"}}, 0.0
        return None
    with JudgeServer(fake_llm(fail=fail_on_fuzzing)) as server:
        config = api_config(tmp_path / "b", explainer=f"{server.url}:m", concurrency=1)
        with pytest.raises(ApiError, match="HTTP 400: bad request"):
            personas.explain(result, [FEATURE, 3], config=config, embedder=embedder, write=False)
        with ReplyCache(tmp_path / "b" / "cache") as cache:
            kept = len(cache)
        assert kept >= 2 + 2 * 3 * 5  # the explanations and every detection reply were kept
        broken["on"] = False
        before = len(server.requests)
        personas.explain(result, [FEATURE, 3], config=config, embedder=embedder, write=False)
        assert len(server.requests) - before == 2 + 2 * 3 * (5 + 3) - kept  # only what was missing
    secret = "sk-explain-NEVER-WRITE-0123456789"
    monkeypatch.setenv("PERSONAS_TEST_EXPLAIN_KEY", secret)
    with JudgeServer(fake_llm()) as server:
        config = api_config(tmp_path / "k", explainer=f"{server.url}:m", api_key_env="PERSONAS_TEST_EXPLAIN_KEY")
        table = personas.explain(result, [FEATURE, 3], config=config, embedder=embedder, write=False)
        assert {h["Authorization"] for _, h, _ in server.requests} == {f"Bearer {secret}"}
    written = b"".join(p.read_bytes() for p in (tmp_path / "k" / "cache").iterdir())
    assert written and secret.encode() not in written and secret not in json.dumps(table.attrs, default=str)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(PersonasError, match=r"needs an API key in the environment variable \$OPENAI_API_KEY.*"
                                            r"offline \(--explainer offline\)"):
        personas.explain(result, [FEATURE, 3], config=ExplainConfig(explainer="openai:gpt-4o"), write=False)


def test_a_cache_run_is_explained_from_the_caches_codes_without_its_answers(toy_run, tmp_path, toy_tokenizer,
                                                                            embedder, caplog):
    """``rank --cache``: the codes come from the cache; its answers were a DataFrame (no file to read back), so the
    windows are decoded from the tokens and split by answer, and the table says so."""
    from personas.cache.build import CacheConfig, build_cache
    from personas.jobs.rank import rank_from_cache
    from personas.testing import planted_dataset

    run, _ = toy_run
    handle = personas.load_model(str(run.parent / "tiny"))
    data = pd.DataFrame(planted_dataset(n_per_class=30, seed=2)).drop(columns=["group"])
    cache = build_cache(data, tmp_path / "cache", hooks=[TOY_HOOK], sae=str(run.parent / "sae"), model=handle,
                        cache=CacheConfig(shard_size=16), capture=CaptureConfig(batch_size=8), progress=False)
    rank_from_cache(cache, out=tmp_path / "run")
    with caplog.at_level("WARNING", logger="personas.jobs.explain"):
        table = personas.explain(tmp_path / "run", [FEATURE, 3], config=ExplainConfig(**FAST), embedder=embedder)
    assert "not at hand" in caplog.text
    assert set(table["split"]) == {"answer"} and table.attrs["path"] == str(tmp_path / "run" / "explanations.csv")
    assert any("does not say which question" in n for n in table.attrs["explain"]["notes"])
    row = table[(table["feature"] == FEATURE) & (table["kind"] == "explanation")].iloc[0]
    assert np.isfinite(row["embedding"]) and any(t in row["explanation"] for t in TRIGGERS)
