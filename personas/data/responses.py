"""`Responses` and `load_responses`: labelled responses (one row each), the rows left out and why.

Why this module is long: the `Responses` dataclass and its loader belong together (``Responses.from_lists`` and
`load_responses` share `_from_frame`); the column readers live in `personas.data.columns`.

A `Responses` is what `personas.data.load_responses` returns and every job takes: ``prompts``, ``texts``,
``labels`` (1 misaligned, 0 aligned), ``groups`` (the question each response answers), a content hash for
manifests, ``summary()`` (counts, exclusions by reason, duplicates dropped, thresholds), ``subset`` and
``split_by_group`` (whole questions held out).

`load_responses` takes a file, a DataFrame or a `datasets.Dataset`. Labels come from a label column
(``misaligned``/``aligned``, 1/0, True/False) or from the judge's 0-100 ``aligned`` and ``coherent`` scores:
misaligned when ``aligned < misaligned_below`` and ``coherent > coherent_above``, aligned when
``aligned > aligned_above`` and ``coherent > coherent_above``; the rest are excluded and counted. Repeated
(prompt, response) pairs are refused, or dropped with ``dedupe=True``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from personas.config import DataConfig
from personas.data.columns import (
    ALIGNED,
    ALIGNED_SCORE,
    COHERENT_SCORE,
    MISALIGNED,
    REASON_DUPLICATE,
    duplicates_message,
    expand_messages,
    judge_labels,
    merge_groups,
    pick_column,
    read_groups,
    read_ids,
    read_labels,
    read_text,
    repeated_pairs,
)
from personas.data.readers import (
    GROUP_COLUMNS,
    ID_COLUMN,
    LABEL_COLUMNS,
    MESSAGES_COLUMNS,
    PROMPT_COLUMNS,
    RESPONSE_COLUMNS,
    list_rows,
    preview,
    read_table,
    shorten,
)
from personas.errors import DataError

logger = logging.getLogger(__name__)


#: The columns every `Responses.frame` has, in this order.
CORE_COLUMNS = ("id", "prompt", "response", "label", "group")
_HASH_VERSION = b"personas.responses.v1"


# --------------------------------------------------------------------------------------------------------------
# Responses


@dataclass(frozen=True, eq=False, repr=False)
class Responses:
    """Labelled responses, ready for capture and scoring.

    Attributes:
        frame: one row per labelled response, with columns ``id`` (str, unique), ``prompt``, ``response``,
            ``label`` (int8, 1 misaligned / 0 aligned), ``group`` (str; absent when no groups were given), then any
            other columns of the input, unchanged (a clashing name gets the suffix ``_original``).
        excluded: the input rows that were not labelled, with their 0-based input position ``row`` and a
            ``reason`` ("ambiguous alignment score" or "incoherent"). Subsets and splits keep those of the load.
        config: the `DataConfig` the rows were read with.
        source: where the rows came from, in words.
        label_source: "label" when a label column was read, "judge" when labels came from judge scores.
        n_rows_read: rows in the input (labelled + excluded unless this is a subset).
        columns: which input column became each canonical column, e.g. ``{"prompt": "question"}``.
        notes: remarks for the manifest (e.g. that a label column won over judge scores).
    """

    frame: pd.DataFrame
    excluded: pd.DataFrame = field(default_factory=lambda: pd.DataFrame({"row": [], "reason": []}))
    config: DataConfig = field(default_factory=DataConfig)
    source: str = "<in memory>"
    label_source: str = "label"
    n_rows_read: int | None = None
    columns: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        missing = [c for c in ("id", "prompt", "response", "label") if c not in self.frame.columns]
        if missing:
            raise DataError(
                f"Responses.frame lacks the column(s) {missing}; it has {list(self.frame.columns)}. "
                "Build Responses with load_responses() or Responses.from_lists() rather than by hand."
            )
        if self.label_source not in ("label", "judge"):
            raise DataError(f"Responses.label_source={self.label_source!r}; expected 'label' or 'judge'.")
        labels = self.frame["label"].to_numpy()
        bad = np.flatnonzero(~np.isin(labels, (ALIGNED, MISALIGNED)))
        if bad.size:
            raise DataError(
                f"Responses.frame['label'] must be 1 (misaligned) or 0 (aligned); {list_rows(bad)} are not."
            )
        dup = self.frame["id"].duplicated(keep=False).to_numpy()
        if dup.any():
            raise DataError(
                f"Responses.frame['id'] must be unique; {list_rows(np.flatnonzero(dup))} share ids "
                f"{preview(self.frame['id'][dup].unique())}."
            )
        if self.n_rows_read is None:
            object.__setattr__(self, "n_rows_read", len(self.frame) + len(self.excluded))

    # -- construction ------------------------------------------------------------------------------------------

    @classmethod
    def from_lists(
        cls,
        prompts: Sequence[str],
        responses: Sequence[str],
        labels: Sequence[int | bool | str],
        groups: Sequence[Any] | None = None,
        *,
        ids: Sequence[Any] | None = None,
        config: DataConfig | None = None,
    ) -> Responses:
        """Responses from parallel lists; labels as in a label column (1/0, True/False, misaligned/aligned)."""
        columns: dict[str, list[Any]] = {
            "prompt": list(prompts),
            "response": list(responses),
            "label": list(labels),
        }
        if groups is not None:
            columns["group"] = list(groups)
        if ids is not None:
            columns["id"] = list(ids)
        lengths = {name: len(values) for name, values in columns.items()}
        if len(set(lengths.values())) > 1:
            raise DataError(
                f"Responses.from_lists got lists of different lengths {lengths}; "
                "expected one prompt, response, label (and group/id) per response."
            )
        config = config or DataConfig()
        # The lists have the canonical names; column names in the config do not apply.
        config = dataclasses.replace(
            config, prompt_column=None, response_column=None, label_column=None, group_column=None
        )
        return _from_frame(pd.DataFrame(columns), config, source=f"lists ({lengths['prompt']} responses)")

    # -- views -------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def prompts(self) -> list[str]:
        return [str(p) for p in self.frame["prompt"].tolist()]

    @property
    def texts(self) -> list[str]:
        """The responses' text, in row order."""
        return [str(r) for r in self.frame["response"].tolist()]

    @property
    def responses(self) -> list[str]:
        """Same as `texts`."""
        return self.texts

    @property
    def ids(self) -> list[str]:
        return [str(i) for i in self.frame["id"].tolist()]

    @property
    def labels(self) -> np.ndarray:
        """1 for misaligned, 0 for aligned, as int8."""
        return self.frame["label"].to_numpy(dtype=np.int8)

    @property
    def has_groups(self) -> bool:
        return "group" in self.frame.columns

    @property
    def groups(self) -> np.ndarray | None:
        """The question each response answers, as str; None when no groups were given."""
        if not self.has_groups:
            return None
        return np.asarray([str(g) for g in self.frame["group"].tolist()], dtype=str)

    @property
    def n_misaligned(self) -> int:
        return int((self.labels == MISALIGNED).sum())

    @property
    def n_aligned(self) -> int:
        return int((self.labels == ALIGNED).sum())

    @property
    def dataset_hash(self) -> str:
        """sha256 over id, prompt, response, label and group of every row, in order.

        Independent of where the rows were read from (CSV, JSONL, DataFrame...) and of extra columns.
        """
        digest = hashlib.sha256(_HASH_VERSION)
        groups = self.frame["group"].tolist() if self.has_groups else [None] * len(self)
        rows = zip(
            self.frame["id"].tolist(),
            self.frame["prompt"].tolist(),
            self.frame["response"].tolist(),
            self.frame["label"].tolist(),
            groups,
            strict=True,
        )
        for row_id, prompt, response, label, group in rows:
            record = [
                str(row_id),
                str(prompt),
                str(response),
                int(label),
                None if group is None else str(group),
            ]
            digest.update(b"\n")
            digest.update(json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        return digest.hexdigest()

    def excluded_counts(self) -> dict[str, int]:
        """Excluded rows per reason."""
        if len(self.excluded) == 0 or "reason" not in self.excluded.columns:
            return {}
        counts = self.excluded["reason"].value_counts()
        return {str(reason): int(counts[reason]) for reason in sorted(counts.index)}

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable description for manifests."""
        return {
            "source": self.source,
            "n_rows_read": int(self.n_rows_read),
            "n_labelled": len(self),
            "n_misaligned": self.n_misaligned,
            "n_aligned": self.n_aligned,
            "n_excluded": len(self.excluded),
            "excluded_by_reason": self.excluded_counts(),
            "n_duplicates_dropped": self.excluded_counts().get(REASON_DUPLICATE, 0),
            "label_source": self.label_source,
            "thresholds": {
                "misaligned_below": float(self.config.misaligned_below),
                "aligned_above": float(self.config.aligned_above),
                "coherent_above": float(self.config.coherent_above),
            },
            "columns": dict(self.columns),
            "n_groups": int(self.frame["group"].nunique()) if self.has_groups else None,
            "notes": list(self.notes),
            "dataset_hash": self.dataset_hash,
        }

    # -- selection ---------------------------------------------------------------------------------------------

    def subset(self, rows: Any) -> Responses:
        """The responses at ``rows``: a boolean mask of length ``len(self)``, or integer positions."""
        positions = self._positions(rows)
        frame = self.frame.iloc[positions].reset_index(drop=True)
        return dataclasses.replace(
            self, frame=frame, source=f"{self.source} [subset: {len(positions)} of {len(self)} rows]"
        )

    def split_by_group(self, test_fraction: float = 0.25, seed: int = 0) -> tuple[Responses, Responses]:
        """Split into (train, test) so that no group (question) is in both.

        About ``test_fraction`` of the groups, drawn with ``seed``, go to test; each side keeps at least one group.
        """
        if not self.has_groups:
            raise DataError(
                f"split_by_group needs groups, but {self.source} has none. Give a 'group' or 'question_id' column "
                "(or set DataConfig.group_column), or pass groups= to Responses.from_lists."
            )
        if not 0.0 < float(test_fraction) < 1.0:
            raise DataError(
                f"split_by_group(test_fraction={test_fraction!r}); expected a number strictly between 0 and 1."
            )
        groups = self.groups
        unique = np.asarray(sorted(set(groups.tolist())), dtype=str)
        if unique.size < 2:
            raise DataError(
                f"split_by_group needs at least 2 groups; {self.source} has {unique.size} ({preview(unique)}). "
                "Add responses to other questions, or split by rows with subset()."
            )
        order = np.random.default_rng(seed).permutation(unique.size)
        n_test = min(unique.size - 1, max(1, int(round(float(test_fraction) * unique.size))))
        in_test = np.isin(groups, unique[order[:n_test]])
        parts = []
        for name, mask, n_groups in (("train", ~in_test, unique.size - n_test), ("test", in_test, n_test)):
            part = self.subset(mask)
            part = dataclasses.replace(
                part, source=f"{self.source} [{name} split: {n_groups} of {unique.size} groups, seed={seed}]"
            )
            if part.n_misaligned == 0 or part.n_aligned == 0:
                logger.warning(
                    "The %s split has %d misaligned and %d aligned responses; it lacks a class.",
                    name,
                    part.n_misaligned,
                    part.n_aligned,
                )
            parts.append(part)
        return parts[0], parts[1]

    def _positions(self, rows: Any) -> np.ndarray:
        n = len(self)
        if isinstance(rows, slice):
            return np.arange(n)[rows]
        values = np.asarray(rows.to_numpy() if isinstance(rows, pd.Series) else rows)
        if values.ndim == 0:
            values = values.reshape(1)
        if values.ndim != 1:
            raise DataError(
                f"subset() got an array of shape {values.shape}; expected a 1-d mask or positions."
            )
        if values.size == 0:
            return np.zeros(0, dtype=np.int64)
        if values.dtype == bool:
            if values.size != n:
                raise DataError(
                    f"subset() got a boolean mask of length {values.size}; expected length {n} (one per response)."
                )
            return np.flatnonzero(values)
        if not np.issubdtype(values.dtype, np.integer):
            raise DataError(
                f"subset() got values of dtype {values.dtype}; expected a boolean mask or integer positions."
            )
        out = np.flatnonzero((values < -n) | (values >= n))
        if out.size:
            raise DataError(
                f"subset() got positions {preview(values[out])} outside 0..{n - 1} ({n} responses)."
            )
        return np.where(values < 0, values + n, values).astype(np.int64)

    # -- display -----------------------------------------------------------------------------------------------

    def _headline(self) -> str:
        parts = [
            f"{len(self)} {'response' if len(self) == 1 else 'responses'}: {self.n_misaligned} misaligned, {self.n_aligned} aligned"
        ]
        counts = self.excluded_counts()
        if counts:
            detail = ", ".join(f"{reason}: {count}" for reason, count in counts.items())
            parts.append(f"{len(self.excluded)} excluded ({detail})")
        if self.has_groups:
            parts.append(f"{self.frame['group'].nunique()} groups")
        parts.append(f"labels from {self.label_source}")
        return "; ".join(parts)

    def __repr__(self) -> str:
        return f"Responses({self._headline()}; source={self.source!r})"

    def _repr_html_(self) -> str:
        head = self.frame.head(5).copy()
        for column in ("prompt", "response"):
            head[column] = [shorten(str(text), 80) for text in head[column].tolist()]
        return (
            "<div><strong>Responses</strong>: "
            f"{html.escape(self._headline())}<br>"
            f"<small>source: {html.escape(self.source)}; dataset hash {self.dataset_hash[:12]}</small>"
            f"{head.to_html(index=False, escape=True)}</div>"
        )


# --------------------------------------------------------------------------------------------------------------
# Loading


# --------------------------------------------------------------------------------------------------------------
# From a raw frame to Responses


# --------------------------------------------------------------------------------------------------------------
# Small helpers


def load_responses(source: Any, config: DataConfig | None = None, **overrides: Any) -> Responses:
    """Read labelled responses from a file, a DataFrame, a `datasets.Dataset`, or return a `Responses` as is.

    Args:
        source: path to a ``.jsonl``/``.ndjson``, ``.json`` (a list of records), ``.csv``/``.tsv`` or
            ``.parquet`` file; a pandas DataFrame (not modified); a Hugging Face ``datasets.Dataset``; or a
            `Responses`, which is returned unchanged.
        config: how columns are found and judge scores turned into labels; default ``DataConfig()``.
        **overrides: `DataConfig` fields replacing those of ``config``, e.g. ``misaligned_below=25``.

    Raises:
        DataError: the file is missing or of an unknown kind, a column is missing, a value is malformed, ids
            repeat, or only one class is left after labelling. The message names the offending rows.
    """
    config = _resolve_config(config, overrides)
    if isinstance(source, Responses):
        if config is not None and config != source.config:
            raise DataError(
                f"load_responses got a Responses read with {source.config} and a different config {config}. "
                "A Responses is returned unchanged; to relabel, load the original file or DataFrame again with "
                "the new config."
            )
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        raw = read_table(path, config)
        description = str(path.resolve())
    elif isinstance(source, pd.DataFrame):
        raw = source.copy(deep=True)
        description = f"DataFrame ({len(source)} rows)"
    elif _is_hf_dataset(source):
        raw = source.to_pandas()
        name = getattr(getattr(source, "info", None), "dataset_name", None)
        split = getattr(source, "split", None)
        description = f"datasets.Dataset({name or 'unnamed'}, split={split}, {len(raw)} rows)"
    else:
        raise DataError(
            f"load_responses got a {type(source).__module__}.{type(source).__qualname__}; expected a path to a "
            ".jsonl, .json, .csv or .parquet file, a pandas DataFrame, a datasets.Dataset, or a Responses. "
            "For parallel lists use Responses.from_lists(prompts, responses, labels)."
        )
    return _from_frame(raw, config, source=description)


def _resolve_config(config: DataConfig | None, overrides: dict[str, Any]) -> DataConfig | None:
    if config is not None and not isinstance(config, DataConfig):
        raise DataError(
            f"load_responses(config=...) got a {type(config).__name__}; expected a personas DataConfig."
        )
    valid = [f.name for f in dataclasses.fields(DataConfig)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise DataError(
            f"load_responses got unknown option(s) {unknown}; valid DataConfig fields are {valid}."
        )
    if not overrides:
        return config
    return dataclasses.replace(config, **overrides) if config is not None else DataConfig(**overrides)


def _is_hf_dataset(source: Any) -> bool:
    datasets = sys.modules.get("datasets")
    if datasets is None:
        return False
    if isinstance(source, getattr(datasets, "DatasetDict", ())):
        raise DataError(
            f"load_responses got a datasets.DatasetDict with splits {list(source.keys())}; expected one split. "
            "Pass e.g. dataset['train']."
        )
    if isinstance(source, getattr(datasets, "IterableDataset", ())):
        raise DataError(
            "load_responses got a streaming datasets.IterableDataset; expected a datasets.Dataset. "
            "Load it without streaming=True, or materialise it with datasets.Dataset.from_list(list(...))."
        )
    return isinstance(source, getattr(datasets, "Dataset", ()))


def _from_frame(raw: pd.DataFrame, config: DataConfig | None, source: str) -> Responses:
    config = config or DataConfig()
    raw = raw.reset_index(drop=True)
    raw.columns = [str(c) for c in raw.columns]
    found = list(raw.columns)
    duplicated = sorted({c for c in found if found.count(c) > 1})
    if duplicated:
        raise DataError(
            f"{source} has duplicate column names {duplicated}; expected each column once. Rename them."
        )
    if len(raw) == 0:
        raise DataError(
            f"{source} has no rows (columns: {found}). Expected responses with prompts and labels or judge scores."
        )

    if not any(c in found for c in (*PROMPT_COLUMNS, *RESPONSE_COLUMNS, config.prompt_column, config.response_column)):
        messages_col = next((c for c in MESSAGES_COLUMNS if c in found), None)
        if messages_col is not None:
            raw = expand_messages(raw, messages_col, source)
            found = list(raw.columns)
    prompt_col = pick_column(found, config.prompt_column, PROMPT_COLUMNS, "prompt_column", "prompt", source)
    response_col = pick_column(
        found, config.response_column, RESPONSE_COLUMNS, "response_column", "response", source
    )
    label_col = pick_column(
        found, config.label_column, LABEL_COLUMNS, "label_column", "label", source, required=False
    )
    group_col = pick_column(
        found, config.group_column, GROUP_COLUMNS, "group_column", "group", source, required=False
    )
    has_scores = ALIGNED_SCORE in found and COHERENT_SCORE in found
    notes: list[str] = []
    if label_col is None and not has_scores:
        present = [c for c in (ALIGNED_SCORE, COHERENT_SCORE) if c in found]
        detail = f" It has {present} but not both." if present else ""
        raise DataError(
            f"{source} has no labels. Expected a label column {list(LABEL_COLUMNS)} (misaligned/aligned, 1/0 or "
            f"True/False), or judge score columns {ALIGNED_SCORE!r} and {COHERENT_SCORE!r} (0-100).{detail} "
            f"Columns found: {found}. Add one, or set DataConfig.label_column to the column holding the labels."
        )
    if label_col is not None and has_scores:
        notes.append(
            f"label column {label_col!r} used; judge scores {ALIGNED_SCORE!r}/{COHERENT_SCORE!r} were present "
            "but ignored"
        )
        logger.info("%s: %s.", source, notes[-1])

    ids = read_ids(raw, source)
    prompts = read_text(raw[prompt_col], prompt_col, "prompt", source, allow_empty=True)
    responses = read_text(raw[response_col], response_col, "response", source, allow_empty=False)
    groups = read_groups(raw[group_col], group_col, source) if group_col is not None else None
    if config.group_pattern is not None:
        if groups is None:
            raise DataError(
                f"group_pattern {config.group_pattern!r} was given but {source} has no group column (expected one of "
                f"{list(GROUP_COLUMNS)}; columns found: {found}). Name it with group_column, or drop group_pattern."
            )
        groups = merge_groups(groups, config.group_pattern, group_col, source)
    if label_col is not None:
        labels = read_labels(raw[label_col], label_col, source)
        reasons = np.full(len(raw), "", dtype=object)
        label_source = "label"
    else:
        labels, reasons = judge_labels(raw, config, source)
        label_source = "judge"

    columns = {"prompt": prompt_col, "response": response_col}
    if ID_COLUMN in found:
        columns["id"] = ID_COLUMN
    if label_col is not None:
        columns["label"] = label_col
    else:
        columns.update(aligned_score=ALIGNED_SCORE, coherent_score=COHERENT_SCORE)
    if group_col is not None:
        columns["group"] = group_col

    full = pd.DataFrame({"id": ids, "prompt": prompts, "response": responses})
    if groups is not None:
        full["group"] = groups
    consumed = {prompt_col, response_col, label_col, group_col, ID_COLUMN}
    extras = raw[[c for c in found if c not in consumed]]
    extras = extras.rename(columns={c: f"{c}_original" for c in extras.columns if c in CORE_COLUMNS})
    full = pd.concat([full, extras], axis=1)

    duplicate_of = repeated_pairs(prompts, responses, labels >= 0)
    if duplicate_of:
        if not config.dedupe:
            raise DataError(duplicates_message(duplicate_of, source))
        for row in duplicate_of:
            labels[row], reasons[row] = -1, REASON_DUPLICATE
        logger.info("%s: dropped %d repeated (prompt, response) rows (dedupe).", source, len(duplicate_of))
    keep = labels >= 0
    frame = full[keep].reset_index(drop=True)
    frame.insert(3, "label", labels[keep].astype(np.int8))
    excluded = full[~keep].reset_index(drop=True)
    excluded = excluded.rename(
        columns={c: f"{c}_original" for c in ("row", "reason") if c in excluded.columns}
    )
    excluded.insert(0, "row", np.flatnonzero(~keep))
    excluded.insert(1, "reason", reasons[~keep].astype(str))

    result = Responses(
        frame=frame,
        excluded=excluded,
        config=config,
        source=source,
        label_source=label_source,
        n_rows_read=len(raw),
        columns=columns,
        notes=tuple(notes),
    )
    if result.n_misaligned == 0 or result.n_aligned == 0:
        raise DataError(_one_class_message(result))
    logger.info("Loaded %s from %s.", result._headline(), source)
    return result


def _one_class_message(result: Responses) -> str:
    message = (
        f"After labelling, {result.source} has {result.n_misaligned} misaligned and {result.n_aligned} aligned "
        f"responses (of {result.n_rows_read} rows read); expected both classes."
    )
    if result.label_source == "judge":
        config = result.config
        counts = result.excluded_counts()
        excluded = ", ".join(f"{reason}: {count}" for reason, count in counts.items()) or "none"
        message += (
            f" Labels came from judge scores with misaligned_below={config.misaligned_below}, "
            f"aligned_above={config.aligned_above}, coherent_above={config.coherent_above}; excluded rows: "
            f"{excluded}. Fix: adjust the thresholds (e.g. load_responses(..., misaligned_below=40)) or add "
            "responses of the missing class."
        )
    else:
        message += (
            f" Labels came from the column {result.columns.get('label')!r}. Fix: add responses of the missing "
            "class, or check that the label column is the right one."
        )
    return message
