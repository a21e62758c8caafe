"""torchdiffeq's fixed-grid loop (``_impl/solvers.py``: ``FixedGridODESolver``) over anode_core's tableaux.

The grid is ``t`` itself, ``t[0] + k·step_size`` ending exactly at ``t[-1]``, or what ``grid_constructor(func, y0,
t)`` returns; outputs between grid points are interpolated linearly or by cubic Hermite (``interp="cubic"``,
one more evaluation per step). ``perturb=True`` evaluates the first stage just after ``t_n`` and a stage at
``t_n + dt`` just before it, as torchdiffeq does around discontinuities. Port of torchdiffeq 0.2 (MIT).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from anode_core.controller import FlatField, Perturb, StepScope, find_event, no_scope
from anode_core.solvers import RungeKutta, Solver

StepCallback = Callable[[Tensor, Tensor, Tensor], object]


def time_grid(func: Any, y0: Tensor, t: Tensor, options: dict[str, Any]) -> Tensor:
    step_size = options.get("step_size")
    constructor = options.get("grid_constructor")
    if step_size is not None and constructor is not None:
        raise ValueError("`options['step_size']` and `options['grid_constructor']` are mutually exclusive: pass one")
    if step_size is not None:
        if isinstance(step_size, bool) or not isinstance(step_size, (int, float, Tensor)) or not step_size > 0:
            raise ValueError(f"`options['step_size']` must be a positive number; got {step_size!r}")
        count = torch.ceil((t[-1] - t[0]) / step_size + 1).item()
        grid = torch.arange(0, count, dtype=t.dtype, device=t.device) * step_size + t[0]
        grid[-1] = t[-1]
        return grid
    if constructor is None:
        return t
    constructed: Tensor = constructor(func, y0, t)
    grid = constructed
    if not (grid[0] == t[0] and grid[-1] == t[-1]):
        raise ValueError(
            f"`options['grid_constructor']` must return a grid from t[0] to t[-1]; got {grid[0].item()} … "
            f"{grid[-1].item()} for t from {t[0].item()} to {t[-1].item()}"
        )
    return grid


class FirstSlope:
    """``f`` whose first call returns ``slope`` when it asks for ``f(t0, y0)`` on ``side`` (the same tensor ``y0``):
    a value the caller has already evaluated, so the field sees torchdiffeq's sequence of evaluations."""

    def __init__(self, f: FlatField, t0: Tensor, y0: Tensor, side: Perturb, slope: Tensor) -> None:
        self.f = f
        self.pending: tuple[Tensor, Tensor, Perturb, Tensor] | None = (t0, y0, side, slope)

    @classmethod
    def given(cls, f: FlatField, t0: Tensor, y0: Tensor, perturb: bool, slope: Tensor | None) -> FlatField:
        """``f`` itself without a slope; else ``f`` answering the first step's first call (``f(t0, y0)`` on the
        side a fixed-grid step asks for: the next one under ``perturb``) with ``slope``."""
        return f if slope is None else cls(f, t0, y0, Perturb.NEXT if perturb else Perturb.NONE, slope)

    def __call__(self, t: Tensor, y: Tensor, side: Perturb = Perturb.NONE) -> Tensor:
        pending, self.pending = self.pending, None
        if pending is not None and y is pending[1] and side is pending[2] and bool(t == pending[0]):
            return pending[3]
        return self.f(t, y, side)


class Stepper:
    """Steps of any fixed-grid solver on the flat state: an explicit tableau op for op as torchdiffeq takes it,
    any other solver (implicit, Adams) through its ``init``/``advance`` protocol, carrying its state."""

    def __init__(self, solver: Solver, f: FlatField, y0: Tensor, t0: Tensor, perturb: bool) -> None:
        self.solver, self.f, self.perturb = solver, f, perturb
        self.dtype = t0.dtype
        self.span = (float(t0), float(t0))
        self.start: Tensor | None = None
        self.slope: Tensor | None = None
        self.state = () if isinstance(solver, RungeKutta) else solver.init(self._tuple_field, float(t0), (y0,))

    def _tuple_field(self, s: float, y: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        side = Perturb.NONE
        if self.perturb and s == self.span[0]:
            side = Perturb.NEXT
        elif self.perturb and s == self.span[1]:
            side = Perturb.PREV
        out = self.f(torch.tensor(s, dtype=self.dtype, device=y[0].device), y[0], side)
        if self.slope is None and y[0] is self.start and s == self.span[0]:
            self.slope = out  # the step's own f(t_n, y_n): cubic interpolation takes it (torchdiffeq's steps return it)
        return (out,)

    def __call__(self, t0: Tensor, dt: Tensor, t1: Tensor, y0: Tensor, slope: bool) -> tuple[Tensor, Tensor | None]:
        """``(y1 − y0, f(t0, y0) or None)``; ``slope`` asks for ``f(t0, y0)`` (cubic interpolation)."""
        if isinstance(self.solver, RungeKutta):
            return step(self.solver, self.f, t0, dt, t1, y0, self.perturb)
        self.span, self.start, self.slope = (float(t0), float(t1)), y0, None
        (y1,), self.state = self.solver.advance(self._tuple_field, self.span[0], self.span[1], (y0,), self.state)
        if not slope:
            return y1 - y0, None
        return y1 - y0, self.f(t0, y0, Perturb.NONE) if self.slope is None else self.slope


def step(
    solver: RungeKutta, f: FlatField, t0: Tensor, dt: Tensor, t1: Tensor, y0: Tensor, perturb: bool
) -> tuple[Tensor, Tensor]:
    """``(y1 − y0, f(t0, y0))`` for one step of ``solver``'s tableau."""
    tab = solver.tableau
    ks: list[Tensor] = []
    for i, (ci, row) in enumerate(zip(tab.c, tab.a, strict=True)):
        yi = y0
        for coef, k in zip(row, ks, strict=True):
            if coef != 0.0:
                yi = yi + (dt * coef) * k
        if i == 0:
            ks.append(f(t0, yi, Perturb.NEXT if perturb else Perturb.NONE))
        elif ci == 1.0:
            ks.append(f(t1, yi, Perturb.PREV if perturb else Perturb.NONE))
        else:
            ks.append(f(t0 + ci * dt, yi, Perturb.NONE))
    dy = sum((coef * k for coef, k in zip(tab.b, ks, strict=True) if coef != 0.0), torch.zeros_like(y0))
    return dt * dy, ks[0]


def _cubic(t0: Tensor, y0: Tensor, f0: Tensor, t1: Tensor, y1: Tensor, f1: Tensor, t: Tensor) -> Tensor:
    h = (t - t0) / (t1 - t0)
    h00 = (1 + 2 * h) * (1 - h) * (1 - h)
    h10 = h * (1 - h) * (1 - h)
    h01 = h * h * (3 - 2 * h)
    h11 = h * h * (h - 1)
    dt = t1 - t0
    return h00 * y0 + h10 * dt * f0 + h01 * y1 + h11 * dt * f1


def _linear(t0: Tensor, t1: Tensor, y0: Tensor, y1: Tensor, t: Tensor) -> Tensor:
    if t == t0:
        return y0
    if t == t1:
        return y1
    return y0 + ((t - t0) / (t1 - t0)) * (y1 - y0)


def _interpolator(interp: str) -> None:
    if interp not in ("linear", "cubic"):
        raise ValueError(f"`options['interp']` must be 'linear' or 'cubic'; got {interp!r}")


def integrate(
    solver: Solver,
    f: FlatField,
    y0: Tensor,
    t: Tensor,
    grid: Tensor,
    options: dict[str, Any],
    callback: StepCallback,
    first: Tensor | None = None,
    scope: StepScope = no_scope,
) -> list[Tensor]:
    """``y`` at ``t[1:]``: the steps of ``grid``, interpolated at the output times (with a graph if grad is on);
    step ``n``'s operations run inside ``scope(n, (y_n,))`` (see :func:`rebuild`). ``first``: ``f(grid[0], y0)``
    on the first step's side, already evaluated (the solve does not evaluate it again)."""
    interp, perturb = options.get("interp", "linear"), bool(options.get("perturb", False))
    _interpolator(interp)
    f = FirstSlope.given(f, grid[0], y0, perturb, first)
    t = t.to(grid.dtype)
    out: list[Tensor] = []
    j, y = 1, y0
    stepper = Stepper(solver, f, y0, grid[0], perturb)
    for n, (t0, t1) in enumerate(zip(grid[:-1], grid[1:], strict=True)):
        dt = t1 - t0
        callback(t0, y, dt)
        with scope(n, (y,)):
            dy, f0 = stepper(t0, dt, t1, y, interp == "cubic")
            y1 = y + dy
        while j < len(t) and t1 >= t[j]:
            if interp == "linear" or f0 is None:
                out.append(_linear(t0, t1, y, y1, t[j]))
            else:
                out.append(_cubic(t0, y, f0, t1, y1, f(t1, y1, Perturb.NONE), t[j]))
            j += 1
        y = y1
    return out


def rebuild(
    solver: RungeKutta, f: FlatField, grid: Tensor, perturb: bool, first: Tensor | None = None
) -> Callable[..., None]:
    """Steps ``a … b − 1`` of ``grid`` from ``(y_a,)``, each with the operations :func:`integrate` ran on it (an
    explicit tableau's steps are isolated: nothing but ``y`` carries over); ``first``: the first step's first slope,
    as :func:`integrate` was given it (not evaluated again there, so not here either)."""

    def run(a: int, b: int, start: tuple[Tensor, ...], scope: StepScope) -> None:
        (y,) = start
        for n in range(a, b):
            t0, t1 = grid[n], grid[n + 1]
            g = FirstSlope.given(f, t0, y, perturb, None if n else first)
            with scope(n, (y,)):
                dy, _ = step(solver, g, t0, t1 - t0, t1, y, perturb)
                y = y + dy

    return run


def integrate_until_event(
    solver: Solver,
    f: FlatField,
    y0: Tensor,
    t0: Tensor,
    options: dict[str, Any],
    event_fn: Callable[[Tensor, Tensor], Tensor],
    atol: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(t, y(t), grid)`` at the first root of ``event_fn``, stepping by ``options['step_size']``; ``grid`` holds
    the steps taken, the last one past the event (``integrate`` on it reproduces ``y(t)``, multistep history and
    interpolation included)."""
    step_size = options.get("step_size")
    if step_size is None:
        raise ValueError("`options['step_size']` is required to find an event with a fixed-grid method")
    interp, perturb = options.get("interp", "linear"), bool(options.get("perturb", False))
    _interpolator(interp)
    t0 = t0.type_as(y0.abs())
    y = y0
    sign0 = torch.sign(event_fn(t0, y))
    stepper = Stepper(solver, f, y0, t0, perturb)
    grid = [t0]
    for _ in range(20000):
        t1 = t0 + step_size
        grid.append(t1)
        dy, f0 = stepper(t0, torch.as_tensor(step_size, dtype=t0.dtype), t1, y, interp == "cubic")
        y1 = y + dy
        if sign0 != torch.sign(event_fn(t1, y1)):
            event_t, y_event = find_event(_bracket(interp, f, t0, y, f0, t1, y1), sign0, t0, t1, event_fn, atol)
            return event_t, y_event, torch.stack(grid)
        t0, y = t1, y1
    raise RuntimeError("no event within 20000 steps of `options['step_size']`: check `event_fn` or the step size")


def _bracket(
    interp: str, f: FlatField, t0: Tensor, y0: Tensor, f0: Tensor | None, t1: Tensor, y1: Tensor
) -> Callable[[Tensor], Tensor]:
    """The step's interpolant over ``[t0, t1]``, in which the event is sought."""
    if interp == "linear" or f0 is None:
        return lambda s: _linear(t0, t1, y0, y1, s)
    f1 = f(t1, y1, Perturb.NONE)
    return lambda s: _cubic(t0, y0, f0, t1, y1, f1, s)
