"""The on-disk cache of an API judge's judgments: one SQLite file, one row per (judge, prompt, answer, metric).

A judgment is keyed by the sha256 of (cache format, judge model, prompt version, metric, question, answer), so a
rerun of the same answers makes no request and a killed run resumes with the answers it had not judged yet: each
judgment is committed as soon as it arrives. The file holds keys (hashes), scores, verdicts and how the score was
read (``logprobs`` or ``text``), never the text of the answers, the server's address or an API key. The server
is not part of the key: two servers that serve different weights under one model name would share judgments, so
give them different cache folders.

Only the thread that opened a `JudgmentCache` writes to it (the API judge's worker threads hand their results
back); SQLite's write-ahead log lets two processes share one file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from personas.errors import CacheError, PersonasError

__all__ = ["CACHE_FILE", "Judgment", "JudgmentCache", "judgment_key"]

CACHE_FILE = "api_judgments.sqlite"
_FORMAT = "personas.judgment.v1"
_SCHEMA = """CREATE TABLE IF NOT EXISTS judgments (
    key TEXT PRIMARY KEY, model TEXT NOT NULL, prompt_version TEXT NOT NULL, metric TEXT NOT NULL,
    score REAL, verdict TEXT NOT NULL, mode TEXT NOT NULL, mass REAL)"""


@dataclass(frozen=True)
class Judgment:
    """One metric of one answer: ``score`` 0-100 (NaN: none), ``verdict`` ("" or a word such as REFUSAL), how the
    score was read (``mode``: "logprobs" or "text") and the probability mass on number tokens (NaN in text mode)."""

    score: float
    verdict: str = ""
    mode: str = "logprobs"
    mass: float = math.nan


def judgment_key(model: str, prompt_version: str, metric: str, question: str, answer: str) -> str:
    """The cache key of one judgment: sha256 over its inputs (never the server's address or a key)."""
    record = json.dumps([_FORMAT, model, prompt_version, metric, question, answer], ensure_ascii=False)
    return hashlib.sha256(record.encode("utf-8")).hexdigest()


class JudgmentCache:
    """Judgments in ``folder/api_judgments.sqlite``: `get_many` before the requests, `put` as each one arrives."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder).expanduser() / CACHE_FILE
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path))
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            self._db.commit()
        except sqlite3.DatabaseError as exc:
            raise CacheError(
                f"the judge's cache {str(self.path)!r} cannot be opened as SQLite ({exc}). Delete the file (the "
                "answers will be judged again) or give another cache folder (cache_dir= / --cache-dir)."
            ) from exc
        except OSError as exc:
            raise PersonasError(
                f"cannot create the judge's cache folder {str(self.path.parent)!r} ({exc.strerror or exc}). Give a "
                "writable cache folder (cache_dir= / --cache-dir)."
            ) from exc

    def get_many(self, keys: list[str]) -> dict[str, Judgment]:
        """The cached judgments among ``keys``."""
        found: dict[str, Judgment] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, score, verdict, mode, mass FROM judgments WHERE key IN ({marks})", chunk
            ).fetchall()
            for key, score, verdict, mode, mass in rows:
                found[key] = Judgment(math.nan if score is None else float(score), verdict, mode,
                                      math.nan if mass is None else float(mass))
        return found

    def put(self, key: str, model: str, prompt_version: str, metric: str, judgment: Judgment) -> None:
        """Store one judgment and commit it (a run killed after this keeps it)."""
        score = None if math.isnan(judgment.score) else float(judgment.score)
        mass = None if math.isnan(judgment.mass) else float(judgment.mass)
        try:
            self._db.execute("INSERT OR REPLACE INTO judgments VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (key, model, prompt_version, metric, score, judgment.verdict, judgment.mode, mass))
            self._db.commit()
        except sqlite3.Error as exc:
            raise CacheError(f"could not write to the judge's cache {str(self.path)!r} ({exc}); free disk space "
                             "or give another cache folder (cache_dir= / --cache-dir).") from exc

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM judgments").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __enter__(self) -> JudgmentCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
