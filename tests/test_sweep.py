"""The gradient-comparison sweep: its table, its numbers against Direct, its slopes, cancellation."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from anode_lab.experiments import RunContext, RunResult, run_experiment
from anode_lab.experiments.sweep import COLUMNS, fit_slope
from anode_lab.specs.common import GradientSpec
from anode_lab.specs.compare import CompareSpec

METHODS = (
    GradientSpec(method="direct"),
    GradientSpec(method="anode"),
    GradientSpec(method="anode", checkpoints=1),
    GradientSpec(method="adjoint"),
    GradientSpec(method="adjoint", reconstruct=False),
)
SMALL = CompareSpec(
    solvers=("euler", "midpoint"), steps=(2, 4, 8, 16), methods=METHODS, dim=3, hidden=8, batch=4,
    fd_check=3, device="cpu", threads=1,
)
EXACT_RTOL = 1e-12
"""Direct and ANODE (with or without checkpoints) run the same float64 operations: equal to rounding."""
FD_RTOL = 1e-6
"""Central differences with ε = 1e-6 in float64: truncation O(ε²) and rounding O(1e-16/ε) ≈ 1e-10."""


class Recorder:
    def __init__(self, stop_after: int | None = None) -> None:
        self.metrics: list[tuple[int, dict[str, float]]] = []
        self.progress: list[tuple[int, int, str]] = []
        self.stop_after = stop_after

    def context(self, workdir: Path) -> RunContext:
        return RunContext(
            workdir, on_metrics=lambda step, values: self.metrics.append((step, dict(values))),
            on_progress=lambda done, total, note: self.progress.append((done, total, note)),
            should_stop=lambda: self.stop_after is not None and len(self.metrics) >= self.stop_after,
        )


Swept = tuple[RunResult, list[dict[str, str]], Recorder]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory: pytest.TempPathFactory) -> Swept:
    recorder = Recorder()
    workdir = tmp_path_factory.mktemp("sweep")
    result = run_experiment("compare", SMALL, recorder.context(workdir))
    return result, read_csv(workdir / "artifacts" / "results.csv"), recorder


def test_table_has_one_row_per_cell_in_grid_order(small_sweep: Swept) -> None:
    result, rows, recorder = small_sweep
    assert result.status == "succeeded"
    assert list(rows[0]) == list(COLUMNS)
    grid = SMALL.grid()
    assert [(r["solver"], int(r["steps"]), r["method"]) for r in rows] == [(c.solver, c.steps, c.label) for c in grid]
    assert [step for step, _ in recorder.metrics] == list(range(SMALL.cells))
    assert recorder.progress[-1][:2] == (SMALL.cells, SMALL.cells)
    assert result.summary["cells"] == SMALL.cells


@pytest.mark.parametrize("label", ["direct", "anode", "anode(c=1)"])
def test_exact_methods_match_direct(small_sweep: Swept, label: str) -> None:
    _, rows, _ = small_sweep
    mine = [r for r in rows if r["method"] == label]
    assert len(mine) == 8
    assert max(float(r["rel_error"]) for r in mine) <= EXACT_RTOL
    assert min(float(r["sign_agreement"]) for r in mine) == 1.0
    assert all(r["reconstruction_error"] == "" for r in mine)


@pytest.mark.parametrize("label", ["adjoint", "adjoint(stored)"])
def test_adjoint_differs_from_direct(small_sweep: Swept, label: str) -> None:
    _, rows, _ = small_sweep
    errors = [float(r["rel_error"]) for r in rows if r["method"] == label]
    assert min(errors) > 1e-8  # far above rounding: the O(dt^p) error of ANODE §2
    assert max(errors) < 1.0


def test_reconstruction_error_reported_for_reconstructing_adjoint_only(
    small_sweep: Swept,
) -> None:
    _, rows, recorder = small_sweep
    for row, (_, metrics) in zip(rows, recorder.metrics, strict=True):
        reconstructs = row["method"] == "adjoint"
        assert (row["reconstruction_error"] != "") == reconstructs
        assert ("reconstruction_error" in metrics) == reconstructs
        assert float(row["peak_bytes"]) > 0 and float(row["model_bytes"]) > 0
        assert int(row["nfe_forward"]) == SMALL.blocks * int(row["steps"]) * (1 if row["solver"] == "euler" else 2)


def test_reference_passes_finite_differences(small_sweep: Swept) -> None:
    result, rows, _ = small_sweep
    assert float(result.summary["fd_max_rel_error"]) <= FD_RTOL
    assert all(r["fd_rel_error"] != "" for r in rows)


@pytest.mark.parametrize(("solver", "expected"), [("euler", -1.0), ("midpoint", -2.0)])
@pytest.mark.parametrize("label", ["adjoint", "adjoint(stored)"])
def test_adjoint_slope_is_minus_the_order(
    small_sweep: Swept, solver: str, expected: float, label: str
) -> None:
    result, _, _ = small_sweep
    assert result.summary[f"expected_slope/{solver}"] == expected
    assert result.summary[f"slope/{solver}/{label}"] == pytest.approx(expected, abs=0.35)


def test_sweep_numbers_are_a_function_of_the_spec(
    small_sweep: Swept, tmp_path: Path
) -> None:
    _, rows, _ = small_sweep
    spec = SMALL.model_copy(update={"solvers": ("euler",), "steps": (2,), "fd_check": 0})
    run_experiment("compare", spec, RunContext(tmp_path))
    again = read_csv(tmp_path / "artifacts" / "results.csv")
    first = [r for r in rows if r["solver"] == "euler" and r["steps"] == "2"]
    assert [r["rel_error"] for r in again] == [r["rel_error"] for r in first]
    assert [r["loss"] for r in again] == [r["loss"] for r in first]


@pytest.mark.parametrize(("field", "dtype", "rtol"), [
    pytest.param("conv", "float64", EXACT_RTOL, id="conv-float64"),
    pytest.param("mlp", "float32", 1e-6, id="mlp-float32"),
])
def test_anode_is_exact_for_conv_fields_and_float32(tmp_path: Path, field: str, dtype: str, rtol: float) -> None:
    shape = {"channels": 2, "size": 4} if field == "conv" else {"dim": 3, "hidden": 8}
    spec = CompareSpec(field=field, **shape, batch=2, blocks=2, solvers=("heun",), steps=(1, 3), dtypes=(dtype,),
                       methods=(GradientSpec(method="anode"), GradientSpec(method="adjoint")), threads=1)
    result = run_experiment("compare", spec, RunContext(tmp_path))
    rows = read_csv(tmp_path / "artifacts" / "results.csv")
    assert result.status == "succeeded" and len(rows) == 4
    assert max(float(r["rel_error"]) for r in rows if r["method"] == "anode") <= rtol
    assert min(float(r["rel_error"]) for r in rows if r["method"] == "adjoint") > 10 * rtol


def test_stop_between_cells_cancels_with_rows_so_far(tmp_path: Path) -> None:
    recorder = Recorder(stop_after=3)
    result = run_experiment("compare", SMALL.model_copy(update={"fd_check": 0}), recorder.context(tmp_path))
    assert result.status == "cancelled"
    assert "3 of" in result.message
    assert len(read_csv(tmp_path / "artifacts" / "results.csv")) == 3
    assert result.summary["cells"] == 3


@pytest.mark.parametrize("order", [1.0, 2.0, 4.0])
def test_fit_slope_recovers_a_power_law(order: float) -> None:
    ns = [2, 4, 8, 16, 32]
    assert fit_slope(ns, [3.0 * n**-order for n in ns]) == pytest.approx(-order, rel=1e-12)


def test_fit_slope_skips_points_without_a_logarithm() -> None:
    ns = [1, 2, 4, 8, 16]
    errors = [0.0, 0.5, math.nan, 0.125, math.inf]
    assert fit_slope(ns, errors) == pytest.approx(-1.0, rel=1e-12)
    assert math.isnan(fit_slope([4, 8], [0.0, 1e-3]))
    with pytest.raises(ValueError, match="same length"):
        fit_slope([1, 2], [1.0])


def test_times_are_medians_of_the_repeats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each cell's times are the medians of ``timing_repeats`` measurements, not one noisy shot."""
    import dataclasses
    from itertools import count

    import anode_lab.experiments.sweep as sweep

    measure, calls = sweep.ac.measure_gradient, count()
    shots = (5.0, 1.0, 3.0)  # the median is the last: neither the first shot nor the mean

    def timed(*args: object, **kwargs: object) -> object:
        seconds = shots[next(calls) % len(shots)]
        return dataclasses.replace(measure(*args, **kwargs), forward_seconds=seconds, backward_seconds=2 * seconds)

    monkeypatch.setattr(sweep.ac, "measure_gradient", timed)
    spec = SMALL.model_copy(update={"steps": (2,), "solvers": ("euler",), "timing_repeats": 3,
                                    "methods": (GradientSpec(method="adjoint"),)})
    result = run_experiment("compare", spec, RunContext(tmp_path))
    assert result.status == "succeeded"
    row = read_csv(tmp_path / "artifacts" / "results.csv")[0]
    assert row["method"] == "adjoint" and next(calls) == 4  # the Direct reference, then three of the adjoint
    assert (float(row["forward_seconds"]), float(row["backward_seconds"])) == (3.0, 6.0)


def test_the_default_sweep_has_several_blocks_and_repeats() -> None:
    assert CompareSpec().blocks >= 3 and CompareSpec().timing_repeats >= 3  # ANODE's memory advantage shows
