"""Prompts (and their responses, when there are any) without labels: the input of model diffing and steering.

`load_prompts` reads a ``.txt`` file (one prompt per line), any table `personas.data.readers.read_table` reads, a
DataFrame, a list of strings, or a `Responses`; columns are found with the same accepted names as responses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from personas.data.columns import expand_messages
from personas.data.readers import (
    MESSAGES_COLUMNS,
    PROMPT_COLUMNS,
    RESPONSE_COLUMNS,
    is_missing,
    list_rows,
    read_table,
)
from personas.data.responses import Responses
from personas.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["Prompts", "load_prompts"]

@dataclass
class Prompts:
    """Prompts, and the responses to teacher-force when there are any; labels are not needed for diffing."""

    prompts: list[str]
    responses: list[str] | None
    ids: list[str]
    source: str
    extra: Any = field(default=None, repr=False)  # the other input columns (a DataFrame), e.g. labels

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def hash(self) -> str:
        digest = hashlib.sha256(b"personas.prompts.v1")
        responses = self.responses or [None] * len(self)
        for row in zip(self.ids, self.prompts, responses, strict=True):
            digest.update(json.dumps(row, ensure_ascii=False).encode("utf-8"))
        return digest.hexdigest()

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "n": len(self), "has_responses": self.responses is not None,
                "dataset_hash": self.hash}


def load_prompts(
    source: Any, *, prompt_column: str | None = None, response_column: str | None = None
) -> Prompts:
    """Read prompts (and responses, when present) without needing labels.

    ``source``: a ``.txt`` file (one prompt per line), a ``.jsonl``/``.json``/``.csv``/``.tsv``/``.parquet`` file, a
    DataFrame, a list of prompt strings, a `personas.data.Responses`, or `Prompts` (returned as they are).
    Columns: ``prompt_column`` or the first of
    prompt/question/user/input; ``response_column`` or the first of response/answer/completion/output (optional);
    ``id`` when present; chat-format rows (a ``messages`` column of role/content turns) give the last user turn and
    the assistant's answer. Rows with an empty prompt are an error, and so is a table without rows; a file whose
    responses are all missing is read as prompts only.
    """
    if isinstance(source, Prompts):
        return source
    if isinstance(source, Responses):
        return Prompts(source.prompts, source.texts, source.ids, source.source, extra=source.frame)
    if isinstance(source, (list, tuple)):
        if not all(isinstance(p, str) for p in source):
            raise DataError("load_prompts got a list whose items are not all strings; expected a list of prompts.")
        return Prompts(list(source), None, [str(i) for i in range(len(source))], f"list ({len(source)} prompts)")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise DataError(f"prompts file {str(path)!r} does not exist; expected a .txt, .jsonl, .csv or .parquet file.")
        suffix = path.suffix.lower()
        description = str(path.resolve())
        if suffix == ".txt":
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            if not lines:
                raise DataError(f"{path} has no prompts; expected one prompt per line.")
            return Prompts(lines, None, [str(i) for i in range(len(lines))], description)
        frame = read_table(path)
    elif isinstance(source, pd.DataFrame):
        frame, description = source, f"DataFrame ({len(source)} rows)"
    else:
        raise DataError(f"load_prompts got a {type(source).__name__}; expected a file path, a DataFrame, a list of "
                        "prompts or a Responses.")
    return _prompts_from_frame(frame, description, prompt_column, response_column)


def _prompts_from_frame(frame, description: str, prompt_column: str | None, response_column: str | None) -> Prompts:
    if len(frame) == 0:
        raise DataError(f"{description} has no rows (columns: {list(frame.columns)}); expected one row per prompt "
                        "(and its response).")
    named = (prompt_column, response_column, *PROMPT_COLUMNS, *RESPONSE_COLUMNS)
    if not any(c in frame.columns for c in named if c):
        messages = next((c for c in MESSAGES_COLUMNS if c in frame.columns), None)
        if messages is not None:  # chat-format rows: the last user turn and the assistant's answer to it
            frame = expand_messages(frame, messages, description)

    def pick(explicit: str | None, names: Sequence[str], role: str, required: bool) -> str | None:
        if explicit is not None:
            if explicit not in frame.columns:
                raise DataError(f"{description} has no column {explicit!r} for the {role}; columns: {list(frame.columns)}.")
            return explicit
        for name in names:
            if name in frame.columns:
                return name
        if required:
            raise DataError(f"{description} has no {role} column; expected one of {list(names)} (columns: "
                            f"{list(frame.columns)}). Name it with prompt_column=.")
        return None

    p_col = pick(prompt_column, PROMPT_COLUMNS, "prompt", True)
    r_col = pick(response_column, RESPONSE_COLUMNS, "response", False)
    prompts = ["" if is_missing(v) else str(v) for v in frame[p_col].tolist()]
    empty = [i for i, p in enumerate(prompts) if not p.strip()]
    if empty:
        raise DataError(f"{description}: {list_rows(empty)} have an empty {p_col!r}; every row needs a prompt.")
    responses = None
    if r_col is not None:
        values = frame[r_col].tolist()
        missing = [i for i, v in enumerate(values) if is_missing(v) or not str(v).strip()]
        if len(missing) == len(values):
            logger.info("%s: column %r is empty; reading prompts only", description, r_col)
        elif missing:
            raise DataError(f"{description}: {list_rows(missing)} have no {r_col!r} while others do; give every row a "
                            "response, or none (then responses are generated).")
        else:
            responses = [str(v) for v in values]
    ids = [str(v) for v in frame["id"].tolist()] if "id" in frame.columns else [str(i) for i in range(len(frame))]
    return Prompts(prompts, responses, ids, description, extra=frame)


