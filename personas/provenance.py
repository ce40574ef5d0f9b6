"""Where an artifact came from, and writes that never leave half a file behind."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

_LIBRARIES = ("personas", "torch", "transformer-lens", "sae-lens", "transformers", "numpy", "scipy", "pandas")


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


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
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    import numpy as np

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
    from personas.errors import PersonasError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PersonasError(f"--out {str(out)!r} is a file; expected a folder to write the results into.")
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_csv(path: str | os.PathLike, frame: Any) -> dict[str, str]:
    """Write a DataFrame as CSV atomically; return its checksum entry for a manifest's ``files``."""
    import hashlib

    text = frame.to_csv(index=False)
    atomic_write_text(path, text)
    return {"sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
