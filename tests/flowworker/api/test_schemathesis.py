"""Schemathesis against the running server's /openapi.json: at least 500 generated requests,
valid and invalid, with no 500 and no response that breaks the documented schema."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.flowworker.api.conftest import MakeTenant, report

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

MIN_REQUESTS = 500
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "missing_required_header",
        "unsupported_method",
        "ignored_auth",
    ]
)


@pytest.mark.timeout(900)
def test_generated_requests_find_no_server_error_and_no_schema_violation(
    api_url: str, http: httpx.Client, make_tenant: MakeTenant
) -> None:
    tenant = make_tenant()
    for idx in range(3):
        response = http.post(
            "/task-executions",
            json=report(tenant, task_execution_idx=idx),
            headers=tenant.headers,
        )
        assert response.status_code == 201
    command = [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{api_url}/openapi.json",
        "--header",
        f"Authorization: Bearer {tenant.key}",
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "60",
        "--seed",
        "20261129",
        "--generation-deterministic",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--no-color",
    ]
    outcome = subprocess.run(command, capture_output=True, text=True, timeout=840, check=False)
    assert outcome.returncode == 0, outcome.stdout[-6000:] + outcome.stderr[-2000:]
    generated = re.search(r"(\d+) generated", outcome.stdout)
    assert generated is not None, outcome.stdout[-3000:]
    assert int(generated.group(1)) >= MIN_REQUESTS, outcome.stdout[-3000:]
