"""Fixed-step Adams methods: torchdiffeq's ``explicit_adams``, ``implicit_adams`` and ``fixed_adams``.

A port of torchdiffeq's ``AdamsBashforthMoulton`` (``_impl/fixed_adams.py``, MIT), with its behaviour:

- **History.** Each step evaluates ``f(t_n, y_n)`` and puts it first in a history of at most ``max_order − 1``
  slopes (the solver's carried state).
- **Start-up.** While the history holds fewer than 3 slopes (the first 2 steps), the step is Kutta's 3/8 rule
  (order 4) reusing ``f(t_n, y_n)``.
- **Predictor.** From step 3 on, the Adams–Bashforth formula of order ``k`` = the history's length (at most
  ``max_order − 1``): ``Δy = h Σ_j β_j f_{n−j}``. At torchdiffeq's default ``max_order = 12`` that reaches order
  11, whose stability region is tiny: ``explicit_adams`` blows up on a damped rotation at ``h = 1/64``, as
  torchdiffeq's does; ``max_order=5`` keeps it stable there.
- **Corrector** (``implicit_adams``, ``fixed_adams``): Adams–Moulton of order ``k + 1`` iterated as a fixed point,
  ``Δy ← h (β*_0 f(t_{n+1}, y_n + Δy) + Σ_j β*_{j+1} f_{n−j})``, at most ``max_iters`` times (default 4), until
  successive increments agree within ``rtol``/``atol`` in the max norm. If they do not, a warning says so and the
  oldest slope is dropped (the next step's order falls by one). As in torchdiffeq, the corrector's last
  evaluation is not kept: the history holds the slopes at the steps' starts.

The coefficients are computed exactly (rational arithmetic) from their definition,
``β_j = (−1)^j Σ_{i ≥ j} C(i, j) γ_i`` with ``γ_i = (−1)^i ∫₀¹ C(−s, i) ds`` (Bashforth) and the same with
``C(1 − s, i)`` (Moulton): Hairer, Nørsett & Wanner, *Solving ODEs I* (1993), §III.1.

Differentiating: the solver carries its history, so it cannot take an isolated step; ``Direct`` and ``Anode``
(which recomputes the block from its input, history included, with the corrector's iterations as computed)
differentiate it exactly. Checkpoints and the adjoint need isolated steps and are refused by the pairing rule.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from math import comb
from typing import ClassVar

import torch

from anode_core.solvers.base import Solver, SolverState, State, TupleField, _combine
from anode_core.solvers.explicit import RK38

MIN_ORDER, MAX_ORDER = 4, 12


def _poly_times_binomial(poly: list[Fraction], shift: int, i: int) -> list[Fraction]:
    """Coefficients in ``s`` of ``poly(s) · C(shift − s, i)`` (``C(x, i) = x(x−1)…(x−i+1)/i!``)."""
    out = list(poly)
    for m in range(i):  # multiply by (shift − s − m) / (m + 1)
        nxt = [Fraction(0)] * (len(out) + 1)
        for p, coef in enumerate(out):
            nxt[p] += coef * (shift - m) / (m + 1)
            nxt[p + 1] -= coef / (m + 1)
        out = nxt
    return out


@cache
def adams_coefficients(order: int, implicit: bool) -> tuple[float, ...]:
    """``β_0 … β_{order−1}`` of the Adams–Bashforth (or, ``implicit``, Adams–Moulton) method of ``order``."""
    shift = 1 if implicit else 0
    gammas = []
    for i in range(order):
        poly = _poly_times_binomial([Fraction(1)], shift, i)  # γ_i = (−1)^i ∫₀¹ C(shift − s, i) ds
        gammas.append((-1) ** i * sum(coef / (p + 1) for p, coef in enumerate(poly)))
    betas = [(-1) ** j * sum(comb(i, j) * gammas[i] for i in range(j, order)) for j in range(order)]
    return tuple(float(b) for b in betas)


@dataclass(frozen=True)
class AdamsBashforthMoulton(Solver):
    """Adams–Bashforth predictor with an Adams–Moulton corrector: torchdiffeq's ``implicit_adams`` (module
    docstring). ``rtol``/``atol`` judge the corrector's convergence; ``max_order`` is at most 12."""

    rtol: float = 1e-3
    atol: float = 1e-4
    max_iters: int = 4
    max_order: int = MAX_ORDER

    name = "implicit_adams"
    order = 4
    kind = "multistep"
    carries = True
    stages = 1
    implicit: ClassVar[bool] = True

    def __post_init__(self) -> None:
        for knob in ("rtol", "atol"):
            value = getattr(self, knob)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"`{knob}` must be a number in [0, 1), such as 1e-6; got {value!r}")
        if isinstance(self.max_iters, bool) or not isinstance(self.max_iters, int) or self.max_iters < 1:
            raise ValueError(f"`max_iters` must be an integer ≥ 1 (corrector iterations); got {self.max_iters!r}")
        order = self.max_order
        if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= MAX_ORDER:
            raise ValueError(f"`max_order` must be an integer in [1, {MAX_ORDER}]; got {order!r}: use {MAX_ORDER}")
        if order < MIN_ORDER:
            warnings.warn(f"max_order={order} is below {MIN_ORDER}: every step is Kutta's 3/8 rule (rk4)",
                          stacklevel=2)

    def init(self, f: TupleField, t0: float, y0: State) -> SolverState:
        return ()  # no slopes yet: the history, newest first

    def advance(
        self, f: TupleField, t: float, t_next: float, y: State, state: SolverState
    ) -> tuple[State, SolverState]:
        dt = t_next - t
        f0 = f(t, y)
        history = (f0, *state)[: self.max_order - 1]
        order = min(len(history), self.max_order - 1)
        if order < MIN_ORDER - 1:
            return _rk38(f, t, y, dt, f0), history
        dy = _combine(tuple(torch.zeros_like(c) for c in y), history, adams_coefficients(order, False), dt)
        if not self.implicit:
            return _sum(y, dy), history
        moulton = adams_coefficients(order + 1, True)
        known = _combine(tuple(torch.zeros_like(c) for c in y), history, moulton[1:], dt)
        for _ in range(self.max_iters):
            previous = dy
            dy = _combine(known, (f(t_next, _sum(y, dy)),), moulton[:1], dt)
            if self._converged(previous, dy):
                break
        else:
            warnings.warn(
                f"{self.name}: the corrector did not converge in max_iters={self.max_iters} iterations at "
                f"t={t:.6g}; the next step's order falls by one: raise `max_iters` or take smaller steps",
                RuntimeWarning,
                stacklevel=2,
            )
            history = history[:-1]
        return _sum(y, dy), history

    def _converged(self, a: State, b: State) -> bool:
        """torchdiffeq's test: ``max |a − b| / (atol + rtol·max(|a|, |b|)) < 1`` over every component."""
        ratio = max(
            ((x - y).abs() / (self.atol + self.rtol * torch.max(x.abs(), y.abs()))).max().item()
            for x, y in zip(a, b, strict=True)
        )
        return ratio < 1


class AdamsBashforth(AdamsBashforthMoulton):
    """The Adams–Bashforth predictor alone: torchdiffeq's ``explicit_adams``."""

    name = "explicit_adams"
    implicit = False


def _rk38(f: TupleField, t: float, y: State, dt: float, f0: State) -> State:
    """Kutta's 3/8 step reusing ``f0 = f(t, y)`` (torchdiffeq's start-up steps)."""
    tab = RK38.tableau
    ks: list[State] = [f0]
    for i in range(1, len(tab.b)):
        ks.append(f(t + tab.c[i] * dt, _combine(y, ks, tab.a[i], dt)))
    return _combine(y, ks, tab.b, dt)


def _sum(y: State, dy: State) -> State:
    return tuple(a + b for a, b in zip(y, dy, strict=True))
