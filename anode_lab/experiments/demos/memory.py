"""Demo ``memory``: bytes held for backward against N_t, measured next to the analytic model of ANODE §3.

Gholami, Keutzer & Biros, IJCAI 2019 (arXiv:1902.10298), §3: with L blocks, S bytes per block input, s stages
and A bytes saved per field evaluation, Direct keeps ``L·N_t·s·A``, ANODE ``L·S + s·N_t·A``, ANODE with ``c``
checkpoints ``(L + c)·S + s·A`` (Griewank & Walther's revolve), the adjoint of Chen et al. ``L·S + A`` (and
``L·N_t·S`` more with stored states). :class:`anode_core.MemoryMeter` measures what autograd and the methods
actually hold.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

import anode_core as ac
from anode_lab.experiments.artifacts import numeric, write_csv
from anode_lab.experiments.context import RunContext, RunResult
from anode_lab.experiments.demos.common import device_and_dtype, explain, seeded
from anode_lab.experiments.fields import MLPField
from anode_lab.specs.demo import DemoSpec
from anode_lab.status import RunStatus

BLOCKS, DIM, HIDDEN, BATCH = 2, 16, 64, 256
CHECKPOINTS = 2
METHODS: dict[str, ac.GradientMethod] = {
    "direct": ac.Direct(), "anode": ac.Anode(), f"anode(c={CHECKPOINTS})": ac.Anode(checkpoints=CHECKPOINTS),
    "adjoint": ac.Adjoint(), "adjoint(stored)": ac.Adjoint(reconstruct=False),
}


def model_bytes(model: ac.MemoryModel, label: str) -> int:
    """The analytic bytes of method ``label`` (a key of :data:`METHODS`)."""
    return {
        "direct": model.direct(), "anode": model.anode(), f"anode(c={CHECKPOINTS})": model.anode(CHECKPOINTS),
        "adjoint": model.adjoint(), "adjoint(stored)": model.adjoint(reconstruct=False),
    }[label]


def run(spec: DemoSpec, ctx: RunContext) -> RunResult:
    device, dtype = device_and_dtype(spec, "float32")
    with seeded(spec.seed):
        fields = [MLPField(DIM, HIDDEN, "relu").to(device, dtype) for _ in range(BLOCKS)]
        x = torch.randn(BATCH, DIM, dtype=torch.float64).to(device, dtype)
        y = torch.randn(BATCH, DIM, dtype=torch.float64).to(device, dtype)
    eval_bytes = ac.saved_bytes_of_one_evaluation(fields[0], x)

    def loss(model: nn.Module) -> Tensor:
        out: Tensor = model(x)
        return 0.5 * ((out - y) ** 2).sum() / BATCH

    solvers, steps = spec.solvers or (), spec.steps or ()
    total = len(solvers) * len(steps) * len(METHODS)
    rows: list[dict[str, Any]] = []
    for solver in solvers:
        for n in steps:
            model = nn.Sequential(*[ac.ODEBlock(f, steps=n, solver=solver) for f in fields])
            memory = ac.MemoryModel(BLOCKS, x.numel() * x.element_size(), ac.solver_named(solver).stages, n,
                                    eval_bytes)
            for label, method in METHODS.items():
                if ctx.should_stop():
                    write_csv(ctx, "memory.csv", rows)
                    return RunResult(RunStatus.CANCELLED, {}, f"stopped after {len(rows)} of {total} measurements")
                m = ac.measure_gradient(model, loss, method, device=device)
                expected = model_bytes(memory, label)
                rows.append({
                    "solver": solver, "steps": n, "method": label, "peak_bytes": m.peak_bytes,
                    "model_bytes": expected, "ratio": m.peak_bytes / expected, "cuda_peak_bytes": m.cuda_peak_bytes,
                    "seconds": m.seconds, "nfe_forward": m.nfe_forward, "nfe_backward": m.nfe_backward,
                })
                ctx.on_metrics(len(rows) - 1, numeric(rows[-1]))
                ctx.on_progress(len(rows), total, f"{solver} N_t={n} {label}")
    write_csv(ctx, "memory.csv", rows)

    summary: dict[str, float | int | str] = {
        "blocks": BLOCKS, "state_bytes": x.numel() * x.element_size(), "eval_bytes": eval_bytes,
    }
    for label in METHODS:
        ratios = [float(r["ratio"]) for r in rows if r["method"] == label]
        summary[f"ratio_min/{label}"], summary[f"ratio_max/{label}"] = min(ratios), max(ratios)
    for solver in solvers:
        for label in METHODS:
            peaks = [int(r["peak_bytes"]) for r in rows if r["solver"] == solver and r["method"] == label]
            summary[f"growth/{solver}/{label}"] = peaks[-1] / peaks[0]
    span = f"N_t = {steps[0]} to {steps[-1]}"
    findings = [
        f"{label}: measured / model between {summary[f'ratio_min/{label}']:.2f} and "
        f"{summary[f'ratio_max/{label}']:.2f}; from {span} its bytes grow "
        + ", ".join(f"{summary[f'growth/{s}/{label}']:.3g}× ({s})" for s in solvers)
        for label in METHODS
    ]
    findings.append("the model is a leading-order count: it leaves out the loss's own saved tensors and counts "
                    "twice the storage that consecutive evaluations share, so ratios some tens of percent off 1, "
                    "most at small N_t, are within what it claims")
    explain(ctx, spec, findings, summary)
    return RunResult(RunStatus.SUCCEEDED, summary)
