"""Read dataset rows, naming the file and row of anything malformed.

JSONL and JSON are read here with the `json` module (not through `datasets`) so a
broken line is reported with its line number and a row with a wrong type is reported
as that row (Arrow would fail the whole file, or coerce); a `.json` file holds either
one top-level list of objects (rows numbered from 1 in list order) or JSON lines.
Parquet and saved `datasets` folders go through `datasets`, rows numbered from 1 in
file order; there a missing field reads as null and is reported as missing.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

logger = logging.getLogger(__name__)


class DataError(ValueError):
    """A dataset problem; the message names the file (and row where there is one)."""


def read_text_lines(path: str, key: str) -> list[tuple[int, str]]:
    """(line number, text) of each non-empty line of a plain-text file; `key` is the config key that named it."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file ({key})")
    with open(path, encoding="utf-8") as fh:
        lines = [(i, line.strip()) for i, line in enumerate(fh, start=1) if line.strip()]
    if not lines:
        raise DataError(f"{path}: no text ({key})")
    return lines


@dataclass
class ReadReport:
    rows_read: int = 0
    skipped: int = 0
    first_bad: list[str] = field(default_factory=list)
    """The first few problems, `file:row: what`."""


def _raw_rows(path: str):
    """Yield (row_number, row_or_exception)."""
    if os.path.isdir(path):
        import datasets

        ds = datasets.load_from_disk(path)
        if isinstance(ds, datasets.DatasetDict):
            raise DataError(f"{path}: a DatasetDict; point at one split's folder ({', '.join(ds.keys())})")
        for i, row in enumerate(ds, start=1):
            yield i, row
        return
    if path.endswith((".jsonl", ".json")):
        with open(path, "rb") as fh:
            data = fh.read()
        if path.endswith(".json") and data.strip():
            try:
                whole = json.loads(data.decode("utf-8"))
            except UnicodeDecodeError as err:
                raise DataError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
            except json.JSONDecodeError as err:
                if err.msg != "Extra data":  # "Extra data": several values, i.e. JSON lines; read below
                    raise DataError(f"{path}:{err.lineno}: broken JSON ({err.msg} at column {err.colno})") from None
            else:
                if not isinstance(whole, list):
                    raise DataError(f"{path}: the top level must be a list of row objects (or JSON lines), "
                                    f"got {type(whole).__name__}")
                yield from enumerate(whole, start=1)
                return
        yield from _json_lines(data)
        return
    import datasets

    kind = {".parquet": "parquet"}.get(os.path.splitext(path)[1])
    if kind is None:
        raise DataError(f"{path}: unsupported file type (use .jsonl, .json, .parquet or a saved datasets folder)")
    try:
        ds = datasets.load_dataset(kind, data_files=path, split="train")
    except Exception as err:  # datasets wraps parse errors in several types
        raise DataError(f"{path}: could not be read as {kind}: {err}") from None
    for i, row in enumerate(ds, start=1):
        yield i, row


def _json_lines(data: bytes):
    for i, raw in enumerate(data.splitlines(), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            yield i, DataError(f"not valid UTF-8 ({err.reason} at byte {err.start})")
            continue
        if not text.strip():
            continue
        try:
            yield i, json.loads(text)
        except json.JSONDecodeError as err:
            yield i, DataError(f"broken JSON ({err.msg} at column {err.colno})")


def read_rows(
    path: str,
    parse: Callable[[dict], Any],
    on_bad_row: str = "error",
    report: Optional[ReadReport] = None,
) -> list[tuple[int, Any]]:
    """Parse every row with `parse` (which raises ValueError on a bad row).

    Returns (row_number, parsed) pairs. With on_bad_row="error" the first bad row raises
    DataError naming `path:row`; with "skip" bad rows are counted in `report` and logged.
    An empty result is always an error: training on nothing is never what was meant.
    """
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or folder")
    report = report if report is not None else ReadReport()
    rows, seen = [], 0
    for number, raw in _raw_rows(path):
        seen += 1
        try:
            if isinstance(raw, Exception):
                raise raw
            if not isinstance(raw, dict):
                raise DataError(f"expected a JSON object, got {type(raw).__name__}")
            rows.append((number, parse(raw)))
            report.rows_read += 1
        except (ValueError, TypeError, KeyError) as err:
            problem = f"{path}:{number}: {err}"
            if on_bad_row == "error":
                raise DataError(problem + " (set data.on_bad_row=skip to skip bad rows)") from None
            report.skipped += 1
            if len(report.first_bad) < 5:
                report.first_bad.append(problem)
    if report.skipped:
        logger.warning("%s: skipped %d bad rows; first: %s", path, report.skipped, "; ".join(report.first_bad))
    if not seen:
        raise DataError(f"{path}: empty (no rows)")
    if not rows:
        raise DataError(f"{path}: no usable rows" + (f" ({report.skipped} bad rows skipped)" if report.skipped else ""))
    return rows


def require_text(row: dict, key: str) -> str:
    """The non-empty string at `key`, or a ValueError saying what is wrong with it."""
    value = row.get(key)
    if value is None:  # absent, or null (how datasets reads a field a Parquet row lacks)
        raise ValueError(f"missing field {key!r} (fields present: {', '.join(sorted(k for k in row if row[k] is not None))})")
    if not isinstance(value, str):
        raise TypeError(f"field {key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"field {key!r} is empty")
    return value
