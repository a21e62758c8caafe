"""Demo ``adaptive-adjoint``: what a tolerance buys the continuous adjoint on adaptive steps, and what ANODE gets
for free.

An adaptive solve (Dormand & Prince 1980) is a computation with step sizes the controller chose. Its exact
gradient, those sizes held fixed, is what Direct and ANODE return (the adaptive checkpoint adjoint: Zhuang et al.,
"Adaptive Checkpoint Adjoint Method", ICML 2020). The continuous adjoint of Chen et al. (NeurIPS 2018) solves a
second ODE backwards with its own steps, so its gradient is off by an amount that shrinks with the tolerance
(ANODE §2: Gholami, Keutzer & Biros, IJCAI 2019, arXiv:1902.10298, for the fixed-step case).
"""

from __future__ import annotations

from typing import Any

import anode_core as ac
from anode_lab.experiments.artifacts import numeric, write_csv, write_json
from anode_lab.experiments.context import RunContext, RunResult
from anode_lab.experiments.demos.common import device_and_dtype, explain, smooth_problem
from anode_lab.experiments.demos.figures import plot_columns
from anode_lab.experiments.slopes import fit_loglog
from anode_lab.specs.common import MAX_STEP_LIMIT
from anode_lab.specs.demo import DemoSpec
from anode_lab.status import RunStatus

ATOL_RATIO = 0.01
"""atol = rtol × this, as in a compare run's default."""
ROUNDING = 1e-10
"""A relative difference from Direct below this is rounding (ANODE replays the same steps: 0 on a CPU)."""
METHODS: dict[str, ac.GradientMethod] = {"direct": ac.Direct(), "anode": ac.Anode(), "adjoint": ac.Adjoint()}


def run(spec: DemoSpec, ctx: RunContext) -> RunResult:
    device, dtype = device_and_dtype(spec)
    problem = smooth_problem(spec.seed, device, dtype)
    solvers, tolerances = spec.solvers or (), spec.tolerances or ()
    total = len(solvers) * len(tolerances)
    rows: list[dict[str, Any]] = []
    for solver in solvers:
        for rtol in tolerances:
            if ctx.should_stop():
                write_csv(ctx, "errors.csv", rows)
                return RunResult(RunStatus.CANCELLED, {}, f"stopped after {len(rows)} of {total} tolerances")
            scheme = ac.solver_named(solver, rtol=rtol, atol=rtol * ATOL_RATIO, max_steps=MAX_STEP_LIMIT)
            block = ac.ODEBlock(problem.field, solver=scheme)
            _, settled = block.problem(problem.x).settle(problem.x)
            assert settled.grid is not None  # settle() always puts the problem on its accepted grid
            row: dict[str, Any] = {"solver": solver, "rtol": rtol, "atol": rtol * ATOL_RATIO,
                                   "steps": len(settled.grid), "trials": settled.grid.trials}
            measured = {label: ac.measure_gradient(block, problem.loss, m, device=device)
                        for label, m in METHODS.items()}
            for label, m in measured.items():
                if label != "direct":
                    cmp = ac.compare_gradients(measured["direct"].grads, m.grads)
                    row[f"{label}_rel_error"], row[f"{label}_cosine"] = cmp.rel_error, cmp.cosine
            for label, m in measured.items():
                row |= {f"{label}_nfe_forward": m.nfe_forward, f"{label}_nfe_backward": m.nfe_backward,
                        f"{label}_peak_bytes": m.peak_bytes}
            rows.append(row)
            ctx.on_metrics(len(rows) - 1, numeric(row))
            ctx.on_progress(len(rows), total, f"{solver} rtol={rtol:g}")
    write_csv(ctx, "errors.csv", rows)

    fits = []
    for solver in solvers:
        mine = [r for r in rows if r["solver"] == solver]
        slope, intercept = fit_loglog([r["rtol"] for r in mine], [r["adjoint_rel_error"] for r in mine])
        fits.append({"solver": solver, "method": "adjoint", "slope": slope, "intercept": intercept,
                     "expected_slope": 1})
    write_json(ctx, "slopes.json", fits)
    plot_columns(ctx, "errors", rows, x="rtol", split="solver",
                 columns={"anode_rel_error": "anode", "adjoint_rel_error": "adjoint"},
                 title="Gradient error against Direct vs rtol (ANODE: 0, not drawn on a log axis)",
                 x_label="rtol (relative tolerance)", y_label="‖g − g_Direct‖ / ‖g_Direct‖ (relative)",
                 log_x=True, log_y=True)
    plot_columns(ctx, "evaluations", rows, x="rtol", split="solver",
                 columns={"adjoint_nfe_forward": "forward solve", "anode_nfe_backward": "ANODE backward",
                          "adjoint_nfe_backward": "adjoint backward"},
                 title="Field evaluations vs rtol: each digit of tolerance costs steps",
                 x_label="rtol (relative tolerance)", y_label="field evaluations (count)", log_x=True, log_y=True)

    summary, findings = _report(rows, fits)
    explain(ctx, spec, findings, summary)
    return RunResult(RunStatus.SUCCEEDED, summary)


def _report(rows: list[dict[str, Any]], fits: list[dict[str, Any]]) -> tuple[dict[str, float | int | str], list[str]]:
    """Headline numbers and the sentences of ``explanation.md``, from the measured rows."""
    summary: dict[str, float | int | str] = {
        "max_rel_error/anode": max(float(r["anode_rel_error"]) for r in rows),
    }
    exact = float(summary["max_rel_error/anode"]) < ROUNDING
    findings = []
    for fit in fits:
        solver = fit["solver"]
        mine = [r for r in rows if r["solver"] == solver]
        first, last = mine[0], mine[-1]
        summary |= {
            f"slope/{solver}/adjoint": fit["slope"], f"expected_slope/{solver}": fit["expected_slope"],
            f"adjoint_rel_error/{solver}/first": first["adjoint_rel_error"],
            f"adjoint_rel_error/{solver}/last": last["adjoint_rel_error"],
            f"nfe_forward/{solver}/first": first["adjoint_nfe_forward"],
            f"nfe_forward/{solver}/last": last["adjoint_nfe_forward"],
            f"adjoint_nfe_backward/{solver}/last": last["adjoint_nfe_backward"],
            f"anode_nfe_backward/{solver}/last": last["anode_nfe_backward"],
            f"adjoint_peak_bytes/{solver}": max(int(r["adjoint_peak_bytes"]) for r in mine),
            f"anode_peak_bytes/{solver}/last": last["anode_peak_bytes"],
        }
        findings += [
            f"{solver}: the adjoint's relative error "
            f"{'falls' if last['adjoint_rel_error'] < first['adjoint_rel_error'] else 'goes'} from "
            f"{first['adjoint_rel_error']:.2e} at rtol = "
            f"{first['rtol']:g} to {last['adjoint_rel_error']:.2e} at rtol = {last['rtol']:g}, a log-log slope of "
            f"{fit['slope']:.2f} against rtol (1 would be proportional)",
            f"{solver}: the forward solve takes {first['adjoint_nfe_forward']} field evaluations at rtol = "
            f"{first['rtol']:g} ({first['steps']} accepted steps) and {last['adjoint_nfe_forward']} at rtol = "
            f"{last['rtol']:g} ({last['steps']} accepted steps); the adjoint's backward solve takes "
            f"{first['adjoint_nfe_backward']} and {last['adjoint_nfe_backward']}",
            f"{solver}: ANODE's backward replays the accepted steps once: {first['anode_nfe_backward']} and "
            f"{last['anode_nfe_backward']} evaluations, for a gradient "
            f"{'equal to' if exact else 'NOT equal to'} Direct's",
            f"{solver}: bytes held for backward, at most {summary[f'adjoint_peak_bytes/{solver}']} for the adjoint at "
            f"every tolerance; ANODE's grow with the accepted steps, to {last['anode_peak_bytes']} at rtol = "
            f"{last['rtol']:g}",
        ]
    findings.append(f"ANODE's largest relative error against Direct: {summary['max_rel_error/anode']:.1e}"
                    f"{' (rounding)' if exact else ', above rounding'}")
    return summary, findings
