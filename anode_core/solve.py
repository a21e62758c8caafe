"""The one entry point: solve an ODE block and differentiate it the chosen way.

Not named ``odesolve.py``: importing a submodule binds it on the package, which would shadow the exported
function ``anode_core.odesolve`` as soon as any module (``block``, ``measure``) imported it.
"""

from __future__ import annotations

import math
from contextvars import ContextVar

from torch import Tensor, nn

from anode_core.adaptive import AdaptiveSolver
from anode_core.gradients import Anode, GradientMethod
from anode_core.pairing import DEFAULTS, Use, pairs, refusal, use_of
from anode_core.problem import Field, Problem
from anode_core.registry import ALL_SOLVERS, gradient_named, solver_named
from anode_core.solvers import Euler, Solver
from anode_core.watch import solve_problem


def odesolve(
    field: Field,
    z0: Tensor,
    *,
    steps: int | None = None,
    solver: Solver | str = Euler(),
    gradient: GradientMethod | str | None = None,
    t0: float = 0.0,
    t1: float = 1.0,
    params: tuple[Tensor, ...] | None = None,
) -> Tensor:
    """``z(t1)`` of ``dz/dt = field(t, z)``, ``z(t0) = z0``, with ``steps`` fixed steps of ``solver``, or with
    the steps an adaptive solver (:class:`Dopri5`, :class:`Bosh3`) chooses (then ``steps`` stays ``None``).

    ``gradient`` decides how backward works (:class:`Direct`, :class:`Anode`, :class:`Adjoint`,
    :class:`Reversible`); all of them compute the same forward value. ``None`` takes the default set by
    :func:`use_gradient`, else ``Anode(checkpoints="auto")``. ``params`` are the tensors the continuous adjoint
    (and ``Reversible``) give gradients to; by default the parameters of ``field`` when it is an ``nn.Module``.
    ``Direct`` and ``Anode`` need no list: they reach every tensor the field touches, as backprop does; the other
    methods raise, naming ``adjoint_params``, when the field uses a tensor that needs a gradient and is not listed.
    """
    problem = make_problem(field, z0, steps=steps, solver=solver, t0=t0, t1=t1, params=params)
    method = resolve_gradient(gradient, problem.solver)
    check_pairing(problem.solver, method)
    return solve_problem(problem, z0, method)


def check_pairing(solver: Solver, method: GradientMethod) -> None:
    """Solvers and methods that cannot work together fail here, before any computation: the rule is
    :data:`anode_core.pairing.PAIRS`, read by the specs too."""
    use = use_of(method.name, getattr(method, "checkpoints", None), getattr(method, "reconstruct", True))
    kinds = {name: cls.kind for name, cls in ALL_SOLVERS.items()}
    problem = refusal(solver.kind, use, f"{solver!r}", LIBRARY_SPELLING, kinds)
    if problem is not None:
        raise ValueError(problem)


LIBRARY_SPELLING: dict[Use, str] = {
    "direct": "gradient=Direct()",
    "anode": "gradient=Anode()",
    "checkpoints": "gradient=Anode(checkpoints=c)",
    "adjoint": "gradient=Adjoint()",
    "stored_states": "gradient=Adjoint(reconstruct=False)",
    "reversible": "gradient=Reversible()",
}


def make_problem(
    field: Field,
    z0: Tensor,
    *,
    steps: int | None,
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
    solver = resolve_solver(solver)
    steps = check_steps(solver, steps, t0, t1)
    if params is None:
        params = tuple(p for p in field.parameters() if p.requires_grad) if isinstance(field, nn.Module) else ()
    return Problem(field, tuple(params), solver, float(t0), float(t1), steps)


def check_steps(solver: Solver, steps: int | None, t0: float, t1: float) -> int:
    """``steps`` for a fixed-step solver, ``None`` (returned as 0 until the controller runs) for an adaptive one."""
    if isinstance(solver, AdaptiveSolver):
        if steps is not None:
            raise ValueError(
                f"`steps` must be None with the adaptive solver {solver!r}, which chooses its own steps; got "
                f"{steps!r}: bound them with max_steps=..., or pick a fixed-step solver such as RK4()"
            )
        check_grid(1, t0, t1)
        return 0
    if steps is None:
        raise ValueError(
            f"`steps` is required with the fixed-step solver {solver.name!r}: pass steps=N (N ≥ 1), or use an "
            "adaptive solver such as Dopri5(rtol=1e-6, atol=1e-8)"
        )
    check_grid(steps, t0, t1)
    return steps


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


LIBRARY_DEFAULT = Anode(checkpoints="auto")
DEFAULT_GRADIENT: ContextVar[GradientMethod] = ContextVar("DEFAULT_GRADIENT", default=LIBRARY_DEFAULT)
"""The gradient method of solves that name none; set with :func:`anode_core.use_gradient`. ``Anode(checkpoints=
"auto")``: exact, and memory-lean on one long solve (a torchdiffeq model's single ``odeint`` call is one block);
a solver that carries state between steps (no isolated steps to restart from) gets ``Anode()`` instead."""


def resolve_gradient(
    gradient: GradientMethod | str | None, solver: Solver | type[Solver] | None = None
) -> GradientMethod:
    """``gradient`` as an object; ``None`` is the default of :func:`anode_core.use_gradient`, else ``Anode()``, or,
    for a ``solver`` whose kind Anode cannot differentiate, the kind's default (:data:`anode_core.pairing.DEFAULTS`:
    the adjoint for scipy)."""
    if gradient is None:
        method = DEFAULT_GRADIENT.get()
        if method is LIBRARY_DEFAULT and solver is not None:
            if solver.kind in DEFAULTS:
                return gradient_named(DEFAULTS[solver.kind])
            if not pairs(solver.kind, "checkpoints"):
                return Anode()
        return method
    if isinstance(gradient, str):
        return gradient_named(gradient)
    if not isinstance(gradient, GradientMethod):
        raise TypeError(
            f"`gradient` must be a GradientMethod such as anode_core.Anode() or its name; got {gradient!r}"
        )
    return gradient
