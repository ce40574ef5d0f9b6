"""Run folders and their files: atomic writes, checksummed tables, and the one manifest header.

Every artifact records where it came from: `manifest_header(kind)` gives the ``kind``, ``created_at`` and
library ``versions`` that open every manifest (rank, detect, diff, steer, cache, train-sae, examples). Writes go
to a temporary file in the same folder and are renamed over the target when complete, so a crash never leaves
half a file behind; a write that fails (full disk, read-only folder) raises a `PersonasError`.

Every file of a run folder belongs to one run. `RUN_LAYOUTS` names, per kind of run, the file that identifies it
(its manifest) and every other file such a run may write. `check_output_dir` says, before any work is done,
whether a folder can take a run of that kind (a folder, writable, with room, not holding another kind of run);
`output_dir` then creates it and removes the files a previous run of the same kind left (those its manifest lists
and the layout's names), so that no file of an older run survives beside the new one. Other files are left alone;
a folder that holds another kind of run, an unreadable manifest, or run files without a manifest is refused.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from personas.errors import PersonasError

#: The files of a run folder (`personas rank`, `detect`, `diff`, `report`, `judge`); every run folder has a manifest.
MANIFEST_FILE = "manifest.json"
RANKING_FILE = "ranking.csv"
RANKING_PARQUET = "ranking.parquet"
EXAMPLES_FILE = "examples.json"
TOKEN_CODES_FILE = "token_codes.npz"
CARDS_DIR = "cards"
REPORT_FILE = "report.html"
EVAL_FILE = "eval.json"
SCORES_FILE = "test_scores.csv"
DIFF_FILE = "diff.csv"
RESPONSES_FILE = "responses.jsonl"
DOSE_RESPONSE_FILE = "dose_response.csv"
GENERATIONS_FILE = "generations.csv"
SCREENING_FILE = "screening.csv"
CONFIRMATION_FILE = "confirmation.csv"
JUDGED_FILE = "judged.jsonl"
#: Written into a rank folder by `personas explain`: each latent's explanations and their scores.
EXPLANATIONS_FILE = "explanations.csv"
#: Free space below which a folder counts as full: no run writes into it.
MIN_FREE_BYTES = 1 << 20


@dataclass(frozen=True)
class RunLayout:
    """The files of one kind of run folder: ``manifest`` (its ``kind`` field names the run) and the others."""

    kind: str
    manifest: str
    files: tuple[str, ...]


#: Run kind -> its layout. Folders (``detector``) are written by `PersonaDetector.save` and cleaned as a whole.
RUN_LAYOUTS = {
    layout.kind: layout
    for layout in (
        RunLayout("personas.rank", MANIFEST_FILE, (RANKING_FILE, RANKING_PARQUET, EXAMPLES_FILE, REPORT_FILE,
                                                    TOKEN_CODES_FILE, CARDS_DIR, EXPLANATIONS_FILE)),
        RunLayout("personas.detect", EVAL_FILE, (SCORES_FILE, "detector", "dense_baseline")),
        RunLayout("personas.diff", MANIFEST_FILE, (DIFF_FILE, RESPONSES_FILE)),
        RunLayout("personas.steer", MANIFEST_FILE, (DOSE_RESPONSE_FILE, GENERATIONS_FILE)),
        RunLayout("personas.validate", MANIFEST_FILE, (SCREENING_FILE, CONFIRMATION_FILE, GENERATIONS_FILE)),
        RunLayout("personas.judge", MANIFEST_FILE, (JUDGED_FILE,)),
        # the screen's cached base answers (base_answers.jsonl) are kept from run to run on purpose
        RunLayout("personas.screen", MANIFEST_FILE, ("screen.csv",)),
        RunLayout("personas.sweep", MANIFEST_FILE, ("sweep.csv", "onset.csv", "answers.jsonl", "sweep.png")),
        # a calibrated monitor: the detector's files beside its calibration record (personas.monitoring)
        RunLayout("personas.monitor", "monitor.json", ("detector.json", "detector.safetensors",
                                                       "calibration_answers.jsonl")),
    )
}

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
    """Write to a temporary file in the same folder, then rename it over ``path``.

    Raises `PersonasError` when the folder cannot be written (read-only, under a file, full disk); the target is
    then left as it was and no temporary file remains.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode a plain open() would
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise PersonasError(
            f"could not write {str(path)!r} ({len(data)} bytes): {_os_reason(exc)}. {path.name} was not changed; "
            "free disk space, make the folder writable, or choose another output folder."
        ) from exc
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full (no space left on device)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (the folder is read-only for this user)"
    if exc.errno == errno.EROFS:
        return "the file system is read-only"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return "a file stands where a folder is needed"
    return f"{type(exc).__name__}: {exc.strerror or exc}"


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


def check_output_dir(out: str | os.PathLike, kind: str | None = None) -> Path:
    """Raise `PersonasError` unless ``out`` can take a run of ``kind``; change nothing. Call it before the work.

    ``out`` (or, when it does not exist yet, the nearest folder above it) must be a writable folder with at least
    `MIN_FREE_BYTES` free, and nothing on the way may be a file. With a ``kind`` of `RUN_LAYOUTS`, an existing
    folder must not hold another kind of run, an unreadable manifest, or run files without a manifest.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PersonasError(f"--out {str(out)!r} is a file; expected a folder to write the results into.")
    base = out
    while not base.exists():
        if base.parent == base:
            break
        base = base.parent
    if not base.is_dir():
        raise PersonasError(
            f"--out {str(out)!r} lies under {str(base)!r}, which is a file, not a folder; choose a folder path."
        )
    _probe_writable(base, out)
    if kind is not None and out.is_dir():
        _stale_entries(out, kind)
    return out


def _probe_writable(folder: Path, out: Path) -> None:
    """Write and remove a small file in ``folder``: the only test of writability that holds for every user."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if free is not None and free < MIN_FREE_BYTES:
        raise PersonasError(
            f"cannot write into {str(out)!r}: the disk holding {str(folder)!r} is full ({free} bytes free). "
            "Free some space or choose another output folder."
        )
    probe = None
    try:
        fd, probe = tempfile.mkstemp(prefix=".personas-write-check.", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            fh.write(b"personas")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise PersonasError(
            f"cannot write into {str(out)!r}: writing in {str(folder)!r} failed ({_os_reason(exc)}). "
            "Make the folder writable, free disk space, or choose another output folder."
        ) from exc
    finally:
        if probe is not None:
            Path(probe).unlink(missing_ok=True)


def _read_kind(path: Path, strict: bool = True) -> str | None:
    """The ``kind`` of a manifest; an unreadable one raises when ``strict`` (it is this run's manifest name)."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        if not strict:
            return None
        raise PersonasError(
            f"{str(path)!r} cannot be read as a manifest ({type(exc).__name__}: {exc}), so the files beside it "
            "cannot be told apart from a new run's. Remove the folder's contents or choose another output folder."
        ) from exc
    return manifest.get("kind") if isinstance(manifest, dict) else None


def _listed_files(path: Path) -> list[str]:
    """The plain file names a manifest's ``files`` lists (paths that leave the folder are ignored)."""
    try:
        files = json.loads(path.read_text(encoding="utf-8")).get("files") or {}
    except (OSError, ValueError, AttributeError):
        return []
    names = files if isinstance(files, (dict, list)) else []
    return [str(n).rstrip("/") for n in names if str(n).rstrip("/") and "/" not in str(n).rstrip("/")
            and "\\" not in str(n) and str(n).rstrip("/") not in (".", "..")]


def _stale_entries(out: Path, kind: str) -> list[Path]:
    """The entries of ``out`` a previous run of ``kind`` left; raise when the folder holds something else."""
    layout = RUN_LAYOUTS.get(kind)
    if layout is None:
        raise PersonasError(f"unknown run kind {kind!r}; expected one of {sorted(RUN_LAYOUTS)}.")
    manifest = out / layout.manifest
    for other in {lay.manifest for lay in RUN_LAYOUTS.values()}:
        path = out / other
        if path.is_file():
            found = _read_kind(path, strict=other == layout.manifest)
            if found != kind and (other == layout.manifest or found in RUN_LAYOUTS):
                raise PersonasError(
                    f"--out {str(out)!r} holds a {found!r} run ({other}), not a {kind!r} run; every file of a run "
                    "folder belongs to one run. Choose another output folder or empty this one."
                )
    present = [name for name in layout.files if (out / name).exists()]
    if not manifest.is_file():
        if present:
            raise PersonasError(
                f"--out {str(out)!r} holds {present} but no {layout.manifest}: files of an unfinished or foreign "
                f"run. Remove them, or choose another output folder."
            )
        return []
    names = dict.fromkeys([*layout.files, *_listed_files(manifest)])
    return [out / name for name in names if name != layout.manifest and (out / name).exists()]


def output_dir(out: str | os.PathLike, kind: str | None = None) -> Path:
    """Create the folder a job writes into and, for a ``kind`` of `RUN_LAYOUTS`, clear the previous run's files.

    Checks as `check_output_dir` does; then removes what an earlier run of the same kind left (the files its
    manifest lists and the layout's names), except the manifest itself, which the new run's replaces last. A report
    of the folder therefore never mixes two runs: a crash before the new manifest is written leaves files whose
    checksums do not match the old manifest, which `personas report` refuses.
    """
    out = check_output_dir(out, kind)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PersonasError(f"cannot create the folder {str(out)!r}: {_os_reason(exc)}.") from exc
    if kind is not None:
        for path in _stale_entries(out, kind):
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except OSError as exc:
                raise PersonasError(
                    f"cannot remove {str(path)!r}, a file of the previous run in {str(out)!r}: {_os_reason(exc)}."
                ) from exc
    return out


def write_csv(path: str | os.PathLike, frame: Any) -> dict[str, str]:
    """Write a DataFrame as CSV atomically; return its checksum entry for a manifest's ``files``."""
    text = frame.to_csv(index=False)
    atomic_write_text(path, text)
    return {"sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
