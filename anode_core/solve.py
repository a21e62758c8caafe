"""The one entry point: solve an ODE block and differentiate it the chosen way.

Not named ``odesolve.py``: importing a submodule binds it on the package, which would shadow the lazily
exported function ``anode_core.odesolve`` as soon as any module (``block``, ``measure``) imported it.
"""

from __future__ import annotations

import math
from contextvars import ContextVar

from torch import Tensor, nn

from anode_core.gradients import Anode, GradientMethod
from anode_core.problem import Field, Problem
from anode_core.registry import gradient_named, solver_named
from anode_core.solvers import Euler, Solver
from anode_core.watch import solve_problem


def odesolve(
    field: Field,
    z0: Tensor,
    *,
    steps: int,
    solver: Solver | str = Euler(),
    gradient: GradientMethod | str | None = None,
    t0: float = 0.0,
    t1: float = 1.0,
    params: tuple[Tensor, ...] | None = None,
) -> Tensor:
    """``z(t1)`` of ``dz/dt = field(t, z)``, ``z(t0) = z0``, with ``steps`` fixed steps of ``solver``.

    ``gradient`` decides how backward works (:class:`Direct`, :class:`Anode`, :class:`Adjoint`); all of them
    compute the same forward value. ``None`` takes the default set by :func:`use_gradient` (``Anode()``). ``params`` are the tensors gradients flow to; by default the parameters of
    ``field`` when it is an ``nn.Module`` (a plain function closing over tensors must pass them here, or the
    memory-lean methods cannot reach them).
    """
    problem = make_problem(field, z0, steps=steps, solver=solver, t0=t0, t1=t1, params=params)
    return solve_problem(problem, z0, resolve_gradient(gradient))


def make_problem(
    field: Field,
    z0: Tensor,
    *,
    steps: int,
    solver: Solver | str,
    t0: float,
    t1: float,
    params: tuple[Tensor, ...] | None,
) -> Problem:
    """Validate the arguments of :func:`odesolve`; every error names the argument and the fix."""
    if not callable(field):
        raise TypeError(f"`field` must be callable as field(t, z) -> dz/dt; got {type(field).__name__}")
    if not isinstance(z0, Tensor) or not z0.is_floating_point():
        raise TypeError(f"`z0` must be a floating-point tensor; got {getattr(z0, 'dtype', type(z0).__name__)}")
    check_grid(steps, t0, t1)
    if params is None:
        params = tuple(p for p in field.parameters() if p.requires_grad) if isinstance(field, nn.Module) else ()
    return Problem(field, tuple(params), resolve_solver(solver), float(t0), float(t1), steps)


def check_grid(steps: int, t0: float, t1: float) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be an integer ≥ 1 (the number of fixed steps N_t); got {steps!r}")
    if not (math.isfinite(t0) and math.isfinite(t1)) or t1 <= t0:
        raise ValueError(f"`t1` must be greater than `t0` and both finite; got t0={t0!r}, t1={t1!r}")


def resolve_solver(solver: Solver | str) -> Solver:
    if isinstance(solver, str):
        return solver_named(solver)
    if not isinstance(solver, Solver):
        raise TypeError(f"`solver` must be a Solver such as anode_core.RK4() or its name; got {solver!r}")
    return solver


DEFAULT_GRADIENT: ContextVar[GradientMethod] = ContextVar("DEFAULT_GRADIENT", default=Anode())
"""The gradient method of solves that name none; set with :func:`anode_core.use_gradient`."""


def resolve_gradient(gradient: GradientMethod | str | None) -> GradientMethod:
    if gradient is None:
        return DEFAULT_GRADIENT.get()
    if isinstance(gradient, str):
        return gradient_named(gradient)
    if not isinstance(gradient, GradientMethod):
        raise TypeError(
            f"`gradient` must be a GradientMethod such as anode_core.Anode() or its name; got {gradient!r}"
        )
    return gradient
