"""ANODE and the continuous adjoint on adaptive solves (Dopri5, Bosh3).

What "exact" means here: the controller (:mod:`anode_core.adaptive`) picks the accepted steps without a graph;
``Direct`` and ``Anode`` replay them and return the exact gradient of that solve *with the accepted step sizes
held fixed*. Every method returns the controller's value itself (the replay equals it up to rounding, which a
following adaptive block's controller could amplify into other steps).
torchdiffeq's own backprop through ``odeint`` also differentiates the first step size (its initial step
selection runs with a graph), so it differs from ours by that term, which shrinks with the tolerance
(``bench/gradients.py`` measures it).

- ``Anode``: forward runs the controller without a graph, then (with grad enabled) replays the accepted steps with
  their graph but nothing saved in it (:mod:`anode_core.gradients.recompute`); backward rebuilds what each
  segment saved, from the kept segment starts: Zhuang et al., "Adaptive Checkpoint Adjoint", ICML 2020. Equal
  to ``Direct``.
- ``Adjoint``: Chen et al.'s continuous adjoint solved backwards with the same adaptive pair and its own
  tolerances (default: the forward ones), as torchdiffeq's ``odeint_adjoint`` does; off by 4 to 8,000 × rtol
  (relative, measured on the demo's MLP and conv fields: a log-log slope of 0.7–1.1 against rtol, so not "about
  the tolerance"), shrinking only as the tolerances tighten.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from anode_core.adaptive import AdaptiveSolver
from anode_core.gradients.augmented import adjoint_result, adjoint_start
from anode_core.problem import Problem
from anode_core.replay import AutocastState, RngState, frozen_buffers, isolated_rng
from anode_core.solvers import State


def adaptive_direct(problem: Problem, z0: Tensor) -> Tensor:
    """The controller's value with the gradient of the replayed accepted steps: every method then returns the
    same bits, so the next block's controller sees the same input whichever method differentiates this one."""
    z1, settled = problem.settle(z0)
    return stitched(settled.advance(z0, 0, settled.steps), z1)


def stitched(replayed: Tensor, value: Tensor) -> Tensor:
    """``value`` (the controller's) with the gradient of ``replayed`` (the accepted steps replayed)."""
    out: Tensor = _Stitch.apply(replayed, value)
    return out


def adaptive_adjoint(problem: Problem, rtol: float | None, atol: float | None, z0: Tensor) -> Tensor:
    solver = problem.solver
    if not isinstance(solver, AdaptiveSolver):  # Adjoint.solve sends only adaptive problems here
        raise TypeError(f"the adaptive adjoint needs an adaptive solver; got solver={solver!r}")
    backward = replace(solver, rtol=solver.rtol if rtol is None else rtol, atol=solver.atol if atol is None else atol)
    z1: Tensor = _AdaptiveAdjoint.apply(problem, backward, z0, *problem.params)
    return z1


class _Stitch(torch.autograd.Function):
    """``value`` forward, the gradient of ``replayed`` backward (torchdiffeq's ``_StitchGradient``)."""

    @staticmethod
    def forward(ctx: Any, replayed: Tensor, value: Tensor) -> Tensor:
        return value.clone()

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None]:
        return grad_out, None


class _AdaptiveAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, problem: Problem, backward: AdaptiveSolver, z0: Tensor, *params: Tensor) -> Tensor:
        z1 = problem.settle(z0)[0] if problem.grid is None else problem.advance(z0, 0, problem.steps)
        ctx.problem, ctx.backward_solver = problem, backward
        ctx.autocast = AutocastState.capture(z0)
        ctx.save_for_backward(z1)
        return z1

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        problem, wanted, y0, augmented = adjoint_start(ctx, grad_out)

        def reversed_augmented(s: float, y: State) -> State:
            # time runs backwards as s = −t, as in torchdiffeq: d/ds of the augmented state is −(its d/dt) at t = −s
            return tuple(torch.neg(v) for v in augmented(-s, y))

        with frozen_buffers(problem.field), isolated_rng(RngState.capture(y0[0])), ctx.autocast.entered():
            try:
                y, _ = ctx.backward_solver.integrate(reversed_augmented, y0, -problem.t1, -problem.t0)
            except RuntimeError as error:  # its times are s = −t: say so, or "t1=-0" reads as nonsense
                raise RuntimeError(f"the adjoint's backward solve (time reversed, s = −t): {error}") from error
        return adjoint_result(y, wanted)
