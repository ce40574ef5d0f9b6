"""The monitor's record and alerts: an append-only event log, and a webhook that never holds anything up.

`EventLog` appends one JSON object per line to a file opened with ``O_APPEND``; each line (with its newline) is
written by one ``write(2)`` under a lock, so lines never interleave, and a line the call returned from is in the
kernel: a process killed with SIGKILL afterwards loses nothing of it (``fsync=True``, the default, also puts it on
the disk before the call returns, for a machine that loses power). The server appends a flagged answer's event
*before* it answers the client, so every answer a client saw flagged is in the log. A log whose last line has no
newline (a write cut by a full disk or a crash of the machine) is closed with one when opened again, so the torn
line stays alone; `read_events` reads the whole lines and counts the others.

`Webhook` POSTs events as JSON to a URL from one background thread: a bounded queue (a full queue drops the event
and counts it; ``on_failure`` hears of every event dropped or given up), a timeout per request, and bounded retries with exponential back-off; nothing the server does waits
for it, so a webhook that hangs or is dead costs generation nothing. Only the URL's scheme, host and path are ever
logged.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from personas.errors import PersonasError

logger = logging.getLogger(__name__)

__all__ = ["EventLog", "Webhook", "read_events"]


def _clean(value: Any) -> Any:
    """``value`` with non-finite floats as None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class EventLog:
    """Append-only JSON lines at ``path`` (created with mode 0600); see the module docstring."""

    def __init__(self, path: str | os.PathLike, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._lock = threading.Lock()
        self.n_written = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise PersonasError(f"cannot open the event log {str(self.path)!r} for appending: {exc.strerror or exc}. "
                                "Choose a writable --out folder.") from exc
        self.repaired = False
        size = os.fstat(self._fd).st_size
        if size:
            with open(self.path, "rb") as fh:
                fh.seek(size - 1)
                last = fh.read(1)
            if last != b"\n":
                os.write(self._fd, b"\n")
                self.repaired = True
                logger.warning("the event log %s ended in a partial line (a write cut short); it stays alone on its "
                               "line and readers skip it", self.path)

    def append(self, event: dict[str, Any]) -> None:
        """Write ``event`` as one whole line; returns when the line is in the file (and on disk with fsync)."""
        data = (json.dumps(_clean(event), ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n").encode()
        with self._lock:
            if self._fd is None:
                raise PersonasError(f"the event log {str(self.path)!r} is closed.")
            view = memoryview(data)
            while view:  # a regular file takes the whole line in one call; the loop only guards a short write
                written = os.write(self._fd, view)
                view = view[written:]
            if self.fsync:
                os.fsync(self._fd)
            self.n_written += 1

    def close(self) -> None:
        """Close the file (further appends raise)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def read_events(path: str | os.PathLike) -> tuple[list[dict[str, Any]], int]:
    """The events of a log, and the number of lines that are not a whole JSON object (torn or foreign)."""
    path = Path(path)
    if not path.is_file():
        raise PersonasError(f"no event log at {str(path)!r}; expected events.jsonl in a `personas serve --out` folder.")
    data = path.read_bytes()
    events, bad = [], 0
    lines = data.split(b"\n")
    tail = lines.pop()  # after the last newline: empty for a whole file, else a line without its newline
    if tail:
        bad += 1
    for line in lines:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            bad += 1
            continue
        if isinstance(event, dict):
            events.append(event)
        else:
            bad += 1
    return events, bad


def _display_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe to log."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", "")) + (
        f" (port {parts.port})" if parts.port else "")


class Webhook:
    """POST events to ``url`` in the background (see the module docstring); ``sent``, ``failed`` (given up after
    the retries) and ``dropped`` (queue full) count them."""

    def __init__(self, url: str, *, timeout: float = 5.0, retries: int = 3, backoff: float = 0.5,
                 max_queue: int = 1000, on_failure: Any = None) -> None:
        if not str(url).startswith(("http://", "https://")):
            raise PersonasError(f"webhook URL {_display_url(str(url))!r}; expected an http:// or https:// URL.")
        self.url, self.timeout, self.retries, self.backoff = url, float(timeout), int(retries), float(backoff)
        self.sent = self.failed = self.dropped = 0
        self.on_failure = on_failure  # called with "failed" or "dropped"
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=max_queue)
        self._stop = threading.Event()
        self._busy = False
        self._thread = threading.Thread(target=self._run, name="personas-webhook", daemon=True)
        self._thread.start()

    def post(self, event: dict[str, Any]) -> bool:
        """Queue ``event``; False (and counted as dropped) when the queue is full. Never blocks."""
        try:
            self._queue.put_nowait(_clean(event))
            return True
        except queue.Full:
            self.dropped += 1
            if self.on_failure is not None:
                self.on_failure("dropped")
            logger.warning("webhook %s is behind (%d events queued): an event was dropped",
                           _display_url(self.url), self._queue.qsize())
            return False

    @property
    def pending(self) -> int:
        """Events waiting to be sent."""
        return self._queue.qsize()

    def _send(self, body: bytes) -> None:
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "personas"})
        with urllib.request.urlopen(request, timeout=self.timeout) as reply:  # noqa: S310 (the operator's URL)
            reply.read(1 << 16)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                event = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if event is None:
                break
            self._busy = True
            try:
                self._deliver(json.dumps(event, ensure_ascii=False).encode("utf-8"))
            finally:
                self._busy = False

    def _deliver(self, body: bytes) -> None:
        for attempt in range(self.retries + 1):
            try:
                self._send(body)
                self.sent += 1
                return
            except (OSError, urllib.error.URLError, ValueError) as exc:
                if attempt == self.retries:
                    self.failed += 1
                    if self.on_failure is not None:
                        self.on_failure("failed")
                    logger.warning("webhook %s failed %d times (%s); the event is in the event log only",
                                   _display_url(self.url), attempt + 1, type(exc).__name__)
                elif self._stop.wait(self.backoff * 2 ** attempt):
                    return

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread (events still queued are not sent: they are in the event log)."""
        self._stop.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until the queue is empty (for tests and a clean shutdown); True when it emptied in time."""
        deadline = time.monotonic() + timeout
        while (self._queue.qsize() or self._busy) and time.monotonic() < deadline:
            time.sleep(0.02)
        return not (self._queue.qsize() or self._busy)
