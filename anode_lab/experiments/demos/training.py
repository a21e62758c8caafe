"""Demo ``training``: the same network trained with the adjoint's gradients and with ANODE's, side by side.

ANODE §4 (Gholami, Keutzer & Biros, IJCAI 2019, arXiv:1902.10298) trains with both and reports that the
adjoint of Chen et al. (NeurIPS 2018) can train worse or diverge at small N_t with ReLU. Here both runs start
from one seeded network, see identical batches and use identical optimisers; only the gradient differs.
Probes compare each run's gradient with the exact (Direct) gradient of its own current network.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn

import anode_core as ac
from anode_lab.experiments.artifacts import numeric, write_csv
from anode_lab.experiments.context import RunContext, RunResult
from anode_lab.experiments.data import two_spirals
from anode_lab.experiments.demos.common import device_and_dtype, explain, seeded
from anode_lab.experiments.demos.figures import plot_columns
from anode_lab.experiments.models import MLPODE
from anode_lab.specs.common import GradientSpec, OdeSpec
from anode_lab.specs.demo import DemoSpec
from anode_lab.status import RunStatus

POINTS, TEST_POINTS, NOISE = 800, 200, 0.05
WIDTH, HIDDEN, BATCH, LR = 8, 32, 64, 0.01
PROBES = 30
"""About this many gradient probes per run, evenly spaced."""
METHODS: dict[str, ac.GradientMethod] = {"adjoint": ac.Adjoint(), "anode": ac.Anode()}
STORED = ac.Adjoint(reconstruct=False)
"""Probed on both networks: the adjoint's error without its reconstruction error (flaw (b) of ANODE §2 alone)."""


class _Run:
    """One of the two trainings: a model whose ODE block uses ``method``, its optimiser and its history."""

    def __init__(self, label: str, model: nn.Module, method: ac.GradientMethod) -> None:
        self.label, self.model, self.method = label, model, method
        for block in ac.ode_blocks(model):
            block.gradient = method
        self.optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        self.diverged_at: int | None = None

    def step(self, x: Tensor, y: Tensor, iteration: int) -> float:
        if self.diverged_at is not None:
            return math.nan
        self.optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(self.model(x), y)
        if not math.isfinite(loss.item()):
            self.diverged_at = iteration
            return math.nan
        torch.autograd.backward(loss)
        self.optimizer.step()
        return loss.item()

    def probe(self, x: Tensor, y: Tensor) -> dict[str, float]:
        """Relative error and cosine of this run's gradient against Direct's, on the same batch and weights."""
        def loss_fn(model: nn.Module) -> Tensor:
            return nn.functional.cross_entropy(model(x), y)

        exact = ac.measure_gradient(self.model, loss_fn, ac.Direct()).grads
        own = ac.compare_gradients(exact, ac.measure_gradient(self.model, loss_fn, self.method).grads)
        stored = ac.compare_gradients(exact, ac.measure_gradient(self.model, loss_fn, STORED).grads)
        return {
            f"{self.label}/grad_rel_error": own.rel_error, f"{self.label}/grad_cosine": own.cosine,
            f"{self.label}/stored_adjoint_rel_error": stored.rel_error,
            f"{self.label}/reconstruction_error": max(ac.block_reconstruction_errors(self.model, x)),
        }

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor, split: str) -> dict[str, float]:
        scores = self.model(x)
        return {
            f"{self.label}/{split}_loss": nn.functional.cross_entropy(scores, y).item(),
            f"{self.label}/{split}_accuracy": (scores.argmax(1) == y).double().mean().item(),
        }


def run(spec: DemoSpec, ctx: RunContext) -> RunResult:
    device, dtype = device_and_dtype(spec)
    steps, iterations = (spec.steps or (2,))[0], spec.iterations or 1
    points, labels = two_spirals(POINTS, noise=NOISE, seed=spec.seed)
    x_all = torch.tensor(points, dtype=torch.float64)
    x_all = ((x_all - x_all.mean(0)) / x_all.std(0)).to(device, dtype)
    y_all = torch.tensor(labels, dtype=torch.long, device=device)
    x_train, y_train = x_all[TEST_POINTS:], y_all[TEST_POINTS:]
    x_test, y_test = x_all[:TEST_POINTS], y_all[:TEST_POINTS]

    ode = OdeSpec(solver="euler", steps=steps, activation="relu", gradient=GradientSpec(method="anode"))
    with seeded(spec.seed):
        base = MLPODE(features=2, classes=2, width=WIDTH, hidden=HIDDEN, ode=ode).to(device, dtype)
    runs = [_Run(label, copy.deepcopy(base), method) for label, method in METHODS.items()]
    order = torch.Generator().manual_seed(spec.seed)
    probe_every = max(1, iterations // PROBES)
    curve: list[dict[str, Any]] = []
    probes: list[dict[str, Any]] = []
    batches: list[Tensor] = []
    for it in range(iterations):
        if ctx.should_stop():
            _write(ctx, curve, probes)
            return RunResult(RunStatus.CANCELLED, _summary(runs, probes, x_test, y_test, x_train, y_train),
                             f"stopped after {it} of {iterations} steps")
        if not batches:
            batches = list(torch.split(torch.randperm(len(y_train), generator=order).to(device), BATCH))
        index = batches.pop(0)
        x, y = x_train[index], y_train[index]
        values: dict[str, float] = {}
        if it % probe_every == 0 or it == iterations - 1:
            probe: dict[str, float] = {"step": it, "param_distance": _distance(runs[0].model, runs[1].model)}
            for r in runs:
                if r.diverged_at is None:
                    probe |= r.probe(x, y) | r.evaluate(x_test, y_test, "test")
            probes.append(probe)
            values |= probe
        for r in runs:
            values[f"{r.label}/loss"] = r.step(x, y, it)
        curve.append({"step": it, **{f"{r.label}_loss": values[f"{r.label}/loss"] for r in runs}})
        ctx.on_metrics(it, numeric(values))
        ctx.on_progress(it + 1, iterations, f"step {it + 1}")

    _write(ctx, curve, probes)
    summary = _summary(runs, probes, x_test, y_test, x_train, y_train)
    summary |= {"steps": steps, "iterations": iterations}
    last = {
        f"{label}/{q}": float(probes[-1].get(f"{label}/{q}", math.nan))
        for label in METHODS for q in ("reconstruction_error", "stored_adjoint_rel_error")
    }
    findings = [
        f"the probes of the adjoint run put its gradient at a relative error of "
        f"{summary['adjoint/grad_rel_error_mean']:.3g} on average (max {summary['adjoint/grad_rel_error_max']:.3g}) "
        f"from the exact gradient of its own network; ANODE's at most {summary['anode/grad_rel_error_max']:.1e}",
        f"after {iterations} steps: training loss {summary['adjoint/train_loss']:.4f} (adjoint) against "
        f"{summary['anode/train_loss']:.4f} (ANODE); test accuracy {summary['adjoint/test_accuracy']:.3f} against "
        f"{summary['anode/test_accuracy']:.3f}",
        f"the two networks' weights, identical at the start, end {summary['param_distance']:.3g} apart "
        "(relative norm of the difference)",
        f"at the last probe the adjoint run's network rebuilds its block input with a relative error of "
        f"{last['adjoint/reconstruction_error']:.3g} (ANODE's network: {last['anode/reconstruction_error']:.3g}); "
        f"with stored states the adjoint's gradient would be off by {last['adjoint/stored_adjoint_rel_error']:.3g} "
        f"on the adjoint run's network and {last['anode/stored_adjoint_rel_error']:.3g} on ANODE's",
    ]
    for r in runs:
        if r.diverged_at is not None:
            findings.append(f"the {r.label} run diverged (non-finite loss) at step {r.diverged_at}")
    explain(ctx, spec, findings, summary)
    return RunResult(RunStatus.SUCCEEDED, summary)


def _distance(a: nn.Module, b: nn.Module) -> float:
    va = torch.cat([p.detach().reshape(-1) for p in a.parameters()])
    vb = torch.cat([p.detach().reshape(-1) for p in b.parameters()])
    return float(((va - vb).norm() / vb.norm()).item())


def _summary(
    runs: list[_Run], probes: list[dict[str, Any]], x_test: Tensor, y_test: Tensor, x_train: Tensor, y_train: Tensor
) -> dict[str, float | int | str]:
    summary: dict[str, float | int | str] = {}
    for r in runs:
        errors = [float(p[f"{r.label}/grad_rel_error"]) for p in probes if f"{r.label}/grad_rel_error" in p]
        if errors:
            summary[f"{r.label}/grad_rel_error_mean"] = sum(errors) / len(errors)
            summary[f"{r.label}/grad_rel_error_max"] = max(errors)
        summary |= r.evaluate(x_train, y_train, "train") | r.evaluate(x_test, y_test, "test")
        summary[f"{r.label}/diverged"] = int(r.diverged_at is not None)
    summary["param_distance"] = _distance(runs[0].model, runs[1].model)
    return summary


def _write(ctx: RunContext, curve: list[dict[str, Any]], probes: list[dict[str, Any]]) -> None:
    write_csv(ctx, "loss_curve.csv", curve)
    write_csv(ctx, "probes.csv", probes)
    losses = {key: key.removesuffix("_loss") for key in (curve[0] if curve else {}) if key.endswith("_loss")}
    plot_columns(ctx, "loss_curve", curve, x="step", columns=losses, title="Training loss of each gradient method",
                 x_label="optimizer step", y_label="cross-entropy (nats)", log_y=True)
    errors = {key: key.split("/")[0] for key in dict.fromkeys(k for p in probes for k in p)
              if key.endswith("/grad_rel_error")}
    plot_columns(ctx, "probes", probes, x="step", columns=errors, title="Gradient error against Direct during training",
                 x_label="optimizer step", y_label="‖g − g_Direct‖ / ‖g_Direct‖ (relative)", log_y=True)
