"""The built-in tasks, called directly (a Celery task is a plain callable too)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tasks.files import read_csv, read_json, write_csv, write_json
from tasks.records import filter_records, format_text, parse_filter, select_fields
from tasks.timing import fail_times
from tasks.web import http_request

PEOPLE = [
    {"name": "Ada", "age": 36, "city": "London", "tags": ["math"]},
    {"name": "Linus", "age": 12, "city": "Helsinki", "tags": []},
    {"name": "Grace", "age": 45, "city": "Arlington", "tags": ["navy", "math"]},
]


def test_files_round_trip(tmp_path: Path) -> None:
    written = write_json(str(tmp_path / "a" / "people.json"), PEOPLE)
    assert written["path"].endswith("people.json")
    assert read_json(written["path"]) == PEOPLE
    table = write_csv(str(tmp_path / "people.csv"), PEOPLE, ["name", "age"])
    assert table["rows"] == 3
    assert read_csv(table["path"]) == [
        {"name": "Ada", "age": "36"},
        {"name": "Linus", "age": "12"},
        {"name": "Grace", "age": "45"},
    ]


@pytest.mark.parametrize(
    ("where", "names"),
    [
        ("age >= 18", ["Ada", "Grace"]),
        ('age > 20 and city != "London"', ["Grace"]),
        ('tags contains "math"', ["Ada", "Grace"]),
        ('city in ["Helsinki", "Oslo"]', ["Linus"]),
        ("name == Ada", ["Ada"]),
        ("missing > 1", []),
    ],
)
def test_filter_records(where: str, names: list[str]) -> None:
    assert [r["name"] for r in filter_records(PEOPLE, where)] == names


def test_filter_compares_csv_text_as_numbers_and_refuses_nonsense() -> None:
    rows = [{"age": "36"}, {"age": "12"}, {"age": "n/a"}]
    assert filter_records(rows, "age >= 18") == [{"age": "36"}]
    with pytest.raises(ValueError, match="cannot read the condition '18 < age'"):
        parse_filter("18 < age")
    with pytest.raises(ValueError, match="cannot read the condition"):
        parse_filter("__import__('os')")


def test_select_and_format() -> None:
    assert select_fields(PEOPLE[:1], ["name", "zip"], {"name": "who"}) == [
        {"who": "Ada", "zip": None}
    ]
    assert format_text("Hello {name} ({age})", PEOPLE[0]) == "Hello Ada (36)"
    with pytest.raises(ValueError, match="keys only"):
        format_text("{name.__class__}", PEOPLE[0])


def test_fail_times_fails_then_succeeds() -> None:
    fail_times.push_request(retries=0)
    with pytest.raises(RuntimeError, match="attempt 0 fails on purpose"):
        fail_times(1, "ok")
    fail_times.pop_request()
    fail_times.push_request(retries=1)
    assert fail_times(1, "ok") == "ok"
    fail_times.pop_request()


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answer = json.dumps({"echo": body, "auth": self.headers.get("X-Token")}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def do_GET(self) -> None:
        self.send_error(404, "nothing here")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_http_request_against_a_local_server(server: str) -> None:
    answer = http_request(f"{server}/x", "POST", {"n": 1}, {"X-Token": "t"}, timeout=5)
    assert answer["status"] == 201
    assert answer["body"] == {"echo": {"n": 1}, "auth": "t"}
    missing = http_request(f"{server}/nothing", timeout=5)
    assert missing["status"] == 404
    with pytest.raises(ValueError, match="only http:// and https://"):
        http_request("file:///etc/passwd")
