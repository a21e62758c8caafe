"""Gradient-comparison sweep: every method against the exact Direct gradient over a grid of solvers and N_t.

For each setting (dtype, activation, weight scale, solver, N_t) one seeded model is built and its exact
discretize-then-optimize gradient computed by Direct; every method of the spec is then measured on the same
model and batch (:func:`anode_core.measure_gradient`) and compared with it (:func:`anode_core.compare_gradients`):
relative error, cosine, sign agreement, the adjoint's reverse-reconstruction error, bytes held for backward next
to the analytic model of ANODE §3 (Gholami, Keutzer & Biros, IJCAI 2019, arXiv:1902.10298), time and field
evaluations. The log-log slope of the adjoint's error against N_t estimates the order of its O(dt^p) error
(ANODE §2; Chen et al., NeurIPS 2018). The numbers are a pure function of the spec; times and bytes are measured.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

import anode_core as ac
from anode_lab.experiments.artifacts import numeric, write_csv
from anode_lab.experiments.context import RunContext, RunResult
from anode_lab.experiments.fields import ConvField, MLPField
from anode_lab.experiments.slopes import fit_loglog, fit_slope
from anode_lab.experiments.threads import torch_threads
from anode_lab.experiments.train import DTYPES, resolve_device
from anode_lab.specs.common import GradientSpec
from anode_lab.specs.compare import Cell, CompareSpec
from anode_lab.status import RunStatus

COLUMNS = (
    "cell", "dtype", "activation", "weight_scale", "solver", "order", "steps", "method", "exact",
    "rel_error", "cosine", "sign_agreement", "worst_parameter_rel_error", "reconstruction_error",
    "peak_bytes", "model_bytes", "memory_ratio", "cuda_peak_bytes", "forward_seconds", "backward_seconds",
    "nfe_forward", "nfe_backward", "loss", "fd_rel_error",
)
"""The columns of ``results.csv``, one row per cell of :meth:`CompareSpec.grid`."""
SLOPE_COLUMNS = ("dtype", "activation", "weight_scale", "solver", "method", "slope", "intercept", "expected_slope")

__all__ = ["COLUMNS", "fit_slope", "run_compare"]


def run_compare(spec: CompareSpec, ctx: RunContext) -> RunResult:
    """Run the sweep of ``spec``; write ``results.csv`` and ``slopes.csv``; report each cell as metrics step ``i``.

    ``ctx.should_stop()`` is checked before every cell; a stop ends the run *cancelled* with the rows so far.
    """
    with torch_threads(spec.threads):
        return _sweep(spec, ctx)


def _sweep(spec: CompareSpec, ctx: RunContext) -> RunResult:
    device = resolve_device(spec.device)
    grid = spec.grid()
    rows: list[dict[str, Any]] = []
    setting: _Setting | None = None
    for cell in grid:
        if ctx.should_stop():
            write_csv(ctx, "results.csv", rows, COLUMNS)
            stopped = f"stopped after {len(rows)} of {len(grid)} cells"
            return RunResult(RunStatus.CANCELLED, _summary(spec, rows), stopped)
        if setting is None or not setting.serves(cell):
            setting = _Setting(spec, cell, device)
        row = setting.measure(cell, spec.timing_repeats)
        rows.append(row)
        ctx.on_metrics(cell.index, numeric(row))
        ctx.on_progress(cell.index + 1, len(grid), f"{cell.solver} N_t={cell.steps} {cell.label}")
    write_csv(ctx, "results.csv", rows, COLUMNS)
    write_csv(ctx, "slopes.csv", slope_rows(rows), SLOPE_COLUMNS)
    return RunResult(RunStatus.SUCCEEDED, _summary(spec, rows))


class _Setting:
    """One seeded model at one (dtype, activation, weight scale, solver, N_t), and its Direct reference."""

    def __init__(self, spec: CompareSpec, cell: Cell, device: torch.device) -> None:
        self.key = _setting_key(cell)
        dtype = DTYPES[cell.dtype]
        self.model, self.x, self.y = build_problem(spec, cell, device, dtype)
        self.solver = ac.solver_named(cell.solver)
        fields = [block.field for block in ac.ode_blocks(self.model)]
        self.memory = ac.MemoryModel(
            blocks=len(fields),
            state_bytes=self.x.numel() * self.x.element_size(),
            stages=self.solver.stages,
            steps=cell.steps,
            eval_bytes=ac.saved_bytes_of_one_evaluation(fields[0], self.x),
        ) if spec.model is None and cell.steps is not None else None
        # a whole model's states differ from its input, an adaptive solve's N_t is its own: no analytic model
        self.reference = ac.measure_gradient(self.model, self.loss, ac.Direct(), device=device)
        self.device = device
        self.reconstruction = _worst(ac.block_reconstruction_errors(self.model, self.x))
        self.fd_rel_error = (
            finite_difference_error(
                self.model, self.loss, self.reference.grads, spec.fd_check, spec.epsilon(cell.dtype), spec.seed
            )
            if spec.fd_check
            else None
        )

    def serves(self, cell: Cell) -> bool:
        return _setting_key(cell) == self.key

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
            "solver": cell.solver, "order": self.solver.order, "steps": cell.steps, "method": cell.label,
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
    model = nn.Sequential(*[ac.ODEBlock(f, steps=cell.steps, solver=cell.solver) for f in fields])
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(cell.weight_scale)
    gen = torch.Generator().manual_seed(spec.seed)
    shape = (spec.batch, *spec.example_shape)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    y = torch.randn(shape, generator=gen, dtype=torch.float64)
    return model.to(device=device, dtype=dtype), x.to(device, dtype), y.to(device, dtype)


def _whole_model(
    spec: CompareSpec, cell: Cell, device: torch.device, dtype: torch.dtype
) -> tuple[nn.Module, Tensor, Tensor]:
    """``spec.model`` (built in or a plugin) built as a train run with the cell's ODE settings, on seeded random
    inputs of its data set's shape and random class labels: the gradients need no real data."""
    from anode_lab.experiments.models import build_model
    from anode_lab.specs.common import OdeSpec
    from anode_lab.specs.train import LOCAL_SETS, TrainSpec, dataset_classes

    assert spec.model is not None and spec.dataset is not None
    ode = OdeSpec(solver=cell.solver, steps=cell.steps, activation=cell.activation)
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


def slope_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One fitted log-log slope of relative error against N_t per (dtype, activation, scale, solver, method)
    for the inexact methods (the exact ones sit at rounding level, where a slope means nothing)."""
    groups: dict[tuple[Any, ...], list[tuple[int, float]]] = defaultdict(list)
    orders: dict[str, int] = {}
    for row in rows:
        if row["exact"]:
            continue
        key = (row["dtype"], row["activation"], row["weight_scale"], row["solver"], row["method"])
        groups[key].append((int(row["steps"]), float(row["rel_error"])))
        orders[row["solver"]] = int(row["order"])
    out = []
    for key, points in groups.items():
        slope, intercept = fit_loglog([n for n, _ in points], [e for _, e in points])
        out.append({
            **dict(zip(SLOPE_COLUMNS[:5], key, strict=True)), "slope": slope, "intercept": intercept,
            "expected_slope": -orders[key[3]],
        })
    return out


def _summary(spec: CompareSpec, rows: list[dict[str, Any]]) -> dict[str, float | int | str]:
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


def _worst(errors: list[float]) -> float:
    """The largest error, ``inf`` as soon as one is not finite (a reverse solve that blew up)."""
    return max(errors) if all(math.isfinite(e) for e in errors) else math.inf


def _setting_key(cell: Cell) -> tuple[object, ...]:
    return cell.dtype, cell.activation, cell.weight_scale, cell.solver, cell.steps


def _reconstructs(gradient: GradientSpec) -> bool:
    return gradient.method == "adjoint" and gradient.reconstruct


def _model_bytes(model: ac.MemoryModel, gradient: GradientSpec) -> int:
    if gradient.method == "direct":
        return model.direct()
    if gradient.method == "anode":
        return model.anode(gradient.checkpoints)
    return model.adjoint(gradient.reconstruct)
