"""The sweep on adaptive solvers (along rtol) and on the reversible solver (along N_t): exact methods stay exact,
the adjoint's error shrinks with the tolerance, reversible memory is flat in N_t, a step limit fails by name."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from anode_lab.experiments import RunContext, RunResult, run_experiment
from anode_lab.experiments.sweep import COLUMNS, CellFailedError, cell_ode
from anode_lab.specs.common import GradientSpec
from anode_lab.specs.compare import CompareSpec

METHODS = tuple(GradientSpec(method=m) for m in ("direct", "anode", "adjoint", "reversible"))
TOLERANCES = (1e-2, 1e-4, 1e-6, 1e-8)
SPEC = CompareSpec(
    solvers=("dopri5", "bosh3", "reversible_heun", "alf"), tolerances=TOLERANCES, steps=(2, 4, 8, 16, 32),
    methods=METHODS, activations=("tanh",), weight_scales=(2.0,), dim=3, hidden=8, batch=4, blocks=2, fd_check=0,
    timing_repeats=1, device="cpu", threads=1,
)
"""A field strong enough (weights × 2) that a loose tolerance really is loose: at rtol 1e-2 dopri5 takes two
steps per block and the adjoint is off by a few per cent, at 1e-8 a dozen steps and ~1e-7."""
EXACT_RTOL = 1e-12
"""Direct and ANODE replay the same accepted steps in float64: equal to rounding."""
REVERSIBLE_RTOL = 1e-10
"""Reversible rebuilds the states algebraically: its gradient equals Direct's up to the reconstruction's rounding."""

Rows = list[dict[str, str]]


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResult, Rows, Rows, list[str]]:
    workdir = tmp_path_factory.mktemp("adaptive")
    notes: list[str] = []
    ctx = RunContext(workdir, on_progress=lambda done, total, note: notes.append(note))
    result = run_experiment("compare", SPEC, ctx)
    return result, _csv(workdir / "artifacts" / "results.csv"), _csv(workdir / "artifacts" / "slopes.csv"), notes


def _csv(path: Path) -> Rows:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _respec(spec: CompareSpec = SPEC, **changes: object) -> CompareSpec:
    return CompareSpec.model_validate({**spec.model_dump(exclude_unset=True), **changes})


def _of(rows: Rows, solver: str, method: str) -> Rows:
    return [r for r in rows if r["solver"] == solver and r["method"] == method]


def test_cells_follow_each_solvers_axis_and_pairing(swept: tuple[RunResult, Rows, Rows, list[str]]) -> None:
    result, rows, _, notes = swept
    assert result.status == "succeeded" and list(rows[0]) == list(COLUMNS)
    assert [(r["solver"], r["method"]) for r in rows] == [(c.solver, c.label) for c in SPEC.grid()]
    assert {r["method"] for r in rows if r["solver"] in ("dopri5", "bosh3")} == {"direct", "anode", "adjoint"}
    for solver in ("reversible_heun", "alf"):
        assert {r["method"] for r in rows if r["solver"] == solver} == {"direct", "anode", "reversible"}
    assert len(rows) == result.summary["cells"] == SPEC.cells == 2 * 4 * 3 + 2 * 5 * 3
    for solver in ("dopri5", "bosh3"):
        mine = _of(rows, solver, "adjoint")
        assert [float(r["rtol"]) for r in mine] == list(TOLERANCES)
        assert [float(r["atol"]) for r in mine] == pytest.approx([t * SPEC.atol_ratio for t in TOLERANCES], rel=1e-9)
        assert all(r["model_bytes"] == "" and r["reconstruction_error"] == "" for r in mine)
    heun = _of(rows, "reversible_heun", "reversible")
    assert [int(r["steps"]) for r in heun] == list(SPEC.steps) and all(r["rtol"] == r["atol"] == "" for r in heun)
    assert notes[0] == "dopri5 rtol=0.01 direct" and notes[-1] == "alf N_t=32 reversible"


@pytest.mark.parametrize("solver", ["dopri5", "bosh3"])
@pytest.mark.parametrize("method", ["direct", "anode"])
def test_direct_and_anode_are_exact_at_every_tolerance(swept: tuple[RunResult, Rows, Rows, list[str]], solver: str,
                                                       method: str) -> None:
    mine = _of(swept[1], solver, method)
    assert len(mine) == len(TOLERANCES)
    assert max(float(r["rel_error"]) for r in mine) <= EXACT_RTOL
    assert all(r["exact"] == "1" for r in mine)


@pytest.mark.parametrize("solver", ["dopri5", "bosh3"])
def test_adjoint_error_shrinks_and_work_grows_as_rtol_tightens(swept: tuple[RunResult, Rows, Rows, list[str]],
                                                               solver: str) -> None:
    result, rows, slopes, _ = swept
    adjoint = _of(rows, solver, "adjoint")
    errors = [float(r["rel_error"]) for r in adjoint]
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[0] > 1e-3 and errors[-1] < 1e-4, errors  # loose is visibly off, tight is close
    assert all(r["exact"] == "0" for r in adjoint)
    for series in ("nfe_forward", "nfe_backward"):
        counts = [int(r[series]) for r in adjoint]
        assert all(a < b for a, b in zip(counts, counts[1:], strict=False)), (series, counts)
    accepted = [int(_of(rows, solver, "direct")[i]["steps"]) for i in range(len(TOLERANCES))]
    assert accepted == [int(r["steps"]) for r in adjoint]  # the reference's grid, the same in every cell
    assert accepted[0] >= 1 and all(a <= b for a, b in zip(accepted, accepted[1:], strict=False)), accepted
    assert accepted[-1] > accepted[0]
    (slope,) = [r for r in slopes if r["solver"] == solver]
    assert slope["method"] == "adjoint" and int(slope["expected_slope"]) == 1
    assert 0.3 <= float(slope["slope"]) <= 1.5  # error ∝ rtol^slope; near 1, never negative
    assert result.summary[f"slope/{solver}/adjoint"] == pytest.approx(float(slope["slope"]), rel=1e-12)
    assert result.summary[f"expected_slope/{solver}"] == 1


@pytest.mark.parametrize("solver", ["reversible_heun", "alf"])
def test_reversible_is_exact_and_its_memory_flat_in_n_t(swept: tuple[RunResult, Rows, Rows, list[str]],
                                                        solver: str) -> None:
    rows = swept[1]
    reversible, direct = _of(rows, solver, "reversible"), _of(rows, solver, "direct")
    assert max(float(r["rel_error"]) for r in reversible) <= REVERSIBLE_RTOL
    assert all(r["exact"] == "1" for r in reversible)
    held = [int(r["peak_bytes"]) for r in reversible]
    assert max(held) <= 1.5 * min(held), held  # N_t from 2 to 32: flat
    grows = [int(r["peak_bytes"]) for r in direct]
    assert grows[-1] >= 8 * grows[0], grows  # Direct keeps every step's graph: ∝ N_t + 1
    for r in (*reversible, *direct, *_of(rows, solver, "anode")):
        assert 0.5 <= float(r["memory_ratio"]) <= 2.0, r  # measured against the analytic model
    assert not any(r["method"] == "reversible" for r in rows if r["solver"] in ("dopri5", "bosh3"))
    assert [r for r in swept[2] if r["solver"] == solver] == []  # exact methods only: no slope


def test_a_solve_past_its_step_limit_fails_naming_the_cell_and_keeps_the_rows(tmp_path: Path) -> None:
    spec = _respec(solvers=("dopri5",), tolerances=(1e-3, 1e-8), weight_scales=(1.0,), methods=METHODS[:3],
                   step_limit=4)
    with pytest.raises(CellFailedError) as info:
        run_experiment("compare", spec, RunContext(tmp_path))
    message = str(info.value)
    assert message.startswith("cell 3 (dopri5 rtol=1e-08 direct, float64 tanh weight scale 1) failed: dopri5 "
                              "reached max_steps=4 trial steps"), message
    assert "raise `step_limit` (now 4) or loosen the tightest of `tolerances`" in message
    rows = _csv(tmp_path / "artifacts" / "results.csv")
    assert [(r["rtol"], r["method"]) for r in rows] == [("0.001", "direct"), ("0.001", "anode"), ("0.001", "adjoint")]


def test_a_whole_model_cell_gets_the_adaptive_knobs(tmp_path: Path) -> None:
    spec = CompareSpec(model="mlp_ode", solvers=("dopri5",), tolerances=(1e-3, 1e-6), methods=METHODS[:3],
                       activations=("tanh",), batch=4, fd_check=0, timing_repeats=1, device="cpu", threads=1,
                       step_limit=50)
    ode = cell_ode(spec, spec.grid()[-1])
    assert (ode.solver, ode.steps, ode.rtol, ode.atol, ode.step_limit) == ("dopri5", None, 1e-6, 1e-8, 50)
    result = run_experiment("compare", spec, RunContext(tmp_path / "ok"))
    assert result.status == "succeeded"
    assert result.summary["max_rel_error/anode"] <= EXACT_RTOL and 0 < result.summary["max_rel_error/adjoint"] < 1e-2
    with pytest.raises(CellFailedError, match=r"^cell 0 \(dopri5 rtol=0.001 direct.*reached max_steps=1 trial"):
        run_experiment("compare", _respec(spec, step_limit=1), RunContext(tmp_path / "limited"))
