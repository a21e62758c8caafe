"""The continuous adjoint's augmented system (Chen et al. 2018, eq. 4–5), shared by the fixed-step and the
adaptive reverse solves: what is integrated backwards, and how its final state becomes the gradients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from anode_core.gradients.base import check_reach, vjp
from anode_core.problem import Problem
from anode_core.solvers import State

Augmented = Callable[[float, State], State]


def adjoint_start(ctx: Any, grad_out: Tensor) -> tuple[Problem, tuple[bool, ...], State, Augmented]:
    """From a backward's ``ctx`` (``problem`` and the saved ``z1``): the problem, which inputs want gradients, the
    augmented state ``(z1, a = grad_out, 0 for each wanted parameter)`` and its field."""
    (z1,) = ctx.saved_tensors
    problem: Problem = ctx.problem
    wanted: tuple[bool, ...] = ctx.needs_input_grad[2:]
    params = [p for p, w in zip(problem.params, wanted[1:], strict=True) if w]

    checked = False

    def augmented(t: float, y: State) -> State:
        """d/dt (z, a, g) = (f, −aᵀ∂f/∂z, −aᵀ∂f/∂θ)."""
        nonlocal checked
        with torch.enable_grad():
            z = y[0].detach().requires_grad_(True)
            fz = problem.field(t, z)
            if not checked:
                check_reach(fz, z, problem.params, "Adjoint()")
                checked = True
            if fz.requires_grad:
                grads = vjp(fz, (z, *params), [True] * (1 + len(params)), y[1])
            else:  # a field of t alone, with no parameter: nothing flows back through it
                grads = [torch.zeros_like(x) for x in (z, *params)]
        return (fz.detach(), *(torch.neg(g) for g in grads if g is not None))  # all wanted: none is None

    y: State = (z1.detach(), grad_out, *(torch.zeros_like(p) for p in params))
    return problem, wanted, y, augmented


def adjoint_result(y: State, wanted: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
    """The autograd Function's answer ``(None, None, dL/dz0, *dL/dθ)`` from the augmented state at ``t0``."""
    grads = iter(y[2:])
    return (None, None, y[1] if wanted[0] else None, *(next(grads) if w else None for w in wanted[1:]))
