"""Gradient-comparison sweep: every method against the exact Direct gradient over a grid of solvers and N_t
(or, for an adaptive solver, tolerances).

For each setting (dtype, activation, weight scale, solver, N_t or rtol) one seeded model is built and its exact
discretize-then-optimize gradient computed by Direct; every method of the spec is then measured on the same
model and batch (:func:`anode_core.measure_gradient`) and compared with it (:func:`anode_core.compare_gradients`):
relative error, cosine, sign agreement, the adjoint's reverse-reconstruction error, bytes held for backward next
to the analytic model of ANODE §3 (Gholami, Keutzer & Biros, IJCAI 2019, arXiv:1902.10298), time and field
evaluations. The log-log slope of the adjoint's error against N_t estimates the order of its O(dt^p) error
(ANODE §2; Chen et al., NeurIPS 2018); on an adaptive solver it is fitted against rtol, where the adjoint's
error should shrink in proportion to the tolerance (slope 1). An adaptive cell's ``steps`` is the number of
accepted steps per block of its Direct reference solve. The numbers are a pure function of the spec; times and
bytes are measured.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

import anode_core as ac
from anode_core.problem import Problem
from anode_core.replay import frozen_buffers
from anode_core.watch import watching_solves
from anode_lab.experiments.artifacts import numeric, write_csv
from anode_lab.experiments.context import RunContext, RunResult
from anode_lab.experiments.fields import ConvField, MLPField
from anode_lab.experiments.slopes import fit_slope
from anode_lab.experiments.sweep_table import (
    COLUMNS,
    SLOPE_COLUMNS,
    parts,
    setting_key,
    slope_rows,
    summary_of,
    write_tables,
)
from anode_lab.experiments.threads import torch_threads
from anode_lab.experiments.train import DTYPES, resolve_device
from anode_lab.failures import is_out_of_memory
from anode_lab.specs.common import SOLVERS, GradientSpec, OdeSpec
from anode_lab.specs.compare import Cell, CompareSpec
from anode_lab.status import RunStatus

__all__ = ["COLUMNS", "SLOPE_COLUMNS", "CellFailedError", "fit_slope", "parts", "run_compare", "run_compare_part",
           "slope_rows"]


class CellFailedError(ValueError):
    """A cell's solve failed in a way the spec can fix (an adaptive solve past its step limit); the rows done
    before it are in ``results.csv``."""


def run_compare(spec: CompareSpec, ctx: RunContext) -> RunResult:
    """Run the sweep of ``spec``; write ``results.csv`` and ``slopes.csv``; report each cell as metrics step ``i``.

    ``ctx.should_stop()`` is checked before every cell; a stop ends the run *cancelled* with the rows so far.
    """
    with torch_threads(spec.threads):
        return _sweep(spec, ctx)


def run_compare_part(spec: CompareSpec, part: int, ctx: RunContext) -> tuple[RunResult, list[dict[str, Any]]]:
    """Measure only the cells of ``parts(spec)[part]`` (metrics step ``i`` per cell, progress within the part);
    writes no table: the fanned-out sweep's last part writes them from every part's rows."""
    cells = parts(spec)[part]
    with torch_threads(spec.threads):
        rows, stopped = _measure(spec, cells, ctx, offset=0)
    if stopped:
        return RunResult(RunStatus.CANCELLED, {"cells": len(rows)}), rows
    return RunResult(RunStatus.SUCCEEDED, {"cells": len(rows)}), rows


def _measure(spec: CompareSpec, cells: list[Cell], ctx: RunContext, offset: int,
             done: list[dict[str, Any]] | None = None) -> tuple[list[dict[str, Any]], bool]:
    """Rows of ``cells`` in order, and whether a stop ended it early; ``CellFailedError`` (after writing the
    rows so far, ``done`` first, when ``done`` is given) for an adaptive cell whose solve failed."""
    device = resolve_device(spec.device)
    rows: list[dict[str, Any]] = []
    setting: _Setting | None = None
    for number, cell in enumerate(cells):
        if ctx.should_stop():
            return rows, True
        try:
            if setting is None or not setting.serves(cell):
                setting = _Setting(spec, cell, device)
            row = setting.measure(cell, spec.timing_repeats)
        except RuntimeError as exc:  # the adaptive controller's step limit, underflow or a non-finite state
            if cell.rtol is None or is_out_of_memory(exc):  # memory is the machine's limit, not the step limit's
                raise
            if done is not None:
                write_csv(ctx, "results.csv", [*done, *rows], COLUMNS)
            raise CellFailedError(_failure(spec, cell, exc)) from exc
        rows.append(row)
        ctx.on_metrics(cell.index, numeric(row))
        ctx.on_progress(offset + number + 1, offset + len(cells), f"{cell.solver} {cell.where} {cell.label}")
    return rows, False


def _sweep(spec: CompareSpec, ctx: RunContext) -> RunResult:
    grid = spec.grid()
    rows, stopped = _measure(spec, grid, ctx, offset=0, done=[])
    if stopped:
        write_csv(ctx, "results.csv", rows, COLUMNS)
        return RunResult(RunStatus.CANCELLED, summary_of(spec, rows), f"stopped after {len(rows)} of {len(grid)} cells")
    write_tables(spec, rows, ctx)
    return RunResult(RunStatus.SUCCEEDED, summary_of(spec, rows))


class _Setting:
    """One seeded model at one (dtype, activation, weight scale, solver, N_t or tolerances), and its Direct
    reference."""

    def __init__(self, spec: CompareSpec, cell: Cell, device: torch.device) -> None:
        self.key = setting_key(cell)
        dtype = DTYPES[cell.dtype]
        self.model, self.x, self.y = build_problem(spec, cell, device, dtype)
        self.solver = cell_solver(spec, cell)
        kind = SOLVERS[cell.solver].kind
        fields = [block.field for block in ac.ode_blocks(self.model)]
        self.memory = ac.MemoryModel(
            blocks=len(fields),
            state_bytes=self.x.numel() * self.x.element_size(),
            stages=self.solver.stages,
            steps=cell.steps + (kind == "reversible"),  # f(t_0, z_0) (f̂_0, v_0) before its N_t steps
            eval_bytes=ac.saved_bytes_of_one_evaluation(fields[0], self.x),
        ) if spec.model is None and cell.steps is not None else None
        # a whole model's states differ from its input, an adaptive solve's N_t is its own: no analytic model
        self.reference = ac.measure_gradient(self.model, self.loss, ac.Direct(), device=device)
        self.device = device
        self.steps = cell.steps if cell.steps is not None else accepted_steps(self.model, self.x)
        # the adjoint's reverse solve on a fixed grid; an adaptive one picks its reverse steps on the augmented
        # state, so a reverse solve of z alone would not be the state it differentiates at
        fixed = kind in ("fixed", "implicit")
        self.reconstruction = _worst(ac.block_reconstruction_errors(self.model, self.x)) if fixed else None
        self.fd_rel_error = (
            finite_difference_error(
                self.model, self.loss, self.reference.grads, spec.fd_check, spec.epsilon(cell.dtype), spec.seed
            )
            if spec.fd_check
            else None
        )

    def serves(self, cell: Cell) -> bool:
        return setting_key(cell) == self.key

    def loss(self, model: nn.Module) -> Tensor:
        out: Tensor = model(self.x)
        if self.y.dtype == torch.int64:  # class labels of a whole model
            return torch.nn.functional.cross_entropy(out, self.y)
        return 0.5 * ((out - self.y) ** 2).sum() / self.x.shape[0]

    def measure(self, cell: Cell, repeats: int = 1) -> dict[str, Any]:
        """One cell: the gradient's error against Direct's, its memory, and its times as the medians of
        ``repeats`` measurements (a single shot of a millisecond solve is mostly noise)."""
        method = ac.gradient_named(cell.method.method, **cell.method.knobs())
        m = self.reference if isinstance(method, ac.Direct) else ac.measure_gradient(
            self.model, self.loss, method, device=self.device
        )
        again = [ac.measure_gradient(self.model, self.loss, method, device=self.device) for _ in range(repeats - 1)]
        forward_seconds = statistics.median([m.forward_seconds, *(r.forward_seconds for r in again)])
        backward_seconds = statistics.median([m.backward_seconds, *(r.backward_seconds for r in again)])
        cmp = ac.compare_gradients(self.reference.grads, m.grads)
        model_bytes = _model_bytes(self.memory, cell.method) if self.memory is not None else None
        return {
            "cell": cell.index, "dtype": cell.dtype, "activation": cell.activation, "weight_scale": cell.weight_scale,
            "solver": cell.solver, "order": self.solver.order, "steps": self.steps, "rtol": cell.rtol,
            "atol": cell.atol, "method": cell.label,
            "exact": int(method.exact), "rel_error": cmp.rel_error, "cosine": cmp.cosine,
            "sign_agreement": cmp.sign_agreement,
            "worst_parameter_rel_error": max(p.rel_error for p in cmp.per_parameter),
            "reconstruction_error": self.reconstruction if _reconstructs(cell.method) else None,
            "peak_bytes": m.peak_bytes, "model_bytes": model_bytes,
            "memory_ratio": m.peak_bytes / model_bytes if model_bytes else math.nan,
            "cuda_peak_bytes": m.cuda_peak_bytes, "forward_seconds": forward_seconds,
            "backward_seconds": backward_seconds, "nfe_forward": m.nfe_forward, "nfe_backward": m.nfe_backward,
            "loss": m.loss, "fd_rel_error": self.fd_rel_error,
        }


def build_problem(
    spec: CompareSpec, cell: Cell, device: torch.device, dtype: torch.dtype
) -> tuple[nn.Module, Tensor, Tensor]:
    """The seeded model (``spec.blocks`` ODE blocks in a row), inputs and targets of one setting.

    The weights depend on the seed (and the field's shape) only, so every cell of a sweep differentiates the
    same field; the weight scale multiplies them afterwards.
    """
    if spec.model is not None:
        return _whole_model(spec, cell, device, dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        fields: list[nn.Module]
        if spec.field == "mlp":
            fields = [MLPField(spec.state_dim, spec.field_hidden, cell.activation) for _ in range(spec.blocks)]
        else:
            fields = [ConvField(spec.map_channels, cell.activation, norm="group") for _ in range(spec.blocks)]
    solver = cell_solver(spec, cell)
    model = nn.Sequential(*[ac.ODEBlock(f, steps=cell.steps, solver=solver) for f in fields])
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(cell.weight_scale)
    gen = torch.Generator().manual_seed(spec.seed)
    shape = (spec.batch, *spec.example_shape)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    y = torch.randn(shape, generator=gen, dtype=torch.float64)
    return model.to(device=device, dtype=dtype), x.to(device, dtype), y.to(device, dtype)


def cell_ode(spec: CompareSpec, cell: Cell) -> OdeSpec:
    """The ODE settings of ``cell``: its solver with N_t, or with its tolerances and the spec's step limit."""
    if cell.rtol is None:
        return OdeSpec(solver=cell.solver, steps=cell.steps, activation=cell.activation)
    return OdeSpec(solver=cell.solver, steps=None, rtol=cell.rtol, atol=cell.atol, step_limit=spec.step_limit,
                   activation=cell.activation)


def cell_solver(spec: CompareSpec, cell: Cell) -> ac.Solver:
    ode = cell_ode(spec, cell)
    return ac.solver_named(ode.solver, **ode.solver_knobs())


def accepted_steps(model: nn.Module, x: Tensor) -> int:
    """Accepted steps per adaptive solve of ``model(x)`` (mean over its solves, rounded): each solve seen is
    settled again by the controller, which is deterministic, so this is the grid every method differentiates."""
    seen: list[tuple[Problem, Tensor]] = []

    def record(problem: Problem, z0: Tensor) -> Problem:
        seen.append((problem, z0.detach()))
        return problem

    with torch.no_grad(), torch.random.fork_rng(devices=[]), frozen_buffers(model), watching_solves(record):
        model(x)
    with torch.no_grad():
        counts = [problem.settle(z0)[1].steps for problem, z0 in seen]
    return round(statistics.mean(counts))


def _whole_model(
    spec: CompareSpec, cell: Cell, device: torch.device, dtype: torch.dtype
) -> tuple[nn.Module, Tensor, Tensor]:
    """``spec.model`` (built in or a plugin) built as a train run with the cell's ODE settings, on seeded random
    inputs of its data set's shape and random class labels: the gradients need no real data."""
    from anode_lab.experiments.models import build_model
    from anode_lab.specs.train import LOCAL_SETS, TrainSpec, dataset_classes

    assert spec.model is not None and spec.dataset is not None
    ode = cell_ode(spec, cell)
    train = TrainSpec(model=spec.model, dataset=spec.dataset, root="." if spec.dataset in LOCAL_SETS else None,
                      ode=ode, seed=spec.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = build_model(train)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(cell.weight_scale)
    gen = torch.Generator().manual_seed(spec.seed)
    x = torch.randn((spec.batch, *spec.example_shape), generator=gen, dtype=torch.float64)
    y = torch.randint(0, dataset_classes(spec.dataset), (spec.batch,), generator=gen)
    return model.to(device=device, dtype=dtype), x.to(device, dtype), y.to(device)


def finite_difference_error(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], Tensor],
    grads: dict[str, Tensor],
    entries: int,
    epsilon: float,
    seed: int,
) -> float:
    """``‖g_fd − g‖ / ‖g_fd‖`` over ``entries`` seeded parameter entries, ``g_fd`` by central differences.

    Checks that the reference itself is the gradient of the computed loss (the discrete network); with a ReLU
    field an entry whose ± ``epsilon`` straddles a kink can disagree at O(1), which is itself worth seeing.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    sizes = torch.tensor([p.numel() for _, p in named])
    gen = torch.Generator().manual_seed(seed)
    flat = torch.randperm(int(sizes.sum()), generator=gen)[:entries].tolist()
    offsets = torch.cumsum(sizes, 0).tolist()
    fd, exact = [], []
    with torch.no_grad(), ac.use_gradient(model, ac.Direct()):
        for index in flat:
            k = next(i for i, end in enumerate(offsets) if index < end)
            name, p = named[k]
            local = index - (offsets[k] - sizes[k].item())
            view = p.view(-1)
            original = view[local].item()
            view[local] = original + epsilon
            plus = loss_fn(model).item()
            view[local] = original - epsilon
            minus = loss_fn(model).item()
            view[local] = original
            fd.append((plus - minus) / (2 * epsilon))
            exact.append(grads[name].reshape(-1)[local].item())
    diff = math.sqrt(sum((a - b) ** 2 for a, b in zip(fd, exact, strict=True)))
    scale = math.sqrt(sum(a * a for a in fd))
    return diff / scale if scale > 0 else diff


def _worst(errors: list[float]) -> float:
    """The largest error, ``inf`` as soon as one is not finite (a reverse solve that blew up)."""
    return max(errors) if all(math.isfinite(e) for e in errors) else math.inf


def _failure(spec: CompareSpec, cell: Cell, exc: RuntimeError) -> str:
    what = str(exc).partition(": raise")[0]  # the library's own hint names its arguments, not the spec's fields
    return (f"cell {cell.index} ({cell.solver} {cell.where} {cell.label}, {cell.dtype} {cell.activation} "
            f"weight scale {cell.weight_scale:g}) failed: {what}. In the spec, raise `step_limit` (now "
            f"{spec.step_limit}) or loosen the tightest of `tolerances` (raise rtol); results.csv keeps the rows done "
            f"before it ({cell.index})")


def _reconstructs(gradient: GradientSpec) -> bool:
    return gradient.method == "adjoint" and gradient.reconstruct


def _model_bytes(model: ac.MemoryModel, gradient: GradientSpec) -> int:
    if gradient.method == "direct":
        return model.direct()
    if gradient.method == "anode":
        return model.anode(gradient.checkpoints)
    if gradient.method == "reversible":  # each block's final two states, one evaluation's graph at a time
        return 2 * model.blocks * model.state_bytes + model.eval_bytes
    return model.adjoint(gradient.reconstruct)
