"""The metrics journal of a run: every report appended to ``<workdir>/metrics.journal`` as it is made.

One ``os.write`` per report (or per batch of them) puts it in the OS's hands, so it survives the worker being
killed; a retried attempt replays it, possibly on another host with another Python, into the store. The format
is therefore fixed by this module alone, byte for byte, and cheap (a report costs a few microseconds; JSON text
costs twice as much). Each record is framed as ``<u32 little-endian payload length>``
then the payload, whose first byte says what it holds:

* ``N`` then the series names as UTF-8 JSON (a list of strings), written whenever the names change;
* ``V`` then ``<i64 step>`` and one ``<f64>`` per series, in the order of the latest names.

A torn last record (the writer was killed mid-write), or anything unreadable, ends the replay.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

FILE = "metrics.journal"
_LENGTH = struct.Struct("<I")
_STEP = struct.Struct("<q")
NAMES, VALUES = b"N", b"V"


def _frame(kind: bytes, payload: bytes) -> bytes:
    return _LENGTH.pack(len(kind) + len(payload)) + kind + payload


def names_record(names: tuple[str, ...]) -> bytes:
    return _frame(NAMES, json.dumps(list(names)).encode())


def values_record(step: int, values: tuple[float, ...]) -> bytes:
    return _frame(VALUES, _STEP.pack(step) + struct.pack(f"<{len(values)}d", *values))


class Journal:
    def __init__(self, workdir: Path) -> None:
        self.path = workdir / FILE
        self._fd: int | None = None
        self._names: tuple[str, ...] | None = None

    def append(self, step: int, names: tuple[str, ...], values: tuple[float, ...]) -> None:
        """``values`` are anything ``float()`` accepts (Python or numpy floats), one per name."""
        self.append_many([(step, names, values)])

    def append_many(self, reports: Iterable[tuple[int, tuple[str, ...], tuple[float, ...]]]) -> None:
        """Several reports in one ``os.write``."""
        records = []
        for step, names, values in reports:
            if names != self._names:
                self._names = names
                records.append(names_record(names))
            records.append(values_record(step, values))
        if not records:
            return
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        data = memoryview(b"".join(records))
        while data:  # a regular file takes it whole, short of a full disk (which then raises)
            data = data[os.write(self._fd, data):]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read(workdir: Path) -> Iterator[tuple[int, Mapping[str, float]]]:
    """``(step, {series: value})`` of every whole record, in the order they were written."""
    path = workdir / FILE
    if not path.is_file():
        return
    data = path.read_bytes()
    names: list[str] = []
    at = 0
    while at + _LENGTH.size <= len(data):
        (size,) = _LENGTH.unpack_from(data, at)
        start, at = at + _LENGTH.size, at + _LENGTH.size + size
        if size == 0 or at > len(data):
            return
        kind, payload = data[start : start + 1], data[start + 1 : at]
        if kind == NAMES:
            try:
                names = json.loads(payload)
            except ValueError:
                return
        elif kind == VALUES and len(payload) == _STEP.size + 8 * len(names):
            (step,) = _STEP.unpack_from(payload)
            values = struct.unpack_from(f"<{len(names)}d", payload, _STEP.size)
            yield step, dict(zip(names, values, strict=True))
        else:
            return
