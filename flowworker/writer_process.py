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
from flowworker.journal_writer import DRAIN_SECONDS
from flowworker.plugin import Plugin, active_plugin

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


def _spawn(settings: Settings) -> subprocess.Popen[bytes]:
    """Start a writer process for this worker (its parent)."""
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("FLOWWORKER_")
    }
    environment.update(environment_for(settings))
    # the packages this worker imported flowworker from, wherever it runs
    paths = [path for path in sys.path if path]
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    return subprocess.Popen(
        # not `-m`: the package imports this module itself
        [sys.executable, "-c", "from flowworker.journal_writer import main; main()"],
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


class _WriterProcess:
    """The worker's writer process (`flowworker.journal_writer`), restarted if it dies."""

    def __init__(self, plugin: Plugin) -> None:
        self.plugin = plugin
        self.process: subprocess.Popen[bytes] = _spawn(plugin.settings)
        self.stopping = threading.Event()
        threading.Thread(target=self._watch, name="flowworker-writer-watch", daemon=True).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _watch(self) -> None:
        while not self.stopping.wait(1.0):
            if self.process.poll() is not None and not self.stopping.is_set():
                log.warning(
                    "flowworker: the writer process exited with %s; starting another",
                    self.process.returncode,
                )
                time.sleep(1.0)
                self.process = _spawn(self.plugin.settings)

    def stop(self) -> None:
        self.stopping.set()
        _terminate(self.process)


_writer_process: _WriterProcess | None = None


def writer_process_pid() -> int | None:
    return None if _writer_process is None else _writer_process.pid


def start_for_worker(**_: Any) -> None:
    """In a worker's main process, before its pool starts: the task processes (forked
    after this) only append to their journals, and a writer process writes them."""
    global _writer_process
    plugin = active_plugin()
    if plugin is None or plugin.settings.writer != "process" or _writer_process is not None:
        return
    try:
        _writer_process = _WriterProcess(plugin)
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
