"""``ODEBlock``: an ODE solve as a drop-in ``nn.Module`` layer, and helpers to switch a model's method."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn

from anode_core.gradients import Anode, GradientMethod
from anode_core.problem import Problem
from anode_core.solve import check_grid, make_problem, resolve_gradient, resolve_solver
from anode_core.solvers import Euler, Solver


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
        return self.gradient.solve(self.problem(z0), z0)

    def extra_repr(self) -> str:
        return f"steps={self.steps}, solver={self.solver!r}, gradient={self.gradient!r}, t=[{self.t0}, {self.t1}]"


def ode_blocks(model: nn.Module) -> list[ODEBlock]:
    """Every :class:`ODEBlock` inside ``model`` (itself included), in registration order."""
    return [m for m in model.modules() if isinstance(m, ODEBlock)]


@contextmanager
def use_gradient(model: nn.Module, gradient: GradientMethod | str) -> Iterator[nn.Module]:
    """Differentiate every ODE block of ``model`` with ``gradient`` inside the ``with`` body."""
    method = resolve_gradient(gradient)
    blocks = ode_blocks(model)
    before = [b.gradient for b in blocks]
    for b in blocks:
        b.gradient = method
    try:
        yield model
    finally:
        for b, g in zip(blocks, before, strict=True):
            b.gradient = g
