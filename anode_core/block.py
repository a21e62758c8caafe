"""``ODEBlock``: an ODE solve as a drop-in ``nn.Module`` layer, and helpers to switch a model's method."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn

from anode_core.gradients import Anode, GradientMethod
from anode_core.problem import Problem
from anode_core.solve import DEFAULT_GRADIENT, check_grid, make_problem, resolve_gradient, resolve_solver
from anode_core.solvers import Euler, Solver
from anode_core.watch import solve_problem


class ODEBlock(nn.Module):
    """``z -> z(t1)`` for ``dz/dt = field(t, z)``; with ``Euler`` and ``steps=1`` exactly a ResNet block.

    ``field`` is an ``nn.Module`` called as ``field(t, z)``. ``gradient`` may be changed between passes
    (see :func:`use_gradient`).
    """

    def __init__(
        self,
        field: nn.Module,
        *,
        steps: int = 2,
        solver: Solver | str = Euler(),
        gradient: GradientMethod | str = Anode(),
        t0: float = 0.0,
        t1: float = 1.0,
    ) -> None:
        super().__init__()
        check_grid(steps, t0, t1)
        self.field = field
        self.steps = steps
        self.solver = resolve_solver(solver)
        self.gradient = resolve_gradient(gradient)
        self.t0, self.t1 = t0, t1

    def problem(self, z0: Tensor) -> Problem:
        return make_problem(
            self.field, z0, steps=self.steps, solver=self.solver, t0=self.t0, t1=self.t1, params=None
        )

    def forward(self, z0: Tensor) -> Tensor:
        return solve_problem(self.problem(z0), z0, self.gradient)

    def extra_repr(self) -> str:
        return f"steps={self.steps}, solver={self.solver!r}, gradient={self.gradient!r}, t=[{self.t0}, {self.t1}]"


def ode_blocks(model: nn.Module) -> list[ODEBlock]:
    """Every :class:`ODEBlock` inside ``model`` (itself included), in registration order."""
    return [m for m in model.modules() if isinstance(m, ODEBlock)]


@contextmanager
def use_gradient(
    target: nn.Module | GradientMethod | str, gradient: GradientMethod | str | None = None
) -> Iterator[nn.Module | None]:
    """Differentiate with ``gradient`` every solve inside the ``with`` body that names no method.

    ``use_gradient(method)`` sets the default of ``odesolve(..., gradient=None)``; ``use_gradient(model,
    method)`` also switches every :class:`ODEBlock` of ``model``, whatever method it was built with.
    """
    model = None if gradient is None else target
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module; got {type(model).__name__}")
    chosen = target if gradient is None else gradient
    if isinstance(chosen, nn.Module):
        raise TypeError("use_gradient(model) needs a method too: use_gradient(model, method), or use_gradient(method)")
    method = resolve_gradient(chosen)
    blocks = ode_blocks(model) if model is not None else []
    before = [b.gradient for b in blocks]
    token = DEFAULT_GRADIENT.set(method)
    for b in blocks:
        b.gradient = method
    try:
        yield model
    finally:
        DEFAULT_GRADIENT.reset(token)
        for b, g in zip(blocks, before):
            b.gradient = g
