"""The continuous adjoint of Chen et al. (optimize-then-discretize), with its two flaws measurable.

Chen, Rubanova, Bettencourt & Duvenaud, "Neural Ordinary Differential Equations", NeurIPS 2018, Alg. 1:
solve ``dz/dt = f``, ``da/dt = -aᵀ ∂f/∂z``, ``dg/dt = -aᵀ ∂f/∂θ`` backwards from ``(z(t1), ∂L/∂z(t1), 0)``
with the same fixed-step scheme. ANODE §2 (arXiv:1902.10298) names its two flaws: (a) ``z(t)`` is rebuilt by a
reverse solve that can be unstable or wrong (dissipative fields, ReLU, float32); (b) even on exact states the
discretised continuous adjoint is not the gradient of the discrete network, with an error of ``O(dt^p)`` for a
smooth field (with ReLU's kinks the measured log-log slope departs from ``−p``; the sweeps fit and show it).
``Adjoint(reconstruct=False)`` removes flaw (a) by restarting each reverse step from the stored forward state,
leaving flaw (b) alone visible: no accumulated reconstruction error, though the stages inside each reverse step
are still integrated backwards from the stored ``z_n``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from anode_core.gradients.adaptive import adaptive_adjoint
from anode_core.gradients.augmented import adjoint_result, adjoint_start
from anode_core.gradients.base import GradientMethod
from anode_core.held import note_held
from anode_core.problem import Problem
from anode_core.replay import AutocastState, RngState, frozen_buffers, isolated_rng


@dataclass(frozen=True)
class Adjoint(GradientMethod):
    """The continuous adjoint of Chen et al.: memory ``O(L)``, gradient inexact (see the module docstring)."""

    reconstruct: bool = True
    rtol: float | None = None
    atol: float | None = None
    """Tolerances of the backward solve when the forward one is adaptive; ``None``: the forward ones."""

    name = "adjoint"
    exact = False

    def __post_init__(self) -> None:
        if not isinstance(self.reconstruct, bool):
            raise ValueError(f"`reconstruct` must be True or False; got {self.reconstruct!r}")
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if value is not None and (not number or not 0 <= value < 1):
                raise ValueError(f"`{name}` must be None (the forward tolerance) or a number in [0, 1); got {value!r}")

    def solve(self, problem: Problem, z0: Tensor) -> Tensor:
        if problem.adaptive:
            if not self.reconstruct:
                raise ValueError(
                    "Adjoint(reconstruct=False) restarts from stored states on a fixed grid; with an adaptive "
                    "solver use Adjoint() (the backward solve is adaptive too)"
                )
            return adaptive_adjoint(problem, self.rtol, self.atol, z0)
        z1: Tensor = _AdjointFunction.apply(problem, self.reconstruct, z0, *problem.params)
        return z1


class _AdjointFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, problem: Problem, reconstruct: bool, z0: Tensor, *params: Tensor) -> Tensor:
        ctx.problem = problem
        ctx.autocast = AutocastState.capture(z0)
        if reconstruct:
            ctx.states = None
            z1 = problem.advance(z0, 0, problem.steps)
        else:
            states = [z0]
            for n in range(problem.steps):
                states.append(problem.step(states[-1], n))
            for z in states[:-1]:
                note_held(z)
            ctx.states = states[:-1]
            z1 = states[-1]
        ctx.save_for_backward(z1)
        return z1

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        problem, wanted, y, augmented = adjoint_start(ctx, grad_out)
        # The reverse solve draws its own dropout masks; it must not advance the caller's RNG stream.
        with frozen_buffers(problem.field), isolated_rng(RngState.capture(y[0])), ctx.autocast.entered():
            for n in range(problem.steps, 0, -1):
                if ctx.states is not None and n < problem.steps:
                    y = (ctx.states[n], *y[1:])  # restart from the stored z_n: no accumulated reconstruction error
                y = problem.solver.step(augmented, problem.time(n), y, -problem.size(n - 1))
        ctx.states = None
        return adjoint_result(y, wanted)
