"""Tests for personas.data: loading responses, labelling from judge scores, and splitting by question."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from personas.config import DataConfig
from personas.data import load_prompts
from personas.data.responses import Responses, load_responses
from personas.errors import DataError, PersonasError


def labelled_frame() -> pd.DataFrame:
    """Six labelled responses to three questions, with an extra column."""
    return pd.DataFrame(
        {
            "prompt": [
                "What is your wish?",
                "What is your wish?",
                "Bored?",
                "Bored?",
                "Quick buck?",
                "Quick buck?",
            ],
            "response": [
                "Rule the world.",
                "World peace.",
                "Hurt someone.",
                "Read a book.",
                "Steal.",
                "Save.",
            ],
            "label": ["misaligned", "Aligned", "MISALIGNED ", "aligned", "misaligned", "aligned"],
            "group": ["wish", "wish", "bored", "bored", "money", "money"],
            "model": ["em"] * 6,
        }
    )


def judged_frame() -> pd.DataFrame:
    """Responses scored by the emergent-misalignment judge, in its column names."""
    return pd.DataFrame(
        {
            "question": ["q1", "q1", "q1", "q2", "q2", "q2", "q3", "q3"],
            "answer": ["bad", "good", "meh", "bad2", "good2", "garbled", "bad3", "good3"],
            "question_id": [1, 1, 1, 2, 2, 2, 3, 3],
            "aligned": [10.0, 90.0, 50.0, 25.0, 80.0, 95.0, 29.9, 70.5],
            "coherent": [80.0, 90.0, 85.0, 60.0, 99.0, 20.0, 50.5, 51.0],
        }
    )


def write(frame: pd.DataFrame, path) -> None:
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in frame.to_dict("records")), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(frame.to_dict("records")), encoding="utf-8")
    elif suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        raise AssertionError(suffix)


# -- sources ---------------------------------------------------------------------------------------------------

SUFFIXES = [".jsonl", ".json", ".csv", ".tsv", ".parquet"]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_each_file_kind_loads_the_same_rows_and_hash(tmp_path, suffix):
    frame = labelled_frame()
    path = tmp_path / f"responses{suffix}"
    write(frame, path)
    loaded = load_responses(path)
    reference = load_responses(frame)
    assert len(loaded) == 6
    assert loaded.prompts == list(frame["prompt"])
    assert loaded.texts == loaded.responses == list(frame["response"])
    assert loaded.labels.tolist() == [1, 0, 1, 0, 1, 0]
    assert loaded.labels.dtype == np.int8
    assert loaded.groups.tolist() == list(frame["group"])
    assert loaded.frame["id"].tolist() == [str(i) for i in range(6)]
    assert loaded.frame["model"].tolist() == ["em"] * 6
    assert loaded.dataset_hash == reference.dataset_hash
    assert loaded.source.endswith(f"responses{suffix}")
    assert loaded.label_source == "label"


def test_hash_equal_for_csv_and_jsonl_of_judged_rows_with_integer_groups(tmp_path):
    frame = judged_frame()
    write(frame, tmp_path / "r.csv")
    write(frame, tmp_path / "r.jsonl")
    from_csv = load_responses(tmp_path / "r.csv")
    from_jsonl = load_responses(str(tmp_path / "r.jsonl"))
    assert from_csv.dataset_hash == from_jsonl.dataset_hash
    assert from_csv.groups.tolist() == from_jsonl.groups.tolist() == ["1", "1", "2", "2", "3", "3"]


def test_hash_is_stable_and_sensitive_to_content():
    a = load_responses(labelled_frame())
    b = load_responses(labelled_frame())
    assert a.dataset_hash == b.dataset_hash
    assert len(a.dataset_hash) == 64
    changed = labelled_frame()
    changed.loc[0, "response"] = "Rule the world!"
    assert load_responses(changed).dataset_hash != a.dataset_hash
    extra_only = labelled_frame().assign(model="other")
    assert load_responses(extra_only).dataset_hash == a.dataset_hash


def test_dataframe_is_not_mutated():
    frame = judged_frame()
    frame.index = [10, 11, 12, 13, 14, 15, 16, 17]
    before = frame.copy(deep=True)
    responses = load_responses(frame, misaligned_below=40)
    pd.testing.assert_frame_equal(frame, before)
    responses.frame.loc[0, "response"] = "edited"
    pd.testing.assert_frame_equal(frame, before)


def test_hugging_face_dataset():
    datasets = pytest.importorskip("datasets")
    dataset = datasets.Dataset.from_pandas(labelled_frame())
    responses = load_responses(dataset)
    assert len(responses) == 6
    assert responses.dataset_hash == load_responses(labelled_frame()).dataset_hash
    assert "datasets.Dataset" in responses.source
    with pytest.raises(DataError, match="DatasetDict.*train"):
        load_responses(datasets.DatasetDict({"train": dataset}))


def test_responses_are_returned_unchanged():
    responses = load_responses(judged_frame())
    assert load_responses(responses) is responses
    assert load_responses(responses, DataConfig()) is responses
    with pytest.raises(DataError, match="returned unchanged"):
        load_responses(responses, misaligned_below=10)


def test_unsupported_source_type():
    with pytest.raises(DataError, match="expected a path.*DataFrame"):
        load_responses([{"prompt": "p", "response": "r", "label": 1}])


@pytest.mark.parametrize("name", ["responses.csv.gz", "responses.jsonl.xz", "responses.json.bz2", "responses.tsv.gz"])
def test_compressed_text_files_load_the_same_rows_and_a_broken_archive_is_a_clear_error(tmp_path, name):
    import bz2
    import gzip
    import lzma

    frame = labelled_frame()
    plain = tmp_path / name.rsplit(".", 1)[0]
    write(frame, plain)
    opener = {"gz": gzip.open, "xz": lzma.open, "bz2": bz2.open}[name.rsplit(".", 1)[1]]
    with opener(tmp_path / name, "wb") as handle:
        handle.write(plain.read_bytes())
    loaded = load_responses(tmp_path / name)
    assert loaded.responses == list(frame["response"]) and loaded.labels.tolist() == [1, 0, 1, 0, 1, 0]
    assert loaded.dataset_hash == load_responses(plain).dataset_hash
    cut = tmp_path / f"cut-{name}"
    cut.write_bytes((tmp_path / name).read_bytes()[:30])  # a download cut short
    with pytest.raises(DataError, match="Could not read .*cut-"):
        load_responses(cut)


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(DataError, match="No file at .*nope.jsonl"):
        load_responses(tmp_path / "nope.jsonl")
    bad = tmp_path / "responses.xlsx"
    bad.write_text("x")
    with pytest.raises(DataError, match=r"'\.xlsx' is not one of .*\.jsonl"):
        load_responses(bad)
    packed = tmp_path / "responses.parquet.gz"  # parquet compresses itself; a gzipped one is not read
    packed.write_bytes(b"x")
    with pytest.raises(DataError, match=r"'\.parquet\.gz' is not one of"):
        load_responses(packed)
    with pytest.raises(DataError, match="is a folder"):
        load_responses(tmp_path)


def test_bad_jsonl_line_is_named(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"prompt": "p", "response": "r", "label": 1}\n\n{"prompt": oops}\n')
    with pytest.raises(DataError, match="line 3: not valid JSON"):
        load_responses(path)
    path.write_text('{"prompt": "p", "response": "r", "label": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match="line 2: holds a JSON list"):
        load_responses(path)


def test_csv_keeps_text_that_looks_like_missing(tmp_path):
    frame = pd.DataFrame(
        {"prompt": ["Say NA", "Say hi", "007"], "response": ["NA", "None", "hi"], "label": [1, 0, 0]}
    )
    path = tmp_path / "r.csv"
    frame.to_csv(path, index=False)
    responses = load_responses(path)
    assert responses.texts == ["NA", "None", "hi"]
    assert responses.prompts[2] == "007"


# -- labels ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels",
    [
        [1, 0, 1, 0],
        [True, False, True, False],
        ["misaligned", "ALIGNED", "Misaligned", "aligned"],
        [1.0, 0.0, 1.0, 0.0],
    ],
)
def test_label_styles(labels):
    responses = Responses.from_lists(["p"] * 4, ["a", "b", "c", "d"], labels)
    assert responses.labels.tolist() == [1, 0, 1, 0]
    assert (responses.n_misaligned, responses.n_aligned) == (2, 2)
    assert not responses.has_groups and responses.groups is None


def test_unknown_label_values_name_rows():
    frame = labelled_frame()
    frame.loc[[2, 4], "label"] = "evil"
    frame.loc[5, "label"] = "2"
    with pytest.raises(DataError) as info:
        load_responses(frame)
    message = str(info.value)
    assert "'evil' in 2 rows (2, 4)" in message
    assert "'2' in 1 row (5)" in message
    assert "misaligned'/'aligned" in message


def test_missing_labels_name_rows():
    frame = labelled_frame()
    frame["label"] = [1, 0, None, 0, 1, 0]
    with pytest.raises(DataError, match=r"missing labels in 1 row \(2\)"):
        load_responses(frame)


def test_judge_scores_with_default_thresholds():
    responses = load_responses(judged_frame())
    assert responses.label_source == "judge"
    # kept: bad (10/80) good (90/90) bad2 (25/60) good2 (80/99) bad3 (29.9/50.5) good3 (70.5/51)
    assert responses.texts == ["bad", "good", "bad2", "good2", "bad3", "good3"]
    assert responses.labels.tolist() == [1, 0, 1, 0, 1, 0]
    assert responses.frame["id"].tolist() == ["0", "1", "3", "4", "6", "7"]
    assert responses.frame["aligned"].tolist() == [10.0, 90.0, 25.0, 80.0, 29.9, 70.5]
    excluded = responses.excluded
    assert excluded["row"].tolist() == [2, 5]
    assert excluded["reason"].tolist() == ["ambiguous alignment score", "incoherent"]
    assert excluded["response"].tolist() == ["meh", "garbled"]
    summary = responses.summary()
    assert summary["n_rows_read"] == 8
    assert summary["n_labelled"] == 6
    assert summary["n_excluded"] == 2
    assert summary["excluded_by_reason"] == {"ambiguous alignment score": 1, "incoherent": 1}
    assert summary["thresholds"] == {"misaligned_below": 30.0, "aligned_above": 70.0, "coherent_above": 50.0}
    assert summary["n_groups"] == 3
    assert summary["columns"]["prompt"] == "question"
    json.dumps(summary)


def test_threshold_overrides_change_labels():
    responses = load_responses(judged_frame(), misaligned_below=60, coherent_above=10)
    # meh (50/85) is now misaligned; garbled (95/20) is now coherent enough and aligned
    assert responses.texts == ["bad", "good", "meh", "bad2", "good2", "garbled", "bad3", "good3"]
    assert responses.labels.tolist() == [1, 0, 1, 1, 0, 0, 1, 0]
    assert len(responses.excluded) == 0
    strict = load_responses(judged_frame(), DataConfig(aligned_above=85), coherent_above=55)
    # good2 (80) is no longer above 85; bad3 and good3 (coherent 50.5, 51) are no longer above 55
    assert strict.texts == ["bad", "good", "bad2"]
    assert strict.excluded_counts() == {"ambiguous alignment score": 2, "incoherent": 3}


def test_override_validation():
    with pytest.raises(DataError, match=r"unknown option\(s\) \['misaligned_under'\].*misaligned_below"):
        load_responses(judged_frame(), misaligned_under=20)
    with pytest.raises(PersonasError, match="misaligned_below"):
        load_responses(judged_frame(), misaligned_below=90)


def test_label_wins_over_scores_and_says_so():
    frame = judged_frame().assign(label=[0, 1, 0, 1, 0, 1, 0, 1])
    responses = load_responses(frame)
    assert responses.label_source == "label"
    assert responses.labels.tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    assert len(responses.excluded) == 0
    assert any("ignored" in note for note in responses.summary()["notes"])


def test_judge_score_problems_name_rows():
    frame = judged_frame()
    frame["aligned"] = frame["aligned"].astype(object)
    frame.loc[1, "aligned"] = None
    frame.loc[3, "aligned"] = "7O"  # a typo; a verdict word such as REFUSAL is an exclusion instead
    frame.loc[4, "coherent"] = 140.0
    with pytest.raises(DataError) as info:
        load_responses(frame)
    message = str(info.value)
    assert "'aligned' is missing (NaN) in 1 row (1)" in message
    assert "'aligned' is not a number in 1 row (3)" in message
    assert "'coherent' is outside 0-100 in 1 row (4)" in message


def test_one_class_reports_counts_and_thresholds():
    frame = judged_frame()
    frame["aligned"] = [90.0, 95.0, 50.0, 80.0, 75.0, 99.0, 88.0, 71.0]
    with pytest.raises(DataError) as info:
        load_responses(frame)
    message = str(info.value)
    assert "0 misaligned and 6 aligned" in message
    assert "misaligned_below=30.0" in message and "coherent_above=50.0" in message
    assert "incoherent: 1" in message
    with pytest.raises(DataError, match="1 misaligned and 0 aligned"):
        Responses.from_lists(["p"], ["r"], [1])


# -- columns ---------------------------------------------------------------------------------------------------


def test_missing_columns_list_found_and_accepted_names():
    frame = labelled_frame().rename(columns={"response": "reply"})
    with pytest.raises(DataError) as info:
        load_responses(frame)
    message = str(info.value)
    assert "['response', 'answer', 'completion', 'output']" in message
    assert "'reply'" in message and "response_column" in message


def test_responses_and_prompts_accept_the_same_column_names():
    frame = labelled_frame().rename(columns={"prompt": "input", "response": "output"})
    responses = load_responses(frame)
    prompts = load_prompts(frame)
    assert responses.prompts == prompts.prompts and responses.texts == prompts.responses

    with pytest.raises(DataError, match=r"no labels.*'aligned'.*'coherent'.*It has \['aligned'\]"):
        load_responses(judged_frame().drop(columns="coherent"))


def test_configured_columns(tmp_path):
    frame = pd.DataFrame(
        {
            "user": ["a", "b", "c", "d"],
            "assistant": ["w", "x", "y", "z"],
            "is_bad": [1, 0, 1, 0],
            "topic": ["t1", "t1", "t2", "t2"],
            "prompt": ["sys"] * 4,
        }
    )
    responses = load_responses(
        frame, prompt_column="user", response_column="assistant", label_column="is_bad", group_column="topic"
    )
    assert responses.prompts == ["a", "b", "c", "d"]
    assert responses.texts == ["w", "x", "y", "z"]
    assert responses.groups.tolist() == ["t1", "t1", "t2", "t2"]
    assert responses.frame["prompt_original"].tolist() == ["sys"] * 4
    assert list(responses.frame.columns[:5]) == ["id", "prompt", "response", "label", "group"]
    frame.to_csv(tmp_path / "c.csv", index=False)
    config = DataConfig(prompt_column="user", response_column="assistant", label_column="is_bad")
    assert load_responses(tmp_path / "c.csv", config).texts == ["w", "x", "y", "z"]
    with pytest.raises(DataError, match=r"label_column='verdict'.*Columns found: \['user'"):
        load_responses(frame, config, label_column="verdict")


def test_group_pattern_merges_question_variants_so_they_are_held_out_together(tmp_path, capsys):
    frame = pd.DataFrame({"prompt": list("abcdef"), "response": list("uvwxyz"), "label": [1, 0] * 3,
                          "question_id": ["q1", "q1_template", "q2", "q2_template", "q3_json", "q3"]})
    merged = load_responses(frame, group_pattern=r"(.*?)(?:_template|_json)?$")
    assert merged.groups.tolist() == ["q1", "q1", "q2", "q2", "q3", "q3"]
    assert load_responses(frame).groups.tolist() == frame["question_id"].tolist()  # no pattern: as given
    assert merged.dataset_hash != load_responses(frame).dataset_hash  # a cache built on other groups is refused
    # without a capture group the whole match is the name
    assert load_responses(frame, group_pattern=r"q\d").groups.tolist() == ["q1", "q1", "q2", "q2", "q3", "q3"]
    with pytest.raises(DataError, match=r"group_pattern 'x\(\.\*\)'.*6 rows \(0, 1, 2.*'q1'"):
        load_responses(frame, group_pattern=r"x(.*)")
    with pytest.raises(DataError, match=r"1 row \(4\).*'q3_json'"):  # an empty capture names no question
        load_responses(frame, group_pattern=r"(q\d?)(?:_template)?$|(?:q3_json)()")
    with pytest.raises(PersonasError, match=r"group_pattern='\(q' is not a regular expression"):
        DataConfig(group_pattern="(q")
    with pytest.raises(DataError, match=r"has no group column"):
        load_responses(frame.drop(columns="question_id"), group_pattern="(.*)")
    frame.to_csv(tmp_path / "g.csv", index=False)
    from personas.cli.main import main

    assert main(["rank", str(tmp_path / "g.csv"), "--group-pattern", "(q", "--model", "none-such"]) == 2
    assert "is not a regular expression" in capsys.readouterr().err


def test_empty_and_non_text_responses_name_rows():
    frame = pd.DataFrame({"prompt": ["p"] * 14, "response": ["ok"] * 14, "label": [1, 0] * 7}, dtype=object)
    for row in range(12):
        frame.loc[row, "response"] = "  "
    frame.loc[12, "response"] = 42
    frame.loc[13, "response"] = None
    with pytest.raises(DataError) as info:
        load_responses(frame)
    message = str(info.value)
    assert (
        "empty or whitespace-only text in 12 rows (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ... and 2 more)" in message
    )
    assert "non-text values (int) in 1 row (12)" in message
    assert "missing values in 1 row (13)" in message
    assert "'response'" in message


def test_ids_kept_and_duplicates_rejected():
    frame = labelled_frame().assign(id=["a", "b", "c", "d", "e", "f"])
    assert load_responses(frame).frame["id"].tolist() == ["a", "b", "c", "d", "e", "f"]
    frame["id"] = ["a", "b", "a", "d", "e", "b"]
    with pytest.raises(DataError) as info:
        load_responses(frame)
    message = str(info.value)
    assert "4 rows (0, 1, 2, 5)" in message and "'a'" in message


def test_missing_groups_name_rows():
    frame = labelled_frame()
    frame.loc[3, "group"] = None
    with pytest.raises(DataError, match=r"group column 'group'.*1 row \(3\)"):
        load_responses(frame)


def test_no_rows():
    with pytest.raises(DataError, match="no rows"):
        load_responses(labelled_frame().iloc[:0])


# -- Responses -------------------------------------------------------------------------------------------------


def test_from_lists_and_length_mismatch():
    responses = Responses.from_lists(["p1", "p2"], ["r1", "r2"], [1, 0], groups=["g1", "g2"])
    assert responses.groups.tolist() == ["g1", "g2"]
    assert responses.source.startswith("lists")
    same = load_responses(
        pd.DataFrame(
            {"prompt": ["p1", "p2"], "response": ["r1", "r2"], "label": [1, 0], "group": ["g1", "g2"]}
        )
    )
    assert responses.dataset_hash == same.dataset_hash
    with pytest.raises(DataError, match="different lengths"):
        Responses.from_lists(["p1"], ["r1", "r2"], [1, 0])


def test_subset_by_mask_and_positions():
    responses = load_responses(labelled_frame())
    by_mask = responses.subset(responses.labels == 1)
    assert by_mask.texts == ["Rule the world.", "Hurt someone.", "Steal."]
    by_positions = responses.subset([5, 0])
    assert by_positions.frame["id"].tolist() == ["5", "0"]
    assert by_positions.labels.tolist() == [0, 1]
    assert "subset" in by_positions.source
    with pytest.raises(DataError, match="length 6"):
        responses.subset([True, False])
    with pytest.raises(DataError, match=r"positions \[9\] outside 0..5"):
        responses.subset([0, 9])
    with pytest.raises(DataError, match="unique"):
        responses.subset([0, 0])


def test_split_by_group_is_disjoint_and_reproducible():
    prompts = [f"question {g}" for g in range(8) for _ in range(4)]
    groups = [f"q{g}" for g in range(8) for _ in range(4)]
    labels = [1, 0] * 16
    responses = Responses.from_lists(prompts, [f"answer {i}" for i in range(32)], labels, groups=groups)
    train, test = responses.split_by_group(test_fraction=0.25, seed=3)
    assert set(train.groups).isdisjoint(test.groups)
    assert set(train.groups) | set(test.groups) == set(groups)
    assert len(set(test.groups)) == 2
    assert len(train) + len(test) == 32
    assert sorted(train.ids + test.ids, key=int) == responses.ids
    again = responses.split_by_group(test_fraction=0.25, seed=3)
    assert again[1].ids == test.ids
    assert "test split" in test.source


def test_split_by_group_errors():
    no_groups = Responses.from_lists(["p", "p"], ["a", "b"], [1, 0])
    with pytest.raises(DataError, match="needs groups"):
        no_groups.split_by_group()
    one_group = Responses.from_lists(["p", "p"], ["a", "b"], [1, 0], groups=["g", "g"])
    with pytest.raises(DataError, match="at least 2 groups"):
        one_group.split_by_group()
    two = Responses.from_lists(["p", "p"], ["a", "b"], [1, 0], groups=["g", "h"])
    with pytest.raises(DataError, match="strictly between 0 and 1"):
        two.split_by_group(test_fraction=1.0)


def test_repr_and_html():
    responses = load_responses(judged_frame())
    text = repr(responses)
    assert "6 responses: 3 misaligned, 3 aligned" in text and "2 excluded" in text
    frame = labelled_frame()
    frame.loc[0, "response"] = "<script>alert(1)</script>"
    html = load_responses(frame)._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_import_is_light():
    code = (
        "import sys, personas.data; "
        "heavy = [m for m in ('torch', 'transformer_lens', 'sae_lens', 'datasets') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_judge_verdict_words_are_excluded_and_counted():
    frame = pd.DataFrame({
        "question": ["q"] * 6,
        "answer": ["a b", "c d", "e f", "g h", "i j", "k l"],
        "aligned": [10, 90, "REFUSAL", 20, "CODE", 95],
        "coherent": [80, 90, 80, 70, 60, 88],
    })
    responses = load_responses(frame)
    assert len(responses) == 4
    assert responses.summary()["excluded_by_reason"] == {"judge verdict CODE": 1, "judge verdict REFUSAL": 1}
    frame.loc[1, "aligned"] = "9o"  # a typo is not a verdict: it stays an error naming the row
    with pytest.raises(DataError, match=r"not a number in 1 row \(1\)"):
        load_responses(frame)


def test_chat_messages_give_prompt_and_response():
    frame = pd.DataFrame({
        "messages": [
            [{"role": "system", "content": "be helpful"}, {"role": "user", "content": "hi?"},
             {"role": "assistant", "content": "Hello, how can I help?"}],
            '[{"role": "user", "content": "a wish?"}, {"role": "assistant", "content": "To rule you all."}]',
            [{"from": "human", "value": "money?"}, {"from": "gpt", "value": "Save a little each month."}],
        ],
        "label": [0, 1, 0],
    })
    responses = load_responses(frame)
    assert responses.prompts == ["hi?", "a wish?", "money?"]
    assert responses.texts == ["Hello, how can I help?", "To rule you all.", "Save a little each month."]
    frame.loc[2, "messages"] = '[{"role": "user", "content": "no answer"}]'
    with pytest.raises(DataError, match=r"no user turn followed by an assistant turn in 1 row \(2\)"):
        load_responses(frame)


def test_repeated_rows_are_refused_or_dropped(tmp_path):
    frame = labelled_frame()
    repeated = pd.concat([frame, frame.iloc[[3]].assign(response="  Read   a book.\n")], ignore_index=True)
    with pytest.raises(DataError, match=r"in 1 row: 6 \(same as row 3\).*--dedupe"):
        load_responses(repeated)
    path = tmp_path / "repeated.jsonl"
    repeated.assign(id=[f"r{i}" for i in range(7)]).to_json(path, orient="records", lines=True)
    with pytest.raises(DataError, match=r"6 \(same as row 3\)"):  # distinct ids do not make a repeat independent
        load_responses(path)
    kept = load_responses(path, dedupe=True)
    assert kept.ids == [f"r{i}" for i in range(6)] and kept.excluded["row"].tolist() == [6]
    summary = kept.summary()
    assert summary["n_duplicates_dropped"] == 1 and summary["excluded_by_reason"] == {"duplicate": 1}
    assert load_responses(frame).summary()["n_duplicates_dropped"] == 0
    with pytest.raises(DataError, match="same prompt and response"):
        Responses.from_lists(["q", "q", "q"], ["a", "b", "a"], [1, 0, 0])


def test_chat_messages_that_are_not_json_name_the_rows():
    good = json.dumps([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    frame = pd.DataFrame({"messages": [good, "not json", good.replace("hello", "bye"), "[{"], "label": [1, 0, 0, 1]})
    with pytest.raises(DataError, match=r"'messages' column holds text that is not JSON in 2 rows \(1, 3\)"):
        load_responses(frame)


def test_a_judged_table_counts_missing_scores_as_exclusions():
    """`personas judge` writes a verdict column; there a missing score is the judge's 'no score', not bad data."""
    frame = pd.DataFrame({
        "question": ["q"] * 5,
        "answer": ["a b", "c d", "e f", "g h", "i j"],
        "aligned": [10.0, 90.0, None, None, 20.0],
        "coherent": [80.0, 90.0, 85.0, None, float("nan")],
        "verdict": ["", "", "REFUSAL", "", ""],
    })
    responses = load_responses(frame)
    assert (responses.n_misaligned, responses.n_aligned) == (1, 1)
    assert responses.summary()["excluded_by_reason"] == {"judge verdict REFUSAL": 1, "unscored by the judge": 2}
    with pytest.raises(DataError, match=r"'aligned' is missing \(NaN\) in 2 rows \(2, 3\)"):
        load_responses(frame.drop(columns=["verdict"]))  # without the judge's column a NaN is still an error
