"""The one solver protocol, and explicit Runge–Kutta schemes as Butcher tableaux.

Every solver advances a *tuple* of tensors, so the same code integrates a plain state ``(z,)`` and the
augmented adjoint state ``(z, a, g_1, …, g_P)``. The protocol follows diffrax's ``init``/``step``: a solver
starts its own state with :meth:`Solver.init` (nothing for one-step methods, the history of a multistep method,
the auxiliary states of a reversible one) and carries it through :meth:`Solver.advance`. One-step methods
(``carries = False``) also take an isolated :meth:`Solver.step`, which is what revolve checkpoints and the
fixed-grid adjoint need; a solver that carries state cannot, and the pairing rule (:mod:`anode_core.pairing`)
says so before any computation.

Explicit Runge–Kutta coefficients that are zero are skipped, so RK4 costs four field evaluations and nothing
more. References: Butcher, *Numerical Methods for Ordinary Differential Equations* (2016), §23–§32; Hairer,
Nørsett & Wanner, *Solving ODEs I* (1993), Table II.1.2; Kidger, "On Neural Differential Equations" (2021),
§5 (diffrax's solver interface).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from anode_core.pairing import SolverKind

State = tuple[Tensor, ...]
TupleField = Callable[[float, State], State]
SolverState = tuple[Any, ...]
"""What a solver carries from step to step besides the solution; ``()`` for one-step methods."""


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
        check_weights(self.c, self.a, self.b)


def check_weights(c: Sequence[float], a: Sequence[Sequence[float]], b: Sequence[float]) -> None:
    """Consistency (``Σ b = 1``) and each node at its row sum (``c_i = Σ_j a_ij``), for any tableau."""
    if abs(sum(b) - 1.0) > 1e-12:
        raise ValueError(f"tableau weights b must sum to 1 for consistency; got {sum(b)}")
    for i, (ci, row) in enumerate(zip(c, a, strict=True)):
        # Each stage must sit at the time its increment reaches (Butcher 2016, §23; diffrax asserts it too);
        # 1e-12, scaled by the row's size, allows for the rounding of coefficients written as fractions.
        if abs(sum(row) - ci) > 1e-12 * max(1.0, sum(map(abs, row))):
            raise ValueError(
                f"tableau row {i}: node c[{i}] = {ci!r} but the row a[{i}] sums to {sum(row)!r}; each node must "
                f"equal its row sum (c_i = Σ_j a_ij): set c[{i}] = {sum(row)!r} or correct a[{i}]"
            )


@dataclass(frozen=True)
class Solver:
    """The protocol every solver follows: ``name``, ``order``, ``stages`` (field evaluations a step) and
    :meth:`init`/:meth:`advance`. One-step methods define :meth:`step` and inherit the rest."""

    name: ClassVar[str]
    order: ClassVar[int]
    kind: ClassVar[SolverKind] = "fixed"
    """Which gradient methods pair with it (:data:`anode_core.pairing.PAIRS`)."""
    carries: ClassVar[bool] = False
    """Whether the solver carries state between steps (and so cannot take an isolated :meth:`step`)."""

    @property
    def stages(self) -> int:
        raise NotImplementedError

    def init(self, f: TupleField, t0: float, y0: State) -> SolverState:
        """The solver's own state at ``t0``: ``()`` for a one-step method."""
        return ()

    def advance(
        self, f: TupleField, t: float, t_next: float, y: State, state: SolverState
    ) -> tuple[State, SolverState]:
        """One step from ``t`` to ``t_next`` (earlier than ``t`` in reverse-time solves), carrying ``state``."""
        return self.step(f, t, y, t_next - t), state

    def step(self, f: TupleField, t: float, y: State, dt: float) -> State:
        """One isolated step ``y(t) -> y(t + dt)``; ``dt`` may be negative (reverse-time solves of the adjoint)."""
        raise TypeError(
            f"{self!r} carries state from step to step and cannot take an isolated step (as Adjoint or "
            "Anode(checkpoints=c) need): differentiate it with Direct() or Anode()"
        )


@dataclass(frozen=True)
class RungeKutta(Solver):
    """A fixed-step explicit Runge–Kutta scheme. Subclasses only set ``name``, ``order`` and ``tableau``."""

    tableau: ClassVar[Tableau]

    @property
    def stages(self) -> int:
        return len(self.tableau.b)

    def step(self, f: TupleField, t: float, y: State, dt: float) -> State:
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


def flattener(y: State) -> tuple[Callable[[State], Tensor], Callable[[Tensor], State]]:
    """One vector from the components of a state, and back (the augmented adjoint state has several)."""
    shapes = [c.shape for c in y]
    sizes = [c.numel() for c in y]

    def flat(state: State) -> Tensor:
        return state[0].reshape(-1) if len(state) == 1 else torch.cat([c.reshape(-1) for c in state])

    def unflat(v: Tensor) -> State:
        return tuple(part.view(shape) for part, shape in zip(torch.split(v, sizes), shapes, strict=True))

    return flat, unflat
