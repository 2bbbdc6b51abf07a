"""A per-process, append-only journal of reports on their way to the database.

Every report is appended here before the signal handler returns, so a report survives the
process: if a pool child or the whole worker is killed, the next process to look adopts the
journal (nobody holds its `flock` any more) and replays it. The writer thread advances the
committed offset after each database commit and empties the file once everything in it is
committed. Replaying is always safe: the upsert is idempotent and refuses backward moves.

Lines are written with one `write` each and reach the OS page cache at once: they survive
a killed process. `fsync=True` makes them survive a machine crash too, at the cost of a
disk flush per report.

A *tailed* journal (`tailed=True`, a worker's processes when its writer process runs,
`flowworker.journal_writer`) is written by its owner and read by that other process: the
owner only appends, and starts a new file (unlocking the old one) every `rotate_bytes`;
the writer keeps the committed offset in a small file beside it (`<journal>.committed`,
`CommittedMark`), locked while it tails the journal, and deletes both once the owner has
let go of the journal and everything in it is committed.
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from flowworker.pending import PendingReport
from persistence.errors import FlowworkerError

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
ORPHAN_SCAN_INTERVAL = 10.0
SUFFIX = ".journal.jsonl"
#: the end of a tailed journal's name (its random part ends in "-tailed")
TAILED_SUFFIX = "-tailed" + SUFFIX
COMMITTED_SUFFIX = ".committed"
DEFAULT_ROTATE_BYTES = 4 * 1024 * 1024


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
        tailed: bool = False,
        rotate_bytes: int = DEFAULT_ROTATE_BYTES,
    ) -> None:
        self.directory = directory
        self.json_max_bytes = json_max_bytes
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.tailed = tailed
        self.rotate_bytes = rotate_bytes
        #: tailed: this process's earlier files, until their writer deletes them
        self._sealed: list[Path] = []
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
        self._sealed = []
        self._lock = threading.Lock()

    # -- appending (any thread) ----------------------------------------------------------

    def append(self, item: PendingReport) -> int:
        """Keep `item`; returns its logical end offset. Raises JournalFull when over the cap."""
        return self.append_line(item.to_line(self.json_max_bytes), item.report.status.is_terminal)

    def append_line(self, line: str, terminal: bool) -> int:
        """Keep one report's journal line (`flowworker.pending.journal_line`); as `append`."""
        data = (line + "\n").encode()
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
            end = self._base + self._size
            # a pool process runs one task at a time: sealing after a finished report keeps
            # each task's reports in one file, for the writer to fold
            if self.tailed and self._size >= self.rotate_bytes and terminal:
                self._seal()
            return end

    def _seal(self) -> None:
        """Tailed: let go of the current file (its writer finishes and deletes it); the next
        report starts a new one."""
        assert self._fd is not None
        assert self._path is not None
        os.close(self._fd)
        self._sealed.append(self._path)
        self._fd, self._path = None, None
        self._base += self._size
        self._size = 0

    def tailed_backlog(self) -> int:
        """Tailed: bytes this process appended that its writer has not committed yet."""
        with self._lock:
            self._sealed = [path for path in self._sealed if path.exists()]
            files = [*self._sealed, *([self._path] if self._path is not None else [])]
        backlog = 0
        for path in files:
            with contextlib.suppress(OSError):
                backlog += max(path.stat().st_size - read_committed(path), 0)
        return backlog

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
        # line by line, only as far as `limit`: a long outage's backlog is never read whole
        with path.open("rb") as handle:
            handle.seek(start)
            found, _ = read_reports(handle, limit, end - start)
        return [(item, base + read) for item, read in found]

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
                mark = CommittedMark.claim(path)
                if mark is None:
                    continue  # a writer process is finishing it
                handle.seek(mark.value)
                lines = [
                    line for line in handle.read().splitlines(keepends=True) if line.endswith(b"\n")
                ]
                items = [item for item in map(decoded, lines) if item is not None]
                for start in range(0, len(items), batch):
                    write(items[start : start + batch])
                    written += len(items[start : start + batch])
                path.unlink(missing_ok=True)
                mark.remove()
        if written:
            log.warning("flowworker replayed %d report(s) left by stopped processes", written)
        return written

    def _orphans(self) -> Iterator[tuple[Path, IO[bytes]]]:
        if not self.directory.exists():
            return
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if path == self._path:
                continue
            try:
                handle = path.open("rb")
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
            suffix = TAILED_SUFFIX if self.tailed else SUFFIX
            name = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}"
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
        """Release the file; delete it when everything in it is committed (a tailed one is
        its writer's to delete)."""
        with self._lock:
            if self._fd is None:
                return
            os.close(self._fd)
            self._fd = None
            if (
                not self.tailed
                and self._path is not None
                and self._committed >= self._base + self._size
            ):
                self._path.unlink(missing_ok=True)


def stats_path(spool_dir: Path, pid: int) -> Path:
    """Where process `pid` of this machine keeps its recording counters
    (`flowworker.control`)."""
    return spool_dir / "stats" / f"{socket.gethostname()}.{pid}.json"


def committed_path(journal: Path) -> Path:
    """Where a writer keeps how far `journal` is in the database (`CommittedMark`)."""
    return journal.with_name(journal.name + COMMITTED_SUFFIX)


def read_committed(journal: Path) -> int:
    """The committed offset a writer keeps beside `journal` (0 when none)."""
    try:
        return int(committed_path(journal).read_bytes() or 0)
    except (OSError, ValueError):
        return 0


class CommittedMark:
    """How far a journal is in the database, kept beside it (`<journal>.committed`) by the
    one process that writes it; that process holds the file's lock meanwhile."""

    _WIDTH = 20

    def __init__(self, path: Path, fd: int, value: int) -> None:
        self.path = path
        self._fd = fd
        self.value = value

    @classmethod
    def claim(cls, journal: Path) -> CommittedMark | None:
        """The mark of `journal`, locked for this process; None while another holds it."""
        path = committed_path(journal)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        try:
            value = int(os.pread(fd, cls._WIDTH, 0) or 0)
        except ValueError:
            value = 0
        return cls(path, fd, value)

    def set(self, offset: int) -> None:
        os.pwrite(self._fd, str(offset).rjust(self._WIDTH).encode(), 0)
        self.value = offset

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.release()


def read_reports(
    handle: IO[bytes], limit: int, most: int | None = None
) -> tuple[list[tuple[PendingReport, int]], int]:
    """Up to `limit` reports from `handle`'s position on, whole lines only (at most `most`
    bytes), each with the bytes read up to the end of its line; and the bytes read in all
    (a torn line is skipped but counted; a line still being written is not read)."""
    items: list[tuple[PendingReport, int]] = []
    read = 0
    while len(items) < limit and (most is None or read < most):
        line = handle.readline(-1 if most is None else most - read)
        if not line.endswith(b"\n"):
            break
        read += len(line)
        item = decoded(line)
        if item is not None:
            items.append((item, read))
    return items, read


def decoded(line: str | bytes) -> PendingReport | None:
    """The report of a journal line; None (logged) for a line a crash or a full disk tore:
    one bad line must not hold back every report after it."""
    try:
        return PendingReport.from_line(line)
    except (ValueError, KeyError, TypeError, FlowworkerError) as exc:
        # (a report that fails validation here was journaled without it: `journal_line`)
        log.error("flowworker: skipping an unreadable journal line (%s): %.200r", exc, line)
        return None
