"""Reading tables of responses: one list of accepted columns, one reader per file kind, and row-listing helpers.

`read_table` turns a ``.jsonl``/``.ndjson``, ``.json``, ``.csv``/``.tsv`` or ``.parquet`` file (the text kinds also
compressed: ``.gz``, ``.bz2``, ``.xz``) into a DataFrame with clear errors (the line or rows at fault, what was expected). The column names below are the ones every
reader of responses or prompts accepts (`personas.data.responses`, `personas.data.prompts`), in order of
preference, when the user names none.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import numbers
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from personas.config import DataConfig
from personas.errors import DataError

#: Accepted column names, in order of preference, when `DataConfig` names none.
PROMPT_COLUMNS = ("prompt", "question", "user", "input")
RESPONSE_COLUMNS = ("response", "answer", "completion", "output")
#: Chat-format columns read when there are no prompt/response columns (see `_expand_messages`).
MESSAGES_COLUMNS = ("messages", "conversation", "conversations")
LABEL_COLUMNS = ("label",)
GROUP_COLUMNS = ("group", "question_id")
ID_COLUMN = "id"


#: File suffix -> reader.
SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


#: Compression suffix -> opener (text kinds only: ``answers.csv.gz``, ``chats.jsonl.xz``).
COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def file_kind(path: Path) -> tuple[str | None, str | None]:
    """(reader kind, compression suffix) of a file name: ``a.csv.gz`` -> ("csv", ".gz"); an unknown kind -> None."""
    compression = path.suffix.lower() if path.suffix.lower() in COMPRESSIONS else None
    suffix = Path(path.stem).suffix.lower() if compression else path.suffix.lower()
    return SUFFIXES.get(suffix), compression


def _open_text(path: Path, compression: str | None):
    return COMPRESSIONS[compression](path, "rt", encoding="utf-8") if compression else path.open(encoding="utf-8")


_CSV_NA = ["", "NA", "N/A", "n/a", "NaN", "nan", "-NaN", "-nan", "null", "NULL", "None", "#N/A"]
_MAX_LISTED = 10


def read_table(path: str | os.PathLike, config: DataConfig | None = None) -> pd.DataFrame:
    """Read a .jsonl/.json/.csv/.tsv/.parquet file of rows (text columns kept as text), with clear errors."""
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"No file at {str(path)!r} (absolute: {str(path.resolve())!r}). Expected a .jsonl, .json, .csv or "
            ".parquet file of responses; check the path."
        )
    if path.is_dir():
        raise DataError(
            f"{str(path)!r} is a folder; expected a .jsonl, .json, .csv or .parquet file inside it."
        )
    kind, compression = file_kind(path)
    if kind is None or (kind == "parquet" and compression):
        raise DataError(
            f"Cannot read {path.name!r}: its suffix {''.join(path.suffixes[-2:]) or '(none)'!r} is not one of "
            f"{sorted(SUFFIXES)} (the text kinds may also end in {', '.join(COMPRESSIONS)}). Rename or convert the "
            "file, or read it with pandas and pass the DataFrame."
        )
    try:
        if kind == "jsonl":
            return _read_jsonl(path, compression)
        if kind == "json":
            return _read_json(path, compression)
        if kind in ("csv", "tsv"):
            return _read_csv(path, config or DataConfig(), sep="\t" if kind == "tsv" else ",")
        return pd.read_parquet(path)
    except DataError:
        raise
    except (OSError, EOFError, lzma.LZMAError, ValueError, UnicodeDecodeError, ImportError,
            pd.errors.ParserError) as exc:  # a truncated or mislabelled archive raises EOFError / OSError
        raise DataError(
            f"Could not read {str(path)!r} as {kind}: {exc}. Check that the file is complete and really {kind}."
        ) from exc


def _read_jsonl(path: Path, compression: str | None = None) -> pd.DataFrame:
    records = []
    with _open_text(path, compression) as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{str(path)!r}, line {line_number}: not valid JSON ({_json_reason(exc)} at column "
                    f"{exc.colno}). Expected one JSON object per line; fix or remove that line."
                ) from exc
            if not isinstance(record, dict):
                raise DataError(
                    f"{str(path)!r}, line {line_number}: holds a JSON {type(record).__name__}; expected an object "
                    'such as {"prompt": "...", "response": "...", "label": "misaligned"}.'
                )
            records.append(record)
    return pd.DataFrame(records)


def _json_reason(exc: json.JSONDecodeError) -> str:
    """The decoder's message without its trailing "at" ("Unterminated string starting at"), to be followed by one."""
    return exc.msg.removesuffix(" at")


def _read_json(path: Path, compression: str | None = None) -> pd.DataFrame:
    with _open_text(path, compression) as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{str(path)!r} is not valid JSON ({_json_reason(exc)} at line {exc.lineno}, column {exc.colno}). "
                "If it holds one object per line, name it .jsonl."
            ) from exc
    if isinstance(data, list):
        bad = [i for i, record in enumerate(data) if not isinstance(record, dict)]
        if bad:
            raise DataError(
                f"{str(path)!r} is a JSON list, but {list_rows(bad)} are not objects; expected a list of records "
                'such as [{"prompt": "...", "response": "...", "label": "misaligned"}, ...].'
            )
        return pd.DataFrame(data)
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        lengths = {k: len(v) for k, v in data.items()}
        if len(set(lengths.values())) > 1:
            raise DataError(
                f"{str(path)!r} holds columns of different lengths {lengths}; expected equal lengths."
            )
        return pd.DataFrame(data)
    raise DataError(
        f"{str(path)!r} holds a JSON {type(data).__name__}; expected a list of records "
        '([{"prompt": ..., "response": ..., "label": ...}, ...]) or an object of equal-length columns.'
    )


def _read_csv(path: Path, config: DataConfig, sep: str) -> pd.DataFrame:
    """Read text, id and group columns as str, keeping 'NA' or 'None' answers as text; other columns as usual."""
    header = [str(c) for c in pd.read_csv(path, sep=sep, nrows=0).columns]
    text = {*PROMPT_COLUMNS, *RESPONSE_COLUMNS, *GROUP_COLUMNS, ID_COLUMN}
    text |= {c for c in (config.prompt_column, config.response_column, config.group_column) if c}
    return pd.read_csv(
        path,
        sep=sep,
        dtype={c: str for c in header if c in text},
        keep_default_na=False,
        na_values={c: _CSV_NA for c in header if c not in text},
    )


def is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, (float, np.floating)):
        return bool(np.isnan(value))
    return False


def as_key(value: Any) -> str | None:
    """A stable string for an id or group: 7, 7.0 and '7' all give '7'."""
    if is_missing(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real) and float(value).is_integer():
        return str(int(value))
    return str(value)


def list_rows(positions: Iterable[Any]) -> str:
    """'3 rows (0, 4, 7)', listing the first ten."""
    positions = [int(p) for p in positions]
    shown = ", ".join(str(p) for p in positions[:_MAX_LISTED])
    more = f", ... and {len(positions) - _MAX_LISTED} more" if len(positions) > _MAX_LISTED else ""
    return f"{len(positions)} {'row' if len(positions) == 1 else 'rows'} ({shown}{more})"


def preview(values: Iterable[Any], limit: int = 5) -> str:
    values = [v.item() if isinstance(v, np.generic) else v for v in values]
    shown = ", ".join(repr(v) for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
