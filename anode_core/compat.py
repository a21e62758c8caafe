"""``odeint`` with torchdiffeq's signature and numbers, differentiated by any anode_core gradient method.

Not named ``odeint.py``: a submodule of that name would shadow the exported function (see ``solve.py``).

A torchdiffeq user changes one import::

    from anode_core import odeint          # was: from torchdiffeq import odeint (or odeint_adjoint)
    ys = odeint(func, y0, t, rtol=1e-7, atol=1e-9, method="dopri5", gradient=Anode())

Every method name both libraries share gives torchdiffeq's numbers: ``dopri5`` and ``bosh3`` take the same
accepted steps and evaluate the solution at each ``t[i]`` with the same dense output; ``euler``, ``midpoint``
and ``rk4`` run on the same grid (``t`` itself, or ``options=dict(step_size=h)``, with linear interpolation at
the ``t[i]`` between its points). torchdiffeq's fixed-grid ``rk4`` is Kutta's 3/8 rule, so this one is too
(``odesolve``'s ``RK4`` stays the classical tableau). ``reversible_heun`` and ``alf`` are anode_core's own.

The solve is cut at the output times into pieces, each an ODE block for the gradient method: ``Anode`` keeps
each piece's input, ``Adjoint`` solves the continuous adjoint backwards over each piece (adaptively, as
``odeint_adjoint`` does). A reversible solver restarts its carry at each output time (``ŷ = y``, ``v = f(t, z)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor, nn

from anode_core.adaptive import AdaptiveSolver, Bosh3, Dopri5, Grid
from anode_core.gradients import GradientMethod
from anode_core.problem import Problem
from anode_core.reversible import DampedLeapfrog, ReversibleHeun
from anode_core.solve import check_pairing, resolve_gradient
from anode_core.solvers import (
    IMPLICIT_SOLVERS,
    AdamsBashforth,
    AdamsBashforthMoulton,
    Euler,
    Heun,
    Heun3,
    Midpoint,
    RungeKutta,
    Solver,
    Tableau,
)
from anode_core.watch import solve_problem


class RK38(RungeKutta):
    """Kutta's 3/8 rule, order 4: torchdiffeq's fixed-grid ``rk4`` (``rk4_alt_step_func``)."""

    name = "rk4_38"
    order = 4
    tableau = Tableau(
        c=(0.0, 1 / 3, 2 / 3, 1.0),
        a=((), (1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)),
        b=(1 / 8, 3 / 8, 3 / 8, 1 / 8),
    )


METHODS: dict[str, type[Solver]] = {
    "dopri5": Dopri5,
    "bosh3": Bosh3,
    "euler": Euler,
    "midpoint": Midpoint,
    "rk4": RK38,
    "reversible_heun": ReversibleHeun,
    "alf": DampedLeapfrog,
    "heun2": Heun,
    "heun3": Heun3,
    "explicit_adams": AdamsBashforth,
    "implicit_adams": AdamsBashforthMoulton,
    "fixed_adams": AdamsBashforthMoulton,
    **IMPLICIT_SOLVERS,
}
FIXED_OPTIONS = {"step_size"}
ADAPTIVE_OPTIONS = {"max_num_steps"}


class _TensorTime(nn.Module):
    """Calls ``func(t, y)`` with ``t`` a 0-d tensor of ``y``'s dtype, as torchdiffeq does; ``sign = −1`` runs
    time backwards (``t`` decreasing) as ``−func(−s, y)``. A module, so ``func``'s parameters are found."""

    def __init__(self, func: Callable[[Tensor, Tensor], Tensor], sign: float) -> None:
        super().__init__()
        self.func = func
        self.sign = sign

    def forward(self, s: float, y: Tensor) -> Tensor:
        t = torch.tensor(self.sign * s, dtype=y.dtype, device=y.device)
        out = self.func(t, y)
        return out if self.sign > 0 else -out


def odeint(
    func: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    t: Tensor,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    method: str | None = None,
    options: dict[str, Any] | None = None,
    gradient: GradientMethod | str | None = None,
    adjoint_params: Sequence[Tensor] | None = None,
) -> Tensor:
    """Solve ``dy/dt = func(t, y)``, ``y(t[0]) = y0``; returns ``y`` at every time in ``t`` (shape ``(len(t),
    *y0.shape)``).

    ``method`` defaults to ``"dopri5"``; ``rtol``/``atol`` apply to the adaptive methods. ``options``:
    ``step_size`` for fixed grids, ``max_num_steps`` for adaptive ones; any other key is an error.
    ``gradient=None`` takes the default of :func:`anode_core.use_gradient`, else ``Anode()``.
    ``adjoint_params`` are the tensors gradients flow to (default: ``func``'s parameters when it is an
    ``nn.Module``); a plain function closing over tensors must name them for the memory-lean methods.
    """
    solver = _solver(method, rtol, atol, options)
    step_size = (options or {}).get("step_size")
    times = _times(t, y0)
    sign = -1.0 if len(times) > 1 and times[1] < times[0] else 1.0
    times = [sign * x for x in times]
    field = _TensorTime(func, sign)
    if adjoint_params is None:
        adjoint_params = [p for p in func.parameters() if p.requires_grad] if isinstance(func, nn.Module) else []
    params = tuple(adjoint_params)
    grad_method = resolve_gradient(gradient)
    check_pairing(solver, grad_method)
    if len(times) == 1:
        return y0.unsqueeze(0)

    def piece(grid: Grid, y: Tensor) -> Tensor:
        problem = Problem(field, params, solver, grid.time(0), grid.end, len(grid), grid)
        return solve_problem(problem, y, grad_method)

    if isinstance(solver, AdaptiveSolver):
        return torch.stack(_adaptive(solver, field, y0, times, piece))
    return torch.stack(_fixed(_grid(t, times, step_size, sign), y0, times, piece))


def _adaptive(
    solver: AdaptiveSolver, field: nn.Module, y0: Tensor, times: list[float], piece: Callable[[Grid, Tensor], Tensor]
) -> list[Tensor]:
    """The controller runs once over ``[t[0], t[-1]]`` without a graph; ``y(t[i])`` is the dense output of the
    accepted step that reaches ``t[i]``, as in torchdiffeq, replayed by the gradient method piece by piece."""
    with torch.no_grad():
        _, grid = solver.integrate(lambda s, y: (field(s, y[0]),), (y0.detach(),), times[0], times[-1])
    ends = [s + h for s, h in zip(grid.starts, grid.sizes, strict=True)]
    outputs, y, at = [y0], y0, 0
    for ti in times[1:]:
        m = next(k for k in range(at, len(ends)) if ends[k] >= ti)
        if m > at:
            y = piece(grid.segment(at, m, grid.starts[m]), y)
            at = m
        outputs.append(piece(grid.segment(m, m + 1, ti), y))
    return outputs


def _fixed(grid: list[float], y0: Tensor, times: list[float], piece: Callable[[Grid, Tensor], Tensor]) -> list[Tensor]:
    """States at the grid points the outputs need, then torchdiffeq's linear interpolation between them."""
    cells = [max(1, next(n for n in range(1, len(grid)) if grid[n] >= ti)) for ti in times]
    needed = sorted({0, len(grid) - 1, *cells, *(c - 1 for c in cells)})
    states = {0: y0}
    for a, b in pairwise(needed):
        sizes = tuple(grid[n + 1] - grid[n] for n in range(a, b))
        states[b] = piece(Grid(tuple(grid[a:b]), sizes, grid[b]), states[a])
    outputs = []
    for ti, n in zip(times, cells, strict=True):
        g0, g1, y_a, y_b = grid[n - 1], grid[n], states[n - 1], states[n]
        if ti == g0:
            outputs.append(y_a)
        elif ti == g1:
            outputs.append(y_b)
        else:
            outputs.append(y_a + (ti - g0) / (g1 - g0) * (y_b - y_a))
    return outputs


def _solver(method: str | None, rtol: float, atol: float, options: dict[str, Any] | None) -> Solver:
    method = "dopri5" if method is None else method
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {', '.join(METHODS)}; got {method!r}")
    cls = METHODS[method]
    options = dict(options or {})
    allowed = ADAPTIVE_OPTIONS if issubclass(cls, AdaptiveSolver) else FIXED_OPTIONS
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"`options` for method {method!r} take {', '.join(sorted(allowed))}; got {unknown}")
    if issubclass(cls, AdaptiveSolver):
        for name, value in (("rtol", rtol), ("atol", atol)):
            if isinstance(value, Tensor) and value.numel() != 1:
                raise ValueError(f"`{name}` must be a scalar (per-element tolerances are not supported)")
        max_steps = options.get("max_num_steps", AdaptiveSolver.max_steps)
        return cls(rtol=float(rtol), atol=float(atol), max_steps=max_steps)
    step = options.get("step_size")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or not step > 0):
        raise ValueError(f"`options['step_size']` must be a positive number; got {step!r}")
    return cls()


def _times(t: Tensor, y0: Tensor) -> list[float]:
    if not isinstance(y0, Tensor) or not y0.is_floating_point():
        raise TypeError(
            f"`y0` must be a floating-point tensor; got {type(y0).__name__}: a tuple state must be torch.cat-ed"
        )
    if not isinstance(t, Tensor) or not t.is_floating_point() or t.dim() != 1 or t.numel() < 1:
        raise ValueError("`t` must be a 1-D floating-point tensor of output times, such as torch.linspace(0, 1, 5)")
    times = t.detach().double().tolist()
    if not all(math.isfinite(x) for x in times):
        raise ValueError(f"`t` must be finite; got {times}")
    steps = [b - a for a, b in pairwise(times)]
    if not (all(d > 0 for d in steps) or all(d < 0 for d in steps)):
        raise ValueError(f"`t` must be strictly increasing or strictly decreasing; got {times}")
    return times


def _grid(t: Tensor, times: list[float], step_size: float | None, sign: float) -> list[float]:
    """torchdiffeq's fixed grid: ``t`` itself, or ``t[0] + k·step_size`` ending exactly at ``t[-1]``."""
    if step_size is None:
        return times
    tt = sign * t.detach()
    count = torch.ceil((tt[-1] - tt[0]) / step_size + 1).item()
    grid = torch.arange(0, count, dtype=t.dtype, device=t.device) * step_size + tt[0]
    grid[-1] = tt[-1]
    return grid.double().tolist()
