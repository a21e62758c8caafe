"""``ODEBlock``: an ODE solve as a drop-in ``nn.Module`` layer, and helpers to switch a model's method."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import overload

from torch import Tensor, nn

from anode_core.adaptive import AdaptiveSolver
from anode_core.gradients import GradientMethod
from anode_core.problem import Problem
from anode_core.solve import (
    DEFAULT_GRADIENT,
    check_pairing,
    check_steps,
    make_problem,
    resolve_gradient,
    resolve_solver,
)
from anode_core.solvers import Euler, Solver
from anode_core.watch import solve_problem


class ODEBlock(nn.Module):
    """``z -> z(t1)`` for ``dz/dt = field(t, z)``; with ``Euler`` and ``steps=1`` exactly a ResNet block.

    ``field`` is an ``nn.Module`` called as ``field(t, z)``. ``steps`` defaults to 2 for fixed-step solvers and
    must stay ``None`` for adaptive ones. ``gradient=None`` takes the default of :func:`use_gradient` at each
    pass (else ``Anode()``); ``gradient`` may be changed between passes.
    """

    def __init__(
        self,
        field: nn.Module,
        *,
        steps: int | None = None,
        solver: Solver | str = Euler(),
        gradient: GradientMethod | str | None = None,
        t0: float = 0.0,
        t1: float = 1.0,
    ) -> None:
        super().__init__()
        self.solver = resolve_solver(solver)
        if steps is None and not isinstance(self.solver, AdaptiveSolver):
            steps = 2
        self.field = field
        self.steps = steps
        self.gradient = None if gradient is None else resolve_gradient(gradient)
        if self.gradient is not None:
            check_pairing(self.solver, self.gradient)
        self.t0, self.t1 = t0, t1
        check_steps(self.solver, steps, t0, t1)

    def problem(self, z0: Tensor) -> Problem:
        return make_problem(
            self.field, z0, steps=self.steps, solver=self.solver, t0=self.t0, t1=self.t1, params=None
        )

    def forward(self, z0: Tensor) -> Tensor:
        method = resolve_gradient(self.gradient, self.solver)
        check_pairing(self.solver, method)
        return solve_problem(self.problem(z0), z0, method)

    def extra_repr(self) -> str:
        return f"steps={self.steps}, solver={self.solver!r}, gradient={self.gradient!r}, t=[{self.t0}, {self.t1}]"


def ode_blocks(model: nn.Module) -> list[ODEBlock]:
    """Every :class:`ODEBlock` inside ``model`` (itself included), in registration order."""
    return [m for m in model.modules() if isinstance(m, ODEBlock)]


@overload
def use_gradient(model: GradientMethod | str) -> AbstractContextManager[GradientMethod]: ...
@overload
def use_gradient(model: nn.Module, gradient: GradientMethod | str) -> AbstractContextManager[nn.Module]: ...
def use_gradient(
    model: nn.Module | GradientMethod | str, gradient: GradientMethod | str | None = None
) -> AbstractContextManager[nn.Module] | AbstractContextManager[GradientMethod]:
    """``use_gradient(method)``: the method of every solve inside the ``with`` body that names none
    (``ODEBlock``, ``odesolve``, ``odeint``); ``use_gradient(model, method)``: every ODE block of ``model``,
    whatever it names."""
    if gradient is None:
        if isinstance(model, nn.Module):
            raise TypeError("use_gradient(model, gradient) needs a gradient method; or call use_gradient(method)")
        return _as_default(resolve_gradient(model))
    if not isinstance(model, nn.Module):
        raise TypeError(f"use_gradient(model, gradient) needs an nn.Module first; got {type(model).__name__}")
    return _on_blocks(model, resolve_gradient(gradient))


@contextmanager
def _as_default(method: GradientMethod) -> Iterator[GradientMethod]:
    token = DEFAULT_GRADIENT.set(method)
    try:
        yield method
    finally:
        DEFAULT_GRADIENT.reset(token)


@contextmanager
def _on_blocks(model: nn.Module, method: GradientMethod) -> Iterator[nn.Module]:
    blocks = ode_blocks(model)
    before = [b.gradient for b in blocks]
    token = DEFAULT_GRADIENT.set(method)
    for b in blocks:
        b.gradient = method
    try:
        yield model
    finally:
        DEFAULT_GRADIENT.reset(token)
        for b, g in zip(blocks, before, strict=True):
            b.gradient = g
