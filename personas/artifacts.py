"""Run folders and their files: atomic writes, checksummed tables, and the one manifest header.

Every artifact records where it came from: `manifest_header(kind)` gives the ``kind``, ``created_at`` and
library ``versions`` that open every manifest (rank, detect, diff, steer, cache, train-sae, examples). Writes go
to a temporary file in the same folder and are renamed over the target when complete, so a crash never leaves
half a file behind.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from personas.errors import PersonasError

#: The files of a run folder (`personas rank`, `detect`, `diff`, `report`); every run folder has a manifest.
MANIFEST_FILE = "manifest.json"
RANKING_FILE = "ranking.csv"
EXAMPLES_FILE = "examples.json"
REPORT_FILE = "report.html"
EVAL_FILE = "eval.json"
SCORES_FILE = "test_scores.csv"
DIFF_FILE = "diff.csv"

_LIBRARIES = ("personas", "torch", "transformer-lens", "sae-lens", "transformers", "numpy", "scipy", "pandas",
              "scikit-learn")


def library_versions() -> dict[str, str | None]:
    """Python's version and the installed versions of the libraries an artifact depends on (None: not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def manifest_header(kind: str) -> dict[str, Any]:
    """The fields every manifest starts with: ``kind`` (e.g. ``"personas.rank"``), ``created_at``, ``versions``."""
    return {"kind": kind, "created_at": now(), "versions": library_versions()}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temporary file in the same folder, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode a plain open() would
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically (numpy scalars and arrays and paths are converted)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def output_dir(out: str | os.PathLike) -> Path:
    """Create the folder a job writes into; refuse a path that is an existing file."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PersonasError(f"--out {str(out)!r} is a file; expected a folder to write the results into.")
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_csv(path: str | os.PathLike, frame: Any) -> dict[str, str]:
    """Write a DataFrame as CSV atomically; return its checksum entry for a manifest's ``files``."""
    text = frame.to_csv(index=False)
    atomic_write_text(path, text)
    return {"sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
