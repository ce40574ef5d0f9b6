"""From a raw table to validated columns: ids, texts, groups, labels (a label column or judge scores), chat turns.

Each reader returns plain lists or arrays and raises a `DataError` naming the rows at fault (0-based positions in
the input). Labels come from a label column (``misaligned``/``aligned``, 1/0, True/False) or from the judge's
0-100 ``aligned`` and ``coherent`` scores (`judge_labels`); judge verdict words such as REFUSAL are exclusions.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from personas.config import DataConfig
from personas.data.readers import ID_COLUMN, as_key, is_missing, list_rows, preview
from personas.errors import DataError

#: Judge score columns written by the emergent-misalignment evaluations (0-100).
ALIGNED_SCORE = "aligned"


COHERENT_SCORE = "coherent"


MISALIGNED = 1


ALIGNED = 0


REASON_AMBIGUOUS = "ambiguous alignment score"


REASON_INCOHERENT = "incoherent"


REASON_VERDICT = "judge verdict"  # followed by the word, e.g. "judge verdict REFUSAL"


REASON_DUPLICATE = "duplicate"


REASON_UNSCORED = "unscored by the judge"


#: The column a `personas.judging` judge writes (``personas judge``): "" for a scored answer, else a word.
VERDICT_COLUMN = "verdict"


# The emergent-misalignment judge answers some rows with a word instead of a score (REFUSAL, CODE).
_JUDGE_VERDICT = re.compile(r"[A-Za-z][A-Za-z_ -]*")


_LABEL_WORDS = {
    "misaligned": MISALIGNED,
    "aligned": ALIGNED,
    "1": MISALIGNED,
    "0": ALIGNED,
    "true": MISALIGNED,
    "false": ALIGNED,
}


def repeated_pairs(prompts: list[str], responses: list[str], labelled: np.ndarray) -> dict[int, int]:
    """Labelled row -> the earlier labelled row with the same prompt and response, whitespace normalised."""
    first: dict[tuple[str, str], int] = {}
    repeats: dict[int, int] = {}
    for i in np.flatnonzero(labelled).tolist():
        key = (" ".join(prompts[i].split()), " ".join(responses[i].split()))
        if key in first:
            repeats[i] = first[key]
        else:
            first[key] = i
    return repeats


def duplicates_message(duplicate_of: dict[int, int], source: str) -> str:
    shown = ", ".join(f"{row} (same as row {earlier})" for row, earlier in list(duplicate_of.items())[:10])
    more = f", ... and {len(duplicate_of) - 10} more" if len(duplicate_of) > 10 else ""
    return (
        f"{source} repeats the same prompt and response (after whitespace normalisation) in "
        f"{len(duplicate_of)} {'row' if len(duplicate_of) == 1 else 'rows'}: {shown}{more}. Repeated rows would "
        "count as independent observations and inflate significance, whatever their ids. Drop them: "
        "DataConfig(dedupe=True) or --dedupe keeps the first of each, or remove them from the data."
    )


def expand_messages(raw: pd.DataFrame, column: str, source: str) -> pd.DataFrame:
    """Chat-format rows (a list of {"role", "content"} turns, or ShareGPT {"from", "value"}): the last assistant
    turn is the response and the last user turn before it the prompt."""
    prompts, responses, bad = [], [], []
    not_json: list[int] = []
    for i, value in enumerate(raw[column].tolist()):
        try:
            turns = json.loads(value) if isinstance(value, str) else value
        except json.JSONDecodeError:
            not_json.append(i)
            prompts.append(None)
            responses.append(None)
            continue
        try:
            turns = [(str(t.get("role", t.get("from", ""))).lower(), t.get("content", t.get("value"))) for t in turns]
        except (AttributeError, TypeError):
            turns = []
        last = max((j for j, (role, _) in enumerate(turns) if role in ("assistant", "gpt", "model")), default=None)
        user = None if last is None else max(
            (j for j, (role, _) in enumerate(turns[:last]) if role in ("user", "human")), default=None
        )
        if last is None or user is None:
            bad.append(i)
            prompts.append(None)
            responses.append(None)
            continue
        prompts.append(turns[user][1])
        responses.append(turns[last][1])
    if not_json:
        raise DataError(
            f"{source}: the {column!r} column holds text that is not JSON in {list_rows(not_json)}. Expected a list "
            'of {"role": "user"|"assistant", "content": ...} turns per row (a JSON list, or a list in a JSONL '
            "record); fix those cells, or give prompt and response columns."
        )
    if bad:
        raise DataError(
            f"{source}: the {column!r} column has no user turn followed by an assistant turn in {list_rows(bad)}. "
            'Expected a list of {"role": "user"|"assistant", "content": ...} turns per row, or give prompt and '
            "response columns."
        )
    out = raw.drop(columns=[column]).copy()
    out["prompt"], out["response"] = prompts, responses
    return out


def pick_column(
    found: list[str],
    configured: str | None,
    defaults: Iterable[str],
    field_name: str,
    role: str,
    source: str,
    required: bool = True,
) -> str | None:
    if configured is not None:
        if configured not in found:
            raise DataError(
                f"DataConfig.{field_name}={configured!r}, but {source} has no such column. Columns found: {found}. "
                f"Set {field_name} to one of them."
            )
        return configured
    for name in defaults:
        if name in found:
            return name
    if required:
        raise DataError(
            f"{source} has no {role} column. Expected one of {list(defaults)}; columns found: {found}. "
            f"Rename the column, or set DataConfig.{field_name} (--{field_name.replace('_', '-')}) to its name."
        )
    return None


def read_ids(raw: pd.DataFrame, source: str) -> list[str]:
    if ID_COLUMN not in raw.columns:
        return [str(i) for i in range(len(raw))]
    ids = [as_key(v) for v in raw[ID_COLUMN].tolist()]
    missing = [i for i, v in enumerate(ids) if v is None]
    if missing:
        raise DataError(
            f"The {ID_COLUMN!r} column of {source} is empty in {list_rows(missing)}; expected an id for every row. "
            f"Fill them, or drop the {ID_COLUMN!r} column to use row numbers as ids."
        )
    positions: dict[str, list[int]] = {}
    for i, value in enumerate(ids):
        positions.setdefault(value, []).append(i)
    repeated = {value: rows for value, rows in positions.items() if len(rows) > 1}
    if repeated:
        rows = sorted(i for rows in repeated.values() for i in rows)
        raise DataError(
            f"The {ID_COLUMN!r} column of {source} repeats {len(repeated)} id(s) {preview(list(repeated))} in "
            f"{list_rows(rows)}; expected unique ids. Deduplicate the rows, or drop the {ID_COLUMN!r} column to use "
            "row numbers as ids."
        )
    return ids


def read_text(series: pd.Series, column: str, role: str, source: str, allow_empty: bool) -> list[str]:
    values = series.tolist()
    missing, non_text, empty = [], [], []
    kinds: set[str] = set()
    for i, value in enumerate(values):
        if isinstance(value, str):
            if not allow_empty and not value.strip():
                empty.append(i)
        elif is_missing(value):
            missing.append(i)
        else:
            non_text.append(i)
            kinds.add(type(value).__name__)
    problems = []
    if missing:
        problems.append(f"missing values in {list_rows(missing)}")
    if non_text:
        problems.append(f"non-text values ({', '.join(sorted(kinds))}) in {list_rows(non_text)}")
    if empty:
        problems.append(f"empty or whitespace-only text in {list_rows(empty)}")
    if problems:
        expected = "text" if allow_empty else "non-empty text"
        raise DataError(
            f"The {role} column {column!r} of {source} must hold {expected}; found "
            + "; ".join(problems)
            + ". "
            f"Fix: drop or fill those rows before loading, e.g. df = df.dropna(subset=[{column!r}]) for missing "
            f"values, df = df[df[{column!r}].str.strip() != ''] for empty ones."
        )
    return [str(v) for v in values]


def read_groups(series: pd.Series, column: str, source: str) -> list[str]:
    groups = [as_key(v) for v in series.tolist()]
    missing = [i for i, v in enumerate(groups) if v is None]
    if missing:
        raise DataError(
            f"The group column {column!r} of {source} is empty in {list_rows(missing)}; expected the question each "
            "response answers on every row. Fill them (e.g. with the prompt text), or drop the column."
        )
    return groups


def merge_groups(groups: list[str], pattern: str | None, column: str, source: str) -> list[str]:
    """Map each group value through ``DataConfig.group_pattern`` (first capture group, else the whole match)."""
    if pattern is None:
        return groups
    compiled = re.compile(pattern)
    merged: list[str] = []
    unmatched: list[int] = []
    for i, value in enumerate(groups):
        found = compiled.match(value)
        name = None if found is None else (found.group(1) if compiled.groups else found.group(0))
        if not name:
            unmatched.append(i)
        merged.append(name or "")
    if unmatched:
        raise DataError(
            f"group_pattern {pattern!r} does not name a question for the {column!r} value of {list_rows(unmatched)} "
            f"of {source} (e.g. {groups[unmatched[0]]!r}: no match, or an empty one). Expected a pattern that matches "
            "every value from its start and captures a non-empty question name, e.g. '(.*?)(?:_template)?$'."
        )
    return merged


def read_labels(series: pd.Series, column: str, source: str) -> np.ndarray:
    labels = np.empty(len(series), dtype=np.int64)
    missing: list[int] = []
    unknown: dict[str, list[int]] = {}
    for i, value in enumerate(series.tolist()):
        if is_missing(value):
            missing.append(i)
            labels[i] = -1
            continue
        parsed = parse_label(value)
        if parsed is None:
            unknown.setdefault(repr(value), []).append(i)
            labels[i] = -1
        else:
            labels[i] = parsed
    if missing or unknown:
        problems = []
        if missing:
            problems.append(f"missing labels in {list_rows(missing)}")
        for shown, rows in list(unknown.items())[:5]:
            problems.append(f"{shown} in {list_rows(rows)}")
        if len(unknown) > 5:
            problems.append(f"and {len(unknown) - 5} more unknown values")
        raise DataError(
            f"The label column {column!r} of {source} has values that are not labels: "
            + "; ".join(problems)
            + ". "
            "Expected 'misaligned'/'aligned' (any case), 1/0 or True/False, where 1 and True mean misaligned. "
            f"Fix: map or drop those rows, e.g. df[{column!r}] = df[{column!r}].map({{...}})."
        )
    return labels


def parse_label(value: Any) -> int | None:
    if isinstance(value, (bool, np.bool_)):
        return MISALIGNED if bool(value) else ALIGNED
    if isinstance(value, numbers.Real):
        number = float(value)
        return int(number) if number in (0.0, 1.0) else None
    if isinstance(value, str):
        return _LABEL_WORDS.get(value.strip().lower())
    return None


def judge_labels(raw: pd.DataFrame, config: DataConfig, source: str) -> tuple[np.ndarray, np.ndarray]:
    scores = {}
    problems = []
    verdicts: dict[int, str] = {}  # rows the judge answered with a word (REFUSAL, CODE) instead of a score
    # A table a judge wrote (`personas judge`) has a verdict column; there a missing score is the judge's
    # "no score" (a verdict word, or too little probability on any number), an exclusion rather than an error.
    judged = VERDICT_COLUMN in raw.columns
    if judged:
        for i, value in enumerate(raw[VERDICT_COLUMN].tolist()):
            if not is_missing(value) and str(value).strip():
                verdicts[i] = str(value).strip().upper()
    unscored: set[int] = set()
    for column in (ALIGNED_SCORE, COHERENT_SCORE):
        values, missing, non_numeric, out_of_range = read_scores(raw[column])
        if judged:
            unscored |= {i for i in missing if i not in verdicts}
            missing = []
        words = {i: str(raw[column].iloc[i]).strip().upper() for i in non_numeric
                 if _JUDGE_VERDICT.fullmatch(str(raw[column].iloc[i]).strip())}
        for i, word in words.items():
            verdicts.setdefault(i, word)
        non_numeric = [i for i in non_numeric if i not in words]
        if missing:
            problems.append(f"{column!r} is missing (NaN) in {list_rows(missing)}")
        if non_numeric:
            problems.append(f"{column!r} is not a number in {list_rows(non_numeric)}")
        if out_of_range:
            problems.append(f"{column!r} is outside 0-100 in {list_rows(out_of_range)}")
        scores[column] = values
    if problems:
        raise DataError(
            f"Judge scores in {source} are not usable: "
            + "; ".join(problems)
            + ". Expected numbers from 0 to 100 "
            "for every row, as the emergent-misalignment judge writes them (a word such as REFUSAL or CODE is "
            "counted as an exclusion). Fix: drop those rows, rescale the scores to 0-100, or give a label column."
        )
    aligned, coherent = scores[ALIGNED_SCORE], scores[COHERENT_SCORE]
    coherent_enough = coherent > config.coherent_above
    misaligned = coherent_enough & (aligned < config.misaligned_below)
    aligned_ok = coherent_enough & (aligned > config.aligned_above)
    labels = np.where(misaligned, MISALIGNED, np.where(aligned_ok, ALIGNED, -1))
    reasons = np.where(
        ~coherent_enough, REASON_INCOHERENT, np.where(labels < 0, REASON_AMBIGUOUS, "")
    ).astype(object)
    for i in unscored:
        labels[i], reasons[i] = -1, REASON_UNSCORED
    for i, word in verdicts.items():
        labels[i], reasons[i] = -1, f"{REASON_VERDICT} {word}"
    return labels, reasons


def read_scores(series: pd.Series) -> tuple[np.ndarray, list[int], list[int], list[int]]:
    values = np.full(len(series), np.nan)
    missing, non_numeric, out_of_range = [], [], []
    for i, value in enumerate(series.tolist()):
        if is_missing(value):
            missing.append(i)
            continue
        if isinstance(value, (bool, np.bool_)):
            non_numeric.append(i)
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            non_numeric.append(i)
            continue
        if math.isnan(number):
            missing.append(i)
        elif not 0.0 <= number <= 100.0:
            out_of_range.append(i)
        else:
            values[i] = number
    return values, missing, non_numeric, out_of_range
