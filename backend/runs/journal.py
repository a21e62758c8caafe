"""The metrics journal of a run: every report appended to ``<workdir>/metrics.journal`` as it is made.

One ``os.write`` per report puts it in the OS's hands, so it survives the worker being killed; a retried
attempt replays it into the store. It is binary to stay cheap on the training thread (a report costs a few
microseconds; JSON text costs twice as much): length-prefixed ``marshal`` records, a list of series names
whenever the names change, else ``(step, values)`` in that order. A torn last record (the writer was killed
mid-write) ends the replay.
"""

from __future__ import annotations

import marshal
import os
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

FILE = "metrics.journal"
_LENGTH = struct.Struct("<I")


def _frame(payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload)) + payload


class Journal:
    def __init__(self, workdir: Path) -> None:
        self.path = workdir / FILE
        self._fd: int | None = None
        self._names: tuple[str, ...] | None = None

    def append(self, step: int, names: tuple[str, ...], values: tuple[float, ...]) -> None:
        """``values`` must be Python ``float`` s (marshal would write a numpy scalar as its raw bytes)."""
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        record = _frame(marshal.dumps((step, values)))
        if names != self._names:
            self._names = names
            record = _frame(marshal.dumps(list(names))) + record
        os.write(self._fd, record)

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
        if at > len(data):
            return
        try:
            record = marshal.loads(data[start:at])
        except (ValueError, EOFError, TypeError):
            return
        if isinstance(record, list):
            names = record
        else:
            step, values = record
            yield int(step), dict(zip(names, values, strict=True))
