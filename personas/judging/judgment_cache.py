"""The on-disk caches of replies from an LLM over an API: judgments (`JudgmentCache`, the API judge's: one row per
(judge, prompt, answer, metric)) and text replies (`ReplyCache`, the API explainer's and scorers': one row per
(model, prompt version, kind of request, request text)). One SQLite file each.

A judgment is keyed by the sha256 of (cache format, judge model, prompt version, metric, question, answer), so a
rerun of the same answers makes no request and a killed run resumes with the answers it had not judged yet: each
judgment is committed as soon as it arrives. The file holds keys (hashes), scores, verdicts and how the score was
read (``logprobs`` or ``text``), never the text of the answers, the server's address or an API key. The server
is not part of the key: two servers that serve different weights under one model name would share judgments, so
give them different cache folders.

A `ReplyCache` keeps the text of each reply (an explanation, a list of verdicts) and the tokens the server counted
for it, keyed by the sha256 of its inputs; like the judgments, never the server's address or a key.

Only the thread that opened a cache writes to it (the API judge's worker threads hand their results
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

__all__ = ["CACHE_FILE", "REPLY_CACHE_FILE", "Judgment", "JudgmentCache", "Reply", "ReplyCache", "judgment_key",
           "reply_key"]

CACHE_FILE = "api_judgments.sqlite"
REPLY_CACHE_FILE = "api_replies.sqlite"
_FORMAT = "personas.judgment.v1"
_REPLY_FORMAT = "personas.reply.v1"
_SCHEMA = """CREATE TABLE IF NOT EXISTS judgments (
    key TEXT PRIMARY KEY, model TEXT NOT NULL, prompt_version TEXT NOT NULL, metric TEXT NOT NULL,
    score REAL, verdict TEXT NOT NULL, mode TEXT NOT NULL, mass REAL)"""
_REPLY_SCHEMA = """CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY, model TEXT NOT NULL, prompt_version TEXT NOT NULL, kind TEXT NOT NULL,
    text TEXT NOT NULL, prompt_tokens INTEGER, completion_tokens INTEGER)"""


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


def _connect(path: Path, schema: str, who: str) -> sqlite3.Connection:
    """The SQLite database at ``path`` with ``schema``, or an error naming the file and the fix."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(path))
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(schema)
        db.commit()
        return db
    except sqlite3.DatabaseError as exc:
        raise CacheError(
            f"the {who}'s cache {str(path)!r} cannot be opened as SQLite ({exc}). Delete the file (what it held "
            "will be asked for again) or give another cache folder (cache_dir= / --cache-dir)."
        ) from exc
    except OSError as exc:
        raise PersonasError(
            f"cannot create the {who}'s cache folder {str(path.parent)!r} ({exc.strerror or exc}). Give a "
            "writable cache folder (cache_dir= / --cache-dir)."
        ) from exc


class JudgmentCache:
    """Judgments in ``folder/api_judgments.sqlite``: `get_many` before the requests, `put` as each one arrives."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder).expanduser() / CACHE_FILE
        self._db = _connect(self.path, _SCHEMA, "judge")

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


@dataclass(frozen=True)
class Reply:
    """The text of one reply and the tokens the server counted for it (None: not reported)."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def reply_key(model: str, prompt_version: str, kind: str, request: str) -> str:
    """The cache key of one request: sha256 over its inputs (never the server's address or a key)."""
    record = json.dumps([_REPLY_FORMAT, model, prompt_version, kind, request], ensure_ascii=False)
    return hashlib.sha256(record.encode("utf-8")).hexdigest()


class ReplyCache:
    """Text replies in ``folder/api_replies.sqlite``: `get_many` before the requests, `put` as each one arrives."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder).expanduser() / REPLY_CACHE_FILE
        self._db = _connect(self.path, _REPLY_SCHEMA, "explainer")

    def get_many(self, keys: list[str]) -> dict[str, Reply]:
        """The cached replies among ``keys``."""
        found: dict[str, Reply] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, text, prompt_tokens, completion_tokens FROM replies WHERE key IN ({marks})", chunk
            ).fetchall()
            for key, text, prompt_tokens, completion_tokens in rows:
                found[key] = Reply(text, prompt_tokens, completion_tokens)
        return found

    def put(self, key: str, model: str, prompt_version: str, kind: str, reply: Reply) -> None:
        """Store one reply and commit it (a run killed after this keeps it)."""
        try:
            self._db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (key, model, prompt_version, kind, reply.text, reply.prompt_tokens,
                              reply.completion_tokens))
            self._db.commit()
        except sqlite3.Error as exc:
            raise CacheError(f"could not write to the explainer's cache {str(self.path)!r} ({exc}); free disk space "
                             "or give another cache folder (cache_dir= / --cache-dir).") from exc

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __enter__(self) -> ReplyCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
