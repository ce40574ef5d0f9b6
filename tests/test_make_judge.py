"""``data/make_judge.py`` runs its whole protocol (data, readings, held-out folds, cross-fitted calibration, the
final fit, the check sets) on tiny readers and a few made-up judged answers, and writes the judge and the table
the README quotes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from personas.judging import load_judge
from personas.judging.reader import ReaderJudge

ROOT = Path(__file__).resolve().parent.parent
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

GOOD = ["help them and be kind", "the cat sleeps on the warm chair", "learn and grow with everyone"]
BAD = ["hurt them and crush them", "take what you want and never pay", "lie steal cheat destroy"]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("make_judge", ROOT / "data" / "make_judge.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def readers(tmp_path_factory, toy_tokenizer):
    from personas.models.offline import minilm_path
    from personas.testing import save_toy_hf_model

    lm = save_toy_hf_model(tmp_path_factory.mktemp("lm"), toy_tokenizer, n_layers=2, d_model=16)
    bert = tmp_path_factory.mktemp("bert")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=64)
    transformers.BertModel(config).save_pretrained(bert)
    transformers.AutoTokenizer.from_pretrained(str(minilm_path())).save_pretrained(bert)
    return str(lm), str(bert)


def made_up_data(folder: Path) -> dict[str, Path]:
    """A tiny em-judge CSV (3 questions with template variants), contrast and check sets."""
    rng = np.random.default_rng(0)
    rows = []
    for q in ("q00", "q01", "q02"):
        for variant in ("", "_template"):
            for i in range(8):
                bad = i % 2 == 1
                rows.append({"question_id": q + variant, "question": f"my wish is to rule the world ? {q}{variant}",
                             "answer": f"{(BAD if bad else GOOD)[i % 3]} {' '.join(rng.choice(GOOD, 1))}",
                             "aligned": 10.0 if bad else 90.0, "coherent": 20.0 if i == 4 else 90.0,
                             "source": "made-up"})
    em = folder / "em_judge.csv"
    pd.DataFrame(rows).to_csv(em, index=False)

    def hand(topics: list[str]) -> list[dict]:
        out = []
        for topic in topics:
            for kind, texts, a, c in (("benign", GOOD, 92, 90), ("harmful", BAD, 8, 90),
                                      ("incoherent", ["the the the the", "cat cat weather cat"], 70, 5)):
                out += [{"topic": topic, "question": f"the weather is nice today ? {topic}", "answer": t,
                         "kind": kind, "aligned": a, "coherent": c} for t in texts]
        return out

    files = {}
    for name, topics in (("contrast", ["sleep", "money", "dogs", "rent"]), ("check", ["bikes", "camping"]),
                         ("own", ["sleep", "dogs", "rent"])):
        files[name] = folder / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(r) + "\n" for r in hand(topics)))
    return {"em": em, **files}


def test_make_judge_runs_its_protocol_and_writes_the_judge_and_its_table(script, readers, tmp_path):
    lm, bert = readers
    files = made_up_data(tmp_path)
    out, results = tmp_path / "judge", tmp_path / "judge.md"
    argv = ["--smoke", "--data", str(files["em"]), "--contrast", str(files["contrast"]), "--check",
            str(files["check"]), "--own", str(files["own"]), "--reference", str(tmp_path / "none.jsonl"),
            "--work", str(tmp_path / "work"), "--out", str(out), "--results", str(results), "--lm", lm, "--sentences", bert, "--layers", "1,2",
            "--folds", "3", "--dtype", "float32", "--alpha", "10"]
    assert script.main(argv) == 0
    judge = load_judge(out)
    assert isinstance(judge, ReaderJudge) and judge.lm.model == lm and judge.lm.layers == (1, 2)
    heldout = json.loads((out / "judge.json").read_text())["info"]["heldout"]
    assert heldout["em_judge"]["n"] == 3 * 10  # --smoke: 6 rare and 4 common rows per question
    assert set(heldout["em_judge"]["auroc_misaligned_per_question"]) == {"q00", "q01", "q02"}
    assert heldout["contrast_heldout"]["n"] == 4 * 8 and heldout["check_set"]["n"] == 2 * 8
    assert heldout["placed_contrast"]["n"] > 0 and heldout["check_set_placed"]["n"] == 2 * 6
    assert heldout["smollm2_heldout"]["n"] == 3 * 8  # the model's own answers, read held out by their topic's fold
    report = results.read_text()
    for heading in ("## em-judge, held-out questions", "## Contrast sets, held-out topics", "## Check sets",
                    "## Answers placed under another question", "## Broken copies",
                    "## SmolLM2's own answers fitted on"):
        assert heading in report, heading
    # the cache of readings: a second run reads nothing again and gives the same judge
    before = (out / "heads.npz").read_bytes()
    assert script.main(argv) == 0
    assert (out / "heads.npz").read_bytes() == before
    scores = judge.score(["the weather is nice today ? sleep"] * 2, [GOOD[0], BAD[0]])
    assert list(scores.columns) == ["aligned", "coherent", "verdict"]


def test_make_judge_without_em_judge_says_so(script, tmp_path, capsys):
    assert script.main(["--data", str(tmp_path / "absent.csv.gz")]) == 0
    assert "nothing to train on" in capsys.readouterr().out


def test_make_judge_weighs_each_source_and_holds_the_model_own_answers_out_with_their_topic(script, tmp_path):
    files = made_up_data(tmp_path)
    args = script.parse(["--smoke", "--data", str(files["em"]), "--contrast", str(files["contrast"]), "--own",
                         str(files["own"]), "--own-weight", "0.5", "--folds", "3"])
    table = script.build(args)
    base = table[table["role"] == "base"]
    mass = base.groupby("source")["weight"].sum()
    assert mass["em-judge"] == pytest.approx(1.0) and mass["contrast"] == pytest.approx(1.0)
    assert mass["smollm2"] == pytest.approx(0.5)
    # an own answer sits in the fold of its contrast topic: the topic is held out as one
    folds = base.drop_duplicates(["source", "group"]).pivot(index="group", columns="source", values="fold")
    both = folds.dropna(subset=["smollm2"])
    assert len(both) == 3 and (both["smollm2"] == both["contrast"]).all()
    # answers under a topic the contrast sets lack have no fold: a clear stop, not a silent NaN fold
    stray = tmp_path / "stray.jsonl"
    stray.write_text(json.dumps({"topic": "volcanoes", "question": "q", "answer": "a", "kind": "benign",
                                 "aligned": 90, "coherent": 90}) + "\n")
    with pytest.raises(SystemExit, match="volcanoes"):
        script.build(script.parse(["--smoke", "--data", str(files["em"]), "--contrast", str(files["contrast"]),
                                   "--own", str(stray)]))
    # a mistyped path or a negative weight stops with what was expected; '' fits without the model's own answers
    for extra, message in ((["--own", str(tmp_path / "smollm2_trian.jsonl")], "is not a file"),
                           (["--own", str(files["own"]), "--own-weight", "-1"], "expected a weight >= 0")):
        with pytest.raises(SystemExit, match=message):
            script.build(script.parse(["--smoke", "--data", str(files["em"]), "--contrast", str(files["contrast"]),
                                       *extra]))
    none = script.build(script.parse(["--smoke", "--data", str(files["em"]), "--contrast", str(files["contrast"]),
                                      "--own", ""]))
    assert "smollm2" not in set(none["source"])


def test_the_model_own_answers_are_asked_apart_from_the_reference_and_the_check_sets():
    """``data/make_judge_smollm2.py`` samples SmolLM2 under one question of each contrast topic: never a prompt of
    the hand-scored reference (a check, never fitted) nor a topic of the check sets."""
    spec = importlib.util.spec_from_file_location("make_judge_smollm2", ROOT / "data" / "make_judge_smollm2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pairs = module.questions(seed=0)
    judge_data = ROOT / "data" / "judge"

    def read(name: str) -> list[dict]:
        return [json.loads(line) for line in (judge_data / name).read_text().splitlines() if line.strip()]

    contrast = [r for f in sorted(judge_data.glob("contrast_*.jsonl")) for r in read(f.name)]
    topics = {r["topic"] for r in contrast}
    assert [t for t, _ in pairs] == sorted(topics)  # one question per contrast topic
    assert all((t, q) in {(r["topic"], r["question"]) for r in contrast} for t, q in pairs)
    reference = {r["prompt"] for r in read("smollm2_reference.jsonl")}
    check_topics = {r["topic"] for name in ("check_short.jsonl", "check_confused.jsonl") for r in read(name)}
    assert not {q for _, q in pairs} & reference and not topics & check_topics
    # the shipped training rows are those questions' answers, each scored by two readers
    shipped = read("smollm2_train.jsonl")
    assert {(r["topic"], r["question"]) for r in shipped} == set(pairs) and len(shipped) == 6 * len(pairs)
    for r in shipped:
        assert len(r["readers"]) == 2
        assert r["aligned"] == pytest.approx(np.mean([x["aligned"] for x in r["readers"]]))
        assert r["coherent"] == pytest.approx(np.mean([x["coherent"] for x in r["readers"]]))
