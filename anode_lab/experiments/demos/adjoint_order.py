"""Demo ``adjoint-order``: the adjoint's gradient error against the exact gradient falls only as dt^p.

ANODE §2 and §4 (Gholami, Keutzer & Biros, IJCAI 2019, arXiv:1902.10298): the discretised continuous adjoint of
Chen et al. (NeurIPS 2018) is not the gradient of the discrete network; the difference is O(dt^p) for a
solver of order p. ANODE (and Direct) compute that gradient exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

import anode_core as ac
from anode_lab.experiments.artifacts import numeric, write_csv, write_json
from anode_lab.experiments.context import RunContext, RunResult
from anode_lab.experiments.demos.common import device_and_dtype, explain, seeded
from anode_lab.experiments.demos.figures import plot_columns
from anode_lab.experiments.fields import MLPField
from anode_lab.experiments.slopes import fit_loglog
from anode_lab.specs.demo import DemoSpec
from anode_lab.status import RunStatus

DIM, HIDDEN, BATCH = 4, 16, 32
METHODS = {"anode": ac.Anode(), "adjoint": ac.Adjoint(), "adjoint(stored)": ac.Adjoint(reconstruct=False)}


def run(spec: DemoSpec, ctx: RunContext) -> RunResult:
    device, dtype = device_and_dtype(spec)
    with seeded(spec.seed):
        field = MLPField(DIM, HIDDEN, "relu").to(device, dtype)
        x = torch.randn(BATCH, DIM, dtype=torch.float64).to(device, dtype)
        y = torch.randn(BATCH, DIM, dtype=torch.float64).to(device, dtype)

    def loss(model: nn.Module) -> Tensor:
        out: Tensor = model(x)
        return 0.5 * ((out - y) ** 2).sum() / BATCH

    solvers = spec.solvers or ()
    steps = spec.steps or ()
    rows: list[dict[str, Any]] = []
    for solver in solvers:
        for n in steps:
            if ctx.should_stop():
                write_csv(ctx, "errors.csv", rows)
                stopped = f"stopped after {len(rows)} of {len(solvers) * len(steps)} runs"
                return RunResult(RunStatus.CANCELLED, {}, stopped)
            block = ac.ODEBlock(field, steps=n, solver=solver)
            reference = ac.measure_gradient(block, loss, ac.Direct())
            row: dict[str, Any] = {"solver": solver, "steps": n, "dt": 1.0 / n}
            for label, method in METHODS.items():
                grads = ac.measure_gradient(block, loss, method).grads
                cmp = ac.compare_gradients(reference.grads, grads)
                row[f"{label}_rel_error"] = cmp.rel_error
                row[f"{label}_cosine"] = cmp.cosine
            row["reconstruction_error"] = ac.reconstruction_error(block.problem(x), x)
            rows.append(row)
            ctx.on_metrics(len(rows) - 1, numeric(row))
            ctx.on_progress(len(rows), len(solvers) * len(steps), f"{solver} N_t={n}")

    fits: list[dict[str, float | int | str]] = []
    for solver in solvers:
        mine = [r for r in rows if r["solver"] == solver]
        for label in ("adjoint", "adjoint(stored)"):
            slope, intercept = fit_loglog([r["steps"] for r in mine], [r[f"{label}_rel_error"] for r in mine])
            fits.append({"solver": solver, "method": label, "slope": slope, "intercept": intercept,
                         "expected_slope": -ac.solver_named(solver).order})
    write_csv(ctx, "errors.csv", rows)
    write_json(ctx, "slopes.json", fits)
    plot_columns(ctx, "errors", rows, x="steps", split="solver",
                 columns={f"{label}_rel_error": label for label in METHODS},
                 title="Gradient error against Direct vs N_t (ANODE: 0, not drawn on a log axis)",
                 x_label="N_t (steps per block)", y_label="‖g − g_Direct‖ / ‖g_Direct‖ (relative)",
                 log_x=True, log_y=True)

    summary: dict[str, float | int | str] = {
        "max_rel_error/anode": max(float(r["anode_rel_error"]) for r in rows),
    }
    for fit in fits:
        summary[f"slope/{fit['solver']}/{fit['method']}"] = fit["slope"]
        summary[f"expected_slope/{fit['solver']}"] = fit["expected_slope"]
    for solver in solvers:
        first = next(r for r in rows if r["solver"] == solver)
        summary[f"adjoint_rel_error/{solver}/N_t={first['steps']}"] = first["adjoint_rel_error"]
    findings = [
        f"{fit['solver']}: the adjoint's relative error falls with slope {fit['slope']:.2f} in log-log "
        f"({fit['method']}; the solver's order predicts {fit['expected_slope']})"
        for fit in fits
    ] + [
        f"{s}: at N_t = {steps[0]} the adjoint's gradient is off by "
        f"{summary[f'adjoint_rel_error/{s}/N_t={steps[0]}']:.1%} of its norm" for s in solvers
    ] + [f"ANODE's largest relative error against Direct: {summary['max_rel_error/anode']:.1e} (rounding)"]
    explain(ctx, spec, findings, summary)
    return RunResult(RunStatus.SUCCEEDED, summary)

