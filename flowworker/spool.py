"""A bounded, durable, per-process file of reports the database could not take yet.

Each process appends to its own file and holds an exclusive `flock` on it while alive, so
after a crash or restart any process can adopt the files nobody holds and replay them. Lines
are fsync'ed before `append` returns: a terminal report in the spool survives the process.
Replays are safe to repeat because the upsert is idempotent.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

from flowworker.pending import PendingReport

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
ORPHAN_SCAN_INTERVAL = 10.0
_SUFFIX = ".spool.jsonl"


class Spool:
    def __init__(
        self, directory: Path, *, json_max_bytes: int, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.json_max_bytes = json_max_bytes
        self.dropped = 0
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._path: Path | None = None
        self._size = 0
        self._next_orphan_scan = 0.0
        self._orphans_seen = False

    def append(self, items: Sequence[PendingReport]) -> int:
        """Durably keep `items`; returns how many were kept (the rest did not fit)."""
        lines = [item.to_line(self.json_max_bytes) + "\n" for item in items]
        with self._lock:
            handle = self._own_file()
            kept = 0
            for line in lines:
                size = len(line.encode())
                if self._size + size > self.max_bytes:
                    self.dropped += 1
                    continue
                handle.write(line)
                self._size += size
                kept += 1
            handle.flush()
            os.fsync(handle.fileno())
        if kept < len(lines):
            log.error(
                "flowworker spool %s is full (%d bytes): dropped %d reports",
                self._path,
                self.max_bytes,
                len(lines) - kept,
            )
        return kept

    def has_backlog(self) -> bool:
        """Anything to replay? Looks for other processes' orphaned files at most every
        `ORPHAN_SCAN_INTERVAL` seconds, so that the common case costs nothing."""
        if self._size:
            return True
        now = time.monotonic()
        if now >= self._next_orphan_scan:
            self._next_orphan_scan = now + ORPHAN_SCAN_INTERVAL
            self._orphans_seen = any(True for _ in self._orphans(probe=True))
        return self._orphans_seen

    def count_backlog(self) -> int:
        """Reports waiting in this process's file (for `status`)."""
        with self._lock:
            if self._path is None or not self._path.exists():
                return 0
            with self._path.open() as handle:
                return sum(1 for _ in handle)

    def drain(self, write: Callable[[list[PendingReport]], None], batch_size: int = 500) -> int:
        """Replay the backlog in order through `write`; stop at its first exception (which
        propagates) and keep what was not written. Returns how many were written."""
        written = 0
        for path, handle, owned in self._backlogs():
            try:
                offset = 0
                batch: list[PendingReport] = []
                handle.seek(0)
                for line in iter(handle.readline, ""):
                    if not line.endswith("\n"):
                        break  # a torn last line from a crash mid-append: never acknowledged
                    batch.append(PendingReport.from_line(line))
                    offset += len(line.encode())
                    if len(batch) >= batch_size:
                        write(batch)
                        written += len(batch)
                        batch = []
                        self._forget_prefix(path, handle, offset, owned)
                        offset = 0
                if batch:
                    write(batch)
                    written += len(batch)
                self._forget_prefix(path, handle, offset, owned)
                if not owned:
                    self._orphans_seen = False
            finally:
                if not owned:
                    handle.close()
        return written

    def _forget_prefix(self, path: Path, handle: IO[str], offset: int, owned: bool) -> None:
        """Drop the first `offset` bytes (written already), keeping anything appended since."""
        with self._lock if owned else contextlib.nullcontext():
            handle.seek(offset)
            rest = handle.read()
            handle.seek(0)
            handle.truncate()
            handle.write(rest)
            handle.flush()
            os.fsync(handle.fileno())
            if owned:
                self._size = len(rest.encode())
            elif not rest:
                path.unlink(missing_ok=True)

    def _backlogs(self) -> Iterator[tuple[Path, IO[str], bool]]:
        yield from self._orphans(probe=False)
        if self._size and self._file is not None and self._path is not None:
            yield self._path, self._file, True

    def _orphans(self, probe: bool) -> Iterator[tuple[Path, IO[str], bool]]:
        """Spool files of processes that are gone (nobody holds their lock)."""
        if not self.directory.exists():
            return
        for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
            if path == self._path:
                continue
            try:
                handle = path.open("r+")
            except OSError:
                continue
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            if path.stat().st_size == 0:
                path.unlink(missing_ok=True)
                handle.close()
                continue
            if probe:
                handle.close()
                yield path, handle, False
                return
            yield path, handle, False

    def _own_file(self) -> IO[str]:
        if self._file is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}{_SUFFIX}"
            self._path = self.directory / name
            self._file = self._path.open("a+")
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._size = 0
        return self._file

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                if self._path is not None and self._size == 0:
                    self._path.unlink(missing_ok=True)
                self._file = None
