"""Reading and writing JSON and CSV files."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from tasks.app import app


@app.task(name="tasks.read_json")
def read_json(path: str) -> Any:
    """The JSON document in the file at `path`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


@app.task(name="tasks.write_json")
def write_json(path: str, data: Any) -> dict[str, Any]:
    """Write `data` as JSON to `path` (parents created); returns the path and size."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    target.write_text(text, encoding="utf-8")
    return {"path": str(target.resolve()), "bytes": len(text.encode())}


@app.task(name="tasks.read_csv")
def read_csv(path: str, delimiter: str = ",") -> list[dict[str, str]]:
    """The rows of a CSV file with a header line, one dict per row."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


@app.task(name="tasks.write_csv")
def write_csv(
    path: str, records: list[dict[str, Any]], fields: list[str] | None = None
) -> dict[str, Any]:
    """Write `records` to a CSV file (columns: `fields`, or every key in order of appearance)."""
    columns = fields or list(dict.fromkeys(key for record in records for key in record))
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
    return {"path": str(target.resolve()), "rows": len(records)}
