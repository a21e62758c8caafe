"""A compare sweep's tables from its rows, in plain Python (no torch): ``results.csv``, ``slopes.csv`` and the
summary. The sweep writes them when it runs alone; a fanned-out sweep's last cell writes them in its worker
(:mod:`backend.runs.cells`) from the rows every cell stored.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from anode_lab.experiments.artifacts import write_csv
from anode_lab.experiments.context import RunContext
from anode_lab.experiments.slopes import fit_loglog
from anode_lab.specs.compare import Cell, CompareSpec

COLUMNS = (
    "cell", "dtype", "activation", "weight_scale", "solver", "order", "steps", "rtol", "atol", "method", "exact",
    "rel_error", "cosine", "sign_agreement", "worst_parameter_rel_error", "reconstruction_error",
    "peak_bytes", "model_bytes", "memory_ratio", "cuda_peak_bytes", "forward_seconds", "backward_seconds",
    "nfe_forward", "nfe_backward", "loss", "fd_rel_error",
)
"""The columns of ``results.csv``, one row per cell of :meth:`CompareSpec.grid`. ``steps`` is N_t, or for an
adaptive solver (``rtol`` and ``atol`` set, else empty) the accepted steps per block of the Direct reference."""
SLOPE_COLUMNS = ("dtype", "activation", "weight_scale", "solver", "method", "slope", "intercept", "expected_slope")


def slope_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One fitted log-log slope of relative error per (dtype, activation, scale, solver, method) for the inexact
    methods (the exact ones sit at rounding level, where a slope means nothing): against N_t for a fixed-step
    solver (expected −order), against rtol for an adaptive one (expected 1: the error ∝ the tolerance)."""
    groups: dict[tuple[Any, ...], list[tuple[float, float]]] = defaultdict(list)
    expected: dict[str, int] = {}
    for row in rows:
        if row["exact"]:
            continue
        key = (row["dtype"], row["activation"], row["weight_scale"], row["solver"], row["method"])
        adaptive = row["rtol"] is not None
        groups[key].append((float(row["rtol"] if adaptive else row["steps"]), float(row["rel_error"])))
        expected[row["solver"]] = 1 if adaptive else -int(row["order"])
    out = []
    for key, points in groups.items():
        slope, intercept = fit_loglog([x for x, _ in points], [e for _, e in points])
        out.append({
            **dict(zip(SLOPE_COLUMNS[:5], key, strict=True)), "slope": slope, "intercept": intercept,
            "expected_slope": expected[key[3]],
        })
    return out


def summary_of(spec: CompareSpec, rows: list[dict[str, Any]]) -> dict[str, float | int | str]:
    """Cells done; per method the worst relative error; per (solver, method) the fitted slope. Dimensions that
    take a single value in the spec are left out of the keys."""
    summary: dict[str, float | int | str] = {"cells": len(rows), "cells_planned": spec.cells}
    for label in spec.labels():
        errors = [float(r["rel_error"]) for r in rows if r["method"] == label]
        if errors:
            summary[f"max_rel_error/{label}"] = max(errors)
    varying = [
        name for name, values in
        (("dtype", spec.dtypes), ("activation", spec.activations), ("weight_scale", spec.weight_scales))
        if len(values) > 1
    ]
    for row in slope_rows(rows):
        key = "/".join(str(row[k]) for k in (*varying, "solver", "method"))
        summary[f"slope/{key}"] = row["slope"]
        summary[f"expected_slope/{row['solver']}"] = row["expected_slope"]
    fd = [float(r["fd_rel_error"]) for r in rows if r["fd_rel_error"] is not None]
    if fd:
        summary["fd_max_rel_error"] = max(fd)
    return summary


def write_tables(spec: CompareSpec, rows: list[dict[str, Any]], ctx: RunContext, *, slopes: bool = True) -> None:
    """``results.csv`` (rows in cell order) and, for a finished sweep, ``slopes.csv``."""
    write_csv(ctx, "results.csv", rows, COLUMNS)
    if slopes:
        write_csv(ctx, "slopes.csv", slope_rows(rows), SLOPE_COLUMNS)


def setting_key(cell: Cell) -> tuple[object, ...]:
    return cell.dtype, cell.activation, cell.weight_scale, cell.solver, cell.steps, cell.rtol, cell.atol


def costliest_first(spec: CompareSpec, cut: list[list[Cell]]) -> list[int]:
    """The parts' indices, the costliest first: the order to queue them in, so that the parts still running when
    the queue empties are short ones (longest-processing-time first: with 2 workers, the 18-cell sweep of
    ``bench/fan_out.py`` ends at about 0.52 of its serial cost instead of the 0.62 that grid order gives). A part
    costs its solver's field evaluations, N_t times stages (an adaptive solver's counted at its step limit), once
    per cell and once for its Direct reference."""
    from anode_lab.specs.compare import STAGES
    from anode_lab.specs.cost import worst_steps

    def cost(part: list[Cell]) -> int:
        first = part[0]
        return (len(part) + 1) * STAGES[first.solver] * worst_steps(first.solver, first.steps, spec.step_limit)

    return sorted(range(len(cut)), key=lambda index: -cost(cut[index]))


def parts(spec: CompareSpec) -> list[list[Cell]]:
    """The grid cut where the setting changes (dtype, activation, scale, solver, N_t or tolerances): the cells of
    a part share one model and one Direct reference, so a part is the unit a sweep fans out over workers, and
    a part measured alone gives the rows the whole sweep gives for its cells."""
    out: list[list[Cell]] = []
    for cell in spec.grid():
        if out and setting_key(out[-1][-1]) == setting_key(cell):
            out[-1].append(cell)
        else:
            out.append([cell])
    return out
