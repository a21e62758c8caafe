"""Reversible: the exact gradient of an algebraically reversible solve, with memory O(L), flat in N_t.

Kidger, Foster, Li & Lyons, NeurIPS 2021, §3; Zhuang, Dvornek, Tatikonda & Duncan, "MALI", ICLR 2021. Forward
runs without a graph and keeps only the final carry (:meth:`~anode_core.reversible.ReversibleSolver.kept`).
Backward walks the steps from the last: the solver's ``reverse`` rebuilds the carry at ``n`` from ``n + 1``,
evaluating the field at a leaf with its graph; then ``forward`` from the rebuilt carry is replayed with a graph
in which that evaluation stands in for the field (:class:`_Reuse`), and one ``autograd.grad`` carries the
adjoint of the carry from ``n + 1`` to ``n``. So it holds one field evaluation's graph (two for reversible Heun,
whose forward step reuses the evaluation of the next step's reverse) and costs one evaluation with its
vector–Jacobian product per step, whatever the solver. The gradient is that of the computed discrete solve, equal
to ``Direct`` through the same scheme up to the rounding of the reconstruction, which the reversal amplifies on
fields that expand: float32, weights ×3, ``t1 = 3``, ``Reversible()`` was 1.9e-2 from ``Direct`` for reversible Heun at
N_t = 10⁴ and 3.5e-2 for ALF at N_t = 100, where float32 ``Direct`` is 1e-4 from float64 (the ``reversible-exact``
demo measures it; see :mod:`anode_core.reversible` for how damping amplifies it further). Exact in float64 on
contracting or mildly expanding fields, not bit-identical anywhere. Fields must be deterministic (no dropout): the
reconstruction re-evaluates them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from anode_core.gradients.base import GradientMethod, check_reach, vjp
from anode_core.problem import Problem
from anode_core.replay import AutocastState, frozen_buffers
from anode_core.reversible import Carry, ReversibleSolver
from anode_core.solvers import State, TupleField


@dataclass(frozen=True)
class Reversible(GradientMethod):
    """Rebuild the states backwards instead of storing them (module docstring). Needs a reversible solver:
    ``ReversibleHeun()`` or ``DampedLeapfrog()``."""

    name = "reversible"
    exact = True

    def solve(self, problem: Problem, z0: Tensor) -> Tensor:
        _reversible_solver(problem)
        z1: Tensor = _ReversibleFunction.apply(problem, z0, *problem.params)
        return z1


def _reversible_solver(problem: Problem) -> ReversibleSolver:
    if not isinstance(problem.solver, ReversibleSolver):
        raise ValueError(
            f"gradient=Reversible() needs an algebraically reversible solver; got solver={problem.solver!r}: "
            "use solver=ReversibleHeun() or DampedLeapfrog(), or gradient=Anode() with this solver"
        )
    return problem.solver


class _ReversibleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, problem: Problem, z0: Tensor, *params: Tensor) -> Tensor:
        ctx.problem = problem
        ctx.autocast = AutocastState.capture(z0)
        solver = _reversible_solver(problem)
        carry = solver.solve(problem.tuple_field, problem.time, z0, problem.steps)
        ctx.save_for_backward(*solver.kept(carry))
        return carry[0]

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        problem: Problem = ctx.problem
        solver = _reversible_solver(problem)
        wanted = ctx.needs_input_grad[1:]
        acc = [torch.zeros_like(p) if w else None for p, w in zip(problem.params, wanted[1:], strict=True)]
        field = _Reuse(problem.tuple_field, problem.params)
        with torch.enable_grad(), frozen_buffers(problem.field), ctx.autocast.entered():
            kept = tuple(s.detach() for s in ctx.saved_tensors)
            carry = solver.resume(field.record, problem.time(problem.steps), kept)
            adjoint: Carry = (grad_out, *(torch.zeros_like(c) for c in carry[1:]))
            for n in range(problem.steps - 1, -1, -1):
                t, t_next = problem.time(n), problem.time(n + 1)
                carry = solver.reverse(field.record, t, t_next, carry)
                leaves = tuple(c.detach().requires_grad_(True) for c in carry)
                adjoint = _pull(solver.forward(field.replay, t, t_next, leaves), leaves, problem.params, adjoint, acc)
            z0 = carry[0].detach().requires_grad_(True)
            (grad_z0,) = _pull(solver.start(field.replay, problem.time(0), z0), (z0,), problem.params, adjoint, acc)
        return (None, grad_z0 if wanted[0] else None, *acc)


def _pull(outputs: Carry, leaves: Carry, params: tuple[Tensor, ...], adjoint: Carry, acc: list[Tensor | None]) -> Carry:
    """``adjointᵀ ∂outputs/∂leaves``, accumulating ``adjointᵀ ∂outputs/∂θ`` into ``acc``; one backward pass."""
    chosen = [p for p, total in zip(params, acc, strict=True) if total is not None]
    grads = torch.autograd.grad(outputs, (*leaves, *chosen), adjoint, allow_unused=True)
    for total, g in zip((a for a in acc if a is not None), grads[len(leaves) :], strict=True):
        if g is not None:
            total.add_(g)
    return tuple(torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads[: len(leaves)], strict=True))


class _Reuse:
    """The field for backward: :meth:`record` evaluates at a fresh leaf, keeps the graph under its time and
    returns the value alone; :meth:`replay` at a recorded time hands that graph to autograd (:class:`_Recorded`)
    instead of evaluating again, and evaluates with a graph otherwise."""

    def __init__(self, field: TupleField, params: tuple[Tensor, ...]) -> None:
        self.field = field
        self.params = params
        self.graphs: dict[float, tuple[Tensor, Tensor]] = {}
        self.checked = False

    def record(self, t: float, y: State) -> State:
        leaf = y[0].detach().requires_grad_(True)
        out = self.field(t, (leaf,))[0]
        if not self.checked:
            check_reach(out, leaf, self.params, "Reversible()")
            self.checked = True
        self.graphs[t] = (leaf, out)
        return (out.detach(),)

    def replay(self, t: float, y: State) -> State:
        graph = self.graphs.pop(t, None)
        if graph is None:
            return self.field(t, y)
        out: Tensor = _Recorded.apply(graph, y[0], *self.params)
        return (out,)


class _Recorded(torch.autograd.Function):
    """The recorded value of ``f`` at ``point``; backward is the vector–Jacobian product of the recorded graph
    (linearised at the rebuilt state, which equals ``point`` up to rounding)."""

    @staticmethod
    def forward(ctx: Any, graph: tuple[Tensor, Tensor], point: Tensor, *params: Tensor) -> Tensor:
        ctx.graph = graph
        ctx.params = params
        return graph[1].detach()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        leaf, out = ctx.graph
        del ctx.graph  # the graph is freed by this one pass
        grads = vjp(out, (leaf, *ctx.params), (True, *ctx.needs_input_grad[2:]), grad)
        return (None, grads[0], *grads[1:])
