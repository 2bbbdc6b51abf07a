"""Calling an HTTP endpoint (a local service, typically) with the standard library."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from tasks.app import app


@app.task(name="tasks.http_request")
def http_request(
    url: str,
    method: str = "GET",
    json_body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """{status, headers, body}; the body is parsed when the response is JSON. A 4xx/5xx
    answer is returned too (check `status`); only an unreachable server raises."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"only http:// and https:// URLs can be called, not {url!r}")
    data = None if json_body is None else json.dumps(json_body).encode()
    request = urllib.request.Request(url, data=data, method=method.upper())
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw, answer_headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        status, raw, answer_headers = exc.code, exc.read(), exc.headers
    text = raw.decode("utf-8", errors="replace")
    is_json = "json" in (answer_headers.get("Content-Type") or "")
    return {
        "status": status,
        "headers": dict(answer_headers.items()),
        "body": json.loads(text) if is_json and text else text,
    }
