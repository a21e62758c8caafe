"""Write a run's tables and texts into its artifact folder (CSV for tables, JSON for nested data)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from anode_lab.experiments.context import RunContext

Row = Mapping[str, Any]


def write_csv(ctx: RunContext, name: str, rows: Sequence[Row], columns: Sequence[str] | None = None) -> Path:
    """``rows`` as a CSV table with a header; columns default to the keys of the rows in first-seen order.

    A missing value is an empty cell; floats are written with ``repr`` precision, non-finite ones as
    ``nan``/``inf``/``-inf``.
    """
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    path = ctx.artifact_path(name)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})
    return path


def write_json(ctx: RunContext, name: str, data: Any) -> Path:
    """``data`` as indented JSON; non-finite floats become ``null`` so any JSON reader accepts the file."""
    path = ctx.artifact_path(name)
    path.write_text(json.dumps(_finite(data), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def write_text(ctx: RunContext, name: str, text: str) -> Path:
    path = ctx.artifact_path(name)
    path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    return path


def numeric(row: Row) -> dict[str, float]:
    """The finite numeric entries of ``row`` as floats: what ``ctx.on_metrics`` takes."""
    return {
        k: float(v)
        for k, v in row.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


def _finite(data: Any) -> Any:
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, Mapping):
        return {str(k): _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data
