"""Zero lines: an app configured from our celeryconfig.py records every task, on the
publishing side and in the worker, without calling flowworker.install."""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any

from tests.flowworker.recording.conftest import ROOT, Recording
from tests.flowworker.workers import WorkerProcess

# Celery reads its configuration lazily, at first use: the plugin is there from the
# first publish on.
PUBLISH = """
from tests.flowworker.autoinstall_app import multiply
import flowworker.plugin
task_id = multiply.delay(6, 7).id
plugin = flowworker.plugin.active_plugin()
assert plugin is not None, "celeryconfig did not install flowworker"
plugin.recorder.close()
print(task_id)
"""


def test_celeryconfig_alone_records_every_task(recording_factory: Any) -> None:
    recording: Recording = recording_factory()
    worker = WorkerProcess(
        {**recording.env, "CELERY_BROKER_URL": recording.env["FW_TEST_BROKER_URL"]},
        f"auto-{uuid.uuid4().hex[:6]}@127.0.0.1",
        "prefork",
        1,
        recording.tmp / "auto.log",
        app="tests.flowworker.autoinstall_app",
    )
    recording.workers.append(worker)
    worker.wait_ready()
    published = subprocess.run(
        [sys.executable, "-c", PUBLISH],
        cwd=ROOT,
        env=recording.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    task_id = published.stdout.strip().splitlines()[-1]
    [record] = recording.wait_for(1, {"completed"}, celery_task_id=task_id)
    assert record.task_name == "example.multiply"
    assert record.output == 42
    assert recording.history(record.id) == ["queued", "running", "completed"]
