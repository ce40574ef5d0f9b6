"""One writer per cache folder: an exclusive lock file that names its holder and is taken over when stale.

`CacheLock(folder)` creates ``folder/.lock`` holding ``{"pid": ..., "host": ...}`` of the job that writes the cache.
Where ``fcntl.flock`` works (Linux, macOS; NFS emulates it with POSIX locks) the file is also flock-ed for the
job's lifetime: the kernel releases that lock when the process dies, however it dies, so a lock file left by a
killed job is stale exactly when nobody holds its flock. Elsewhere (Windows, file systems without locks) the
file is created with ``O_EXCL`` and a lock of a process that no longer runs *on this host* is stale; a lock of
another host cannot be checked and is reported with its holder. A second job fails at once with a `CacheError`
that names the holder; it never waits.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from personas.errors import CacheError

logger = logging.getLogger(__name__)

#: The lock file inside a cache folder (hidden: a folder holding only it still counts as empty).
LOCK_FILE = ".lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except OSError:
        return False
    return True


class CacheLock:
    """An exclusive, non-blocking lock on a cache folder for one writing job (a context manager)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None
        self._holder = {"pid": os.getpid(), "host": socket.gethostname()}
        self._use_flock = fcntl is not None  # turned off when the file system refuses flock

    def __enter__(self) -> CacheLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock or raise `CacheError` naming the job that holds it."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            for _ in range(5):  # retries only when another job removed or replaced the file in between
                if self._try_flock() or self._try_exclusive():
                    return
        except OSError as exc:  # read-only, under a file, full disk: before any capture runs
            raise CacheError(
                f"cannot write the cache folder {self.folder} ({type(exc).__name__}: {exc.strerror or exc}); expected "
                "a folder this job can create and write. Choose another --out."
            ) from exc
        raise CacheError(f"could not lock {self.folder}: its lock file {self.path} keeps changing; another job is "
                         "starting or stopping there. Retry when it is done.")

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            if self._owns_file():
                self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    # -- with flock ---------------------------------------------------------------------------------------------
    def _try_flock(self) -> bool:
        """True when locked; False to retry; raises when held. Falls through to O_EXCL where flock is missing."""
        if not self._use_flock:
            return False
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise self._held(self._read_holder()) from None
            logger.debug("flock is not supported on %s (%s); using an exclusive lock file", self.folder, exc)
            self._use_flock = False
            if self._read_holder() is None:  # the empty file our open just created
                self.path.unlink(missing_ok=True)
            return False
        # the file may have been unlinked by its previous holder between our open and our flock: lock the live one
        try:
            same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return False
        previous = _parse(os.pread(fd, 4096, 0))
        if previous and previous.get("pid") != os.getpid():
            logger.warning("taking over the stale lock of %s (pid %s on %s, no longer running)", self.folder,
                           previous.get("pid"), previous.get("host"))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self._holder).encode(), 0)
        self._fd = fd
        return True

    # -- without flock ------------------------------------------------------------------------------------------
    def _try_exclusive(self) -> bool:
        if self._use_flock:
            return False
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = self._read_holder()
            if holder and holder.get("host") == self._holder["host"] and isinstance(holder.get("pid"), int) \
                    and not _pid_alive(holder["pid"]):
                logger.warning("removing the stale lock of %s (pid %s on this host, no longer running)", self.folder,
                               holder["pid"])
                self.path.unlink(missing_ok=True)
                return False
            raise self._held(holder) from None
        os.write(fd, json.dumps(self._holder).encode())
        self._fd = fd
        return True

    # -- helpers ------------------------------------------------------------------------------------------------
    def _owns_file(self) -> bool:
        try:
            return os.fstat(self._fd).st_ino == os.stat(self.path).st_ino
        except (FileNotFoundError, TypeError):
            return False

    def _read_holder(self) -> dict[str, Any] | None:
        try:
            return _parse(self.path.read_bytes())
        except OSError:
            return None

    def _held(self, holder: dict[str, Any] | None) -> CacheError:
        who = (f"pid {holder.get('pid')} on host {holder.get('host')}" if holder else "another job (its lock file "
               "names no holder yet)")
        stale = ("" if self._use_flock else
                 f" If that job is gone (another host cannot be checked from here), delete {self.path}.")
        return CacheError(
            f"the cache folder {self.folder} is locked by a running cache job: {who}. Two jobs writing one cache "
            f"would mix their shards; wait for that job to finish, stop it, or use another --out folder.{stale}"
        )


def _parse(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data.decode() or "null")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None
