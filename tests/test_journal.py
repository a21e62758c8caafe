"""The metrics journal's format is fixed byte for byte by ``struct`` and JSON, not by the Python version that
wrote it (``marshal``, its former format, may change between versions, and runs resume on other hosts)."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest

from backend.runs import journal


def write(workdir: Path, reports: list[tuple[int, dict[str, float]]]) -> bytes:
    writer = journal.Journal(workdir)
    for step, values in reports:
        writer.append(step, tuple(values), tuple(values.values()))
    writer.close()
    return (workdir / journal.FILE).read_bytes()


REPORTS = [
    (1, {"loss": 0.5, "acc": 0.25}),
    (2, {"loss": math.inf, "acc": -0.0}),
    (2, {"grad_error": 1e-300}),  # other series: a names record first
    (2**40, {"grad_error": 3.0}),
]


def test_the_bytes_are_fixed_by_the_format(tmp_path: Path) -> None:
    """A golden layout, spelled out with ``struct``: any interpreter writes and reads exactly these bytes."""
    names = b'N["loss", "acc"]'
    values = b"V" + struct.pack("<q2d", 1, 0.5, 0.25)
    expected = struct.pack("<I", len(names)) + names + struct.pack("<I", len(values)) + values
    assert write(tmp_path, REPORTS[:1]) == expected
    assert expected.hex() == (
        "100000004e5b226c6f7373222c202261636322"
        "5d"
        "1900000056"
        "0100000000000000"
        "000000000000e03f"
        "000000000000d03f"
    )


def test_round_trip(tmp_path: Path) -> None:
    write(tmp_path, REPORTS)
    assert list(journal.read(tmp_path)) == REPORTS


def test_nan_survives(tmp_path: Path) -> None:
    write(tmp_path, [(3, {"loss": math.nan})])
    [(step, values)] = journal.read(tmp_path)
    assert step == 3 and math.isnan(values["loss"])


def test_a_torn_last_record_ends_the_replay_wherever_it_was_cut(tmp_path: Path) -> None:
    """The writer killed mid-write: every cut of the last record leaves the whole records before it."""
    whole = write(tmp_path, REPORTS)
    step, values = REPORTS[-1]
    last = len(whole) - len(journal.values_record(step, tuple(values.values())))
    for cut in range(last, len(whole)):
        (tmp_path / journal.FILE).write_bytes(whole[:cut])
        assert list(journal.read(tmp_path)) == REPORTS[:-1], f"cut at byte {cut}"


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(struct.pack("<I", 3) + b"X12", id="unknown-kind"),
        pytest.param(struct.pack("<I", 4) + b"N[1,", id="bad-names"),
        pytest.param(struct.pack("<I", 9) + b"V" + struct.pack("<q", 9), id="values-without-their-series"),
        pytest.param(struct.pack("<I", 0), id="empty-record"),
    ],
)
def test_an_unreadable_record_ends_the_replay(tmp_path: Path, tail: bytes) -> None:
    whole = write(tmp_path, REPORTS[:2])
    (tmp_path / journal.FILE).write_bytes(whole + tail + journal.values_record(9, (1.0, 2.0)))
    assert list(journal.read(tmp_path)) == REPORTS[:2]


def test_a_missing_journal_replays_nothing(tmp_path: Path) -> None:
    assert list(journal.read(tmp_path)) == []
