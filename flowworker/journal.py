"""A per-process, append-only journal of reports on their way to the database.

Every report is appended here before the signal handler returns, so a report survives the
process: if a pool child or the whole worker is killed, the next process to look adopts the
journal (nobody holds its `flock` any more) and replays it. The writer thread advances the
committed offset after each database commit and empties the file once everything in it is
committed. Replaying is always safe: the upsert is idempotent and refuses backward moves.

Lines are written with one `write` each and reach the OS page cache at once: they survive
a killed process. `fsync=True` makes them survive a machine crash too, at the cost of a
disk flush per report.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from flowworker.pending import PendingReport

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
ORPHAN_SCAN_INTERVAL = 10.0
SUFFIX = ".journal.jsonl"


class JournalFull(Exception):
    pass


class Journal:
    def __init__(
        self,
        directory: Path,
        *,
        json_max_bytes: int,
        max_bytes: int = DEFAULT_MAX_BYTES,
        fsync: bool = False,
    ) -> None:
        self.directory = directory
        self.json_max_bytes = json_max_bytes
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.dropped = 0
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0  # physical bytes in the file
        self._base = 0  # logical offset of the file's first byte (grows at each truncation)
        self._committed = 0  # logical offset up to which everything is in the database
        self._next_orphan_scan = 0.0
        # a forked child must not keep (and so hold the lock of) its parent's journal
        os.register_at_fork(after_in_child=self._forget_after_fork)

    def _forget_after_fork(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None
        self._path = None
        self._lock = threading.Lock()

    # -- appending (any thread) ----------------------------------------------------------

    def append(self, item: PendingReport) -> int:
        """Keep `item`; returns its logical end offset. Raises JournalFull when over the cap."""
        data = (item.to_line(self.json_max_bytes) + "\n").encode()
        with self._lock:
            if self._size + len(data) > self.max_bytes:
                self.dropped += 1
                raise JournalFull(f"journal {self._path} holds {self._size} bytes already")
            fd = self._own_fd()
            written = os.write(fd, data)
            if written != len(data):
                # a short write (the disk is full): cut the torn tail off again, so that
                # offsets keep meaning whole lines, and refuse the report
                os.ftruncate(fd, self._size)
                self.dropped += 1
                raise JournalFull(
                    f"journal {self._path}: the disk took {written} of {len(data)} bytes"
                )
            if self.fsync:
                os.fsync(fd)
            self._size += len(data)
            return self._base + self._size

    # -- the writer thread ---------------------------------------------------------------

    @property
    def committed(self) -> int:
        return self._committed

    @property
    def end(self) -> int:
        return self._base + self._size

    def commit(self, offset: int) -> None:
        """Everything up to logical `offset` is in the database; empty the file when that is
        all of it."""
        with self._lock:
            self._committed = max(self._committed, offset)
            if self._fd is not None and self._committed >= self._base + self._size and self._size:
                os.ftruncate(self._fd, 0)
                os.lseek(self._fd, 0, os.SEEK_SET)
                self._base += self._size
                self._size = 0

    def read_uncommitted(self, limit: int) -> list[tuple[PendingReport, int]]:
        """Up to `limit` reports after the committed offset, with their end offsets."""
        with self._lock:
            if self._path is None or self._committed >= self._base + self._size:
                return []
            start = max(self._committed - self._base, 0)
            end = self._size
            base = self._base + start
            path = self._path
        items: list[tuple[PendingReport, int]] = []
        position = 0
        # line by line, only as far as `limit`: a long outage's backlog is never read whole
        with path.open("rb") as handle:
            handle.seek(start)
            while len(items) < limit and start + position < end:
                line = handle.readline(end - start - position)
                if not line.endswith(b"\n"):
                    break
                position += len(line)
                item = _decoded(line.decode(errors="replace"))
                if item is not None:
                    items.append((item, base + position))
        return items

    def backlog(self) -> int:
        """Bytes appended but not yet committed (0 when the database keeps up)."""
        return max(self._base + self._size - self._committed, 0)

    # -- journals of processes that are gone ----------------------------------------------

    def replay_orphans(self, write: Callable[[list[PendingReport]], None], batch: int = 500) -> int:
        """Replay and delete the journals no live process holds; returns reports written.
        Looks at most every ORPHAN_SCAN_INTERVAL seconds; stops at `write`'s first error."""
        now = time.monotonic()
        if now < self._next_orphan_scan:
            return 0
        self._next_orphan_scan = now + ORPHAN_SCAN_INTERVAL
        written = 0
        for path, handle in self._orphans():
            with handle:
                lines = [
                    line for line in handle.read().splitlines(keepends=True) if line.endswith("\n")
                ]
                items = [item for item in map(_decoded, lines) if item is not None]
                for start in range(0, len(items), batch):
                    write(items[start : start + batch])
                    written += len(items[start : start + batch])
                path.unlink(missing_ok=True)
        if written:
            log.warning("flowworker replayed %d report(s) left by stopped processes", written)
        return written

    def _orphans(self) -> Iterator[tuple[Path, IO[str]]]:
        if not self.directory.exists():
            return
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if path == self._path:
                continue
            try:
                handle = path.open("r", errors="replace")
            except OSError:
                continue
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()  # a live process holds it
                continue
            yield path, handle

    # -- this process's file -----------------------------------------------------------

    def _own_fd(self) -> int:
        while self._fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}{SUFFIX}"
            path = self.directory / name
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            # Until it is locked, the new (empty) file looks like an orphan: another process
            # may adopt and delete it. Keep it only if it is still the file at `path`.
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                kept = os.path.samestat(os.fstat(fd), os.stat(path))
            except (BlockingIOError, FileNotFoundError):  # being adopted, or gone already
                kept = False
            except OSError:
                self._path, self._fd = path, fd
                raise
            if not kept:
                os.close(fd)
                continue
            self._path = path
            self._fd = fd
        return self._fd

    def close(self) -> None:
        """Release the file; delete it when everything in it is committed."""
        with self._lock:
            if self._fd is None:
                return
            os.close(self._fd)
            self._fd = None
            if self._path is not None and self._committed >= self._base + self._size:
                self._path.unlink(missing_ok=True)


def _decoded(line: str) -> PendingReport | None:
    """The report of a journal line; None (logged) for a line a crash or a full disk tore:
    one bad line must not hold back every report after it."""
    try:
        return PendingReport.from_line(line)
    except (ValueError, KeyError, TypeError) as exc:
        log.error("flowworker: skipping an unreadable journal line (%s): %.200r", exc, line)
        return None
