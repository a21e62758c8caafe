"""Demo ``non-invertible``: a ResNet (Euler) step that maps two different inputs to one output.

ANODE §2 (Gholami, Keutzer & Biros, IJCAI 2019, arXiv:1902.10298): the adjoint of Chen et al. (NeurIPS 2018)
assumes the forward map can be run backwards, but a step ``z ↦ z + dt·f(z)`` is guaranteed invertible only when
``dt·Lip(f) < 1``. The ReLU field ``f(z) = −K·relu(z)`` (an :class:`MLPField` with ``W1 = I``, ``W2 = −K·I``,
no biases) sends a positive coordinate to ``(1 − dt·K)`` times itself and leaves a negative one alone; for
``dt·K ≥ 1`` the step folds the plane, and ``a`` and ``b = a + dt·f(a)`` have the same image.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import anode_core as ac
from anode_lab.experiments.artifacts import numeric, write_csv, write_json
from anode_lab.experiments.context import RunContext, RunResult
from anode_lab.experiments.demos.common import device_and_dtype, explain
from anode_lab.experiments.demos.figures import plot_columns
from anode_lab.experiments.fields import MLPField
from anode_lab.specs.demo import DemoSpec
from anode_lab.status import RunStatus

GAIN = 4.0
INPUT = (1.0, 0.5)
GRID = torch.linspace(-2.0, 2.0, 17, dtype=torch.float64).tolist()
FOLD_TOLERANCE = 1e-12
"""Two outputs closer than this (relative to the input) count as the same point."""


def folding_field(gain: float = GAIN) -> MLPField:
    """``f(z) = −gain·relu(z)`` on the plane, as an MLP field with fixed weights."""
    field = MLPField(2, hidden=2, activation="relu")
    eye, zero = torch.eye(2), torch.zeros(2)
    field.net.load_state_dict({"0.weight": eye, "0.bias": zero, "2.weight": -gain * eye, "2.bias": zero})
    return field


def reverse(problem: ac.Problem, z: Tensor) -> Tensor:
    """What the adjoint's reconstruction returns from the output: Euler steps with ``−dt``."""
    with torch.no_grad():
        for n in range(problem.steps, 0, -1):
            z = problem.solver.step(problem.tuple_field, problem.time(n), (z,), -problem.dt)[0]
    return z


def run(spec: DemoSpec, ctx: RunContext) -> RunResult:
    device, dtype = device_and_dtype(spec)
    field = folding_field().to(device, dtype)
    a = torch.tensor([INPUT], device=device, dtype=dtype)
    steps = spec.steps or ()
    rows: list[dict[str, Any]] = []
    for n in steps:
        if ctx.should_stop():
            return RunResult(RunStatus.CANCELLED, {}, f"stopped after {len(rows)} of {len(steps)} values of N_t")
        problem = ac.ODEBlock(field, steps=n, solver=ac.Euler()).problem(a)
        with torch.no_grad():
            b = problem.step(a, 0)
            out_a = problem.advance(a, 0, n)
            out_b = problem.advance(b, 0, n)
        back = reverse(problem, out_a)
        gap = (out_a - out_b).norm().item()
        distance = (a - b).norm().item()
        row: dict[str, Any] = {
            "steps": n, "dt": 1.0 / n, "dt_lipschitz": GAIN / n,
            "a_x": a[0, 0].item(), "a_y": a[0, 1].item(), "b_x": b[0, 0].item(), "b_y": b[0, 1].item(),
            "out_a_x": out_a[0, 0].item(), "out_a_y": out_a[0, 1].item(),
            "out_b_x": out_b[0, 0].item(), "out_b_y": out_b[0, 1].item(),
            "input_distance": distance, "output_gap": gap, "folds": int(gap <= FOLD_TOLERANCE * distance),
            "reverse_x": back[0, 0].item(), "reverse_y": back[0, 1].item(),
            "reverse_error_to_a": (back - a).norm().item(), "reverse_error_to_b": (back - b).norm().item(),
        }
        rows.append(row)
        ctx.on_metrics(len(rows) - 1, numeric(row))
        ctx.on_progress(len(rows), len(steps), f"N_t={n}")

    first = rows[0]
    problem = ac.ODEBlock(field, steps=int(first["steps"]), solver=ac.Euler()).problem(a)
    points = torch.tensor([[x, y] for y in GRID for x in GRID], device=device, dtype=dtype)
    with torch.no_grad():
        images = problem.step(points, 0)
    write_csv(ctx, "fold_grid.csv", [
        {"x": p[0], "y": p[1], "step_x": q[0], "step_y": q[1]}
        for p, q in zip(points.tolist(), images.tolist(), strict=True)
    ])
    write_csv(ctx, "pairs.csv", rows)
    plot_columns(ctx, "pairs", rows, x="steps", columns={"input_distance": "distance of the inputs a, b",
                                                         "output_gap": "distance after one Euler step"},
                 title="One Euler step maps two inputs to one point when dt·K ≥ 1", x_label="N_t (Euler steps)",
                 y_label="distance (state units)", log_x=True, log_y=True)
    write_json(ctx, "pair.json", {
        "gain": GAIN, "steps": first["steps"], "input_a": [first["a_x"], first["a_y"]],
        "input_b": [first["b_x"], first["b_y"]], "output_a": [first["out_a_x"], first["out_a_y"]],
        "output_b": [first["out_b_x"], first["out_b_y"]], "reverse_of_output": [first["reverse_x"], first["reverse_y"]],
    })

    folds = [str(r["steps"]) for r in rows if r["folds"]]
    keeps = [str(r["steps"]) for r in rows if not r["folds"]]
    summary: dict[str, float | int | str] = {
        "gain": GAIN, "steps": int(first["steps"]),
        "input_a": _pair(first, "a"), "input_b": _pair(first, "b"), "output_a": _pair(first, "out_a"),
        "output_b": _pair(first, "out_b"), "reverse_of_output": _pair(first, "reverse"),
        "output_gap": float(first["output_gap"]),
        "input_distance": float(first["input_distance"]),
        "folds_at": ", ".join(folds) or "none", "separates_at": ", ".join(keeps) or "none",
    }
    n = int(first["steps"])
    findings = [
        f"N_t = {n} (dt·K = {GAIN / n:g}): a = {summary['input_a']} and b = {summary['input_b']}, "
        f"{summary['input_distance']:.3g} apart, give {summary['output_a']} and {summary['output_b']} "
        f"(outputs {summary['output_gap']:.1e} apart)",
        f"the reverse solve from a's output returns {summary['reverse_of_output']}, "
        f"{float(first['reverse_error_to_a']):.3g} from a and {float(first['reverse_error_to_b']):.3g} from b",
        f"two inputs share an output at N_t = {summary['folds_at']}; they stay apart at N_t = "
        f"{summary['separates_at']} (where dt·K < 1)",
    ]
    missed = [r for r in rows if not r["folds"] and float(r["reverse_error_to_a"]) > FOLD_TOLERANCE]
    if missed:
        findings.append(
            f"even where the step is invertible the reverse Euler steps miss a (by "
            f"{float(missed[0]['reverse_error_to_a']):.3g} at N_t = {missed[0]['steps']}): a reverse step is not the "
            "inverse of a forward one"
        )
    explain(ctx, spec, findings, summary)
    return RunResult(RunStatus.SUCCEEDED, summary)


def _pair(row: dict[str, Any], prefix: str) -> str:
    return f"({float(row[prefix + '_x']):.6g}, {float(row[prefix + '_y']):.6g})"
