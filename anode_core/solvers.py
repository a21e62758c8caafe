"""Explicit fixed-step Runge–Kutta solvers, each defined by its Butcher tableau.

A solver advances a *tuple* of tensors by one step, so the same code integrates a plain state ``(z,)`` and the
augmented adjoint state ``(z, a, g_1, …, g_P)``. Coefficients that are zero are skipped, so RK4 costs four field
evaluations and nothing more.

References: Butcher, *Numerical Methods for Ordinary Differential Equations* (2016), §23–§32; Hairer, Nørsett &
Wanner, *Solving ODEs I* (1993), Table II.1.2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

State = tuple[Tensor, ...]
TupleField = Callable[[float, State], State]


@dataclass(frozen=True)
class Tableau:
    """Butcher tableau ``c | A / b`` of an explicit scheme (``A`` strictly lower triangular, given by rows)."""

    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]

    def __post_init__(self) -> None:
        s = len(self.b)
        if len(self.c) != s or len(self.a) != s or any(len(row) != i for i, row in enumerate(self.a)):
            raise ValueError(f"an explicit tableau with {s} stages needs {s} nodes and a strictly lower A")
        if abs(sum(self.b) - 1.0) > 1e-12:
            raise ValueError(f"tableau weights b must sum to 1 for consistency; got {sum(self.b)}")
        for i, (ci, row) in enumerate(zip(self.c, self.a, strict=True)):
            # Each stage must sit at the time its increment reaches (Butcher 2016, §23; diffrax asserts it too);
            # 1e-12, scaled by the row's size, allows for the rounding of coefficients written as fractions.
            if abs(sum(row) - ci) > 1e-12 * max(1.0, sum(map(abs, row))):
                raise ValueError(
                    f"tableau row {i}: node c[{i}] = {ci!r} but the row a[{i}] sums to {sum(row)!r}; each node must "
                    f"equal its row sum (c_i = Σ_j a_ij): set c[{i}] = {sum(row)!r} or correct a[{i}]"
                )


@dataclass(frozen=True)
class Solver:
    """A fixed-step explicit Runge–Kutta scheme. Subclasses only set ``name``, ``order`` and ``tableau``."""

    name: ClassVar[str]
    order: ClassVar[int]
    tableau: ClassVar[Tableau]

    @property
    def stages(self) -> int:
        return len(self.tableau.b)

    def step(self, f: TupleField, t: float, y: State, dt: float) -> State:
        """One step ``y(t) -> y(t + dt)``; ``dt`` may be negative (reverse-time solves of the adjoint)."""
        tab = self.tableau
        ks: list[State] = []
        for i in range(self.stages):
            yi = _combine(y, ks, tab.a[i], dt)
            ks.append(f(t + tab.c[i] * dt, yi))
        return _combine(y, ks, tab.b, dt)


def _combine(y: State, ks: Sequence[State], coeffs: Sequence[float], dt: float) -> State:
    """``y + dt * sum_j coeffs[j] * ks[j]``, component-wise, skipping zero coefficients."""
    out = list(y)
    for k, coef in zip(ks, coeffs, strict=True):
        if coef == 0.0:
            continue
        for m, km in enumerate(k):
            out[m] = torch.add(out[m], km, alpha=coef * dt)
    return tuple(out)


class Euler(Solver):
    """Forward Euler, order 1: one ResNet block per step."""

    name = "euler"
    order = 1
    tableau = Tableau(c=(0.0,), a=((),), b=(1.0,))


class Midpoint(Solver):
    """Explicit midpoint rule (RK2), order 2."""

    name = "midpoint"
    order = 2
    tableau = Tableau(c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0))


class Heun(Solver):
    """Heun's method (explicit trapezoid, RK2), order 2."""

    name = "heun"
    order = 2
    tableau = Tableau(c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5))


class RK4(Solver):
    """The classical fourth-order Runge–Kutta scheme."""

    name = "rk4"
    order = 4
    tableau = Tableau(
        c=(0.0, 0.5, 0.5, 1.0),
        a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
        b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    )


SOLVERS: dict[str, type[Solver]] = {cls.name: cls for cls in (Euler, Midpoint, Heun, RK4)}
