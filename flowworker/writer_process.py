"""A worker's writer process (`flowworker.journal_writer`): started, watched, stopped.

`start_for_worker` runs in a worker's main process on `worker_init`, before the pool
starts: from then on this process and the pool processes forked from it only append their
reports to their journals (`Recorder.tailed`), and the writer process writes them. It is
restarted if it dies (the journals keep everything meanwhile), and asked to finish and exit
at the worker's shutdown; it also exits by itself when the worker is gone.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import threading
import time
from typing import Any

from flowworker.config import Settings
from flowworker.journal_writer import DRAIN_SECONDS, JournalWriter
from flowworker.plugin import active_plugin

log = logging.getLogger(__name__)


def environment_for(settings: Settings) -> dict[str, str]:
    """`settings` as the FLOWWORKER_* variables the writer process reads them from."""
    variables: dict[str, str] = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, tuple):
            text = ",".join(value)
        else:
            text = str(value)
        variables[f"FLOWWORKER_{field.name.upper()}"] = text
    return variables


def _spawn(settings: Settings, command: list[str] | None = None) -> subprocess.Popen[bytes]:
    """Start a writer process for this worker (its parent); `command` replaces the
    interpreter's command line (tests)."""
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("FLOWWORKER_")
    }
    environment.update(environment_for(settings))
    # the packages this worker imported flowworker from, wherever it runs
    paths = [path for path in sys.path if path]
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    return subprocess.Popen(
        # not `-m`: the package imports this module itself
        command or [sys.executable, "-c", "from flowworker.journal_writer import main; main()"],
        env=environment,
        close_fds=True,
    )


def _terminate(process: subprocess.Popen[bytes], timeout: float = DRAIN_SECONDS + 5) -> None:
    """Ask it to write what is left and exit; kill it when it takes longer than `timeout`."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("flowworker: the writer process did not stop in %s s; killing it", timeout)
        process.kill()
        process.wait()


#: a writer process that exits this soon after its start, this many times in a row, is
#: given up for a writer thread in the worker's main process
_QUICK_EXIT_SECONDS = 10.0
_QUICK_EXITS_MAX = 3


class WriterProcess:
    """The worker's writer process (`flowworker.journal_writer`), restarted if it dies.

    One that cannot run at all (it exits at once, again and again: a broken environment,
    say) would leave the journals unwritten while they fill: after `_QUICK_EXITS_MAX` such
    exits the main process writes them itself, from a thread (slower, but nothing waits)."""

    def __init__(self, settings: Settings, command: list[str] | None = None) -> None:
        self.settings = settings
        self._command = command
        self.stopping = threading.Event()
        self.fallback: threading.Thread | None = None
        self._start()
        threading.Thread(target=self._watch, name="flowworker-writer-watch", daemon=True).start()

    def _start(self) -> None:
        self.process = _spawn(self.settings, self._command)
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        return None if self.fallback is not None else self.process.pid

    def _watch(self) -> None:
        quick_exits = 0
        while not self.stopping.wait(1.0):
            if self.process.poll() is None or self.stopping.is_set():
                continue
            quick = time.monotonic() - self.started_at < _QUICK_EXIT_SECONDS
            quick_exits = quick_exits + 1 if quick else 0
            if quick_exits >= _QUICK_EXITS_MAX:
                log.error(
                    "flowworker: the writer process exited %d times in a row within %d s of "
                    "its start (last: %s); writing the journals from this process instead",
                    quick_exits,
                    _QUICK_EXIT_SECONDS,
                    self.process.returncode,
                )
                self._write_here()
                return
            log.warning(
                "flowworker: the writer process exited with %s; starting another",
                self.process.returncode,
            )
            time.sleep(1.0)
            self._start()

    def _write_here(self) -> None:
        writer = JournalWriter(self.settings)
        self.fallback = threading.Thread(
            target=writer.run, args=(self.stopping,), name="flowworker-writer"
        )
        self.fallback.daemon = True
        self.fallback.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.fallback is not None:
            self.fallback.join(DRAIN_SECONDS + 5)
        else:
            _terminate(self.process)


_writer_process: WriterProcess | None = None


def writer_process_pid() -> int | None:
    return None if _writer_process is None else _writer_process.pid


def writing_for_worker() -> bool:
    """A writer (process, or the fallback thread) writes this worker's journals."""
    return _writer_process is not None


def start_for_worker(**_: Any) -> None:
    """In a worker's main process, before its pool starts: the task processes (forked
    after this) only append to their journals, and a writer process writes them."""
    global _writer_process
    plugin = active_plugin()
    if plugin is None or plugin.settings.writer != "process" or _writer_process is not None:
        return
    try:
        _writer_process = WriterProcess(plugin.settings)
    except Exception:
        log.exception("flowworker: could not start the writer process; each process writes")
        return
    plugin.recorder.tailed = True


def stop_for_worker(**_: Any) -> None:
    """Let the writer process write what the worker's processes left, and stop it."""
    global _writer_process
    writer, _writer_process = _writer_process, None
    if writer is not None:
        try:
            writer.stop()
        except Exception:
            log.exception("flowworker: stopping the writer process failed")
