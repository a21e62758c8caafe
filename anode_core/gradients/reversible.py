"""Reversible: the exact gradient of an algebraically reversible solve, with memory O(L), flat in N_t.

Kidger, Foster, Li & Lyons, NeurIPS 2021, §3; Zhuang, Dvornek, Tatikonda & Duncan, "MALI", ICLR 2021. Forward
runs without a graph and keeps only the final ``(y_N, ŷ_N)``. Backward rebuilds ``(y_n, ŷ_n, f̂_n)`` from
``n + 1`` algebraically (:mod:`anode_core.reversible`) and back-propagates one step at a time, so it holds one
field evaluation's graph at a time. The gradient is that of the computed discrete solve, equal to ``Direct``
through the same scheme up to the rounding of the reconstruction. Each step costs one evaluation forward and one
evaluation with its vector–Jacobian product backward. Fields must be deterministic (no dropout): the
reconstruction re-evaluates them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from anode_core.gradients.base import GradientMethod, vjp
from anode_core.problem import Problem
from anode_core.replay import AutocastState, frozen_buffers
from anode_core.reversible import ReversibleHeun


@dataclass(frozen=True)
class Reversible(GradientMethod):
    """Rebuild the states backwards instead of storing them (module docstring). Needs ``ReversibleHeun()``."""

    name = "reversible"
    exact = True

    def solve(self, problem: Problem, z0: Tensor) -> Tensor:
        _reversible_solver(problem)
        z1: Tensor = _ReversibleFunction.apply(problem, z0, *problem.params)
        return z1


def _reversible_solver(problem: Problem) -> ReversibleHeun:
    if not isinstance(problem.solver, ReversibleHeun):
        raise ValueError(
            f"gradient=Reversible() needs an algebraically reversible solver; got solver={problem.solver!r}: "
            "use solver=ReversibleHeun(), or gradient=Anode() with this solver"
        )
    return problem.solver


class _ReversibleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, problem: Problem, z0: Tensor, *params: Tensor) -> Tensor:
        ctx.problem = problem
        ctx.autocast = AutocastState.capture(z0)
        solver = _reversible_solver(problem)
        y, y_hat, _ = solver.solve(problem.tuple_field, problem.time, z0, problem.steps)
        ctx.save_for_backward(y, y_hat)
        return y

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        problem: Problem = ctx.problem
        solver = _reversible_solver(problem)
        y, y_hat = (s.detach() for s in ctx.saved_tensors)
        params = problem.params
        wanted = ctx.needs_input_grad[1:]
        acc = [torch.zeros_like(p) if w else None for p, w in zip(params, wanted[1:], strict=True)]
        a_y, a_hat, a_f = grad_out, torch.zeros_like(grad_out), torch.zeros_like(grad_out)
        with torch.enable_grad(), frozen_buffers(problem.field), ctx.autocast.entered():
            leaf, out = _evaluate(problem, problem.steps, y_hat)
            for n in range(problem.steps - 1, -1, -1):
                t, t_next = problem.time(n), problem.time(n + 1)
                dt = t_next - t
                f_next = out.detach()
                # ŷ_{n+1} = 2y_n − ŷ_n + Δt f̂_n ; f̂_{n+1} = f(ŷ_{n+1}) ; y_{n+1} = y_n + ½Δt (f̂_n + f̂_{n+1})
                a_hat = a_hat + _pull(out, leaf, params, wanted, a_f.add(a_y, alpha=0.5 * dt), acc)
                y_hat = solver.reverse_hat(t, t_next, y, y_hat, f_next)
                leaf, out = _evaluate(problem, n, y_hat)
                y = solver.reverse_y(t, t_next, y, out.detach(), f_next)
                a_y, a_hat, a_f = a_y + 2 * a_hat, -a_hat, (a_hat * dt).add(a_y, alpha=0.5 * dt)
            grad_z0 = a_y + a_hat + _pull(out, leaf, params, wanted, a_f, acc)
        return (None, grad_z0 if wanted[0] else None, *acc)


def _evaluate(problem: Problem, n: int, y_hat: Tensor) -> tuple[Tensor, Tensor]:
    leaf = y_hat.detach().requires_grad_(True)
    return leaf, problem.tuple_field(problem.time(n), (leaf,))[0]


def _pull(
    out: Tensor, leaf: Tensor, params: tuple[Tensor, ...], wanted: tuple[bool, ...], a: Tensor, acc: list[Tensor | None]
) -> Tensor:
    """``aᵀ ∂f/∂ŷ``, accumulating ``aᵀ ∂f/∂θ`` into ``acc``."""
    grads = vjp(out, (leaf, *params), (True, *wanted[1:]), a)
    for total, g in zip(acc, grads[1:], strict=True):
        if total is not None and g is not None:
            total.add_(g)
    return grads[0] if grads[0] is not None else torch.zeros_like(leaf)  # wanted, so vjp filled it
